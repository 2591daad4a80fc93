"""Model-parallel prediction: each shard's partial score from its slice alone, summed into the model's answer.  Pure.

A sharded linear model (:mod:`riverflink.models.sharding`) scores ``x`` as
``link(sum_f w_f * z_f + intercept)``, where ``z`` is ``x`` through the
pipeline's transformers.  Every term belongs to one shard: ``w_f`` and the
per-feature statistics a transformer uses for ``f`` (a scaler's moments) to
:func:`~riverflink.models.sharding.shard_of` ``(f)``, the intercept to shard 0.
So shard ``s``, holding only its slice, computes :func:`partial_score`: the
terms of the features it owns (and the intercept on shard 0); the sum over
the shards, through :func:`finish`, is the whole model's answer, up to the
floating-point order of the sum.

Supported: what ``--shards`` shards (``StandardScaler``, ``FeatureHasher``,
``OneHotEncoder`` without ``drop_first``, then a linear or logistic
regression), with a loss whose ``mean_func`` is in :data:`LINKS`.

>>> from riverflink import models
>>> from riverflink.models import get_params, sharding
>>> from riverflink.models.spec import build
>>> model = build("StandardScaler|LogisticRegression")
>>> for i in range(60):
...     model.learn_one({f"f{i % 7}": 1.0 + i % 3, "g": float(i % 5)}, i % 3 == 0)
>>> slices = [models.set_params(model.clone(), p) for p in sharding.split(model, get_params(model), 3)]
>>> x = {"f1": 2.0, "f4": 1.0, "g": 3.0, "new": 1.0}
>>> total = sum(partial_score(s, x, shard, 3) for shard, s in enumerate(slices))
>>> y_pred, proba = finish(link_of(model), total, True)
>>> abs(proba[True] - model.predict_proba_one(x)[True]) < 1e-12, y_pred == model.predict_one(x)
(True, True)
"""

from __future__ import annotations

import functools
from typing import Any

from river import compose, linear_model, preprocessing
from river.optim import losses

from riverflink.models.labels import final_step
from riverflink.models.sharding import check_shardable, shard_of

#: losses whose ``mean_func`` (the link from the raw score to the prediction) a gather may apply: it depends on
#: the loss's class alone, never on its parameters
LINKS = frozenset({"Absolute", "BinaryFocalLoss", "Cauchy", "EpsilonInsensitiveHinge", "Hinge", "Huber", "Log",
                   "Poisson", "Quantile", "Squared"})


def check_partial(model: Any) -> None:
    """``ValueError`` unless ``model``'s answer is the sum of its shards' partial scores (see the module)."""
    check_shardable(model)
    final = final_step(model)
    if not isinstance(final, (linear_model.LogisticRegression, linear_model.LinearRegression)):
        raise ValueError(f"{type(final).__name__}: scatter/gather serves linear and logistic regression only")
    if type(final.loss).__name__ not in LINKS:
        raise ValueError(f"loss {type(final.loss).__name__}: scatter/gather serves the losses {', '.join(sorted(LINKS))}")
    stages = list(model.steps.values())[:-1] if isinstance(model, compose.Pipeline) else []
    for stage in stages:
        if isinstance(stage, preprocessing.OneHotEncoder) and stage.drop_first:
            raise ValueError("OneHotEncoder(drop_first=True) drops a feature chosen among all shards' features: "
                             "scatter/gather cannot serve it")


def link_of(model: Any) -> str:
    """The name of the link :func:`finish` applies for ``model`` (its final step's loss class)."""
    return type(final_step(model).loss).__name__


def partial_score(slice_model: Any, x: dict, shard: int, shards: int) -> float:
    """Shard ``shard``'s part of ``slice_model``'s raw score of ``x``: the weighted terms of the transformed
    features it owns, plus the intercept on shard 0.  ``slice_model`` is the model rebuilt from the shard's slice
    (other shards' entries absent: they would be left out anyway)."""
    z = x
    if isinstance(slice_model, compose.Pipeline):
        steps = list(slice_model.steps.values())
        for step in steps[:-1]:
            z = step.transform_one(z)
        final = steps[-1]
    else:
        final = slice_model
    get = final._weights.get
    total = sum(get(k, 0.0) * v for k, v in z.items() if shard_of(k, shards) == shard)
    return total + final.intercept if shard == 0 else total


@functools.lru_cache(maxsize=None)
def _mean_func(link: str):
    if link not in LINKS:
        raise ValueError(f"unknown link {link!r}")
    return getattr(losses, link)().mean_func


def finish(link: str, total: float, classifier: bool) -> tuple[Any, dict | None]:
    """``(prediction, probabilities or None)`` from the summed raw score, as River's ``predict_one`` and
    ``predict_proba_one`` give them (a tie goes to ``False``, as River's ``max`` over ``{False, True}``)."""
    y = _mean_func(link)(total)
    if not classifier:
        return y, None
    proba = {False: 1.0 - y, True: y}
    return max(proba, key=proba.get), proba

