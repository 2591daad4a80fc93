"""The end-to-end run behind ``make demo`` and the integration test.

It starts the training and serving jobs (as child processes, each stopped by
PID at the end), produces a labelled stream plus malformed events to
``events`` and the same features, unlabelled, to ``requests``, prints live
predictions, waits until every count reconciles, and summarizes:

``summary: events=N learned=N dead_lettered=N model_versions=N served_accuracy=X baseline_accuracy=Y predictions=N``

* ``learned`` sums the events of the training job's metrics records (one per
  replica micro-batch, told apart by their source offsets, so a replay after
  a failure is not counted twice) and must equal the merged model's event
  count; ``events = learned + dead_lettered`` must hold.
* ``baseline_accuracy`` is plain single-node River, predict-then-learn, on the
  same labelled events in the same order; ``served_accuracy`` scores the
  serving job's answers (the merged model it had when each request came).
  The first ``warmup`` events are sent without requests and the demo waits
  for the first merged model, and for the serving job to answer a probe with
  one, before sending any, so every request meets a model; both accuracies
  are taken over the requested events.  A request answered ``no_model_yet``
  all the same is counted as a miss.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from riverflink.models.document import read_document
from riverflink.models.manifest import read_manifest
from riverflink.models.spec import build as build_model
from riverflink.pipelines import kafka_io
from riverflink.pipelines.broker import die_with_parent, stop_pid
from riverflink.models.policies import POLICIES
from riverflink.operators.batch_learning import MODES
from riverflink.operators.records import batch_key
from riverflink.pipelines.config import ConfigError, FlinkConfig, ServeConfig, Topics, TrainConfig
from riverflink.pipelines.options import option, to_argv
from riverflink.pipelines.sources import DATASETS, MALFORMED, dataset_events, encode_events

REPO = Path(__file__).resolve().parents[1]


@dataclass
class DemoConfig:
    """One demo run; the fields with an ``option`` are ``riverflink demo``'s flags."""

    bootstrap_servers: str
    dataset: str = option("Phishing", "bundled River dataset, Clicks (synthetic, sparse) or Ratings "
                                 "(synthetic ratings, for --model BiasedMF or FunkMF)", choices=DATASETS)
    events: int = option(10_000, "events to send (a file: at most this many)")
    rate: float = option(2_000.0, "events per second to produce")
    replicas: int = option(4, "K replicas")
    sync_every: int = 100
    max_staleness: int | None = option(None, "S: --max-staleness of train (default: no bound)", metavar="S")
    working_set: int | None = option(None, "W: --working-set of train (each replica holds at most W features and "
                                     "pulls the others; the summary adds pulls and pull_p99_ms)", metavar="W")
    expire_after: int | None = option(None, "N: --expire-after of train", metavar="N")
    merge_policy: str = option("delta", "how learned parameters combine", choices=POLICIES)
    model_spec: str = option("StandardScaler|LogisticRegression", "model spec, e.g. "
                             "'StandardScaler|LinearRegression' for a regression stream", flag="--model")
    #: a labelled .jsonl or .csv file instead of the River dataset (``target``: the CSV label column)
    file: str | None = option(None, "a labelled .jsonl or .csv file instead of --dataset")
    target: str | None = option(None, "label column of a CSV file (a recommender's rating: default y)")
    user_field: str = option("user", "recommenders (BiasedMF, FunkMF): the file's user field or column")
    item_field: str = option("item", "recommenders: the file's item field or column")
    mode: str = option("exact", "how replicas learn", choices=MODES)
    shards: int = option(1, "M merger shards (--shards of train; the summary adds model_features and "
                         "largest_slice_bytes)", metavar="M")
    serve_shards: int = option(1, "M > 1: the serving job answers by scatter/gather over the sharded model's "
                               "slices (serve --shards M)", metavar="M")
    model_name: str = "demo"
    #: --max-record-bytes of train (a sharded model's larger slices go out as pages)
    max_record_bytes: int = 900_000
    parallelism: int | None = option(None, "subtasks per operator (default: 2, or 1 on one core)")
    timeout: float = 240.0
    show: int = 12
    warmup: int = 500
    log_dir: Path = field(default_factory=lambda: REPO / ".riverflink" / "logs")
    #: suffix for topics and consumer groups ("" = the plain names, for a broker of our own)
    run_id: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S"))

    def train_config(self) -> TrainConfig:
        """The training job this run starts."""
        return TrainConfig(self.bootstrap_servers, model_spec=self.model_spec, model_name=self.model_name,
                           replicas=self.replicas, sync_every_events=self.sync_every, max_staleness=self.max_staleness,
                           working_set=self.working_set, expire_after=self.expire_after,
                           merge_policy=self.merge_policy, mode=self.mode, topics=self.topics, shards=self.shards,
                           max_record_bytes=self.max_record_bytes, group_id=f"riverflink-train{self._suffix}", flink=FlinkConfig(parallelism=self.parallelism))

    def serve_config(self) -> ServeConfig:
        """The serving job this run starts."""
        serve = ServeConfig(self.bootstrap_servers, model_name=self.model_name, topics=self.topics,
                            group_id=f"riverflink-serve{self._suffix}", shards=self.serve_shards,
                            user_field="user" if self.recommender else None)
        return dataclasses.replace(serve, flink=dataclasses.replace(serve.flink, parallelism=self.parallelism))

    @property
    def recommender(self) -> bool:
        """Whether the model learns from ratings (the demo then sends events and requests naming ``user`` and
        ``item``, whatever the file calls them)."""
        from riverflink.models.rating import is_recommender

        return is_recommender(build_model(self.model_spec))

    @property
    def _suffix(self) -> str:
        return "-" + self.run_id if self.run_id else ""

    @property
    def topics(self) -> Topics:
        """This run's topics (plain names when ``run_id`` is empty)."""
        return Topics.for_run(self.run_id) if self.run_id else Topics()


