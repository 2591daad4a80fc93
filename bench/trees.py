"""One Hoeffding tree grown by K replicas from merged statistics, against single-node River's tree.

The training job's own loop (``bench/sync.py``'s :func:`~bench.sync.simulate`: ``ReplicaSide`` and
``MergerSide``, updates through the binary codec, documents through the readers' validation, a merged version
visible one micro-batch round later) trains ``HoeffdingTreeClassifier`` (:mod:`riverflink.models.hoeffding_tree`)
and ``HoeffdingTreeRegressor`` (:mod:`riverflink.models.hoeffding_tree_regressor`) with K replicas in {1, 2, 4, 8}
on each stream; River's tree with the same parameters learns the same events in the same order, predict-then-learn.
Printed per stream and K:

* classifiers: served accuracy minus River's in points; regressors: served MAE over River's; overall and from
  River's first split on, and next to it what River's own tree loses served with the loop's lag alone
  (:func:`~bench.sync.lag_floor`: its model as of the round the merged version would be visible);
* splits: how many, and how many events after River's each one came (the n-th split of the served tree against
  River's n-th, matched in order; ``+`` later);
* the share of the events' weight that re-routed to the leaves below a split, and that was dropped;
* update bytes per sync, and the final document's size.

Streams (each ``--events``, 20,000 by default): Phishing (River's, repeated), SEA with a concept change at the
middle (River's ``ConceptDriftStream``), Agrawal (function 2: numeric and integer-coded attributes) and Colours
(numeric and nominal features, one nominal value missing now and then; seeded, in this file), with
``HoeffdingTreeClassifier(grace_period=200)``; Friedman (River's, ten numeric features) with
``HoeffdingTreeRegressor(grace_period=200)`` (River's default adaptive leaves, linear models in the leaves) and
FriedmanMean, the same events with ``leaf_prediction=mean``.

Not measured: throughput (``bench/peers.py`` measures the peers' speed, with linear models).

Last line, at K=4: ``trees: worst_class_gap=<G> reg_mae_ratio=<R> dropped_share=<D> doc_kb=<S>``: G the largest
shortfall against River from its first split on (points), R the served MAE over River's from its first split on
with River's default leaves (Friedman), D the largest dropped share, S the largest document.

    python -m bench.trees [--events 20000] [--k 1,2,4,8] [--streams Phishing,SEA,Agrawal,Colours,Friedman,FriedmanMean]
"""

from __future__ import annotations

import argparse
import random

from river import datasets
from river.datasets import synth

from bench.sync import Setting, _repeat, lag_floor, simulate
from riverflink import models
from riverflink.models.tree_structure import describe
from riverflink.models.labels import task_of
from riverflink.models.spec import build
from riverflink.operators.scoring import Score, predict

SPEC = "HoeffdingTreeClassifier(grace_period=200)"
#: the regression streams and their specs
REGRESSION = {"Friedman": "HoeffdingTreeRegressor(grace_period=200)",
              "FriedmanMean": "HoeffdingTreeRegressor(grace_period=200,leaf_prediction=mean)"}


