"""``Merger``: keyed by model name.  Input 1: replica updates (bytes); input 2: the ``models`` topic.

With ``--shards M`` it is keyed by ``<model>#<shard>`` (:func:`~riverflink.models.manifest.shard_key`): each key
merges its shard's slice, outputs each slice document as ``"<model>#<shard>\n<JSON>"`` (the record carries its
Kafka key; a slice over ``max_doc_bytes`` goes out as pages, :mod:`riverflink.models.paging`) and tells the
manifest writer (:data:`SLICES_PUBLISHED`, ``"<shard> <slice version>"``).

With ``--working-set`` it also answers the replicas' pull requests (on input 1, :mod:`~riverflink.operators.pulls`)
from its merged parameters, signed like its documents, on :data:`PULL_ANSWERS` as ``"<replica>\n<JSON>"``.

A Flink shell over :class:`~riverflink.operators.loop.MergerSide` (the loop's
merger half): it keeps the :class:`~riverflink.operators.merge_state.MergerState`
in keyed state, registers the ``wait_ms`` timer, signs and size-checks each
new version's JSON document and counts metrics.  Documents read back from
``models`` keep the version counter ahead of everything published; they are
validated first (:func:`riverflink.operators.model_feed.accept`), so a forged
or broken document can neither crash the merger nor move its counter to an
absurd version.
"""

from __future__ import annotations

import logging
import time

from pyflink.datastream.functions import KeyedCoProcessFunction, RuntimeContext

from riverflink import models
from riverflink.models.document import of_dict
from riverflink.models import manifest as manifest_doc
from riverflink.models import paging
from riverflink.models.manifest import shard_key
from riverflink.models.signing import Signer, sign
from riverflink.models.spec import build as build_model
from riverflink.operators import loop_trace, sampling_profiler
from riverflink.operators.flink_state import MERGER, PULL_ANSWERS, SLICES_PUBLISHED
from riverflink.operators.loop import LoopSettings, MergeOutcome, MergerSide
from riverflink.operators.merge_state import MergerState
from riverflink.operators.messages import decode_update, is_pull
from riverflink.operators.model_feed import FeedRules, accept

log = logging.getLogger("riverflink")


