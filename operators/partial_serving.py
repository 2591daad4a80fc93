"""The Flink functions of scatter/gather serving (``riverflink serve --shards M``): thin shells over
:mod:`riverflink.operators.scatter_gather`, holding its state in explicit keyed and broadcast state.

* :class:`ScatterFunction`: request batches keyed by one key (batched
  in the JVM) and ``models`` records (broadcast), so one subtask orders them;
  outputs ``Row(shard, "shard kind payload")``, and side outputs
  :data:`~riverflink.operators.flink_state.SCATTER_ANSWERS` (answer lines) and
  :data:`~riverflink.operators.flink_state.SCATTER_CONTEXTS`.
* :class:`ScorerFunction`: keyed by shard; outputs ``Row(batch id, "batch p partials")``.
* :class:`GatherFunction`: keyed by batch id; outputs answer lines (one
  string per batch, joined by newlines).
"""

from __future__ import annotations

import collections
import logging

from pyflink.common import Row
from pyflink.datastream.functions import KeyedBroadcastProcessFunction, KeyedProcessFunction, RuntimeContext

from riverflink.models.signing import Verifier
from riverflink.operators import sampling_profiler
from riverflink.operators.flink_state import (GATHER_HELD, SCATTER, SCATTER_ANSWERS, SCATTER_BATCHES,
                                              SCATTER_CONTEXTS, SCORER_ENTRY, SCORER_PENDING)
from riverflink.operators.frames import records
from riverflink.operators.limits import DEFAULT_LIMITS, Limits
from riverflink.operators.model_feed import FeedRules
from riverflink.operators.scatter_gather import (BATCH, CONTEXT, MODEL, PARTIAL, Gather, Scatter, ShardScorer,
                                                 latency_ms, message, read_message)

log = logging.getLogger("riverflink")


class ScatterFunction(KeyedBroadcastProcessFunction):
    """Request batches (keyed, one key: one subtask orders everything) and ``models`` records (broadcast)."""

    def __init__(self, model_name: str, batched: bool, limits: Limits = DEFAULT_LIMITS, max_skew_ms: int = 60_000,
                 verifier: Verifier | None = None):
        self.rules = FeedRules(model_name, max_skew_ms, verifier=verifier, serving=True)
        self.batched, self.limits = batched, limits

    def open(self, ctx: RuntimeContext):
        sampling_profiler.start_if_asked()
        self.batches = ctx.get_state(SCATTER_BATCHES)
        self.scatter: Scatter | None = None
        group = ctx.get_metrics_group().add_group("riverflink")
        self.m_refused_models = group.counter("model_documents_refused")
        self.m_answers = {s: group.counter(f"answers_{s}") for s in ("bad_request", "no_model_yet")}
        group.gauge("model_version_seconds", lambda: int(((self.scatter.current.version if self.scatter and
                                                           self.scatter.current else 0) or 0) // 1000))

    def _scatter(self, ctx) -> Scatter:
        if self.scatter is None:  # (after a restore: the one kept in broadcast state)
            self.scatter = ctx.get_broadcast_state(SCATTER).get("scatter") or Scatter(self.rules, self.limits)
        return self.scatter

    def process_element(self, value, ctx):
        scatter = self._scatter(ctx)
        n = (self.batches.value() or 0) + 1
        answers, sends, context = scatter.on_requests(records(value, self.batched), batch=str(n))
        if answers:
            for status, n in collections.Counter(status for _, status in answers).items():
                self.m_answers[status].inc(n)
            yield SCATTER_ANSWERS, "\n".join(line for line, _ in answers)
        if context is not None:
            self.batches.update(n)
            yield SCATTER_CONTEXTS, Row(str(n), message(n, CONTEXT, context))
            for shard, payload in sends:
                yield Row(shard, message(shard, BATCH, payload))  # (keyed by shard in the JVM)

    def process_broadcast_element(self, value, ctx):
        scatter = self._scatter(ctx)
        sends, problem = scatter.on_model(value)
        if problem:
            log.warning("scatter: ignoring a record on the models topic: %s", problem)
            self.m_refused_models.inc()
        ctx.get_broadcast_state(SCATTER).put("scatter", scatter)
        for shard, text in sends:
            yield Row(shard, message(shard, MODEL, text))


class ScorerFunction(KeyedProcessFunction):
    def __init__(self, model_name: str, max_skew_ms: int = 60_000, verifier: Verifier | None = None):
        self.model_name, self.max_skew_ms, self.verifier = model_name, max_skew_ms, verifier

    def open(self, ctx: RuntimeContext):
        sampling_profiler.start_if_asked()
        self.entry_state = ctx.get_state(SCORER_ENTRY)
        self.pending_state = ctx.get_list_state(SCORER_PENDING)
        self.scorers: dict[int, ShardScorer] = {}
        group = ctx.get_metrics_group().add_group("riverflink")
        self.m_refused = group.counter("slices_refused")
        self.m_missed = group.counter("manifests_missed")

    def _scorer(self, shard: int) -> ShardScorer:
        scorer = self.scorers.get(shard)
        if scorer is None:
            # (in place: a scorer answers with the version it stands on alone; slices wait for their manifest)
            rules = FeedRules(self.model_name, self.max_skew_ms, verifier=self.verifier, serving=True,
                              in_place=True, shard=shard)
            scorer = ShardScorer(rules)
            scorer.restore(self.entry_state.value(), list(self.pending_state.get() or []))
            self.scorers[shard] = scorer
        return scorer

    def process_element(self, value, ctx):
        key, kind, payload = read_message(value)
        scorer = self._scorer(int(key))
        if kind == MODEL:
            stood_on, waiting = scorer.version, len(scorer.pending)
            before = (scorer.refused, scorer.missed)
            problem = scorer.on_model(payload)
            if problem:
                log.warning("shard %s scorer: %s", key, problem)
            self.m_refused.inc(scorer.refused - before[0])
            self.m_missed.inc(scorer.missed - before[1])
            if scorer.version != stood_on:
                self.entry_state.update(scorer.entry)
            if len(scorer.pending) == waiting + 1:  # (a slice record came and waits)
                self.pending_state.add(scorer.pending[-1])
            elif len(scorer.pending) != waiting:
                self.pending_state.update(list(scorer.pending))
        elif kind == BATCH:
            batch, partials = scorer.on_batch(payload)
            yield Row(batch, message(batch, PARTIAL, partials))  # (keyed by batch id in the JVM)


class GatherFunction(KeyedProcessFunction):
    def open(self, ctx: RuntimeContext):
        self.held = ctx.get_state(GATHER_HELD)
        self.gather = Gather()
        group = ctx.get_metrics_group().add_group("riverflink")
        self.m_ok = group.counter("answers_ok")
        self.m_inconsistent = group.counter("answers_inconsistent")
        # request latency: from the request's Kafka timestamp to its answer leaving this operator
        self.m_latency = group.distribution("latency_ms")

    def process_element(self, value, ctx):
        key, kind, payload = read_message(value)
        before = self.gather.inconsistent
        held, lines = self.gather.step(self.held.value(), kind, payload)
        if lines is None:
            self.held.update(held)
            return
        self.held.clear()
        self.m_inconsistent.inc(self.gather.inconsistent - before)
        self.m_ok.inc(len(lines) - (self.gather.inconsistent - before))
        for ms in latency_ms(self.gather.last_ts):
            self.m_latency.update(ms)
        yield "\n".join(lines)
