"""Stop the training job with a savepoint, then resume it at a different parallelism.

Keyed replica and merger state and the Kafka offsets must come back exactly:
the merged model ends up with every event once, although the resumed job uses
a new consumer group (so only the savepoint can tell it where to continue).
"""

from __future__ import annotations

import subprocess
import time

import pytest

from riverflink.pipelines import flink_rest, kafka_io
from riverflink.pipelines.config import Topics
from riverflink.pipelines.sources import encode_events, river_events
from tests import cluster_jobs
from tests.exact_content import assert_scaler_holds_each_event_once
from riverflink.pipelines.standalone import StandaloneCluster

pytestmark = pytest.mark.integration
HALF = 2000


def riverflink(*args: str) -> subprocess.CompletedProcess:
    res = cluster_jobs.riverflink(*args, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    return res


def wait_for_events(reader, docs: list, n: int, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        docs += [d for d in reader.poll_json(300) if d]
        if docs and docs[-1]["meta"]["events"] >= n:
            return
    raise AssertionError(f"merged events stuck at {docs[-1]['meta']['events'] if docs else 0}, expected {n}")


def test_savepoint_and_rescale_keep_state_exact(kafka_bootstrap, tmp_path):
    cluster = StandaloneCluster(tmp_path / "flink", slots=6)
    cluster.start()
    try:
        run = f"rescale{int(time.time())}"
        t = Topics.for_run(run)
        topics = [*t.cli_args(), "--model-name", run, "--bootstrap-servers", kafka_bootstrap,
                  "--jobmanager", cluster.address]
        kafka_io.create_topics(kafka_bootstrap, t.to_create("events", "dead_letter", "predictions", "models"))
        events = list(encode_events(river_events("Phishing", 2 * HALF)))
        models = kafka_io.TopicReader(kafka_bootstrap, t.models)
        docs: list = []

        riverflink("train", *topics, "--parallelism", "2", "--group-id", f"{run}-a", "--checkpoint-ms", "1000")
        kafka_io.produce(kafka_bootstrap, t.events, events[:HALF])
        wait_for_events(models, docs, HALF)
        first = flink_rest.find_running(cluster.address, f"riverflink-train-{run}")
        assert flink_rest.checkpoint_interval_ms(cluster.address, first) == 1000  # --checkpoint-ms given: it wins
        assert flink_rest.checkpoint_mode(cluster.address, first) == "exactly_once"
        out = riverflink("stop", "--jobmanager", cluster.address, "--name", f"riverflink-train-{run}",
                         "--savepoint-dir", str(tmp_path / "savepoints")).stdout
        savepoint = out.split("savepoint: ")[1].split()[0]
        before = docs[-1]["meta"]

        riverflink("train", *topics, "--parallelism", "3", "--group-id", f"{run}-b", "--from-savepoint", savepoint)
        kafka_io.produce(kafka_bootstrap, t.events, events[HALF:])
        wait_for_events(models, docs, 2 * HALF)
        time.sleep(3)
        docs += [d for d in models.poll_json(500) if d]

        after = docs[-1]["meta"]
        assert after["events"] == 2 * HALF  # nothing replayed from the new group's earliest offset
        # by content: the scaler of the last version holds each event once, across the savepoint and rescale
        assert_scaler_holds_each_event_once(max(docs, key=lambda d: d["meta"]["version"]),
                                            river_events("Phishing", 2 * HALF))
        assert after["sequence"] > before["sequence"]  # the merger's state came back
        versions = [d["meta"]["version"] for d in docs]
        assert versions == sorted(set(versions))
        resumed = [j for j in flink_rest.jobs(cluster.address) if j["state"] == "RUNNING"]
        assert len(resumed) == 1
        chains = flink_rest.vertex_parallelism(cluster.address, resumed[0]["jid"])
        assert any("replica-trainer" in name and p == 3 for name, p in chains.items()), chains
        # no --checkpoint-ms: the job keeps the cluster's own checkpoint interval (3 s), not riverflink's 5 s
        assert flink_rest.checkpoint_interval_ms(cluster.address, resumed[0]["jid"]) == 3000
        assert flink_rest.checkpoint_mode(cluster.address, resumed[0]["jid"]) == "exactly_once"
    finally:
        cluster.stop()
