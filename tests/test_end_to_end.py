"""The whole slice on a real broker and the real Flink mini-cluster.

One run (about a minute on 2 cores) is shared by the assertions below.
"""

from __future__ import annotations

import pytest

from pipelines import demo
from pipelines.sources import MALFORMED

pytestmark = pytest.mark.integration

EVENTS = 5000


@pytest.fixture(scope="module")
def run(kafka_bootstrap, tmp_path_factory):
    cfg = demo.DemoConfig(
        bootstrap_servers=kafka_bootstrap,
        events=EVENTS,
        rate=2000,
        replicas=4,
        model_name="e2e",
        timeout=300,
        show=0,
        log_dir=tmp_path_factory.mktemp("logs"),
    )
    return demo.run(cfg, out=lambda *_: None)


def test_counts_reconcile_exactly(run):
    assert run.events == EVENTS + len(MALFORMED)
    assert run.learned == EVENTS
    assert run.dead_lettered == len(MALFORMED)
    assert run.learned + run.dead_lettered == run.events


def test_dead_letters_carry_reason(run):
    assert len(run.dead_letter_reasons) == len(MALFORMED)
    assert all(run.dead_letter_reasons)
    assert any("not valid JSON" in r for r in run.dead_letter_reasons)


def test_versions_strictly_increase_and_every_replica_contributed(run):
    v = run.model_versions
    assert len(v) >= EVENTS // (4 * 100) // 2
    assert v == sorted(set(v))  # strictly increasing
    assert run.replicas_contributing == {"0", "1", "2", "3"}
    assert run.model_events == EVENTS  # every learned event was merged exactly once


def test_every_request_is_answered_with_a_version(run):
    assert run.answered == run.requests
    assert run.no_model_yet == 0
    assert all(isinstance(v, int) and v in run.model_versions for v in run.serving_versions)


def test_served_accuracy_within_two_points_of_single_node_river(run):
    assert run.baseline_accuracy > 0.8
    assert run.served_accuracy >= run.baseline_accuracy - 0.02, (run.served_accuracy, run.baseline_accuracy)
