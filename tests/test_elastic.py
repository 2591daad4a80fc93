"""Elastic rescaling without a savepoint: on a standalone cluster with Flink's adaptive scheduler, the
training job follows the task managers.  It starts at the parallelism one task manager's slots allow,
scales up when a second task manager joins, and down when one leaves, each time from its latest
checkpoint; the replicas' and the merger's keyed state move with it, and the merged model holds every
event exactly once across both changes (by content, not a counter).
"""

from __future__ import annotations

import time

import pytest

from riverflink.pipelines import flink_rest, kafka_io
from riverflink.pipelines.broker import stop_pid
from riverflink.pipelines.sources import encode_events, river_events
from riverflink.pipelines.standalone import StandaloneCluster
from tests.cluster_jobs import submit_training
from tests.exact_content import assert_scaler_holds_each_event_once

pytestmark = pytest.mark.integration
PART = 1500


def _replica_parallelism(address: str, job_id: str) -> int:
    chains = flink_rest.vertex_parallelism(address, job_id)
    return next(p for name, p in chains.items() if "replica-trainer" in name)


def _wait(what: str, check, timeout: float = 150):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            found = check()
        except Exception:  # noqa: BLE001 - the REST endpoint answers nothing useful mid-rescale
            found = None
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"no {what} within {timeout:.0f} s")


def test_the_job_follows_task_managers_that_come_and_go(kafka_bootstrap, tmp_path, monkeypatch):
    # the loop's trace (operators.loop_trace) shows which replica or merger counted what, should it fail again
    monkeypatch.setenv("RIVERFLINK_TRACE_LOOP", str(tmp_path / "trace"))
    cluster = StandaloneCluster(tmp_path / "flink", slots=2, elastic=True)
    cluster.start()
    try:
        run = f"elastic{int(time.time())}"
        t = submit_training(kafka_bootstrap, cluster.address, run, "--parallelism", "4")
        job = _wait("the job", lambda: next((j["jid"] for j in flink_rest.jobs(cluster.address)
                                             if j["name"] == f"riverflink-train-{run}"), None))
        events = list(river_events("Phishing", 3 * PART))
        values = list(encode_events(events))
        models, docs = kafka_io.TopicReader(kafka_bootstrap, t.models), []

        def merged(n: int):
            docs.extend(d for d in models.poll_json(300) if d)
            return bool(docs) and max(d["meta"]["events"] for d in docs) >= n

        # aligned barriers: at-least-once checkpoints merged 89 events twice across these rescales (Dec 3)
        assert flink_rest.checkpoint_mode(cluster.address, job) == "exactly_once"
        # one task manager, two slots: the job runs at 2 of its 4
        assert _wait("parallelism 2", lambda: _replica_parallelism(cluster.address, job) == 2)
        kafka_io.produce(kafka_bootstrap, t.events, values[:PART])
        _wait(f"{PART} events merged", lambda: merged(PART))

        cluster.add_taskmanager()  # up: 4 slots
        _wait("parallelism 4", lambda: _replica_parallelism(cluster.address, job) == 4)
        kafka_io.produce(kafka_bootstrap, t.events, values[PART:2 * PART])
        _wait(f"{2 * PART} events merged", lambda: merged(2 * PART))

        stop_pid(cluster.taskmanagers[0].pid)  # down: the first task manager leaves
        _wait("parallelism 2 again", lambda: _replica_parallelism(cluster.address, job) == 2)
        kafka_io.produce(kafka_bootstrap, t.events, values[2 * PART:])
        _wait(f"{3 * PART} events merged", lambda: merged(3 * PART), timeout=180)
        time.sleep(3)
        merged(0)
        models.close()

        final = max(docs, key=lambda d: d["meta"]["version"])
        assert final["meta"]["events"] == 3 * PART, final["meta"]["events"]
        assert_scaler_holds_each_event_once(final, events)
        versions = [d["meta"]["version"] for d in docs]
        assert versions == sorted(set(versions)), "versions must strictly increase across the rescales"
        assert [j["jid"] for j in flink_rest.jobs(cluster.address) if j["state"] == "RUNNING"] == [job]
    finally:
        cluster.stop()
