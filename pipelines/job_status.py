"""A running job's one-line status, every few seconds, read from its own topics.  No Flink import.

``riverflink train`` prints, from the ``metrics`` and ``models`` topics::

    train default: 12,400 learned, 3 dead-lettered, 1,250 events/s; 41 versions, newest v1764... (12,400 events)
    0.4 s old; lag ~0 events

``riverflink serve`` prints its answers by status from ``predictions`` and, while no version of its
model has arrived, which model names the ``models`` topic does hold.  Only records written after
the job started count (by their Kafka timestamps), so an earlier run on the same topics never
shows up as this one's progress.  The status never stops a job: a Kafka error skips one line.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import orjson

from riverflink.models.document import ModelMeta
from riverflink.models.versions import VersionReader
from riverflink.operators.records import SeenBatches
from riverflink.pipelines import kafka_io

log = logging.getLogger("riverflink")

#: seconds without any version of the served model before `serve` says which names exist
NO_MODEL_WARNING_S = 30.0


@dataclass
class TrainStatus:
    """What the training job has done since ``since`` (seconds since the epoch), from its topics."""

    model_name: str
    since: float
    learned: int = 0
    dead: int = 0
    versions: int = 0
    newest: ModelMeta | None = None
    #: partition -> highest source offset learned (metrics records' offsets)
    positions: dict[str, int] = field(default_factory=dict)
    #: (time, events learned so far) of the last two lines, for the rate
    last: tuple[float, int] = (0.0, 0)
    #: the batches counted (the metrics sink is at-least-once)
    seen: SeenBatches = field(default_factory=SeenBatches)
    #: reads ``models`` records into versions
    reader: VersionReader = field(default_factory=VersionReader)

    def add_metrics(self, value: bytes) -> None:
        try:
            m = orjson.loads(value)
        except orjson.JSONDecodeError:
            return
        if not isinstance(m, dict) or m.get("source") != "training" or not self.seen.first(m):
            return
        self.learned += int(m.get("events") or 0)
        self.dead += int(m.get("dead_lettered") or 0)
        for p, span in (m.get("offsets") or {}).items():
            if isinstance(span, list) and len(span) == 2:
                self.positions[p] = max(self.positions.get(p, -1), int(span[1]))

    def add_model(self, value: bytes) -> None:
        """A ``models`` record: a version (a whole document, or a sharded model's manifest; slices are not)."""
        meta = self.reader.read(value)
        if meta is None or meta.name != self.model_name:
            return
        self.versions += 1
        if self.newest is None or (meta.version or 0) > (self.newest.version or 0):
            self.newest = meta

    def line(self, now: float, lag: int | None = None) -> str:
        t0, n0 = self.last
        rate = (self.learned - n0) / (now - t0) if t0 and now > t0 else 0.0
        self.last = (now, self.learned)
        text = (f"train {self.model_name}: {self.learned:,} learned, {self.dead:,} dead-lettered, "
                f"{rate:,.0f} events/s; {self.versions:,} versions")
        if self.newest is not None:
            age = now - self.newest.created_at if self.newest.created_at else float("nan")
            events = "?" if self.newest.events is None else f"{self.newest.events:,}"
            text += f", newest v{self.newest.version} ({events} events) {age:.1f} s old"
        else:
            text += ", none yet"
        if lag is not None:
            text += f"; lag ~{lag:,} events"
        return text


@dataclass
class ServeStatus:
    """What the serving job has answered since ``since``, and which model names the topic holds."""

    model_name: str
    since: float
    answers: dict[str, int] = field(default_factory=dict)
    names: set = field(default_factory=set)
    version: int | None = None
    #: reads ``models`` records into versions
    reader: VersionReader = field(default_factory=VersionReader)

    def add_answer(self, value: bytes) -> None:
        for line in value.splitlines():
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(rec, dict) and rec.get("source") == "serving":
                status = str(rec.get("status"))
                self.answers[status] = self.answers.get(status, 0) + 1

    def add_model(self, value: bytes) -> None:
        """A ``models`` record: a version (a whole document, or a sharded model's manifest; slices are not)."""
        meta = self.reader.read(value)
        if meta is None or meta.name is None:
            return
        self.names.add(meta.name)
        if meta.name == self.model_name:
            self.version = max(self.version or 0, meta.version or 0)

    def line(self, now: float) -> str:
        answered = ", ".join(f"{n:,} {s}" for s, n in sorted(self.answers.items())) or "no requests yet"
        text = f"serve {self.model_name}: {answered}; model " + (f"v{self.version}" if self.version else "none yet")
        if self.version is None and now - self.since > NO_MODEL_WARNING_S:
            others = sorted(self.names - {self.model_name})
            text += (f" (no version of {self.model_name!r} on the models topic after {now - self.since:.0f} s; "
                     + (f"it holds: {', '.join(others)}" if others else "it holds no model yet") + ")")
        return text


class _Reader:
    """One topic from the beginning; only records written at or after ``since`` are handed on."""

    def __init__(self, servers: str, topic: str, since: float, handle: Callable[[bytes], None]):
        self.reader = kafka_io.TopicReader(servers, topic, create=False)  # a status line never creates a topic
        self.since_ms, self.handle = int(since * 1000), handle

    def poll(self) -> None:
        """Everything written since the last poll (a poll without a wait can return before any fetch)."""
        for _ in range(50):
            records = self.reader.poll_records(300)
            if not records:
                return
            for record in records:
                if record.timestamp >= self.since_ms:
                    self.handle(record.value)

    def close(self) -> None:
        self.reader.close()


def start(kind: str, cfg, every: float, out=None) -> threading.Event | None:
    """Print ``kind``'s (``train`` or ``serve``) status every ``every`` seconds in a daemon thread; the returned
    event stops it.  ``None`` when ``every`` is 0."""
    if not every:
        return None
    out = out or (lambda text: print(text, file=sys.stderr, flush=True))
    stop = threading.Event()
    since = time.time()
    threading.Thread(target=_loop, args=(kind, cfg, every, out, stop, since), name="riverflink-status",
                     daemon=True).start()
    return stop


def _loop(kind: str, cfg, every: float, out, stop: threading.Event, since: float) -> None:
    servers, t = cfg.bootstrap_servers, cfg.topics
    try:
        if kind == "train":
            status = TrainStatus(cfg.model_name, since)
            readers = [_Reader(servers, t.metrics, since, status.add_metrics),
                       _Reader(servers, t.models, since, status.add_model)]
        else:
            status = ServeStatus(cfg.model_name, since)
            # every version on the topic counts for serving: the newest one is served, whenever it was written
            readers = [_Reader(servers, t.predictions, since, status.add_answer),
                       _Reader(servers, t.models, 0.0, status.add_model)]
    except Exception as e:  # noqa: BLE001 - the status is a courtesy; the job runs on without it
        log.warning("no status line: %s", e)
        return
    try:
        while not stop.wait(every):
            try:
                for r in readers:
                    r.poll()
                if kind == "train":
                    out(status.line(time.time(), _lag(servers, t.events, status.positions)))
                else:
                    out(status.line(time.time()))
            except Exception as e:  # noqa: BLE001
                log.debug("status line skipped: %s", e)
    finally:
        for r in readers:
            r.close()


def _lag(servers: str, topic: str, positions: dict[str, int]) -> int | None:
    """Events on ``topic`` beyond the highest offsets learned (approximate: Tansu reports a partition's end as its
    last batch's first offset + 1)."""
    if not positions:
        return None
    ends = kafka_io.end_offsets(servers, topic)
    return sum(max(0, end - positions.get(str(p), -1) - 1) for p, end in ends.items())
