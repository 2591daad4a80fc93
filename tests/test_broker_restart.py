"""No silent loss when the broker loses its logs: the embedded (in-memory) broker is restarted mid-stream
under a running training job, and every event produced after the restart is learned exactly once.

The job's sources resume at their old positions.  Tansu answers a fetch beyond a log's end with nothing
(not OFFSET_OUT_OF_RANGE), so without the rewinding source every event below the old position was skipped
silently; and once the new log has grown past the old position (more events after the restart than before,
as here) a position check alone no longer sees anything wrong.  The sources notice the topics' new ids.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter

import orjson
import pytest

from riverflink.pipelines import kafka_io
from riverflink.pipelines.broker import EmbeddedBroker, stop_pid
from riverflink.pipelines.config import Topics
from riverflink.pipelines.sources import river_events
from tests.exact_content import assert_scaler_holds_each_event_once

pytestmark = pytest.mark.integration

BEFORE, AFTER = 300, 800  # more after than before, in every partition: the new logs grow past the old positions


def _produce(bootstrap: str, topic: str, events: list, prefix: str) -> None:
    """Send every event, spread evenly over the topic's partitions (so that every partition's new log grows
    past its old position), and wait for every acknowledgement."""
    producer = kafka_io.producer(bootstrap)
    try:
        partitions = sorted(producer.partitions_for(topic))
        sends = [producer.send(topic, value=orjson.dumps({"id": f"{prefix}-{i}", "x": x, "y": y}),
                               partition=partitions[i % len(partitions)]) for i, (x, y) in enumerate(events)]
        producer.flush()
        for f in sends:
            f.get(timeout=30)
    finally:
        producer.close()


def _learned_ids(reader: kafka_io.TopicReader, prefix: str, want: int, timeout: float, job) -> Counter:
    """How often each event id with ``prefix`` was learned, per the training predictions (read until ``want``
    distinct ids, then 3 s more to see late repeats)."""
    seen: Counter = Counter()
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert job.poll() is None, "the training job exited"
        for p in reader.poll_json(500):
            if p and str(p.get("id") or p.get("request_id")).startswith(prefix):
                seen[p.get("id") or p.get("request_id")] += 1
        if len(seen) >= want:
            deadline = min(deadline, time.time() + 3)
    return seen


def test_every_event_produced_after_a_broker_restart_is_learned(tmp_path):
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    name = f"restart{int(time.time())}"
    t = Topics.for_run(name)
    job = None
    try:
        kafka_io.create_topics(broker.bootstrap, t.to_create())
        kafka_io.create_topics(broker.bootstrap, {t.training_predictions: 1})
        job = subprocess.Popen(
            [sys.executable, "-m", "riverflink.pipelines.cli", "train", "--bootstrap-servers", broker.bootstrap,
             "--model-name", name, *t.cli_args("train"), "--group-id", f"{name}-t", "--training-predictions",
             "--checkpoint-ms", "1000", "--status-every", "0"],
            stdout=open(tmp_path / "train.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        events = list(river_events("Phishing", BEFORE + AFTER, seed=4))
        _produce(broker.bootstrap, t.events, events[:BEFORE], "before")
        reader = kafka_io.TopicReader(broker.bootstrap, t.training_predictions)
        assert len(_learned_ids(reader, "before", BEFORE, 180, job)) == BEFORE, (tmp_path / "train.log").read_text()[-2000:]
        reader.close()
        time.sleep(3)  # a checkpoint holds the positions past the first events

        broker.stop()  # the in-memory logs are gone
        time.sleep(3)
        broker.start()
        kafka_io.create_topics(broker.bootstrap, t.to_create())
        kafka_io.create_topics(broker.bootstrap, {t.training_predictions: 1})
        _produce(broker.bootstrap, t.events, events[BEFORE:], "after")
        reader = kafka_io.TopicReader(broker.bootstrap, t.training_predictions)
        after = _learned_ids(reader, "after", AFTER, 240, job)
        reader.close()
        assert set(after) == {f"after-{i}" for i in range(AFTER)}, (
            f"{AFTER - len(after)} of {AFTER} events produced after the restart were not learned")
        twice = sorted((i for i, n in after.items() if n > 1), key=lambda i: int(i.split("-")[1]))
        assert not twice, f"{len(twice)} events learned more than once: {twice[:20]}"
        # by content: the merged model (published again on the new broker) holds every event exactly once
        models_reader, final = kafka_io.TopicReader(broker.bootstrap, t.models), None
        deadline = time.time() + 120
        while time.time() < deadline and (final is None or final["meta"]["events"] < BEFORE + AFTER):
            docs = [d for d in models_reader.poll_json(500) if d]
            final = max(docs + ([final] if final else []), key=lambda d: d["meta"]["version"], default=None)
        models_reader.close()
        assert final is not None and final["meta"]["events"] == BEFORE + AFTER, final and final["meta"]["events"]
        assert_scaler_holds_each_event_once(final, events)
    finally:
        if job is not None:
            stop_pid(job.pid)
        broker.stop()
