"""Training throughput: the riverflink training job against plain River, same events, same run.

For each learning mode (``exact``, ``batch``):

(a) plain River in this process: ``predict_one`` + ``learn_one`` over the events, timed before
    and after the job and averaged (the reference for ``ratio``), and for ``batch`` also River's
    ``predict_proba_many`` + ``learn_many`` on the same batches;
(b) the training job end to end: the events pre-loaded in Kafka; the job reads, parses, learns in
    K replicas, syncs and merges.  Its window opens when the first metrics record (one per
    replica batch) reaches the bench and closes when every event is learned; its rate and CPU
    count only the batches learned inside the window (by the records' timestamps: results
    arrive at bundle ends, so earlier work was already done).  CPU is the summed user+system
    time, over that window, of every process of the job (CLI, JVM, Python workers) and of the
    broker, from /proc.

Prints events/s, the ratio to River's loop, CPU-µs per event (River's is its own process time),
the progressive accuracy against River's, overall and *steady* (the batches after the first 20%
against River's events after the first 20%), and the age of the merged version the replicas learned
on (median over the steady batches), in ms and in events at the job's rate; ends with one line per
mode and parallelism (``--parallelism 1,2`` runs each mode at each, alternately):
``throughput: mode=M parallelism=P ratio=R cpu_ratio=C accuracy_delta=D accuracy_delta_steady=S
version_age_events=A``.  Nothing is asserted.

    python -m bench.throughput [--events 50000] [--modes exact,batch] [--parallelism 2 | 1,2]
                               [--dataset Phishing | --file F --target COL]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

from riverflink.models.spec import build as build_model
from riverflink.pipelines import kafka_io
from riverflink.operators.scoring import river_baseline
from riverflink.pipelines.broker import EmbeddedBroker, descendants, exit_on_sigterm, stop_pid
from riverflink.pipelines.config import FlinkConfig, Topics, TrainConfig
from riverflink.pipelines.options import to_argv
from riverflink.pipelines.sources import encode_events, river_events

REPO = Path(__file__).resolve().parents[1]


#: the share of the events (and of the job's batches) before "steady"
STEADY_AFTER = 0.2


def plain_river(spec: str, events: list) -> dict:
    start, cpu = time.perf_counter(), time.process_time()
    score, steady, _ = river_baseline(build_model(spec), events, warmup=int(STEADY_AFTER * len(events)))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"events_per_s": len(events) / wall, "cpu_us": 1e6 * cpu / len(events), "accuracy": score.metric("binary"),
            "accuracy_steady": steady.metric("binary")}


def river_many(spec: str, events: list, batch: int) -> dict:
    import pandas as pd

    model, hits = build_model(spec), 0
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(events), batch):
        chunk = events[i : i + batch]
        X = pd.DataFrame.from_records([x for x, _ in chunk])
        proba = model.predict_proba_many(X)
        if len(proba.columns):
            hits += sum(p == y for p, (_, y) in zip(proba.idxmax(axis=1).tolist(), chunk))
        model.learn_many(X, pd.Series([y for _, y in chunk]))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"events_per_s": len(events) / wall, "cpu_us": 1e6 * cpu / len(events), "accuracy": hits / len(events)}


def cpu_seconds(pids: list[int]) -> dict:
    """pid -> user+system CPU seconds so far."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for p in pids:
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            out[p] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return out


def process_kind(pid: int, broker_pid: int | None) -> str:
    """A short name for where a process's CPU goes: broker, jvm, python-worker or client."""
    if pid == broker_pid:
        return "broker"
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "gone"
    if "java" in cmd.split(" ", 1)[0]:
        return "jvm"
    if "beam_boot" in cmd or "pyflink.fn_execution" in cmd or "beam" in cmd:
        return "python-worker"
    return "client"


def cpu_by_process(before: dict, after: dict, broker_pid: int | None, per: int, each_worker: bool = False) -> dict:
    """CPU-µs per ``per`` items spent between two :func:`cpu_seconds` readings, summed by
    :func:`process_kind` (each Python worker apart with ``each_worker``)."""
    parts: dict[str, float] = {}
    for p, t in after.items():
        kind = process_kind(p, broker_pid)
        kind = f"{kind}[{p}]" if each_worker and kind == "python-worker" else kind
        parts[kind] = parts.get(kind, 0.0) + 1e6 * (t - before.get(p, 0.0)) / max(1, per)
    return parts


