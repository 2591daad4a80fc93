"""``ReplicaTrainer``: the training job's keyed operator, one live River replica per key.

Input: a micro-batch of record frames for one replica key (``batched``, built
by the Java ``ReplicaBatcher``), or one raw record.  Per batch it

1. rebases the replica onto the newest accepted model version, if newer
   (:mod:`riverflink.operators.model_feed`), replaying what that version
   does not hold yet (:meth:`Replica.rebase`);
2. parses and validates every record, the label included, *before* anything
   learns, so a dead-lettered event never touches the model; bad records go
   to :data:`DEAD_LETTER` with their reason;
3. learns the valid events (``exact`` or ``batch``, :meth:`Replica.train`)
   and sends updates to the merger (main output, binary codec);
4. writes one metrics record to :data:`METRICS` (replica, model version,
   events, dead letters, correct answers or error sums, source offsets), and
   per-event predictions to :data:`PREDICTIONS` only if asked.

The live :class:`Replica` object is kept in a Python dict and written to keyed
``ValueState`` after every batch; PyFlink caches it and serializes it once per
bundle and at checkpoints, not per event.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from dataclasses import dataclass

import orjson
from pyflink.datastream.functions import KeyedBroadcastProcessFunction, RuntimeContext

from riverflink import models
from riverflink.models.labels import LabelRule
from riverflink.models.signing import Verifier
from riverflink.models.spec import build as build_model
from riverflink.models.sync import SyncPolicy
from riverflink.models.update_codec import encode
from riverflink.operators import sampling_profiler
from riverflink.operators.feature_budget import FeatureBudget
from riverflink.operators.flink_state import DEAD_LETTER, LATEST_MODEL, METRICS, PREDICTIONS, REPLICA
from riverflink.operators.model_feed import FeedRules, accept
from riverflink.operators.parse import DEFAULT_LIMITS, REASON_CLASSES, Limits, Rejected, envelopes, parse_event, reason_class
from riverflink.operators.records import prediction_record
from riverflink.operators.replica import Replica

log = logging.getLogger("riverflink")


@dataclass(frozen=True)
class TrainerSettings:
    model_spec: str
    model_name: str
    sync: SyncPolicy
    sync_check_ms: int
    key_field: str
    source_topic: str
    batched: bool
    mode: str = "exact"
    lr_scale: float = 1.0
    training_predictions: bool = False
    update_precision: str = "float16"
    limits: Limits = DEFAULT_LIMITS
    max_skew_ms: int = 60_000
    #: accept only model documents signed by this key (see riverflink.models.signing)
    verifier: Verifier | None = None
    #: distinct features each replica admits (operators.feature_budget); None: no bound
    replica_features: int | None = None


class ReplicaTrainer(KeyedBroadcastProcessFunction):
    def __init__(self, settings: TrainerSettings):
        self.s = settings

    def open(self, ctx: RuntimeContext):
        sampling_profiler.start_if_asked()
        self.state = ctx.get_state(REPLICA)
        self.template = build_model(self.s.model_spec)
        if self.s.lr_scale != 1.0:  # the scaled_average policy: K replicas at K times the learning rate
            self.template = models.scale_learning_rate(self.template, self.s.lr_scale)
        self.labels = LabelRule.for_model(self.template)
        self.rules = FeedRules(self.s.model_name, self.s.max_skew_ms, verifier=self.s.verifier)
        self.live: dict = {}
        self.params_cache: dict = {}
        # Flink metrics (web UI, any reporter; riverflink's Prometheus endpoint with --metrics-port)
        group = ctx.get_metrics_group().add_group("riverflink")
        self.m_learned = group.counter("events_learned")
        self.m_dead = group.counter("events_dead_lettered")
        self.m_dead_by = {c: group.counter(f"events_dead_lettered_{c}") for c in REASON_CLASSES}
        self.m_syncs = group.counter("syncs")
        self.m_refused_models = group.counter("model_documents_refused")
        self.m_features_dropped = group.counter("features_dropped")
        self.last = {"base_version": 0, "accuracy_permille": 0, "mae_milli": 0}
        for name in self.last:
            group.gauge(name, lambda name=name: int(self.last[name]))
        # progressive accuracy / MAE over the last batches (rolling), and the age of the version learned on
        self.recent: collections.deque = collections.deque(maxlen=20)
        self.base_created_at = 0.0
        group.gauge("staleness_ms", lambda: int(1000 * (time.time() - self.base_created_at))
                    if self.base_created_at else 0)

    def _merged_params(self, version: int, text: str) -> dict:
        """Parameters of ``version``; parsed again only after a restore emptied the cache."""
        if version not in self.params_cache:
            self.params_cache = {version: models.get_params(models.from_wire(orjson.loads(text)))}
        return self.params_cache[version]

    def _replica(self, key):
        r = self.live.get(key)
        if r is None:
            r = self.state.value() or Replica.fresh(self.template)
            self.live[key] = r
        return r

    def process_element(self, value, ctx):
        key = ctx.get_current_key()
        replica = self._replica(key)
        latest = ctx.get_broadcast_state(LATEST_MODEL).get(self.s.model_name)
        if latest is not None and not self.base_created_at:  # after a restore, before any new version
            self.base_created_at = latest.created_at
        if latest is not None and latest.version > replica.base_version:
            replica.rebase(self._merged_params(latest.version, latest.text), latest.version,
                           latest.acked.get(str(key), 0))
        xs, ys, events, raws, dead = [], [], [], [], 0
        for envelope in envelopes(value, self.s.batched):
            event = parse_event(envelope, require_label=self.labels.needs_label, key_field=self.s.key_field,
                                limits=self.s.limits)
            if not isinstance(event, Rejected):
                problem = self.labels.problem(event.y)
                if problem is not None:
                    event = Rejected(problem, envelope.value, event.partition, event.offset)
            if isinstance(event, Rejected):
                dead += 1
                self.m_dead.inc()
                self.m_dead_by[reason_class(event.reason)].inc()
                yield DEAD_LETTER, event.to_json(self.s.source_topic, self.s.limits.dead_letter_prefix)
                continue
            xs.append(event.x)
            ys.append(event.y)
            events.append(event)
            raws.append(envelope.value)
        features_dropped = 0
        if xs and self.s.replica_features:
            if replica.features is None:
                replica.features = FeatureBudget(self.s.replica_features)
            xs, features_dropped = replica.features.admit(xs)
            self.m_features_dropped.inc(features_dropped)
        if xs:
            was_idle = replica.since_sync == 0
            version = replica.base_version
            try:
                score, updates, preds = replica.train(xs, ys, mode=self.s.mode, policy=self.s.sync,
                                                      model_name=self.s.model_name, replica=key,
                                                      keep_predictions=self.s.training_predictions)
            except Exception as e:  # noqa: BLE001 - validated events should learn; never die on one
                log.exception("replica %s could not learn a batch", key)
                reason = f"the model could not learn this batch: {type(e).__name__}: {str(e)[:200]}"
                for ev, raw in zip(events, raws):
                    yield DEAD_LETTER, Rejected(reason, raw, ev.partition, ev.offset).to_json(
                        self.s.source_topic, self.s.limits.dead_letter_prefix)
                self.m_dead.inc(len(events))
                self.m_dead_by["learning"].inc(len(events))
                dead, events, score, updates, preds = dead + len(events), [], None, [], []
            for u in updates:
                yield dataclasses.replace(u, delta=encode(self.template, u.delta, self.s.update_precision))
            self.m_syncs.inc(len(updates))
            if score is not None and score.events:
                self.m_learned.inc(score.events)
                self.last["base_version"] = version
                if score.loss(replica.task) is not None:
                    self.recent.append((score.events, score.correct, score.abs_error))
                    n = sum(e for e, _, _ in self.recent)
                    if replica.task == "regression":
                        self.last["mae_milli"] = 1000 * sum(a for _, _, a in self.recent) / n
                    else:
                        self.last["accuracy_permille"] = 1000 * sum(c for _, c, _ in self.recent) / n
            if replica.since_sync and was_idle:
                ctx.timer_service().register_processing_time_timer(int(time.time() * 1000) + self.s.sync_check_ms)
            for ev, (y_pred, proba) in zip(events, preds):
                yield PREDICTIONS, prediction_record(
                    source="training", request_id=ev.id, y_pred=y_pred, proba=proba, model_version=version,
                    model_created_at=None, replica=key, y=ev.y, partition=ev.partition, offset=ev.offset)
            if score is not None:
                yield METRICS, _metrics_record(key, version, replica.task, score, dead, events, features_dropped)
        elif dead:
            yield METRICS, _metrics_record(key, replica.base_version, replica.task, None, dead, [])
        self.state.update(replica)

    def on_timer(self, timestamp, ctx):
        key = ctx.get_current_key()
        replica = self._replica(key)
        if replica.since_sync == 0:
            return
        if replica.sync_due(self.s.sync):
            u = replica.take_update(self.s.model_name, key)
            yield dataclasses.replace(u, delta=encode(self.template, u.delta, self.s.update_precision))
            self.state.update(replica)
        else:
            ctx.timer_service().register_processing_time_timer(int(time.time() * 1000) + self.s.sync_check_ms)

    def process_broadcast_element(self, value, ctx):
        state = ctx.get_broadcast_state(LATEST_MODEL)
        current = state.get(self.s.model_name)
        entry, model, problem = accept(value, self.rules, None if current is None else current.version)
        if problem:
            self.m_refused_models.inc()
            log.warning("ignoring a record on the models topic: %s", problem)
        elif entry is not None:
            state.put(self.s.model_name, entry)
            self.base_created_at = entry.created_at
            # the rebase needs its parameters: keep them from the model just built and checked
            self.params_cache = {entry.version: models.get_params(model)}


def _metrics_record(replica, version, task, score, dead: int, events: list, features_dropped: int = 0) -> str:
    offsets: dict = {}
    for ev in events:
        if ev.offset is not None:
            lo, hi = offsets.get(ev.partition, (ev.offset, ev.offset))
            offsets[ev.partition] = (min(lo, ev.offset), max(hi, ev.offset))
    return orjson.dumps({
        "source": "training",
        "replica": replica,
        "model_version": version,
        "task": task,
        "events": score.events if score else 0,
        "dead_lettered": dead,
        "correct": score.correct if score else 0,
        "abs_error": score.abs_error if score else 0.0,
        "sq_error": score.sq_error if score else 0.0,
        "features_dropped": features_dropped,
        "offsets": {str(p): list(r) for p, r in offsets.items()},
        "ts": time.time(),
    }).decode()
