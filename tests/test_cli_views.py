"""What the CLI shows a person, without a broker: status lines, top's view, suggestions, --config placement."""

from __future__ import annotations

import subprocess
import sys
import time

import orjson
import pytest

from riverflink import models
from riverflink.pipelines.job_status import NO_MODEL_WARNING_S, ServeStatus, TrainStatus
from riverflink.pipelines.top import RunView


def _metrics(job: str, replica: str, events: int, ts: float) -> dict:
    return {"source": "training", "job": job, "replica": replica, "events": events, "correct": events,
            "dead_lettered": 0, "model_version": 1, "task": "binary", "ts": ts, "offsets": {"0": [0, events - 1]}}


def _doc(name: str, version: int, events: int) -> bytes:
    from river import linear_model

    return models.dumps(models.to_wire(linear_model.LogisticRegression(), name=name, version=version,
                                       created_at=time.time(), events=events))


def test_top_follows_the_newest_job_alone_and_tells_history_from_live_rates():
    view = RunView(started=1000.0)
    view.add_metrics(_metrics("m@old", "0", 500, 900.0))  # an earlier job on the same topic
    view.add_metrics(_metrics("m@new", "0", 300, 950.0))  # replayed history of the current job
    view.add_metrics(_metrics("m@old", "1", 700, 940.0))  # the old job again: older than what is shown, skipped
    view.add_metrics(_metrics("m@new", "1", 200, 1001.0))  # live
    view.add_metrics(_metrics("m@new", "1", 200, 1001.5))  # the same batch again (at-least-once): counted once
    assert view.job == "m@new" and sum(r.events for r in view.replicas.values()) == 500
    caption = view.caption(1002.0)
    assert caption.startswith("500 learned") and "300 of them learned before this view started" in caption
    assert view.rate(1002.0) == 200 / 5.0  # the replayed 300 are not a rate
    view.add_model(_doc("other", 9, 1))
    view.add_model(_doc("m", 3, 500))
    assert view.model.name == "m" and view.model.version == 3
    # each replica's clock gap (--max-staleness) is its newest batch's, whatever order the records come in
    view.add_metrics({**_metrics("m@new", "1", 10, 1003.0), "clock_gap": 2, "offsets": {"0": [900, 909]}})
    view.add_metrics({**_metrics("m@new", "1", 10, 1002.5), "clock_gap": 5, "offsets": {"0": [890, 899]}})
    assert view.replicas["1"].clock_gap == 2
    # with --working-set, the table adds each replica's working set and waiting events (its newest batch's)
    view.add_metrics({**_metrics("m@new", "1", 10, 1004.0), "working_set": 300, "waiting": 12,
                      "offsets": {"0": [910, 919]}})
    table = view.table("t")
    assert [c.header for c in table.columns][-2:] == ["working set", "waiting"]
    assert view.replicas["1"].working_set == 300 and view.replicas["1"].waiting == 12
    assert view.replicas["0"].working_set is None


def test_status_lines_say_what_the_jobs_did():
    train = TrainStatus("m", since=0.0)
    for m in (_metrics("m@t", "0", 120, 1.0), _metrics("m@t", "1", 80, 1.0), _metrics("m@t", "1", 80, 1.2)):
        train.add_metrics(orjson.dumps(m))
    train.add_model(_doc("m", 7, 200))
    train.add_model(_doc("someone-else", 8, 5))
    line = train.line(time.time(), lag=0)
    assert line.startswith("train m: 200 learned, 0 dead-lettered") and "1 versions, newest v7 (200 events)" in line
    assert line.endswith("lag ~0 events")

    serve = ServeStatus("m", since=time.time() - NO_MODEL_WARNING_S - 1)
    serve.add_answer(b'{"source":"serving","status":"ok"}\n{"source":"serving","status":"bad_request"}')
    serve.add_model(_doc("phishing", 4, 10))
    line = serve.line(time.time())
    assert line.startswith("serve m: 1 bad_request, 1 ok; model none yet")
    assert "no version of 'm' on the models topic" in line and "it holds: phishing" in line
    serve.add_model(_doc("m", 5, 10))
    assert serve.line(time.time()).endswith("model v5")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "riverflink.pipelines.cli", *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("args, hint", [
    (["train", "--replica", "3"], "(did you mean --replicas?)"),
    (["trian"], "(did you mean train?)"),
    (["train", "--bootstrap-servers", "127.0.0.1:9", "--model", "LogisticRegression(lr=0.05"], "unbalanced '('"),
    (["train", "--bootstrap-servers", "127.0.0.1:9", "--model", "StandardScaler|LogisticRegresion"],
     "(did you mean LogisticRegression?)"),
])
def test_mistakes_get_one_line_with_a_suggestion(args, hint):
    res = _cli(*args)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("riverflink: error:"), res.stderr
    assert hint in lines[0], lines[0]


def test_config_and_urls_where_people_put_them(tmp_path):
    from riverflink.pipelines import config_file
    from riverflink.pipelines.cli import parser

    toml = tmp_path / "rf.toml"
    toml.write_text('replicas = 3\n[train]\nmerge-quorum = 2\n')
    for argv in (["--config", str(toml), "train"], ["train", "--config", str(toml)]):
        args = config_file.parse(parser(), argv + ["--jobmanager", "http://127.0.0.1:8081/"])
        assert (args.replicas, args.merge_quorum, args.jobmanager) == (3, 2, "127.0.0.1:8081"), argv


def test_a_sharded_model_shows_as_its_manifests_not_its_slices():
    """With --shards, each version is M slice documents and one manifest: top and the status lines count and show
    the manifests (events from the shard 0 slice they name), never a slice as a version."""
    from riverflink.models.manifest import Manifest, dumps, manifest_document

    def slice_doc(shard: int, version: int, events: int) -> bytes:
        return dumps({"schema": "riverflink.model/1", "model": {},
                      "meta": {"name": "m", "version": version, "events": events, "shard": shard, "shards": 2,
                               "epoch": 1, "created_at": time.time()}})

    records = [slice_doc(0, 11, 400), slice_doc(1, 12, 400),
               dumps(manifest_document(Manifest("m", 20, 1, (11, 12)), created_at=time.time())),
               slice_doc(1, 31, 900),  # a newer version whose manifest has not come yet
               dumps(manifest_document(Manifest("m", 40, 1, (35, 31)), created_at=time.time())),  # ... nor slice 0
               ]
    view, train, serve = RunView(), TrainStatus("m", since=0.0), ServeStatus("m", since=time.time())
    for value in records:
        view.add_model(value)
        train.add_model(value)
        serve.add_model(value)
    assert (view.model.version, view.model.events) == (40, None)
    assert "model version 40 (? events" in view.caption(time.time())
    assert train.versions == 2 and "2 versions, newest v40 (? events)" in train.line(time.time())
    assert serve.version == 40
    view.add_model(slice_doc(0, 35, 900))
    view.add_model(dumps(manifest_document(Manifest("m", 41, 1, (35, 31)), created_at=time.time())))
    assert (view.model.version, view.model.events) == (41, 900)