def colours(n: int, seed: int = 0) -> list:
    """Three classes from a nominal colour and two numeric features (the colour missing in 5% of events)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        colour = rng.choice(["red", "green", "blue", "grey"])
        a, b = rng.gauss(0, 1), rng.uniform(0, 10)
        y = "hot" if b > 7 or (colour == "red" and b > 3) else ("cold" if b < 3 or a < -1 else "mild")
        x = {"a": a, "b": b}
        if rng.random() > 0.05:
            x["colour"] = colour
        out.append((x, y))
    return out


def stream(name: str, n: int) -> list:
    if name == "Phishing":
        return _repeat([(dict(x), y) for x, y in datasets.Phishing()], n)
    if name == "SEA":  # the concept changes at the middle of the stream
        drift = synth.ConceptDriftStream(synth.SEA(variant=0, seed=1), synth.SEA(variant=3, seed=2), seed=3,
                                         position=n // 2, width=max(1, n // 20))
        return [(dict(x), y) for x, y in drift.take(n)]
    if name == "Agrawal":
        return [({k: float(v) for k, v in x.items()}, y)
                for x, y in synth.Agrawal(classification_function=2, seed=5).take(n)]
    if name == "Colours":
        return colours(n)
    if name in REGRESSION:
        return [({str(k): v for k, v in x.items()}, y) for x, y in synth.Friedman(seed=42).take(n)]
    raise ValueError(f"unknown stream {name!r}")


def river_run(spec: str, events: list) -> tuple[Score, list, list]:
    """River's tree, predict-then-learn: ``(score, the score of each event alone, the event index after which each
    split happened)``."""
    model, score, hits, splits = build(spec), Score(), [], []
    task = task_of(model)
    for i, (x, y) in enumerate(events):
        y_pred = predict(model, x)[0]
        score.add(task, y_pred, y)
        one = Score()
        one.add(task, y_pred, y)
        hits.append(one)
        before = model.summary["n_branches"] if model._root is not None else 0
        model.learn_one(x, y)
        splits += [i + 1] * (model.summary["n_branches"] - before)
    return score, hits, splits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--k", default="1,2,4,8")
    ap.add_argument("--streams", default="Phishing,SEA,Agrawal,Colours,Friedman,FriedmanMean")
    args = ap.parse_args()
    worst_gap, worst_dropped, doc_kb, mae_ratio = 0.0, 0.0, 0.0, None
    for name in args.streams.split(","):
        events, spec = stream(name, args.events), REGRESSION.get(name, SPEC)
        regression = name in REGRESSION
        river, hits, river_splits = river_run(spec, events)
        first = river_splits[0] if river_splits else 0
        late = Score()
        for one in hits[first:]:
            late.merge(one)
        metric = (f"River MAE {river.abs_error / river.events:.4f}" if regression
                  else f"River accuracy {river.correct / river.events:.4f}")
        print(f"\n== {name}: {len(events)} events, {spec}; {metric}, "
              f"{len(river_splits)} splits (first after event {first})", flush=True)
        for k in (int(v) for v in args.k.split(",")):
            grown: list = []  # (events, branches) of each merged version

            def observe(n: int, model, grown=grown) -> None:
                grown.append((n, describe(model)["branches"]))

            o = simulate(spec, events, Setting(replicas=k), first, (river, late), observe=observe)
            splits = [n for (n, b), (_, before) in zip(grown, [(0, 0)] + grown) for _ in range(max(0, b - before))]
            lags = [s - r for s, r in zip(splits, river_splits)]
            params = models.get_params(o.final)
            seen = params["model"]["seen"] or 1
            dropped, rerouted = params["model"]["dropped"] / seen, params["model"]["rerouted"] / seen
            size = len(models.dumps(models.to_wire(o.final, name="bench", version=1))) / 1024
            lag_text = (f"{len(splits)} splits, lag (events) median {sorted(lags)[len(lags) // 2]:+d} "
                        f"max {max(lags):+d}" if lags else f"{len(splits)} splits")
            floor = lag_floor(spec, events, Setting(replicas=k), first)  # River's tree served as late as the loop's
            if regression:
                floor_gap = (floor.abs_error / max(floor.events, 1)) / (late.abs_error / max(late.events, 1))
                gaps = (f"served/River MAE {o.gap(False):6.3f}x  after River's first split {o.gap(True):6.3f}x "
                        f"(River served as late: {floor_gap:5.3f}x)")
            else:
                floor_gap = 100 * (floor.correct - late.correct) / max(late.events, 1)
                gaps = (f"served-River {o.gap(False):+6.2f} pts  after River's first split {o.gap(True):+6.2f} "
                        f"(River served as late: {floor_gap:+5.2f})")
            print(f"K={k}  {gaps}  "
                  f"{lag_text}  re-routed {100 * rerouted:5.2f}%  dropped {100 * dropped:5.2f}%  "
                  f"bytes/sync {o.update_bytes / max(o.updates, 1):7.0f}  document {size:6.1f} KB", flush=True)
            if k == 4:
                if name == "Friedman":
                    mae_ratio = o.gap(True)
                elif not regression:
                    worst_gap = max(worst_gap, -o.gap(True))
                worst_dropped = max(worst_dropped, dropped)
                doc_kb = max(doc_kb, size)
    ratio = "n/a" if mae_ratio is None else f"{mae_ratio:.3f}"
    print(f"trees: worst_class_gap={worst_gap:.2f} reg_mae_ratio={ratio} dropped_share={worst_dropped:.4f} "
          f"doc_kb={doc_kb:.1f}")


if __name__ == "__main__":
    main()
