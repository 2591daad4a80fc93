"""The few Flink REST calls riverflink needs: list jobs, stop a job with a savepoint."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from riverflink.pipelines.config import ConfigError


def _call(address: str, path: str, body: dict | None = None, timeout: float = 10) -> dict:
    """GET (or POST ``body`` to) ``path``; any failure is a one-line :class:`ConfigError`."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{address}{path}", data=data, method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        raise ConfigError(f"Flink REST {path} answered {e.code}: {e.read().decode(errors='replace')[:200]}") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"Flink cluster unreachable at {address} ({getattr(e, 'reason', e)})") from None


def overview(address: str, timeout: float = 10) -> dict:
    """The cluster overview: task managers, slots, jobs by state."""
    return _call(address, "/overview", timeout=timeout)


def config(address: str, timeout: float = 10) -> dict:
    """The endpoint's ``/config`` (``flink-version`` among others); a way to tell it is Flink's."""
    return _call(address, "/config", timeout=timeout)


def failures(address: str, job_id: str) -> list[str]:
    """The first line of each failure the job recovered from (its exception history)."""
    entries = (_call(address, f"/jobs/{job_id}/exceptions").get("exceptionHistory") or {}).get("entries") or []
    return [(str(e.get("stacktrace", "")).splitlines() or [""])[0][:300] for e in entries]


def failed_checkpoints(address: str, job_id: str) -> list[str]:
    """``"<id>: <why>"`` for each recent checkpoint that began and failed (the latest always among them).

    A trigger refused while tasks are still starting never begins, and is not listed.
    """
    stats = _call(address, f"/jobs/{job_id}/checkpoints")
    entries = [h for h in stats.get("history") or [] if h.get("status") == "FAILED"]
    latest = (stats.get("latest") or {}).get("failed")
    if latest and all(h.get("id") != latest.get("id") for h in entries):
        entries.append(latest)
    return [f"{h.get('id')}: {str(h.get('failure_message'))[:300]}" for h in entries]


def jobmanager_config(address: str) -> dict[str, str]:
    """The JobManager's configuration, ``{key: value}``."""
    return {e["key"]: e["value"] for e in _call(address, "/jobmanager/config")}


def checkpoint_interval_ms(address: str, job_id: str) -> int:
    """The job's checkpoint interval in ms (0: checkpointing off)."""
    return int(_call(address, f"/jobs/{job_id}/checkpoints/config").get("interval", 0))


def restarts(address: str, job_id: str) -> int:
    """Failures the job recovered from (entries in its exception history)."""
    return len(failures(address, job_id))


def jobs(address: str) -> list[dict]:
    """``[{"jid", "name", "state", ...}]`` of every job the cluster knows."""
    return _call(address, "/jobs/overview")["jobs"]


def vertex_parallelism(address: str, job_id: str) -> dict[str, int]:
    """Operator-chain name -> parallelism of a job."""
    return {v["name"]: v["parallelism"] for v in _call(address, f"/jobs/{job_id}")["vertices"]}


def find_running(address: str, name: str) -> str:
    running = [j["jid"] for j in jobs(address) if j["name"] == name and j["state"] == "RUNNING"]
    if len(running) != 1:
        raise ConfigError(f"expected one running job named {name!r} on {address}, found {len(running)}")
    return running[0]


def stop_with_savepoint(address: str, job_id: str, directory: str | None, timeout: float = 120) -> str:
    """Stop ``job_id`` with a savepoint in ``directory`` (None: the cluster's ``state.savepoints.dir``);
    returns the savepoint's path."""
    body = {"drain": False, **({"targetDirectory": directory} if directory else {})}
    trigger = _call(address, f"/jobs/{job_id}/stop", body)["request-id"]
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = _call(address, f"/jobs/{job_id}/savepoints/{trigger}")
        if status["status"]["id"] == "COMPLETED":
            op = status.get("operation", {})
            if "location" in op:
                return op["location"]
            raise ConfigError(f"savepoint failed: {json.dumps(op.get('failure-cause', op))[:300]}")
        time.sleep(0.5)
    raise ConfigError(f"no savepoint within {timeout:.0f}s")
