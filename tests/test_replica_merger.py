"""The replica <-> merger loop (pure Python: operators.loop), driven with the job's own messages.

Updates travel as bytes through the real codec (``precision="float64"`` where a test checks exact sums; the
statistics are exact at any precision) and merged documents through ``model_feed.accept``, as in the job.
"""

import math
import random
import time

import pytest
from river import preprocessing

from riverflink import models
from riverflink.models import numeric
from riverflink.models.document import ModelMeta
from riverflink.models.labels import final_step
from riverflink.models.spec import build
from riverflink.models.sync import SyncPolicy
from riverflink.operators.loop import LoopSettings, MergerSide, ReplicaSide
from riverflink.operators.merge_state import MergerState, MergeTrigger
from riverflink.operators.messages import decode_update, encode_update
from riverflink.operators.model_feed import FeedRules, accept
from riverflink.operators.replica import Replica
from tests import streams

REGRESSOR = "StandardScaler|LinearRegression"


def loop(spec: str = REGRESSOR, every: int | None = 1, quorum: int = 1, forget_after_s: float = 30.0,
         precision: str = "float64") -> tuple[ReplicaSide, MergerSide]:
    settings = LoopSettings("m", sync=SyncPolicy(every_events=every, every_seconds=1.0), precision=precision,
                            trigger=MergeTrigger(quorum=quorum, forget_after_s=forget_after_s))
    return ReplicaSide(settings, build(spec)), MergerSide(settings, build(spec))


def read_back(doc: dict):
    """``(entry, model)`` of a merged document as the replicas' model feed accepts it."""
    entry, model, problem = accept(models.dumps(doc), FeedRules("m"), None)
    assert problem is None, problem
    return entry, model


