"""Batch mode's maths and glue: River's ``*_many`` methods on a micro-batch.  Pure Python (pandas, NumPy).

In ``batch`` mode a replica predicts a whole micro-batch with the model as it
stood at the batch's start, then learns it in one ``learn_many`` call with the
sample weight :func:`batch_weight`, after learning its first
:data:`BATCH_WARMUP` events one by one (:meth:`riverflink.operators.replica.Replica.learn_batch`).
"""

from __future__ import annotations

from typing import Any, Sequence

from river.utils import inspect as river_inspect

#: how a replica learns a micro-batch: event by event (River-identical) or one ``learn_many`` call
MODES = ("exact", "batch")
#: in ``batch`` mode a replica still learns its first this many events one by one: an untrained
#: model predicting a whole batch at once costs most of batch mode's accuracy loss (bench/batch_mode.py)
BATCH_WARMUP = 500


def supports_batch(model: Any) -> bool:
    """True when every stage of ``model`` has River's ``learn_many`` and the final one predicts many."""
    from riverflink.models.labels import final_step
    from river import compose

    stages = list(model.steps.values()) if isinstance(model, compose.Pipeline) else [model]
    final = final_step(model)
    predicts = hasattr(final, "predict_proba_many") if river_inspect.isclassifier(model) else hasattr(final, "predict_many")
    return all(hasattr(s, "learn_many") for s in stages) and predicts


def predict_many(model: Any, X: Any, task: str) -> list:
    """``(y_pred, proba)`` for every row of ``X``, as ``predict`` gives them one by one (classifiers' first most
    probable class; plain dicts, not pandas' ``to_dict``)."""
    if task in ("binary", "multiclass"):
        proba = model.predict_proba_many(X)
        classes = list(proba.columns)
        if not classes:
            return [(None, {}) for _ in range(len(X))]
        values = proba.to_numpy(dtype=float)
        # the first most probable class, as max(p, key=p.get) picks it; plain dicts, not pandas' to_dict
        return [(classes[i], dict(zip(classes, row)))
                for i, row in zip(values.argmax(axis=1).tolist(), values.tolist())]
    return [(p, None) for p in model.predict_many(X).tolist()]



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


def _final_inputs(model: Any, X: Any) -> Any:
    """The inputs the final linear step sees for the batch ``X`` (a frame): ``X`` itself, or ``X`` standardised by a
    StandardScaler right before it (with the scaler's current statistics); ``None`` behind any other transformer."""
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
        return None
    return Z


def input_stiffness(model: Any, X: Any) -> float:
    """The largest eigenvalue of the second-moment matrix of the inputs the final linear step sees for the batch
    ``X`` (with a column of ones for its intercept), by power iteration; 1.0 where those inputs are unknown.

    The final step sees ``X`` itself, or ``X`` standardised by a StandardScaler right before it (with the
    scaler's current statistics); behind any other transformer the answer is 1.0 (the loss curvature alone).
    """
    import numpy as np

    Z = _final_inputs(model, X)
    if Z is None:
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


def input_moments(model: Any, X: Any) -> tuple[list, Any] | None:
    """``(features, M)``: the second-moment matrix ``M`` (a NumPy array, ``features`` its rows in order) of the
    inputs the final linear step sees for the batch ``X``, as :func:`input_stiffness` takes them but without a
    column for an intercept (for a step that has none: softmax); ``None`` where those inputs are unknown.

    >>> import pandas as pd
    >>> from river import linear_model
    >>> features, M = input_moments(linear_model.SoftmaxRegression(), pd.DataFrame({"a": [1.0, -1.0], "b": [2.0, 0.0]}))
    >>> features, M.tolist()
    (['a', 'b'], [[1.0, 1.0], [1.0, 2.0]])
    """
    Z = _final_inputs(model, X)
    if Z is None or not len(Z):
        return None
    return list(X.columns), Z.T @ Z / Z.shape[0]


def batch_weight(model: Any, n: int, curvature: float, X: Any = None) -> dict:
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
    stiffness of the batch ``X`` (:func:`input_stiffness`): along the
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
    stiffness = 1.0 if X is None else input_stiffness(model, X)
    step = min(1.0, optimizer.learning_rate * curvature * stiffness)
    if step <= 0:
        return {"w": float(n)}
    return {"w": (1.0 - (1.0 - step) ** n) / step}
