"""riverflink's public model API: parameters, deltas, merges and rebases.

A model *remembers its base*: after :func:`set_params` with a ``version`` (or
:func:`from_wire` of a versioned document, or :func:`rebase`), the model keeps
a snapshot of the parameters it was rebased on under that version.  The plain
``merge([m1, m2], weights=[n1, n2])`` call uses it: when every model carries
the same base version, the result is ``base + combine(what each replica
learned since the base)``, so the base is counted once, not k times.  Models
with no base are merged as independent replicas (statistics summed, learned
parameters averaged).  Models with different bases are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from riverflink.models import numeric
from riverflink.models.adapter import adapter_for
from riverflink.models.policies import MergePolicy, as_policy
from riverflink.models.tree import TreeEnsembleAdapter

BASE_ATTR = "_riverflink_base"


@dataclass(frozen=True)
class BaseRef:
    """The version a model was rebased on and the parameters it had then."""

    version: Any
    params: dict


def get_params(model: Any) -> dict:
    """A fresh parameter tree for ``model`` (shares nothing with it)."""
    return adapter_for(model).get_params(model)


def set_params(model: Any, params: dict, *, version: Any = None, trusted: bool = False) -> Any:
    """Overwrite ``model``'s learned state; with ``version``, remember it as the base.

    Returns ``model``.  Raises ``ValueError`` on NaN/inf parameters.  ``trusted``: the caller guarantees that
    ``params`` is finite (built from validated documents) and shares no dict with anything else; it is then
    taken without the check and the copy.
    """
    if not trusted:
        numeric.check_finite(params)
        params = numeric.copy_tree(params)
    adapter_for(model).set_params(model, params)
    if version is not None:
        remember_base(model, version)
    return model


def remember_base(model: Any, version: Any) -> None:
    setattr(model, BASE_ATTR, BaseRef(version, get_params(model)))


def base_of(model: Any) -> BaseRef | None:
    return getattr(model, BASE_ATTR, None)


def delta(model: Any, base: dict | None = None) -> dict:
    """What ``model`` learned since ``base`` (default: its remembered base, else since empty)."""
    if base is None and base_of(model) is not None:
        base = base_of(model).params
    return adapter_for(model).delta(model, get_params(model), base)


def apply_deltas(
    template: Any,
    base: dict | None,
    deltas: Sequence[dict],
    weights: Sequence[float],
    policy: "str | MergePolicy | None" = None,
    *,
    version: Any = None,
    derive_from: Sequence[dict] = (),
) -> Any:
    """A new model: ``base`` plus ``deltas`` combined per ``policy``.

    ``template`` is any model of the family (its hyper-parameters are cloned).
    With ``version`` the result remembers itself as that base.  ``derive_from``: deltas (of stale updates)
    whose touched parameters that are functions of others are recomputed afterwards (``Adapter.derive``).
    """
    _check_weights(weights, len(deltas))
    for i, d in enumerate(deltas):
        numeric.check_finite(d, f"replica {i}")
    adapter = adapter_for(template)
    params = adapter.apply(template, base, deltas, weights, as_policy(policy))
    if derive_from:
        params = adapter.derive(template, params, derive_from)
    numeric.check_finite(params, "merged")
    model = template.clone()
    return set_params(model, params, version=version)


def merge(
    models: Sequence[Any],
    weights: Sequence[float] | None = None,
    policy: "str | MergePolicy | None" = None,
    *,
    base: "dict | Any | None" = None,
) -> Any:
    """Merge replicas into one new River estimator.

    ``weights`` are the events each replica saw since the common base (default:
    equal).  ``policy`` applies to learned parameters only (see
    :mod:`models.policies`).  ``base`` may be given explicitly as a parameter
    tree or a model; otherwise it is taken from the models (see module doc).
    Hoeffding trees cannot be averaged: for them ``merge`` returns a
    ``river.ensemble.VotingClassifier`` over copies of the trees.
    """
    if not models:
        raise ValueError("merge needs at least one model")
    weights = [1.0] * len(models) if weights is None else list(weights)
    _check_weights(weights, len(models))
    adapter = adapter_for(models[0])
    for m in models[1:]:
        if adapter_for(m) is not adapter:
            raise TypeError(f"cannot merge {type(models[0]).__name__} with {type(m).__name__}")
    if isinstance(adapter, TreeEnsembleAdapter):
        return adapter.ensemble(models)
    base_params = _common_base(models, base)
    params = []
    for i, m in enumerate(models):
        p = get_params(m)
        numeric.check_finite(p, f"replica {i}")
        params.append(p)
    deltas = [adapter.delta(models[0], p, base_params) for p in params]
    return apply_deltas(models[0], base_params, deltas, weights, policy)


def rebase(model: Any, merged: dict, version: Any, *, keep_since: dict | None = None) -> Any:
    """Move a replica onto merged parameters, keeping what it learned since ``keep_since``.

    ``keep_since`` is the replica's parameter snapshot at its last sync: the
    learning it did after that point has not reached the merger yet, so it is
    replayed onto ``merged`` exactly (``merged + (model - keep_since)``).
    Returns ``model`` (updated in place) remembering ``version`` as its base.
    """
    adapter = adapter_for(model)
    params = merged
    if keep_since is not None:
        unsent = adapter.delta(model, get_params(model), keep_since)
        params = adapter.apply(model, merged, [unsent], [1.0], MergePolicy("delta", clip=math.inf))
    return set_params(model, params, version=version)


def _check_weights(weights: Sequence[float], n: int) -> None:
    if len(weights) != n:
        raise ValueError(f"got {len(weights)} weights for {n} models")
    for w in weights:
        if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
            raise ValueError(f"weights must be finite and >= 0, got {w!r}")


def _common_base(models: Sequence[Any], base: "dict | Any | None") -> dict | None:
    if base is not None:
        return base if isinstance(base, dict) else get_params(base)
    refs = [base_of(m) for m in models]
    versions = {r.version for r in refs if r is not None}
    if not versions:
        return None
    if len(versions) > 1 or any(r is None for r in refs):
        shown = sorted(str(r.version) if r else "none" for r in refs)
        raise ValueError(
            f"models carry different base versions ({', '.join(shown)}); rebase them onto one model "
            "or pass base= explicitly"
        )
    return refs[0].params


def replica_lr_scale(model: Any, replicas: int, policy: str) -> float:
    """How many times the spec's learning rate K replicas of ``model`` learn at: K under the ``scaled_average``
    policy, and for a family whose merge averages what the replicas learn by SGD (``Adapter.averages_learning``:
    the Hoeffding tree regressor's leaf models); 1 otherwise (and always for one replica).

    >>> from river import linear_model, tree
    >>> replica_lr_scale(linear_model.LinearRegression(), 4, "delta")
    1.0
    >>> t = tree.HoeffdingTreeRegressor()
    >>> replica_lr_scale(t, 4, "delta"), replica_lr_scale(t, 1, "delta")
    (4.0, 1.0)
    """
    from riverflink.models.adapter import UnsupportedModelError, adapter_for

    try:
        averaged = policy == "scaled_average" or adapter_for(model).averages_learning
    except UnsupportedModelError:  # (refused elsewhere, with its own message)
        averaged = False
    return float(replicas) if averaged else 1.0


def scale_learning_rate(model: Any, factor: float) -> Any:
    """A clone of ``model`` (hyper-parameters only) whose optimizer learns ``factor`` times faster.

    Used by the ``scaled_average`` policy: K replicas at ``lr * K``, averaged.
    Pipelines scale their last step; a model without an optimizer of its own whose leaves hold models (a Hoeffding
    tree regressor) its leaf model.
    """
    from river import compose

    from riverflink.models.optimizer_state import scale_lr

    if isinstance(model, compose.Pipeline):
        steps = list(model.steps.values())
        return compose.Pipeline(*[s.clone() for s in steps[:-1]], scale_learning_rate(steps[-1], factor))
    if not hasattr(model, "optimizer") and hasattr(getattr(model, "leaf_model", None), "optimizer"):
        return model.clone({"leaf_model": scale_learning_rate(model.leaf_model, factor)})
    if not hasattr(model, "optimizer"):
        raise ValueError(f"{type(model).__name__} has no optimizer whose learning rate could be scaled")
    return model.clone({"optimizer": scale_lr(model.optimizer, factor)})
