"""Merge policies against single-node River, on the same events in the same run.

For each (stream, K replicas, S events per replica between syncs, policy) it
prints the progressive metric of the *served* model (the latest merge, as the
serving job sees it) minus single-node River's, and the number of syncs.
Classification: accuracy delta in points (higher is better).  Regression:
MAE ratio against River (lower is better; >10 means it diverged).

    python -m bench.merge_policies [--events 20000]
"""

from __future__ import annotations

import argparse
import math

from river import datasets, linear_model, metrics, optim, preprocessing

from riverflink import models
from tests import streams


def regression_stream(n: int) -> list:
    base = [(dict(x), y) for x, y in datasets.TrumpApproval()]
    return (base * (n // len(base) + 1))[:n]


def run(events, make, metric_cls, k, per_sync, policy):
    single, single_m = make(), metric_cls()
    for x, y in events:
        single_m.update(y, single.predict_one(x))
        single.learn_one(x, y)
    template = models.scale_learning_rate(make(), k) if policy == "scaled_average" else make()
    merged = template.clone()
    replicas = [template.clone() for _ in range(k)]
    m, syncs = metric_cls(), 0
    for start in range(0, len(events), k * per_sync):
        block = events[start : start + k * per_sync]
        for i, (x, y) in enumerate(block):
            m.update(y, merged.predict_one(x))
            replicas[i % k].learn_one(x, y)
        try:
            merged = models.merge(replicas, weights=[len(block[i::k]) for i in range(k)], policy=policy)
        except ValueError:
            return single_m.get(), math.inf, syncs
        syncs += 1
        for r in replicas:
            models.set_params(r, models.get_params(merged), version=syncs)
    return single_m.get(), m.get(), syncs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000)
    args = ap.parse_args()
    cls_events = streams.phishing(args.events, seed=7)
    reg_events = regression_stream(args.events)
    make_cls = lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression()  # noqa: E731
    make_reg = lambda: preprocessing.StandardScaler() | linear_model.LinearRegression(optimizer=optim.SGD(0.01))  # noqa: E731
    print(f"{'stream':10} {'K':>2} {'S':>4} {'policy':15} {'river':>8} {'merged':>8} {'vs river':>10} {'syncs':>6}")
    for k in (4, 8):
        for s in (10, 100, 500):
            for policy in models.POLICIES:
                base, got, syncs = run(cls_events, make_cls, metrics.Accuracy, k, s, policy)
                print(f"{'phishing':10} {k:2} {s:4} {policy:15} {base:8.4f} {got:8.4f} {100 * (got - base):+9.2f}pt {syncs:6}")
                base, got, syncs = run(reg_events, make_reg, metrics.MAE, k, s, policy)
                print(f"{'trump':10} {k:2} {s:4} {policy:15} {base:8.4f} {got:8.4f} {got / base:9.2f}x {syncs:6}")


if __name__ == "__main__":
    main()
