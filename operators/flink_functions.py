"""The Flink functions of the training and serving jobs (thin shells over pure logic).

State descriptors are explicit and named; the operators that use them are
given stable ``uid``s in :mod:`pipelines.training` / :mod:`pipelines.serving`,
so savepoints survive code changes and rescaling.
"""

from __future__ import annotations

import logging
import time

from pyflink.common import Types
from pyflink.datastream import OutputTag
from pyflink.datastream.functions import (
    KeyedBroadcastProcessFunction,
    KeyedCoProcessFunction,
    RuntimeContext,
)
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from riverflink import models
from riverflink.models import numeric
from riverflink.models.spec import build as build_model
from riverflink.operators.merge_state import MergerState, read_doc
from riverflink.operators.parse import Rejected, batch_lines, open_envelope, parse_event
from riverflink.operators.records import prediction_record
from riverflink.operators.replica import Replica, is_clusterer, predict

log = logging.getLogger("riverflink")

DEAD_LETTER = OutputTag("dead-letter", Types.STRING())
PREDICTIONS = OutputTag("predictions", Types.STRING())
#: broadcast state: model name -> (version, created_at, document text)
LATEST_MODEL = MapStateDescriptor("latest-model", Types.STRING(), Types.PICKLED_BYTE_ARRAY())


def _newer_model(broadcast_state, name: str, version: int):
    entry = broadcast_state.get(name)
    if entry is not None and entry[0] > version:
        return entry
    return None


def _store_if_newer(ctx, value: str) -> None:
    """Keep ``value`` in :data:`LATEST_MODEL` when it is a newer version of its model."""
    doc = read_doc(value)
    if doc is None:
        log.warning("ignoring a record on the models topic that is not a model document")
        return
    meta = doc["meta"]
    state = ctx.get_broadcast_state(LATEST_MODEL)
    current = state.get(meta["name"])
    if current is None or meta["version"] > current[0]:
        state.put(meta["name"], (int(meta["version"]), float(meta.get("created_at") or 0), value))


class ReplicaTrainer(KeyedBroadcastProcessFunction):
    """One live River replica per key: validate, predict-then-learn, sync to the merger, rebase.

    Input: a micro-batch of envelope lines for one replica key (``batched``,
    built by the Java ``EnvelopeBatcher``), or one raw record.  Outputs: bad
    events to :data:`DEAD_LETTER` (one record each, with the reason), the
    batch's progressive-validation predictions to :data:`PREDICTIONS` (one
    string of JSON lines), and replica updates on the main output.

    The live :class:`Replica` object is kept in a Python dict and written to
    keyed ``ValueState`` after every batch; PyFlink caches it and serializes
    it once per bundle (``python.fn-execution.bundle.*``) and at checkpoints,
    not per event.
    """

    def __init__(self, model_spec: str, model_name: str, sync_policy, sync_check_ms: int, key_field: str,
                 source_topic: str, batched: bool, lr_scale: float = 1.0):
        self.spec, self.name, self.sync, self.check_ms = model_spec, model_name, sync_policy, sync_check_ms
        self.key_field, self.topic, self.batched, self.lr_scale = key_field, source_topic, batched, lr_scale

    def open(self, ctx: RuntimeContext):
        self.state = ctx.get_state(ValueStateDescriptor("replica", Types.PICKLED_BYTE_ARRAY()))
        self.template = build_model(self.spec)
        if self.lr_scale != 1.0:  # the scaled_average policy: K replicas at K times the learning rate
            self.template = models.scale_learning_rate(self.template, self.lr_scale)
        self.needs_label = not is_clusterer(self.template)
        self.live: dict = {}
        self.params_cache: dict = {}

    def _merged_params(self, version: int, text: str) -> dict:
        if version not in self.params_cache:
            self.params_cache = {version: models.get_params(models.from_wire(text))}
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
        newer = _newer_model(ctx.get_broadcast_state(LATEST_MODEL), self.name, replica.base_version)
        if newer is not None:
            replica.rebase(self._merged_params(newer[0], newer[2]), newer[0])
        predictions = []
        for line in batch_lines(value, self.batched)[1]:
            envelope = open_envelope(line)
            event = parse_event(envelope, require_label=self.needs_label, key_field=self.key_field)
            if isinstance(event, Rejected):
                yield DEAD_LETTER, event.to_json(self.topic)
                continue
            try:
                y_pred, proba = replica.predict_then_learn(event.x, event.y)
            except Exception as e:  # noqa: BLE001 - a model's refusal must not kill the job
                reason = f"the model could not learn this event: {type(e).__name__}: {e}"
                rejected = Rejected(reason, envelope.value, event.partition, event.offset)
                yield DEAD_LETTER, rejected.to_json(self.topic)
                continue
            predictions.append(prediction_record(
                source="training", request_id=event.id, y_pred=y_pred, proba=proba,
                model_version=replica.base_version, model_created_at=None, replica=key, y=event.y,
                partition=event.partition, offset=event.offset,
            ))
            if replica.since_sync == 1:
                ctx.timer_service().register_processing_time_timer(int(time.time() * 1000) + self.check_ms)
            if replica.sync_due(self.sync):
                yield replica.take_update(self.name, key)
        if predictions:
            yield PREDICTIONS, "\n".join(predictions)
        self.state.update(replica)

    def on_timer(self, timestamp, ctx):
        key = ctx.get_current_key()
        replica = self._replica(key)
        if replica.since_sync == 0:
            return
        if replica.sync_due(self.sync):
            yield replica.take_update(self.name, key)
            self.state.update(replica)
        else:
            ctx.timer_service().register_processing_time_timer(int(time.time() * 1000) + self.check_ms)

    def process_broadcast_element(self, value, ctx):
        _store_if_newer(ctx, value)


