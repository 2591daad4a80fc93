"""Replica and merger state machines (pure Python; the Flink functions are thin shells over them)."""

import dataclasses
import math
import random

from river import preprocessing

from riverflink import models
from riverflink.models.policies import MergePolicy
from riverflink.models.sync import SyncPolicy
from riverflink.operators.merge_state import MergerState, MergeTrigger
from riverflink.operators.replica import Replica, ReplicaUpdate  # noqa: F401
from tests import streams


def test_every_event_reaches_the_merged_model_exactly_once_with_async_rebases():
    """Replicas sync every 37 events, rebases arrive late and out of step; the final scaler is exact."""
    events = [x for x, _ in streams.phishing(3000)]
    template = preprocessing.StandardScaler()
    merger = MergerState("m", template, trigger=MergeTrigger(quorum=3))
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
                r.rebase(models.get_params(models.from_wire(doc)), doc["meta"]["version"],
                         doc["meta"]["acked"].get(str(k), 0))
        r.model.learn_one(x)
        r.since_sync += 1
        if r.sync_due(policy):
            if merger.add(r.take_update("m", k), now=i):
                published.append(merger.merge(MergePolicy(), now=i))
    for k, r in enumerate(replicas):
        if r.since_sync:
            merger.add(r.take_update("m", k), now=3000)
    published.append(merger.merge(MergePolicy(), now=3000))
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


def _update(replica: Replica, k: int, x: float) -> "ReplicaUpdate":
    replica.model.learn_one({"a": x})
    replica.since_sync = 1
    return replica.take_update("m", k)


def test_merger_merges_at_quorum_and_adopts_newer_versions():
    template = preprocessing.StandardScaler()
    merger = MergerState("m", template, trigger=MergeTrigger(quorum=2))
    r0, r1 = Replica.fresh(template), Replica.fresh(template)
    assert merger.add(_update(r0, 0, 1.0), now=0) is True  # cold start: the first update is merged at once
    first = merger.merge(MergePolicy(), now=0)
    assert first["meta"]["counts"] == {"0": 1} and first["meta"]["acked"] == {"0": 1}
    assert merger.add(_update(r1, 1, 3.0), now=1) is False  # quorum 2: waits for a second replica
    assert merger.add(_update(r0, 0, 5.0), now=2) is True
    doc = merger.merge(MergePolicy(), now=2)
    assert doc["meta"]["counts"] == {"0": 1, "1": 1} and doc["meta"]["events"] == 3
    fresh = MergerState("m", template)
    assert fresh.adopt(doc) and fresh.version == doc["meta"]["version"] and fresh.events == 3
    assert fresh.acked == {"0": 2, "1": 1}
    assert not fresh.adopt(doc)  # duplicates are ignored
    # a merger restored from a checkpoint only moves its counter past versions it published before
    restored = MergerState("m", template, merges=3, events=1)
    newer = {**doc, "meta": {**doc["meta"], "version": doc["meta"]["version"] + 10, "events": 99}}
    assert restored.adopt(newer) and restored.events == 1
    restored.add(_update(r0, 0, 7.0), now=3)
    assert restored.merge(MergePolicy(), now=3)["meta"]["version"] > newer["meta"]["version"]


def test_merger_forgets_replicas_that_went_away():
    """Rescaled from 8 replicas to 4: after forget_after_s the quorum counts only the 4 still heard from."""
    template = preprocessing.StandardScaler()
    merger = MergerState("m", template, trigger=MergeTrigger(quorum=8, forget_after_s=10))
    old = [Replica.fresh(template) for _ in range(8)]
    for k, r in enumerate(old):
        if merger.add(_update(r, k, float(k)), now=0):
            merger.merge(MergePolicy(), now=0)
    merger.merge(MergePolicy(), now=0)
    new = [Replica.fresh(template) for _ in range(4)]
    for k, r in enumerate(new):  # the rescaled job's four replicas are heard from
        merger.add(_update(r, k, 1.0), now=95)
    merger.merge(MergePolicy(), now=95)
    ready = [merger.add(_update(r, k, 1.0), now=100) for k, r in enumerate(new)]
    assert ready == [False, False, False, True]  # waits for the 4 live replicas, not for the 8 of old
    merger.merge(MergePolicy(), now=100)
    assert merger.add(_update(new[0], 0, 2.0), now=101) is False


