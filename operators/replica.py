"""One River replica of the training job: learn a micro-batch, sync, rebase.  Pure Python.

Contract
--------
* **Learning.** :meth:`Replica.learn_batch` takes validated ``(x, y)`` pairs
  and scores each event *before* learning it (progressive validation):

  - ``exact``: River's ``predict_one`` / ``predict_proba_one`` then
    ``learn_one``, event by event; identical to single-node River;
  - ``batch``: the whole micro-batch is predicted with the model as it stood
    at the batch's start (``predict_proba_many`` / ``predict_many``), then
    learned by one ``learn_many`` call.  River's ``learn_many`` takes one step
    on the batch's *mean* gradient; the replica passes the batch size as the
    sample weight, so one call moves the weights about as far as the events
    learned one by one would (a sum of gradients taken at the batch start).

* **What a replica sends.** It measures what it learned from a *snapshot*
  (its parameters when it last synced or rebased).  :meth:`take_update` hands
  the merger ``delta(model, snapshot)`` with a per-replica sequence number,
  moves the snapshot forward and keeps the update *in flight* until a merged
  version acknowledges it (``meta.acked[replica] >= seq``).  Every event thus
  reaches the merger exactly once.

* **Rebasing never drops the replica's own learning.**  :meth:`rebase` onto
  merged version ``v`` sets the model to ``merged + (in-flight updates that
  v does not hold yet) + (learning not sent yet)``.  Without the in-flight
  part, a replica that rebases onto a version merged before its last update
  arrived would lose that update's learning until the next version.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from river.utils import inspect as river_inspect

from riverflink import models
from riverflink.models.labels import task_of
from riverflink.models.policies import MergePolicy
from riverflink.models.sync import SyncPolicy, learned_distance, learned_norm

MODES = ("exact", "batch")
#: in ``batch`` mode a replica still learns its first this many events one by one: an untrained
#: model predicting a whole batch at once costs most of batch mode's accuracy loss (bench/batch_mode.py)
BATCH_WARMUP = 500
#: replays of in-flight updates are exact sums, whatever the merge policy
_REPLAY = MergePolicy("delta", clip=math.inf)


def predict(model: Any, x: dict, classifier: bool | None = None) -> tuple[Any, dict | None]:
    """``(prediction, probabilities or None)``; probabilities for classifiers only.

    ``classifier`` may be passed by callers that know it, to skip River's type inspection.
    """
    if river_inspect.isclassifier(model) if classifier is None else classifier:
        proba = model.predict_proba_one(x)
        return (max(proba, key=proba.get) if proba else None), proba
    return model.predict_one(x), None


def supports_batch(model: Any) -> bool:
    """True when every stage of ``model`` has River's ``learn_many`` and the final one predicts many."""
    from riverflink.models.labels import final_step
    from river import compose

    stages = list(model.steps.values()) if isinstance(model, compose.Pipeline) else [model]
    final = final_step(model)
    predicts = hasattr(final, "predict_proba_many") if river_inspect.isclassifier(model) else hasattr(final, "predict_many")
    return all(hasattr(s, "learn_many") for s in stages) and predicts


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


@dataclass(frozen=True)
class ReplicaUpdate:
    """What a replica sends the merger."""

    model_name: str
    replica: int
    base_version: int
    delta: dict
    events: int
    sent_at: float
    seq: int = 0
    #: progressive loss of the replica over these events (error rate or MAE); None if unknown
    loss: float | None = None
    #: estimated fraction of a shared error that survives this many events of learning (see ContractionProbe)
    rho: float | None = None
    #: estimated fraction of the update's learned step that is on errors shared with other replicas
    shared: float | None = None
    #: delay compensation: the fraction of a parameter offset these events' learning would have undone
    kappa: float | None = None


