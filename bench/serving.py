"""Serving throughput: the serving job against plain River predicting with the same model.

A model trained on Phishing is published to ``models`` and the serving job
started; once it answers with that model, N requests are sent in one go.  Prints (a) plain
River ``predict_proba_one`` over the N requests, (b) the serving job's answers
per second (its own timestamps, first to last), the ratio (b)/(a), and how many
answers differ from plain River's (must be 0).

    python -m bench.serving [--requests 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from riverflink import models
from riverflink.models.spec import build as build_model
from riverflink.pipelines import kafka_io
from riverflink.pipelines.broker import EmbeddedBroker, exit_on_sigterm, stop_pid
from riverflink.pipelines.sources import encode_events, river_events

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--bundle-ms", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=100)
    args = ap.parse_args()
    exit_on_sigterm()
    model = build_model("StandardScaler|LogisticRegression")
    for x, y in river_events("Phishing", 2000, seed=3):
        model.learn_one(x, y)
    requests = list(river_events("Phishing", args.requests, seed=4))
    start = time.perf_counter()
    local = [max(p, key=p.get) for p in (model.predict_proba_one(x) for x, _ in requests)]
    a = len(requests) / (time.perf_counter() - start)

    with EmbeddedBroker() as broker:
        servers = broker.bootstrap
        kafka_io.create_topics(servers, {"requests": 2, "models": 1, "predictions": 2})
        kafka_io.produce(servers, "models", [models.dumps(models.to_wire(model, name="bench", version=1))])
        (REPO / ".riverflink").mkdir(exist_ok=True)
        log = open(REPO / ".riverflink" / "bench-serving.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "riverflink.pipelines.cli", "serve", "--bootstrap-servers", servers,
                                 "--model-name", "bench", "--bundle-ms", str(args.bundle_ms),
                                 "--batch-size", str(args.batch_size)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            reader = kafka_io.TopicReader(servers, "predictions")
            # wait until the job answers with the model, then send the requests in one go
            probe = {"id": "probe", "x": requests[0][0]}
            deadline = time.time() + 300
            while time.time() < deadline and proc.poll() is None:
                kafka_io.produce(servers, "requests", [json.dumps(probe).encode()])
                if any(r and r.get("id") == "probe" and r.get("status") == "ok" for r in reader.poll_json(2000)):
                    break
            kafka_io.produce(servers, "requests", encode_events(requests, with_label=False))
            answers: dict = {}
            while len(answers) < len(requests) and time.time() < deadline and proc.poll() is None:
                for r in reader.poll_json(200):
                    if r and r.get("status") == "ok" and r.get("id") != "probe":
                        answers[r["id"]] = r
        finally:
            stop_pid(proc.pid)
    stamps = [r["ts"] for r in answers.values()]
    b = len(answers) / (max(stamps) - min(stamps))
    differ = sum(1 for i, r in answers.items() if r["prediction"] != local[i])
    print(f"requests={len(requests)} answered={len(answers)} bundle={args.bundle_ms}ms batch={args.batch_size}")
    print(f"(a) plain River predict_proba_one {a:10.0f} requests/s")
    print(f"(b) riverflink serving job        {b:10.0f} requests/s")
    print(f"ratio (b)/(a)                     {b / a:10.3f}")
    print(f"answers differing from plain River: {differ}")


if __name__ == "__main__":
    main()
