"""What ``--mode batch`` costs and buys, per batch size, in one process (no Flink, no merging).

For each stream and batch size, on the same events in the same run:

* River's ``predict_one`` + ``learn_one`` loop (the reference, events/s and progressive metric);
* River's ``predict_proba_many`` / ``predict_many`` + ``learn_many`` on the same batches, as River
  ships it (one step on the batch's mean gradient);
* riverflink's replica in ``batch`` mode (:meth:`Replica.learn_batch`: the batch is predicted
  with the model as it stood at its start, then learned by one weighted ``learn_many``);
* riverflink's replica in ``exact`` mode.

Each row prints events/s (process CPU time) and the progressive metric's difference to River's
loop: accuracy points for classifiers, MAE ratio for regressors.  Nothing is asserted.

    python -m bench.batch_mode [--events 20000] [--batches 10,50,100,250,500]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from bench.sync import stream
from riverflink.models.labels import task_of
from riverflink.models.spec import build as build_model
from riverflink.operators.replica import Replica
from riverflink.operators.scoring import Score, river_baseline


def _river_many(spec: str, events: list, batch: int) -> tuple[Score, float]:
    model, task, score = build_model(spec), None, Score()
    task = task_of(model)
    start = time.process_time()
    for i in range(0, len(events), batch):
        chunk = events[i : i + batch]
        X = pd.DataFrame.from_records([x for x, _ in chunk]).fillna(0.0)
        y = pd.Series([y for _, y in chunk])
        if task == "regression":
            preds = model.predict_many(X).tolist()
        else:
            proba = model.predict_proba_many(X)
            preds = proba.idxmax(axis=1).tolist() if len(proba.columns) else [None] * len(chunk)
        for p, (_, yy) in zip(preds, chunk):
            score.add(task, p, yy)
        model.learn_many(X, y)
    return score, time.process_time() - start


def _replica(spec: str, events: list, batch: int, mode: str) -> tuple[Score, float]:
    replica, score = Replica.fresh(build_model(spec)), Score()
    start = time.process_time()
    for i in range(0, len(events), batch):
        chunk = events[i : i + batch]
        s, _ = replica.learn_batch([x for x, _ in chunk], [y for _, y in chunk], mode)
        score.merge(s)
    return score, time.process_time() - start


def _river_loop(spec: str, events: list) -> tuple[Score, float]:
    start = time.process_time()
    whole = river_baseline(build_model(spec), events)[0]
    return whole, time.process_time() - start


def _delta(task: str, s: Score, ref: Score) -> str:
    if task == "regression":
        return f"MAE {s.abs_error / ref.abs_error:6.3f}x"
    return f"{100 * (s.correct - ref.correct) / ref.events:+6.2f} pts"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default="Phishing,Hyperplane,SEA,Friedman")
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batches", default="10,50,100,250,500")
    args = ap.parse_args()
    for name in args.streams.split(","):
        spec, events = stream(name, args.events)
        task = task_of(build_model(spec))
        ref, ref_cpu = _river_loop(spec, events)
        print(f"\n== {name} ({len(events)} events, {spec}); River learn_one loop: {len(events) / ref_cpu:8.0f} ev/s")
        print(f"{'batch':>6} {'River learn_many':>30} {'replica batch':>30} {'replica exact':>30}")
        for b in [int(v) for v in args.batches.split(",")]:
            cells = []
            for run in (lambda: _river_many(spec, events, b), lambda: _replica(spec, events, b, "batch"),
                        lambda: _replica(spec, events, b, "exact")):
                s, cpu = run()
                cells.append(f"{len(events) / cpu:8.0f} ev/s {_delta(task, s, ref):>14}")
            print(f"{b:>6} " + " ".join(f"{c:>30}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
