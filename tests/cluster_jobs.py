"""The CLI as a user runs it (:func:`riverflink`), and submitting the training job to a test's standalone cluster
(``riverflink train --jobmanager``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from riverflink.pipelines import kafka_io
from riverflink.pipelines.config import Topics

REPO = Path(__file__).resolve().parents[1]


def riverflink(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``riverflink ARGS`` in a child process from the repository (its output captured, never checked here)."""
    return subprocess.run([sys.executable, "-m", "riverflink.pipelines.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def submit_training(bootstrap: str, jobmanager: str, run: str, *flags: str) -> Topics:
    """Create run ``run``'s topics and submit its training job (checkpoints every second, ``flags`` added);
    returns the topics.  Fails the test, with the CLI's output, unless Flink accepted the job."""
    t = Topics.for_run(run)
    kafka_io.create_topics(bootstrap, t.to_create("events", "dead_letter", "predictions", "models"))
    res = riverflink("train", "--bootstrap-servers", bootstrap, "--jobmanager", jobmanager, "--model-name", run,
                     "--group-id", run, "--checkpoint-ms", "1000", *flags, *t.cli_args(), timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Job has been submitted" in res.stdout, res.stdout[-2000:]
    return t
