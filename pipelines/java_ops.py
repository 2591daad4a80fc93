"""riverflink's own Java operators (``riverflink-envelope.jar``), wired into PyFlink streams via py4j.

They exist so that per-event work that needs no Python stays in the JVM: keying
envelopes by replica, micro-batching them, and splitting batched JSON lines
back into one Kafka record each.
"""

from __future__ import annotations

from pyflink.datastream import DataStream
from pyflink.java_gateway import get_gateway


def _jvm():
    return get_gateway().jvm.riverflink


def key_and_batch(stream: DataStream, replicas: int, key_field: str, max_records: int, max_ms: int) -> DataStream:
    """Envelope lines -> ``key TAB line NEWLINE ...`` batches, one replica key per batch."""
    j = (
        stream._j_data_stream.keyBy(_jvm().ReplicaKeySelector(replicas, key_field))
        .process(_jvm().EnvelopeBatcher(max_records, max_ms))
        .name("key-and-micro-batch")
        .uid("key-and-micro-batch")
    )
    return DataStream(j)


def split_lines(stream: DataStream, name: str) -> DataStream:
    """One record per line of each string record."""
    return DataStream(stream._j_data_stream.flatMap(_jvm().LineSplitter()).name(name).uid(name))
