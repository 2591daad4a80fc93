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
from typing import Any

import orjson

from riverflink import models
from riverflink.models.labels import LabelRule, kind_problem, label_kind, task_of
from riverflink.operators.scoring import river_baseline
from riverflink.models.document import of_dict, read_document  # noqa: F401 (of_dict: doctest)
from riverflink.models.manifest import read_manifest
from riverflink.operators.dead_letters import Rejected
from riverflink.operators.events import parse_event
from riverflink.operators.frames import Record
from riverflink.operators.model_feed import Accepted, FeedRules, ModelFeed, entry_model
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
    #: per event, in time order: (served correct or abs error, river correct or abs error, served version age in
    #: ms, event time in ms)
    series: list = field(default_factory=list, repr=False)
    #: (wall time, events learned) per metrics record
    learned: list = field(default_factory=list, repr=False)

    def summary(self) -> str:
        name = "accuracy" if self.task != "regression" else "MAE"
        return (f"{self.events} events ({self.cold_start} before the first version): served {name} "
                f"{self.served:.4f}, single-node River {self.river:.4f} on the others; "
                f"{self.versions} versions, median served-version age {self.median_age_ms:.0f} ms; "
                f"{self.events_per_s:.0f} events/s learned (over the seconds in which replicas learned)")


def _records(servers: str, topic: str, idle: float) -> list:
    """``(timestamp ms, value)`` of every record of ``topic``."""
    return [(r.timestamp, r.value) for r in kafka_io.consume_records(servers, topic, idle_timeout=idle)]


def _model(version) -> Any:
    """The estimator of a version: a model document rebuilt, or an assembled version's slices joined."""
    return entry_model(version) if isinstance(version, Accepted) else models.from_wire(version.doc)


