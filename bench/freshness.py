"""Freshness and accuracy of served predictions against plain River, same events, same run.

Runs the whole slice (embedded broker, training and serving jobs) at a few
producer rates.  For each it prints the served model's progressive accuracy
minus single-node River's (points), the age of the model behind each answer
and the request-to-prediction latency (p50/p95, ms), and the number of model
versions sent.  Plain River's model is always current (age 0), so age is the
cost of distribution and accuracy delta is what it buys or loses.

    python -m bench.freshness [--events 10000] [--rates 500,2000]
"""

from __future__ import annotations

import argparse

from riverflink.pipelines import demo
from riverflink.pipelines.broker import EmbeddedBroker, exit_on_sigterm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--rates", default="500,2000")
    ap.add_argument("--policy", default="delta")
    args = ap.parse_args()
    exit_on_sigterm()
    rows = []
    with EmbeddedBroker() as broker:
        for rate in (float(r) for r in args.rates.split(",")):
            cfg = demo.DemoConfig(bootstrap_servers=broker.bootstrap, events=args.events, rate=rate, show=0,
                                  merge_policy=args.policy, model_name=f"fresh{int(rate)}")
            r = demo.run(cfg, out=lambda *_: None)
            rows.append((rate, r))
    print(f"{'rate/s':>7} {'river acc':>9} {'served acc':>10} {'delta':>8} {'model age ms':>20} "
          f"{'latency ms':>20} {'versions':>8}")
    for rate, r in rows:
        print(f"{rate:7.0f} {r.baseline_accuracy:9.4f} {r.served_accuracy:10.4f} "
              f"{100 * (r.served_accuracy - r.baseline_accuracy):+7.2f}pt {r.percentiles(r.model_age_ms):>20} "
              f"{r.percentiles(r.latency_ms):>20} {len(r.model_versions):8}")


if __name__ == "__main__":
    main()
