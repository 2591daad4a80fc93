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
from riverflink.models import get_params as models_params
from riverflink.pipelines.sources import MALFORMED, dataset_events, encode_events, river_events
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


def _train_through_a_failover(kafka_bootstrap, cluster, run: str, shards: int, values: list, *flags: str,
                              pause: float = 0.4, rebased_first: bool = False):
    """Submit run ``run``'s training job, produce ``values`` (a malformed record every 500), kill the only
    TaskManager halfway once models flow and a checkpoint has surely completed, add a fresh one, and read the
    models topic until every shard holds every event.  Returns (the records of ``models``, how many were read
    before the kill, the run's topics).  ``pause``: seconds after every 500 events; ``rebased_first``: kill only
    once some replica has learned on a merged version (its metrics say so)."""
    t = submit_training(kafka_bootstrap, cluster.address, run, "--shards", str(shards), *flags)
    models = kafka_io.TopicReader(kafka_bootstrap, t.models)
    docs: list = []
    producer = kafka_io.producer(kafka_bootstrap)
    killed_at, sends = None, []
    for i, v in enumerate(values):
        sends.append(producer.send(t.events, value=v))
        if i % 500 == 0:
            sends.append(producer.send(t.events, value=MALFORMED[0]))
            producer.flush()
            time.sleep(pause)
            docs += models.poll_json(0)
        if killed_at is None and i >= len(values) // 2:
            while not any(_events(d) >= 1000 for d in docs):
                docs += models.poll_json(200)
            if rebased_first:
                _wait_for_a_rebase(kafka_bootstrap, t.metrics)
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
        if min(shard_events) >= len(values) and (shards == 1 or (docs[-1] or {}).get("schema") == MANIFEST):
            break
    time.sleep(3)
    docs += models.poll_json(500)
    models.close()
    return docs, killed_at, t


def _wait_for_a_rebase(bootstrap: str, metrics_topic: str, timeout: float = 120.0) -> None:
    """Until a replica's metrics record names a merged version it learned on."""
    reader = kafka_io.TopicReader(bootstrap, metrics_topic)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if any(m.get("source") == "training" and (m.get("model_version") or 0) > 0
                   for m in reader.poll_json(500) if m):
                return
        raise AssertionError(f"no replica learned on a merged version within {timeout:.0f} s")
    finally:
        reader.close()


def _assembled(run: str, docs: list):
    """What a reader assembles from the slices and manifests, in topic order (manifest versions checked)."""
    manifests = [d["meta"]["version"] for d in docs if d and d.get("schema") == MANIFEST]
    assert manifests == sorted(set(manifests)), "manifest versions must strictly increase across the failover"
    feed, entry = ModelFeed(FeedRules(run)), None
    for d in docs:
        entry = feed.offer(json.dumps(d), entry)[0] or entry
    assert entry is not None and entry.version == manifests[-1]
    return entry


@pytest.mark.parametrize("shards", [1, 2])
def test_killed_taskmanager_loses_and_duplicates_nothing_in_the_model(kafka_bootstrap, cluster, shards):
    run = f"failover{shards}x{int(time.time())}"
    docs, killed_at, _ = _train_through_a_failover(kafka_bootstrap, cluster, run, shards,
                                                list(encode_events(river_events("Phishing", EVENTS))))
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
        entry = _assembled(run, docs)
        assert entry.meta.events == EVENTS
        final = to_wire(entry_model(entry))
    assert_scaler_holds_each_event_once(final, river_events("Phishing", EVENTS))  # by content, not a counter
    jobs = flink_rest.jobs(cluster.address)
    running = [j for j in jobs if j["state"] == "RUNNING"]
    assert running, json.dumps(jobs)[:300]
    assert flink_rest.restarts(cluster.address, running[0]["jid"]) >= 1, "the job never saw the TaskManager die"


def test_replicas_with_working_sets_recover_from_a_killed_taskmanager_and_learn_every_event_once(
        kafka_bootstrap, cluster):
    """``--working-set`` on two shards, killed once the replicas learn on merged versions: the trainer's bounded
    reader restarts empty after the failover (it keeps no slices in state), its replicas pull again what it cannot
    vouch for, and the merged model still holds every event once (FTRL's step count is one per event learned)."""
    run = f"failoverws{int(time.time())}"
    docs, killed_at, _ = _train_through_a_failover(
        kafka_bootstrap, cluster, run, 2, list(encode_events(dataset_events("Clicks", EVENTS))),
        "--working-set", "300", "--model", "LogisticRegression(ftrl=true)", pause=1.5, rebased_first=True)
    assert killed_at is not None and len(docs) > killed_at, "no model after the failover"
    entry = _assembled(run, docs)
    assert entry.meta.events == EVENTS
    assert models_params(entry_model(entry))["opt_steps"] == EVENTS
    running = [j for j in flink_rest.jobs(cluster.address) if j["state"] == "RUNNING"]
    assert running and flink_rest.restarts(cluster.address, running[0]["jid"]) >= 1
