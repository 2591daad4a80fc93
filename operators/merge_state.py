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
  refused (poisoned: the merged result would not be finite; or undecodable)
  and counted in ``meta.refused``; a refused update is listed in
  ``meta.refused_updates`` and its replica sends that learning again.  Nothing is dropped before a merge has succeeded.  Each
  document's ``meta.acked`` maps every replica to the last update sequence
  number it holds, so a rebasing replica replays exactly what is missing.
* **Stale updates are corrected** before they are combined
  (:class:`~riverflink.operators.delay_compensation.Compensator`); the
  largest staleness of each merge is in ``meta.staleness``.
* **Versions strictly increase** on the topic, across failures and restarts:
  a version is ``max(previous + 1, now in ms)``.  After a failover the merger
  resumes from its checkpointed state, but versions it had already published
  (the sink is at-least-once) are older than any it publishes next.
* **Quality gate** (optional, :mod:`~riverflink.operators.quality_gate`): a
  version is published with ``meta.held`` set (why) when it is not to be
  served yet; replicas rebase onto every version, serving skips held ones.
* **Patches** (a sharded model with ``patches`` > 0): a version's slice goes
  out as the entries its merge touched (``meta.patch_of``: the version it
  applies to; :func:`~riverflink.models.sharding.touched`), whole at first,
  after at least ``patches`` patches that held as many entries as the slice
  together, after the merger read back a newer version than its own (a
  restart), or when a patch would hold half the slice.
* **In place** (a sharded model): a merge computes the touched features' entries alone and writes them into
  the slice; the compensator keeps undo records of what it overwrote, not whole versions
  (:attr:`MergerState.in_place`).  Unsharded mergers merge whole, as before.
* A merger that has never merged (a new job without a savepoint) adopts the
  newest model on the topic as its starting point (:meth:`MergerState.adopt`).
* **How parameters combine** is the model family's business
  (``docs/model-families.md``): the merger calls ``sum_deltas`` and
  ``apply_deltas`` of the template's family and nothing else of it.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

from riverflink import models
from riverflink.models import numeric, sharding
from riverflink.models.document import ModelMeta
from riverflink.models.policies import MergePolicy
from riverflink.operators.delay_compensation import PARAMS_MIN, Compensator
from riverflink.operators.messages import ReplicaId, ReplicaUpdate
from riverflink.operators.quality_gate import QualityGate


#: refused sequence numbers remembered (and published) per replica
_REFUSED_MEMORY = 32


