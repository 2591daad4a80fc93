"""SoftmaxRegression: one weight vector and one optimizer per class.

Params: ``weights`` = {class: {feature: w}} (``LEARNED``; the merged model has
the union of classes and features) and per-class optimizer state
``opt_*`` = {class: state}.
"""

from __future__ import annotations

import collections
import functools
from typing import Any

from river import linear_model

from riverflink.models import numeric, optimizer_state
from riverflink.models.adapter import Adapter, register


class SoftmaxAdapter(Adapter):
    family = "softmax"
    classes = (linear_model.SoftmaxRegression,)
    kinds = optimizer_state.with_state({"weights": numeric.LEARNED})

    def get_params(self, model: Any) -> dict:
        optimizer_state.check_supported(model.optimizer)
        params: dict = {"weights": {c: dict(w) for c, w in model.weights.items()}}
        for c, opt in model.optimizers.items():
            for key, value in optimizer_state.get_state(opt).items():
                params.setdefault(key, {})[c] = value
        return params

    def set_params(self, model: Any, params: dict) -> None:
        weights = collections.defaultdict(functools.partial(collections.defaultdict, float))
        for c, w in params.get("weights", {}).items():
            weights[c] = collections.defaultdict(float, w)
        model.weights = weights
        model.optimizers.clear()
        classes = set(params.get("opt_steps", {})) | set(weights)
        for c in classes:
            opt = model.optimizers[c]  # defaultdict: a fresh copy of the template optimizer
            state = {k: params[k][c] for k in optimizer_state.KINDS if c in params.get(k, {})}
            optimizer_state.set_state(opt, state)


SOFTMAX = register(SoftmaxAdapter())