@dataclass
class DemoResult:
    events: int
    learned: int
    dead_lettered: int
    model_versions: list
    served_accuracy: float
    baseline_accuracy: float
    task: str
    predictions: int
    answered: int
    no_model_yet: int
    requests: int
    model_events: int
    replicas_contributing: set
    dead_letter_reasons: list
    serving_versions: list
    model_age_ms: list  # age of the model behind each answer
    latency_ms: list  # request sent -> answer produced
    #: a sharded model: its features (per-feature parameters of the final step) and its largest slice document
    model_features: int = 0
    largest_slice_bytes: int = 0
    #: --working-set: every pull's round trip (ms), and the largest working set a replica reported
    pull_rtt_ms: list = field(default_factory=list)
    working_set_peak: int | None = None
    #: ... and the most features a trainer subtask's (bounded) reader held
    reader_peak: int | None = None
    #: a recommender: the answers given for users the serving job held no factors for
    unknown_users: int | None = None

    def percentiles(self, values: list) -> str:
        if not values:
            return "n/a"
        return f"p50={quantile(values, 0.5):.0f} p95={quantile(values, 0.95):.0f}"

    def summary(self) -> str:
        metric = "mae" if self.task == "regression" else "accuracy"
        return (
            f"summary: events={self.events} learned={self.learned} dead_lettered={self.dead_lettered} "
            f"model_versions={len(self.model_versions)} served_{metric}={self.served_accuracy:.4f} "
            f"baseline_{metric}={self.baseline_accuracy:.4f} predictions={self.predictions}"
            + (f" model_features={self.model_features} largest_slice_bytes={self.largest_slice_bytes}"
               if self.largest_slice_bytes else "")
            + (f" pulls={len(self.pull_rtt_ms)} pull_p50_ms={quantile(self.pull_rtt_ms, 0.5):.0f}"
               f" pull_p99_ms={quantile(self.pull_rtt_ms, 0.99):.0f} working_set_peak={self.working_set_peak}"
               if self.working_set_peak is not None else "")
            + (f" reader_peak={self.reader_peak}" if self.reader_peak is not None else "")
            + (f" unknown_user_share={self.unknown_users / max(1, self.answered):.4f}"
               if self.unknown_users is not None else "")
        )


