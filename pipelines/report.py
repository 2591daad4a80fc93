"""``riverflink report``: a run's learning, versions and throughput, from its topics alone.

Reads, without a consumer group, the run's ``events``, ``models`` and ``metrics`` topics and computes:

* **served quality over events**: each labelled event is predicted by the model version that was
  being served when the event was produced (the newest version created before the event's
  timestamp), against **single-node River** (the same model, fresh, predict-then-learn on the same
  events in the same order).  Accuracy for classifiers, MAE for regressors, both cumulative and
  over a rolling window;
* **model versions**: each version's creation time and the served version's age at each event;
* **events/s** learned, from the replicas' per-batch metrics records.

Writes ``quality.png``, ``versions.png``, ``throughput.png`` (matplotlib) and ``index.html`` into
``out_dir``; returns the figures as a :class:`Report`.
"""

from __future__ import annotations

import bisect
import html
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from riverflink import models
from riverflink.models.labels import LabelRule, task_of
from riverflink.operators.scoring import river_baseline
from riverflink.models.document import ModelDocument, of_dict, read_document  # noqa: F401 (of_dict: doctest)
from riverflink.operators.dead_letters import Rejected
from riverflink.operators.events import parse_event
from riverflink.operators.frames import Record
from riverflink.pipelines import kafka_io
from riverflink.pipelines.config import ConfigError, Topics


@dataclass
class Report:
    task: str
    events: int
    #: cumulative metric, accuracy (classifiers) or MAE (regressors), over the events that had a served
    #: version when they were produced; River's over the same events
    served: float
    river: float
    #: events produced before the first version existed (not in ``served`` / ``river``)
    cold_start: int
    versions: int
    median_age_ms: float
    events_per_s: float
    #: per event: (served correct or abs error, river correct or abs error, served version age in ms)
    series: list = field(default_factory=list, repr=False)
    #: (wall time, events learned) per metrics record
    learned: list = field(default_factory=list, repr=False)

    def summary(self) -> str:
        name = "accuracy" if self.task != "regression" else "MAE"
        return (f"{self.events} events ({self.cold_start} before the first version): served {name} "
                f"{self.served:.4f}, single-node River {self.river:.4f} on the others; "
                f"{self.versions} versions, median served-version age {self.median_age_ms:.0f} ms; "
                f"{self.events_per_s:.0f} events/s learned")


def _records(servers: str, topic: str, idle: float) -> list:
    """``(timestamp ms, value)`` of every record of ``topic``."""
    return [(r.timestamp, r.value) for r in kafka_io.consume_records(servers, topic, idle_timeout=idle)]


