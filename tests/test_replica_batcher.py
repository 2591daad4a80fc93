"""The JVM's replica keying (``KeyedMicroBatcher.replicaKey``) on real record frames: the key field wins, then the
Kafka record key, then the event's id, then its source position; malformed events still get a key."""

from __future__ import annotations

import zlib

import pytest

from riverflink.operators.frames import frame, open_frames

KEYS = 8


def crc(token: str) -> int:
    return zlib.crc32(token.encode()) % KEYS


@pytest.fixture(scope="module")
def replica_key():
    from riverflink.pipelines import jars
    from riverflink.pipelines.config import FlinkConfig
    from riverflink.pipelines.flink_runtime import make_env

    if jars.operators_jar() is None:
        pytest.skip("riverflink's jar was not built (no javac)")
    make_env(FlinkConfig(), "replica-key-probe")  # starts the JVM with riverflink's jars
    from pyflink.java_gateway import get_gateway

    batcher = get_gateway().jvm.riverflink.KeyedMicroBatcher
    return lambda f, key_field="key": batcher.replicaKey(f, KEYS, key_field)


@pytest.mark.integration
def test_the_key_field_then_record_key_then_id_then_position_decide(replica_key):
    value = b'{"x": {"a": 1.0, "key": "nested"}, "id": 17, "key": "user-3", "y": true}'
    assert replica_key(frame(0, 5, 1, b"rk", value)) == crc("user-3")
    assert replica_key(frame(0, 5, 1, b"rk", value), "user") == crc("rk")  # no such field: the record key
    assert replica_key(frame(0, 5, 1, None, value), "user") == crc("17")  # then the id, as written
    assert replica_key(frame(2, 41, 1, None, b'{"x": {}}')) == crc("2:41")  # then partition:offset
    assert replica_key(frame(0, 5, 1, None, b'{"id": "e-1", "key": null}')) == crc("e-1")  # null is absent
    assert replica_key(frame(0, 5, 1, None, b'{"key": 2.50}')) == crc("2.50")
    assert replica_key(frame(0, 5, 1, None, b'{"key": {"deep": [1]}, "id": 3}')) == crc("")  # a container: ""


@pytest.mark.integration
def test_malformed_oversized_and_empty_records_get_a_key_without_raising(replica_key):
    for f in (frame(1, 9, 1, None, b"\xff\xfe not json"), frame(1, 10, 1, None, b"[" * 100_000),
              frame(1, 11, 1, None, None), frame(1, 12, 1, None, b'{"key": "k"', (5_000_000, bytes(32))),
              b"\x00\x01"):
        assert 0 <= replica_key(f) < KEYS
    assert replica_key(frame(1, 9, 1, None, b"\xff\xfe not json")) == crc("1:9")
    # a truncated document still counts the key field it reached
    assert replica_key(frame(1, 12, 1, None, b'{"key": "k", "x": {"a": 1', (5_000_000, bytes(32)))) == crc("k")
    assert [e.cut_from[0] for e in open_frames(frame(1, 12, 1, None, b"{", (5_000_000, bytes(32))))] == [5_000_000]
