"""Serving against plain River and against a bare Kafka hop, same model, same run.

A model trained on Phishing is published to ``models``.  Then, on one embedded broker:

(a) plain River ``predict_proba_one`` over N requests in this process: requests/s, CPU-µs per
    request, and the p99 of one call;
(b) ``LiveModel`` (the in-process follower of ``models``) and plain River, called alternately on
    each request while the broker runs and the follower thread polls: p50/p99 of one
    ``predict_proba_one`` each (``river_p99_us`` in the last line is this paired figure);
(c) a bare Kafka hop: a kafka-python producer sends timestamped records at the offered rate and
    a consumer in this process receives them: latency p50/p99 from send to receipt;
(d) the serving job: requests at the same offered rate for the same time, latency p50/p99 from
    send to receipt of the answer; then a burst of N requests for its rate (first to last answer)
    and CPU-µs per request (every process of the job and the broker, from /proc, over the burst).

Ends with ``serving: ratio=R cpu_ratio=C p99_ms=P kafka_hop_p99_ms=K live_p99_us=L river_p99_us=Q``.
Nothing is asserted.

    python -m bench.serving [--rate 1000] [--seconds 20] [--requests 20000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.throughput import cpu_by_process, cpu_seconds
from riverflink import LiveModel, models
from riverflink.models.spec import build as build_model
from riverflink.pipelines import kafka_io
from riverflink.pipelines.config import ServeConfig
from riverflink.pipelines.options import to_argv
from riverflink.pipelines.broker import EmbeddedBroker, descendants, exit_on_sigterm, stop_pid
from riverflink.pipelines.sources import river_events

REPO = Path(__file__).resolve().parents[1]


def pct(values: list, q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")


def paced(rate: float, seconds: float, send) -> None:
    """Call ``send(i)`` at ``rate`` per second for ``seconds``."""
    start, i = time.perf_counter(), 0
    while i < rate * seconds:
        ahead = i / rate - (time.perf_counter() - start)
        if ahead > 0:
            time.sleep(ahead)
        send(i)
        i += 1


def start_serving(servers: str, cfg: ServeConfig, log_path: Path) -> subprocess.Popen:
    """``riverflink serve`` with ``cfg`` in a process of its own (stop it with ``stop_pid``), output to ``log_path``."""
    return subprocess.Popen([sys.executable, "-m", "riverflink.pipelines.cli", "serve", "--bootstrap-servers",
                             servers, *to_argv(cfg)], stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_until_answering(servers: str, topic: str, reader, x: dict, proc: subprocess.Popen, probe: str,
                         deadline: float) -> None:
    """Send the request ``x`` as ``probe`` every 2 s until ``reader`` sees it answered ``ok`` (the job holds the
    model), the job exits or ``deadline`` passes."""
    while time.time() < deadline and proc.poll() is None:
        kafka_io.produce(servers, topic, [json.dumps({"id": probe, "x": x}).encode()])
        if any(r and r.get("id") == probe and r.get("status") == "ok" for r in reader.poll_json(2000)):
            return


def kafka_hop(servers: str, rate: float, seconds: float) -> list[float]:
    topic = f"hop-{int(time.time() * 1000)}"
    kafka_io.create_topics(servers, {topic: 1})
    reader = kafka_io.TopicReader(servers, topic, fetch_max_wait_ms=10)  # (kafka-python waits 500 ms by default)
    lat, stop = [], threading.Event()

    def receive():
        while not stop.is_set():
            for v in reader.poll(50):
                lat.append(1000 * (time.time() - json.loads(v)["t"]))

    t = threading.Thread(target=receive, daemon=True)
    t.start()
    producer = kafka_io.producer(servers)
    paced(rate, seconds, lambda i: producer.send(topic, json.dumps({"i": i, "t": time.time()}).encode()))
    producer.flush()
    time.sleep(2)
    stop.set()
    t.join()
    reader.close()
    return lat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20_000, help="burst size for the rate and CPU figures")
    ap.add_argument("--rate", type=float, default=1000.0, help="offered requests/s for the latency figures")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--bundle-ms", type=int, help="default: riverflink serve's")
    ap.add_argument("--batch-size", type=int, default=500, help="serve --batch-size")
    ap.add_argument("--buffer-timeout-ms", type=int, help="default: riverflink serve's")
    args = ap.parse_args()
    exit_on_sigterm()
    model = build_model("StandardScaler|LogisticRegression")
    for x, y in river_events("Phishing", 2000, seed=3):
        model.learn_one(x, y)
    requests = [x for x, _ in river_events("Phishing", args.requests, seed=4)]

    calls, cpu = [], time.process_time()
    start = time.perf_counter()
    for x in requests:
        t0 = time.perf_counter_ns()
        model.predict_proba_one(x)
        calls.append((time.perf_counter_ns() - t0) / 1000)
    river_rate = len(requests) / (time.perf_counter() - start)
    river_cpu_us = 1e6 * (time.process_time() - cpu) / len(requests)
    local = [max(p, key=p.get) for p in (model.predict_proba_one(x) for x in requests)]

    with EmbeddedBroker() as broker:
        servers = broker.bootstrap
        kafka_io.create_topics(servers, {"requests": 2, "models": 1, "predictions": 2})
        doc = models.to_wire(model, name="bench", version=int(time.time() * 1000), created_at=time.time())
        kafka_io.produce(servers, "models", [models.dumps(doc)])

        with LiveModel(servers, "bench") as live:
            live.wait(30)
            live_calls, paired_calls = [], []
            both = ((live.predict_proba_one, live_calls), (model.predict_proba_one, paired_calls))
            for i, x in enumerate(requests):
                for predict, out in both if i % 2 else both[::-1]:
                    t0 = time.perf_counter_ns()
                    predict(x)
                    out.append((time.perf_counter_ns() - t0) / 1000)

        hop = kafka_hop(servers, args.rate, args.seconds)

        cfg = ServeConfig(servers, model_name="bench", batch_size=args.batch_size)
        cfg = dataclasses.replace(cfg, flink=dataclasses.replace(
            cfg.flink, bundle_ms=args.bundle_ms or cfg.flink.bundle_ms,
            buffer_timeout_ms=args.buffer_timeout_ms or cfg.flink.buffer_timeout_ms))
        proc = start_serving(servers, cfg, REPO / ".riverflink" / "bench-serving.log")
        try:
            reader = kafka_io.TopicReader(servers, "predictions", fetch_max_wait_ms=10)
            deadline = time.time() + 300
            wait_until_answering(servers, "requests", reader, requests[0], proc, "probe", deadline)
            # latency at the offered rate
            sent: dict = {}
            producer = kafka_io.producer(servers)

            def send(i):
                sent[f"l{i}"] = time.time()
                producer.send("requests", json.dumps({"id": f"l{i}", "x": requests[i % len(requests)]}).encode())

            latency: list = []
            stop = threading.Event()

            def receive():
                while not stop.is_set():
                    for r in reader.poll_json(50):
                        if r and str(r.get("id", "")).startswith("l") and r["id"] in sent:
                            latency.append(1000 * (time.time() - sent[r["id"]]))

            t = threading.Thread(target=receive, daemon=True)
            t.start()
            paced(args.rate, args.seconds, send)
            producer.flush()
            while len(latency) < len(sent) and time.time() < deadline:
                time.sleep(0.2)
            stop.set()
            t.join()
            # burst: rate and CPU
            pids = descendants(proc.pid) + [broker.process.pid]
            before = cpu_seconds(pids)
            kafka_io.produce(servers, "requests",
                             [json.dumps({"id": i, "x": x}).encode() for i, x in enumerate(requests)])
            answers: dict = {}
            while len(answers) < len(requests) and time.time() < deadline and proc.poll() is None:
                for r in reader.poll_json(200):
                    if r and r.get("status") == "ok" and isinstance(r.get("id"), int):
                        answers[r["id"]] = r
            after = cpu_seconds(descendants(proc.pid) + [broker.process.pid])
            parts = cpu_by_process(before, after, broker.process.pid, len(answers))  # while the processes live
        finally:
            stop_pid(proc.pid)
    stamps = [r["ts"] for r in answers.values()]
    job_rate = len(answers) / (max(stamps) - min(stamps))
    job_cpu_us = 1e6 * sum(v - before.get(p, 0.0) for p, v in after.items()) / max(1, len(answers))
    differ = sum(1 for i, r in answers.items() if r["prediction"] != local[i])
    print(f"requests={len(requests)} answered={len(answers)} offered={args.rate:.0f}/s for {args.seconds:.0f}s "
          f"batch={args.batch_size} bundle={cfg.flink.bundle_ms}ms buffer_timeout={cfg.flink.buffer_timeout_ms}ms")
    print(f"(a) River predict_proba_one   {river_rate:9.0f} req/s  {river_cpu_us:7.1f} CPU-us/req  "
          f"call p50 {pct(calls, .5):.1f} us p99 {pct(calls, .99):.1f} us")
    print(f"(b) LiveModel.predict_proba_one                              "
          f"call p50 {pct(live_calls, .5):.1f} us p99 {pct(live_calls, .99):.1f} us; River alternately "
          f"p50 {pct(paired_calls, .5):.1f} us p99 {pct(paired_calls, .99):.1f} us")
    print(f"(c) bare Kafka hop            p50 {pct(hop, .5):7.1f} ms  p99 {pct(hop, .99):7.1f} ms  ({len(hop)} records)")
    print(f"(d) serving job               p50 {pct(latency, .5):7.1f} ms  p99 {pct(latency, .99):7.1f} ms  "
          f"({len(latency)} of {len(sent)} answered); burst {job_rate:.0f} req/s, {job_cpu_us:.1f} CPU-us/req "
          f"(job + broker); answers differing from River: {differ}")
    print("    CPU-us/request by process: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(parts.items())))
    print(f"serving: ratio={job_rate / river_rate:.3f} cpu_ratio={job_cpu_us / river_cpu_us:.1f} "
          f"p99_ms={pct(latency, .99):.0f} kafka_hop_p99_ms={pct(hop, .99):.0f} "
          f"live_p99_us={pct(live_calls, .99):.1f} river_p99_us={pct(paired_calls, .99):.1f}")


if __name__ == "__main__":
    main()
