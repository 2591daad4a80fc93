"""Kafka records as Python sees them, whatever their bytes: the binary record-frame codec.  Pure Python.

A :class:`Record` is one Kafka record: partition, offset, timestamp, key and
value.  The JVM hands Python batches of binary *record frames*
(``pipelines/java/riverflink/RecordFrameDeserializationSchema.java``, read by
:func:`open_frames`); a value over the size limit arrives cut to its first
bytes, with the whole value's length and SHA-256.  Without riverflink's jar
the source hands over plain value strings (:func:`open_value`), with unknown
offsets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


#: the partition a user-factor record's frame (``<models>.users``, :mod:`~riverflink.models.user_factors`) carries in
#: place of its own, in the serving and the training job (no event's or request's frame can have it)
USER_PARTITION = -3


@dataclass(frozen=True, slots=True)
class Record:
    partition: int | None
    offset: int | None
    timestamp: int | None
    key: bytes | None
    value: bytes
    #: set when the source cut an oversized value: the whole value's length and SHA-256 (hex)
    cut_from: tuple[int, str] | None = None


def open_value(text: str) -> Record:
    """A plain value string (a source without riverflink's jar) as an record with unknown position.

    >>> open_value('{"x":{}}')
    Record(partition=None, offset=None, timestamp=None, key=None, value=b'{"x":{}}', cut_from=None)
    """
    return Record(None, None, None, None, text.encode())


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


def open_frames(batch: bytes) -> list[Record]:
    """The records of a batch of concatenated record frames (see the module docstring).

    A batch the JVM built is well formed by construction; a truncated tail
    (never expected) becomes one last record holding the leftover bytes,
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
            out.append(Record(None, None, None, None, bytes(batch[pos:])))
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
        out.append(Record(partition, offset, timestamp, key, value, cut_from))
    return out


def records(value: bytes | str, batched: bool) -> list[Record]:
    """The records of one input record of a training or serving operator: a batch of frames from the
    JVM (``batched``), else one plain value string."""
    return open_frames(value) if batched else [open_value(value)]
