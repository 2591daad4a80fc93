"""Dead letters: a rejected record, the JSON it becomes on ``<events>.dlq``, and its reason class.  Pure Python."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

import orjson

from riverflink.operators.limits import DEFAULT_LIMITS


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
