"""Sync policies: when a replica sends what it learned to the merger.

A replica syncs when any enabled trigger fires:

* ``every_events``: it has learned S events since its last sync;
* ``every_seconds``: T seconds have passed since its first unsynced event
  (so that a quiet replica still contributes);
* ``divergence``: its learned parameters moved more than this L2 distance
  from its last sync point (dynamic averaging, Kamp et al.): bursts of
  learning sync early, quiet periods send nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from riverflink.models import numeric
from riverflink.models.adapter import adapter_for


@dataclass(frozen=True)
class SyncPolicy:
    """
    >>> SyncPolicy(every_events=100).due(n_since_sync=100)
    True
    >>> SyncPolicy(every_events=100).due(n_since_sync=99)
    False
    """

    every_events: int | None = 100
    every_seconds: float | None = 1.0
    divergence: float | None = None
    check_divergence_every: int = 10

    def __post_init__(self) -> None:
        if self.every_events is not None and self.every_events < 1:
            raise ValueError(f"sync every_events must be >= 1, got {self.every_events}")
        if self.every_seconds is not None and self.every_seconds <= 0:
            raise ValueError(f"sync every_seconds must be > 0, got {self.every_seconds}")
        if self.divergence is not None and self.divergence <= 0:
            raise ValueError(f"sync divergence must be > 0, got {self.divergence}")
        if self.every_events is None and self.every_seconds is None and self.divergence is None:
            raise ValueError("a sync policy needs at least one trigger")

    def due(self, n_since_sync: int, seconds_since_first: float = 0.0, distance: "callable | None" = None) -> bool:
        if n_since_sync <= 0:
            return False
        if self.every_events is not None and n_since_sync >= self.every_events:
            return True
        if self.every_seconds is not None and seconds_since_first >= self.every_seconds:
            return True
        if self.divergence is not None and distance is not None and n_since_sync % self.check_divergence_every == 0:
            return distance() > self.divergence
        return False


def learned_distance(model: Any, since: dict) -> float:
    """L2 norm of the learned (policy-governed) parameters' change since ``since``."""
    delta = adapter_for(model).delta(model, adapter_for(model).get_params(model), since)
    return math.sqrt(_learned_sq(model, delta))


def _learned_sq(model: Any, delta: dict) -> float:
    from river import compose

    if isinstance(model, compose.Pipeline):
        return sum(_learned_sq(s, d) for s, d in zip(model.steps.values(), delta["steps"]))
    kinds = adapter_for(model).kinds
    return sum(numeric.sq_norm(v) for k, v in delta.items() if kinds.get(k) == numeric.LEARNED)
