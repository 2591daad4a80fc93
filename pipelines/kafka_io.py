"""Plain Kafka clients (kafka-python) for the CLI, the demo and the tests.

Every client here takes the process's Kafka properties (:func:`riverflink.pipelines.kafka_config.current`:
``--kafka-config``, ``$RIVERFLINK_KAFKA_CONFIG``, ``--kafka-property``).
"""

from __future__ import annotations

import json
import socket
import struct
import time
from typing import Iterable, Iterator

from riverflink.pipelines import kafka_config
from riverflink.pipelines.config import ConfigError, check_bootstrap


def _client_settings() -> dict:
    return kafka_config.current().for_python()


#: ApiVersions v0 request, correlation id 0x52464c4b ("RFLK"), client id "riverflink"
_API_VERSIONS = struct.pack(">hhih", 18, 0, 0x52464C4B, 10) + b"riverflink"


def check_reachable(servers: str, timeout: float = 5.0) -> None:
    """Fail with one line, within ``timeout`` seconds per server, unless a bootstrap server answers
    a Kafka ApiVersions request (a port that accepts TCP but does not speak Kafka is refused too).
    Over TLS only the TCP connection is checked (the client's own handshake reports the rest)."""
    check_bootstrap(servers)
    tls = kafka_config.current().tls
    errors = []
    for hp in servers.split(","):
        host, port = hp.strip().rsplit(":", 1)
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
                if tls:
                    return
                sock.settimeout(timeout)
                sock.sendall(struct.pack(">i", len(_API_VERSIONS)) + _API_VERSIONS)
                head = b""
                while len(head) < 8:
                    chunk = sock.recv(8 - len(head))
                    if not chunk:
                        break
                    head += chunk
                if len(head) == 8 and struct.unpack(">ii", head)[1] == 0x52464C4B:
                    return
                errors.append(f"{hp}: accepts TCP but does not answer as a Kafka broker")
        except OSError as e:
            errors.append(f"{hp}: {e.strerror or e}")
    raise ConfigError(f"Kafka unreachable at {servers} ({'; '.join(errors)})")


def admin(servers: str):
    from kafka import KafkaAdminClient

    check_reachable(servers)
    return KafkaAdminClient(bootstrap_servers=servers, **{"request_timeout_ms": 10000, **_client_settings()})


def topic_names(servers: str) -> set[str]:
    """The topics the cluster has."""
    client = admin(servers)
    try:
        return set(client.list_topics())
    finally:
        client.close()


