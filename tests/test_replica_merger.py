"""Replica and merger state machines (pure Python; the Flink functions are thin shells over them)."""

import math
import random

from river import preprocessing

from riverflink import models
from riverflink.models.policies import MergePolicy
from riverflink.models.sync import SyncPolicy
from riverflink.operators.merge_state import MergerState
from riverflink.operators.replica import Replica
from tests import streams


def test_every_event_reaches_the_merged_model_exactly_once_with_async_rebases():
    """Replicas sync every 37 events, rebases arrive late and out of step; the final scaler is exact."""
    events = [x for x, _ in streams.phishing(3000)]
    template = preprocessing.StandardScaler()
    merger = MergerState("m", template, expected_replicas=3)
    replicas = [Replica.fresh(template) for _ in range(3)]
    policy = SyncPolicy(every_events=37, every_seconds=None)
    rng = random.Random(1)
    published = []
    for i, x in enumerate(events):
        k = i % 3
        r = replicas[k]
        if published and rng.random() < 0.05:  # a late broadcast delivery
            doc = published[-1]
            if doc["meta"]["version"] > r.base_version:
                r.rebase(models.get_params(models.from_wire(doc)), doc["meta"]["version"])
        r.model.learn_one(x)
        r.since_sync += 1
        if r.sync_due(policy):
            if merger.add(r.take_update("m", k)):
                published.append(merger.merge(MergePolicy()))
    for k, r in enumerate(replicas):
        if r.since_sync:
            merger.add(r.take_update("m", k))
    published.append(merger.merge(MergePolicy()))
    final = models.from_wire(published[-1])
    whole = preprocessing.StandardScaler()
    for x in events:
        whole.learn_one(x)
    assert published[-1]["meta"]["events"] == 3000
    versions = [d["meta"]["version"] for d in published]
    assert versions == sorted(set(versions))
    assert [d["meta"]["sequence"] for d in published] == list(range(1, len(published) + 1))
    for f in whole.counts:
        assert final.counts[f] == whole.counts[f]
        assert math.isclose(final.means[f], whole.means[f], rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(final.vars[f], whole.vars[f], rel_tol=1e-9, abs_tol=1e-12)


def test_merger_waits_for_every_expected_replica_and_adopts_newer_versions():
    template = preprocessing.StandardScaler()
    merger = MergerState("m", template, expected_replicas=2)
    r0, r1 = Replica.fresh(template), Replica.fresh(template)
    r0.model.learn_one({"a": 1.0}); r0.since_sync = 1
    assert merger.add(r0.take_update("m", 0)) is False
    r1.model.learn_one({"a": 3.0}); r1.since_sync = 1
    assert merger.add(r1.take_update("m", 1)) is True
    doc = merger.merge(MergePolicy())
    assert doc["meta"]["counts"] == {"0": 1, "1": 1}
    fresh = MergerState("m", template, expected_replicas=2)
    assert fresh.adopt(doc) and fresh.version == doc["meta"]["version"] and fresh.events == 2
    assert not fresh.adopt(doc)  # duplicates are ignored
    # a merger restored from a checkpoint only moves its counter past versions it published before
    restored = MergerState("m", template, expected_replicas=2, merges=3, events=1)
    newer = {**doc, "meta": {**doc["meta"], "version": doc["meta"]["version"] + 10, "events": 99}}
    assert restored.adopt(newer) and restored.events == 1
    r0.model.learn_one({"a": 5.0}); r0.since_sync = 1
    restored.add(r0.take_update("m", 0))
    assert restored.merge(MergePolicy())["meta"]["version"] > newer["meta"]["version"]


def test_divergence_sync_fires_on_bursts_of_learning_not_on_quiet_streams():
    from river import linear_model

    policy = SyncPolicy(every_events=None, every_seconds=None, divergence=0.05, check_divergence_every=1)
    replica = Replica.fresh(linear_model.LinearRegression())
    quiet = 0
    for _ in range(200):  # the model already fits y = 0: weights barely move
        replica.predict_then_learn({"x": 1.0}, 0.0)
        quiet += replica.sync_due(policy)
        if replica.sync_due(policy):
            replica.take_update("m", 0)
    burst_after = None
    for i in range(200):  # a new concept: weights move fast
        replica.predict_then_learn({"x": 1.0}, 50.0)
        if replica.sync_due(policy):
            burst_after = i + 1
            break
    assert quiet == 0
    assert burst_after is not None and burst_after < 10


def test_replicas_of_regressors_and_clusterers_learn_and_merge():
    from riverflink.models.spec import build

    for spec, y in (("StandardScaler|LinearRegression", 3.0), ("StandardScaler|KMeans", None),
                    ("GaussianNB", "a"), ("StandardScaler|SoftmaxRegression", "b")):
        template = build(spec)
        merger = MergerState("m", template, expected_replicas=2)
        replicas = [Replica.fresh(template) for _ in range(2)]
        for i, x in enumerate({"f": float(v), "g": float(v % 3)} for v in range(40)):
            y_pred, proba = replicas[i % 2].predict_then_learn(x, y)
        ready = False
        for k, r in enumerate(replicas):
            ready = merger.add(r.take_update("m", k))
        assert ready
        doc = merger.merge(MergePolicy())
        assert doc["meta"]["events"] == 40, spec
        models.from_wire(doc).predict_one({"f": 1.0, "g": 1.0})
