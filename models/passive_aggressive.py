"""Passive-aggressive models: PAClassifier, PARegressor.

They have no optimizer; params are ``weights`` (sparse) and ``intercept``,
both ``LEARNED``.
"""

from __future__ import annotations

import collections
from typing import Any

from river import linear_model

from riverflink.models import numeric
from riverflink.models.adapter import Adapter, register


class PassiveAggressiveAdapter(Adapter):
    family = "passive_aggressive"
    classes = (linear_model.PAClassifier, linear_model.PARegressor)
    kinds = {"weights": numeric.LEARNED, "intercept": numeric.LEARNED}

    def get_params(self, model: Any) -> dict:
        return {"weights": dict(model.weights), "intercept": float(model.intercept)}

    def set_params(self, model: Any, params: dict) -> None:
        model.weights = collections.defaultdict(float, params.get("weights", {}))
        model.intercept = float(params.get("intercept", 0.0))


PASSIVE_AGGRESSIVE = register(PassiveAggressiveAdapter())
