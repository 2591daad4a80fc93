"""The merger's state machine: replica updates -> versioned model documents.  Pure Python.

Contract
--------
* **When it merges.**  As soon as ``quorum`` distinct replicas have an update
  pending (default 1: every update is merged on arrival), or ``wait_ms``
  after the first pending update (the Flink function's timer), and at once
  for the very first update, so a first model is served after the first
  micro-batch of any replica.  The quorum never exceeds the replicas heard
  from within ``forget_after_s`` seconds, so a replica that went away (the job
  was rescaled down, a key went quiet) stops being waited for.
* **Exactly once.**  Every update is merged into exactly one version, or
  refused (poisoned: the merged result would not be finite) and counted in
  ``meta.refused``.  Nothing is dropped before a merge has succeeded.  Each
  document's ``meta.acked`` maps every replica to the last update sequence
  number it holds, so a rebasing replica replays exactly what is missing.
* **Stale updates are corrected.**  With a delay-compensation estimate
  (``update.kappa``) the merger adds ``delta - kappa * D`` (:meth:`correct`),
  D being how far the merged parameters moved from the point the replica
  learned from (its base plus its own raw updates merged since).  Without one it falls back to a scalar discount: an
  update's *staleness* ``s``
  is the number of merges of other replicas' updates since the version it was
  computed against.  Those replicas were correcting the same errors at the
  same time, so adding every update in full overshoots (K replicas each
  removing most of a shared error remove it K times: this is how the plain
  ``delta`` sum diverged on regression).  The merger scales an update's
  learned parameters by ``1 - shared * (1 - rho ** s)``, with ``rho`` and
  ``shared`` estimated by the replica
  (:class:`~riverflink.operators.replica.ContractionProbe`): ``rho`` is the
  part of a shared error that survives one sync period, ``shared`` the part of
  the step that is on such errors.  The j-th overlapping update then adds
  only what the previous ones left of the shared error (``rho ** (j - 1)``),
  small unsaturated steps (``rho`` near 1) add up as single-node River's do,
  and steps driven by the replica's own events (noise, new information) are
  kept whole.  The largest staleness of each merge is in ``meta.staleness``.
* **Versions strictly increase** on the topic, across failures and restarts:
  a version is ``max(previous + 1, now in ms)``.  After a failover the merger
  resumes from its checkpointed state, but versions it had already published
  (the sink is at-least-once) are older than any it publishes next.
* **Quality gate** (optional, :mod:`~riverflink.operators.quality_gate`): a
  version is published with ``meta.held`` set (why) when it is not to be
  served yet; replicas rebase onto every version, serving skips held ones.
* A merger that has never merged (a new job without a savepoint) adopts the
  newest model on the topic as its starting point (:meth:`MergerState.adopt`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from riverflink import models
from riverflink.models import numeric
from riverflink.models.policies import MergePolicy
from riverflink.operators.quality_gate import QualityGate
from riverflink.operators.replica import ReplicaUpdate

#: how many recent versions the merger remembers to measure staleness
_VERSION_MEMORY = 256
#: versions whose parameters the merger keeps (checkpointed with it) for delay compensation, at most:
#: an update whose base has been forgotten falls back to a scalar discount, and at tens of versions
#: per second 24 versions (the first bound) covered less than the 0.2-0.9 s an update's base was old
#: under a backlog (batch mode lost 0.65-0.93 points against River at 200k Phishing events; +0.03 to
#: +0.07 with 256, same run series)
_PARAMS_MEMORY = 256
#: ... and within this many parameter values in all (a model of 20k weights keeps 25 versions)
_PARAMS_BUDGET = 500_000
_PARAMS_MIN = 24


def params_memory(params: Any) -> int:
    """How many versions' parameters to keep for a model whose parameters are ``params``.

    >>> params_memory({"w": {str(i): 0.0 for i in range(20)}}), params_memory({"w": {str(i): 0.0 for i in range(100_000)}})
    (256, 24)
    """
    return max(_PARAMS_MIN, min(_PARAMS_MEMORY, _PARAMS_BUDGET // max(1, numeric.leaves(params))))


@dataclass(frozen=True)
class MergeTrigger:
    """When the merger merges, and how it treats stale updates.

    >>> MergeTrigger().quorum
    1
    """

    #: distinct replicas with a pending update that start a merge (capped by the replicas heard from)
    quorum: int = 1
    #: merge whatever is pending this long after the first pending update
    wait_ms: int = 500
    #: a replica not heard from for this long is no longer counted in the quorum
    forget_after_s: float = 30.0

    def __post_init__(self) -> None:
        if self.quorum < 1:
            raise ValueError(f"merge quorum must be >= 1, got {self.quorum}")
        if self.wait_ms < 1:
            raise ValueError(f"merge wait must be >= 1 ms, got {self.wait_ms}")


@dataclass
class MergerState:
    name: str
    template: Any
    trigger: MergeTrigger = field(default_factory=MergeTrigger)
    version: int = 0
    params: dict | None = None
    events: int = 0
    pending: list = field(default_factory=list)
    #: replica -> time it was last heard from
    last_seen: dict = field(default_factory=dict)
    #: replica -> last update sequence number merged (or refused)
    acked: dict = field(default_factory=dict)
    merges: int = 0
    refused: int = 0
    #: (version, replicas merged into it) for the last few versions, oldest first
    history: list = field(default_factory=list)
    #: version -> parameters, for the last few versions (delay compensation needs an update's base)
    params_at: dict = field(default_factory=dict)
    #: replica -> [(version, sum of the raw deltas of its updates merged into that version)], last few
    applied: dict = field(default_factory=dict)
    #: how many versions ``params_at`` and ``applied`` keep (:func:`params_memory`, refreshed every 32 merges)
    keep_versions: int = _PARAMS_MIN
    #: holds back versions that learn worse than the served one (None: every version is served)
    gate: QualityGate | None = None

    def __post_init__(self) -> None:
        if self.params is None:
            self.params = models.get_params(self.template)
        self.params_at.setdefault(self.version, self.params)

    # -- triggers -----------------------------------------------------------------------
    def active_replicas(self, now: float | None = None) -> set:
        now = time.time() if now is None else now
        return {r for r, t in self.last_seen.items() if now - t <= self.trigger.forget_after_s}

    def add(self, update: ReplicaUpdate, now: float | None = None) -> bool:
        """Queue ``update``; ``True`` when a merge is due now."""
        now = time.time() if now is None else now
        self.pending.append(update)
        self.last_seen[update.replica] = now
        self.last_seen = {r: t for r, t in self.last_seen.items() if now - t <= 10 * self.trigger.forget_after_s}
        if self.merges == 0 and self.version == 0:
            return True  # cold start: serve a first model after the first batch of any replica
        quorum = min(self.trigger.quorum, max(1, len(self.active_replicas(now))))
        return len({u.replica for u in self.pending}) >= quorum

    def staleness(self, base_version: int, replica: Any) -> int:
        """Merges of other replicas' updates since ``base_version`` (all remembered ones if it is older)."""
        if base_version == self.version:
            return 0
        n = 0
        for version, replicas in reversed(self.history):
            if version <= base_version:
                return n
            n += replica not in replicas
        return n

    def discount(self, update: ReplicaUpdate) -> float:
        """The factor on ``update``'s learned parameters: ``1 - shared * (1 - rho ** s)``.

        Only the part of the step on errors shared with other replicas
        (``shared``, estimated by the replica) overlaps with their updates;
        the rest is information of the replica's own events and is kept whole.
        An update without estimates (its replica's first sync periods) is
        taken as fully shared and saturated: its stale learned parameters get
        factor 0 (statistics are always merged exactly).
        """
        s = self.staleness(update.base_version, update.replica)
        if s == 0:
            return 1.0
        rho = 0.0 if update.rho is None else min(1.0, max(0.0, update.rho))
        shared = 1.0 if update.shared is None else min(1.0, max(0.0, update.shared))
        return 1.0 - shared * (1.0 - rho**s)

    # -- merge --------------------------------------------------------------------------
    def merge(self, policy: MergePolicy, now: float | None = None) -> dict | None:
        """Merge the pending updates into the next version; its document, or ``None`` if all were refused.

        Raises nothing for bad updates: an update whose learned parameters
        would make the merged model non-finite is refused (counted, acked)
        and the others are merged without it.
        """
        if not self.pending:
            return None
        updates = list(self.pending)
        used, refused = updates, []
        model, applied = self._combine(updates, policy)
        if model is None:  # some update poisons the merge: keep, in order, each one the merge survives
            used = []
            for u in updates:
                (used if self._combine(used + [u], policy)[0] is not None else refused).append(u)
            model, applied = self._combine(used, policy) if used else (None, {})
        now = time.time() if now is None else now
        acked = dict(self.acked)
        for u in updates:
            acked[str(u.replica)] = max(acked.get(str(u.replica), 0), u.seq)
        doc = None
        gate = copy.deepcopy(self.gate)
        if model is not None:
            version = next_version(self.version, now)
            held = None
            if gate is not None:
                for u in used:
                    gate.observe(u.loss, u.events, u.base_version)
                held = gate.decide(version)
            counts: dict = {}
            for u in used:
                counts[str(u.replica)] = counts.get(str(u.replica), 0) + u.events
            events = self.events + sum(counts.values())
            doc = models.to_wire(
                model,
                name=self.name,
                version=version,
                counts=counts,
                created_at=now,
                events=events,
                policy=policy.name,
                parent=self.version,
                sequence=self.merges + 1,
                acked=acked,
                staleness=max(self.staleness(u.base_version, u.replica) for u in used),
                refused=self.refused + len(refused),
                **({"held": held, "served": gate.served_version, "held_back": gate.held_back}
                   if gate is not None else {}),
            )
        # the document exists (or every update was refused): only now does the state change
        self.pending = []
        self.acked = acked
        self.refused += len(refused)
        if doc is None:
            return None
        self.version = doc["meta"]["version"]
        self.gate = gate
        self.merges += 1
        self.events = doc["meta"]["events"]
        self.params = models.get_params(model)
        self.history.append((self.version, frozenset(u.replica for u in used)))
        del self.history[:-_VERSION_MEMORY]
        self.params_at[self.version] = self.params
        if self.merges % 32 == 1:  # the model's size changes slowly: count its parameters now and then
            self.keep_versions = params_memory(self.params)
        keep = self.keep_versions
        if len(self.params_at) > keep:
            self.params_at = dict(list(self.params_at.items())[-keep:])
        for r, step in applied.items():
            self.applied[r] = (self.applied.get(r, []) + [(self.version, step)])[-keep:]
        return doc

    def _combine(self, updates: list, policy: MergePolicy) -> tuple[Any, dict]:
        """``(merged model, replica -> the sum of its updates' raw deltas)``; ``(None, {})`` if not finite."""
        by_replica: dict = {}
        for u in updates:
            by_replica.setdefault(u.replica, []).append(u)
        adapter = models.adapter_for(self.template)
        # a replica's consecutive updates add up to one delta; the policy then combines replicas
        corrected, raw = {}, {}
        for r, us in by_replica.items():
            earlier: list = []
            for u in us:
                earlier.append((u.delta, self.correct(u, earlier)))
            corrected[r] = adapter.sum_deltas(self.template, [c for _, c in earlier])
            raw[r] = adapter.sum_deltas(self.template, [d for d, _ in earlier])
        weights = [sum(u.events for u in us) for us in by_replica.values()]
        try:
            return models.apply_deltas(self.template, self.params, list(corrected.values()), weights, policy), raw
        except (ValueError, OverflowError):
            return None, {}

    def correct(self, update: ReplicaUpdate, earlier: list = ()) -> dict:
        """``update``'s delta, corrected for what was merged since its base.

        ``earlier``: ``(raw delta, corrected delta)`` of the same replica's
        updates ahead of it in this merge.  With a delay-compensation estimate
        (``update.kappa``) and the base's parameters still remembered:
        ``delta - kappa * O``, where ``O`` is how far the merged parameters
        have moved from the point the replica learned this update from (its
        base plus the raw deltas of its own updates merged since: what its
        model held).  Had the replica started from the merged point, its steps
        would have removed about ``kappa * O`` of that offset.  ``O`` shrinks
        as the replica's own corrections are merged, so several updates on one
        base remove other replicas' progress once in all (``1 - prod(1 -
        kappa)``), not once each.  Otherwise the scalar discount of
        :meth:`discount`.
        """
        adapter = models.adapter_for(self.template)
        base = self.params_at.get(update.base_version)
        if update.kappa is None or base is None:
            return adapter.scale_learned(self.template, update.delta, self.discount(update))
        if update.base_version == self.version and not earlier:
            return update.delta
        offset = adapter.delta(self.template, self.params, base)
        for version, raw in self.applied.get(update.replica, []):
            if version > update.base_version:
                offset = adapter.add_learned(self.template, offset, raw, -1.0)
        for raw, corrected in earlier:
            offset = adapter.add_learned(self.template, adapter.add_learned(self.template, offset, raw, -1.0),
                                         corrected, 1.0)
        return adapter.add_learned(self.template, update.delta, offset, -min(1.0, max(0.0, update.kappa)))

    def adopt(self, doc: dict) -> bool:
        """See a version read back from ``models``; ``True`` when it changed this state.

        A newer version always raises the version counter.  Its parameters are
        taken only while this merger has never merged: afterwards the merger's
        own (checkpointed) parameters are the truth, and a newer document can
        only be one it published before a failover.
        """
        version = int(doc["meta"]["version"])
        if version <= self.version:
            return False
        self.version = version
        if self.merges == 0:
            self.params = models.get_params(models.from_wire(doc))
            self.params_at = {version: self.params}
            self.events = int(doc["meta"].get("events", self.events))
            self.acked = {str(k): int(v) for k, v in (doc["meta"].get("acked") or {}).items()}
        return True


def next_version(previous: int, now: float | None = None) -> int:
    """``max(previous + 1, now in ms)``: strictly increasing, and ahead of anything published before a restart.

    >>> next_version(5, now=0.002)
    6
    >>> next_version(5, now=1700000000.0)
    1700000000000
    """
    now = time.time() if now is None else now
    return max(previous + 1, int(now * 1000))


def read_doc(text: str | bytes) -> dict | None:
    """Parse a ``models`` record; ``None`` for anything that is not a model document."""
    try:
        doc = orjson.loads(text)
    except (ValueError, TypeError):
        return None
    if not isinstance(doc, dict) or doc.get("schema") != models.SCHEMA or not isinstance(doc.get("meta"), dict):
        return None
    return doc
