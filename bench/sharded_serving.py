"""Scatter/gather serving (``serve --shards M``) against assembled serving, same sharded model, same run.

A sparse FTRL model is trained on the Clicks stream in this process (the project's O(active features) form of
River's ``LogisticRegression``, equal to River's to roundoff) and published on ``models`` of an embedded broker as
M whole slices and a manifest (paged where a slice exceeds a record), as ``riverflink reshard`` publishes a model.
Then, alternately for ``--rounds`` rounds, the serving job runs in each mode on the same requests (Clicks events
of another seed) at the offered rate for the same time:

* ``assembled`` (``serve``, the default): every predictor subtask assembles and holds the whole model;
* ``scatter/gather`` (``serve --shards M``): M scorers hold one slice each; a gather sums partial scores.

Printed per run: answered, latency p50/p99 from send to receipt, the largest answer's difference from the
model in this process (to 1e-9), CPU-µs per request of every process of the job and of the broker, and the peak
resident memory (VmHWM) of the job's largest Python worker.  Also the objects each design holds (``objsize``): the
whole model per assembled predictor subtask, against the largest slice (a scorer subtask holds the slices of the
shards keyed to it: one each when the job's parallelism is M).

Last line: ``sharded_serving: M=<m> p99_ms=<P> assembled_p99_ms=<A> p99_ratio=<P/A> steady_p99_ratio=<R>
cpu_ratio=<C> max_abs_diff=<D> slice_mb=<S> model_mb=<W>`` (medians over the rounds; ``steady``: requests sent
after the first 3 s of a run).

    python -m bench.sharded_serving [--events 30000] [--shards 2] [--rate 300] [--seconds 15] [--rounds 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import threading
import time
from pathlib import Path

import objsize

from bench.serving import paced, pct, start_serving, wait_until_answering
from bench.throughput import cpu_seconds, process_kind
from riverflink import models
from riverflink.models import sharding
from riverflink.models.document import ModelMeta
from riverflink.models.spec import build
from riverflink.operators.resharding import resharded
from riverflink.pipelines import kafka_io
from riverflink.pipelines.broker import EmbeddedBroker, descendants, exit_on_sigterm, stop_pid
from riverflink.pipelines.click_stream import click_events
from riverflink.pipelines.config import ServeConfig

REPO = Path(__file__).resolve().parents[1]
SPEC = "LogisticRegression(ftrl=true)"
#: the steady-state p99 leaves out the requests sent in the first seconds of a run
STEADY_AFTER_S = 3.0


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory (VmHWM), MiB; 0 when it is gone."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def serve_once(servers: str, shards: int, tag: str, requests: list, model, args) -> dict:
    """One serving job in one mode: latency at the offered rate, CPU per request, answers against ``model``."""
    # (a topic of its own: a new consumer group would first read the other runs' requests)
    kafka_io.create_topics(servers, {f"requests-{tag}": 2})
    cfg = ServeConfig(servers, model_name="bench", group_id=f"bench-{tag}", shards=shards, models_tail=100_000)
    cfg = dataclasses.replace(cfg, topics=dataclasses.replace(cfg.topics, requests=f"requests-{tag}"))
    if args.checkpoint_ms:
        cfg = dataclasses.replace(cfg, flink=dataclasses.replace(cfg.flink, checkpoint_ms=args.checkpoint_ms))
    proc = start_serving(servers, cfg, REPO / ".riverflink" / f"bench-sharded-serving-{tag}.log")
    try:
        reader = kafka_io.TopicReader(servers, "predictions", fetch_max_wait_ms=10)  # (kafka-python's 500 ms adds)
        deadline = time.time() + 300
        wait_until_answering(servers, cfg.topics.requests, reader, requests[0], proc, f"probe-{tag}", deadline)
        sent, answers, timeline = {}, {}, []  # timeline: (sent at, latency in ms) per answer
        producer = kafka_io.producer(servers)

        def send(i):
            sent[f"{tag}-{i}"] = (time.time(), i)
            producer.send(cfg.topics.requests, json.dumps({"id": f"{tag}-{i}", "x": requests[i % len(requests)]}).encode())

        stop = threading.Event()

        def receive():
            while not stop.is_set():
                for r in reader.poll_json(50):
                    if r and r.get("id") in sent and r.get("status") == "ok":
                        answers[r["id"]] = r
                        timeline.append((sent[r["id"]][0], 1000 * (time.time() - sent[r["id"]][0])))

        before = cpu_seconds(descendants(proc.pid) + [args.broker_pid])
        t = threading.Thread(target=receive, daemon=True)
        t.start()
        paced(args.rate, args.seconds, send)
        producer.flush()
        while len(answers) < len(sent) and time.time() < deadline and time.time() < max(s for s, _ in sent.values()) + 60:
            time.sleep(0.2)
        stop.set()
        t.join()
        pids = descendants(proc.pid) + [args.broker_pid]
        after = cpu_seconds(pids)
        workers = [p for p in pids if process_kind(p, args.broker_pid) == "python-worker"]
        peak = max((peak_rss_mb(p) for p in workers), default=0.0)
    finally:
        stop_pid(proc.pid)
    if args.timeline and timeline:
        t0 = min(t for t, _ in timeline)
        by_second: dict = {}
        for t, ms in timeline:
            by_second.setdefault(int(t - t0), []).append(ms)
        print("    latency by second sent (max ms): " + " ".join(f"{int(max(v))}" for _, v in sorted(by_second.items())))
    diff = 0.0
    for rid, r in answers.items():
        x = requests[sent[rid][1] % len(requests)]
        diff = max(diff, abs(dict(map(tuple, r["proba"]))[True] - model.predict_proba_one(x)[True]))
    cpu_us = 1e6 * sum(v - before.get(p, 0.0) for p, v in after.items()) / max(1, len(answers))
    t0 = min((t for t, _ in timeline), default=0.0)
    latency = [ms for _, ms in timeline]
    steady = [ms for t, ms in timeline if t - t0 >= STEADY_AFTER_S]
    return {"answered": len(answers), "sent": len(sent), "p50": pct(latency, .5), "p99": pct(latency, .99),
            "p99_steady": pct(steady, .99),
            "diff": diff, "cpu_us": cpu_us, "peak_mb": peak}


def compare(model, events: int, shards: int, rate: float = 300.0, seconds: float = 15.0, rounds: int = 2,
            checkpoint_ms: int | None = None, timeline: bool = False) -> dict:
    """Publish ``model`` (learned on ``events`` events) as ``shards`` whole slices and a manifest on an embedded
    broker, then serve it assembled and by scatter/gather alternately for ``rounds`` rounds (a line per run);
    the medians: ``p99``, ``assembled_p99``, ``p99_ratio``, ``steady_p99_ratio``, ``cpu_ratio``, ``diff`` (the
    largest), ``slice_mb``, ``model_mb``, ``peak_mb`` / ``assembled_peak_mb`` (the largest Python worker)."""
    exit_on_sigterm()
    args = argparse.Namespace(rate=rate, seconds=seconds, checkpoint_ms=checkpoint_ms, timeline=timeline)
    requests = [x for x, _ in click_events(2_000, seed=4)]
    params = models.get_params(model)
    slices = [models.set_params(model.clone(), p, trusted=True) for p in sharding.split(model, params, shards)]
    model_mb = objsize.get_deep_size(model) / 2**20
    slice_mb = max(objsize.get_deep_size(s) for s in slices) / 2**20
    with EmbeddedBroker() as broker:
        servers, args.broker_pid = broker.bootstrap, broker.process.pid
        kafka_io.create_topics(servers, {"models": 1, "predictions": 2})
        version = int(time.time() * 1000)
        records = resharded(model, ModelMeta(name="bench", version=version, events=events), shards,
                            version=version, epoch=1, now=time.time())
        kafka_io.produce(servers, "models", [r for _, r in records], keys=[k.encode() for k, _ in records])
        runs: dict = {1: [], shards: []}
        for rnd in range(rounds):
            for m in ((1, shards) if rnd % 2 == 0 else (shards, 1)):
                r = serve_once(servers, m, f"m{m}-r{rnd}-{version}", requests, model, args)
                runs[m].append(r)
                name = "assembled" if m == 1 else f"scatter/gather M={m}"
                print(f"round {rnd} {name:<22} answered {r['answered']}/{r['sent']}  p50 {r['p50']:7.1f} ms  "
                      f"p99 {r['p99']:7.1f} ms (after {STEADY_AFTER_S:.0f} s: {r['p99_steady']:6.1f})  max |Δp| {r['diff']:.1e}  {r['cpu_us']:7.0f} CPU-µs/request  "
                      f"largest Python worker peak {r['peak_mb']:.0f} MiB", flush=True)
    print(f"model: {events:,} Clicks events, {sharding.entries(model, params):,} per-feature entries, "
          f"{len(records)} records on models; objects held (objsize): the whole model {model_mb:.1f} MiB per "
          f"assembled predictor subtask, the largest of {shards} slices {slice_mb:.1f} MiB (a scorer subtask "
          "holds the slices of the shards keyed to it: one each when the job's parallelism is M)")

    def med(m: int, key: str) -> float:
        return statistics.median(r[key] for r in runs[m])

    return {"p99": med(shards, "p99"), "assembled_p99": med(1, "p99"),
            "p99_ratio": med(shards, "p99") / med(1, "p99"),
            "steady_p99_ratio": med(shards, "p99_steady") / med(1, "p99_steady"),
            "cpu_ratio": med(shards, "cpu_us") / med(1, "cpu_us"), "diff": max(r["diff"] for r in runs[shards]),
            "slice_mb": slice_mb, "model_mb": model_mb, "peak_mb": med(shards, "peak_mb"),
            "assembled_peak_mb": med(1, "peak_mb")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=30_000, help="Clicks events the model learns")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--rate", type=float, default=300.0, help="offered requests/s")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--checkpoint-ms", type=int, help="serve --checkpoint-ms (default: serve's)")
    ap.add_argument("--timeline", action="store_true", help="print the slowest answer per second")
    args = ap.parse_args()
    model = build(SPEC)
    for x, y in click_events(args.events, seed=3):
        model.learn_one(x, y)
    r = compare(model, args.events, args.shards, args.rate, args.seconds, args.rounds, args.checkpoint_ms,
                args.timeline)
    print(f"sharded_serving: M={args.shards} p99_ms={r['p99']:.0f} assembled_p99_ms={r['assembled_p99']:.0f} "
          f"p99_ratio={r['p99_ratio']:.2f} steady_p99_ratio={r['steady_p99_ratio']:.2f} cpu_ratio={r['cpu_ratio']:.2f} "
          f"max_abs_diff={r['diff']:.1e} slice_mb={r['slice_mb']:.1f} model_mb={r['model_mb']:.1f}")


if __name__ == "__main__":
    main()
