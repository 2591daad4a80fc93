"""``ReplicaTrainer``: the training job's keyed operator, one live River replica per key.

A Flink shell over :class:`~riverflink.operators.loop.ReplicaSide` (the
loop's replica half).  Input: a micro-batch of record frames for one replica
key (``batched``, built by the Java ``KeyedMicroBatcher``), or one raw record.
Per batch it

1. rebases the replica onto the newest accepted model version, if newer
   (:mod:`riverflink.operators.model_feed`; :meth:`ReplicaSide.on_model`);
2. validates and learns the batch (:meth:`ReplicaSide.on_records`): bad
   records go to :data:`DEAD_LETTER` with their reason, updates to the merger
   (main output, bytes);
3. writes one metrics record to :data:`METRICS` (replica, model version,
   events, dead letters, correct answers or error sums, source offsets), and
   per-event predictions to :data:`PREDICTIONS` only if asked.

The live :class:`Replica` object is kept in a Python dict and written to keyed
``ValueState`` after every batch; PyFlink caches it and serializes it once per
bundle and at checkpoints, not per event.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass

import orjson
from pyflink.datastream.functions import KeyedBroadcastProcessFunction, RuntimeContext

from riverflink import models
from riverflink.models.signing import Signer, Verifier
from riverflink.models.spec import build as build_model
from riverflink.operators import loop_trace, sampling_profiler, user_owner
from riverflink.operators.dead_letters import REASON_CLASSES, reason_class
from riverflink.operators.flink_state import (DEAD_LETTER, LATEST_MODEL, METRICS, PREDICTIONS, REPLICA,
                                              USER_FACTORS)
from riverflink.operators.frames import records
from riverflink.operators.limits import DEFAULT_LIMITS, Limits
from riverflink.operators.loop import BatchOutcome, LoopSettings, ReplicaSide
from riverflink.operators.messages import ReplicaId, replica_id
from riverflink.operators.model_feed import Accepted, FeedRules, ModelFeed, entry_model
from riverflink.operators.pull_gate import PullStats
from riverflink.operators.records import prediction_record
from riverflink.operators.replica import Replica
from riverflink.operators.scoring import Score
from riverflink.operators.tracked_features import held_by

log = logging.getLogger("riverflink")


@dataclass(frozen=True)
class TrainerSettings:
    loop: LoopSettings
    model_spec: str
    #: how often a replica with unsent learning checks its sync policy between batches
    sync_check_ms: int
    key_field: str
    source_topic: str
    batched: bool
    training_predictions: bool = False
    limits: Limits = DEFAULT_LIMITS
    max_skew_ms: int = 60_000
    #: accept only model documents signed by this key (see riverflink.models.signing)
    verifier: Verifier | None = None
    #: a recommender's replicas sign their user records with this private key (the path on the task manager:
    #: the merger's ``--signing-key``)
    signing_key: str | None = None
    #: names this job's records on the shared metrics topic (set when the job graph is built; kept across
    #: failovers, new for a new job), so that readers never mix two jobs
    job_tag: str = ""


class ReplicaTrainer(KeyedBroadcastProcessFunction):
    def __init__(self, settings: TrainerSettings):
        self.s = settings

    def open(self, ctx: RuntimeContext):
        sampling_profiler.start_if_asked()
        self.trace = loop_trace.from_environment()
        self.subtask = ctx.get_index_of_this_subtask()
        self.state = ctx.get_state(REPLICA)
        signer = Signer.load(self.s.signing_key) if self.s.signing_key and self.s.loop.ratings else None
        self.side = ReplicaSide(self.s.loop, build_model(self.s.model_spec), verifier=self.s.verifier, signer=signer)
        self.name = self.s.loop.model_name
        # (in place: the replicas use the newest model alone, and only at the features that changed)
        self.rules = FeedRules(self.name, self.s.max_skew_ms, verifier=self.s.verifier, in_place=True)
        self.feed = ModelFeed(self.rules)  # whole documents, or a sharded model's slices and manifests
        self.live: dict = {}
        if self.side.gate is not None and self.s.loop.shards > 1:
            # (working sets: the reader keeps only what this subtask's replicas hold or have asked for)
            self.feed.track(lambda: held_by(self.live.values()))
            self.side.gate.bounded_reader = True
        self.params_cache: dict = {}
        # Flink metrics (web UI, any reporter; riverflink's Prometheus endpoint with --metrics-port)
        group = ctx.get_metrics_group().add_group("riverflink")
        self.m_learned = group.counter("events_learned")
        self.m_dead = group.counter("events_dead_lettered")
        self.m_dead_by = {c: group.counter(f"events_dead_lettered_{c}") for c in REASON_CLASSES}
        self.m_syncs = group.counter("syncs")
        self.m_refused_models = group.counter("model_documents_refused")
        self.m_features_dropped = group.counter("features_dropped")
        self.m_new_classes = group.counter("new_classes")
        # a recommender's users (operators.user_owner): adopted from other writers, let go after a change of K,
        # evicted beyond max_users, records on the users topic refused
        self.m_users = {name: group.counter(f"users_{name}") for name in user_owner.REPORTED}
        # stale synchronous parallel (--max-staleness): the replicas' clock gap, and syncs held or sent past it
        self.m_syncs_held = group.counter("syncs_held")
        self.m_staleness_violations = group.counter("staleness_violations")
        group.gauge("clock_gap", lambda: max((r.clock_gap for r in self.live.values()), default=0))
        # --working-set: pulls and what waits for them (operators.pull_gate)
        self.m_pulls = {name: group.counter(metric) for name, metric in PULL_COUNTERS.items()}
        group.gauge("working_set", lambda: max((len(r.working) for r in self.live.values()
                                                if getattr(r, "working", None) is not None), default=0))
        group.gauge("reader_features", lambda: self.feed.tracking.held() if self.feed.tracking is not None else 0)
        group.gauge("events_waiting", lambda: sum(len(getattr(r, "waiting", None) or ()) for r in self.live.values()))
        self.pull_deadlines: dict = {}
        self.last = {"base_version": 0, "accuracy_permille": 0, "mae_milli": 0}
        for name in self.last:
            group.gauge(name, lambda name=name: int(self.last[name]))
        # progressive accuracy / MAE over the last batches (rolling), and the age of the version learned on
        self.recent: collections.deque = collections.deque(maxlen=20)
        self.base_created_at = 0.0
        group.gauge("staleness_ms", lambda: int(1000 * (time.time() - self.base_created_at))
                    if self.base_created_at else 0)

    def _merged_params(self, entry: Accepted) -> dict:
        """Parameters of an accepted version, taken once from the model read with it; rebuilt from its
        document(s) only after a restore emptied the cache."""
        cached = self.params_cache.get(entry.version)
        if not isinstance(cached, dict):  # (the model read with it, or nothing after a restore)
            cached = models.get_params(cached if cached is not None else entry_model(entry))
            self.params_cache = {entry.version: cached}
        return cached

    def _merged_params_at(self, entry: Accepted, keys: set) -> dict | None:
        """The parameters of an accepted version at ``keys`` (an in-place rebase), from the model read with it
        without taking its whole parameter tree; ``None`` when only the whole tree is at hand."""
        cached = self.params_cache.get(entry.version)
        if cached is None or isinstance(cached, dict):
            return None
        return models.adapter_for(cached).get_at(cached, keys)

    def _replica(self, key) -> Replica:
        r = self.live.get(key)
        if r is None:
            r = self.state.value()
            if self.trace.on:
                self.trace.write("replica_restored" if r is not None else "replica_fresh", replica=key,
                                 subtask=self.subtask, **(_replica_summary(r) if r is not None else {}))
            if r is not None and self.side.gate is not None:
                self.side.gate.restored(r)  # (a bounded reader starts empty: what it holds is pulled again)
            r = r or self.side.fresh()
            self.live[key] = r
        return r

    def process_element(self, value, ctx):
        key = ctx.get_current_key()
        replica = self._replica(key)
        self._adopt_latest(key, replica, ctx)
        counts = (replica.syncs_held, replica.staleness_violations)
        out = self.side.on_records(replica, key, records(value, self.s.batched), key_field=self.s.key_field,
                                   limits=self.s.limits, keep_predictions=self.s.training_predictions)
        yield from self._emit(key, replica, out, ctx)
        self._count_staleness(replica, counts)
        self.state.update(replica)

    def _count_staleness(self, replica: Replica, before: tuple[int, int]) -> None:
        self.m_syncs_held.inc(replica.syncs_held - before[0])
        self.m_staleness_violations.inc(replica.staleness_violations - before[1])

    def _adopt_latest(self, key, replica: Replica, ctx) -> None:
        """Rebase ``replica`` on the newest accepted version, if it is newer than its base."""
        latest = ctx.get_broadcast_state(LATEST_MODEL).get(self.name)
        if latest is not None and self.feed.tracking is not None and latest.version not in self.params_cache:
            if self.trace.on:
                self.trace.write("adopt_skipped", replica=key, version=latest.version, cached=list(self.params_cache))
            return  # (a bounded reader keeps no slices across a restore: wait for the next version it assembles)
        if latest is not None:
            if not self.base_created_at:  # after a restore, before any new version
                self.base_created_at = latest.meta.created_at or 0.0
            before = (replica.base_version, [u[0] for u in replica.in_flight]) if self.trace.on else None
            self.side.on_model(replica, key, latest.meta, lambda: self._merged_params(latest),
                               changed=lambda base: self.feed.changed_between(base, latest.version),
                               params_at=lambda keys: self._merged_params_at(latest, keys),
                               known=None if self.feed.tracking is None else
                               lambda features: self.feed.known_at(features, latest.meta))
            if before is not None and replica.base_version != before[0]:
                self.trace.write("rebase", replica=key, version=replica.base_version, was=before[0],
                                 acked=latest.meta.acked.get(replica_id(key)), in_flight_before=before[1],
                                 in_flight_after=[u[0] for u in replica.in_flight], since_sync=replica.since_sync)

    def _emit(self, key, replica: Replica, out: BatchOutcome, ctx):
        if self.trace.on:
            self.trace.write("batch", replica=key, subtask=self.subtask, learned=out.score.events if out.score else 0,
                             offsets=[(ev.partition, ev.offset) for ev in out.events],
                             updates=len(out.updates), seq=replica.seq, since_sync=replica.since_sync)
        for rejected in out.rejected:
            self.m_dead_by[reason_class(rejected.reason)].inc()
            yield DEAD_LETTER, rejected.to_json(self.s.source_topic, self.s.limits.dead_letter_prefix)
        self.m_dead.inc(len(out.rejected))
        self.m_features_dropped.inc(out.features_dropped)
        self.m_new_classes.inc(len(out.new_classes))
        yield from out.updates
        for key_bytes, value in out.user_factors:
            yield USER_FACTORS, f"{key_bytes.decode()}\n{value.decode()}"
        if out.users:
            for name, counter in self.m_users.items():
                counter.inc(getattr(out.users, name))
        self.m_syncs.inc(len(out.updates) // max(1, self.side.s.shards))  # one piece per shard
        if out.pulls is not None:
            yield from out.pull_requests
            self._count_pulls(key, replica, out.pulls, ctx)
        score = out.score
        if score is not None and score.events:
            self.m_learned.inc(score.events)
            self.last["base_version"] = out.base_version
            if score.loss(replica.task) is not None:
                self.recent.append((score.events, score.correct, score.abs_error))
                n = sum(e for e, _, _ in self.recent)
                if replica.task == "regression":
                    self.last["mae_milli"] = 1000 * sum(a for _, _, a in self.recent) / n
                else:
                    self.last["accuracy_permille"] = 1000 * sum(c for _, c, _ in self.recent) / n
        if out.unsent_started:
            ctx.timer_service().register_processing_time_timer(int(time.time() * 1000) + self.s.sync_check_ms)
        for ev, (y_pred, proba) in zip(out.events, out.predictions):
            yield PREDICTIONS, prediction_record(
                source="training", request_id=ev.id, y_pred=y_pred, proba=proba, model_version=out.base_version,
                model_created_at=None, replica=replica_id(key), y=ev.y, partition=ev.partition, offset=ev.offset)
        if score is not None or out.rejected or (out.pulls is not None and out.pulls.round_trips_ms) or out.users:
            yield METRICS, _metrics_record(self.s.job_tag, replica_id(key), out.base_version, replica.task, score,
                                           len(out.rejected), out.events, out.features_dropped, replica.clock_gap,
                                           {**_pull_fields(replica, out.pulls, self.feed),
                                            **(out.users.reported() if out.users else {})})

    def _count_pulls(self, key, replica: Replica, stats: PullStats, ctx) -> None:
        """Count what the pull gate did, and wake the replica when its oldest unanswered pull times out (its
        waiting events then learn on what it holds)."""
        for name, counter in self.m_pulls.items():
            counter.inc(getattr(stats, name))
        deadline = self.side.gate.next_deadline(replica)
        if deadline is not None and replica.waiting and self.pull_deadlines.get(key) != deadline:
            self.pull_deadlines[key] = deadline
            ctx.timer_service().register_processing_time_timer(int(deadline * 1000) + 1)

    def on_timer(self, timestamp, ctx):
        key = ctx.get_current_key()
        replica = self._replica(key)
        if self.side.gate is not None and (getattr(replica, "waiting", None) or getattr(replica, "pulls", None)):
            # (pulls given up after their timeout: the events waiting for them learn now)
            self._adopt_latest(key, replica, ctx)
            out = self.side.on_records(replica, key, [], key_field=self.s.key_field, limits=self.s.limits,
                                       keep_predictions=self.s.training_predictions)
            yield from self._emit(key, replica, out, ctx)
            self.state.update(replica)
        if replica.since_sync == 0:
            return
        # (a sync held at --max-staleness waits for a newer version: take it here too, or a replica that gets no
        # more events would hold its last learning until stale_send_s)
        base = replica.base_version
        if self.side.s.sync.max_staleness is not None:
            self._adopt_latest(key, replica, ctx)
        counts = (replica.syncs_held, replica.staleness_violations)
        pieces = self.side.on_timer(replica, key)
        self._count_staleness(replica, counts)
        if pieces:
            if self.trace.on:
                self.trace.write("timer_update", replica=key, seq=replica.seq)
            self.m_syncs.inc()
            yield from pieces
            self.state.update(replica)
        else:
            if replica.base_version != base:
                self.state.update(replica)
            ctx.timer_service().register_processing_time_timer(int(time.time() * 1000) + self.s.sync_check_ms)

    def process_broadcast_element(self, value, ctx):
        state = ctx.get_broadcast_state(LATEST_MODEL)
        current = state.get(self.name)
        entry, model, problem = self.feed.offer(value, current)
        if problem:
            self.m_refused_models.inc()
            log.warning("ignoring a record on the models topic: %s", problem)
        elif entry is not None:
            if self.trace.on:
                self.trace.write("model_accepted", subtask=self.subtask, version=entry.version,
                                 reader=self.feed.tracking.held() if self.feed.tracking is not None else None)
            state.put(self.name, entry)
            self.base_created_at = entry.meta.created_at or 0.0
            # the rebase needs its parameters: keep the model just built and checked, and take its parameters
            # when a replica rebases on it (most versions are passed over when several come per batch)
            self.params_cache = {entry.version: model}


def _replica_summary(r: Replica) -> dict:
    return {"seq": r.seq, "since_sync": r.since_sync, "in_flight": [(u[0], u[2]) for u in r.in_flight],
            "base_version": r.base_version, "events_learned": r.events_learned}


#: the trainer's pull counters: PullStats field -> Flink metric
PULL_COUNTERS = {"sent": "pulls_sent", "answered": "pull_answers", "refused": "pull_answers_refused",
                 "late": "pull_answers_late", "timed_out": "pulls_timed_out", "waited": "events_waited_for_pulls",
                 "unpulled": "events_learned_unpulled", "limited": "pulls_limited", "evicted": "features_evicted",
                 "expired": "features_expired", "refreshed": "features_pulled_again"}


def _pull_fields(replica: Replica, stats: PullStats | None, feed: ModelFeed) -> dict:
    """A metrics record's working-set fields: the pull round trips answered in the batch (ms), the working set's
    size and the events waiting, after it, the held features it asked for again (``Replica.refresh``), and the
    features the subtask's bounded reader holds (if bounded)."""
    if stats is None:
        return {}
    return {"pull_rtt_ms": [round(t, 1) for t in stats.round_trips_ms], "working_set": len(replica.working),
            "waiting": len(replica.waiting), "pulled_again": stats.refreshed,
            **({"reader_features": feed.tracking.held()} if feed.tracking is not None else {})}


def _metrics_record(job: str, replica: ReplicaId, version: int, task: str, score: Score | None, dead: int, events: list,
                    features_dropped: int = 0, clock_gap: int = 0, more: dict | None = None) -> str:
    offsets: dict = {}
    for ev in events:
        if ev.offset is not None:
            lo, hi = offsets.get(ev.partition, (ev.offset, ev.offset))
            offsets[ev.partition] = (min(lo, ev.offset), max(hi, ev.offset))
    return orjson.dumps({
        "source": "training",
        "job": job,
        "replica": replica,
        "model_version": version,
        "task": task,
        "events": score.events if score else 0,
        "dead_lettered": dead,
        "correct": score.correct if score else 0,
        "abs_error": score.abs_error if score else 0.0,
        "sq_error": score.sq_error if score else 0.0,
        "features_dropped": features_dropped,
        "clock_gap": clock_gap,
        "offsets": {str(p): list(r) for p, r in offsets.items()},
        "ts": time.time(),
        **(more or {}),
    }).decode()