def test_a_poisoned_update_is_refused_and_the_others_are_merged_not_lost():
    from river import linear_model

    template = linear_model.LinearRegression()
    merger = MergerState("m", template, trigger=MergeTrigger(quorum=3))
    replicas = [Replica.fresh(template) for _ in range(3)]
    for r in replicas:
        r.predict_then_learn({"a": 1.0}, 2.0)
    ups = [r.take_update("m", k) for k, r in enumerate(replicas)]
    merger.add(ups[0], now=0)
    first = merger.merge(MergePolicy(), now=0)  # cold start
    fresh = [dataclasses.replace(u, base_version=first["meta"]["version"]) for u in ups[1:]]
    poisoned = dataclasses.replace(fresh[0], delta={**fresh[0].delta, "weights": {"a": float("nan")}})
    merger.add(poisoned, now=1)
    merger.add(fresh[1], now=1)
    doc = merger.merge(MergePolicy(), now=1)
    assert doc is not None and merger.refused == 1
    assert doc["meta"]["acked"] == {"0": 1, "1": 1, "2": 1}  # refused updates are acknowledged too
    assert doc["meta"]["counts"] == {"2": 1} and doc["meta"]["events"] == 2
    assert merger.pending == []
    merged = models.from_wire(doc)
    assert math.isfinite(merged.weights["a"]) and merged.weights["a"] != first_weight(first)


def first_weight(doc: dict) -> float:
    return models.from_wire(doc).weights["a"]


def test_a_merge_that_raises_keeps_its_updates_pending(monkeypatch):
    """The old merger emptied ``pending`` before merging: an exception lost the updates silently."""
    template = preprocessing.StandardScaler()
    merger = MergerState("m", template)
    r = Replica.fresh(template)
    merger.add(_update(r, 0, 1.0), now=0)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(models, "to_wire", boom)
    try:
        merger.merge(MergePolicy(), now=0)
    except RuntimeError:
        pass
    assert len(merger.pending) == 1 and merger.version == 0 and merger.events == 0
    monkeypatch.undo()
    assert merger.merge(MergePolicy(), now=1)["meta"]["events"] == 1


def test_divergence_sync_fires_on_bursts_of_learning_not_on_quiet_streams():
    from river import linear_model

    policy = SyncPolicy(every_events=None, every_seconds=None, divergence=0.05)
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
        merger = MergerState("m", template, trigger=MergeTrigger(quorum=2))
        replicas = [Replica.fresh(template) for _ in range(2)]
        for i, x in enumerate({"f": float(v), "g": float(v % 3)} for v in range(40)):
            y_pred, proba = replicas[i % 2].predict_then_learn(x, y)
        for k, r in enumerate(replicas):
            merger.add(r.take_update("m", k))
        doc = merger.merge(MergePolicy())
        assert doc["meta"]["events"] == 40, spec
        models.from_wire(doc).predict_one({"f": 1.0, "g": 1.0})


def test_the_merger_remembers_the_bases_of_updates_hundreds_of_versions_old():
    # an update whose base the merger forgot gets only a scalar discount instead of delay compensation;
    # at tens of versions per second, 24 versions (the first bound) were under a second
    from riverflink.operators.merge_state import params_memory

    template = preprocessing.StandardScaler()
    merger, r0 = MergerState("m", template), Replica.fresh(template)
    first = None
    for i in range(300):
        merger.add(_update(r0, 0, float(i)), now=i)
        doc = merger.merge(MergePolicy(), now=i)
        first = first or doc["meta"]["version"]
    assert len(merger.params_at) == 256 and merger.version in merger.params_at
    assert first not in merger.params_at  # bounded: the oldest are forgotten
    assert params_memory({"w": {str(i): 0.0 for i in range(100_000)}}) == 24  # big models keep fewer
