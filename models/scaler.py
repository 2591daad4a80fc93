"""StandardScaler: exact merge of per-feature counts, means and variances.

Params: ``moments`` = {feature: (n, mean, m2)} with ``m2 = var * n`` (River
keeps the population variance).  Merging uses Chan et al.'s parallel formula,
so merging scalers trained on disjoint parts of a stream reproduces the
scaler trained on the whole stream up to rounding.

>>> from river import preprocessing
>>> from riverflink.models import merge
>>> a, b, whole = (preprocessing.StandardScaler() for _ in range(3))
>>> for v in [1.0, 2.0]: a.learn_one({"x": v}); whole.learn_one({"x": v})
>>> for v in [4.0, 9.0]: b.learn_one({"x": v}); whole.learn_one({"x": v})
>>> m = merge([a, b], weights=[2, 2])
>>> (m.counts["x"], m.means["x"], round(m.vars["x"], 12)) == (whole.counts["x"], whole.means["x"], round(whole.vars["x"], 12))
True
"""

from __future__ import annotations

import collections
from typing import Any

from river import preprocessing

from riverflink.models import numeric
from riverflink.models.adapter import Adapter, register


class StandardScalerAdapter(Adapter):
    family = "standard_scaler"
    classes = (preprocessing.StandardScaler,)
    kinds = {"moments": numeric.MOMENTS}

    def get_params(self, model: Any) -> dict:
        return {
            "moments": {
                f: (n, float(model.means[f]), float(model.vars[f]) * n) for f, n in model.counts.items()
            }
        }

    def set_params(self, model: Any, params: dict) -> None:
        counts, means, variances = collections.Counter(), collections.defaultdict(float), collections.defaultdict(float)
        for f, (n, mean, m2) in params.get("moments", {}).items():
            n = int(round(n))
            if n <= 0:
                continue
            counts[f], means[f], variances[f] = n, float(mean), float(m2) / n
        model.counts, model.means, model.vars = counts, means, variances


STANDARD_SCALER = register(StandardScalerAdapter())
