"""The serving predictor's answers, called directly (its Flink shell needs no cluster for this)."""

from __future__ import annotations

import json

from river import linear_model

from riverflink import models
from riverflink.operators.frames import frame, open_frames
from riverflink.operators.predictor import Predictor


def answer(predictor: Predictor, raw: bytes) -> dict:
    (request,) = open_frames(frame(0, 5, 1_700_000_000_000, None, raw))  # as the JVM hands a request over
    record, status = predictor._answer(request)
    out = json.loads(record)
    assert out["status"] == status
    return out


def test_answers_carry_id_prediction_version_and_age_or_a_clear_status():
    p = Predictor("m", batched=False)
    p.version = p.created_at = p.model = None  # what open() sets, without a Flink runtime
    assert answer(p, b'{"id": 1, "x": {"a": 1.0}}')["status"] == "no_model_yet"

    model = linear_model.LogisticRegression()
    model.learn_one({"a": 1.0}, True)
    p.version, p.created_at, p.model = 42, 0.0, models.from_wire(models.to_wire(model, version=42))
    ok = answer(p, b'{"id": 7, "x": {"a": 1.0}}')
    assert ok["status"] == "ok" and ok["id"] == 7 and ok["model_version"] == 42
    assert ok["prediction"] is True and dict(map(tuple, ok["proba"]))[True] > 0.5
    assert ok["model_age_ms"] > 0

    bad = answer(p, b"not json")
    assert bad["status"] == "bad_request" and "not valid JSON" in bad["reason"]
    assert answer(p, b'{"id": 8, "x": {"a": "x"}}')["status"] == "bad_request"
