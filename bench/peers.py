"""riverflink against what a user would run instead, on one broker, on the same events, in one run.

A user who does not pick riverflink writes one Python process that consumes Kafka and calls River, often
with Quix Streams.  This bench pre-loads the same events for each system on one embedded broker (or
``--bootstrap-servers``) and measures, in turn:

Training (predict, then learn, on every event):

(a) River alone, no Kafka (the reference);
(b) a kafka-python consumer + River (``bench/peer_learners.py``);
(c) a Quix Streams application + River (``quixstreams``, the ``bench`` extra; skipped when missing);
(d) ``riverflink train --mode exact`` and (e) ``--mode batch`` (``bench/throughput.py``'s job runner: the
    window opens at the first learned batch).

Serving (request -> ``predict_proba_one`` -> answer, a model trained on the first events):

(f) a kafka-python answer loop, (g) a Quix Streams application (if installed), each in a process of its own,
    and (h) ``riverflink serve``: each is sent a burst of ``--requests`` requests (its rate: first to last
    answer, by the answers' own timestamps; CPU: every process of it and of the broker over the burst) and
    then requests paced at ``--rate`` for ``--seconds`` (latency p50/p99 from send to receipt of the answer).

Events/s (requests/s), CPU-µs per item over every process including the broker, and accuracy are printed
for each.  Last line: ``peers: exact_vs_quix=<R> batch_vs_quix=<R> exact_cpu_vs_quix=<C>
serving_vs_quix=<R> serving_p99_vs_quix=<P>`` (rates over Quix's, CPU over Quix's, p99 over Quix's); when
Quix Streams is not installed the kafka-python peer stands in and the line says ``peer=kafka-python``.
Nothing is asserted.

    python -m bench.peers [--events 40000] [--dataset Phishing] [--requests 20000] [--rate 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.peer_learners import kafka_python_peer, preload, quix_peer
from bench.serving import paced, pct, start_serving, wait_until_answering
from bench.throughput import REPO, cpu_seconds, flink_job, plain_river
from riverflink import models
from riverflink.models.spec import build as build_model
from riverflink.operators.scoring import Score
from riverflink.pipelines import kafka_io
from riverflink.pipelines.broker import EmbeddedBroker, descendants, exit_on_sigterm, stop_pid
from riverflink.pipelines.config import FlinkConfig, ServeConfig, Topics, TrainConfig
from riverflink.pipelines.sources import river_events


def river_step(spec: str, task: str):
    """``(step, score)``: the user's code, River's predict-then-learn on one event, and its running score."""
    model, score = build_model(spec), Score()

    def step(x: dict, y) -> None:
        score.add(task, model.predict_one(x), y)
        model.learn_one(x, y)

    return step, score


# -- serving peers: one process each, answering {"id", "x"} requests with {"id", "status", "prediction", "ts"} ---------------

def _answer(model, request: dict) -> dict:
    proba = model.predict_proba_one(request["x"])
    return {"id": request["id"], "status": "ok", "prediction": max(proba, key=proba.get) if proba else None,
            "ts": time.time()}


def serve_kafka_python(servers: str, requests: str, answers: str, model_file: str) -> None:
    """A kafka-python consumer of ``requests`` that produces each answer to ``answers`` (runs until killed)."""
    from kafka import KafkaConsumer, KafkaProducer

    model = models.from_wire(Path(model_file).read_text())
    consumer = KafkaConsumer(requests, bootstrap_servers=servers, group_id=None, auto_offset_reset="earliest",
                             enable_auto_commit=False, fetch_max_wait_ms=10)
    producer = KafkaProducer(bootstrap_servers=servers, linger_ms=5)
    for record in consumer:
        producer.send(answers, json.dumps(_answer(model, json.loads(record.value))).encode())


def serve_quix(servers: str, requests: str, answers: str, model_file: str) -> None:
    """A Quix Streams application: ``requests`` -> ``predict_proba_one`` -> ``answers`` (runs until killed)."""
    from quixstreams import Application

    model = models.from_wire(Path(model_file).read_text())
    state = tempfile.TemporaryDirectory(prefix="riverflink-quix-")
    app = Application(broker_address=servers, consumer_group=f"serve-{time.time_ns()}", state_dir=state.name,
                      auto_offset_reset="earliest", auto_create_topics=False, loglevel="WARNING")
    sdf = app.dataframe(app.topic(requests, value_deserializer="json"))
    sdf = sdf.apply(lambda request: _answer(model, request))
    sdf.to_topic(app.topic(answers, value_serializer="json"))
    app.run()


@dataclasses.dataclass
class Served:
    name: str
    rate: float
    cpu_us: float
    p50_ms: float
    p99_ms: float
    answered: int
    accuracy: float


def measure_serving(name: str, servers: str, broker_pid: int, proc: subprocess.Popen, requests_topic: str,
                    answers_topic: str, requests: list, labels: list, rate: float, seconds: float) -> Served:
    """A burst of ``requests`` (rate, CPU over ``proc``'s processes and the broker, accuracy against ``labels``),
    then requests paced at ``rate`` for ``seconds`` (latency), against a system already answering."""
    reader = kafka_io.TopicReader(servers, answers_topic, fetch_max_wait_ms=10)
    try:
        deadline = time.time() + 300
        wait_until_answering(servers, requests_topic, reader, requests[0], proc, f"probe-{name}", deadline)
        reader.poll_json(500)
        pids = descendants(proc.pid) + [proc.pid, broker_pid]
        before = cpu_seconds(pids)
        kafka_io.produce(servers, requests_topic,
                         [json.dumps({"id": i, "x": x}).encode() for i, x in enumerate(requests)])
        answers: dict = {}
        while len(answers) < len(requests) and time.time() < deadline and proc.poll() is None:
            for r in reader.poll_json(200):
                if r and isinstance(r.get("id"), int) and r.get("status", "ok") == "ok":
                    answers[r["id"]] = r
        after = cpu_seconds(descendants(proc.pid) + [proc.pid, broker_pid])
        stamps = [r["ts"] for r in answers.values()]
        burst_rate = len(answers) / max(1e-9, max(stamps) - min(stamps)) if stamps else float("nan")
        cpu_us = 1e6 * sum(v - before.get(p, 0.0) for p, v in after.items()) / max(1, len(answers))
        correct = sum(1 for i, r in answers.items() if r.get("prediction") == labels[i])
        sent: dict = {}
        latency: list = []
        stop = threading.Event()

        def receive():
            while not stop.is_set():
                for r in reader.poll_json(50):
                    rid = r.get("id") if r else None
                    if isinstance(rid, str) and rid in sent:
                        latency.append(1000 * (time.time() - sent.pop(rid)))

        producer = kafka_io.producer(servers)

        def send(i):
            rid = f"l{i}"
            sent[rid] = time.time()
            producer.send(requests_topic, json.dumps({"id": rid, "x": requests[i % len(requests)]}).encode())

        t = threading.Thread(target=receive, daemon=True)
        t.start()
        paced(rate, seconds, send)
        producer.flush()
        wait_until = time.time() + 30
        while sent and time.time() < wait_until:
            time.sleep(0.2)
        stop.set()
        t.join()
        producer.close()
        return Served(name, burst_rate, cpu_us, pct(latency, 0.5), pct(latency, 0.99), len(answers),
                      correct / max(1, len(answers)))
    finally:
        reader.close()


def _peer_process(kind: str, servers: str, requests_topic: str, answers_topic: str, model_file: str,
                  log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.peers", "--serve-peer", kind, "--bootstrap-servers", servers,
                             "--requests-topic", requests_topic, "--answers-topic", answers_topic,
                             "--model-file", model_file], cwd=REPO, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def quix_installed() -> bool:
    try:
        import quixstreams  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--dataset", default="Phishing")
    ap.add_argument("--model", default="StandardScaler|LogisticRegression")
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--requests", type=int, default=20_000, help="serving burst size")
    ap.add_argument("--rate", type=float, default=1000.0, help="offered requests/s for the serving latency")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--bootstrap-servers")
    # (a serving peer's own process)
    ap.add_argument("--serve-peer", choices=("kafka-python", "quix"), help=argparse.SUPPRESS)
    ap.add_argument("--requests-topic", help=argparse.SUPPRESS)
    ap.add_argument("--answers-topic", help=argparse.SUPPRESS)
    ap.add_argument("--model-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    exit_on_sigterm()
    if args.serve_peer:
        serve = serve_quix if args.serve_peer == "quix" else serve_kafka_python
        serve(args.bootstrap_servers, args.requests_topic, args.answers_topic, args.model_file)
        return
    quix = quix_installed()
    events = list(river_events(args.dataset, args.events))
    task = "binary" if {y for _, y in events} <= {True, False} else "multiclass"
    (REPO / ".riverflink").mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:
        broker = None if args.bootstrap_servers else stack.enter_context(EmbeddedBroker())
        servers = args.bootstrap_servers or broker.bootstrap
        broker_pid = broker.process.pid if broker else None
        print(f"{args.dataset}: {len(events):,} events, model {args.model}; one broker; "
              f"Quix Streams {'installed' if quix else 'not installed (pip install -e .[bench])'}")
        river = plain_river(args.model, events)
        print(f"(a) River alone               {river['events_per_s']:9,.0f} events/s {river['cpu_us']:7.1f} CPU-µs/event "
              f"accuracy {river['accuracy']:.4f}")
        peers = {}
        for name, peer in (("kafka-python", kafka_python_peer), ("quix", quix_peer)):
            topic = f"peer-{name}-{int(time.time() * 1000)}"
            kafka_io.create_topics(servers, {topic: 2})
            preload(servers, topic, events)
            step, score = river_step(args.model, task)
            run = peer(servers, topic, len(events), step, broker_pid)
            if run is None:
                continue
            peers[name] = (run, score)
            print(f"({'b' if name == 'kafka-python' else 'c'}) {run.name:<25} {run.events_per_s:9,.0f} events/s "
                  f"{run.cpu_us:7.1f} CPU-µs/event accuracy {score.metric(task):.4f} "
                  f"(its process {1e6 * run.cpu_s / run.events:.0f}, the broker {1e6 * run.broker_cpu_s / run.events:.0f})")
        jobs = {}
        for mode in ("exact", "batch"):
            cfg = TrainConfig(servers, model_spec=args.model, replicas=args.replicas, mode=mode,
                              sync_every_events=500 if mode == "batch" else 100,
                              flink=FlinkConfig(parallelism=args.parallelism))
            jobs[mode] = flink_job(servers, cfg, events, {}, broker_pid)
            j = jobs[mode]
            print(f"({'d' if mode == 'exact' else 'e'}) riverflink --mode {mode:<9} {j['events_per_s']:9,.0f} events/s "
                  f"{j['cpu_us']:7.1f} CPU-µs/event accuracy {j['accuracy']:.4f} (job + broker)")

        # serving: a model trained on the first events, the requests are the next ones
        split = min(len(events) // 2, 5000)
        model = build_model(args.model)
        for x, y in events[:split]:
            model.learn_one(x, y)
        asked = events[split: split + args.requests]
        requests, labels = [x for x, _ in asked], [y for _, y in asked]
        model_file = REPO / ".riverflink" / "bench-peers-model.json"
        model_file.write_bytes(models.dumps(models.to_wire(model, name="peers", version=int(time.time() * 1000),
                                                          created_at=time.time())))
        served = {}
        for kind in ("kafka-python", "quix") if quix else ("kafka-python",):
            req, ans = f"req-{kind}-{int(time.time() * 1000)}", f"ans-{kind}-{int(time.time() * 1000)}"
            kafka_io.create_topics(servers, {req: 2, ans: 2})
            proc = _peer_process(kind, servers, req, ans, str(model_file), REPO / ".riverflink" / f"bench-peer-{kind}.log")
            try:
                served[kind] = measure_serving(kind, servers, broker_pid, proc, req, ans, requests, labels, args.rate,
                                               args.seconds)
            finally:
                stop_pid(proc.pid)
        name = f"peers{int(time.time())}"
        kafka_io.create_topics(servers, {f"{name}-requests": 2, f"{name}-models": 1, f"{name}-predictions": 2})
        kafka_io.produce(servers, f"{name}-models", [models.dumps(models.to_wire(
            model, name=name, version=int(time.time() * 1000), created_at=time.time()))])
        cfg = ServeConfig(servers, model_name=name, group_id=name,
                          topics=Topics.named(requests=f"{name}-requests", models=f"{name}-models",
                                              predictions=f"{name}-predictions"))
        proc = start_serving(servers, cfg, REPO / ".riverflink" / "bench-peers-serving.log")
        try:
            served["riverflink"] = measure_serving("riverflink", servers, broker_pid, proc, f"{name}-requests",
                                                   f"{name}-predictions", requests, labels, args.rate, args.seconds)
        finally:
            stop_pid(proc.pid)
        for s in served.values():
            print(f"    serve: {s.name:<12} burst {s.rate:8,.0f} requests/s {s.cpu_us:7.1f} CPU-µs/request "
                  f"(with the broker), paced {args.rate:.0f}/s p50 {s.p50_ms:6.0f} ms p99 {s.p99_ms:6.0f} ms, "
                  f"accuracy {s.accuracy:.4f} over {s.answered:,}")
    peer = "quix" if "quix" in peers else "kafka-python"
    base, base_serve = peers[peer][0], served.get(peer)
    rf = served["riverflink"]
    print(f"peers: exact_vs_quix={jobs['exact']['events_per_s'] / base.events_per_s:.2f} "
          f"batch_vs_quix={jobs['batch']['events_per_s'] / base.events_per_s:.2f} "
          f"exact_cpu_vs_quix={jobs['exact']['cpu_us'] / base.cpu_us:.2f} "
          f"serving_vs_quix={rf.rate / base_serve.rate:.2f} serving_p99_vs_quix={rf.p99_ms / base_serve.p99_ms:.2f}"
          + ("" if peer == "quix" else " peer=kafka-python"))


if __name__ == "__main__":
    main()