class Merger(KeyedCoProcessFunction):
    def __init__(self, settings: LoopSettings, model_spec: str, max_skew_ms: int = 60_000,
                 signing_key: str | None = None, max_doc_bytes: int = 900_000, verify_key: bytes | None = None):
        """``signing_key``: the path of the private key on the task manager; ``verify_key``: the raw public key
        the replicas were given, which the private key must match."""
        self.settings, self.spec = settings, model_spec
        self.max_skew_ms, self.signing_key, self.max_doc_bytes = max_skew_ms, signing_key, max_doc_bytes
        self.verify_key = verify_key

    def open(self, ctx: RuntimeContext):
        sampling_profiler.start_if_asked()
        self.trace = loop_trace.from_environment()
        self.slow = loop_trace.slow_shard_from_environment()
        self.restored_seen = False
        self.state = ctx.get_state(MERGER)
        self.side = MergerSide(self.settings, build_model(self.spec))
        # the private key is read on the task manager, never shipped inside the job graph
        self.signer = Signer.load(self.signing_key) if self.signing_key else None
        if self.signer and self.verify_key is not None and not self.signer.matches(self.verify_key):
            raise ValueError(f"the signing key {self.signing_key} is not the private half of the verify key the "
                             "replicas were given: they would refuse every merged version")
        self.rules = FeedRules(self.settings.model_name, self.max_skew_ms,
                               verifier=self.signer.verifier() if self.signer else None)
        self.oversized = 0
        group = ctx.get_metrics_group().add_group("riverflink")
        self.m_merges = group.counter("merges")
        self.m_refused = group.counter("updates_refused")
        self.m_oversized = group.counter("documents_oversized")
        self.m_held_back = group.counter("versions_held_back")
        self.m_refused_models = group.counter("model_documents_refused")
        self.m_pulls = group.counter("pulls_answered")
        self.last = {"version_seconds": 0, "events": 0, "pending": 0, "staleness": 0}
        for name in self.last:
            group.gauge(name, lambda name=name: int(self.last[name]))

    def _merger(self, key: str) -> MergerState:
        state = self.state.value()
        if self.trace.on and not self.restored_seen:
            self.restored_seen = True
            self.trace.write("merger_restored" if state is not None else "merger_fresh",
                             **({"version": state.version, "merges": state.merges, "events": state.events,
                                 "acked": state.acked, "pending": [(u.replica, u.seq, u.events) for u in state.pending]}
                                if state is not None else {}))
        return self.side.restore(state, int(key.rsplit("#", 1)[1]) if self.settings.shards > 1 else 0)

    def process_element1(self, update: bytes, ctx):
        merger = self._merger(ctx.get_current_key())
        if self.slow is not None and merger.shard == self.slow[0]:
            time.sleep(self.slow[1])  # (a fault injected for a test: RIVERFLINK_SLOW_SHARD)
        if is_pull(update):
            got = self.side.on_pull(merger, update)
            if got is not None:
                replica, doc = got
                self.m_pulls.inc()
                yield PULL_ANSWERS, f"{replica}\n{models.dumps(self._signed(doc)).decode()}"
            return
        if self.trace.on:
            head = decode_update(update)
            self.trace.write("update_in", replica=head.replica, seq=head.seq, events=head.events,
                             base_version=head.base_version, acked=merger.acked.get(head.replica))
        out = self.side.on_update(merger, update)
        if out.wait:
            ctx.timer_service().register_processing_time_timer(int(time.time() * 1000) + self.settings.trigger.wait_ms)
        yield from self._emit(merger, out)
        self.state.update(merger)

    def process_element2(self, value, ctx):
        if self.settings.shards > 1 and value.startswith(manifest_doc.PREFIX):
            return  # the manifest publisher's, not a merger shard's business
        merger = self._merger(ctx.get_current_key())
        # its own documents come back too: only a newer version is validated (and adopted)
        entry, model, problem = accept(value, self.rules, merger.version)
        if problem:
            log.warning("ignoring a record on the models topic: %s", problem)
            self.m_refused_models.inc()
        elif entry is not None and self.side.on_model(merger, entry.meta, model):
            if self.trace.on:
                self.trace.write("merger_adopt", version=entry.meta.version, events=entry.meta.events,
                                 merges=merger.merges)
            self.state.update(merger)

    def on_timer(self, timestamp, ctx):
        merger = self._merger(ctx.get_current_key())
        if merger.pending:
            out = self.side.on_timer(merger)
            if out.wait:  # (updates waiting for the version they are based on: MergerState.awaits_base)
                ctx.timer_service().register_processing_time_timer(int(time.time() * 1000) +
                                                                   self.settings.trigger.wait_ms)
            yield from self._emit(merger, out)
            self.state.update(merger)

    def _emit(self, merger: MergerState, out: MergeOutcome):
        if out.refused:
            self.m_refused.inc(out.refused)
            log.error("merger refused %d replica update(s)", out.refused)
        self.last["pending"] = len(merger.pending)
        if out.document is None:
            return
        doc, meta = out.document, of_dict(out.document).meta
        if self.trace.on:
            self.trace.write("merged", version=meta.version, events=meta.events, counts=meta.counts,
                             acked=meta.acked)
        self.m_merges.inc()
        if (meta.held or "").startswith("worse"):
            self.m_held_back.inc()
            log.warning("model version %s held back by the quality gate (version %s keeps serving): %s",
                        meta.version, meta.served, meta.held)
        self.last.update(version_seconds=meta.version // 1000, events=meta.events, staleness=meta.staleness)
        texts = self._texts(doc, merger.shards > 1)
        if texts is None:
            return
        if merger.shards > 1:
            for text in texts:
                yield f"{shard_key(merger.name, merger.shard)}\n{text.decode()}"
            yield SLICES_PUBLISHED, f"{merger.shard} {meta.version}"  # (after its last page)
        else:
            yield texts[0].decode()

    def _signed(self, doc: dict) -> dict:
        """``doc`` signed when the merger signs (else as it is)."""
        return sign(doc, self.signer) if self.signer is not None else doc

    def _texts(self, doc: dict, paged: bool) -> list[bytes] | None:
        """The records of a new version: its document, signed when the merger signs; a slice larger than
        ``max_doc_bytes`` as its pages (:mod:`riverflink.models.paging`).  ``None`` (logged, counted) when a
        record would still be too large: the version is merged (replicas keep their learning) but not published."""
        texts = [models.dumps(self._signed(dict(doc)))]
        if paged and len(texts[0]) > self.max_doc_bytes:
            pages = paging.paginate(doc, len(texts[0]), self.max_doc_bytes)
            texts = [models.dumps(self._signed(p)) for p in pages]
        largest = max(len(t) for t in texts)
        if largest <= self.max_doc_bytes:
            return texts
        self.oversized += 1
        self.m_oversized.inc()
        log.error("model version %s is %d bytes, over the %d-byte limit of the models topic: not "
                  "published (%d so far); bound the model's features (--max-model-features), shard it "
                  "(--shards) or raise the limit", doc["meta"]["version"], largest, self.max_doc_bytes,
                  self.oversized)
        return None
