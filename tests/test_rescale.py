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


def _user_records(reader, found: list) -> list:
    from riverflink.models.user_factors import read_user_record

    for value in reader.poll(300):
        factors = read_user_record(value, reader.model_name, 4)
        assert not isinstance(factors, str), factors
        found.append(factors)
    return found


def _metric_sum(reader, records: list, field: str, per_replica_once: bool = False) -> int:
    records += [r for r in reader.poll_json(300) if r and any(k.startswith("users_") for k in r)]
    if per_replica_once:  # (a once-per-replica count: the at-least-once sink may repeat its record)
        once: dict = {}
        for r in records:
            key = (r["job"], r["replica"])
            once[key] = max(once.get(key, 0), r.get(field, 0))
        return sum(once.values())
    return sum(r.get(field, 0) for r in records)


def test_a_recommender_moves_its_users_to_their_new_owners_when_replicas_change(kafka_bootstrap, tmp_path):
    """A BiasedMF job with two replicas learns 2,000 ratings and stops with a savepoint; resumed with three
    replicas, it reads its users back: the replicas let go of exactly the users whose owner changed, and their
    new owners adopt them (every record of theirs: each learned more than the last).  New ratings of those users
    then continue each user's factors: the new owner's record counts the old events plus the new ones, and only
    a user's owner under three replicas writes it."""
    from riverflink.models.user_table import owner
    from riverflink.pipelines.ratings_stream import RatingsShape, rating_events

    cluster = StandaloneCluster(tmp_path / "flink", slots=4)
    cluster.start()
    try:
        run = f"rescalereco{int(time.time())}"
        t = Topics.for_run(run)
        spec = "BiasedMF(n_factors=4,lr=0.03,l2_bias=0.001,l2_latent=0.001)"
        flags = [*t.cli_args(), "--model-name", run, "--model", spec, "--bootstrap-servers", kafka_bootstrap,
                 "--jobmanager", cluster.address, "--parallelism", "2", "--checkpoint-ms", "1000"]
        kafka_io.create_topics(kafka_bootstrap, t.to_create("events", "dead_letter", "predictions", "models",
                                                             "users", "metrics"))
        ratings = list(rating_events(2 * HALF, seed=11, shape=RatingsShape(users=300, items=60)))
        models, docs = kafka_io.TopicReader(kafka_bootstrap, t.models), []
        users, metrics = kafka_io.TopicReader(kafka_bootstrap, t.users), kafka_io.TopicReader(kafka_bootstrap,
                                                                                               t.metrics)
        users.model_name = run

        riverflink("train", *flags, "--replicas", "2", "--group-id", f"{run}-a")
        kafka_io.produce(kafka_bootstrap, t.events, list(encode_events(ratings[:HALF])))
        wait_for_events(models, docs, HALF)
        out = riverflink("stop", "--jobmanager", cluster.address, "--name", f"riverflink-train-{run}",
                         "--savepoint-dir", str(tmp_path / "savepoints")).stdout
        savepoint = out.split("savepoint: ")[1].split()[0]
        before: list = []
        deadline = time.time() + 30
        while time.time() < deadline and len({f.user for f in _user_records(users, before)}) < len(
                {r.user for r, _ in ratings[:HALF]}):
            pass
        last = {f.user: f for f in before}
        assert set(last) == {r.user for r, _ in ratings[:HALF]}
        moved = {u for u in last if owner(u, 3) != owner(u, 2)}
        adoptions = len({(f.user, f.events) for f in before if f.user in moved})
        assert len(moved) > 50

        riverflink("train", *flags, "--replicas", "3", "--group-id", f"{run}-b", "--from-savepoint", savepoint)
        found: list = []
        deadline = time.time() + 180
        while time.time() < deadline and _metric_sum(metrics, found, "users_adopted") < adoptions:
            pass
        assert _metric_sum(metrics, found, "users_adopted") >= adoptions, "the new owners did not adopt every user"
        assert _metric_sum(metrics, found, "users_released", per_replica_once=True) == len(moved)

        again = [(r, y) for r, y in ratings[HALF:] if r.user in moved][:300]
        kafka_io.produce(kafka_bootstrap, t.events, list(encode_events(again, start_id=HALF)))
        expected = {u: last[u].events + sum(1 for r, _ in again if r.user == u) for u in {r.user for r, _ in again}}
        after: list = []
        deadline = time.time() + 180
        while time.time() < deadline:
            newest = {f.user: f for f in _user_records(users, after) if f.writer != last[f.user].writer}
            if all(u in newest and newest[u].events == n for u, n in expected.items()):
                break
        newest = {f.user: f for f in after if f.writer != last[f.user].writer}
        assert {u: newest[u].events if u in newest else None for u in expected} == expected
        assert all(f.writer.rsplit("/", 1)[1] == str(owner(f.user, 3)) for f in after if f.user in newest)
    finally:
        cluster.stop()
