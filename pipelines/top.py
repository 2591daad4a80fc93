"""``riverflink top``: a live terminal view of a training run (rich), from its ``metrics`` and ``models`` topics.

Per replica: events learned, progressive accuracy (or MAE) over its last batches, base version, dead
letters.  Overall: events learned and dead-lettered, events/s over the last 5 s, and the newest model
version with its event count, age and quality-gate state.  A batch's metrics record counts once (the sink is
at-least-once: :class:`~riverflink.operators.records.SeenBatches`).

One job only: every metrics record names the job that wrote it (``job``: model name and start time),
and the view follows the newest job on the topic, so two runs on one topic never mix.  Rates count
records by their own timestamps: history replayed at start-up shows as history, not as events/s.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from riverflink.models.document import ModelMeta
from riverflink.models.versions import VersionReader
from riverflink.operators.records import SeenBatches


@dataclass
class ReplicaView:
    events: int = 0
    dead: int = 0
    base_version: int = 0
    #: the replica's clock gap at its newest batch (syncs the merged model lacks on some shard), and that batch's time
    clock_gap: int = 0
    gap_ts: float = 0.0
    #: --working-set: the features the replica held and the events waiting for pulls, at its newest batch
    working_set: int | None = None
    waiting: int = 0
    #: (events, correct, abs_error) of the last batches
    recent: deque = field(default_factory=lambda: deque(maxlen=20))


@dataclass
class RunView:
    """What ``top`` shows, updated record by record (pure; no Kafka, no terminal)."""

    task: str = "binary"
    replicas: dict = field(default_factory=dict)
    #: (record time, events) of recent batches
    arrivals: deque = field(default_factory=lambda: deque(maxlen=10_000))
    model: ModelMeta | None = None
    #: the job followed (the newest seen); records of other jobs are skipped
    job: str | None = None
    #: records from before this view started (replayed history)
    replayed: int = 0
    newest_ts: float = 0.0
    started: float = field(default_factory=time.time)
    #: the batches counted, so that a record written twice counts once
    seen: SeenBatches = field(default_factory=SeenBatches)
    #: reads ``models`` records into versions
    versions: VersionReader = field(default_factory=VersionReader)

    def add_metrics(self, m: dict) -> None:
        if not isinstance(m, dict) or "replica" not in m:
            return
        job, ts = m.get("job"), float(m.get("ts") or 0.0)
        if job != self.job:
            if self.job is not None and ts <= self.newest_ts:
                return  # an older job's record
            self._follow(job)
        self.newest_ts = max(self.newest_ts, ts)
        if not self.seen.first(m):
            return
        r = self.replicas.setdefault(m["replica"], ReplicaView())
        events = int(m.get("events") or 0)
        r.events += events
        r.dead += int(m.get("dead_lettered") or 0)
        r.base_version = max(r.base_version, int(m.get("model_version") or 0))
        if ts >= r.gap_ts:
            r.clock_gap, r.gap_ts = int(m.get("clock_gap") or 0), ts
            if "working_set" in m:
                r.working_set, r.waiting = int(m["working_set"] or 0), int(m.get("waiting") or 0)
        self.task = m.get("task") or self.task
        if events:
            r.recent.append((events, m.get("correct", 0), m.get("abs_error", 0.0)))
            self.arrivals.append((ts, events))
            if ts < self.started:
                self.replayed += events

    def _follow(self, job: str | None) -> None:
        """A newer job wrote to the topic: show it alone, from scratch."""
        self.job, self.replicas, self.arrivals, self.replayed = job, {}, deque(maxlen=10_000), 0
        self.seen = SeenBatches()
        name = self.model_name
        if self.model is not None and name is not None and self.model.name != name:
            self.model = None

    @property
    def model_name(self) -> str | None:
        return self.job.rsplit("@", 1)[0] if self.job else None

    def add_model(self, value: bytes) -> None:
        """A ``models`` record: a version (a whole document, or a sharded model's manifest; slices are not)."""
        meta = self.versions.read(value)
        if meta is None or (self.model_name is not None and meta.name != self.model_name):
            return
        if self.model is None or (meta.version or 0) > (self.model.version or 0):
            self.model = meta

    def quality(self, r: ReplicaView) -> str:
        n = sum(e for e, _, _ in r.recent)
        if not n:
            return "-"
        if self.task == "regression":
            return f"MAE {sum(a for _, _, a in r.recent) / n:.3f}"
        return f"acc {sum(c for _, c, _ in r.recent) / n:.3f}"

    def rate(self, now: float, span: float = 5.0) -> float:
        """Events/s over the last ``span`` seconds, by the records' own timestamps (replays count as history)."""
        return sum(e for t, e in self.arrivals if now - t <= span) / span

    def table(self, title: str):
        from rich.table import Table

        now = time.time()
        t = Table(title=title, caption=self.caption(now))
        working = any(r.working_set is not None for r in self.replicas.values())
        for col in ("replica", "events", "recent", "base version", "clock gap", "dead-lettered") + (
                ("working set", "waiting") if working else ()):
            t.add_column(col, justify="right")
        for k in sorted(self.replicas, key=str):
            r = self.replicas[k]
            t.add_row(str(k), str(r.events), self.quality(r), str(r.base_version), str(r.clock_gap), str(r.dead),
                      *((str(r.working_set if r.working_set is not None else "-"), str(r.waiting)) if working else ()))
        return t

    def caption(self, now: float) -> str:
        learned = sum(r.events for r in self.replicas.values())
        dead = sum(r.dead for r in self.replicas.values())
        text = f"{learned} learned, {dead} dead-lettered, {self.rate(now):.0f} events/s"
        if self.replayed:
            text += f" ({self.replayed} of them learned before this view started)"
        if self.model:
            age = now - (self.model.created_at or now)
            held = self.model.held
            events = "?" if self.model.events is None else f"{self.model.events}"
            text += (f"; model version {self.model.version} ({events} events, "
                     f"{age:.1f} s old{', held: ' + str(held)[:60] if held else ''})")
        return text


def newest_run(servers: str, metrics_topic: str = "metrics") -> str | None:
    """The run id (``metrics-RUN``) whose metrics topic was written last, ``""`` for ``metrics_topic`` itself, or
    ``None`` when no metrics topic holds a record."""
    import orjson

    from riverflink.pipelines import kafka_io

    best, newest = None, 0.0
    for topic in sorted(kafka_io.topic_names(servers)):
        if topic != metrics_topic and not topic.startswith("metrics-"):
            continue
        for value in kafka_io.read_tail(servers, topic, 4):
            try:
                ts = float(orjson.loads(value).get("ts") or 0.0)
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                continue
            if ts > newest:
                best, newest = ("" if topic == metrics_topic else topic[len("metrics-"):]), ts
    return best


def run(servers: str, metrics_topic: str, models_topic: str, title: str, duration: float | None = None,
        out=None, plain: bool = False) -> RunView:
    """Follow both topics and redraw about once a second; until Ctrl-C, or ``duration`` seconds.

    ``plain``: no live redraw, one caption line per second (for a log or a pipe).
    """
    from rich.console import Console
    from rich.live import Live

    from riverflink.pipelines import kafka_io

    view = RunView()
    metrics, models = kafka_io.TopicReader(servers, metrics_topic), kafka_io.TopicReader(servers, models_topic)
    console = out or Console()
    end = None if duration is None else time.time() + duration

    def poll() -> None:
        for m in metrics.poll_json(300):
            view.add_metrics(m)
        for v in models.poll(0):
            view.add_model(v)

    def heading() -> str:
        return f"{title}: job {view.job}" if view.job else f"{title}: no job has written yet"

    try:
        if plain:
            while end is None or time.time() < end:
                poll()
                console.print(f"{heading()}: {view.caption(time.time())}", highlight=False)
                time.sleep(1.0)
        else:
            with Live(view.table(heading()), console=console, refresh_per_second=2) as live:
                while end is None or time.time() < end:
                    poll()
                    live.update(view.table(heading()))
    except KeyboardInterrupt:
        pass
    finally:
        metrics.close()
        models.close()
    return view
