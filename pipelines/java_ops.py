"""riverflink's own Java operators (``riverflink-envelope.jar``), wired into PyFlink streams via py4j.

They exist so that per-event work that needs no Python stays in the JVM: keying
envelopes by replica, micro-batching them, and splitting batched JSON lines
back into one Kafka record each.
"""

from __future__ import annotations

from pyflink.common import Types
from pyflink.datastream import DataStream, KeyedStream
from pyflink.java_gateway import get_gateway

from riverflink.operators.parse import replica_of_text
from riverflink.pipelines import jars


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


def keyed_batches(raw: DataStream, keys: int, key_field: str, batch_size: int, batch_ms: int) -> tuple[KeyedStream, bool]:
    """Records keyed by ``crc32(event key) mod keys``: micro-batched in the JVM when riverflink's jar
    is there (``True``), else one record at a time keyed in Python (``False``)."""
    if jars.envelope_jar() is not None:
        batches = key_and_batch(raw, keys, key_field, batch_size, batch_ms)
        return batches.key_by(lambda b: int(b[: b.index("\t")]), key_type=Types.INT()), True
    return raw.key_by(lambda s: replica_of_text(s, keys, key_field), key_type=Types.INT()), False

