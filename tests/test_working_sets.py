"""Working sets and pulls (pure): replicas that hold at most W features learn every event once, pull what they
lack from its owner shard over the loop, never hold more than W plus the features of their unsent and in-flight
learning, and learn about as well as replicas that hold everything."""

from __future__ import annotations

import math
import time

import orjson
import pytest

from riverflink import models
from riverflink.models.signing import Signer, sign
from riverflink.models.spec import build
from riverflink.models.sync import SyncPolicy
from riverflink.operators.frames import Record
from riverflink.operators.loop import LoopSettings, MergerSide, ReplicaSide
from riverflink.operators.messages import PullRequest, decode_pull, encode_pull, is_pull, update_shard
from riverflink.operators.pull_gate import PullStats, check_model
from riverflink.operators.pulls import PULL_PARTITION, answer
from riverflink.operators.working_set import WorkingSetSettings
from riverflink.pipelines.click_stream import click_events
from tests.loop_topic import ModelsTopic

SPEC = "LogisticRegression(ftrl=true)"
REPLICAS, BATCH = 2, 50


def _records(events, start):
    return [Record(0, start + i, 0, None, orjson.dumps({"x": x, "y": y})) for i, (x, y) in enumerate(events)]


def _run(events, shards: int, working: WorkingSetSettings | None, answer_pulls: bool = True, bounded: bool = False,
         restart_at: int | None = None, peak: list | None = None):
    """K=2 replicas and M merger shards on ``events``: every update, pull answer and model version reaches its
    reader one round later.  Returns (the final assembled model, the replicas, the progressive accuracy, the
    widest a working set was beyond its learning features, pull stats summed, events learned).  ``bounded``: the
    replicas rebase from a bounded reader, as in the job (its most features held appended to ``peak``), which
    starts empty again at round ``restart_at`` (a restore)."""
    settings = LoopSettings("m", shards=shards, epoch=1 if shards > 1 else 0,
                            sync=SyncPolicy(every_events=BATCH, every_seconds=None), working_set=working)
    side, merger_side = ReplicaSide(settings, build(SPEC)), MergerSide(settings, build(SPEC))
    reps = [side.fresh() for _ in range(REPLICAS)]
    mergers = [merger_side.fresh(s) for s in range(shards)]
    topic = ModelsTopic("m", shards, bounded=bounded)
    topic.replicas = reps
    if bounded:
        side.gate.bounded_reader = True
    most = 0
    to_merger, answers = [], {k: [] for k in range(REPLICAS)}
    correct = learned = 0
    worst, total, clock = 0, PullStats(), 1000.0

    def rebase():
        nonlocal most
        topic.deliver(side, reps)
        if bounded:
            most = max(most, topic.feed.tracking.held())

    def step(k, r, records):
        nonlocal correct, learned, worst
        out = side.on_records(r, k, records + answers[k])
        answers[k] = []
        assert not out.rejected
        if out.score is not None:
            correct, learned = correct + out.score.correct, learned + out.score.events
        if out.pulls is not None:
            for name in ("sent", "answered", "refused", "late", "timed_out", "waited", "unpulled", "evicted",
                         "refreshed"):
                setattr(total, name, getattr(total, name) + getattr(out.pulls, name))
            total.round_trips_ms += out.pulls.round_trips_ms
            beyond = len(r.working) - len(r.learning_features())
            worst = max(worst, beyond)
            assert r.working is not None and len(r.pulls) <= working.max_pulls
            # the model and its snapshot hold the working set's features and no other
            assert set(r.model._weights) <= r.working.features
            assert set(r.snapshot["opt_z"]) | set(r.snapshot["opt_n"]) <= r.working.features
        to_merger.extend(out.updates + out.pull_requests)

    def deliver():
        nonlocal clock
        for piece in to_merger:
            clock += 0.01
            merger = mergers[update_shard(piece)]
            if is_pull(piece):
                got = merger_side.on_pull(merger, piece)
                if got is not None and answer_pulls:
                    answers[int(got[0])].append(Record(PULL_PARTITION, 0, 0, None, models.dumps(got[1])))
            else:
                topic.publish(merger_side.on_update(merger, piece, now=clock).document, clock)
        to_merger.clear()
        for m in mergers:
            topic.publish(merger_side.on_timer(m, now=clock + 10).document, clock)
        topic.flush(clock)

    rounds = math.ceil(len(events) / (REPLICAS * BATCH))
    for rnd in range(rounds):
        if rnd == restart_at:
            topic.restart_reader()
            for r in reps:
                side.gate.restored(r)
        rebase()
        chunk = events[rnd * REPLICAS * BATCH: (rnd + 1) * REPLICAS * BATCH]
        for k, r in enumerate(reps):
            step(k, r, _records(chunk[k::REPLICAS], rnd * BATCH))
        deliver()
    for _ in range(20):  # drain: the waiting events learn, the replicas send what they hold
        rebase()
        for k, r in enumerate(reps):
            step(k, r, [])
            to_merger.extend(side.on_timer(r, k, now=clock + 1e4))
        deliver()
        if not to_merger and all(r.since_sync == 0 and not r.in_flight and not (r.waiting or []) for r in reps):
            break
    rebase()
    if peak is not None:
        peak.append(most)
    return topic.model, reps, correct / max(1, learned), worst, total, learned


