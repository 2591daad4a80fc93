"""Sync policies: when a replica sends what it learned to the merger.

A replica checks its policy after every micro-batch (syncing more often than
the micro-batch only multiplies messages: the merged model cannot reach the
replicas faster than one batch anyway).  It syncs when any enabled trigger
fires:

* ``every_events``: it has learned S events since its last sync;
* ``every_seconds``: T seconds have passed since its first unsynced event
  (so that a quiet replica still contributes);
* ``divergence``: its learned parameters moved more than this fraction of
  their norm at the last rebase (dynamic averaging, Kamp et al., made
  *relative* so that one threshold fits models of any scale: an absolute L2
  distance that suits a classifier's weights is meaningless for a regressor
  whose weights are 100 times larger);
* ``on_drift``: a River drift detector (ADWIN) watching the replica's
  progressive loss signals a change: the replica syncs at once so that the
  other replicas learn the new concept from it.

``every_events`` counts events since the last sync; with ``divergence`` set it
acts as the longest a replica stays silent.

``max_staleness`` bounds the replica's *clock gap* (stale synchronous
parallel, Ho et al., NIPS 2013): its syncs that the merged version it is
based on does not yet hold on every shard (the slowest shard's merged clock
against its own).  A replica at the bound holds a due sync and learns on: what
it learns goes out with its next update, so nothing waits and nothing blocks
(no cyclic backpressure through the loop).  After ``stale_send_s`` seconds it
sends anyway (a merger that never answers must not silence it for good), and
that counts as a staleness violation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from riverflink.models import numeric
from riverflink.models.adapter import adapter_for

#: relative thresholds are taken against at least this norm (an untrained model has norm 0)
NORM_FLOOR = 1.0


@dataclass(frozen=True)
class SyncPolicy:
    """
    >>> SyncPolicy(every_events=100).due(n_since_sync=100)
    True
    >>> SyncPolicy(every_events=100).due(n_since_sync=99)
    False
    >>> SyncPolicy(every_events=1000, every_seconds=None, divergence=0.05).due(50, distance=lambda: 0.2, scale=10.0)
    False
    >>> SyncPolicy(every_events=1000, every_seconds=None, divergence=0.05).due(50, distance=lambda: 0.6, scale=10.0)
    True
    """

    every_events: int | None = 100
    every_seconds: float | None = 1.0
    divergence: float | None = None
    on_drift: bool = False
    #: the longest clock gap a sync may open (None: no bound, the gap is only measured)
    max_staleness: int | None = None
    stale_send_s: float = 30.0

    def __post_init__(self) -> None:
        if self.every_events is not None and self.every_events < 1:
            raise ValueError(f"sync every_events must be >= 1, got {self.every_events}")
        if self.every_seconds is not None and self.every_seconds <= 0:
            raise ValueError(f"sync every_seconds must be > 0, got {self.every_seconds}")
        if self.divergence is not None and self.divergence <= 0:
            raise ValueError(f"sync divergence must be > 0, got {self.divergence}")
        if self.max_staleness is not None and self.max_staleness < 1:
            raise ValueError(f"max staleness must be >= 1 sync, got {self.max_staleness}")
        if self.every_events is None and self.every_seconds is None and self.divergence is None:
            raise ValueError("a sync policy needs at least one trigger")

    def holds(self, clock_gap: int, seconds_since_first: float) -> bool | None:
        """Whether a due sync waits for the merged model to catch up: ``True`` (hold it), ``False`` (send it) or
        ``None`` (send it, past ``stale_send_s``: a staleness violation).

        >>> p = SyncPolicy(max_staleness=2, stale_send_s=30.0)
        >>> p.holds(1, 5.0), p.holds(2, 5.0), p.holds(2, 31.0), SyncPolicy().holds(9, 0.0)
        (False, True, None, False)
        """
        if self.max_staleness is None or clock_gap < self.max_staleness:
            return False
        return True if seconds_since_first < self.stale_send_s else None

    def due(self, n_since_sync: int, seconds_since_first: float = 0.0,
            distance: Callable[[], float] | None = None, scale: float = 0.0, drift: bool = False) -> bool:
        """Whether to sync now.  ``distance`` is called only when the other triggers did not fire."""
        if n_since_sync <= 0:
            return False
        if self.every_events is not None and n_since_sync >= self.every_events:
            return True
        if self.every_seconds is not None and seconds_since_first >= self.every_seconds:
            return True
        if self.on_drift and drift:
            return True
        if self.divergence is not None and distance is not None:
            return distance() > self.divergence * max(scale, NORM_FLOOR)
        return False


def learned_distance(model: Any, since: dict, journaled: bool = False) -> float:
    """L2 norm of the learned (policy-governed) parameters' change since ``since`` (``journaled``: the snapshot
    ``model``'s journal was cleared at, :mod:`~riverflink.models.journal`)."""
    delta = adapter_for(model).delta(model, adapter_for(model).get_params(model), since, journaled)
    return math.sqrt(_learned_sq(model, delta))


def learned_norm(model: Any, params: dict) -> float:
    """L2 norm of the learned leaves of ``params`` (a parameter tree of ``model``'s family)."""
    return math.sqrt(_learned_sq(model, params))


def learned_dot(model: Any, a: dict, b: dict) -> float:
    """Dot product of the learned leaves of two delta trees of ``model``'s family."""
    from river import compose

    if isinstance(model, compose.Pipeline):
        return sum(learned_dot(s, x, y) for s, x, y in zip(model.steps.values(), a["steps"], b["steps"]))
    kinds = adapter_for(model).kinds
    return sum(numeric.dot(a[k], b.get(k)) for k, v in a.items() if kinds.get(k) == numeric.LEARNED)


def _learned_sq(model: Any, delta: dict) -> float:
    from river import compose

    if isinstance(model, compose.Pipeline):
        return sum(_learned_sq(s, d) for s, d in zip(model.steps.values(), delta["steps"]))
    kinds = adapter_for(model).kinds
    return sum(numeric.sq_norm(v) for k, v in delta.items() if kinds.get(k) == numeric.LEARNED)
