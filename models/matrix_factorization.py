"""Merging matrix factorization: items data-parallel, users model-parallel.  Pure Python.

The families ``biased_mf`` (:class:`~riverflink.models.biased_mf.SeededBiasedMF`) and ``funk_mf``
(:class:`~riverflink.models.funk_mf.SeededFunkMF`).  Their parameter tree holds the **item side only**:

* ``global_mean`` (biased only): River's running mean as moments ``(n, mean, 0)``, merged exactly;
* ``item_biases`` (biased only): ``{item: bias}``, learned;
* ``item_latents``: ``{item: {0: v0, 1: v1, ...}}``, learned, one entry per factor.

Users never appear: training events are keyed by user, so one replica owns each user, and its users' biases and
vectors stay in that replica (``set_params`` and a rebase leave them as they are; nothing about users goes into a
model document or an update).

Deltas are taken against each item's *initial* vector where the base has none
(:mod:`~riverflink.models.seeded_latents`): two replicas that both meet a new item start it from the same vector,
and the merge adds what each learned to that one start, instead of adding the start twice.

>>> from riverflink import models
>>> from riverflink.models.biased_mf import SeededBiasedMF
>>> a, b = SeededBiasedMF(n_factors=2), SeededBiasedMF(n_factors=2)
>>> a.learn_one("ann", "jaws", 4.0); b.learn_one("bob", "jaws", 2.0)
>>> merged = models.merge([a, b], policy="delta")
>>> sorted(models.get_params(merged)), merged.global_mean.get(), len(merged.u_latents)
(['global_mean', 'item_biases', 'item_latents'], 3.0, 0)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from riverflink.models import numeric
from riverflink.models.adapter import Adapter, register
from riverflink.models.biased_mf import SeededBiasedMF
from riverflink.models.funk_mf import SeededFunkMF
from riverflink.models.policies import MergePolicy
from riverflink.models.seeded_latents import ID_TYPES, IdSeededVectors


def _vector_map(vector: np.ndarray) -> dict:
    return dict(enumerate(vector.tolist()))


def check_id(key: Any, what: str) -> None:
    """``ValueError`` unless ``key`` is a string or an integer (not a bool): what a user or item id may be."""
    if isinstance(key, bool) or not isinstance(key, ID_TYPES):
        raise ValueError(f"{what} id must be a string or an integer, got {key!r}")


class FunkMFAdapter(Adapter):
    family = "funk_mf"
    classes = (SeededFunkMF,)
    kinds = {"item_latents": numeric.LEARNED}

    # -- state ---------------------------------------------------------------
    def get_params(self, model: Any) -> dict:
        return {"item_latents": {i: _vector_map(v) for i, v in model.i_latents.items()}}

    def set_params(self, model: Any, params: dict) -> None:
        """Replace the item side (users are kept); ``ValueError`` for a vector without exactly the model's factors
        0..n-1 or an id that is not a string or an integer."""
        unknown = set(params) - set(self.kinds)
        if unknown:  # (a document carries the item side alone: never users)
            raise ValueError(f"a {self.family} document holds {', '.join(sorted(map(str, unknown)))[:200]}; "
                             f"its params are {', '.join(self.kinds)}")
        n, old = model.n_factors, model.i_latents
        latents = IdSeededVectors(n, old.seed, old.mu, old.sigma)
        for item, vector in params.get("item_latents", {}).items():
            check_id(item, "an item")
            if not isinstance(vector, dict) or len(vector) != n or not all(k in vector for k in range(n)):
                raise ValueError(f"item {item!r}'s latent vector must hold the {n} factors 0..{n - 1}")
            latents[item] = np.array([float(vector[k]) for k in range(n)])
        model.i_latents = latents

    # -- merge ---------------------------------------------------------------
    def delta(self, model: Any, params: dict, base: dict | None, journaled: bool = False, at: Any = None) -> dict:
        """What was learned since ``base``: the items whose vector changed, each against its base vector (its
        initial one when the base has none)."""
        base = base or {}
        initial, blat = model.i_latents.initial, base.get("item_latents", {})
        latents = {}
        for item, vector in params.get("item_latents", {}).items():
            before = blat.get(item)
            if before is None:
                before = _vector_map(initial(item))
            if vector != before:
                latents[item] = {k: v - before[k] for k, v in vector.items()}
        return {"item_latents": latents}

    def apply(self, model: Any, base: dict | None, deltas: Sequence[dict], weights: Sequence[float],
              policy: MergePolicy) -> dict:
        """``base`` plus the deltas per ``policy``, every item the base lacks starting from its initial vector
        (with no base, the deltas' combination is added to the initial vectors)."""
        initial = model.i_latents.initial
        new = {i for d in deltas for i in d.get("item_latents", {}) if base is None or i not in base.get("item_latents", {})}
        starts = {i: _vector_map(initial(i)) for i in new}
        if base is not None:
            base = {**base, "item_latents": {**base.get("item_latents", {}), **starts}}
            return super().apply(model, base, deltas, weights, policy)
        out = super().apply(model, None, deltas, weights, policy)
        out["item_latents"] = numeric.combine(starts, [out.get("item_latents", {})], [1.0], numeric.LEARNED)
        return out


class BiasedMFAdapter(FunkMFAdapter):
    family = "biased_mf"
    classes = (SeededBiasedMF,)
    kinds = {"global_mean": numeric.MOMENTS, "item_biases": numeric.LEARNED, "item_latents": numeric.LEARNED}

    def get_params(self, model: Any) -> dict:
        mean = model.global_mean
        return {"global_mean": (float(mean.n), float(mean._mean), 0.0),
                "item_biases": {i: float(b) for i, b in model.i_biases.items()},
                **super().get_params(model)}

    def set_params(self, model: Any, params: dict) -> None:
        n, mean, _ = params.get("global_mean", numeric.EMPTY_MOMENTS)
        if not n >= 0:
            raise ValueError(f"the global mean's count must be >= 0, got {n!r}")
        biases = params.get("item_biases", {})
        for item in biases:
            check_id(item, "an item")
        super().set_params(model, params)
        model.global_mean.n, model.global_mean._mean = float(n), float(mean)
        model.i_biases = type(model.i_biases)(model.weight_initializer, {i: float(b) for i, b in biases.items()})

    def delta(self, model: Any, params: dict, base: dict | None, journaled: bool = False, at: Any = None) -> dict:
        base = base or {}
        return {"global_mean": numeric.subtract(params.get("global_mean"), base.get("global_mean"), numeric.MOMENTS),
                "item_biases": numeric.subtract(params.get("item_biases", {}), base.get("item_biases", {}),
                                                numeric.LEARNED),
                **super().delta(model, params, base)}


FUNK_MF = register(FunkMFAdapter())
BIASED_MF = register(BiasedMFAdapter())


def serve_score(model: Any, user: Any, item: Any) -> float:
    """What serving answers for ``item``: the merged item side with ``user``'s published factors (a
    :class:`~riverflink.models.user_factors.UserFactors`); for an unknown user (``None``) the global mean plus the
    item's bias (0 for a ``FunkMF``).  An item the model has not met scores with its starting vector and no bias,
    as River scores it.

    >>> from riverflink.models.user_factors import UserFactors
    >>> model = SeededBiasedMF(n_factors=2)
    >>> model.learn_one("ann", "jaws", 4.0)
    >>> serve_score(model, None, "jaws") == model.global_mean.get() + model.i_biases["jaws"]
    True
    >>> ann = UserFactors("ann", model.u_biases["ann"], tuple(model.u_latents["ann"]))
    >>> abs(serve_score(model, ann, "jaws") - model.predict_one("ann", "jaws")) < 1e-12
    True
    """
    biased = hasattr(model, "global_mean")
    base = model.global_mean.get() + model.i_biases.get(item, 0.0) if biased else 0.0
    if user is None:
        return float(base)
    return float(base + user.bias + np.dot(np.asarray(user.vector), model.i_latents.peek(item)))
