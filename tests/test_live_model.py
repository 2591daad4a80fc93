"""LiveModel on a real broker: newer versions replace the held one; stale, duplicate and forged ones do not."""

from __future__ import annotations

import time

import pytest
from river import linear_model

from riverflink import LiveModel, models
from riverflink.pipelines import kafka_io
from riverflink.pipelines.live_model import NoModelYet

pytestmark = pytest.mark.integration


def _doc(version: int, weight: float, name: str = "live") -> bytes:
    model = linear_model.LogisticRegression()
    model.learn_one({"a": 1.0}, True)
    params = models.get_params(model)
    params["weights"] = {"a": weight}
    models.set_params(model, params)
    return models.dumps(models.to_wire(model, name=name, version=version, created_at=time.time()))


def _wait_for(live: LiveModel, version: int, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while live.version != version and time.time() < deadline:
        time.sleep(0.05)


def test_live_model_follows_newer_versions_only(kafka_bootstrap):
    topic = f"models-live-{int(time.time() * 1000)}"
    kafka_io.create_topics(kafka_bootstrap, {topic: 1})
    now_ms = int(time.time() * 1000)
    with LiveModel(kafka_bootstrap, "live", topic=topic) as live:
        with pytest.raises(NoModelYet):
            live.predict_proba_one({"a": 1.0})
        kafka_io.produce(kafka_bootstrap, topic, [_doc(now_ms, 2.0)])
        assert live.wait(20)
        assert live.version == now_ms and live.predict_proba_one({"a": 1.0})[True] > 0.8
        assert live.predict_one({"a": 1.0}) is True and live.age_ms >= 0

        kafka_io.produce(kafka_bootstrap, topic, [_doc(now_ms + 5, -2.0)])
        _wait_for(live, now_ms + 5)
        assert live.version == now_ms + 5 and live.predict_proba_one({"a": 1.0})[True] < 0.2

        forged_future = _doc(now_ms + 10**9, 9.0)  # ~11 days ahead: refused
        other_model = _doc(now_ms + 50, 9.0, name="someone-else")
        kafka_io.produce(kafka_bootstrap, topic, [_doc(now_ms + 1, 5.0), _doc(now_ms + 5, 5.0), forged_future,
                                                  other_model, b"garbage", b'{"schema":"riverflink.model/1","meta":{}}'])
        kafka_io.produce(kafka_bootstrap, topic, [_doc(now_ms + 20, -3.0)])  # a marker after the junk
        _wait_for(live, now_ms + 20)
        assert live.version == now_ms + 20  # none of the stale, duplicate or forged ones was held
        assert live.ignored >= 3
