"""``PullAnswerRows``: records of the ``pulls`` topic -> ``Row(replica key, frame)`` for the replicas' keyed input.

The merger shards write each answer under its replica's id as the Kafka key
(:mod:`riverflink.operators.pulls`).  This function hands it to that replica: it
re-frames the record at :data:`~riverflink.operators.pulls.PULL_PARTITION` (no
event's frame has a negative partition, so the replica can tell an answer from
an event whatever their bytes) and keys it by the replica.  A record whose key
is not a replica of this job is dropped and counted (``pull_answers_unkeyed``):
no replica asked for it.
"""

from __future__ import annotations

from pyflink.common import Row
from pyflink.datastream.functions import FlatMapFunction, RuntimeContext

from riverflink.operators.frames import frame, open_frames
from riverflink.operators.pulls import PULL_PARTITION


class PullAnswerRows(FlatMapFunction):
    def __init__(self, replicas: int):
        self.replicas = replicas

    def open(self, ctx: RuntimeContext):
        self.m_unkeyed = ctx.get_metrics_group().add_group("riverflink").counter("pull_answers_unkeyed")

    def flat_map(self, value: bytes):
        for record in open_frames(value):
            key = replica_key(record.key, self.replicas)
            if key is None:
                self.m_unkeyed.inc()
                continue
            yield Row(key, frame(PULL_PARTITION, record.offset or 0, record.timestamp or 0, None, record.value))


def replica_key(key: bytes | None, replicas: int) -> int | None:
    """The replica a ``pulls`` record's Kafka key names, or ``None``.

    >>> replica_key(b"3", 4), replica_key(b"4", 4), replica_key(b"x", 4), replica_key(None, 4)
    (3, None, None, None)
    """
    try:
        k = int(key) if key is not None and len(key) <= 10 else -1
    except ValueError:
        return None
    return k if 0 <= k < replicas else None
