"""riverflink's own Java operators (``riverflink-operators.jar``), wired into PyFlink streams via py4j.

They exist so that per-event work that needs no Python stays in the JVM: keying
record frames by replica and micro-batching them before the shuffle, and
splitting batched JSON lines back into one Kafka record each.
"""

from __future__ import annotations

from pyflink.common import Types
from pyflink.datastream import DataStream, KeyedStream
from pyflink.java_gateway import get_gateway

from riverflink.operators.keying import replica_of_text
from riverflink.pipelines import jars

#: a batch is emitted once its frames reach this many bytes, whatever its count
BATCH_MAX_BYTES = 4 << 20


def _jvm():
    return get_gateway().jvm.riverflink


def key_and_batch(frames: DataStream, keys: int, key_field: str | None, max_records: int, max_ms: int,
                  more: DataStream | None = None) -> KeyedStream:
    """Record frames -> one batch of frames per replica key, keyed by it.

    ``key_field=None``: records are not keyed by content; each source subtask
    fills one batch at a time and hands successive batches to successive keys
    (serving, where keys only spread the load: batches stay as large as the
    traffic allows).

    ``KeyedMicroBatcher`` runs chained to the source (no shuffle before it) and
    emits ``Row(key, frames)``; the batches are keyed on field 0 in the JVM
    (PyFlink's own ``key_by`` would run a Python key selector, a second round
    trip through Python for every batch).  The keyed stream's records are the
    frames (``bytes`` in Python).  ``more``: a stream of ``Row(key, frames)`` already keyed, joined to the
    batches before the ``keyBy`` (the replicas' pull answers).
    """
    gateway = get_gateway()
    rows = Types.ROW([Types.INT(), Types.PRIMITIVE_ARRAY(Types.BYTE())])
    j_rows = (
        frames._j_data_stream.transform(
            "key-and-micro-batch", rows.get_java_type_info(),
            _jvm().KeyedMicroBatcher(keys, key_field, max_records, BATCH_MAX_BYTES, max_ms))
        .uid("key-and-micro-batch")
    )
    if more is not None:
        j_rows = DataStream(j_rows).union(more)._j_data_stream
    j_keyed = j_rows.keyBy(gateway.jvm.KeyByKeySelector(), Types.ROW([Types.INT()]).get_java_type_info())
    return KeyedStream(j_keyed, Types.PRIMITIVE_ARRAY(Types.BYTE()), DataStream(j_rows))


def keyed_rows(rows: DataStream, key_type, value_type) -> KeyedStream:
    """A stream of ``Row(key, value)`` keyed on the key in the JVM, as :func:`key_and_batch` keys its batches
    (PyFlink's own ``key_by`` runs a Python key selector, an operator of its own where it cannot chain: after a
    union).  The keyed stream's records are the values."""
    gateway = get_gateway()
    j_keyed = rows._j_data_stream.keyBy(gateway.jvm.KeyByKeySelector(), Types.ROW([key_type]).get_java_type_info())
    return KeyedStream(j_keyed, value_type, rows)


def split_lines(stream: DataStream, name: str) -> DataStream:
    """One record per line of each string record."""
    return DataStream(stream._j_data_stream.flatMap(_jvm().LineSplitter()).name(name).uid(name))


def keyed_batches(raw: DataStream, keys: int, key_field: str | None, batch_size: int,
                  batch_ms: int, more: DataStream | None = None) -> tuple[KeyedStream, bool]:
    """Records keyed by ``crc32(event key) mod keys`` (``key_field=None``: batches spread over the keys in
    turn): frames micro-batched in the JVM when riverflink's jar is there (``True``), else one record at a
    time keyed in Python (``False``; ``more``, rows of frames already keyed, come from the jar's own sources)."""
    if jars.operators_jar() is not None:
        return key_and_batch(raw, keys, key_field, batch_size, batch_ms, more), True
    return raw.key_by(lambda s: replica_of_text(s, keys, key_field or "key"), key_type=Types.INT()), False
