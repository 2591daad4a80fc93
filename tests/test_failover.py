"""Failure recovery on a real standalone Flink cluster: a TaskManager is killed mid-stream.

The job restarts from its last checkpoint on a fresh TaskManager.  The merged
model must still account for every event exactly once, and model versions on
the topic must keep strictly increasing although the merger rolled back.
"""

from __future__ import annotations

import json
import time

import pytest

from riverflink.pipelines import flink_rest, kafka_io
from riverflink.pipelines.broker import stop_pid
from riverflink.pipelines.sources import MALFORMED, encode_events, river_events
from tests.cluster_jobs import submit_training
from tests.exact_content import assert_scaler_holds_each_event_once
from riverflink.pipelines.standalone import StandaloneCluster

pytestmark = pytest.mark.integration
EVENTS = 6000


@pytest.fixture
def cluster(tmp_path):
    c = StandaloneCluster(tmp_path / "flink", slots=4)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def test_killed_taskmanager_loses_and_duplicates_nothing_in_the_model(kafka_bootstrap, cluster):
    run = f"failover{int(time.time())}"
    t = submit_training(kafka_bootstrap, cluster.address, run)

    models = kafka_io.TopicReader(kafka_bootstrap, t.models)
    docs: list = []
    producer = kafka_io.producer(kafka_bootstrap)
    values = list(encode_events(river_events("Phishing", EVENTS)))
    killed_at, sends = None, []
    for i, v in enumerate(values):
        sends.append(producer.send(t.events, value=v))
        if i % 500 == 0:
            sends.append(producer.send(t.events, value=MALFORMED[0]))
            producer.flush()
            time.sleep(0.4)
            docs += models.poll_json(0)
        # kill the only TaskManager once models flow and a checkpoint has surely completed
        if killed_at is None and i >= EVENTS // 2:
            while not any(d["meta"]["events"] >= 1000 for d in docs if d):
                docs += models.poll_json(200)
            time.sleep(2.5)
            stop_pid(cluster.taskmanagers[0].pid, grace=0.1)
            killed_at = len(docs)
            cluster.add_taskmanager()
    producer.flush()
    for f in sends:  # every event reached the broker (a failed send fails here, not as a count)
        f.get(timeout=120)
    producer.close()

    deadline = time.time() + 240
    while time.time() < deadline:
        docs += models.poll_json(500)
        if docs and docs[-1]["meta"]["events"] >= EVENTS:
            break
    time.sleep(3)
    docs += models.poll_json(500)
    metas = [d["meta"] for d in docs if d]
    assert killed_at is not None and len(metas) > killed_at, "no model after the failover"
    assert metas[-1]["events"] == EVENTS, [m["events"] for m in metas[-8:]]
    final = max((d for d in docs if d), key=lambda d: d["meta"]["version"])
    assert_scaler_holds_each_event_once(final, river_events("Phishing", EVENTS))  # by content, not a counter
    versions = [m["version"] for m in metas]
    assert versions == sorted(set(versions)), "versions must strictly increase across the failover"
    jobs = flink_rest.jobs(cluster.address)
    running = [j for j in jobs if j["state"] == "RUNNING"]
    assert running, json.dumps(jobs)[:300]
    assert flink_rest.restarts(cluster.address, running[0]["jid"]) >= 1, "the job never saw the TaskManager die"
