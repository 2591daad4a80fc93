"""The peers a user would run instead of riverflink: one Python process that consumes Kafka and learns with River.

Two peers, each predict-then-learn on every event of a topic pre-loaded with
:func:`preload` (JSON ``{"x": {...}, "y": ...}``, the training job's event
shape):

* :func:`kafka_python_peer`: a kafka-python ``KafkaConsumer`` loop;
* :func:`quix_peer`: a Quix Streams application (``quixstreams``, in the
  ``bench`` extra: ``pip install -e '.[bench]'``); ``None`` when it is not
  installed.

``step(x, y)`` is the user's code (predict, score, learn); ``unpack`` takes ``(x, y)`` from an event (default:
its ``x`` and ``y``; a recommender's bench passes ``((user, item), y)``).  Each returns a
:class:`PeerRun` timed from the first event it read to the last (a consumer
group's join is left out: Quix's took about 23 s on the embedded broker), with
the CPU of this process (every thread: the clients' network threads too) and
of the broker over that window, read from ``/proc``.  Only 127.0.0.1 brokers
are used by the benches that call these.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

import orjson

from bench.throughput import cpu_seconds
from riverflink.pipelines import kafka_io
from riverflink.pipelines.sources import encode_events

Step = Callable[[dict, Any], None]
Unpack = Callable[[dict], tuple]


def features_and_label(event: dict) -> tuple:
    return event["x"], event["y"]


@dataclass(frozen=True)
class PeerRun:
    """One peer's pass over ``events`` events: wall and CPU seconds from its first event to its last."""

    name: str
    events: int
    wall_s: float
    #: this process (every thread) and the broker process
    cpu_s: float
    broker_cpu_s: float

    @property
    def events_per_s(self) -> float:
        return self.events / max(self.wall_s, 1e-9)

    @property
    def cpu_us(self) -> float:
        """CPU-µs per event, the peer's process and the broker together."""
        return 1e6 * (self.cpu_s + self.broker_cpu_s) / max(1, self.events)


def preload(bootstrap: str, topic: str, events: list) -> None:
    """Produce ``events`` (``(x, y)`` pairs) to ``topic`` as the training job's JSON events, in order."""
    kafka_io.produce(bootstrap, topic, encode_events(events))


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 when it is gone)."""
    return cpu_seconds([pid]).get(pid, 0.0)


class _Window:
    """CPU and wall clocks opened at the first event and read at the last."""

    def __init__(self, broker_pid: int | None) -> None:
        self.broker_pid, self.opened = broker_pid, None

    def open(self) -> None:
        self.opened = (time.perf_counter(), time.process_time(),
                       process_cpu_s(self.broker_pid) if self.broker_pid else 0.0)

    def close(self, name: str, events: int) -> PeerRun:
        wall, cpu, broker = self.opened
        return PeerRun(name, events, time.perf_counter() - wall, time.process_time() - cpu,
                       (process_cpu_s(self.broker_pid) - broker) if self.broker_pid else 0.0)


def kafka_python_peer(bootstrap: str, topic: str, n: int, step: Step, broker_pid: int | None = None,
                      timeout_s: float = 600.0, unpack: Unpack = features_and_label) -> PeerRun:
    """A kafka-python consumer (no group: it reads every partition from the start) calling ``step`` on the
    first ``n`` events of ``topic``."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=int(1000 * timeout_s))
    window, seen = _Window(broker_pid), 0
    try:
        for record in consumer:
            if seen == 0:
                window.open()
            step(*unpack(orjson.loads(record.value)))
            seen += 1
            if seen >= n:
                break
        return window.close("kafka-python + River", seen)
    finally:
        consumer.close()


def quix_peer(bootstrap: str, topic: str, n: int, step: Step, broker_pid: int | None = None,
              unpack: Unpack = features_and_label) -> PeerRun | None:
    """A Quix Streams application (a fresh consumer group, from the earliest offset) calling ``step`` on the
    first ``n`` events of ``topic``; ``None`` when ``quixstreams`` is not installed."""
    try:
        from quixstreams import Application
    except ImportError:
        return None
    state_dir = tempfile.TemporaryDirectory(prefix="riverflink-quix-")  # (Quix makes one, even when stateless)
    app = Application(broker_address=bootstrap, consumer_group=f"peer-{time.time_ns()}", state_dir=state_dir.name,
                      auto_offset_reset="earliest", auto_create_topics=False, loglevel="WARNING")
    window, seen = _Window(broker_pid), [0]

    def on_event(event: dict) -> None:
        if seen[0] == 0:
            window.open()
        step(*unpack(event))
        seen[0] += 1
        if seen[0] >= n:
            app.stop()

    app.dataframe(app.topic(topic, value_deserializer="json")).update(on_event)
    try:
        app.run()
    finally:
        state_dir.cleanup()
    return window.close("Quix Streams + River", seen[0])
