"""The features a replica holds (``--working-set W``): at most W, the least recently used leave first.  Pure Python.

A replica with a working set keeps the per-feature entries (weight and optimizer state) of at most ``capacity``
features; any other feature's merged value lives on its merger shard and is *pulled* when an event needs it
(:mod:`riverflink.operators.pulls`).  After each batch the replica lets go of

* the least recently used features beyond ``capacity`` (*evicted*), and
* with ``expire_after`` set, every feature no event of this replica has used for that many events (*expired*),

except the features whose learning is not yet held by the merged model (unsent, or in an update in flight):
those stay until a merged version holds them, so eviction never loses learning.  A working set can therefore
exceed ``capacity`` by the features of the replica's in-flight updates and its unsent learning (at most the
features of ``max_staleness + 1`` sync periods' events).

>>> ws = WorkingSet(WorkingSetSettings(capacity=2))
>>> ws.use(["a", "b"], events=1); ws.use(["c"], events=1)
>>> sorted(ws.features), ws.leaving(protected=set())
(['a', 'b', 'c'], ['a'])
>>> ws.use(["a"], events=1); ws.leaving(protected={"b"}), ws.evicted
(['c'], 2)
>>> expiring = WorkingSet(WorkingSetSettings(capacity=10, expire_after=3))
>>> expiring.use(["old"], events=1); expiring.use(["new"], events=5); expiring.leaving(set()), expiring.expired
(['old'], 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable


@dataclass(frozen=True)
class WorkingSetSettings:
    """How a replica's working set and its pulls are bounded (``riverflink train --working-set``)."""

    #: the most features a replica holds (beyond it: the features its unsent and in-flight learning touches)
    capacity: int
    #: a feature no event used for this many of the replica's events leaves (None: only capacity evicts)
    expire_after: int | None = None
    #: events waiting for pulls, at most; beyond it the oldest learn at once on what the replica holds (counted)
    buffer: int = 2_000
    #: unanswered pull requests per replica (the pull limiter); features of later events wait for a free slot
    max_pulls: int = 8
    #: a pull unanswered this long is given up: its events learn on what the replica holds (counted)
    pull_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"a working set holds at least 1 feature, got {self.capacity}")
        if self.expire_after is not None and self.expire_after < 1:
            raise ValueError(f"features expire after at least 1 event, got {self.expire_after}")
        if self.buffer < 1 or self.max_pulls < 1 or self.pull_timeout_s <= 0:
            raise ValueError("the pull buffer, the pull limiter and the pull timeout must be positive")


@dataclass
class WorkingSet:
    """The features a replica holds, least recently used first, and what left them."""

    settings: WorkingSetSettings
    #: feature -> the replica's event clock when an event last used it (insertion order: least recent first)
    used: dict = field(default_factory=dict)
    #: events this replica has learned (the clock ``expire_after`` counts in)
    clock: int = 0
    evicted: int = 0
    expired: int = 0

    @property
    def features(self) -> set:
        return set(self.used)

    def __contains__(self, feature) -> bool:
        return feature in self.used

    def __len__(self) -> int:
        return len(self.used)

    def use(self, features: Iterable, events: int = 0) -> None:
        """``events`` more events were learned, using ``features`` (they become the most recent)."""
        self.clock += events
        used, now = self.used, self.clock
        for f in features:
            used.pop(f, None)
            used[f] = now

    def leaving(self, protected: set) -> list:
        """The features that leave now (removed from the set and counted): beyond ``capacity``, least recent
        first, and those unused for ``expire_after`` events; never one of ``protected``."""
        expire = self.settings.expire_after
        excess = len(self.used) - self.settings.capacity
        out: list = []
        for f, at in self.used.items():
            old = expire is not None and self.clock - at >= expire
            if not old and len(out) >= excess:
                break  # (the rest were used more recently)
            if f in protected:
                continue
            out.append(f)
            if old:
                self.expired += 1
            else:
                self.evicted += 1
        for f in out:
            del self.used[f]
        return out
