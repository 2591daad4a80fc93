"""riverflink's Flink metrics reach Prometheus: a local training job with --metrics-port is scraped."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request

import pytest

from riverflink.pipelines import kafka_io
from riverflink.pipelines.broker import free_port, stop_pid
from riverflink.pipelines.config import Topics
from riverflink.pipelines.sources import MALFORMED, encode_events, river_events

pytestmark = pytest.mark.integration


def _scrape(port: int) -> dict:
    """``{metric name: summed value}`` for riverflink's metrics on the endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict = {}
    for line in text.splitlines():
        m = re.match(r"^(\w*riverflink_\w+)(\{[^}]*\})?\s+(\S+)$", line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


def test_prometheus_endpoint_shows_riverflink_metrics(kafka_bootstrap, tmp_path):
    run = f"metrics{int(time.time())}"
    t = Topics.for_run(run)
    kafka_io.create_topics(kafka_bootstrap, t.to_create())
    kafka_io.produce(kafka_bootstrap, t.events, [*encode_events(river_events("Phishing", 1000)), *MALFORMED])
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "riverflink.pipelines.cli", "train", "--bootstrap-servers",
                             kafka_bootstrap, "--model-name", run, "--group-id", run, *t.cli_args(),
                             "--metrics-port", str(port)],
                            stdout=open(tmp_path / "train.log", "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline, seen = time.time() + 120, {}
        while time.time() < deadline:
            assert proc.poll() is None, (tmp_path / "train.log").read_text()[-2000:]
            time.sleep(2)
            try:
                seen = _scrape(port)
            except OSError:
                continue
            learned = next((v for k, v in seen.items() if k.endswith("riverflink_events_learned")), 0)
            merges = next((v for k, v in seen.items() if k.endswith("riverflink_merges")), 0)
            staleness = next((v for k, v in seen.items() if k.endswith("riverflink_staleness_ms")), 0)
            if learned >= 1000 and merges >= 1 and staleness > 0:
                break
        names = {k.split("riverflink_")[-1]: v for k, v in seen.items()}
        assert names.get("events_learned") == 1000, names
        assert names.get("events_dead_lettered") == len(MALFORMED), names
        assert names.get("merges", 0) >= 1 and names.get("syncs", 0) >= 1
        assert names.get("accuracy_permille", 0) > 500
        by_reason = {k: v for k, v in names.items() if k.startswith("events_dead_lettered_")}
        assert sum(by_reason.values()) == len(MALFORMED), by_reason
        assert by_reason.get("events_dead_lettered_malformed", 0) >= 2 and by_reason.get(
            "events_dead_lettered_label", 0) >= 1, by_reason
        assert names.get("staleness_ms", 0) > 0
    finally:
        stop_pid(proc.pid)
