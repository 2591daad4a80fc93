"""Parsing and validating one event out of a Kafka record (:mod:`~riverflink.operators.frames`).  Pure Python.

An *event* is a JSON object::

    {"id": "e-17", "x": {"feature": 1.5, ...}, "y": true, "key": "user-3"}

``x`` maps string feature names to finite numbers; ``y`` is the label (bool,
int, float or string; required for training events, absent for requests);
``id`` and ``key`` are optional.

A recommender's event (:class:`RatingFields`) names a user and an item instead,
``{"user": "u17", "item": "i4", "y": 4.0}``, with ``x`` optional (context);
its ``Event.x`` is a :class:`~riverflink.models.rating.Rating`.  A ``rank``
request names a list of candidate ``items`` instead of one ``item``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from riverflink.models.rating import Rating
from riverflink.operators.dead_letters import Rejected
from riverflink.operators.frames import Record
from riverflink.operators.limits import DEFAULT_LIMITS, Limits


@dataclass(frozen=True)
class RatingFields:
    """Where a recommender's events carry the user, the item and (requests to rank) the candidate items."""

    user: str = "user"
    item: str = "item"
    items: str = "items"
    #: most candidates one rank request may name
    max_candidates: int = 1000


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
                limits: Limits = DEFAULT_LIMITS, ratings: RatingFields | None = None) -> Event | Rejected:
    """Validate one record.  Never raises: bad input becomes :class:`Rejected` with a reason.

    The event's key is its ``key_field`` (default ``"key"``), else the Kafka record key.  With ``ratings``, the
    event is a recommender's: ``x`` is a :class:`~riverflink.models.rating.Rating` (a request may name a list of
    candidate items instead of one item: ``Rating.item`` is then that list).

    >>> parse_event(Record(0, 4, None, None, b'{"user": "ann", "item": 7, "y": 4.5}'), require_label=True,
    ...             ratings=RatingFields()).x
    Rating(user='ann', item=7, context={}, top=None)
    >>> parse_event(Record(0, 5, None, None, b'{"user": true, "item": 7}'), require_label=False,
    ...             ratings=RatingFields()).reason
    "the user 'user' must be a string or an integer, got True"

    >>> parse_event(Record(0, 1, None, None, b'{"x": {"a": 1}, "y": true}'), require_label=True).y
    True
    >>> parse_event(Record(0, 2, None, None, b'{"x": {"a": "NaN"}}'), require_label=True).reason
    "feature 'a' is not a number: 'NaN'"
    >>> parse_event(Record(0, 3, None, None, b'[' * 5000 + b']' * 5000), require_label=True).reason[:24]
    'event is not valid JSON:'
    """
    try:
        return _parse(env, require_label, key_field, limits, ratings)
    except Exception as e:  # noqa: BLE001 - whatever the bytes, a record is dead-lettered, never fatal
        return Rejected(f"event could not be parsed: {type(e).__name__}: {str(e)[:200]}", env.value,
                        env.partition, env.offset)


def _parse(env: Record, require_label: bool, key_field: str, limits: Limits,
           ratings: RatingFields | None = None) -> Event | Rejected:
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
    if ratings is not None and x is None:
        x = {}
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
    if ratings is not None:
        rating = _rating(doc, x, ratings, require_label, limits)
        if isinstance(rating, str):
            return reject(rating)
        x = rating
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


def _rating(doc: dict, context: dict, fields: RatingFields, require_label: bool, limits: Limits) -> Rating | str:
    """The event's :class:`Rating`, or why it has none."""
    def problem(name: str, value: Any) -> str | None:
        if value is None:
            return f"a rating event has no {name} {getattr(fields, name)!r}"
        if isinstance(value, bool) or not isinstance(value, (str, int)) or len(str(value)) > limits.max_id_chars:
            return (f"the {name} {getattr(fields, name)!r} must be a string or an integer"
                    + (f" of at most {limits.max_id_chars} characters" if isinstance(value, (str, int))
                       and not isinstance(value, bool) else f", got {_short(value)}"))
        return None

    user = doc.get(fields.user)
    why = problem("user", user)
    if why:
        return why
    if not require_label and fields.item not in doc and isinstance(doc.get(fields.items), list):
        candidates = doc[fields.items]
        if not candidates or len(candidates) > fields.max_candidates:
            return f"a rank request names 1 to {fields.max_candidates} candidate items, got {len(candidates)}"
        for item in candidates:
            why = problem("item", item)
            if why:
                return why.replace("the item", "every candidate item")
        top = doc.get("n")
        if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
            return f"a rank request's 'n' must be a positive integer, got {_short(top)}"
        return Rating(user, list(candidates), context, top)
    item = doc.get(fields.item)
    why = problem("item", item)
    if why:
        return why
    return Rating(user, item, context)


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
