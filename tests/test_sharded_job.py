"""``riverflink demo --file F --shards 2`` on the sparse Clicks stream written to a JSONL file: the training job with
two merger shards, on a real broker and the Flink mini-cluster.  Slices and manifests on ``models``, the serving job and ``LiveModel``
answering with the assembled model, counts reconciled, and every event in the final model exactly once."""

from __future__ import annotations

import time

import orjson
import pytest

from riverflink import models
from riverflink.models.document import read_document
from riverflink.models.labels import final_step
from riverflink.models.manifest import read_manifest
from riverflink.models.spec import build
from riverflink.operators.model_feed import FeedRules, ModelFeed
from riverflink.operators.scoring import river_baseline
from riverflink.pipelines import demo, kafka_io
from riverflink.pipelines.live_model import LiveModel
from riverflink.pipelines.sources import dataset_events

pytestmark = pytest.mark.integration

EVENTS = 3000
SPEC = "LogisticRegression(ftrl=true)"
#: --max-record-bytes: the whole slices of this run's model are larger, so they go out as pages
PAGE = 40_000


@pytest.fixture(scope="module")
def run(kafka_bootstrap, tmp_path_factory):
    stream = tmp_path_factory.mktemp("stream") / "clicks.jsonl"  # (demo --file: any labelled stream)
    stream.write_bytes(b"".join(orjson.dumps({"x": x, "y": y}) + b"\n" for x, y in dataset_events("Clicks", EVENTS)))
    cfg = demo.DemoConfig(bootstrap_servers=kafka_bootstrap, file=str(stream), model_spec=SPEC, events=EVENTS,
                          rate=2000, replicas=4, shards=2, serve_shards=2, model_name="sharded",
                          run_id=f"sharded-{int(time.time())}",
                          timeout=300, show=0, log_dir=tmp_path_factory.mktemp("logs"), max_record_bytes=PAGE)
    return cfg, demo.run(cfg, out=lambda *_: None)


def test_a_sharded_job_reconciles_and_reports_its_slices(run):
    _, result = run
    assert result.learned == EVENTS and result.learned + result.dead_lettered == result.events
    assert result.model_events == EVENTS
    # every request answered; those sent before the serving job assembled a first model get no_model_yet (under
    # CI's load 986 of 2,500 did, on an idle machine 48 of 3,500: each reader parses every slice)
    assert result.predictions == result.requests and result.answered > 0
    assert result.model_features > 500 and 0 < result.largest_slice_bytes <= PAGE
    assert f"model_features={result.model_features} largest_slice_bytes=" in result.summary()