def compute(events: list, docs: list[ModelDocument], metrics: list) -> Report:
    """The report's figures from ``events`` (``(ts_ms, x, y)``), ``docs`` (model documents) and ``metrics``
    (per-batch metrics records), all in topic order.  Pure; no Kafka.

    >>> from river import linear_model
    >>> m = linear_model.LogisticRegression()
    >>> doc = models.to_wire(m, name="m", version=1, created_at=0.0)
    >>> r = compute([(1000, {"a": 1.0}, True), (2000, {"a": -1.0}, False)], [of_dict(doc)],
    ...             [{"ts": 0.0, "events": 1}, {"ts": 1.0, "events": 1}])
    >>> (r.task, r.events, r.cold_start, r.versions, r.median_age_ms, r.events_per_s)
    ('binary', 2, 0, 1, 2000.0, 2.0)
    """
    docs = sorted((d for d in docs if d.meta.created_at is not None and not d.meta.held), key=lambda d: d.meta.created_at)
    if not docs:
        raise ConfigError("no model document on the run's models topic")
    created = [d.meta.created_at * 1000 for d in docs]
    river = models.from_wire(docs[0].doc).clone()
    task, labels = task_of(river), LabelRule.for_model(river)
    built: dict = {}
    series = []
    events = [e for e in events if labels.problem(e[2]) is None]  # the job dead-lettered the others
    river_preds = river_baseline(river, [(x, y) for _, x, y in events])[2]
    for (ts, x, y), y_river in zip(events, river_preds):
        i = bisect.bisect_right(created, ts) - 1
        served_ok = None
        if i >= 0:
            if i not in built:
                built.clear()
                built[i] = models.from_wire(docs[i].doc)
            y_served = built[i].predict_one(x)
            age = ts - created[i]
        else:
            y_served, age = None, None  # cold start: nothing served yet
        if task == "regression":
            served_ok = abs(y - (y_served if y_served is not None else 0.0))
            river_ok = abs(y - (y_river if y_river is not None else 0.0))
        else:
            served_ok, river_ok = float(y_served == y), float(y_river == y)
        series.append((served_ok, river_ok, age))
    scored = [s for s in series if s[2] is not None]
    n = len(scored)
    served = sum(s[0] for s in scored) / n if n else float("nan")
    base = sum(s[1] for s in scored) / n if n else float("nan")
    ages = sorted(s[2] for s in series if s[2] is not None)
    learned = sorted((m["ts"], m.get("events", 0)) for m in metrics if isinstance(m.get("ts"), (int, float)))
    span = learned[-1][0] - learned[0][0] if len(learned) > 1 else 0.0
    rate = sum(e for _, e in learned) / span if span > 0 else 0.0
    return Report(task, len(series), served, base, len(series) - n, len(docs),
                  ages[len(ages) // 2] if ages else float("nan"), rate, series, learned)


def read_run(servers: str, topics: Topics, idle: float = 3.0) -> Report:
    """Read the run's topics and compute its :class:`Report`."""
    events = []
    for ts, value in _records(servers, topics.events, idle):
        e = parse_event(Record(None, None, ts, None, value or b""), require_label=True)
        if not isinstance(e, Rejected):
            events.append((ts, e.x, e.y))
    docs = [d for _, v in _records(servers, topics.models, idle) if (d := read_document(v))]
    metrics = []
    for _, v in _records(servers, topics.metrics, idle):
        try:
            metrics.append(orjson.loads(v))
        except orjson.JSONDecodeError:
            pass
    return compute(events, docs, [m for m in metrics if isinstance(m, dict)])


def write(report: Report, out_dir: Path, title: str, window: int = 500) -> Path:
    """``quality.png``, ``versions.png``, ``throughput.png`` and ``index.html`` in ``out_dir``; the page's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    name = "MAE" if report.task == "regression" else "accuracy"

    def rolling(values: list) -> list:
        out, total = [], 0.0
        for i, v in enumerate(values):
            total += v
            if i >= window:
                total -= values[i - window]
            out.append(total / min(i + 1, window))
        return out

    fig, ax = plt.subplots(figsize=(8, 4))
    scored = [s for s in report.series if s[2] is not None]
    ax.plot(rolling([s[0] for s in scored]), label="served (riverflink)")
    ax.plot(rolling([s[1] for s in scored]), label="single-node River")
    ax.set(xlabel="event (after the first version)", ylabel=f"{name}, last {window} events",
           title=f"{title}: served vs single-node River")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "quality.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([s[2] / 1000 if s[2] is not None else float("nan") for s in report.series])
    ax.set(xlabel="event", ylabel="served version's age (s)", title=f"{report.versions} model versions")
    fig.tight_layout()
    fig.savefig(out_dir / "versions.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    if report.learned:
        t0 = report.learned[0][0]
        buckets: dict = {}
        for t, e in report.learned:
            buckets[int(t - t0)] = buckets.get(int(t - t0), 0) + e
        xs = list(range(max(buckets) + 1))
        ax.plot(xs, [buckets.get(x, 0) for x in xs])
    ax.set(xlabel="seconds", ylabel="events learned per second", title="throughput")
    fig.tight_layout()
    fig.savefig(out_dir / "throughput.png", dpi=100)
    plt.close(fig)

    page = out_dir / "index.html"
    page.write_text(
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(report.summary())}</p>"
        "<img src='quality.png'><img src='versions.png'><img src='throughput.png'>")
    return page
