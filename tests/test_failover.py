"""Failure recovery on a real standalone Flink cluster: a TaskManager is killed mid-stream.

The job restarts from its last checkpoint on a fresh TaskManager.  The merged
model must still account for every event exactly once, and model versions on
the topic must keep strictly increasing although the merger rolled back.  With
``--shards 2`` the same holds for each shard's slices and for the manifests,
and the model a reader assembles (never a mix of manifests) holds every event once.
"""

from __future__ import annotations

import json
import time

import pytest

from riverflink.models.manifest import SCHEMA as MANIFEST
from riverflink.models import to_wire
from riverflink.operators.model_feed import FeedRules, ModelFeed, entry_model
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


def _events(doc) -> int:
    return (doc or {}).get("meta", {}).get("events") or 0  # (a manifest has none)


@pytest.mark.parametrize("shards", [1, 2])
def test_killed_taskmanager_loses_and_duplicates_nothing_in_the_model(kafka_bootstrap, cluster, shards):
    run = f"failover{shards}x{int(time.time())}"
    t = submit_training(kafka_bootstrap, cluster.address, run, "--shards", str(shards))

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
            while not any(_events(d) >= 1000 for d in docs):
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
        shard_events = [max((_events(d) for d in docs if d and d["meta"].get("shard", 0) == s), default=0)
                        for s in range(shards)]
        if min(shard_events) >= EVENTS and (shards == 1 or (docs[-1] or {}).get("schema") == MANIFEST):
            break
    time.sleep(3)
    docs += models.poll_json(500)
    models.close()
    assert killed_at is not None and len(docs) > killed_at, "no model after the failover"
    slices = [d for d in docs if d and d.get("schema") != MANIFEST]
    for shard in range(shards):  # each shard's slices (the whole model's documents when not sharded)
        metas = [d["meta"] for d in slices if d["meta"].get("shard", 0) == shard]
        assert metas[-1]["events"] == EVENTS, [m["events"] for m in metas[-8:]]
        versions = [m["version"] for m in metas]
        assert versions == sorted(set(versions)), "versions must strictly increase across the failover"
    if shards == 1:
        final = max(slices, key=lambda d: d["meta"]["version"])
    else:  # what a reader assembles from the slices and manifests, in topic order
        manifests = [d["meta"]["version"] for d in docs if d and d.get("schema") == MANIFEST]
        assert manifests == sorted(set(manifests)), "manifest versions must strictly increase across the failover"
        feed, entry = ModelFeed(FeedRules(run)), None
        for d in docs:
            entry = feed.offer(json.dumps(d), entry)[0] or entry
        assert entry is not None and entry.version == manifests[-1]
        assert entry.meta.events == EVENTS
        final = to_wire(entry_model(entry))
    assert_scaler_holds_each_event_once(final, river_events("Phishing", EVENTS))  # by content, not a counter
    jobs = flink_rest.jobs(cluster.address)
    running = [j for j in jobs if j["state"] == "RUNNING"]
    assert running, json.dumps(jobs)[:300]
    assert flink_rest.restarts(cluster.address, running[0]["jid"]) >= 1, "the job never saw the TaskManager die"