@dataclass(frozen=True)
class MergeTrigger:
    """When the merger merges.

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
    pending: list[ReplicaUpdate] = field(default_factory=list)
    #: replica -> time it was last heard from
    last_seen: dict[ReplicaId, float] = field(default_factory=dict)
    #: replica -> last update sequence number merged (or refused)
    acked: dict[ReplicaId, int] = field(default_factory=dict)
    merges: int = 0
    refused: int = 0
    #: replica -> sequence numbers of its last refused updates (published so that it re-sends their learning)
    refused_updates: dict[ReplicaId, list[int]] = field(default_factory=dict)
    #: recent versions' parameters, for correcting stale updates
    compensator: Compensator | None = None
    #: holds back versions that learn worse than the served one (None: every version is served)
    gate: QualityGate | None = None
    #: a sharded model: the shard whose slice this merger merges, of how many, in which epoch
    shard: int = 0
    shards: int = 1
    epoch: int = 0
    #: a sharded model: slices published as patches (only what a merge touched) between whole ones, at most
    #: this many in a row (0: every slice whole); merges since the last whole slice (None: the next is whole)
    patches: int = 0
    since_whole: int | None = None
    #: entries the patches since the last whole slice held, together
    patched_entries: int = 0
    #: when the first update based on a version this merger had not read back came, while it had never merged
    #: (:meth:`awaits_base`); None: no such update
    held_since: float | None = None

    def __post_init__(self) -> None:
        if self.params is None:
            self.params = models.get_params(self.template)
        if self.compensator is None:
            self.compensator = Compensator(self.template, keep_versions=PARAMS_MIN)
        self.compensator.params_at.setdefault(self.version, self.params)

    # -- triggers -----------------------------------------------------------------------
    def active_replicas(self, now: float | None = None) -> set[ReplicaId]:
        now = time.time() if now is None else now
        return {r for r, t in self.last_seen.items() if now - t <= self.trigger.forget_after_s}

    def add(self, update: ReplicaUpdate, now: float | None = None) -> bool:
        """Queue ``update``; ``True`` when a merge is due now."""
        now = time.time() if now is None else now
        self.pending.append(update)
        self.last_seen[update.replica] = now
        self.last_seen = {r: t for r, t in self.last_seen.items() if now - t <= 10 * self.trigger.forget_after_s}
        if self.merges == 0 and update.base_version > self.version and self.held_since is None:
            self.held_since = now
        if self.merges == 0 and self.version == 0:
            return True  # cold start: serve a first model after the first batch of any replica
        quorum = min(self.trigger.quorum, max(1, len(self.active_replicas(now))))
        return len({u.replica for u in self.pending}) >= quorum

    def awaits_base(self, now: float | None = None) -> bool:
        """Whether the pending updates wait instead of merging: this merger has never merged, one of them is
        based on a version newer than any it has read back, and the first such came less than
        :data:`AWAIT_BASE_S` ago.  A new job over a topic that holds a model (a warm start, a resharded model)
        reads the newest version in its replicas and in its merger at the same time: a merger that merged before
        reading it would start from an empty model (and never take it)."""
        if self.merges or self.held_since is None or all(u.base_version <= self.version for u in self.pending):
            return False
        return (time.time() if now is None else now) - self.held_since < AWAIT_BASE_S

    def refuse(self, replica: ReplicaId, seq: int) -> None:
        """An update that arrived but cannot be merged (undecodable): acknowledged, counted, and published in
        ``meta.refused_updates`` with the next version, so that its replica sends its learning again."""
        self.acked[replica] = max(self.acked.get(replica, 0), seq)
        self.refused += 1
        self.refused_updates[replica] = (self.refused_updates.get(replica, []) + [seq])[-_REFUSED_MEMORY:]

    def staleness(self, update: ReplicaUpdate) -> int:
        return self.compensator.staleness(update.base_version, update.replica, self.version)

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
        model, applied, added, before = self._combine(updates, policy)
        if model is None:  # some update poisons the merge: keep, in order, each one the merge survives
            used = []
            for u in updates:
                (used if self._combine(used + [u], policy)[0] is not None else refused).append(u)
            model, applied, added, before = self._combine(used, policy) if used else (None, {}, [], None)
        now = time.time() if now is None else now
        acked = dict(self.acked)
        for u in updates:
            acked[u.replica] = max(acked.get(u.replica, 0), u.seq)
        refused_updates = {r: list(s) for r, s in self.refused_updates.items()}
        for u in refused:
            refused_updates[u.replica] = (refused_updates.get(u.replica, []) + [u.seq])[-_REFUSED_MEMORY:]
        doc = None
        gate = copy.deepcopy(self.gate)
        # (merged in place: ``params`` holds the merged entries of the features the merge touched, and the dense part)
        params = models.get_params(model) if model is not None else None
        touched = numeric.keys_of(added)
        patch = self._patch(params, added) if model is not None else None
        if model is not None and patch is None and before is not None:  # a whole slice: the merged slice, whole
            whole = numeric.copy_tree(self.params)
            numeric.write_at(whole, params, touched)
            model = models.set_params(self.template.clone(), whole, trusted=True)
        if model is not None:
            version = next_version(self.version, now)
            held = None
            if gate is not None:
                for u in used:
                    gate.observe(u.loss, u.events, u.base_version)
                held = gate.decide(version)
            counts: dict = {}
            for u in used:
                counts[u.replica] = counts.get(u.replica, 0) + u.events
            events = self.events + sum(counts.values())
            doc = models.to_wire(
                model if patch is None else models.set_params(self.template.clone(), patch),
                name=self.name,
                version=version,
                counts=counts,
                created_at=now,
                events=events,
                policy=policy.name,
                parent=self.version,
                sequence=self.merges + 1,
                acked=acked,
                staleness=max(self.staleness(u) for u in used),
                refused=self.refused + len(refused),
                refused_updates=refused_updates,
                **({"held": held, "served": gate.served_version, "held_back": gate.held_back}
                   if gate is not None else {}),
                **({"shard": self.shard, "shards": self.shards, "epoch": self.epoch} if self.shards > 1 else {}),
                **({"patch_of": self.version} if patch is not None else {}),
            )
        # the document exists (or every update was refused): only now does the state change
        self.pending = []
        self.acked = acked
        self.refused += len(refused)
        self.refused_updates = refused_updates
        if doc is None:
            return None
        parent, self.version = self.version, doc["meta"]["version"]
        self.gate = gate
        self.merges += 1
        self.events = doc["meta"]["events"]
        self.since_whole = 0 if patch is None else self.since_whole + 1
        self.patched_entries = 0 if patch is None else \
            getattr(self, "patched_entries", 0) + sharding.entries(self.template, patch)
        replicas = frozenset(u.replica for u in used)
        if before is None:
            self.params = params
            self.compensator.remember(self.version, self.params, replicas, applied, self.merges, touched=touched)
        else:
            numeric.write_at(self.params, params, touched)
            self.compensator.remember_undo(self.version, parent, before, replicas, applied, self.merges, touched)
        return doc

    def _patch(self, params: dict, added: list) -> dict | None:
        """The slice to publish as a patch on this merger's version (:func:`~riverflink.models.sharding.touched`),
        or ``None`` when it goes out whole: not sharded, patches off, the first, or a patch that would hold half
        the slice's entries or more; and once ``patches`` patches have gone out since the last whole slice and
        held together as many entries as the slice.  A reader replaying a chain (a whole slice and its patches)
        then reads at most about twice the slice, and whole slices, which grow with the model, go out the
        rarer the larger the model is against what a merge touches."""
        if self.shards <= 1 or self.patches <= 0 or self.since_whole is None or self.version <= 0:
            return None
        size = self._entries_after(params)
        if self.since_whole >= self.patches and getattr(self, "patched_entries", size) >= size:
            return None
        patch = sharding.touched(self.template, params, added)
        if 2 * sharding.entries(self.template, patch) >= size:
            return None
        return patch

    @property
    def in_place(self) -> bool:
        """A sharded merger merges in place: it computes the merged entries of the features a merge touches
        alone, writes them into its slice once the document exists, and keeps undo records of the entries it
        overwrote (``Compensator.remember_undo``) instead of whole versions; the work and the memory of a merge
        follow what it touches, not the slice's size.  (Tested equal to merging whole slices.)"""
        return self.shards > 1

    def _entries_after(self, merged: dict) -> int:
        """The slice's entries once ``merged`` (the merge's result: whole, or its touched entries when merged in
        place) is written into it."""
        if not self.in_place:
            return sharding.entries(self.template, merged)
        new = 0
        stack = [(merged, self.params)]
        while stack:
            part, held = stack.pop()
            if isinstance(part, list):
                stack.extend(zip(part, held))
                continue
            for name, value in part.items():
                if isinstance(value, dict):
                    have = held.get(name, {})
                    new += sum(1 for k in value if k not in have)
                elif isinstance(value, list):
                    stack.append((value, held[name]))
        return sharding.entries(self.template, self.params) + new

    def _combine(self, updates: list, policy: MergePolicy) -> tuple[Any, dict, list, dict | None]:
        """``(merged model, replica -> the sum of its updates' raw deltas, every delta the merge added, the
        entries the merge overwrites)``; ``(None, {}, [], None)`` if not finite.  Merged in place
        (:attr:`in_place`): the model holds the touched features' entries alone, and the last item their
        entries before the merge (with the dense part); otherwise the whole merged slice, and ``None``."""
        by_replica: dict = {}
        for u in updates:
            by_replica.setdefault(u.replica, []).append(u)
        family = models.adapter_for(self.template)
        # a replica's consecutive updates add up to one delta; the policy then combines replicas
        corrected, raw = {}, {}
        for r, us in by_replica.items():
            earlier: list = []
            for u in us:
                earlier.append((u.delta, self.compensator.correct(u, self.params, self.version, earlier)))
            corrected[r] = family.sum_deltas(self.template, [c for _, c in earlier])
            raw[r] = family.sum_deltas(self.template, [d for d, _ in earlier])
        weights = [sum(u.events for u in us) for us in by_replica.values()]
        # parameters derived from others (FTRL's weights from z and n) are recomputed where stale updates touched them
        stale = [u.delta for u in updates if self.staleness(u) > 0]
        added = [*corrected.values(), *stale]
        before = numeric.restrict(self.params, numeric.keys_of(added)) if self.in_place else None
        try:
            model = models.apply_deltas(self.template, self.params if before is None else before,
                                        list(corrected.values()), weights, policy, derive_from=stale)
        except (ValueError, OverflowError):
            return None, {}, [], None
        family.grow(model)  # the structure is the merger's to decide (a tree's splits), after the statistics
        return model, raw, added, before

    def adopt(self, meta: ModelMeta, params: Any) -> bool:
        """See a validated version read back from ``models``; ``True`` when it changed this state.

        ``params`` is a callable giving that version's parameters (called only
        when they are taken).  A newer version always raises the version
        counter.  Its parameters are taken only while this merger has never
        merged: afterwards the merger's own (checkpointed) parameters are the
        truth, and a newer document can only be one it published before a
        failover.  A patch (``meta.patch_of``) or a page of a slice
        (``meta.pages`` > 1) raises the counter but holds no whole slice to
        take (a new job over a topic whose newest slice is paged starts its
        slice afresh).
        """
        version = meta.version
        if version is None or version <= self.version or (meta.shard, meta.shards) != (self.shard, self.shards):
            return False  # (another shard's slice, or another shard count's, is not this merger's to adopt)
        self.version = version
        self.since_whole = None  # what readers hold is not known: the next slice goes out whole
        if self.merges == 0 and meta.patch_of is None and meta.pages <= 1:
            self.params = params()
            self.compensator.restart_from(version, self.params)
            self.events = meta.events if meta.events is not None else self.events
            self.acked = dict(meta.acked)
        return True


#: how long a merger that has never merged holds updates based on a version it has not read (:meth:`MergerState.awaits_base`)
AWAIT_BASE_S = 30.0


def next_version(previous: int, now: float | None = None) -> int:
    """``max(previous + 1, now in ms)``: strictly increasing, and ahead of anything published before a restart.

    >>> next_version(5, now=0.002)
    6
    >>> next_version(5, now=1700000000.0)
    1700000000000
    """
    now = time.time() if now is None else now
    return max(previous + 1, int(now * 1000))
