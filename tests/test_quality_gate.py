"""The merger's quality gate on real replicas: a poisoned version is held back and the last good one keeps
serving; without a gate the same run serves the poisoned versions."""

from __future__ import annotations

import orjson

from riverflink import models
from riverflink.models.policies import MergePolicy
from riverflink.models.spec import build
from riverflink.models.sync import SyncPolicy
from riverflink.operators.loop import LoopSettings, MergerSide, ReplicaSide
from riverflink.operators.model_feed import FeedRules, accept
from riverflink.operators.quality_gate import QualityGate
from riverflink.pipelines.sources import river_events

SPEC = "StandardScaler|LogisticRegression"


def run(gate: QualityGate | None) -> list[dict]:
    """Two replicas on Phishing, batches of 50, every merged version seen at once; between events 1,500 and
    1,600 one replica learns events whose features are 1e12 (its scaler's statistics are ruined)."""
    events = list(river_events("Phishing", 3000, seed=1))
    settings = LoopSettings("gate", sync=SyncPolicy(every_events=50, every_seconds=None), policy=MergePolicy("delta"),
                            quality_gate=None if gate is None else gate.margin)
    replica_side, merger_side = ReplicaSide(settings, build(SPEC)), MergerSide(settings, build(SPEC))
    replicas = [replica_side.fresh() for _ in range(2)]
    merger = merger_side.fresh()
    merger.gate = gate  # this test's evidence threshold (min_events) rather than the default
    docs: list[dict] = []
    rules = FeedRules("gate")
    latest = None
    for start in range(0, len(events), 100):
        for k, r in enumerate(replicas):
            batch = events[start + 50 * k : start + 50 * (k + 1)]
            if latest is not None:
                entry, model = latest
                replica_side.on_model(r, k, entry.meta, lambda: models.get_params(model))
            xs = [dict(x) for x, _ in batch]
            if k == 0 and 1500 <= start < 1600:
                xs = [{f: 1e12 for f in x} for x in xs]
            for data in replica_side.on_events(r, k, xs, [y for _, y in batch]).updates:
                doc = merger_side.on_update(merger, data).document
                if doc is not None:
                    text = models.dumps(doc)
                    entry, model, problem = accept(text, rules, None)
                    assert problem is None
                    latest = (entry, model)
                    docs.append(orjson.loads(text))
    return docs


def served(docs: list[dict]) -> list[dict]:
    """What a serving job takes from the topic: every version the gate does not hold."""
    rules, out = FeedRules("gate", serving=True), []
    for d in docs:
        entry, _, problem = accept(orjson.dumps(d), rules, out[-1]["meta"]["version"] if out else None)
        assert problem is None
        if entry is not None:
            out.append(d)
    return out


TEST = list(river_events("Phishing"))[-250:]


def accuracy(doc: dict) -> float:
    model = models.from_wire(doc)
    test = TEST
    return sum(model.predict_one(x) == y for x, y in test) / len(test)


def test_a_poisoned_version_is_held_back_and_the_last_good_version_keeps_serving():
    docs = run(QualityGate(margin=0.05, regression=False, min_events=100))
    held = [d for d in docs if (d["meta"]["held"] or "").startswith("worse")]
    assert held, "the gate never held a version back"
    assert docs[-1]["meta"]["held_back"] == len(held)
    poisoned = [d for d in docs if accuracy(d) < 0.6]
    assert poisoned, "the run did not poison any version: the test proves nothing"
    kept = served(docs)
    assert all(accuracy(d) >= 0.75 for d in kept)
    # replicas see every version (serving=False), held ones included
    rules = FeedRules("gate")
    assert all(accept(orjson.dumps(d), rules, None)[0] is not None for d in docs)


def test_without_a_gate_the_poisoned_versions_are_served():
    docs = run(None)
    assert "held" not in docs[-1]["meta"]
    assert any(accuracy(d) < 0.6 for d in served(docs))
