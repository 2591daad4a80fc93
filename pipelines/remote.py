"""Submitting a job to a running Flink cluster with PyFlink's own ``flink run``.

PyFlink's Python environment always runs jobs on a local mini-cluster, so for
``--jobmanager HOST:PORT`` the CLI re-invokes itself under ``flink run -d -m
HOST:PORT -pym pipelines.cli``, shipping ``models``, ``operators`` and
``pipelines`` with the job.  Python workers on the cluster use
``--python-executable`` (default: this interpreter, which suits a cluster on
this machine; point it at the cluster's own Python otherwise).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from pipelines.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
IN_FLINK_RUN = "RIVERFLINK_IN_FLINK_RUN"


def inside_flink_run() -> bool:
    """True in a Python client started by Flink (``flink run``, the operator's PythonDriver)."""
    return os.environ.get(IN_FLINK_RUN) == "1" or "PYFLINK_GATEWAY_PORT" in os.environ


def submit(argv: list[str], jobmanager: str, python_executable: str | None = None,
           savepoint: str | None = None) -> int:
    """Run ``riverflink <argv>`` (without ``--jobmanager``) as a detached job on ``jobmanager``."""
    import pyflink

    flink = Path(pyflink.__file__).parent / "bin" / "flink"
    py = python_executable or sys.executable
    files = ",".join(str(REPO / p) for p in ("models", "operators", "pipelines"))
    with tempfile.TemporaryDirectory() as conf:
        from pipelines.standalone import JAVA_OPTS

        (Path(conf) / "config.yaml").write_text(
            f"rest.address: {jobmanager.rsplit(':', 1)[0]}\nenv.java.opts.all: \"{JAVA_OPTS}\"\n"
        )
        cmd = [str(flink), "run", "-d", "-m", jobmanager, *(["-s", savepoint] if savepoint else []),
               "-pyexec", py, "-pyclientexec", sys.executable, "-pyfs", files, "-pym", "pipelines.cli", *argv]
        env = {**os.environ, IN_FLINK_RUN: "1", "FLINK_CONF_DIR": conf, "PYTHONPATH": str(REPO)}
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    if res.returncode != 0:
        last = [line for line in out.strip().splitlines() if line.strip()][-1:] or ["no output"]
        raise ConfigError(f"flink run on {jobmanager} failed: {last[0][:300]}")
    for line in out.splitlines():
        if "JobID" in line or "Job has been submitted" in line:
            print(line.strip())
    return 0


def strip_jobmanager(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--jobmanager":
            skip = True
            continue
        if a.startswith("--jobmanager="):
            continue
        out.append(a)
    return out