class Merger(KeyedCoProcessFunction):
    """Keyed by model name.  Input 1: replica updates; input 2: the ``models`` topic.

    Merges when every replica has an update pending, or
    ``merge_wait_ms`` after the first pending update, and emits the next
    version's JSON document.  Documents read back from ``models`` keep the
    version counter ahead of everything published (see
    :class:`operators.merge_state.MergerState`).
    """

    def __init__(self, model_spec: str, model_name: str, policy, merge_wait_ms: int, replicas: int):
        self.spec, self.name, self.policy, self.wait_ms = model_spec, model_name, policy, merge_wait_ms
        self.replicas = replicas

    def open(self, ctx: RuntimeContext):
        self.state = ctx.get_state(ValueStateDescriptor("merger", Types.PICKLED_BYTE_ARRAY()))

    def _merger(self) -> MergerState:
        return self.state.value() or MergerState(self.name, build_model(self.spec), self.replicas)

    def process_element1(self, update, ctx):
        merger = self._merger()
        try:
            numeric.check_finite(update.delta, f"update from replica {update.replica}")
        except ValueError as e:
            log.error("dropping a poisoned replica update: %s", e)
            return
        first = not merger.pending
        ready = merger.add(update)
        if ready:
            yield from self._emit(merger)
        elif first:
            ctx.timer_service().register_processing_time_timer(int(time.time() * 1000) + self.wait_ms)
        self.state.update(merger)

    def process_element2(self, value, ctx):
        doc = read_doc(value)
        if doc is None or doc["meta"].get("name") != self.name:
            return
        merger = self._merger()
        if merger.adopt(doc):
            self.state.update(merger)

    def on_timer(self, timestamp, ctx):
        merger = self._merger()
        if merger.pending:
            yield from self._emit(merger)
            self.state.update(merger)

    def _emit(self, merger: MergerState):
        try:
            doc = merger.merge(self.policy)
        except ValueError as e:
            log.error("merge refused: %s", e)
            return
        yield models.dumps(doc).decode()


class Predictor(KeyedBroadcastProcessFunction):
    """Answers every request with the latest merged model (or ``no_model_yet`` / ``bad_request``).

    Input: a micro-batch of request envelopes (``batched``) or one raw
    request; output: one string of JSON prediction lines, one per request.
    Keys only spread the requests over subtasks; there is no keyed state.
    """

    def __init__(self, model_name: str, batched: bool):
        self.name, self.batched = model_name, batched

    def open(self, ctx: RuntimeContext):
        self.version, self.created_at, self.model = None, None, None

    def process_element(self, value, ctx):
        entry = ctx.get_broadcast_state(LATEST_MODEL).get(self.name)
        if entry is not None and entry[0] != self.version:
            self.version, self.created_at, self.model = entry[0], entry[1], models.from_wire(entry[2])
        yield "\n".join(self._answer(line) for line in batch_lines(value, self.batched)[1])

    def _answer(self, line: str) -> str:
        event = parse_event(open_envelope(line), require_label=False)
        if isinstance(event, Rejected):
            return prediction_record(source="serving", request_id=None, y_pred=None, proba=None,
                                     model_version=self.version, model_created_at=self.created_at,
                                     status="bad_request", reason=event.reason, offset=event.offset)
        if self.model is None:
            return prediction_record(source="serving", request_id=event.id, y_pred=None, proba=None,
                                     model_version=None, model_created_at=None, status="no_model_yet")
        try:
            y_pred, proba = predict(self.model, event.x)
        except Exception as e:  # noqa: BLE001 - one bad request must not kill the job
            return prediction_record(source="serving", request_id=event.id, y_pred=None, proba=None,
                                     model_version=self.version, model_created_at=self.created_at,
                                     status="bad_request", reason=f"{type(e).__name__}: {e}")
        return prediction_record(source="serving", request_id=event.id, y_pred=y_pred, proba=proba,
                                 model_version=self.version, model_created_at=self.created_at)

    def process_broadcast_element(self, value, ctx):
        _store_if_newer(ctx, value)
