"""GaussianNB: exact merge of class counts and per-(class, feature) Gaussians.

Params: ``class_counts`` = {class: n} (``ADDITIVE``) and ``gaussians`` =
{class: {feature: (n, mean, m2)}} (``MOMENTS``; ``m2`` is ``stats.Var``'s
``_S``).  The merged model's ``predict_proba_one`` equals that of one model
trained on all the events, up to rounding.
"""

from __future__ import annotations

import collections
import functools
from typing import Any

from river import naive_bayes, proba

from riverflink.models import numeric
from riverflink.models.adapter import Adapter, register


class GaussianNBAdapter(Adapter):
    family = "gaussian_nb"
    classes = (naive_bayes.GaussianNB,)
    kinds = {"class_counts": numeric.ADDITIVE, "gaussians": numeric.MOMENTS}

    def get_params(self, model: Any) -> dict:
        return {
            "class_counts": dict(model.class_counts),
            "gaussians": {
                c: {f: (g._var.mean.n, float(g._var.mean._mean), float(g._var._S)) for f, g in feats.items()}
                for c, feats in model.gaussians.items()
            },
        }

    def set_params(self, model: Any, params: dict) -> None:
        model.class_counts = collections.Counter(
            {c: int(round(n)) for c, n in params.get("class_counts", {}).items() if n > 0}
        )
        gaussians = collections.defaultdict(functools.partial(collections.defaultdict, proba.Gaussian))
        for c, feats in params.get("gaussians", {}).items():
            for f, (n, mean, m2) in feats.items():
                g = proba.Gaussian()
                g._var.mean.n, g._var.mean._mean, g._var._S = n, float(mean), float(m2)
                gaussians[c][f] = g
        model.gaussians = gaussians


GAUSSIAN_NB = register(GaussianNBAdapter())
