"""The few Flink REST calls riverflink needs: list jobs, stop a job with a savepoint."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from riverflink.pipelines.config import ConfigError


class Unreachable(ConfigError):
    """Nothing answered at the cluster's address (refused, timed out, or reset too often)."""


#: how often a GET whose connection the REST server reset is tried again, and after how long
RESET_RETRIES, RESET_PAUSE_S = 2, 0.5


def _call(address: str, path: str, body: dict | None = None, timeout: float = 10) -> dict:
    """GET (or POST ``body`` to) ``path``; any failure is a one-line :class:`ConfigError`.  A GET whose connection
    was reset is tried again (:data:`RESET_RETRIES`; a busy local cluster's REST server did that once in CI), a
    POST never (it may have been acted on); a refused connection fails at once."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{address}{path}", data=data, method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    for attempt in range(RESET_RETRIES + 1):
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            raise ConfigError(plain_error(path, e.code, e.read().decode(errors="replace"))) from None
        except (OSError, ValueError) as e:
            reset = isinstance(getattr(e, "reason", e), ConnectionResetError)
            if not reset or body is not None or attempt == RESET_RETRIES:
                raise Unreachable(f"Flink cluster unreachable at {address} ({getattr(e, 'reason', e)})") from None
            time.sleep(RESET_PAUSE_S)
    raise AssertionError("unreachable")


#: Flink's answers that have a known fix: (text in the answer, the sentence riverflink says instead)
_KNOWN = (
    ("savepoint-dir] is not set", "the cluster has no default savepoint directory: pass --savepoint-dir DIR"),
    ("savepoints.dir", "the cluster has no default savepoint directory: pass --savepoint-dir DIR"),
)


def plain_error(path: str, code: int, body: str) -> str:
    """One sentence for a Flink REST error answer: a known cause with its fix, else the innermost Java message.

    >>> plain_error("/jobs/x/stop", 400, '{"errors":["org.apache.flink...: Config key '
    ...             '[execution.checkpointing.savepoint-dir] is not set. Property [...]"]}')
    'the cluster has no default savepoint directory: pass --savepoint-dir DIR'
    >>> plain_error("/jobs/x", 404, '{"errors":["java.lang.Exception: Job x not found"]}')
    'Flink REST /jobs/x answered 404: Job x not found'
    >>> plain_error("/overview", 503, '{"errors":["Service temporarily unavailable due to an ongoing leader '
    ...             'election. Please refresh."]}')[-40:]
    'ongoing leader election. Please refresh.'
    """
    for needle, sentence in _KNOWN:
        if needle in body:
            return sentence
    try:
        errors = json.loads(body).get("errors") or [body]
    except (ValueError, AttributeError):
        errors = [body]
    lines = [ln.strip() for e in errors for ln in str(e).splitlines() if ln.strip() and not ln.strip().startswith("at ")]
    text = lines[-1] if lines else body
    head, sep, rest = text.partition(": ")
    if sep and head.count(".") >= 2 and " " not in head:  # drop a Java class name
        text = rest
    return f"Flink REST {path} answered {code}: {text[:200]}"


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


def checkpoint_mode(address: str, job_id: str) -> str:
    """The job's checkpointing mode as Flink's REST API names it: ``exactly_once`` or ``at_least_once``."""
    return str(_call(address, f"/jobs/{job_id}/checkpoints/config").get("mode", ""))


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
    import difflib

    listed = jobs(address)
    running = [j["jid"] for j in listed if j["name"] == name and j["state"] == "RUNNING"]
    if len(running) != 1:
        names = sorted({j["name"] for j in listed if j["state"] == "RUNNING"})
        close = difflib.get_close_matches(name, names, n=1)
        raise ConfigError(f"expected one running job named {name!r} on {address}, found {len(running)}"
                          + (f" (did you mean {close[0]!r}?)" if close and len(running) == 0 else "")
                          + f"; running: {', '.join(repr(n) for n in names) or 'none'}")
    return running[0]


def still_up(address: str, wait: float = 3.0) -> bool:
    """Whether the cluster at ``address`` still answers ``wait`` seconds from now (a local mini-cluster stops with
    its job)."""
    time.sleep(wait)
    try:
        overview(address, timeout=2)
        return True
    except ConfigError:
        return False


def stop_with_savepoint(address: str, job_id: str, directory: str | None, timeout: float = 120) -> str:
    """Stop ``job_id`` with a savepoint in ``directory`` (None: the cluster's default savepoint directory);
    returns the savepoint's path.

    A local mini-cluster ends with its job, and it can end between two polls of the savepoint's status (seen
    once in CI).  Then the savepoint is the newest ``savepoint-<job id's first 6 characters>-*`` with a
    ``_metadata`` file in the directory, when that is on this machine's file system (:func:`written_savepoint`).
    """
    default = None
    if directory is None:
        try:
            conf = jobmanager_config(address)
        except ConfigError:
            conf = {}
        default = conf.get("execution.checkpointing.savepoint-dir") or conf.get("state.savepoints.dir")
    body = {"drain": False, **({"targetDirectory": directory} if directory else {})}
    trigger = _call(address, f"/jobs/{job_id}/stop", body)["request-id"]
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            status = _call(address, f"/jobs/{job_id}/savepoints/{trigger}")
        except Unreachable:
            found = written_savepoint(directory or default, job_id)
            if found:
                return found
            raise
        if status["status"]["id"] == "COMPLETED":
            op = status.get("operation", {})
            if "location" in op:
                return op["location"]
            raise ConfigError(f"savepoint failed: {json.dumps(op.get('failure-cause', op))[:300]}")
        time.sleep(0.2)
    raise ConfigError(f"no savepoint within {timeout:.0f}s")


def written_savepoint(directory: str | None, job_id: str) -> str | None:
    """The newest complete savepoint of ``job_id`` in ``directory`` (a plain path or a ``file:`` URI), as a
    ``file:`` URI; None when there is none or the directory is not on this machine.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> (d / "savepoint-abcdef-0123456789ab").mkdir(); (d / "savepoint-abcdef-0123456789ab" / "_metadata").touch()
    >>> written_savepoint(d.as_uri(), "abcdef0000") == (d / "savepoint-abcdef-0123456789ab").as_uri()
    True
    >>> written_savepoint(str(d), "123456ffff") is None  # another job's
    True
    """
    from pathlib import Path
    from urllib.parse import unquote, urlparse

    if not directory:
        return None
    url = urlparse(directory)
    if url.scheme not in ("", "file"):
        return None
    root = Path(unquote(url.path) if url.scheme else directory)
    done = [d for d in root.glob(f"savepoint-{job_id[:6]}-*") if (d / "_metadata").is_file()]
    return max(done, key=lambda d: d.stat().st_mtime).as_uri() if done else None
