"""Parsing and validating events; pure functions, no Flink.

An *envelope* is one Kafka record as Python sees it, whatever its bytes:
partition, offset, timestamp, key and value.  The JVM hands Python batches of
binary *record frames* (``pipelines/java/riverflink/RecordFrameDeserializationSchema.java``,
read by :func:`open_frames`); a value over the size limit arrives cut to its
first bytes, with the whole value's length and SHA-256.  Without riverflink's
jar the source hands over plain value strings (:func:`open_envelope`), with
unknown offsets.

An *event* is a JSON object::

    {"id": "e-17", "x": {"feature": 1.5, ...}, "y": true, "key": "user-3"}

``x`` maps string feature names to finite numbers; ``y`` is the label (bool,
int, float or string; required for training events, absent for requests);
``id`` and ``key`` are optional.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True)
class Limits:
    """What one event may hold; anything beyond is dead-lettered with the limit it broke.

    ``max_abs_value`` bounds every feature (and a regression label): the
    default, 1e9, keeps squares and sums of squares (variances, norms) far
    from overflow, so no single event can turn a replica's statistics into
    inf; values within the bound are learned as data.  Nesting is bounded by
    the JSON parser itself (orjson: 1024 levels) and features must be flat
    numbers.
    """

    max_event_bytes: int = 1 << 20
    max_features: int = 1000
    max_abs_value: float = 1e9
    max_id_chars: int = 200
    #: bytes of the raw record kept in a dead letter (with the full length and a SHA-256)
    dead_letter_prefix: int = 4096

    def __post_init__(self) -> None:
        for name in ("max_event_bytes", "max_features", "max_id_chars", "dead_letter_prefix"):
            if getattr(self, name) < 1:
                raise ValueError(f"limit {name} must be >= 1, got {getattr(self, name)}")
        if not self.max_abs_value > 0:
            raise ValueError(f"limit max_abs_value must be > 0, got {self.max_abs_value}")


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Envelope:
    partition: int | None
    offset: int | None
    timestamp: int | None
    key: bytes | None
    value: bytes
    #: set when the source cut an oversized value: the whole value's length and SHA-256 (hex)
    cut_from: tuple[int, str] | None = None


@dataclass(frozen=True, slots=True)
class Event:
    id: Any
    x: dict
    y: Any
    key: str | None
    partition: int | None
    offset: int | None
    timestamp: int | None


@dataclass(frozen=True)
class Rejected:
    reason: str
    raw: bytes
    partition: int | None
    offset: int | None
    #: the whole record's length and SHA-256 when ``raw`` is only its head (cut by the source)
    cut_from: tuple[int, str] | None = None

    def to_json(self, topic: str, prefix: int = DEFAULT_LIMITS.dead_letter_prefix) -> str:
        """The dead-letter record: reason, source position, and the raw bytes' length, SHA-256 and first
        ``prefix`` bytes (base64 and text), so that a record stays small whatever it carried."""
        head = self.raw[:prefix]
        return orjson.dumps(
            {
                "reason": self.reason[:1000],
                "topic": topic,
                "partition": self.partition,
                "offset": self.offset,
                "raw_bytes": self.cut_from[0] if self.cut_from else len(self.raw),
                "raw_sha256": self.cut_from[1] if self.cut_from else hashlib.sha256(self.raw).hexdigest(),
                "raw_truncated": bool(self.cut_from) or len(self.raw) > prefix,
                "raw_base64": base64.b64encode(head).decode(),
                "raw_text": head.decode("utf-8", errors="replace"),
            }
        ).decode()


def open_envelope(text: str) -> Envelope:
    """A plain value string (a source without riverflink's jar) as an envelope with unknown position.

    >>> open_envelope('{"x":{}}')
    Envelope(partition=None, offset=None, timestamp=None, key=None, value=b'{"x":{}}', cut_from=None)
    """
    return Envelope(None, None, None, None, text.encode())


#: a record frame's fixed head: partition, offset, timestamp, key length, value length, whole length
_FRAME_HEAD = struct.Struct(">iqqiiq")
_DIGEST = 32


def frame(partition: int, offset: int, timestamp: int, key: bytes | None, value: bytes | None,
          cut_from: tuple[int, bytes] | None = None) -> bytes:
    """One record frame, as ``RecordFrameDeserializationSchema`` writes it (for tests and tools).

    ``cut_from`` is ``(whole length, 32-byte SHA-256)`` of a value the source cut.
    """
    head = _FRAME_HEAD.pack(partition, offset, timestamp, -1 if key is None else len(key),
                            -1 if value is None else len(value), -1 if cut_from is None else cut_from[0])
    return head + (cut_from[1] if cut_from else b"") + (key or b"") + (value or b"")


def open_frames(batch: bytes) -> list[Envelope]:
    """The envelopes of a batch of concatenated record frames (see the module docstring).

    A batch the JVM built is well formed by construction; a truncated tail
    (never expected) becomes one last envelope holding the leftover bytes,
    with no position, so it is dead-lettered rather than lost or fatal.

    >>> [(e.offset, e.key, e.value) for e in open_frames(frame(0, 41, 1, None, b'{"x":{}}') + frame(1, 7, 2, b"k", b""))]
    [(41, None, b'{"x":{}}'), (7, b'k', b'')]
    >>> open_frames(frame(0, 9, 1, None, b"head", (5_000_000, bytes(32))))[0].cut_from[0]
    5000000
    """
    out, pos, end, head = [], 0, len(batch), _FRAME_HEAD.size
    unpack = _FRAME_HEAD.unpack_from
    while pos < end:
        if end - pos < head:
            out.append(Envelope(None, None, None, None, bytes(batch[pos:])))
            break
        partition, offset, timestamp, key_len, value_len, whole = unpack(batch, pos)
        pos += head
        cut_from = None
        if whole >= 0:
            cut_from = (whole, batch[pos : pos + _DIGEST].hex())
            pos += _DIGEST
        key = None
        if key_len >= 0:
            key = batch[pos : pos + key_len]
            pos += key_len
        value = batch[pos : pos + max(0, value_len)]
        pos += max(0, value_len)
        out.append(Envelope(partition, offset, timestamp, key, value, cut_from))
    return out


def envelopes(value: bytes | str, batched: bool) -> list[Envelope]:
    """The envelopes of one input record of a training or serving operator: a batch of frames from the
    JVM (``batched``), else one plain value string."""
    return open_frames(value) if batched else [open_envelope(value)]


def parse_event(env: Envelope, *, require_label: bool, key_field: str = "key",
                limits: Limits = DEFAULT_LIMITS) -> Event | Rejected:
    """Validate one record.  Never raises: bad input becomes :class:`Rejected` with a reason.

    The event's key is its ``key_field`` (default ``"key"``), else the Kafka record key.

    >>> parse_event(Envelope(0, 1, None, None, b'{"x": {"a": 1}, "y": true}'), require_label=True).y
    True
    >>> parse_event(Envelope(0, 2, None, None, b'{"x": {"a": "NaN"}}'), require_label=True).reason
    "feature 'a' is not a number: 'NaN'"
    >>> parse_event(Envelope(0, 3, None, None, b'[' * 5000 + b']' * 5000), require_label=True).reason[:24]
    'event is not valid JSON:'
    """
    try:
        return _parse(env, require_label, key_field, limits)
    except Exception as e:  # noqa: BLE001 - whatever the bytes, a record is dead-lettered, never fatal
        return Rejected(f"event could not be parsed: {type(e).__name__}: {str(e)[:200]}", env.value,
                        env.partition, env.offset)


def _parse(env: Envelope, require_label: bool, key_field: str, limits: Limits) -> Event | Rejected:
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


#: the reason classes dead letters are counted by (a fixed set: metric names stay few)
REASON_CLASSES = ("malformed", "schema", "limit", "label", "learning")


def reason_class(reason: str) -> str:
    """Which of :data:`REASON_CLASSES` a dead letter's reason belongs to.

    >>> reason_class("event is not valid JSON: unexpected character"), reason_class("feature 'a' is out of range")
    ('malformed', 'limit')
    >>> reason_class("binary classifier needs a bool label, got 'x'"), reason_class("event has no 'x' object")
    ('label', 'schema')
    """
    r = reason.lower()
    if "not valid json" in r or "not utf-8" in r or "could not be parsed" in r:
        return "malformed"
    if "over the limit" in r or "out of range" in r:
        return "limit"
    if "could not learn" in r:
        return "learning"
    if "label" in r:
        return "label"
    return "schema"


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def replica_of(event: Event, replicas: int) -> int:
    """The replica key: ``crc32`` of the event key (else its id, else its offset) modulo ``replicas``.

    >>> replica_of(Event("a", {}, 1, "user-1", 0, 5, None), 4) == replica_of(Event("b", {}, 0, "user-1", 1, 9, None), 4)
    True
    """
    if event.key is not None:
        token = event.key
    elif event.id is not None:
        token = event.id
    else:
        token = f"{event.partition}:{event.offset}"
    return zlib.crc32(str(token).encode()) % replicas


def replica_of_text(text: str, replicas: int, key_field: str = "key") -> int:
    """The replica key of one raw record (used when records are keyed in Python, one by one)."""
    event = parse_event(open_envelope(text), require_label=False, key_field=key_field)
    if isinstance(event, Rejected):
        return zlib.crc32(text.encode()) % replicas
    return replica_of(event, replicas)
