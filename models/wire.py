"""The versioned JSON model document (``riverflink.model/1``).

``to_wire`` turns a supported River estimator into a plain JSON-serializable
``dict``; ``from_wire`` rebuilds an estimator whose ``predict_one`` /
``predict_proba_one`` match the original.  Nothing is pickled and nothing is
imported by name: classes resolve through a fixed allow-list.  The layout is
described in ``docs/model-document.md`` and ``models/schema/model.schema.json``.

Encoding rules (so that any JSON client can read a document):

* a map (feature -> weight, class -> count, ...) is a list of ``[key, value]``
  pairs, because keys may be strings, integers or booleans;
* a moments triple is the list ``[n, mean, m2]``;
* a constructor argument that is itself a River object is
  ``{"class": "river.optim.SGD", "args": {...}}``; a dict argument is
  ``{"map": [[key, value], ...]}``.

>>> from river import linear_model
>>> from riverflink.models import to_wire, from_wire
>>> m = linear_model.LogisticRegression()
>>> m.learn_one({"x": 1.0}, True)
>>> doc = to_wire(m, name="demo", version=3)
>>> doc["schema"], doc["family"], doc["class"], doc["meta"]["version"]
('riverflink.model/1', 'linear', 'river.linear_model.LogisticRegression', 3)
>>> from_wire(doc).predict_proba_one({"x": 1.0}) == m.predict_proba_one({"x": 1.0})
True
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import orjson
from river import compose, optim

from riverflink.models import numeric
from riverflink.models.adapter import Adapter, adapter_for, adapters

SCHEMA = "riverflink.model/1"
_KEY_TYPES = (str, int, float, bool, type(None))


def _component_classes() -> dict[str, type]:
    out: dict[str, type] = {}
    for prefix, module in (
        ("river.optim", optim),
        ("river.optim.losses", optim.losses),
        ("river.optim.schedulers", optim.schedulers),
        ("river.optim.initializers", optim.initializers),
    ):
        for name in getattr(module, "__all__", dir(module)):
            obj = getattr(module, name, None)
            if isinstance(obj, type):
                out[f"{prefix}.{name}"] = obj
    return out


def public_name(cls: type) -> str:
    """The stable class path used on the wire (``river.linear_model.LogisticRegression``)."""
    if cls.__module__.startswith("river."):
        parts = cls.__module__.split(".")
        if parts[1] == "optim" and len(parts) > 2 and parts[2] in ("losses", "schedulers", "initializers"):
            return f"river.optim.{parts[2]}.{cls.__name__}"
        return f"river.{parts[1]}.{cls.__name__}"
    return f"riverflink.models.{cls.__name__}"


def allowed_classes() -> dict[str, type]:
    """Every class ``from_wire`` may instantiate, by public name."""
    out = _component_classes()
    for a in adapters():
        for cls in a.classes:
            out[public_name(cls)] = cls
        out.update(a.components)
    return out


# -- value codecs --------------------------------------------------------------
def encode_params(tree: Any, path: str = "params") -> Any:
    if isinstance(tree, dict):
        if _plain_floats(tree):  # a map of weights: the same pairs, checked in bulk
            return list(map(list, tree.items()))
        pairs = []
        for k, v in tree.items():
            if not isinstance(k, _KEY_TYPES):
                raise TypeError(f"{path}: key {k!r} of type {type(k).__name__} cannot go on the wire; use str/int/bool keys")
            pairs.append([k, encode_params(v, f"{path}[{k!r}]")])
        return pairs
    if isinstance(tree, tuple):
        return [_number(v, path) for v in tree]
    return _number(tree, path)


_FLOAT = {float}
#: the exact key types of a plain map (subclasses take the checked way)
_PLAIN_KEYS = {str, int, bool}


def _plain_floats(tree: dict) -> bool:
    """True when every key may go on the wire and every value is a finite ``float`` (checked at C speed)."""
    values = tree.values()
    return (set(map(type, values)) <= _FLOAT and (math.isfinite(sum(values)) or all(map(math.isfinite, values)))
            and set(map(type, tree)) <= _PLAIN_KEYS)


def _number(v: Any, path: str) -> float | int:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        if hasattr(v, "item"):  # numpy scalar
            v = v.item()
        else:
            raise TypeError(f"{path}: {v!r} is not a number")
    if not math.isfinite(v):
        raise ValueError(f"non-finite parameter {path} = {v!r}: refusing to serialize it")
    return int(v) if isinstance(v, int) else float(v)


def decode_params(value: Any) -> Any:
    if isinstance(value, list):
        if value and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return tuple(value)
        try:  # a map of numbers (a model's weights): built at C speed
            out = dict(value)
        except (TypeError, ValueError):
            out = None
        if out is not None and not any(type(v) is list for v in out.values()):
            return out
        return {p[0]: decode_params(p[1]) for p in value}
    return value


def encode_hyper(value: Any) -> Any:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], type):
        cls, args = value
        return {"class": public_name(cls), "args": {k: encode_hyper(v) for k, v in args.items()}}
    if isinstance(value, dict):
        return {"map": [[k, encode_hyper(v)] for k, v in value.items()]}
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"hyper-parameter {value!r} cannot be encoded")


def decode_hyper(value: Any, classes: dict[str, type]) -> Any:
    if isinstance(value, dict) and "class" in value:
        return _resolve(value["class"], classes)(**{k: decode_hyper(v, classes) for k, v in value.get("args", {}).items()})
    if isinstance(value, dict) and "map" in value:
        return {k: decode_hyper(v, classes) for k, v in value["map"]}
    return value


def _resolve(name: str, classes: dict[str, type]) -> type:
    if name not in classes:
        raise ValueError(f"class {name!r} is not on riverflink's allow-list of model classes")
    return classes[name]


# -- documents -------------------------------------------------------------------
def _component_doc(model: Any, adapter: Adapter) -> dict:
    if not adapter.wire_supported:
        raise NotImplementedError(f"{type(model).__name__} is not supported on the wire yet (it would need pickle)")
    doc: dict = {
        "family": adapter.family,
        "class": public_name(type(model)),
        "hyper": {k: encode_hyper(v) for k, v in model._get_params().items()},
    }
    if adapter.family == "pipeline":
        doc["steps"] = [_component_doc(s, adapter_for(s)) for s in model.steps.values()]
        doc["hyper"] = {}
    else:
        doc["params"] = {k: encode_params(v, k) for k, v in adapter.get_params(model).items()}
    return doc


def to_wire(
    model: Any,
    *,
    name: str | None = None,
    version: int | None = None,
    counts: dict | None = None,
    created_at: float | None = None,
    **extra_meta: Any,
) -> dict:
    """The JSON document for ``model`` (raises on NaN/inf and on unsupported models)."""
    doc = {"schema": SCHEMA, **_component_doc(model, adapter_for(model))}
    meta = {
        "name": name,
        "version": version,
        "counts": {str(k): int(v) for k, v in (counts or {}).items()},
        "created_at": created_at if created_at is not None else time.time(),
        **extra_meta,
    }
    doc["meta"] = meta
    return doc


def _build(doc: dict, classes: dict[str, type]) -> Any:
    cls = _resolve(doc.get("class", "?"), classes)
    if cls is compose.Pipeline:
        return compose.Pipeline(*[_build(s, classes) for s in doc["steps"]])
    hyper = {k: decode_hyper(v, classes) for k, v in doc.get("hyper", {}).items()}
    model = cls(**hyper)
    adapter = adapter_for(model)
    if adapter.family != doc.get("family"):
        raise ValueError(f"family {doc.get('family')!r} does not match class {doc['class']!r}")
    params = {k: decode_params(v) for k, v in doc.get("params", {}).items()}
    numeric.check_finite(params)
    try:
        adapter.set_params(model, params)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
        raise ValueError(f"malformed {SCHEMA} params for {doc['class']}: {type(e).__name__}: {e}") from None
    return model


def from_wire(doc: dict | str | bytes) -> Any:
    """Rebuild a River estimator from a document (a ``dict`` or its JSON text).

    Rejects unknown schema versions and classes outside the allow-list with a
    ``ValueError``.  When ``meta.version`` is set the model remembers it as
    its base (see :func:`models.merge`).
    """
    if isinstance(doc, (str, bytes)):
        doc = json.loads(doc)
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"unsupported model document schema {got!r}; this riverflink reads {SCHEMA!r}")
    try:
        model = _build(doc, allowed_classes())
    except (TypeError, KeyError, IndexError, AttributeError) as e:
        raise ValueError(f"malformed {SCHEMA} document: {type(e).__name__}: {e}") from None
    version = (doc.get("meta") or {}).get("version")
    if version is not None:
        from riverflink.models.api import remember_base

        remember_base(model, version)
    return model


def dumps(doc: dict) -> bytes:
    """Compact UTF-8 JSON bytes for Kafka; ``ValueError`` for a NaN or infinity anywhere (JSON has none).

    >>> dumps({"a": [1, 0.5]})
    b'{"a":[1,0.5]}'
    >>> dumps({"a": float("nan")})
    Traceback (most recent call last):
    ...
    ValueError: Out of range float values are not JSON compliant
    """
    try:
        out = orjson.dumps(doc)  # about 10x the standard library's speed on a large slice
    except TypeError:  # an integer beyond 64 bits: the standard library writes it
        out = None
    if out is None or b"null" in out:  # orjson writes NaN and infinities as null: let json name them
        return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    return out
