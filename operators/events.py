"""Parsing and validating one event out of a Kafka record (:mod:`~riverflink.operators.frames`).  Pure Python.

An *event* is a JSON object::

    {"id": "e-17", "x": {"feature": 1.5, ...}, "y": true, "key": "user-3"}

``x`` maps string feature names to finite numbers; ``y`` is the label (bool,
int, float or string; required for training events, absent for requests);
``id`` and ``key`` are optional.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from riverflink.operators.dead_letters import Rejected
from riverflink.operators.frames import Record
from riverflink.operators.limits import DEFAULT_LIMITS, Limits


@dataclass(frozen=True, slots=True)
class Event:
    id: Any
    x: dict
    y: Any
    key: str | None
    partition: int | None
    offset: int | None
    timestamp: int | None


def parse_event(env: Record, *, require_label: bool, key_field: str = "key",
                limits: Limits = DEFAULT_LIMITS) -> Event | Rejected:
    """Validate one record.  Never raises: bad input becomes :class:`Rejected` with a reason.

    The event's key is its ``key_field`` (default ``"key"``), else the Kafka record key.

    >>> parse_event(Record(0, 1, None, None, b'{"x": {"a": 1}, "y": true}'), require_label=True).y
    True
    >>> parse_event(Record(0, 2, None, None, b'{"x": {"a": "NaN"}}'), require_label=True).reason
    "feature 'a' is not a number: 'NaN'"
    >>> parse_event(Record(0, 3, None, None, b'[' * 5000 + b']' * 5000), require_label=True).reason[:24]
    'event is not valid JSON:'
    """
    try:
        return _parse(env, require_label, key_field, limits)
    except Exception as e:  # noqa: BLE001 - whatever the bytes, a record is dead-lettered, never fatal
        return Rejected(f"event could not be parsed: {type(e).__name__}: {str(e)[:200]}", env.value,
                        env.partition, env.offset)


def _parse(env: Record, require_label: bool, key_field: str, limits: Limits) -> Event | Rejected:
    def reject(reason: str) -> Rejected:
        return Rejected(reason, env.value, env.partition, env.offset)

    size = env.cut_from[0] if env.cut_from else len(env.value)
    if env.cut_from or size > limits.max_event_bytes:
        return Rejected(f"event is {size} bytes, over the limit of {limits.max_event_bytes}", env.value,
                        env.partition, env.offset, env.cut_from)
    try:
        doc = orjson.loads(env.value)
    except orjson.JSONDecodeError as e:
        if isinstance(e.__cause__, UnicodeDecodeError) or "utf-8" in str(e).lower():
            return reject("event is not UTF-8 text")
        return reject(f"event is not valid JSON: {e}")
    if not isinstance(doc, dict):
        return reject(f"event must be a JSON object, got {type(doc).__name__}")
    x = doc.get("x")
    if not isinstance(x, dict):
        return reject("event has no 'x' object of features")
    if len(x) > limits.max_features:
        return reject(f"event has {len(x)} features, over the limit of {limits.max_features}")
    bound = limits.max_abs_value
    for v in x.values():  # the common case, without a call per feature (bool's type is not int)
        t = type(v)
        if not ((t is float or t is int) and -bound <= v <= bound):  # also false for NaN
            return reject(_feature_problem(x, bound))
    if require_label:
        if "y" not in doc or doc["y"] is None:
            return reject("training event has no label 'y'")
        y = doc["y"]
        if not isinstance(y, (bool, int, float, str)) or (isinstance(y, float) and not math.isfinite(y)):
            return reject(f"label 'y' must be a bool, number or string, got {_short(y)}")
    event_id = doc.get("id")
    if event_id is not None and not (isinstance(event_id, (str, int)) and len(str(event_id)) <= limits.max_id_chars):
        return reject(f"event id must be a string or integer of at most {limits.max_id_chars} characters")
    key = doc.get(key_field)
    if key is None and env.key is not None:
        key = env.key.decode("utf-8", errors="replace")
    if key is not None and (isinstance(key, (dict, list)) or len(str(key)) > limits.max_id_chars):
        return reject(f"event key must be a scalar of at most {limits.max_id_chars} characters")
    return Event(event_id, x, doc.get("y"), None if key is None else str(key), env.partition, env.offset,
                 env.timestamp)


def _feature_problem(x: dict, bound: float) -> str:
    """Why the first bad feature of ``x`` is bad: not a number, or out of range."""
    for name, v in x.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"feature {name[:100]!r} is not a number: {_short(v)}"
        if not -bound <= v <= bound:  # ints of any size compare without overflow
            return f"feature {name[:100]!r} is out of range: |{_short(v)}| > {bound:g}"
    return "a feature is not a finite number"


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