def test_slices_manifests_and_the_assembled_model_hold_every_event_once(run, kafka_bootstrap):
    cfg, result = run
    reader = kafka_io.TopicReader(kafka_bootstrap, cfg.topics.models)
    records, idle = [], 0
    while idle < 3:
        batch = reader.poll_records(500)
        records += batch
        idle = 0 if batch else idle + 1
    reader.close()
    keys = {r.key.decode() for r in records}
    assert keys == {"sharded", "sharded#0", "sharded#1"}
    slices = [d for r in records if (d := read_document(r.value)) is not None]
    manifests = [m for r in records if (m := read_manifest(r.value)) is not None]
    assert {d.meta.shard for d in slices} == {0, 1} and all(d.meta.shards == 2 for d in slices)
    # whole slices outgrew --max-record-bytes: they went out as pages (of one version each, numbered in order)
    paged = [d for d in slices if d.meta.pages > 1]
    print(f"slices: {len(slices)} records, {len(paged)} pages, largest {max(d.size for d in slices)} bytes")
    assert paged and all(d.size <= PAGE for d in slices)
    for shard in (0, 1):
        own = [(d.meta.version, d.meta.page, d.meta.pages) for d in slices if d.meta.shard == shard and d.meta.pages > 1]
        assert own and all(v == own[i - p][0] and n == own[i - p][2] for i, (v, p, n) in enumerate(own) if i >= p)
    assert manifests and [m.version for m in manifests] == sorted({m.version for m in manifests})
    published = {(d.meta.shard, d.meta.version) for d in slices}
    assert all((s, v) in published for m in manifests for s, v in enumerate(m.slices))
    # the serving job answered with assembled versions (a manifest's), never with a lone slice
    assert set(result.serving_versions) <= {m.version for m in manifests}

    # LiveModel assembles the newest manifest's slices; the result holds every event once: FTRL's step count is
    # additive over the replicas' updates (one step per event learned), and each shard owns its features alone
    with LiveModel(kafka_bootstrap, "sharded", topic=cfg.topics.models) as live:
        deadline = time.time() + 30
        while live.version != manifests[-1].version and time.time() < deadline:
            time.sleep(0.2)
        assert live.version == manifests[-1].version
        model = live.model
    params = models.get_params(model)
    assert params["opt_steps"] == EVENTS
    # (a shard's features: those of its slices up to the one named, whole or patches; a patch never drops one)
    owned = [set().union(*(models.get_params(final_step(models.from_wire(d.doc)))["opt_z"] for d in slices
                           if d.meta.shard == s and d.meta.version <= manifests[-1].slices[s])) for s in (0, 1)]
    assert not owned[0] & owned[1] and owned[0] | owned[1] == set(params["opt_z"])

    # the assembled final model against River trained once on the same events (scored on them afterwards)
    events = list(dataset_events("Clicks", EVENTS))
    river = build(SPEC)
    river_baseline(river, events)
    accuracy = lambda m: sum(m.predict_one(x) == y for x, y in events) / len(events)  # noqa: E731
    assert accuracy(model) >= accuracy(river) - 0.03, (accuracy(model), accuracy(river))


def test_scatter_gather_answers_equal_the_assembled_model_of_their_version(run, kafka_bootstrap):
    """The serving job ran with ``--shards 2``: two scorers, each holding one shard's slices, answered partial
    scores that a gather summed per request.  Every answer equals the model its manifest names, assembled whole."""
    from riverflink.pipelines import report

    cfg, result = run
    # (read in topic order, as the scatter read them: it completes the same manifests)
    records = [v for _, v in report._records(kafka_bootstrap, cfg.topics.models, 2.0)]
    versions = {entry.version: model for entry, model in ModelFeed(FeedRules("sharded")).versions(records)}
    events = list(dataset_events("Clicks", EVENTS))
    answers = [orjson.loads(r.value) for r in kafka_io.consume_records(kafka_bootstrap, cfg.topics.predictions,
                                                                       idle_timeout=2.0)]
    ok = [a for a in answers if a.get("source") == "serving" and a["status"] == "ok" and isinstance(a["id"], int)]
    assert len(ok) == result.answered > 0 and len({a["model_version"] for a in ok}) >= 2
    for a in ok:
        model, x = versions[a["model_version"]], events[a["id"]][0]
        assert abs(dict(map(tuple, a["proba"]))[True] - model.predict_proba_one(x)[True]) < 1e-9, a
        assert a["prediction"] == model.predict_one(x)


