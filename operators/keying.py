"""Which replica an event goes to, when events are keyed in Python (without riverflink's jar).  Pure Python.

The JVM's ``KeyedMicroBatcher`` computes the same key on raw frames (tested
against this module in ``tests/test_replica_batcher.py``).
"""

from __future__ import annotations

import zlib

from riverflink.operators.dead_letters import Rejected
from riverflink.operators.events import Event, parse_event
from riverflink.operators.frames import open_value


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
    event = parse_event(open_value(text), require_label=False, key_field=key_field)
    if isinstance(event, Rejected):
        return zlib.crc32(text.encode()) % replicas
    return replica_of(event, replicas)
