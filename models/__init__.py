"""Mergeable River models: adapters, merge policies and the wire format.

Pure Python: nothing here imports Flink.

>>> from riverflink.models import to_wire, from_wire, merge
"""

from riverflink.models import feature_encoders, gaussian_nb, hoeffding_tree, hoeffding_tree_regressor, kmeans, linear, matrix_factorization, multinomial_nb, passive_aggressive, pipeline, scaler, softmax, tree  # noqa: F401  (register adapters)
from riverflink.models.adapter import UnsupportedModelError, adapter_for, supported_classes
from riverflink.models.api import apply_deltas, base_of, delta, get_params, merge, rebase, scale_learning_rate, set_params
from riverflink.models.kmeans import CountingKMeans
from riverflink.models.policies import POLICIES, MergePolicy
from riverflink.models.wire import SCHEMA, dumps, from_wire, to_wire

__all__ = [
    "CountingKMeans",
    "MergePolicy",
    "POLICIES",
    "SCHEMA",
    "UnsupportedModelError",
    "adapter_for",
    "apply_deltas",
    "base_of",
    "delta",
    "dumps",
    "from_wire",
    "get_params",
    "merge",
    "rebase",
    "scale_learning_rate",
    "set_params",
    "supported_classes",
    "to_wire",
]
