"""Scoring one prediction, and progressive-validation sums.  Pure Python.

Used by the replicas (predict-then-learn), the serving job, ``LiveModel``'s
callers, the benches and the demo, so that "accuracy" and "MAE" mean one
thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from river.utils import inspect as river_inspect

from riverflink.models.rating import Rating


def predict(model: Any, x: dict, classifier: bool | None = None) -> tuple[Any, dict | None]:
    """``(prediction, probabilities or None)``; probabilities for classifiers only.

    ``classifier`` may be passed by callers that know it, to skip River's type inspection.

    >>> from river import linear_model
    >>> predict(linear_model.LinearRegression(), {"a": 1.0})
    (0.0, None)

    A recommender's input is a :class:`~riverflink.models.rating.Rating`; it answers River's
    ``predict_one(user, item, x)``.
    """
    if type(x) is Rating:
        return model.predict_one(x.user, x.item, x.context), None
    if river_inspect.isclassifier(model) if classifier is None else classifier:
        proba = model.predict_proba_one(x)
        return (max(proba, key=proba.get) if proba else None), proba
    return model.predict_one(x), None


def learn(model: Any, x: Any, y: Any) -> None:
    """River's ``learn_one`` for ``x``: ``(x, y)``, or a recommender's ``(user, item, y, context)`` for a
    :class:`~riverflink.models.rating.Rating`."""
    if type(x) is Rating:
        model.learn_one(x.user, x.item, y, x.context)
    else:
        model.learn_one(x, y)


@dataclass
class Score:
    """Progressive-validation sums over some events: correct answers (classifiers) or errors (regressors)."""

    events: int = 0
    correct: int = 0
    abs_error: float = 0.0
    sq_error: float = 0.0

    def add(self, task: str, y_pred: Any, y: Any) -> None:
        self.events += 1
        if task in ("binary", "multiclass"):
            self.correct += int(y_pred == y or (task == "binary" and y_pred is not None and bool(y_pred) == bool(y)))
        elif task == "regression":
            err = float(y) - float(y_pred or 0.0)
            self.abs_error += abs(err)
            self.sq_error += err * err

    def merge(self, other: "Score") -> None:
        self.events += other.events
        self.correct += other.correct
        self.abs_error += other.abs_error
        self.sq_error += other.sq_error

    def loss(self, task: str) -> float | None:
        """Error rate (classifiers) or mean absolute error (regressors) over these events."""
        if not self.events or task == "clustering":
            return None
        if task == "regression":
            return self.abs_error / self.events
        return 1.0 - self.correct / self.events

    def metric(self, task: str) -> float | None:
        """Accuracy (classifiers) or MAE (regressors): what the demo, report and benches print."""
        loss = self.loss(task)
        return None if loss is None else (loss if task == "regression" else 1.0 - loss)


def river_baseline(model: Any, events: Iterable[tuple[dict, Any]], warmup: int = 0) -> tuple[Score, Score, list]:
    """Single-node River, predict-then-learn one event at a time: the baseline every figure is compared with.

    Returns ``(score over every event, score from event ``warmup`` on, the predictions in order)``.
    ``model`` is trained in place.

    >>> from river import linear_model
    >>> whole, late, preds = river_baseline(linear_model.LogisticRegression(), [({"a": 1.0}, True)] * 3, warmup=1)
    >>> whole.events, late.events, len(preds)
    (3, 2, 3)
    """
    from riverflink.models.labels import task_of

    task = task_of(model)
    classifier = task in ("binary", "multiclass")
    whole, late, preds = Score(), Score(), []
    for i, (x, y) in enumerate(events):
        y_pred, _ = predict(model, x, classifier)
        whole.add(task, y_pred, y)
        if i >= warmup:
            late.add(task, y_pred, y)
        preds.append(y_pred)
        learn(model, x, y)
    return whole, late, preds
