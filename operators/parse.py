"""Parsing and validating events; pure functions, no Flink.

An *envelope* is what the Kafka source hands to Python for every record,
whatever its bytes: ``partition:offset:timestamp:base64(key):base64(value)``
(see ``pipelines/java/.../EnvelopeDeserializationSchema.java``).  A value
source without metadata (plain strings) is accepted too, with unknown offsets.

An *event* is a JSON object::

    {"id": "e-17", "x": {"feature": 1.5, ...}, "y": true, "key": "user-3"}

``x`` maps string feature names to finite numbers; ``y`` is the label (bool,
int, float or string; required for training events, absent for requests);
``id`` and ``key`` are optional.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import zlib
from dataclasses import dataclass
from typing import Any


#: larger magnitudes overflow to inf in squares (variances, norms) and would poison a replica
MAX_ABS_FEATURE = 1e100


@dataclass(frozen=True)
class Envelope:
    partition: int | None
    offset: int | None
    timestamp: int | None
    key: bytes | None
    value: bytes


@dataclass(frozen=True)
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

    def to_json(self, topic: str) -> str:
        """The dead-letter record: reason, original bytes (base64 and text), source position."""
        return json.dumps(
            {
                "reason": self.reason,
                "topic": topic,
                "partition": self.partition,
                "offset": self.offset,
                "raw_base64": base64.b64encode(self.raw).decode(),
                "raw_text": self.raw.decode("utf-8", errors="replace")[:2000],
            }
        )


def open_envelope(text: str) -> Envelope:
    """Split an envelope line; a line that is not one is taken as a bare value.

    >>> open_envelope("0:41:1700000000000::eyJ4Ijp7fX0=")
    Envelope(partition=0, offset=41, timestamp=1700000000000, key=None, value=b'{"x":{}}')
    """
    parts = text.split(":", 4)
    if len(parts) == 5 and parts[0].isdigit() and parts[1].isdigit():
        try:
            key = base64.b64decode(parts[3], validate=True) if parts[3] else None
            value = base64.b64decode(parts[4], validate=True)
            return Envelope(int(parts[0]), int(parts[1]), int(parts[2]) if parts[2].lstrip("-").isdigit() else None, key, value)
        except (binascii.Error, ValueError):
            pass
    return Envelope(None, None, None, None, text.encode())


def parse_event(env: Envelope, *, require_label: bool, key_field: str = "key") -> Event | Rejected:
    """Validate one record.  Never raises: bad input becomes :class:`Rejected` with a reason.

    The event's key is its ``key_field`` (default ``"key"``), else the Kafka record key.

    >>> parse_event(Envelope(0, 1, None, None, b'{"x": {"a": 1}, "y": true}'), require_label=True).y
    True
    >>> parse_event(Envelope(0, 2, None, None, b'{"x": {"a": "NaN"}}'), require_label=True).reason
    "feature 'a' is not a number: 'NaN'"
    """

    def reject(reason: str) -> Rejected:
        return Rejected(reason, env.value, env.partition, env.offset)

    try:
        doc = json.loads(env.value)
    except UnicodeDecodeError:
        return reject("event is not UTF-8 text")
    except ValueError as e:
        return reject(f"event is not valid JSON: {e}")
    if not isinstance(doc, dict):
        return reject(f"event must be a JSON object, got {type(doc).__name__}")
    x = doc.get("x")
    if not isinstance(x, dict):
        return reject("event has no 'x' object of features")
    for name, v in x.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return reject(f"feature {name!r} is not a number: {v!r}")
        if not math.isfinite(v):
            return reject(f"feature {name!r} is not finite: {v!r}")
        if abs(v) > MAX_ABS_FEATURE:
            return reject(f"feature {name!r} is too large: |{v!r}| > {MAX_ABS_FEATURE:g} (its square would overflow)")
    if require_label:
        if "y" not in doc or doc["y"] is None:
            return reject("training event has no label 'y'")
        y = doc["y"]
        if not isinstance(y, (bool, int, float, str)) or (isinstance(y, float) and not math.isfinite(y)):
            return reject(f"label 'y' must be a bool, number or string, got {y!r}")
    key = doc.get(key_field)
    if key is None and env.key is not None:
        key = env.key.decode("utf-8", errors="replace")
    return Event(doc.get("id"), x, doc.get("y"), None if key is None else str(key), env.partition, env.offset, env.timestamp)


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


def batch_lines(value: str, batched: bool) -> tuple[int | None, list[str]]:
    r"""Split a micro-batch ``key TAB line NEWLINE ...`` into its key and lines; a single record otherwise.

    >>> batch_lines("3\ta\nb\n", batched=True)
    (3, ['a', 'b'])
    >>> batch_lines("a\nb", batched=False)
    (None, ['a\nb'])
    """
    if not batched:
        return None, [value]
    tab = value.index("\t")
    return int(value[:tab]), [line for line in value[tab + 1 :].split("\n") if line]

