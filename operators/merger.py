"""``Merger``: keyed by model name.  Input 1: replica updates; input 2: the ``models`` topic.

Merges per its :class:`~riverflink.operators.merge_state.MergeTrigger` (on
arrival by default; at once for the very first update; a timer merges what
waits longer than ``wait_ms``) and emits each new version's JSON document.
Documents read back from ``models`` keep the version counter ahead of
everything published; they are validated first
(:func:`riverflink.operators.model_feed.accept`), so a forged or broken
document can neither crash the merger nor move its counter to an absurd
version.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from pyflink.datastream.functions import KeyedCoProcessFunction, RuntimeContext

from riverflink import models
from riverflink.models.policies import MergePolicy
from riverflink.models.signing import Signer, sign
from riverflink.models.spec import build as build_model
from riverflink.models.update_codec import decode
from riverflink.operators import sampling_profiler
from riverflink.operators.flink_state import MERGER
from riverflink.models.labels import task_of
from riverflink.operators.merge_state import MergerState, MergeTrigger, read_doc
from riverflink.operators.quality_gate import QualityGate
from riverflink.operators.model_feed import FeedRules, accept

log = logging.getLogger("riverflink")


class Merger(KeyedCoProcessFunction):
    def __init__(self, model_spec: str, model_name: str, policy: MergePolicy, trigger: MergeTrigger,
                 max_skew_ms: int = 60_000, signing_key: str | None = None, max_doc_bytes: int = 900_000,
                 quality_gate: float | None = None):
        self.spec, self.name, self.policy, self.trigger = model_spec, model_name, policy, trigger
        self.max_skew_ms, self.signing_key, self.max_doc_bytes = max_skew_ms, signing_key, max_doc_bytes
        self.quality_gate = quality_gate

    def open(self, ctx: RuntimeContext):
        sampling_profiler.start_if_asked()
        self.state = ctx.get_state(MERGER)
        # the private key is read on the task manager, never shipped inside the job graph
        self.signer = Signer.load(self.signing_key) if self.signing_key else None
        self.rules = FeedRules(self.name, self.max_skew_ms,
                               verifier=self.signer.verifier() if self.signer else None)
        self.oversized = 0
        group = ctx.get_metrics_group().add_group("riverflink")
        self.m_merges = group.counter("merges")
        self.m_refused = group.counter("updates_refused")
        self.m_oversized = group.counter("documents_oversized")
        self.m_held_back = group.counter("versions_held_back")
        self.last = {"version_seconds": 0, "events": 0, "pending": 0, "staleness": 0}
        for name in self.last:
            group.gauge(name, lambda name=name: int(self.last[name]))

    def _merger(self) -> MergerState:
        merger = self.state.value()
        if merger is None:
            merger = MergerState(self.name, build_model(self.spec), trigger=self.trigger)
        merger.trigger = self.trigger  # the job's settings win over a restored state's (rescaling, upgrades)
        if self.quality_gate is None:
            merger.gate = None
        elif getattr(merger, "gate", None) is None or merger.gate.margin != self.quality_gate:
            merger.gate = QualityGate(self.quality_gate, regression=task_of(merger.template) == "regression")
        return merger

    def process_element1(self, update, ctx):
        merger = self._merger()
        try:
            if isinstance(update.delta, bytes):
                update = dataclasses.replace(update, delta=decode(update.delta))
        except ValueError as e:
            log.error("dropping an undecodable replica update: %s", e)
            merger.refused += 1
            self.state.update(merger)
            return
        first = not merger.pending
        if merger.add(update):
            yield from self._emit(merger)
        elif first:
            ctx.timer_service().register_processing_time_timer(int(time.time() * 1000) + self.trigger.wait_ms)
        self.state.update(merger)

    def process_element2(self, value, ctx):
        merger = self._merger()
        # its own documents come back too: only a newer version is validated (and adopted)
        entry, _, problem = accept(value, self.rules, merger.version)
        if problem:
            log.warning("ignoring a record on the models topic: %s", problem)
        elif entry is not None and merger.adopt(read_doc(entry.text)):
            self.state.update(merger)

    def on_timer(self, timestamp, ctx):
        merger = self._merger()
        if merger.pending:
            yield from self._emit(merger)
            self.state.update(merger)

    def _emit(self, merger: MergerState):
        refused = merger.refused
        doc = merger.merge(self.policy)
        if merger.refused > refused:
            self.m_refused.inc(merger.refused - refused)
            log.error("merger refused %d poisoned replica update(s)", merger.refused - refused)
        self.last["pending"] = len(merger.pending)
        if doc is None:
            return
        self.m_merges.inc()
        if (doc["meta"].get("held") or "").startswith("worse"):
            self.m_held_back.inc()
            log.warning("model version %s held back by the quality gate (version %s keeps serving): %s",
                        doc["meta"]["version"], doc["meta"]["served"], doc["meta"]["held"])
        self.last.update(version_seconds=doc["meta"]["version"] // 1000, events=doc["meta"]["events"],
                         staleness=doc["meta"].get("staleness") or 0)
        if self.signer is not None:
            sign(doc, self.signer)
        text = models.dumps(doc)
        if len(text) > self.max_doc_bytes:
            # the version is merged (replicas keep their learning) but cannot be published
            self.oversized += 1
            self.m_oversized.inc()
            log.error("model version %s is %d bytes, over the %d-byte limit of the models topic: not "
                      "published (%d so far); bound the model's features (--max-model-features) or raise the limit",
                      doc["meta"]["version"], len(text), self.max_doc_bytes, self.oversized)
            return
        yield text.decode()