def test_the_cli_and_report_show_slices_and_manifests(run, kafka_bootstrap):
    from tests.cluster_jobs import riverflink

    cfg, _ = run
    topic = ["--bootstrap-servers", kafka_bootstrap, "--models-topic", cfg.topics.models]
    res = riverflink("models", *topic, "--latest", "--model-name", "sharded", "--idle", "2")
    assert res.returncode == 0, res.stderr
    rows = [line.split()[0] for line in res.stdout.splitlines()[1:] if line.startswith("sharded")]
    assert rows == ["sharded#0", "sharded#1"], res.stdout
    assert "manifest(s) of sharded models" in res.stdout
    res = riverflink("tail", "models", *topic, "--from-beginning", "--idle", "2")
    assert res.returncode == 0, res.stderr
    assert "manifest sharded v" in res.stdout and "model sharded#1 v" in res.stdout

    # report replays the events against the versions the serving job could assemble, never against a lone slice
    from riverflink.pipelines import report

    r = report.read_run(kafka_bootstrap, cfg.topics)
    records = report._records(kafka_bootstrap, cfg.topics.models, 2.0)
    manifests = [m.version for _, v in records if (m := read_manifest(v)) is not None]
    assert r.events == EVENTS and 0 < r.versions <= len(manifests), (r.versions, len(manifests))
    # each version it replayed holds both shards' features (a lone slice holds one shard's). How close the served
    # accuracy comes to River's depends on the versions' age, so on the machine's load: not asserted here (under
    # CI's load 7 versions served 0.548 against River's 0.610; bench/ measures it)
    versions = report.assembled_versions(records)
    slices = [d for _, v in records if (d := read_document(v)) is not None]
    owned = [set().union(*(models.get_params(final_step(models.from_wire(d.doc)))["opt_z"] for d in slices
                           if d.meta.shard == s)) for s in (0, 1)]
    assert len(versions) == r.versions
    for v in versions:
        features = set(models.get_params(report._model(v))["opt_z"])
        assert features & owned[0] and features & owned[1] and features <= owned[0] | owned[1], v.version


