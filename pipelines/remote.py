"""Submitting a job to a running Flink cluster with PyFlink's own ``flink run``.

PyFlink's Python environment always runs jobs on a local mini-cluster, so for
``--jobmanager HOST:PORT`` the CLI re-invokes itself under ``flink run -d -m
HOST:PORT -pym riverflink.pipelines.cli``, shipping a copy of the ``riverflink``
package with the job.  Python workers on the cluster use
``--python-executable`` (default: this interpreter, which suits a cluster on
this machine; point it at the cluster's own Python otherwise).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from riverflink.pipelines.config import ConfigError

IN_FLINK_RUN = "RIVERFLINK_IN_FLINK_RUN"


def inside_flink_run() -> bool:
    """True in a Python client started by Flink (``flink run``, the operator's PythonDriver)."""
    return os.environ.get(IN_FLINK_RUN) == "1" or "PYFLINK_GATEWAY_PORT" in os.environ


def submit(argv: list[str], jobmanager: str, python_executable: str | None = None,
           savepoint: str | None = None, unclaimed_state_ok: bool = False) -> int:
    """Run ``riverflink <argv>`` (without ``--jobmanager``) as a detached job on ``jobmanager``;
    ``unclaimed_state_ok``: restore ``savepoint`` even where it holds state of an operator the job no longer has
    (``flink run --allowNonRestoredState``)."""
    import pyflink

    from riverflink.pipelines import flink_rest

    flink = Path(pyflink.__file__).parent / "bin" / "flink"
    cluster = cluster_job_settings(flink_rest.jobmanager_config(jobmanager))
    # the workers' Python: --python-executable, else the cluster's python.executable, else this one
    py = python_executable or (None if "python.executable" in cluster else sys.executable)
    with tempfile.TemporaryDirectory() as conf:
        package = stage_package(Path(conf) / "python")
        from riverflink.pipelines.standalone import JAVA_OPTS

        # the client's configuration: where the cluster is, and the cluster's own job settings, so that the
        # job built inside flink run sees (and keeps) them
        (Path(conf) / "config.yaml").write_text(
            f"rest.address: {jobmanager.rsplit(':', 1)[0]}\nenv.java.opts.all: \"{JAVA_OPTS}\"\n"
            + "".join(f"{k}: {json.dumps(v)}\n" for k, v in cluster.items())
        )
        cmd = [str(flink), "run", "-d", "-m", jobmanager, *(["-s", savepoint] if savepoint else []),
               *(["--allowNonRestoredState"] if savepoint and unclaimed_state_ok else []),
               *(["-pyexec", py] if py else []), "-pyclientexec", sys.executable, "-pyfs", str(package),
               "-pym", "riverflink.pipelines.cli", *argv]
        env = {**os.environ, IN_FLINK_RUN: "1", "FLINK_CONF_DIR": conf, "PYTHONPATH": str(package.parent)}
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    if res.returncode != 0:
        lines = [line.strip() for line in out.strip().splitlines() if line.strip()]
        causes = [line for line in lines if line.startswith("Caused by:")]
        reason = causes[-1][len("Caused by:"):].strip() if causes else (lines[-1] if lines else "no output")
        raise ConfigError(f"flink run on {jobmanager} failed: {reason[:400]}")
    for line in out.splitlines():
        if "JobID" in line or "Job has been submitted" in line:
            print(line.strip())
    return 0


#: configuration a cluster may set for the jobs it runs, which a submitted riverflink job keeps
_JOB_SETTINGS = ("execution.checkpointing.", "restart-strategy", "state.", "parallelism.default", "python.executable")


def cluster_job_settings(config: dict[str, str]) -> dict[str, str]:
    """The job settings among a JobManager's configuration (``/jobmanager/config``).

    >>> cluster_job_settings({"execution.checkpointing.interval": "3 s", "rest.port": "8081",
    ...                       "restart-strategy.type": "fixed-delay"})
    {'execution.checkpointing.interval': '3 s', 'restart-strategy.type': 'fixed-delay'}
    """
    return {k: v for k, v in config.items() if k.startswith(_JOB_SETTINGS)}


def stage_package(into: Path) -> Path:
    """A copy of the installed ``riverflink`` package under ``into`` (what ``-pyfs`` ships), as a wheel lays it out."""
    import riverflink
    from riverflink import models, operators, pipelines

    target = into / "riverflink"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "java")
    shutil.copytree(Path(riverflink.__file__).parent, target, ignore=ignore)
    for pkg in (models, operators, pipelines):
        shutil.copytree(Path(pkg.__file__).parent, target / pkg.__name__.rsplit(".", 1)[1], ignore=ignore)
    return target


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
