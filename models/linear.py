"""Linear models trained by an optimizer: LogisticRegression, LinearRegression, Perceptron.

Params: ``weights`` (sparse; a feature a replica never saw has weight 0),
``intercept`` (both ``LEARNED``) and the optimizer state
(:mod:`models.optimizer_state`).  ``_weights`` stays a ``river.utils.VectorDict``:
a plain ``dict`` breaks ``predict_one``.

>>> from river import linear_model
>>> from riverflink.models import merge
>>> a, b = linear_model.LinearRegression(), linear_model.LinearRegression()
>>> a.learn_one({"x": 1.0}, 2.0); b.learn_one({"y": 1.0}, 4.0)
>>> m = merge([a, b], weights=[1, 1])
>>> sorted(m.weights)
['x', 'y']
>>> round(m.weights["x"], 6) == round(a.weights["x"] / 2, 6)
True
"""

from __future__ import annotations

from typing import Any

from river import linear_model, utils

from riverflink.models import numeric, optimizer_state
from riverflink.models.adapter import Adapter, register
from riverflink.models.sparse_linear_regression import SparseLinearRegression
from riverflink.models.sparse_logistic_regression import SparseLogisticRegression


class LinearAdapter(Adapter):
    family = "linear"
    classes = (linear_model.LogisticRegression, linear_model.LinearRegression, linear_model.Perceptron,
               SparseLogisticRegression, SparseLinearRegression)
    kinds = optimizer_state.with_state({"weights": numeric.LEARNED, "intercept": numeric.LEARNED})

    def get_params(self, model: Any) -> dict:
        return {
            "weights": dict(model._weights),
            "intercept": float(model.intercept),
            **optimizer_state.get_state(model.optimizer),
        }

    def set_params(self, model: Any, params: dict) -> None:
        model._weights = utils.VectorDict(dict(params.get("weights", {})), model.initializer)
        model.intercept = float(params.get("intercept", model.intercept_init))
        optimizer_state.set_state(model.optimizer, params)


LINEAR = register(LinearAdapter())
