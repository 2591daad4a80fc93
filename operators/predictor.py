"""``Predictor``: the serving job's operator; answers every request with the newest accepted model.

Input: a micro-batch of request envelopes (``batched``) or one raw request;
output: one string of JSON prediction lines, one per request, each ``ok``
(with the model version and age), ``no_model_yet`` or ``bad_request`` (with
the reason).  Keys only spread the requests over subtasks; there is no keyed
state.  Model documents are validated before they are stored
(:mod:`riverflink.operators.model_feed`).
"""

from __future__ import annotations

import logging

from pyflink.datastream.functions import KeyedBroadcastProcessFunction, RuntimeContext

from riverflink import models
from riverflink.models.signing import Verifier
from riverflink.operators.flink_state import LATEST_MODEL
from riverflink.operators.model_feed import FeedRules, accept
from riverflink.operators.parse import DEFAULT_LIMITS, Limits, Rejected, batch_lines, open_envelope, parse_event
from riverflink.operators.records import prediction_record
from riverflink.operators.replica import predict

log = logging.getLogger("riverflink")


class Predictor(KeyedBroadcastProcessFunction):
    def __init__(self, model_name: str, batched: bool, limits: Limits = DEFAULT_LIMITS, max_skew_ms: int = 60_000,
                 verifier: Verifier | None = None):
        self.name, self.batched, self.limits = model_name, batched, limits
        self.rules = FeedRules(model_name, max_skew_ms, verifier=verifier)

    def open(self, ctx: RuntimeContext):
        self.version, self.created_at, self.model = None, None, None

    def process_element(self, value, ctx):
        entry = ctx.get_broadcast_state(LATEST_MODEL).get(self.name)
        if entry is not None and entry.version != self.version:
            self.version, self.created_at = entry.version, entry.created_at
            self.model = models.from_wire(entry.text)
        yield "\n".join(self._answer(line) for line in batch_lines(value, self.batched)[1])

    def _answer(self, line: str) -> str:
        event = parse_event(open_envelope(line), require_label=False, limits=self.limits)
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
                                     status="bad_request", reason=f"{type(e).__name__}: {str(e)[:200]}")
        return prediction_record(source="serving", request_id=event.id, y_pred=y_pred, proba=proba,
                                 model_version=self.version, model_created_at=self.created_at)

    def process_broadcast_element(self, value, ctx):
        state = ctx.get_broadcast_state(LATEST_MODEL)
        current = state.get(self.name)
        entry, _, problem = accept(value, self.rules, None if current is None else current.version)
        if problem:
            log.warning("ignoring a record on the models topic: %s", problem)
        elif entry is not None:
            state.put(self.name, entry)
