"""Event sources of ``riverflink produce``: River datasets, JSONL and CSV files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from riverflink.pipelines import kafka_io
from riverflink.pipelines.config import ConfigError
from riverflink.pipelines.sources import file_events, river_events

REPO = Path(__file__).resolve().parents[1]


def test_river_dataset_is_shuffled_and_repeated_to_the_requested_length():
    events = list(river_events("Phishing", 3000, seed=1))
    assert len(events) == 3000
    assert all(isinstance(k, str) and isinstance(v, float) for x, _ in events[:50] for k, v in x.items())
    assert events[:1250] != events[1250:2500]  # each pass is reshuffled


def test_csv_and_jsonl_files(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("a,b,label\n1,2.5,true\n3,,false\n")
    assert list(file_events(str(csv), "label")) == [({"a": 1.0, "b": 2.5}, True), ({"a": 3.0}, False)]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"x": {"a": 1}, "y": "cat"}\n\n{"x": {"a": 2}, "y": "dog"}\n')
    assert list(file_events(str(jsonl), None)) == [({"a": 1}, "cat"), ({"a": 2}, "dog")]
    with pytest.raises(ConfigError, match="--target"):
        list(file_events(str(csv), None))
    with pytest.raises(ConfigError, match="no such file"):
        list(file_events(str(tmp_path / "missing.csv"), "y"))


def test_produce_a_file_to_a_real_broker(kafka_bootstrap, tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps({"x": {"a": i}, "y": i % 2 == 0}) + "\n" for i in range(25)))
    topic = f"produce-{tmp_path.name}"
    res = subprocess.run([sys.executable, "-m", "riverflink.pipelines.cli", "produce", "--bootstrap-servers", kafka_bootstrap,
                          "--file", str(jsonl), "--topic", topic, "--quiet"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    got = [json.loads(v) for v in kafka_io.consume(kafka_bootstrap, topic, idle_timeout=5)]
    assert sorted(e["id"] for e in got) == list(range(25))
    assert all(e["y"] == (e["x"]["a"] % 2 == 0) for e in got)


def test_produce_a_ratings_file_with_renamed_columns_to_a_real_broker(kafka_bootstrap, tmp_path):
    """``produce --file F --user-field C --item-field G --target T``: a ratings CSV is sent as the recommender's
    events, ``{"id", "user", "item", "y"}``, in the file's order."""
    csv_file = tmp_path / "r.csv"
    csv_file.write_text("customer,film,stars\n" + "".join(f"c{i % 7},f{i % 5},{1 + i % 5}\n" for i in range(30)))
    topic = f"produce-ratings-{tmp_path.name}"
    res = subprocess.run([sys.executable, "-m", "riverflink.pipelines.cli", "produce", "--bootstrap-servers",
                          kafka_bootstrap, "--file", str(csv_file), "--user-field", "customer", "--item-field", "film",
                          "--target", "stars", "--topic", topic, "--partitions", "1", "--quiet"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    got = [json.loads(v) for v in kafka_io.consume(kafka_bootstrap, topic, idle_timeout=5)]
    assert got == [{"id": i, "user": f"c{i % 7}", "item": f"f{i % 5}", "y": float(1 + i % 5)} for i in range(30)]
