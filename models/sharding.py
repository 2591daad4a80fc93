"""Which shard owns a parameter, and a model's parameters split into slices and joined back.  Pure Python.

With ``--shards M`` the parameters of a model are owned by M merger shards.
A per-feature parameter (a linear weight, FTRL's ``z`` and ``n``, a scaler's
moments) belongs to shard :func:`shard_of` ``(feature, M)``, a stable hash of
the feature (never Python's salted ``hash``: every process, replica, merger
shard and reader must agree).  Every other leaf, touched by every event (an
intercept, an optimizer's step count), is the *dense part* and belongs to
shard 0.

A *slice* is a parameter tree of the model's own shape holding only its
shard's entries (and, for shard 0, the dense part), so each shard merges its
slice with the model's own adapters.  :func:`split` and :func:`join` are exact
inverses.

>>> from riverflink.models import get_params
>>> from riverflink.models.spec import build
>>> model = build("LogisticRegression(ftrl=true)")
>>> for i in range(50):
...     model.learn_one({f"f{i % 9}": 1.0, i % 13: 1.0}, i % 3 == 0)
>>> params = get_params(model)
>>> slices = split(model, params, 4)
>>> sorted(len(s["weights"]) for s in slices), "intercept" in slices[0], "intercept" in slices[1]
([2, 4, 5, 11], True, False)
>>> join(model, slices) == params
True
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any, Sequence

from river import compose, linear_model, preprocessing

from riverflink.models import numeric
from riverflink.models.sparse_linear_regression import SparseLinearRegression
from riverflink.models.sparse_logistic_regression import SparseLogisticRegression

#: the component classes whose parameters can be sharded: per-feature maps and a small dense part
SHARDABLE = (linear_model.LogisticRegression, linear_model.LinearRegression, SparseLogisticRegression,
             SparseLinearRegression, preprocessing.StandardScaler, preprocessing.FeatureHasher,
             preprocessing.OneHotEncoder)


def shard_of(feature: Any, shards: int) -> int:
    """The shard that owns ``feature``'s parameters: stable across processes, runs and Python versions.

    Integer and string features hash apart (``1`` and ``"1"`` are two features, as in River).

    >>> [shard_of(k, 4) for k in ("ad=a17", "ad=a18", 17, "17")]
    [1, 2, 0, 3]
    """
    if shards <= 1:
        return 0
    if isinstance(feature, bool) or not isinstance(feature, (int, str)):
        raise TypeError(f"feature {feature!r}: only str and int features can be sharded")
    return _hashed_shard(feature, shards)


@functools.lru_cache(maxsize=1 << 20)
def _hashed_shard(feature: int | str, shards: int) -> int:
    # cached: a stream's frequent features come back every few events (bools never reach here, so 1 and True
    # cannot share an entry)
    tag = b"i" if isinstance(feature, int) else b"s"
    digest = hashlib.blake2b(tag + str(feature).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % shards


def check_shardable(model: Any) -> None:
    """``ValueError`` unless every stage of ``model`` keeps per-feature maps and a small dense part."""
    stages = list(model.steps.values()) if isinstance(model, compose.Pipeline) else [model]
    for stage in stages:
        if type(stage) not in SHARDABLE:
            raise ValueError(f"{type(stage).__name__} cannot be sharded; --shards supports "
                             f"{', '.join(sorted({c.__name__ for c in SHARDABLE}))}")


def split(model: Any, params: dict, shards: int) -> list[dict]:
    """``params`` (``get_params(model)``'s shape) as ``shards`` slices: per-feature entries by :func:`shard_of`,
    everything else in slice 0."""
    check_shardable(model)
    if isinstance(model, compose.Pipeline):
        per_step = [split(step, p, shards) for step, p in zip(model.steps.values(), params["steps"], strict=True)]
        return [{"steps": [s[i] for s in per_step]} for i in range(shards)]
    slices: list[dict] = [{} for _ in range(shards)]
    for key, value in params.items():
        if isinstance(value, dict):
            parts: list[dict] = [{} for _ in range(shards)]
            for feature, v in value.items():
                parts[shard_of(feature, shards)][feature] = v
            for s, part in zip(slices, parts):
                s[key] = part
        else:
            slices[0][key] = value
    return slices


def join(model: Any, slices: Sequence[dict]) -> dict:
    """The parameters whose :func:`split` gave ``slices`` (slice 0 first).  The dense part is slice 0's: a
    merger shard's parameters also hold the dense leaves of an untrained model, which only shard 0 learns."""
    if isinstance(model, compose.Pipeline):
        return {"steps": [join(step, [s["steps"][i] for s in slices]) for i, step in enumerate(model.steps.values())]}
    out: dict = {}
    for s in slices:
        for key, value in s.items():
            if isinstance(value, dict):
                out.setdefault(key, {}).update(value)
            else:
                out.setdefault(key, value)
    return out


def touched(model: Any, params: dict, deltas: Sequence[dict]) -> dict:
    """A *patch*: ``params`` (a slice's parameters after a merge) cut down to the entries of the features that
    ``deltas`` (what the merge added) touch, in every per-feature map of the component (a merge may derive one
    map's entry from another's: FTRL's weight from its ``z`` and ``n``), with the dense part whole.  Its size is
    what the merge touched, not the slice's.  :func:`patched` applies it to the parameters before the merge.

    >>> from riverflink.models.spec import build
    >>> model = build("LogisticRegression")
    >>> touched(model, {"weights": {"a": 1.0, "b": 2.0, "c": 3.0}, "opt_z": {"c": 0.2}, "intercept": 0.5},
    ...         [{"weights": {"b": 0.1}, "opt_z": {"c": 0.1}}])
    {'weights': {'b': 2.0, 'c': 3.0}, 'opt_z': {'c': 0.2}, 'intercept': 0.5}
    """
    if isinstance(model, compose.Pipeline):
        return {"steps": [touched(step, p, [d["steps"][i] for d in deltas if "steps" in d])
                          for i, (step, p) in enumerate(zip(model.steps.values(), params["steps"], strict=True))]}
    keys = numeric.keys_of(list(deltas))
    out: dict = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out[key] = {k: value[k] for k in sorted((k for k in keys if k in value), key=repr)}
        else:
            out[key] = value
    return out


def patched(model: Any, params: dict, patch: dict) -> dict:
    """``params`` with ``patch`` (:func:`touched`) applied: its per-feature entries replace or add to
    ``params``'s, its dense leaves replace them.  A new tree (``params`` is left as it is).

    >>> from riverflink.models.spec import build
    >>> patched(build("LogisticRegression"), {"weights": {"a": 1.0, "b": 1.0}, "intercept": 0.0},
    ...         {"weights": {"b": 2.0}, "intercept": 0.5})
    {'weights': {'a': 1.0, 'b': 2.0}, 'intercept': 0.5}
    """
    if isinstance(model, compose.Pipeline):
        return {"steps": [patched(step, p, q) for step, p, q in
                          zip(model.steps.values(), params["steps"], patch["steps"], strict=True)]}
    out = dict(params)
    for key, value in patch.items():
        if isinstance(value, dict):
            out[key] = {**params.get(key, {}), **value}
        else:
            out[key] = value
    return out


def entries(model: Any, params: dict) -> int:
    """How many per-feature entries ``params`` holds (the size a patch is weighed against).

    >>> from riverflink.models.spec import build
    >>> entries(build("LogisticRegression"), {"weights": {"a": 1.0, "b": 2.0}, "intercept": 0.5})
    2
    """
    if isinstance(model, compose.Pipeline):
        return sum(entries(step, p) for step, p in zip(model.steps.values(), params["steps"], strict=True))
    return sum(len(v) for v in params.values() if isinstance(v, dict))


def pages(model: Any, params: dict, n: int) -> list[dict]:
    """``params`` (a slice, whole or a patch) as ``n`` parameter trees of the model's shape: each holds about
    ``1/n`` of every per-feature map's entries and the whole dense part.  :func:`join` of them gives ``params``
    back; so does applying them one after the other with :func:`patched`.

    >>> from riverflink.models.spec import build
    >>> params = {"weights": {"a": 1.0, "b": 2.0, "c": 3.0}, "intercept": 0.5}
    >>> pages(build("LogisticRegression"), params, 2)
    [{'weights': {'a': 1.0}, 'intercept': 0.5}, {'weights': {'b': 2.0, 'c': 3.0}, 'intercept': 0.5}]
    >>> join(build("LogisticRegression"), _) == params
    True
    """
    if isinstance(model, compose.Pipeline):
        per_step = [pages(step, p, n) for step, p in zip(model.steps.values(), params["steps"], strict=True)]
        return [{"steps": [s[i] for s in per_step]} for i in range(n)]
    out: list[dict] = [{} for _ in range(n)]
    for key, value in params.items():
        if isinstance(value, dict):
            items = list(value.items())
            for i, page in enumerate(out):
                page[key] = dict(items[i * len(items) // n: (i + 1) * len(items) // n])
        else:
            for page in out:
                page[key] = value
    return out
