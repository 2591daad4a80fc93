"""Training throughput: the riverflink training job against plain River, same events, same run.

(a) plain River ``predict_one`` + ``learn_one`` over N events, in one process;
(b) the training job end to end: N events pre-loaded in Kafka, the job reads,
    parses, predicts-then-learns in K replicas, syncs and merges; events/s
    from the first event learned to the last (the trainer's own timestamps
    on its progressive-validation predictions).

Prints both and the ratio (b)/(a).  Nothing is asserted.

    python -m bench.throughput [--events 50000] [--parallelism 2] [--bootstrap-servers HOST:PORT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from riverflink.models.spec import build as build_model
from riverflink.pipelines import kafka_io
from riverflink.pipelines.broker import EmbeddedBroker, exit_on_sigterm, stop_pid
from riverflink.pipelines.config import Topics
from riverflink.pipelines.sources import encode_events, river_events

REPO = Path(__file__).resolve().parents[1]


def plain_river(spec: str, events: list) -> float:
    model = build_model(spec)
    start = time.perf_counter()
    for x, y in events:
        model.predict_one(x)
        model.learn_one(x, y)
    return len(events) / (time.perf_counter() - start)


def flink_job(servers: str, spec: str, events: list, parallelism: int, replicas: int, env_extra: dict,
              extra_args: list) -> dict:
    run = f"bench{int(time.time())}"
    topics = Topics.for_run(run)
    kafka_io.create_topics(servers, topics.to_create("events", "dead_letter", "predictions", "models", "metrics"))
    kafka_io.produce(servers, topics.events, encode_events(events))
    log = open(REPO / ".riverflink" / f"{run}.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "riverflink.pipelines.cli", "train", "--bootstrap-servers", servers, "--model", spec,
         "--replicas", str(replicas), "--parallelism", str(parallelism), "--model-name", run,
         *topics.cli_args(), "--group-id", run, *extra_args],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **env_extra},
    )
    try:
        reader = kafka_io.TopicReader(servers, topics.metrics)
        models_reader = kafka_io.TopicReader(servers, topics.models)
        stamps, learned, model_bytes, versions = [], 0, 0, 0
        deadline = time.time() + 900
        while learned < len(events):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"training job ended early or timed out; see {log.name}")
            for r in reader.poll_json(200):  # one metrics record per replica batch
                if r and r.get("events"):
                    stamps.append(r["ts"])
                    learned += r["events"]
            for v in models_reader.poll(0):
                model_bytes += len(v)
                versions += 1
        return {"events_per_s": len(events) / (max(stamps) - min(stamps)), "model_versions": versions,
                "model_bytes": model_bytes}
    finally:
        stop_pid(proc.pid)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--model", default="StandardScaler|LogisticRegression")
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--loopback", action="store_true",
                    help="run Python subtasks in the client process (PyFlink's default) instead of one process each")
    ap.add_argument("--batch-size", type=int, default=100, help="events per micro-batch handed to a replica")
    ap.add_argument("--bundle-ms", type=int, default=100)
    ap.add_argument("--bundle-size", type=int, default=1000)
    ap.add_argument("--bootstrap-servers")
    args = ap.parse_args()
    exit_on_sigterm()
    events = list(river_events("Phishing", args.events))
    (REPO / ".riverflink").mkdir(exist_ok=True)
    a = plain_river(args.model, events)
    env_extra = {"RIVERFLINK_PYTHON_WORKERS": "loopback"} if args.loopback else {}
    extra = ["--bundle-ms", str(args.bundle_ms), "--bundle-size", str(args.bundle_size),
             "--batch-size", str(args.batch_size)]
    with contextlib.ExitStack() as stack:
        servers = args.bootstrap_servers or stack.enter_context(EmbeddedBroker()).bootstrap
        b = flink_job(servers, args.model, events, args.parallelism, args.replicas, env_extra, extra)
    raw_bytes = sum(len(json.dumps({"x": x, "y": y})) for x, y in events)
    print(f"events={args.events} model={args.model} parallelism={args.parallelism} replicas={args.replicas} "
          f"workers={'loopback' if args.loopback else 'process'} bundle={args.bundle_ms}ms/{args.bundle_size} "
          f"batch={args.batch_size}")
    print(f"(a) plain River predict+learn   {a:10.0f} events/s")
    print(f"(b) riverflink training job     {b['events_per_s']:10.0f} events/s")
    print(f"ratio (b)/(a)                   {b['events_per_s'] / a:10.3f}")
    print(f"model versions {b['model_versions']}, model bytes sent {b['model_bytes']} "
          f"({b['model_bytes'] / raw_bytes:.3f} x the event bytes)")


if __name__ == "__main__":
    main()
