"""Stateless feature encoders for sparse models: ``FeatureHasher`` and ``OneHotEncoder`` (drop_zeros).

Neither learns anything, so there is nothing to merge: their params are empty and
their whole definition is their hyper-parameters on the wire.  Two conditions
keep every replica, the merger and every predictor encoding an event alike:

* ``FeatureHasher`` needs a ``seed``: River salts its hash with
  ``numpy.random.RandomState(seed)``, a fresh random salt per process when the
  seed is ``None`` (the spec language gives it seed 0).  Its features are
  integers, which the wire and the update codec carry as integers.
* ``OneHotEncoder`` needs ``drop_zeros=True`` (and no ``drop_first``): without it
  River's encoder remembers every value it saw and emits a 0 for each, so an event
  would cost O(all categories) and the encoder would carry state.

>>> from river import preprocessing
>>> from riverflink.models import from_wire, to_wire
>>> hasher = preprocessing.FeatureHasher(n_features=1 << 20, seed=0)
>>> dict(from_wire(to_wire(hasher)).transform_one({"ad": "a17"})) == dict(hasher.transform_one({"ad": "a17"}))
True
>>> to_wire(preprocessing.FeatureHasher(n_features=16))
Traceback (most recent call last):
riverflink.models.adapter.UnsupportedModelError: FeatureHasher needs a seed ...
"""

from __future__ import annotations

from typing import Any

from river import preprocessing

from riverflink.models.adapter import Adapter, UnsupportedModelError, register


class FeatureEncoderAdapter(Adapter):
    family = "feature_encoder"
    classes = (preprocessing.FeatureHasher, preprocessing.OneHotEncoder)
    kinds: dict = {}

    def get_params(self, model: Any) -> dict:
        check_stateless(model)
        return {}

    def set_params(self, model: Any, params: dict) -> None:
        check_stateless(model)

    def get_at(self, model: Any, keys: Any) -> dict | None:
        return {}

    def set_at(self, model: Any, params: dict, keys: Any) -> bool:
        return True


def check_stateless(model: Any) -> None:
    """``UnsupportedModelError`` unless every process encodes an event as this encoder does (see the module)."""
    if isinstance(model, preprocessing.FeatureHasher) and model.seed is None:
        raise UnsupportedModelError("FeatureHasher needs a seed (each process would hash with its own random salt "
                                    "otherwise): FeatureHasher(n_features=..., seed=0)")
    if isinstance(model, preprocessing.OneHotEncoder) and (not model.drop_zeros or model.drop_first):
        raise UnsupportedModelError("OneHotEncoder needs drop_zeros=True and no drop_first (otherwise it emits a 0 "
                                    "for every value it ever saw: O(all categories) per event, and state to merge)")


FEATURE_ENCODER = register(FeatureEncoderAdapter())