def compute(events: list, docs: list, metrics: list) -> Report:
    """The report's figures from ``events`` (``(ts_ms, x, y)``), ``docs`` (the versions: model documents, or a
    sharded model's assembled versions, :func:`assembled_versions`) and ``metrics`` (per-batch metrics records),
    all in topic order.  Pure; no Kafka.

    >>> from river import linear_model
    >>> m = linear_model.LogisticRegression()
    >>> doc = models.to_wire(m, name="m", version=1, created_at=0.0)
    >>> r = compute([(1000, {"a": 1.0}, True), (2000, {"a": -1.0}, False)], [of_dict(doc)],
    ...             [{"ts": 0.0, "events": 1}, {"ts": 1.0, "events": 1}])
    >>> (r.task, r.events, r.cold_start, r.versions, r.median_age_ms, r.events_per_s)
    ('binary', 2, 0, 1, 2000.0, 1.0)
    """
    docs = sorted((d for d in docs if d.meta.created_at is not None and not d.meta.held), key=lambda d: d.meta.created_at)
    if not docs:
        raise ConfigError("no model document on the run's models topic")
    created = [d.meta.created_at * 1000 for d in docs]
    river = _model(docs[0]).clone()
    task, labels = task_of(river), LabelRule.for_model(river)
    built: dict = {}
    series = []
    # time order (a topic's partitions interleave in time, not in topic order); the job dead-lettered the others
    events = sorted((e for e in events if labels.problem(e[2]) is None), key=lambda e: e[0])
    if task in ("binary", "multiclass"):  # and labels of another kind than the stream's first (one kind a stream)
        kinds = {label_kind(events[0][2])} if events else set()
        events = [e for e in events if kind_problem(e[2], kinds) is None]
    river_preds = river_baseline(river, [(x, y) for _, x, y in events])[2]
    for (ts, x, y), y_river in zip(events, river_preds):
        i = bisect.bisect_right(created, ts) - 1
        served_ok = None
        if i >= 0:
            if i not in built:
                built.clear()
                built[i] = _model(docs[i])
            y_served = built[i].predict_one(x)
            age = ts - created[i]
        else:
            y_served, age = None, None  # cold start: nothing served yet
        if task == "regression":
            served_ok = abs(y - (y_served if y_served is not None else 0.0))
            river_ok = abs(y - (y_river if y_river is not None else 0.0))
        else:
            served_ok, river_ok = float(y_served == y), float(y_river == y)
        series.append((served_ok, river_ok, age, ts))
    scored = [s for s in series if s[2] is not None]
    n = len(scored)
    served = sum(s[0] for s in scored) / n if n else float("nan")
    base = sum(s[1] for s in scored) / n if n else float("nan")
    ages = sorted(s[2] for s in series if s[2] is not None)
    learned = sorted((m["ts"], m.get("events", 0)) for m in metrics if isinstance(m.get("ts"), (int, float)))
    active = len({int(t) for t, e in learned if e})  # seconds in which anything was learned: idle time left out
    rate = sum(e for _, e in learned) / active if active else 0.0
    return Report(task, len(series), served, base, len(series) - n, len(docs),
                  ages[len(ages) // 2] if ages else float("nan"), rate, series, learned)


def assembled_versions(records: list, verifier=None) -> list[Accepted]:
    """A sharded model's versions from its ``models`` records (``(timestamp ms, value)``): offered in time order to
    the readers' own :class:`~riverflink.operators.model_feed.ModelFeed`, which assembles a version from exactly the
    slices its manifest names, as the serving job did (with ``verifier``, from signed records only).  Slices of
    other models and versions it passed over are left out."""
    name = next(m.name for _, v in records if (m := read_manifest(v)) is not None)
    feed = ModelFeed(FeedRules(name, verifier=verifier))
    return [entry for entry, _ in feed.versions(v for _, v in sorted(records, key=lambda r: r[0]))]


def read_run(servers: str, topics: Topics, idle: float = 3.0, verifier=None) -> Report:
    """Read the run's topics and compute its :class:`Report`; with ``verifier``, only the versions it verifies."""
    events = []
    for ts, value in _records(servers, topics.events, idle):
        e = parse_event(Record(None, None, ts, None, value or b""), require_label=True)
        if not isinstance(e, Rejected):
            events.append((ts, e.x, e.y))
    records = _records(servers, topics.models, idle)
    if any(read_manifest(v) is not None for _, v in records):
        docs = assembled_versions(records, verifier)
    else:
        docs = [d for _, v in records if (d := read_document(v))]
        if verifier is not None:
            from riverflink.models.signing import verify

            docs = [d for d in docs if verify(d.doc, verifier) is None]
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

    t0 = report.series[0][3] if report.series else 0
    scored = [s for s in report.series if s[2] is not None]
    when = [(s[3] - t0) / 1000 for s in scored]
    served_curve, river_curve = rolling([s[0] for s in scored]), rolling([s[1] for s in scored])
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(when, served_curve, label="served (riverflink)")
    ax.plot(when, river_curve, label="single-node River")
    settled = served_curve[window:] + river_curve[window:]  # the first window's spike would flatten the rest
    if settled:
        lo, hi = min(settled), max(settled)
        pad = max(0.002, 0.1 * (hi - lo))
        ax.set_ylim(lo - pad, hi + pad)
    ax.set(xlabel="seconds since the run's first event", ylabel=f"{name}, last {window} events",
           title=f"{title}: served vs single-node River")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "quality.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([(s[3] - t0) / 1000 for s in report.series],
            [s[2] / 1000 if s[2] is not None else float("nan") for s in report.series])
    ax.set_ylim(bottom=0)
    ax.set(xlabel="seconds since the run's first event", ylabel="served version's age (s)",
           title=f"{report.versions} model versions: age of the version serving each event")
    fig.tight_layout()
    fig.savefig(out_dir / "versions.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    if report.learned:
        l0 = report.learned[0][0]
        buckets: dict = {}
        for t, e in report.learned:
            buckets[int(t - l0)] = buckets.get(int(t - l0), 0) + e
        xs = list(range(max(buckets) + 1))
        ax.plot(xs, [buckets.get(x, 0) for x in xs])
    ax.set_ylim(bottom=0)
    ax.set(xlabel="seconds since the first batch learned", ylabel="events learned per second", title="throughput")
    fig.tight_layout()
    fig.savefig(out_dir / "throughput.png", dpi=100)
    plt.close(fig)

    metric = "MAE (lower is better)" if report.task == "regression" else "accuracy"
    rows = [("events", f"{report.events}"), ("before the first version (not scored)", f"{report.cold_start}"),
            (f"served {metric}", f"{report.served:.4f}"), (f"single-node River {metric}", f"{report.river:.4f}"),
            ("model versions", f"{report.versions}"), ("median served-version age", f"{report.median_age_ms:.0f} ms"),
            ("events/s learned (active seconds)", f"{report.events_per_s:.0f}")]
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    figures = (
        ("quality.png", f"Served {name} (the version being served when each event was produced) against "
                        f"single-node River learning the same events in the same order; rolling over {window} "
                        f"events, the y axis zoomed on the settled part."),
        ("versions.png", "Age of the served version when each event was produced: how far serving trails "
                         "training."),
        ("throughput.png", "Events learned per second by all replicas together, from their per-batch metrics."),
    )
    page = out_dir / "index.html"
    page.write_text(
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:860px;margin:2em auto}th{text-align:left;padding-right:1em}"
        "figure{margin:1.5em 0}</style>"
        f"<h1>{html.escape(title)}</h1><table>{table}</table>"
        + "".join(f"<figure><img src='{f}' width='800'><figcaption>{html.escape(c)}</figcaption></figure>"
                  for f, c in figures))
    return page