def quantile(values: list, q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank; 0 for none).

    >>> quantile([5.0, 1.0, 3.0], 0.5), quantile([], 0.99)
    (3.0, 0)
    """
    if not values:
        return 0
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def _start_job(kind: str, cfg: DemoConfig) -> subprocess.Popen:
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    job = cfg.train_config() if kind == "train" else cfg.serve_config()
    args = [sys.executable, "-m", "riverflink.pipelines.cli", kind, "--bootstrap-servers", cfg.bootstrap_servers,
            *to_argv(job)]
    log = open(cfg.log_dir / f"{kind}.log", "wb")
    return subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=die_with_parent,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def _score(task: str, y_pred, y) -> float:
    """1/0 for a right/wrong class (or no answer); the absolute error for a regressor."""
    if task == "regression":
        return abs(float(y) - float(y_pred or 0.0))
    return float(y_pred == y)


def _baseline(spec: str, labelled: list) -> tuple[str, list]:
    from riverflink.models.labels import task_of
    from riverflink.operators.scoring import river_baseline

    model = build_model(spec)
    task = task_of(model)
    return task, [_score(task, y_pred, y) for y_pred, (_, y) in zip(river_baseline(model, labelled)[2], labelled)]


def run(cfg: DemoConfig, out=print) -> DemoResult:
    """Run the whole slice against ``cfg.bootstrap_servers``; every child process is stopped on exit."""
    t = cfg.topics
    if cfg.file:
        from itertools import islice

        from riverflink.pipelines.sources import file_events

        from riverflink.operators.events import RatingFields

        ratings = RatingFields(cfg.user_field, cfg.item_field) if cfg.recommender else None
        labelled = list(islice(file_events(cfg.file, cfg.target, ratings), cfg.events))
        if not labelled:
            raise ConfigError(f"{cfg.file} holds no labelled events")
    else:
        labelled = list(dataset_events(cfg.dataset, cfg.events))
    from riverflink.models.rating import Rating

    if cfg.recommender != (type(labelled[0][0]) is Rating):
        raise ConfigError(f"--model {cfg.model_spec} learns from " + ("ratings: use --dataset Ratings or a ratings file"
                          if cfg.recommender else "features: --dataset Ratings is for BiasedMF and FunkMF"))
    kafka_io.create_topics(cfg.bootstrap_servers, t.to_create())
    jobs = [_start_job("train", cfg), _start_job("serve", cfg)]
    try:
        return _drive(cfg, labelled, jobs, out)
    finally:
        for p in jobs:
            stop_pid(p.pid)


def _check_alive(jobs, cfg):
    for p, kind in zip(jobs, ("train", "serve")):
        if p.poll() is not None:
            tail = (cfg.log_dir / f"{kind}.log").read_text(errors="replace").strip().splitlines()[-5:]
            raise ConfigError(f"the {kind} job exited with code {p.returncode}: {' | '.join(tail)}")


def _drive(cfg: DemoConfig, labelled: list, jobs, out) -> DemoResult:
    t = cfg.topics
    servers = cfg.bootstrap_servers
    preds = kafka_io.TopicReader(servers, t.predictions)
    model_reader = kafka_io.TopicReader(servers, t.models)
    dlq = kafka_io.TopicReader(servers, t.dead_letter)
    metrics = kafka_io.TopicReader(servers, t.metrics)
    # one metrics record per replica batch, keyed by its source offsets: a replay after a failure counts once
    batches: dict = {}
    serving, versions, dead = {}, [], []
    slices: dict = {}  # a sharded model: shard -> its newest whole slice document and the patches after it
    largest_slice = 0
    pull_rtt_ms: list = []
    working_set_peak = reader_peak = None
    manifests: list = []  # ... and its manifests (serving assembles a model from one and its slices)
    labels = {i: y for i, (_, y) in enumerate(labelled)}
    shown, last_shown = 0, 0.0

    def pump():
        nonlocal shown, last_shown, largest_slice, working_set_peak, reader_peak
        for rec in preds.poll_json(100):
            if rec is None:
                continue
            if rec.get("source") == "serving" and rec.get("id") is not None:
                serving[rec["id"]] = rec
                if shown < cfg.show and rec["status"] == "ok" and time.time() - last_shown > 0.5:
                    last_shown = time.time()
                    shown += 1
                    truth = labels.get(rec["id"])
                    shown_pred = rec["prediction"]
                    shown_pred = f"{shown_pred:.3f}" if isinstance(shown_pred, float) else str(shown_pred)
                    out(f"  prediction  request={rec['id']:<6} -> {shown_pred:<5} "
                        f"(truth {truth!s:<5}) model v{rec['model_version']} age {rec['model_age_ms']:.0f} ms")
        for value in model_reader.poll(0):
            document = read_document(value)
            if document is None:
                manifest = read_manifest(value)
                if manifest is not None:
                    manifests.append(manifest)
            else:
                versions.append(document.meta)
                if document.meta.shards > 1:
                    chain = slices.setdefault(document.meta.shard, [])
                    more = document.meta.patch_of is not None or document.meta.page > 0  # a patch, a later page
                    chain[:] = (chain if more else []) + [document]
                    largest_slice = max(largest_slice, document.size)
        dead.extend(r for r in dlq.poll_json(0) if r)
        for m in metrics.poll_json(0):
            if m and "working_set" in m:
                pull_rtt_ms.extend(m.get("pull_rtt_ms") or [])
                working_set_peak = max(working_set_peak or 0, m["working_set"])
                if "reader_features" in m:
                    reader_peak = max(reader_peak or 0, m["reader_features"])
            if m and m.get("events"):
                batches[batch_key(m)] = m["events"]

    def answer_to_probe() -> str:
        """Send the serving job a request of its own and wait for the answer's status (not counted)."""
        probe = f"probe-{time.time()}"
        request = {"id": probe, "user": probe, "item": probe} if cfg.recommender else {"id": probe, "x": {}}
        kafka_io.produce(servers, t.requests, [json.dumps(request).encode()])
        while probe not in serving:
            _check_alive(jobs, cfg)
            if time.time() > deadline:
                raise ConfigError(f"the serving job did not answer within {cfg.timeout:.0f}s")
            pump()
        return serving.pop(probe).get("status", "")

    # wait until the serving job answers, so requests meet a running job
    deadline = time.time() + cfg.timeout
    answer_to_probe()
    out(f"jobs running; producing {len(labelled)} events (+{len(MALFORMED)} malformed) at ~{cfg.rate:.0f}/s")

    producer = kafka_io.producer(servers)
    warmup = min(cfg.warmup, len(labelled) // 2)
    requests = list(encode_events(labelled[warmup:], start_id=warmup, with_label=False))
    events = list(encode_events(labelled))
    batch = 100
    request_sent: dict = {}
    started = time.time()
    bad_every = max(1, len(events) // (len(MALFORMED) + 1))
    bad = list(MALFORMED)
    for start in range(0, len(events), batch):
        if start >= warmup:
            while not versions or (cfg.shards > 1 and not manifests):
                _check_alive(jobs, cfg)
                if time.time() > deadline:
                    raise ConfigError(f"no model on {t.models} within {cfg.timeout:.0f}s")
                pump()
            # the serving job reads the models topic on its own: the first requests wait until it has a model (each of
            # its subtasks reads it: four answers in a row with a model, the probes going to any request partition)
            ready = 0
            while not request_sent and ready < 4:
                ready = ready + 1 if answer_to_probe() != "no_model_yet" else 0
            sent_at = time.time()
            for i, v in enumerate(requests[start - warmup : start - warmup + batch], start):
                producer.send(t.requests, value=v)
                request_sent[i] = sent_at
        for i in range(start, min(start + batch, len(events))):
            producer.send(t.events, value=events[i])
            if bad and i > 0 and i % bad_every == 0:
                producer.send(t.events, value=bad.pop())
        producer.flush()
        pump()
        ahead = (start + batch) / cfg.rate - (time.time() - started)
        if ahead > 0:
            time.sleep(ahead)
    for v in bad:
        producer.send(t.events, value=v)
    producer.flush()
    producer.close()
    produced = len(events) + len(MALFORMED)

    while True:
        pump()
        training = sum(batches.values())
        merged = (versions[-1].events or 0) if versions else 0
        if training + len(dead) >= produced and len(serving) >= len(requests) and merged >= training:
            break
        _check_alive(jobs, cfg)
        if time.time() > deadline:
            raise ConfigError(
                f"timed out: learned={training} dead_lettered={len(dead)} of {produced} events, "
                f"{len(serving)}/{len(requests)} requests answered, {merged} events merged"
            )
    for r in (preds, model_reader, dlq, metrics):
        r.close()

    task, base_scores = _baseline(cfg.model_spec, labelled)
    requested = range(warmup, len(labelled))
    answered = [i for i in requested if serving.get(i, {}).get("status") == "ok"]
    served_scores = [_score(task, serving.get(i, {}).get("prediction"), labels[i]) for i in requested]
    return DemoResult(
        events=produced,
        learned=training,
        dead_lettered=len(dead),
        model_versions=[m.version for m in versions],
        served_accuracy=sum(served_scores) / max(1, len(requested)),
        baseline_accuracy=sum(base_scores[i] for i in requested) / max(1, len(requested)),
        task=task,
        predictions=len(serving),
        answered=len(answered),
        no_model_yet=sum(1 for r in serving.values() if r["status"] == "no_model_yet"),
        requests=len(requests),
        model_events=(versions[-1].events or 0) if versions else 0,
        replicas_contributing={k for m in versions for k in m.counts},
        dead_letter_reasons=[d["reason"] for d in dead],
        serving_versions=[serving[i]["model_version"] for i in answered],
        model_age_ms=[serving[i]["model_age_ms"] for i in answered],
        latency_ms=[1000 * (serving[i]["ts"] - request_sent[i]) for i in answered if i in request_sent],
        model_features=_model_features(slices.values()),
        largest_slice_bytes=largest_slice,
        pull_rtt_ms=pull_rtt_ms,
        working_set_peak=working_set_peak,
        reader_peak=reader_peak,
        unknown_users=sum(1 for i in answered if serving[i].get("known_user") is False) if cfg.recommender else None,
    )


def _model_features(chains) -> int:
    """Features with a parameter in the final step of a sharded model (a weight, or FTRL's ``z``/``n`` of a
    weight still 0), over each shard's newest whole slice and the patches after it (a patch adds features,
    never removes one)."""
    from riverflink import models
    from riverflink.models.labels import final_step

    total = 0
    for chain in chains:
        features: set = set()
        for document in chain:
            params = models.get_params(final_step(models.from_wire(document.doc)))
            features.update(k for leaf in params.values() if isinstance(leaf, dict) for k in leaf)
        total += len(features)
    return total