def test_every_event_reaches_the_merged_model_exactly_once_with_async_rebases():
    """Replicas sync every 37 events, rebases arrive late and out of step; the final scaler is exact."""
    events = [(x, float(y)) for x, y in streams.phishing(3000)]
    replica_side, merger_side = loop(every=37, quorum=3)
    merger = merger_side.fresh()
    replicas = [replica_side.fresh() for _ in range(3)]
    rng = random.Random(1)
    published = []
    for i, (x, y) in enumerate(events):
        k = i % 3
        if published and rng.random() < 0.05:  # a late broadcast delivery
            entry, model = read_back(published[-1])
            replica_side.on_model(replicas[k], k, entry.meta, lambda: models.get_params(model))
        for data in replica_side.on_events(replicas[k], k, [x], [y]).updates:
            doc = merger_side.on_update(merger, data, now=i).document
            if doc is not None:
                published.append(doc)
    for k, r in enumerate(replicas):  # the replicas' timers send what is left
        for data in replica_side.on_timer(r, k, now=time.time() + 10):
            published.append(merger_side.on_update(merger, data, now=3000).document)
    published.append(merger_side.on_timer(merger, now=3000).document)
    published = [d for d in published if d is not None]
    final = models.from_wire(published[-1])["StandardScaler"]
    whole = preprocessing.StandardScaler()
    for x, _ in events:
        whole.learn_one(x)
    assert published[-1]["meta"]["events"] == 3000
    versions = [d["meta"]["version"] for d in published]
    assert versions == sorted(set(versions))
    assert [d["meta"]["sequence"] for d in published] == list(range(1, len(published) + 1))
    for f in whole.counts:
        assert final.counts[f] == whole.counts[f]
        assert math.isclose(final.means[f], whole.means[f], rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(final.vars[f], whole.vars[f], rel_tol=1e-9, abs_tol=1e-12)


def _update(side: ReplicaSide, replica: Replica, k: int, x: float) -> bytes:
    """One event learned by ``replica`` and the update it sends (the loop syncs every event)."""
    (data,) = side.on_events(replica, k, [{"a": x}], [x]).updates
    return data


def test_merger_merges_at_quorum_and_adopts_newer_versions():
    replica_side, merger_side = loop(quorum=2)
    merger = merger_side.fresh()
    r0, r1 = replica_side.fresh(), replica_side.fresh()
    first = merger_side.on_update(merger, _update(replica_side, r0, 0, 1.0), now=0).document
    assert first is not None  # cold start: the first update is merged at once
    assert first["meta"]["counts"] == {"0": 1} and first["meta"]["acked"] == {"0": 1}
    out = merger_side.on_update(merger, _update(replica_side, r1, 1, 3.0), now=1)
    assert out.document is None and out.wait  # quorum 2: waits for a second replica, by the timer at the latest
    doc = merger_side.on_update(merger, _update(replica_side, r0, 0, 5.0), now=2).document
    assert doc["meta"]["counts"] == {"0": 1, "1": 1} and doc["meta"]["events"] == 3
    entry, model = read_back(doc)
    fresh = merger_side.fresh()
    assert merger_side.on_model(fresh, entry.meta, model)
    assert fresh.version == doc["meta"]["version"] and fresh.events == 3
    assert fresh.acked == {"0": 2, "1": 1}
    assert not merger_side.on_model(fresh, entry.meta, model)  # duplicates are ignored
    # a merger restored from a checkpoint only moves its counter past versions it published before
    restored = MergerState("m", build(REGRESSOR), merges=3, events=1)
    newer = ModelMeta.read({**doc["meta"], "version": doc["meta"]["version"] + 10, "events": 99})
    assert merger_side.on_model(restored, newer, model) and restored.events == 1
    after = merger_side.on_update(restored, _update(replica_side, r0, 0, 7.0), now=3).document  # 1 replica heard
    assert after["meta"]["version"] > newer.version


def test_merger_forgets_replicas_that_went_away():
    """Rescaled from 8 replicas to 4: after forget_after_s the quorum counts only the 4 still heard from."""
    replica_side, merger_side = loop(quorum=8, forget_after_s=10)
    merger = merger_side.fresh()
    for k, r in enumerate(replica_side.fresh() for _ in range(8)):
        merger_side.on_update(merger, _update(replica_side, r, k, float(k)), now=0)
    merger_side.on_timer(merger, now=0)
    new = [replica_side.fresh() for _ in range(4)]
    for k, r in enumerate(new):  # the rescaled job's four replicas are heard from
        merger_side.on_update(merger, _update(replica_side, r, k, 1.0), now=95)
    merger_side.on_timer(merger, now=95)
    ready = [merger_side.on_update(merger, _update(replica_side, r, k, 1.0), now=100).document is not None
             for k, r in enumerate(new)]
    assert ready == [False, False, False, True]  # waits for the 4 live replicas, not for the 8 of old
    assert merger_side.on_update(merger, _update(replica_side, new[0], 0, 2.0), now=101).document is None


def test_a_poisoned_update_is_refused_and_the_others_are_merged_not_lost():
    import dataclasses

    replica_side, merger_side = loop("LinearRegression", quorum=3)
    merger = merger_side.fresh()
    replicas = [replica_side.fresh() for _ in range(3)]
    ups = [decode_update(_update(replica_side, r, k, 2.0)) for k, r in enumerate(replicas)]
    template = replica_side.template
    first = merger_side.on_update(merger, encode_update(template, ups[0], "float64"), now=0).document  # cold start
    fresh = [dataclasses.replace(u, base_version=first["meta"]["version"]) for u in ups[1:]]
    poisoned = dataclasses.replace(fresh[0], delta={**fresh[0].delta, "weights": {"a": float("nan")}})
    merger_side.on_update(merger, encode_update(template, poisoned, "float64"), now=1)
    merger_side.on_update(merger, encode_update(template, fresh[1], "float64"), now=1)
    out = merger_side.on_timer(merger, now=1)
    doc = out.document
    assert out.refused == 1 and doc is not None and merger.refused == 1
    assert doc["meta"]["acked"] == {"0": 1, "1": 1, "2": 1}  # refused updates are acknowledged too
    assert doc["meta"]["counts"] == {"2": 1} and doc["meta"]["events"] == 2
    assert merger.pending == []
    merged = models.from_wire(doc)
    assert math.isfinite(merged.weights["a"]) and merged.weights["a"] != first_weight(first)


def first_weight(doc: dict) -> float:
    return models.from_wire(doc).weights["a"]


def test_a_merge_that_raises_keeps_its_updates_pending(monkeypatch):
    """The old merger emptied ``pending`` before merging: an exception lost the updates silently."""
    replica_side, merger_side = loop()
    merger = merger_side.fresh()
    data = _update(replica_side, replica_side.fresh(), 0, 1.0)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(models, "to_wire", boom)
    try:
        merger_side.on_update(merger, data, now=0)
    except RuntimeError:
        pass
    assert len(merger.pending) == 1 and merger.version == 0 and merger.events == 0
    monkeypatch.undo()
    assert merger_side.on_timer(merger, now=1).document["meta"]["events"] == 1


def test_an_undecodable_update_is_refused_and_counted():
    replica_side, merger_side = loop()
    merger = merger_side.fresh()
    out = merger_side.on_update(merger, b"\x01garbage", now=0)
    assert out.refused == 1 and out.document is None and merger.refused == 1 and merger.pending == []


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
    for spec, y in (("StandardScaler|LinearRegression", 3.0), ("StandardScaler|KMeans", None),
                    ("GaussianNB", "a"), ("StandardScaler|SoftmaxRegression", "b")):
        replica_side, merger_side = loop(spec, every=20, quorum=2, precision="float16")
        merger = merger_side.fresh()
        replicas = [replica_side.fresh() for _ in range(2)]
        xs = [{"f": float(v), "g": float(v % 3)} for v in range(40)]
        for k, r in enumerate(replicas):
            for data in replica_side.on_events(r, k, xs[k::2], [y] * 20).updates:
                merger_side.on_update(merger, data)
        doc = merger_side.on_timer(merger).document
        assert doc["meta"]["events"] == 40, spec
        models.from_wire(doc).predict_one({"f": 1.0, "g": 1.0})


def test_the_merger_remembers_the_bases_of_updates_hundreds_of_versions_old():
    # an update whose base the merger forgot gets only a scalar discount instead of delay compensation;
    # at tens of versions per second, 24 versions (the first bound) were under a second
    from riverflink.operators.delay_compensation import params_memory

    replica_side, merger_side = loop()
    merger, r0 = merger_side.fresh(), replica_side.fresh()
    first = None
    for i in range(300):
        doc = merger_side.on_update(merger, _update(replica_side, r0, 0, float(i)), now=i).document
        first = first or doc["meta"]["version"]
    remembered = merger.compensator.params_at
    assert len(remembered) == 256 and merger.version in remembered
    assert first not in remembered  # bounded: the oldest are forgotten
    assert params_memory({"w": {str(i): 0.0 for i in range(100_000)}}) == 24  # big models keep fewer


def _fail_on(step, n: int):
    """Make ``step.learn_one`` raise on its ``n``-th call from now on (learning as before otherwise); the
    original method, to put back."""
    original, calls = step.learn_one, []

    def fails(x, y, **kw):
        calls.append(x)
        if len(calls) == n:
            raise RuntimeError("boom")
        return original(x, y, **kw)

    step.learn_one = fails
    return original


def test_a_batch_the_model_raises_on_is_dead_lettered_whole_and_never_learned():
    """Transactional per batch: the scaler had already counted the first events when the regression raised."""
    import orjson

    from riverflink.operators.frames import Record

    replica_side, merger_side = loop(every=1000)
    replica = replica_side.fresh()
    good = [Record(0, i, None, None, orjson.dumps({"x": {"a": float(i)}, "y": float(i)})) for i in range(5)]
    replica_side.on_records(replica, 0, good)
    before, counters = models.get_params(replica.model), (replica.since_sync, replica.events_learned)
    step = replica.model["LinearRegression"]
    original = _fail_on(step, 3)
    batch = [Record(0, 5 + i, None, None, orjson.dumps({"x": {"a": 10.0 + i}, "y": 1.0})) for i in range(4)]
    out = replica_side.on_records(replica, 0, batch)
    assert out.learning_failed and out.score is None and len(out.rejected) == 4
    assert all("nothing of it was learned" in r.reason for r in out.rejected)
    assert models.get_params(replica.model) == before  # the scaler's counts too
    assert (replica.since_sync, replica.events_learned) == counters
    step.learn_one = original
    assert replica_side.on_records(replica, 0, batch).score.events == 4  # the same events learn once it can


def test_a_batch_rolled_back_after_a_sync_in_it_restores_the_snapshot_changed_in_place():
    """A journaled sparse model syncs in place (the snapshot takes the learned features' entries); a batch that
    raises after such a sync leaves model, snapshot and in-flight updates as they were."""
    import orjson

    from riverflink.operators.frames import Record

    replica_side, _ = loop("LogisticRegression(ftrl=true)", every=2)
    replica = replica_side.fresh()

    def records(start: int, n: int) -> list:
        return [Record(0, start + i, None, None, orjson.dumps({"x": {f"f{(start + i) % 7}": 1.0,
                                                                      f"g{(start + i) % 5}": 1.0},
                                                                "y": (start + i) % 3 == 0})) for i in range(n)]

    replica_side.on_records(replica, 0, records(0, 6))
    snapshot = replica.snapshot
    before = (models.get_params(replica.model), numeric.copy_tree(snapshot), list(replica.in_flight), replica.seq)

    def fails(update, replica_):  # (raises after the sync wrote the snapshot in place)
        assert replica_.snapshot is snapshot and replica_.snapshot != before[1]
        raise RuntimeError("boom")

    replica_side.encode = fails
    out = replica_side.on_records(replica, 0, records(6, 4))
    assert out.learning_failed
    assert (models.get_params(replica.model), replica.snapshot, replica.in_flight, replica.seq) == before
    del replica_side.encode
    assert len(replica_side.on_records(replica, 0, records(6, 4)).updates) == 1


@pytest.mark.parametrize("spec", ["LogisticRegression(ftrl=true)", "FeatureHasher(n_features=64)|LogisticRegression(ftrl=true)"])
def test_a_sparse_model_rolls_a_batch_back_from_an_undo_log_of_the_features_it_learned(spec, monkeypatch):
    """A sparse linear model's save point is an undo log of the entries the batch changes, not a copy of the
    model (``journal.hold``); a batch that raises half way leaves the model exactly as it was."""
    import orjson

    from riverflink.models import journal
    from riverflink.operators.frames import Record

    replica_side, _ = loop(spec, every=1000)
    replica = replica_side.fresh()

    def records(start: int, n: int) -> list:
        return [Record(0, start + i, None, None, orjson.dumps({"x": {f"f{(start + i) % 11}": 1.0, f"g{i}": 2.0},
                                                                "y": (start + i) % 3 == 0})) for i in range(n)]

    replica_side.on_records(replica, 0, records(0, 20))
    before = models.get_params(replica.model)
    copies = []
    monkeypatch.setattr(models, "get_params", lambda m, real=models.get_params: copies.append(m) or real(m))
    step = final_step(replica.model)
    original = _fail_on(step, 5)
    assert replica_side.on_records(replica, 0, records(20, 8)).learning_failed
    assert not copies  # (no whole copy was taken for the save point)
    monkeypatch.undo()
    assert models.get_params(replica.model) == before and journal.UNDO not in step.__dict__
    step.learn_one = original
    assert replica_side.on_records(replica, 0, records(20, 8)).score.events == 8
    assert journal.UNDO not in step.__dict__ and models.get_params(replica.model) != before


def test_a_refused_update_is_sent_again_so_every_event_still_reaches_the_model_once():
    """The merger refuses an update (here: its delta arrives broken); the version after it lists the refusal,
    the replica re-sends that learning with its next update, and the final scaler equals River's on every event."""
    events = [(x, float(y)) for x, y in streams.phishing(600)]
    replica_side, merger_side = loop(every=50, quorum=1)
    merger = merger_side.fresh()
    replicas = [replica_side.fresh() for _ in range(2)]
    latest, broken = None, 0
    for start in range(0, len(events), 100):
        for k, r in enumerate(replicas):
            if latest is not None:
                entry, model = latest
                replica_side.on_model(r, k, entry.meta, lambda: models.get_params(model))
            chunk = events[start + 50 * k : start + 50 * (k + 1)]
            for data in replica_side.on_events(r, k, [x for x, _ in chunk], [y for _, y in chunk]).updates:
                if k == 1 and start == 200:  # one update's delta is cut short on its way
                    data, broken = data[:-40], broken + 1
                out = merger_side.on_update(merger, data)
                if out.document is not None:
                    latest = read_back(out.document)
    for k, r in enumerate(replicas):  # the last learning, and anything re-sent with it
        replica_side.on_model(r, k, latest[0].meta, lambda: models.get_params(latest[1]))
        for data in replica_side.on_timer(r, k, now=time.time() + 10):
            out = merger_side.on_update(merger, data)
            latest = read_back(out.document) if out.document is not None else latest
    last = merger_side.on_timer(merger).document
    latest = read_back(last) if last is not None else latest
    assert broken == 1 and merger.refused == 1 and latest[0].meta.events == len(events)
    final = models.from_wire(latest[0].text)["StandardScaler"]
    whole = preprocessing.StandardScaler()
    for x, _ in events:
        whole.learn_one(x)
    for f in whole.counts:
        assert final.counts[f] == whole.counts[f]
        assert math.isclose(final.means[f], whole.means[f], rel_tol=1e-9, abs_tol=1e-12)


def test_declared_classes_refuse_other_labels_and_new_ones_are_reported():
    import orjson

    from riverflink.operators.frames import Record

    settings = LoopSettings("m", classes=frozenset({"cat", "dog"}))
    side = ReplicaSide(settings, build("StandardScaler|SoftmaxRegression"))
    replica = side.fresh()
    records = [Record(0, i, None, None, orjson.dumps({"x": {"a": float(i)}, "y": y}))
               for i, y in enumerate(["cat", "dog", "dgo", "cat"])]
    out = side.on_records(replica, 0, records)
    assert out.score.events == 3 and [r.reason for r in out.rejected] == [
        "label 'dgo' is not one of the declared classes (cat, dog)"]
    free = ReplicaSide(LoopSettings("m"), build("StandardScaler|SoftmaxRegression"))
    replica = free.fresh()
    assert free.on_records(replica, 0, records[:2]).new_classes == []  # the first batch brings the classes
    assert free.on_records(replica, 0, records[2:]).new_classes == ["dgo"]  # a typo: a class for good, but said
    assert replica.classes_seen == {"cat", "dog", "dgo"}