def flink_job(servers: str, cfg: TrainConfig, events: list, env_extra: dict, broker_pid: int | None) -> dict:
    run = f"bench{int(time.time())}"
    topics = Topics.for_run(run)
    cfg = dataclasses.replace(cfg, bootstrap_servers=servers, model_name=run, topics=topics, group_id=run)
    kafka_io.create_topics(servers, topics.to_create("events", "dead_letter", "predictions", "models", "metrics",
                                                     *(("users",) if cfg.recommender else ())))
    kafka_io.produce(servers, topics.events, encode_events(events))
    log = open(REPO / ".riverflink" / f"{run}.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "riverflink.pipelines.cli", "train", "--bootstrap-servers", servers, *to_argv(cfg)],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **env_extra},
    )
    try:
        reader = kafka_io.TopicReader(servers, topics.metrics)
        models_reader = kafka_io.TopicReader(servers, topics.models)
        learned, correct, abs_error, model_bytes, versions = 0, 0, 0.0, 0, 0
        batches = []  # (ts, events, correct, age of the merged version learned on in ms), one per replica batch
        deadline = time.time() + 900
        cpu_start = None
        while learned < len(events):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"training job ended early or timed out; see {log.name}")
            for r in reader.poll_json(200):  # one metrics record per replica batch
                if r and r.get("events"):
                    if cpu_start is None:  # the window opens when the first learned batch arrives
                        pids = descendants(proc.pid) + ([broker_pid] if broker_pid else [])
                        cpu_start, opened_at = cpu_seconds(pids), time.time()
                    learned += r["events"]
                    correct += r.get("correct", 0)
                    abs_error += r.get("abs_error", 0.0)
                    batches.append((r["ts"], r["events"], r.get("correct", 0),
                                    1000 * r["ts"] - r["model_version"] if r.get("model_version") else None))
            for v in models_reader.poll(0):
                model_bytes += len(v)
                versions += 1
        pids = descendants(proc.pid) + ([broker_pid] if broker_pid else [])
        cpu_end = cpu_seconds(pids)
        cpu = sum(t - cpu_start.get(p, 0.0) for p, t in cpu_end.items())
        # only batches learned after the window opened count: output arrives at bundle ends, so with
        # long bundles much was learned (and its CPU spent) before the first record reached us
        window_events = sum(n for ts, n, _, _ in batches if ts > opened_at)
        window_s = max(ts for ts, _, _, _ in batches) - opened_at
        tenth = max(1, len(batches) // 10)
        tenths = [batches[i : i + tenth] for i in range(0, len(batches), tenth)]
        # how old the merged version a batch was learned on was (versions are creation times in ms)
        ages = [sorted(a for _, _, _, a in t if a is not None) for t in tenths]
        steady = batches[int(STEADY_AFTER * len(batches)):]
        steady_ages = sorted(a for _, _, _, a in steady if a is not None)
        return {
            "events_per_s": window_events / window_s if window_s > 0 else float("nan"),
            "cpu_us": 1e6 * cpu / max(1, window_events),
            "cpu_parts": cpu_by_process(cpu_start, cpu_end, broker_pid, window_events, each_worker=True),
            "accuracy": correct / max(1, learned),
            "mae": abs_error / max(1, learned),  # (regression and recommenders)
            "deciles": [sum(c for _, _, c, _ in t) / max(1, sum(e for _, e, _, _ in t)) for t in tenths],
            "base_age": [a[len(a) // 2] if a else float("nan") for a in ages],
            "accuracy_steady": sum(c for _, _, c, _ in steady) / max(1, sum(e for _, e, _, _ in steady)),
            "steady_age_ms": steady_ages[len(steady_ages) // 2] if steady_ages else float("nan"),
            "batch_mean": learned / max(1, len(batches)),
            "model_versions": versions,
            "model_bytes": model_bytes,
            "run": run, "topics": topics,  # (the run's topics stay on the broker: serving can follow them)
        }
    finally:
        stop_pid(proc.pid)


def measure(args, mode: str, parallelism: int, servers: str, broker, events: list, env_extra: dict) -> str:
    """One mode at one parallelism: River before and after the job, then the job; prints the figures and returns
    the machine-readable line."""
    sync = args.sync_every or (500 if mode == "batch" else 100)
    cfg = TrainConfig(servers, model_spec=args.model, replicas=args.replicas, batch_size=args.batch_size,
                      mode=mode, sync_every_events=sync,
                      flink=FlinkConfig(parallelism=parallelism, bundle_ms=args.bundle_ms,
                                        bundle_size=args.bundle_size))
    before = plain_river(args.model, events)
    b = flink_job(servers, cfg, events, env_extra, broker.process.pid if broker else None)
    after = plain_river(args.model, events)  # River timed on both sides of the job: the machine drifts
    river = {k: (before[k] + after[k]) / 2 for k in before}
    print(f"\n== mode={mode} events={len(events)} model={args.model} parallelism={parallelism} "
          f"replicas={args.replicas} bundle={args.bundle_ms}ms/{args.bundle_size} batch={args.batch_size} "
          f"sync_every={sync}")
    print(f"(a) River predict_one+learn_one  {river['events_per_s']:9.0f} events/s  "
          f"{river['cpu_us']:7.1f} CPU-us/event  accuracy {river['accuracy']:.4f}  "
          f"(mean of {before['events_per_s']:.0f} before and {after['events_per_s']:.0f} after the job)")
    if mode == "batch":
        many = river_many(args.model, events, sync // 2)
        print(f"    River *_many, batches of {sync // 2:<4} {many['events_per_s']:9.0f} events/s  "
              f"{many['cpu_us']:7.1f} CPU-us/event  accuracy {many['accuracy']:.4f}")
    print(f"(b) riverflink training job      {b['events_per_s']:9.0f} events/s  "
          f"{b['cpu_us']:7.1f} CPU-us/event  accuracy {b['accuracy']:.4f}  "
          f"(job + broker, {b['model_versions']} model versions)")
    print(f"    events per replica batch {b['batch_mean']:.0f}; accuracy by tenth of the batches: "
          + " ".join(f"{a:.3f}" for a in b["deciles"]))
    print("    median age of the merged version learned on, by tenth (ms): "
          + " ".join(f"{a:.0f}" for a in b["base_age"]))
    print("    CPU-us/event by process: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(b["cpu_parts"].items())))
    ratio, cpu_ratio = b["events_per_s"] / river["events_per_s"], b["cpu_us"] / river["cpu_us"]
    delta = 100 * (b["accuracy"] - river["accuracy"])
    steady = 100 * (b["accuracy_steady"] - river["accuracy_steady"])
    age_events = b["steady_age_ms"] * b["events_per_s"] / 1000
    print(f"    steady (after the first {STEADY_AFTER:.0%}): accuracy {b['accuracy_steady']:.4f} against "
          f"River's {river['accuracy_steady']:.4f}; merged version learned on {b['steady_age_ms']:.0f} ms "
          f"old, {age_events:.0f} events at this rate (median)")
    return (f"throughput: mode={mode} parallelism={parallelism} ratio={ratio:.2f} cpu_ratio={cpu_ratio:.2f} "
            f"accuracy_delta={delta:+.2f} accuracy_delta_steady={steady:+.2f} version_age_events={age_events:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--dataset", default="Phishing")
    ap.add_argument("--file", help="a labelled .jsonl or .csv file instead of --dataset")
    ap.add_argument("--target", help="label column of a CSV file")
    ap.add_argument("--model", default="StandardScaler|LogisticRegression")
    ap.add_argument("--modes", default="exact,batch")
    ap.add_argument("--parallelism", default="2", help="subtasks per operator; a list (1,2) runs each in turn")
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--loopback", action="store_true",
                    help="run Python subtasks in the client process (PyFlink's default) instead of one process each")
    ap.add_argument("--batch-size", type=int, default=500, help="events per micro-batch handed to a replica")
    ap.add_argument("--sync-every", type=int, default=None,
                    help="events per replica between syncs (default: 100 exact, 500 batch)")
    ap.add_argument("--bundle-ms", type=int, default=100)
    ap.add_argument("--bundle-size", type=int, default=1000)
    ap.add_argument("--bootstrap-servers")
    args = ap.parse_args()
    exit_on_sigterm()
    if args.file:
        from itertools import islice

        from riverflink.pipelines.sources import file_events

        events = list(islice(file_events(args.file, args.target), args.events))
    else:
        events = list(river_events(args.dataset, args.events))
    (REPO / ".riverflink").mkdir(exist_ok=True)
    env_extra = {"RIVERFLINK_PYTHON_WORKERS": "loopback"} if args.loopback else {}
    lines = []
    with contextlib.ExitStack() as stack:
        broker = None if args.bootstrap_servers else stack.enter_context(EmbeddedBroker())
        servers = args.bootstrap_servers or broker.bootstrap
        parallelisms = [int(p) for p in str(args.parallelism).split(",")]
        for m, mode in enumerate(args.modes.split(",")):
            for parallelism in parallelisms if m % 2 == 0 else parallelisms[::-1]:  # alternately: the machine drifts
                lines.append(measure(args, mode, parallelism, servers, broker, events, env_extra))
    print()
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