def _features(events):
    return {f for x, _ in events for f in x}


@pytest.mark.parametrize("shards", [1, 2])
def test_replicas_with_a_tenth_of_the_features_learn_every_event_once_and_as_well(shards):
    events = list(click_events(4000, seed=11))
    capacity = max(1, len(_features(events)) // 10)
    bounded = WorkingSetSettings(capacity=capacity)
    model, reps, accuracy, worst, stats, learned = _run(events, shards, bounded)
    whole, _, accuracy_all, _, _, _ = _run(events, shards, None)
    assert learned == len(events)
    # FTRL's step count is additive over the replicas' updates: one step per event learned, none twice
    steps = models.get_params(model)["opt_steps"] if shards == 1 else models.get_params(model)["opt_steps"]
    assert steps == len(events)
    assert worst <= capacity, (worst, capacity)
    assert stats.sent > 0 and stats.answered == stats.sent and stats.evicted > 0 and stats.waited > 0
    assert stats.unpulled == 0 and stats.refused == 0
    assert max(len(r.working) for r in reps) < len(_features(events)) / 4
    assert accuracy >= accuracy_all - 0.02, (accuracy, accuracy_all)


@pytest.mark.parametrize("restart_at", [None, 12])
def test_a_bounded_reader_holds_what_its_replicas_track_and_they_end_on_the_merged_entries(restart_at):
    events = list(click_events(4000, seed=11))
    features = _features(events)
    capacity = max(1, len(features) // 10)
    peak: list = []
    model, reps, accuracy, worst, stats, learned = _run(events, 2, WorkingSetSettings(capacity=capacity),
                                                        bounded=True, restart_at=restart_at, peak=peak)
    _, _, accuracy_all, _, _, _ = _run(events, 2, None)
    assert learned == len(events) and models.get_params(model)["opt_steps"] == len(events)
    assert accuracy >= accuracy_all - 0.02, (accuracy, accuracy_all)
    # the reader held a fraction of the model: about what the replicas track, never the whole
    assert 0 < peak[0] < len(features) / 2, (peak, len(features))
    # restored, the reader starts empty: what the replicas hold and it cannot vouch for is pulled again
    assert (stats.refreshed > 0) == (restart_at is not None), stats.refreshed
    # nothing unsent or in flight at the end: every feature a replica holds has the merged model's entries
    merged = models.get_params(model)
    for r in reps:
        assert not r.in_flight and r.since_sync == 0 and not r.refresh
        mine = models.get_params(r.model)
        for name in ("opt_z", "opt_n", "weights"):
            for f in r.working.used:
                assert mine[name].get(f, 0.0) == pytest.approx(merged[name].get(f, 0.0), rel=1e-12, abs=1e-12), (name, f)


def test_expired_features_leave_and_unanswered_pulls_are_given_up_without_losing_an_event():
    events = list(click_events(1500, seed=3))
    settings = WorkingSetSettings(capacity=10_000, expire_after=200, pull_timeout_s=1e-6)
    model, reps, _, _, stats, learned = _run(events, 1, settings, answer_pulls=False)
    assert learned == len(events) and models.get_params(model)["opt_steps"] == len(events)
    assert stats.answered == 0 and stats.timed_out > 0 and stats.unpulled > 0
    assert sum(r.working.expired for r in reps) > 0


def test_a_pull_answer_for_another_replica_or_unsigned_is_refused():
    settings = LoopSettings("m", working_set=WorkingSetSettings(capacity=5))
    template = build(SPEC)
    merger = MergerSide(settings, template).fresh()
    merger.params = {**merger.params, "weights": {"a": 2.0}}
    request = PullRequest("m", "0", shard=0, pull=1, features=("a",), sent_at=0.0)
    text = models.dumps(answer(merger, template, request))
    side = ReplicaSide(settings, template)
    r = side.fresh()
    r.pulls[1] = (0, ("a",), time.time())
    out = side.on_records(r, 1, [Record(PULL_PARTITION, 0, 0, None, text)])  # (replica 1 reads replica 0's)
    assert out.pulls.refused == 1 and "a" not in r.working
    signer = Signer.generate()
    checked = ReplicaSide(settings, template, verifier=signer.verifier())
    r = checked.fresh()
    r.pulls[1] = (0, ("a",), time.time())
    assert checked.on_records(r, 0, [Record(PULL_PARTITION, 0, 0, None, text)]).pulls.refused == 1
    signed = models.dumps(sign(orjson.loads(text), signer))
    assert checked.on_records(r, 0, [Record(PULL_PARTITION, 0, 0, None, signed)]).pulls.answered == 1
    assert r.model._weights["a"] == 2.0 and "a" in r.working
    # an event's bytes on the events topic can never pose as an answer: they come at a Kafka partition
    forged = checked.on_records(r, 0, [Record(0, 5, 0, None, signed)])
    assert len(forged.rejected) == 1 and forged.pulls.answered == 0


def test_the_limiter_caps_unanswered_pulls_and_the_buffer_bounds_waiting_events():
    settings = LoopSettings("m", working_set=WorkingSetSettings(capacity=100, max_pulls=1, buffer=3))
    side = ReplicaSide(settings, build(SPEC))
    r = side.fresh()
    r.base_version = 1  # (based on a merged version: before the first, nothing merged is there to pull)
    records = _records([({f"f{i}": 1.0}, i % 2 == 0) for i in range(5)], 0)
    out = side.on_records(r, 0, records)
    assert len(out.pull_requests) == 1 and len(r.pulls) == 1
    # five events lack their features: three wait, the two oldest learn on what the replica holds
    assert out.pulls.waited == 5 and out.pulls.unpulled == 2 and len(r.waiting) == 3 and out.score.events == 2
    # the one unanswered pull holds back the next request; the buffer stays at three
    out = side.on_records(r, 0, _records([({"g": 1.0}, True)], 5))
    assert out.pull_requests == [] and out.pulls.limited == 1 and len(r.pulls) == 1 and len(r.waiting) == 3


def test_working_sets_need_a_model_keyed_by_the_events_features():
    check_model(build("LinearRegression(ftrl=true)"))
    for plain in ("LinearRegression", "StandardScaler|LinearRegression(ftrl=true)"):
        with pytest.raises(ValueError, match="in place"):
            check_model(build(plain))
    with pytest.raises(ValueError, match="FeatureHasher renames"):
        check_model(build("FeatureHasher(n_features=64)|LogisticRegression"))
    with pytest.raises(ValueError):
        WorkingSetSettings(capacity=0)
    request = PullRequest("m", "1", shard=0, pull=1, features=("a", 3), sent_at=0.0)
    assert update_shard(encode_pull(request)) == 0


def test_a_pull_answer_older_than_the_replicas_version_is_rewritten_by_the_next_rebase():
    settings = LoopSettings("m", working_set=WorkingSetSettings(capacity=5))
    template = build(SPEC)
    side, merger = ReplicaSide(settings, template), MergerSide(settings, template).fresh()
    r = side.fresh()
    r.base_version = 5
    merger.version, merger.params = 3, {**merger.params, "weights": {"a": 1.0}, "opt_z": {"a": -1.0}}
    r.pulls[1] = (0, ("a",), time.time())
    text = models.dumps(answer(merger, template, PullRequest("m", "0", 0, 1, ("a",), 0.0)))
    assert side.on_records(r, 0, [Record(PULL_PARTITION, 0, 0, None, text)]).pulls.answered == 1
    assert r.model._weights["a"] == 1.0 and r.stale_pulls == {"a"}
    # version 6 did not change "a" (changed is empty), yet the rebase rewrites it: version 4 had moved it
    newer = {**models.get_params(template), "weights": {"a": 2.0, "b": 9.0}, "opt_z": {"a": -2.0, "b": -9.0}}
    r.rebase(lambda: newer, 6, acked=0, changed=set())
    assert r.model._weights["a"] == 2.0 and "b" not in r.model._weights and not r.stale_pulls


def test_before_its_first_merged_version_a_replica_learns_without_pulling():
    side = ReplicaSide(LoopSettings("m", working_set=WorkingSetSettings(capacity=100)), build(SPEC))
    r = side.fresh()
    out = side.on_records(r, 0, _records([({"a": 1.0, "b": 2.0}, True), ({"c": 1.0}, False)], 0))
    assert out.score.events == 2 and out.pull_requests == [] and out.pulls.waited == 0
    assert r.working.features == {"a", "b", "c"}


def test_a_replica_rebases_only_what_its_bounded_reader_knows_and_pulls_again_what_it_cannot_vouch_for():
    settings = LoopSettings("m", shards=2, epoch=1, working_set=WorkingSetSettings(capacity=100))
    side = ReplicaSide(settings, build(SPEC))
    side.gate.bounded_reader = True
    r = side.fresh()
    r.base_version, r.base_slices = 1, (1, 1)
    pulled = {"weights": {"a": 1.0, "b": 1.0}, "opt_z": {"a": -1.0, "b": -1.0}, "opt_n": {"a": 1.0, "b": 1.0}}
    r.take_pulled(pulled, {"a", "b"}, acked=0)
    r.working.use({"a", "b"})
    r.unverified = {"b"}  # (as if learned before any pull: it may lack merges the reader did not keep)
    merged = {**models.get_params(build(SPEC)), "intercept": 0.5, "weights": {"a": 2.0}, "opt_z": {"a": -2.0},
              "opt_n": {"a": 4.0}}

    def rebase(version, known):
        r.rebase(lambda: merged, version, acked=[0, 0], slices=(version, version), changed=None,
                 merged_at=lambda keys: None, known=known)

    rebase(2, known=lambda features: set())  # the reader holds neither: both keep their values, "b" is pulled
    assert r.model._weights == {"a": 1.0, "b": 1.0} and r.model.intercept == 0.5 and r.refresh == {"b"}
    requests = side.on_records(r, 0, []).pull_requests
    assert [decode_pull(q).features for q in requests] == [("b",)]
    rebase(3, known=lambda features: set(features) & {"a", "b"})  # it knows both now: merged entries
    assert r.model._weights == {"a": 2.0} and not r.unverified and not r.refresh