def create_topics(servers: str, topics: dict[str, int], replication_factor: int = -1,
                  configs: dict[str, dict[str, str]] | None = None) -> None:
    """Create ``{name: partitions}`` topics; existing ones are left as they are.

    ``replication_factor`` -1 is the broker's default (``default.replication.factor``);
    ``configs`` maps a topic to its topic configs (``cleanup.policy`` ...).
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    client = admin(servers)
    try:
        existing = set(client.list_topics())
        new = [NewTopic(n, p, replication_factor, topic_configs=(configs or {}).get(n, {}))
               for n, p in topics.items() if n not in existing]
        if new:
            try:
                client.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        client.close()


def producer(servers: str, **overrides):
    """A kafka-python producer for ``servers`` (``overrides``: any KafkaProducer setting)."""
    from kafka import KafkaProducer

    check_reachable(servers)
    settings = dict(linger_ms=5, acks=1, max_block_ms=15000, request_timeout_ms=15000)
    return KafkaProducer(bootstrap_servers=servers, **{**settings, **_client_settings(), **overrides})


def produce(servers: str, topic: str, values: Iterable[bytes], keys: Iterable[bytes | None] | None = None) -> int:
    """Send every value, wait for all acks, return the count."""
    p = producer(servers)
    futures = []
    key_iter = iter(keys) if keys is not None else None
    try:
        for v in values:
            k = next(key_iter) if key_iter is not None else None
            futures.append(p.send(topic, value=v, key=k))
        p.flush()
        for f in futures:
            f.get(timeout=30)
    finally:
        p.close()
    return len(futures)


def consume(servers: str, topic: str, *, from_beginning: bool = True,
            idle_timeout: float | None = None) -> Iterator[bytes]:
    """Yield values of ``topic`` as they arrive; stops after ``idle_timeout`` seconds without one."""
    for record in consume_records(servers, topic, from_beginning=from_beginning, idle_timeout=idle_timeout):
        yield record.value


def consume_records(servers: str, topic: str, *, from_beginning: bool = True,
                    idle_timeout: float | None = None) -> Iterator:
    """Like :func:`consume`, but whole kafka-python records (``.value``, ``.timestamp``, ``.offset``...)."""
    from kafka import KafkaConsumer

    check_reachable(servers)
    c = KafkaConsumer(
        topic,
        bootstrap_servers=servers,
        group_id=None,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
        consumer_timeout_ms=int(1000 * idle_timeout) if idle_timeout else float("inf"),
        session_timeout_ms=10000,
        heartbeat_interval_ms=1000,
        **_client_settings(),
    )
    try:
        yield from c
    finally:
        c.close()


def _tail_starts(consumer, servers: str, topic: str, last: int) -> dict:
    """``{TopicPartition: max(earliest, end - last)}`` for every partition of ``topic``."""
    from kafka import TopicPartition

    parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise ConfigError(f"topic {topic!r} not found on {servers}")
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    begin, end = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
    return {tp: max(begin[tp], end[tp] - last) for tp in tps}


def tail_offsets(servers: str, topic: str, last: int) -> dict[int, int]:
    """``{partition: max(earliest, end - last)}``: where the ``last`` newest records of each partition begin."""
    from kafka import KafkaConsumer

    check_reachable(servers)
    c = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, group_id=None, **_client_settings())
    try:
        return {tp.partition: o for tp, o in _tail_starts(c, servers, topic, last).items()}
    finally:
        c.close()


def read_tail(servers: str, topic: str, last: int, idle_timeout: float = 1.0) -> list[bytes]:
    """The values of about the ``last`` newest records of each partition of ``topic`` (oldest first per
    partition), without reading the rest: each partition is read from ``end - last`` to its end."""
    from kafka import KafkaConsumer

    check_reachable(servers)
    c = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, group_id=None,
                      consumer_timeout_ms=int(1000 * idle_timeout), **_client_settings())
    try:
        starts = _tail_starts(c, servers, topic, last)
        c.assign(list(starts))
        for tp, offset in starts.items():
            c.seek(tp, offset)
        return [m.value for m in c]
    finally:
        c.close()


def end_offsets(servers: str, topic: str) -> dict[int, int]:
    """``{partition: end offset}`` of ``topic`` (Tansu: the last batch's first offset + 1, DESIGN.md)."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, group_id=None,
                      allow_auto_create_topics=False, **_client_settings())
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        return {tp.partition: end for tp, end in c.end_offsets(tps).items()} if tps else {}
    finally:
        c.close()


class TopicReader:
    """Polls one topic from the beginning without a consumer group; for counting outputs (which count a record
    read twice once: the jobs' sinks are at-least-once, and a reset position re-reads)."""

    def __init__(self, servers: str, topic: str, create: bool = True, fetch_max_wait_ms: int = 500):
        """``create=False``: never let the broker create ``topic`` by asking for it (a bystander's reader).
        ``fetch_max_wait_ms``: how long a fetch may wait for records (kafka-python's default, 500; a latency
        measurement wants it short: the broker may hold a fetch that long)."""
        from kafka import KafkaConsumer, TopicPartition

        check_reachable(servers)
        # a position the client resets (an out-of-range fetch, a failed leader-epoch check: kafka-python's reset
        # paths) goes back to the start, never to the end, so a reset can repeat records but never skip them
        self.consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, group_id=None,
                                      auto_offset_reset="earliest", allow_auto_create_topics=create,
                                      fetch_max_wait_ms=fetch_max_wait_ms, **_client_settings())
        deadline = time.time() + 20
        parts = None
        while not parts and time.time() < deadline:
            parts = self.consumer.partitions_for_topic(topic)
            if not parts:
                time.sleep(0.2)
        if not parts:
            raise ConfigError(f"topic {topic!r} not found on {servers}")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)

    def poll(self, timeout_ms: int = 200) -> list[bytes]:
        return [r.value for r in self.poll_records(timeout_ms)]

    def poll_records(self, timeout_ms: int = 200) -> list:
        """Whole kafka-python records (``.value``, ``.timestamp``, ``.offset``...), in partition order."""
        out = []
        for records in self.consumer.poll(timeout_ms=timeout_ms, max_records=5000).values():
            out.extend(records)
        return out

    def poll_json(self, timeout_ms: int = 200) -> list:
        out = []
        for v in self.poll(timeout_ms):
            try:
                out.append(json.loads(v))
            except ValueError:
                out.append(None)
        return out

    def close(self) -> None:
        self.consumer.close()