def test_a_job_moves_from_two_shards_to_three_and_keeps_the_model(run, kafka_bootstrap, tmp_path):
    """``riverflink reshard`` publishes the two-shard model as three slices of a new epoch; a training job with
    ``--shards 3`` over the same ``models`` topic starts from it (its mergers take their slices, its replicas
    rebase on the manifest) and learns on: its model holds the first job's events and its own, once each."""
    import dataclasses
    import subprocess
    import sys

    from riverflink.pipelines.broker import stop_pid
    from riverflink.pipelines.click_stream import click_events
    from riverflink.pipelines.config import Topics
    from riverflink.pipelines import flink_rest
    from riverflink.pipelines.sources import encode_events
    from tests.cluster_jobs import REPO, riverflink

    cfg, _ = run
    more = 1000
    t = dataclasses.replace(Topics.for_run(f"reshard-{int(time.time())}"), models=cfg.topics.models)
    kafka_io.create_topics(kafka_bootstrap, t.to_create("events", "dead_letter", "predictions"))
    res = riverflink("reshard", "--bootstrap-servers", kafka_bootstrap, "--models-topic", t.models,
                     "--model-name", "sharded", "--shards", "3", "--max-record-bytes", str(PAGE), "--idle", "2")
    assert res.returncode == 0, res.stderr
    assert f"(2 shard(s), {EVENTS} events) published as version" in res.stdout, res.stdout
    resharded = int(res.stdout.split("published as version ")[1].split()[0])
    log = tmp_path / "train.log"
    job = subprocess.Popen(
        [sys.executable, "-m", "riverflink.pipelines.cli", "train", "--bootstrap-servers", kafka_bootstrap,
         "--model-name", "sharded", "--model", SPEC, "--shards", "3", "--replicas", "2", "--group-id", "resharded",
         "--max-record-bytes", str(PAGE), "--status-every", "0", *t.cli_args("train")],
        cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # the first events only once the job runs and has read the newest records of `models` (a merger that
        # merged before reading its slice would start afresh)
        deadline, address = time.time() + 180, None
        while time.time() < deadline and address is None:
            assert job.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
            found = [w.removeprefix("http://") for w in log.read_text().split() if w.startswith("http://127.0.0.1:")]
            try:
                address = found[0] if found and flink_rest.find_running(found[0], "riverflink-train-sharded") else None
            except Exception:  # noqa: BLE001 - not up yet
                address = None
        assert address, log.read_text()[-3000:]
        time.sleep(10)
        kafka_io.produce(kafka_bootstrap, t.events, encode_events(click_events(more, seed=31)))
        with LiveModel(kafka_bootstrap, "sharded", topic=t.models) as live:
            deadline, steps = time.time() + 240, 0
            while time.time() < deadline and steps < EVENTS + more:
                assert job.poll() is None, log.read_text()[-3000:]
                time.sleep(1)
                if (live.version or 0) > resharded:
                    steps = models.get_params(live.model)["opt_steps"]
            assert steps == EVENTS + more, (steps, log.read_text()[-3000:])  # FTRL's step count: one per event
            assert live.meta.shards == 3 and live.meta.events == EVENTS + more
    finally:
        stop_pid(job.pid)


@pytest.mark.parametrize("shards", [3, 4])
def test_scatter_gather_builds_for_any_shard_count_at_the_default_parallelism(kafka_bootstrap, shards):
    """``serve --shards M`` with M other than the job's parallelism builds a valid job graph (an explicit scorer
    parallelism of M once broke it: forward partitioning between operators of different parallelism)."""
    from riverflink.pipelines import serving
    from riverflink.pipelines.config import ServeConfig, Topics

    topics = Topics.for_run(f"sg-build-{shards}")
    kafka_io.create_topics(kafka_bootstrap, {topics.requests: 1, topics.models: 1, topics.predictions: 1})
    env = serving.build(ServeConfig(kafka_bootstrap, model_name="m", shards=shards, topics=topics))
    plan = orjson.loads(env.get_execution_plan())
    names = " ".join(node["contents"] for node in plan["nodes"])
    assert "scatter" in names and "shard-scorers" in names and "gather" in names


def test_a_slow_shard_keeps_every_replica_within_its_staleness_bound(kafka_bootstrap, tmp_path, monkeypatch):
    """``--max-staleness 1`` while merger shard 1 is slowed (``RIVERFLINK_SLOW_SHARD``, 50 ms per update and per
    pull), with working sets that pull from it: no replica's clock gap passes 1, nothing blocks (no deadlock
    through the loop), the counts reconcile and the model holds every event."""
    monkeypatch.setenv("RIVERFLINK_SLOW_SHARD", "1:0.05")
    events = 2000
    cfg = demo.DemoConfig(bootstrap_servers=kafka_bootstrap, dataset="Clicks", model_spec=SPEC, events=events,
                          rate=2000, replicas=4, shards=2, max_staleness=1, working_set=300, model_name="stale",
                          run_id=f"stale-{int(time.time())}", timeout=300, show=0, log_dir=tmp_path)
    result = demo.run(cfg, out=lambda *_: None)
    assert result.learned == events and result.learned + result.dead_lettered == result.events
    assert result.model_events == events and len(result.pull_rtt_ms) > 10
    gaps = [m.get("clock_gap") for r in kafka_io.consume_records(kafka_bootstrap, cfg.topics.metrics, idle_timeout=2.0)
            if (m := orjson.loads(r.value)).get("source") == "training" and m.get("events")]
    assert gaps and max(gaps) == 1, sorted(set(gaps))


def test_replicas_with_a_working_set_pull_what_they_lack_and_hold_less_than_the_model(kafka_bootstrap, tmp_path):
    """``--working-set 300`` with two merger shards: the replicas pull the features they lack from their shard
    (answers on the pulls topic, back through their keyed input), every event is learned once, the counts
    reconcile, and no replica holds the whole model."""
    events = 2000
    cfg = demo.DemoConfig(bootstrap_servers=kafka_bootstrap, dataset="Clicks", model_spec=SPEC, events=events,
                          rate=2000, replicas=4, shards=2, working_set=300, model_name="pulls",
                          run_id=f"pulls-{int(time.time())}", timeout=300, show=0, log_dir=tmp_path)
    result = demo.run(cfg, out=lambda *_: None)
    assert result.learned == events and result.learned + result.dead_lettered == result.events
    assert result.model_events == events
    assert len(result.pull_rtt_ms) > 10 and all(t >= 0 for t in result.pull_rtt_ms)
    assert result.working_set_peak is not None and result.working_set_peak < result.model_features / 2
    # each trainer subtask's reader keeps what its replicas hold or ask for, not the model
    assert result.reader_peak is not None and 0 < result.reader_peak < result.model_features / 2, (
        result.reader_peak, result.model_features)
    assert " pull_p99_ms=" in result.summary() and " reader_peak=" in result.summary()
