"""The merger's state machine: pending replica updates -> versioned model documents.  Pure Python.

Guarantees:

* every update is merged exactly once (into the next version after it arrives);
* versions strictly increase on the topic, across failures and restarts.  A
  version is ``max(previous + 1, now in ms)``: after a failover the merger
  resumes from its checkpointed state, but versions it had already published
  (the sink is at-least-once) are older than any it publishes next.  Any
  higher version read back from ``models`` also raises the counter;
* a merger that has never merged (a new job without a savepoint) adopts the
  newest model on the topic as its starting point (:meth:`MergerState.adopt`);
* every document records the events each replica contributed to it and the
  running total of events merged into the model.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from riverflink import models
from riverflink.models.policies import MergePolicy
from riverflink.operators.replica import ReplicaUpdate


@dataclass
class MergerState:
    name: str
    template: Any
    expected_replicas: int = 1
    version: int = 0
    params: dict | None = None
    events: int = 0
    pending: list = field(default_factory=list)
    replicas_seen: set = field(default_factory=set)
    merges: int = 0

    def __post_init__(self) -> None:
        if self.params is None:
            self.params = models.get_params(self.template)

    def add(self, update: ReplicaUpdate) -> bool:
        """Queue ``update``; ``True`` once every expected replica (and every one seen) has one pending."""
        self.pending.append(update)
        self.replicas_seen.add(update.replica)
        waiting_for = len(self.replicas_seen | set(range(self.expected_replicas)))
        return len({u.replica for u in self.pending}) >= waiting_for

    def merge(self, policy: MergePolicy) -> dict:
        """Merge the pending updates into the next version; returns its document."""
        if not self.pending:
            raise ValueError("nothing to merge")
        updates, self.pending = self.pending, []
        by_replica: dict = {}
        for u in updates:
            by_replica.setdefault(u.replica, []).append(u)
        adapter = models.adapter_for(self.template)
        # a replica's consecutive updates add up to one delta; the policy then combines replicas
        deltas = [adapter.sum_deltas(self.template, [u.delta for u in us]) for us in by_replica.values()]
        weights = [sum(u.events for u in us) for us in by_replica.values()]
        model = models.apply_deltas(self.template, self.params, deltas, weights, policy)
        previous = self.version
        self.version = next_version(previous)
        self.merges += 1
        self.params = models.get_params(model)
        counts = dict(zip(by_replica, weights))
        self.events += sum(counts.values())
        return models.to_wire(
            model,
            name=self.name,
            version=self.version,
            counts=counts,
            created_at=time.time(),
            events=self.events,
            policy=policy.name,
            parent=previous,
            sequence=self.merges,
        )

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
            self.events = int(doc["meta"].get("events", self.events))
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


def read_doc(text: str) -> dict | None:
    """Parse a ``models`` record; ``None`` for anything that is not a model document."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("schema") != models.SCHEMA or "meta" not in doc:
        return None
    return doc
