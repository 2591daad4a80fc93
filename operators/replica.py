"""One River replica of the training job: predict-then-learn, sync, rebase.  Pure Python.

The replica measures what it learned from a *snapshot*: its parameters at its
last sync or rebase.  A sync hands the merger ``delta(model, snapshot)`` and
the number of events behind it, then moves the snapshot forward, so every
event reaches the merger exactly once.  A rebase onto merged version ``v``
replays the learning not yet sent onto the merged parameters
(:func:`models.rebase`), so nothing is lost or counted twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from river.utils import inspect as river_inspect

from riverflink import models
from riverflink.models.sync import SyncPolicy, learned_distance


def is_clusterer(model: Any) -> bool:
    """Clusterers (KMeans) learn from ``x`` alone; everything else needs a label."""
    return river_inspect.isclusterer(model)


def predict(model: Any, x: dict) -> tuple[Any, dict | None]:
    """``(prediction, probabilities or None)``; probabilities for classifiers only."""
    if river_inspect.isclassifier(model):
        proba = model.predict_proba_one(x)
        return (max(proba, key=proba.get) if proba else None), proba
    return model.predict_one(x), None


@dataclass(frozen=True)
class ReplicaUpdate:
    """What a replica sends the merger."""

    model_name: str
    replica: int
    base_version: int
    delta: dict
    events: int
    sent_at: float


@dataclass
class Replica:
    model: Any
    base_version: int = 0
    snapshot: dict = field(default_factory=dict)
    since_sync: int = 0
    first_unsynced_at: float | None = None

    @classmethod
    def fresh(cls, template: Any) -> "Replica":
        """An untrained replica at version 0; it rebases once a merged model arrives."""
        model = template.clone()
        return cls(model=model, snapshot=models.get_params(model))

    def predict_then_learn(self, x: dict, y: Any) -> tuple[Any, dict | None]:
        """Progressive validation: the prediction made *before* learning ``(x, y)``.

        Classifiers also return their probabilities.  A clusterer predicts the
        cluster of ``x`` and learns ``x``; ``y`` is ignored.
        """
        y_pred, proba = predict(self.model, x)
        if is_clusterer(self.model):
            self.model.learn_one(x)
        else:
            self.model.learn_one(x, y)
        self.since_sync += 1
        if self.first_unsynced_at is None:
            self.first_unsynced_at = time.time()
        return y_pred, proba

    def sync_due(self, policy: SyncPolicy, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        waited = now - self.first_unsynced_at if self.first_unsynced_at is not None else 0.0
        return policy.due(self.since_sync, waited, lambda: learned_distance(self.model, self.snapshot))

    def take_update(self, model_name: str, replica: int) -> ReplicaUpdate:
        params = models.get_params(self.model)
        update = ReplicaUpdate(
            model_name=model_name,
            replica=replica,
            base_version=self.base_version,
            delta=models.adapter_for(self.model).delta(self.model, params, self.snapshot),
            events=self.since_sync,
            sent_at=time.time(),
        )
        self.snapshot = params
        self.since_sync = 0
        self.first_unsynced_at = None
        return update

    def rebase(self, merged_params: dict, version: int) -> None:
        """Adopt merged ``version`` (newer than ours), keeping unsent learning."""
        models.rebase(self.model, merged_params, version, keep_since=self.snapshot)
        self.base_version = version
        # the replayed unsent learning is still unsent: measure future deltas from the merged point
        self.snapshot = merged_params
