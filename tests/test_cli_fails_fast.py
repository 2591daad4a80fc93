"""Bad settings and unreachable services end a command with one readable line, quickly."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from riverflink.pipelines.broker import free_port

REPO = Path(__file__).resolve().parents[1]


def riverflink(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "riverflink.pipelines.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--bootstrap-servers", "127.0.0.1:{port}"], "Kafka unreachable at 127.0.0.1:"),
        (["serve", "--bootstrap-servers", "127.0.0.1:{port}"], "Kafka unreachable at 127.0.0.1:"),
        (["train", "--bootstrap-servers", "nonsense"], "--bootstrap-servers must be HOST:PORT"),
        (["train", "--bootstrap-servers", "127.0.0.1:9", "--replicas", "0"], "--replicas must be >= 1"),
        (["train", "--bootstrap-servers", "127.0.0.1:9", "--model", "Bogus"], "unknown model step 'Bogus'"),
        (["produce", "--bootstrap-servers", "127.0.0.1:{port}", "--quiet"], "Kafka unreachable"),
        (["models", "--bootstrap-servers", "127.0.0.1:{port}"], "Kafka unreachable"),
    ],
)
def test_one_line_error_without_hanging(args, message):
    port = str(free_port())  # nothing listens there
    started = time.time()
    res = riverflink(*[a.replace("{port}", port) for a in args])
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("riverflink: error:") and message in lines[0], res.stderr
    assert time.time() - started < 30


def test_unreachable_flink_cluster(kafka_bootstrap):
    port = str(free_port())
    res = riverflink("serve", "--bootstrap-servers", kafka_bootstrap, "--jobmanager", f"127.0.0.1:{port}")
    assert res.returncode == 2
    assert res.stderr.strip().startswith(f"riverflink: error: Flink cluster unreachable at 127.0.0.1:{port}")


def test_help_is_available_for_every_command():
    for cmd in ("broker", "produce", "train", "serve", "tail", "models", "demo"):
        res = riverflink(cmd, "--help")
        assert res.returncode == 0 and "usage: riverflink" in res.stdout
