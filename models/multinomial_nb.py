"""MultinomialNB: exact merge of class counts, feature counts and class totals.

All three are ``ADDITIVE`` sums, so the merge is exact.
"""

from __future__ import annotations

import collections
from typing import Any

from river import naive_bayes

from riverflink.models import numeric
from riverflink.models.adapter import Adapter, register


class MultinomialNBAdapter(Adapter):
    family = "multinomial_nb"
    classes = (naive_bayes.MultinomialNB,)
    kinds = {
        "class_counts": numeric.ADDITIVE,
        "feature_counts": numeric.ADDITIVE,
        "class_totals": numeric.ADDITIVE,
    }

    def get_params(self, model: Any) -> dict:
        return {
            "class_counts": dict(model.class_counts),
            "feature_counts": {f: dict(c) for f, c in model.feature_counts.items()},
            "class_totals": dict(model.class_totals),
        }

    def set_params(self, model: Any, params: dict) -> None:
        # Zero counts are kept: River counts a feature seen with frequency 0 in ``n_terms``.
        model.class_counts = collections.Counter(params.get("class_counts", {}))
        model.feature_counts = collections.defaultdict(
            collections.Counter,
            {f: collections.Counter(cs) for f, cs in params.get("feature_counts", {}).items()},
        )
        model.class_totals = collections.Counter(params.get("class_totals", {}))


MULTINOMIAL_NB = register(MultinomialNBAdapter())