@dataclass
class Replica:
    model: Any
    base_version: int = 0
    snapshot: dict = field(default_factory=dict)
    since_sync: int = 0
    first_unsynced_at: float | None = None
    seq: int = 0
    #: (seq, delta) of updates sent but not yet held by the version this replica is based on
    in_flight: list = field(default_factory=list)
    #: progressive score since the last sync (sent with the update)
    unsynced_score: Score = field(default_factory=Score)
    #: learned-parameter norm at the last rebase (scale for relative divergence thresholds)
    base_norm: float = 0.0
    #: ADWIN over the replica's per-chunk loss, when the sync policy syncs on drift
    detector: Any = None
    #: summed loss curvature at the unsynced events' predictions (delay compensation)
    curvature: float = 0.0
    #: parameters half-way through the unsynced period (curvature probe)
    mid: dict | None = None
    probe: "ContractionProbe" = field(default_factory=lambda: ContractionProbe())
    #: the features this replica may teach the model (set by the training job; None: unbounded)
    features: Any = None
    #: events this replica has learned itself (ends the batch-mode warm-up, BATCH_WARMUP)
    events_learned: int = 0

    @classmethod
    def fresh(cls, template: Any) -> "Replica":
        """An untrained replica at version 0; it rebases once a merged model arrives."""
        model = template.clone()
        return cls(model=model, snapshot=models.get_params(model))

    @functools.cached_property
    def task(self) -> str:
        """The model's task (fixed for a replica's life; computed once)."""
        return task_of(self.model)

    @functools.cached_property
    def _loss(self) -> str:
        from riverflink.models.labels import final_step

        return type(getattr(final_step(self.model), "loss", None)).__name__

    def _step(self, x: dict, y: Any) -> tuple[Any, dict | None]:
        """Predict ``x``, then learn ``(x, y)``; counts the event and its loss curvature (no scoring)."""
        task = self.task
        y_pred, proba = predict(self.model, x, task in ("binary", "multiclass"))
        if task == "clustering":
            self.model.learn_one(x)
        else:
            self.model.learn_one(x, y)
        self.curvature += _curvature(self._loss, proba)
        self._learned(1)
        return y_pred, proba

    # -- learning -----------------------------------------------------------------
    def predict_then_learn(self, x: dict, y: Any) -> tuple[Any, dict | None]:
        """Progressive validation of one event: the prediction made *before* learning ``(x, y)``.

        Classifiers also return their probabilities.  A clusterer predicts the
        cluster of ``x`` and learns ``x``; ``y`` is ignored.
        """
        y_pred, proba = self._step(x, y)
        self.unsynced_score.add(self.task, y_pred, y)
        return y_pred, proba

    def learn_batch(self, xs: Sequence[dict], ys: Sequence[Any], mode: str = "exact",
                    keep_predictions: bool = False) -> tuple[Score, list]:
        """Predict-then-learn a micro-batch; returns its :class:`Score` and, if asked, the predictions.

        ``batch`` mode predicts every event with the model as it stood at the
        batch's start, then learns them in one ``learn_many`` call (see the
        module docstring), after a warm-up of :data:`BATCH_WARMUP` events
        learned one by one; ``exact`` is event by event.  Predictions are
        ``(y_pred, proba)`` pairs.
        """
        if mode not in MODES:
            raise ValueError(f"learning mode must be one of {', '.join(MODES)}, got {mode!r}")
        score, task, out = Score(), self.task, []
        warm = BATCH_WARMUP - self.events_learned
        if mode == "batch" and warm > 0 and len(xs) >= 2:  # the warm-up: one by one, then batches
            first, first_out = self.learn_batch(xs[:warm], ys[:warm], "exact", keep_predictions)
            if len(xs) <= warm:
                return first, first_out
            rest, rest_out = self.learn_batch(xs[warm:], ys[warm:], mode, keep_predictions)
            first.merge(rest)
            return first, first_out + rest_out
        if mode == "exact" or len(xs) < 2:
            for x, y in zip(xs, ys):
                y_pred, proba = self._step(x, y)
                score.add(task, y_pred, y)
                if keep_predictions:
                    out.append((y_pred, proba))
            self.unsynced_score.merge(score)
            return score, out
        import pandas as pd

        X = feature_frame(xs)
        preds = self._predict_many(X, task)
        curvature = 0.0
        for (y_pred, proba), y in zip(preds, ys):
            score.add(task, y_pred, y)
            curvature += _curvature(self._loss, proba)
        self.curvature += curvature
        if task == "clustering":
            self.model.learn_many(X)
        else:
            self.model.learn_many(X, pd.Series(ys), **_batch_weight(self.model, len(xs), curvature / len(xs), X))
        self._learned(len(xs))
        self.unsynced_score.merge(score)
        return score, (preds if keep_predictions else [])

    def _predict_many(self, X: Any, task: str) -> list:
        if task in ("binary", "multiclass"):
            proba = self.model.predict_proba_many(X)
            classes = list(proba.columns)
            if not classes:
                return [(None, {}) for _ in range(len(X))]
            values = proba.to_numpy(dtype=float)
            # the first most probable class, as max(p, key=p.get) picks it; plain dicts, not pandas' to_dict
            return [(classes[i], dict(zip(classes, row)))
                    for i, row in zip(values.argmax(axis=1).tolist(), values.tolist())]
        return [(p, None) for p in self.model.predict_many(X).tolist()]

    def _learned(self, n: int) -> None:
        self.since_sync += n
        self.events_learned += n
        if self.first_unsynced_at is None:
            self.first_unsynced_at = time.time()

    def train(self, xs: Sequence[dict], ys: Sequence[Any], *, mode: str, policy: SyncPolicy, model_name: str,
              replica: int, keep_predictions: bool = False, coalesce: bool = True) -> tuple[Score, list, list]:
        """One micro-batch, as the training job runs it: learn, check the sync policy, take updates.

        Returns ``(score, updates, predictions)``.  The policy is checked once,
        at the end of the batch (``coalesce``): a merged model reaches the
        replicas one batch later at the earliest, so updates more frequent
        than the batch only multiply messages and overlap (the first slice
        synced mid-batch; ``coalesce=False`` still does, for comparisons).
        The batch is learned in two halves of the sync period (each a
        ``learn_many`` call in ``batch`` mode), for the curvature probe.
        """
        period = max(policy.every_events or 0, len(xs) if coalesce else 0) or len(xs) or 1
        total, updates, predictions = Score(), [], []
        i = 0
        while i < len(xs):
            half = max(1, period // 2)
            to_half = half - self.since_sync if self.since_sync < half else period - self.since_sync
            n = max(1, min(len(xs) - i, to_half if to_half > 0 else len(xs) - i))
            score, preds = self.learn_batch(xs[i : i + n], ys[i : i + n], mode, keep_predictions)
            i += n
            total.merge(score)
            predictions += preds
            if self.mid is None and self.since_sync >= half:
                self.mid = models.get_params(self.model)
            drift = self._drift(score, policy)
            if (not coalesce or i >= len(xs)) and self.sync_due(policy, drift=drift):
                updates.append(self.take_update(model_name, replica))
        return total, updates, predictions

    def _drift(self, score: Score, policy: SyncPolicy) -> bool:
        """Feed the chunk's loss to an ADWIN detector (only when the policy syncs on drift)."""
        loss = score.loss(self.task)
        if not policy.on_drift or loss is None:
            return False
        if self.detector is None:
            from river import drift

            self.detector = drift.ADWIN()
        self.detector.update(loss)
        return bool(self.detector.drift_detected)

    # -- sync -----------------------------------------------------------------------
    def sync_due(self, policy: SyncPolicy, now: float | None = None, drift: bool = False) -> bool:
        now = time.time() if now is None else now
        waited = now - self.first_unsynced_at if self.first_unsynced_at is not None else 0.0
        return policy.due(self.since_sync, waited, lambda: learned_distance(self.model, self.snapshot),
                          scale=self.base_norm, drift=drift)

    def take_update(self, model_name: str, replica: int) -> ReplicaUpdate:
        params = models.get_params(self.model)
        adapter = models.adapter_for(self.model)
        delta = adapter.delta(self.model, params, self.snapshot)
        rho = shared = None
        if self.mid is not None:
            first = adapter.delta(self.model, self.mid, self.snapshot)
            second = adapter.delta(self.model, params, self.mid)
            rho, shared = self.probe.observe(self.model, first, second)
        self.seq += 1
        update = ReplicaUpdate(
            model_name=model_name,
            replica=replica,
            base_version=self.base_version,
            delta=delta,
            events=self.since_sync,
            sent_at=time.time(),
            seq=self.seq,
            loss=self.unsynced_score.loss(self.task),
            rho=rho,
            shared=shared,
            kappa=delay_compensation(self.model, self.curvature / max(1, self.since_sync), self.since_sync),
        )
        self.mid = None
        self.curvature = 0.0
        self.in_flight.append((self.seq, delta))
        self.snapshot = params
        self.since_sync = 0
        self.first_unsynced_at = None
        self.unsynced_score = Score()
        return update

    def rebase(self, merged_params: dict, version: int, acked: int | None = None) -> None:
        """Adopt merged ``version`` (newer than ours), keeping every bit of learning it does not hold.

        ``acked`` is the last of this replica's update sequence numbers that
        ``version`` holds (``meta.acked``); ``None`` means unknown (then every
        in-flight update is taken as held: the pre-acknowledgement behaviour).
        """
        adapter = models.adapter_for(self.model)
        unsent = adapter.delta(self.model, models.get_params(self.model), self.snapshot)
        self.in_flight = [] if acked is None else [(s, d) for s, d in self.in_flight if s > acked]
        missing = [d for _, d in self.in_flight]
        snapshot = adapter.apply(self.model, merged_params, missing, [1.0] * len(missing), _REPLAY) if missing \
            else merged_params
        params = adapter.apply(self.model, snapshot, [unsent], [1.0], _REPLAY)
        if self.mid is not None:  # keep the probe's first half, moved onto the new base
            self.mid = adapter.apply(self.model, snapshot, [adapter.delta(self.model, self.mid, self.snapshot)],
                                     [1.0], _REPLAY)
        models.set_params(self.model, params, version=version)
        self.base_version = version
        # future deltas are measured from the merged point plus what is already in flight
        self.snapshot = snapshot
        self.base_norm = learned_norm(self.model, merged_params)


@dataclass
class ContractionProbe:
    """Estimates, from the two halves of each sync period, how a replica's learning splits.

    Model of one half's learned step: a part on an error the replicas share,
    which shrinks by ``t = sqrt(rho)`` per half, plus noise from the half's own
    events: ``first = s + n1``, ``second = t s + n2``.  Moving averages over
    sync periods of ``A = |first|^2``, ``B = |second|^2`` and
    ``C = <second, first>`` give ``A - B = |s|^2 (1 - t^2)`` and
    ``C = t |s|^2``, hence ``t`` and the shared fraction ``phi = |s|^2 / A``.
    Returns ``(rho, phi)``; with no shared part (``C <= 0``), ``(1.0, 0.0)``.
    """

    smoothing: float = 0.3
    a: float = 0.0
    b: float = 0.0
    c: float = 0.0

    def observe(self, model: Any, first: dict, second: dict) -> tuple[float, float]:
        from riverflink.models.sync import learned_dot

        w = self.smoothing
        self.a = (1 - w) * self.a + w * learned_dot(model, first, first)
        self.b = (1 - w) * self.b + w * learned_dot(model, second, second)
        self.c = (1 - w) * self.c + w * learned_dot(model, second, first)
        if self.c <= 0 or self.a <= 0:
            return 1.0, 0.0
        k = (self.a - self.b) / self.c
        t = min(1.0, max(0.0, (-k + math.sqrt(k * k + 4)) / 2))
        shared = self.c / t if t > 0 else self.a
        return t * t, min(1.0, max(0.0, shared / self.a))


def feature_frame(xs: Sequence[dict]) -> Any:
    """The events' features as a pandas DataFrame for River's ``*_many`` methods; a feature an event
    lacks is 0 (River's sparse convention).

    >>> feature_frame([{"a": 1, "b": 2.5}, {"b": 0.5, "a": 3}]).to_dict("list")
    {'a': [1.0, 3.0], 'b': [2.5, 0.5]}
    >>> feature_frame([{"a": 1.0}, {"b": 2.0}]).to_dict("list")
    {'a': [1.0, 0.0], 'b': [0.0, 2.0]}
    """
    import numpy as np
    import pandas as pd

    names = xs[0].keys()
    if all(x.keys() == names for x in xs):  # dense: every event has the same features (any order)
        columns = [str(c) for c in names]
        return pd.DataFrame(np.array([[x[c] for c in names] for x in xs], dtype=float), columns=columns)
    X = pd.DataFrame.from_records(xs).fillna(0.0).astype(float)
    X.columns = [str(c) for c in X.columns]
    return X


def _curvature(loss: str, proba: dict | None) -> float:
    """Second derivative of the final step's loss (its class name) at a prediction (squared: 2; log: p(1 - p))."""
    name = loss
    if name == "Squared":
        return 2.0
    if name == "Log" and proba:
        p = float(proba.get(True, 0.0))
        return p * (1.0 - p)
    return 0.0


def delay_compensation(model: Any, curvature: float, events: int) -> float | None:
    """``kappa = 1 - (1 - lr * h) ** events``, or ``None`` where it cannot be estimated.

    For a linear model behind a StandardScaler (unit-variance inputs) trained
    by plain SGD with squared or log loss, ``h`` the mean loss curvature at
    the replica's predictions: the part of a parameter offset ``D`` that the
    replica's ``events`` SGD steps would have removed had it started from a
    model offset by ``D``.  The merger uses it to correct an update computed
    against an older version (delay compensation,
    :meth:`riverflink.operators.merge_state.MergerState.compensate`).
    """
    from river import compose, optim, preprocessing

    from riverflink.models.labels import final_step

    final = final_step(model)
    scaled = isinstance(model, compose.Pipeline) and any(
        isinstance(s, preprocessing.StandardScaler) for s in list(model.steps.values())[:-1])
    optimizer = getattr(final, "optimizer", None)
    if not scaled or type(optimizer) is not optim.SGD or curvature <= 0 or events <= 0:
        return None
    step = min(1.0, optimizer.learning_rate * curvature)
    return 1.0 - (1.0 - step) ** events


def _input_stiffness(model: Any, X: Any) -> float:
    """The largest eigenvalue of the second-moment matrix of the inputs the final linear step sees for the batch
    ``X`` (with a column of ones for its intercept), by power iteration; 1.0 where those inputs are unknown.

    The final step sees ``X`` itself, or ``X`` standardised by a StandardScaler right before it (with the
    scaler's current statistics); behind any other transformer the answer is 1.0 (the loss curvature alone).
    """
    import numpy as np
    from river import compose, preprocessing

    steps = list(model.steps.values())[:-1] if isinstance(model, compose.Pipeline) else []
    Z = X.to_numpy(dtype=float)
    if len(steps) == 1 and isinstance(steps[0], preprocessing.StandardScaler):
        scaler = steps[0]
        mean = np.array([scaler.means.get(c, 0.0) for c in X.columns])
        var = np.array([scaler.vars.get(c, 0.0) for c in X.columns])
        Z = np.divide(Z - mean, np.sqrt(var), out=np.zeros_like(Z), where=var > 0)
    elif steps:
        return 1.0
    Z = np.hstack([Z, np.ones((Z.shape[0], 1))])
    v = np.ones(Z.shape[1]) / np.sqrt(Z.shape[1])
    lam = 1.0
    for _ in range(30):
        w = Z.T @ (Z @ v) / Z.shape[0]
        lam = float(np.linalg.norm(w))
        if not lam > 0:
            return 1.0
        v = w / lam
    return max(1.0, lam)


def _batch_weight(model: Any, n: int, curvature: float, X: Any = None) -> dict:
    """``learn_many`` sample weight: one step on the batch as far as ``n`` steps one by one would go.

    River's ``learn_many`` takes one step on the batch's *mean* gradient, so
    at the same learning rate a batch of ``n`` learns about ``n`` times less
    than ``n`` events one by one.  Weighting the batch by ``n`` (a sum of
    gradients) matches them while ``lr * h * n`` is small, ``h`` the loss
    curvature, but overshoots beyond (``lr * h * n >= 2`` diverges: squared
    loss at lr 0.01 already at n = 100).  On a quadratic, ``n`` sequential
    steps remove ``1 - (1 - lr h)^n`` of an error; one step of weight ``w``
    removes ``lr h w``; so ``w = (1 - (1 - lr h)^n) / (lr h)``, with ``h`` the
    mean curvature at this batch's predictions times the
    stiffness of the batch ``X`` (:func:`_input_stiffness`): along the
    stiffest direction of correlated features one step then removes at most
    the whole error, never more (with the loss curvature alone, 250 events of
    TrumpApproval's six correlated features overshot and diverged).  Plain SGD only; other
    optimizers scale their own steps and keep River's mean (``w = 1``);
    statistics (scaler, Naive Bayes) are exact sums whatever ``w``.
    """
    from river import optim

    from riverflink.models.labels import final_step

    final = final_step(model)
    if not hasattr(final, "_eval_gradient_many"):
        return {}
    optimizer = getattr(final, "optimizer", None)
    if type(optimizer) is not optim.SGD:
        return {}
    stiffness = 1.0 if X is None else _input_stiffness(model, X)
    step = min(1.0, optimizer.learning_rate * curvature * stiffness)
    if step <= 0:
        return {"w": float(n)}
    return {"w": (1.0 - (1.0 - step) ** n) / step}
