"""Bounded staleness (pure): ``SyncPolicy(max_staleness=S)`` keeps every replica's clock gap (its syncs the merged
model does not hold on every shard) within S while one merger shard is deliberately slow, without blocking or losing
an event; without the bound the gap grows with the slow shard's backlog."""

from __future__ import annotations

import time

import pytest

from riverflink import models
from riverflink.models.spec import build
from riverflink.models.sync import SyncPolicy
from riverflink.operators.loop import LoopSettings, MergerSide, ReplicaSide
from riverflink.operators.messages import update_shard
from riverflink.pipelines.click_stream import click_events
from tests.loop_topic import ModelsTopic

SPEC = "FeatureHasher(n_features=4096)|LogisticRegression(ftrl=true)"
SHARDS, REPLICAS, BATCH, ROUNDS = 2, 2, 50, 40
#: the slow shard takes in what waits for it once every this many rounds
SLOW_EVERY = 6


def _run(max_staleness: int | None):
    """K=2 replicas, M=2 merger shards, shard 1 slow; returns (the largest clock gap after any sync, syncs held,
    staleness violations, events learned, the final assembled model)."""
    policy = SyncPolicy(every_events=BATCH, every_seconds=1.0, max_staleness=max_staleness)
    settings = LoopSettings("m", shards=SHARDS, epoch=1, sync=policy)
    side, merger_side = ReplicaSide(settings, build(SPEC)), MergerSide(settings, build(SPEC))
    reps = [side.fresh() for _ in range(REPLICAS)]
    mergers = [merger_side.fresh(s) for s in range(SHARDS)]
    topic, queued = ModelsTopic("m", SHARDS), {s: [] for s in range(SHARDS)}
    events = list(click_events(ROUNDS * REPLICAS * BATCH, seed=5))
    clock, widest = 1000.0, 0

    def deliver(rnd: int | None) -> None:
        nonlocal clock
        for shard, pieces in queued.items():
            if rnd is None or shard == 0 or rnd % SLOW_EVERY == 0:
                for piece in pieces:
                    clock += 0.01
                    topic.publish(merger_side.on_update(mergers[shard], piece, now=clock).document, clock)
                pieces.clear()
        for m in mergers:
            topic.publish(merger_side.on_timer(m, now=clock + 10).document, clock)
        topic.flush(clock)

    def rebase() -> None:
        topic.deliver(side, reps)

    for rnd in range(ROUNDS):
        rebase()
        chunk = events[rnd * REPLICAS * BATCH: (rnd + 1) * REPLICAS * BATCH]
        for k, r in enumerate(reps):
            part = chunk[k::REPLICAS]
            out = side.on_events(r, k, [x for x, _ in part], [y for _, y in part])
            for piece in out.updates:
                queued[update_shard(piece)].append(piece)
            if out.updates:
                widest = max(widest, r.clock_gap)
        deliver(rnd)
    # drain: every shard catches up; the replicas send what they still hold (a second later: the time trigger)
    for _ in range(10):
        deliver(None)
        rebase()
        for k, r in enumerate(reps):
            for piece in side.on_timer(r, k, now=time.time() + 2.0):
                queued[update_shard(piece)].append(piece)
        if not any(queued.values()) and all(r.since_sync == 0 and not r.in_flight for r in reps):
            break
    return (widest, sum(r.syncs_held for r in reps), sum(r.staleness_violations for r in reps), len(events),
            topic.model)


@pytest.mark.parametrize("bound", [1, 2])
def test_the_clock_gap_stays_within_the_bound_and_every_event_is_learned_once(bound):
    widest, held, violations, events, model = _run(bound)
    assert widest <= bound and held > 0 and violations == 0, (widest, held, violations)
    # FTRL's step count is additive over the replicas' updates: one step per event learned, none twice
    assert models.get_params(model)["steps"][1]["opt_steps"] == events


def test_without_a_bound_the_slow_shard_opens_a_wider_gap():
    widest, held, violations, events, model = _run(None)
    assert widest >= SLOW_EVERY - 1 and held == 0 and violations == 0, widest
    assert models.get_params(model)["steps"][1]["opt_steps"] == events


def test_a_sync_held_past_stale_send_s_goes_out_and_counts_a_violation():
    policy = SyncPolicy(every_events=10, every_seconds=None, max_staleness=1, stale_send_s=5.0)
    side = ReplicaSide(LoopSettings("m", sync=policy), build("LogisticRegression"))
    r = side.fresh()
    xs, ys = [{"a": float(i % 3)} for i in range(10)], [i % 2 == 0 for i in range(10)]
    assert side.on_events(r, 0, xs, ys).updates and r.clock_gap == 1  # (no merged model acknowledges it)
    assert not side.on_events(r, 0, xs, ys).updates and r.syncs_held == 1
    assert side.on_timer(r, 0, now=time.time() + 1.0) == [] and r.syncs_held == 2
    assert side.on_timer(r, 0, now=time.time() + 6.0) and r.staleness_violations == 1 and r.clock_gap == 2
