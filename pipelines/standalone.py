"""A real standalone Flink cluster from the ``pyflink`` install: one JobManager and one TaskManager JVM.

Started with our own conf dir (everything bound to 127.0.0.1, explicit ports),
each process in its own session and stopped by PID.  Used by tests that kill
a TaskManager, and by ``riverflink cluster``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from riverflink.pipelines import flink_rest, jars
from riverflink.pipelines.broker import die_with_parent, free_port, stop_pid
from riverflink.pipelines.config import ConfigError

#: what Flink's own distribution config passes to every JVM on Java 17 (pyflink ships no config)
JAVA_OPTS = " ".join(
    ["--add-exports=java.base/sun.net.util=ALL-UNNAMED", "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
     "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED"]
    + [f"--add-opens=java.base/{p}=ALL-UNNAMED" for p in (
        "java.lang", "java.net", "java.io", "java.nio", "sun.nio.ch", "java.lang.reflect", "java.text", "java.time",
        "java.util", "java.util.concurrent", "java.util.concurrent.atomic", "java.util.concurrent.locks")]
)


def flink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).parent


#: the adaptive scheduler, tuned to follow task managers within seconds (Flink's defaults wait up to a minute):
#: a job runs at the parallelism the cluster's free slots allow, up to its own, and rescales from its latest
#: checkpoint when task managers come or go
ADAPTIVE = {
    "jobmanager.scheduler": "adaptive",
    "jobmanager.adaptive-scheduler.submission.resource-stabilization-timeout": "2 s",
    "jobmanager.adaptive-scheduler.executing.resource-stabilization-timeout": "3 s",
    "jobmanager.adaptive-scheduler.executing.cooldown-after-rescaling": "5 s",
}


def write_conf(conf_dir: Path, rest_port: int, slots: int = 4, elastic: bool = False) -> None:
    conf_dir.mkdir(parents=True, exist_ok=True)
    ports = {k: free_port() for k in ("rpc", "tm_rpc", "data", "blob")}
    conf = {
        "jobmanager.rpc.address": "127.0.0.1",
        "jobmanager.rpc.port": ports["rpc"],
        "jobmanager.bind-host": "127.0.0.1",
        "rest.address": "127.0.0.1",
        "rest.bind-address": "127.0.0.1",
        "rest.port": rest_port,
        "taskmanager.host": "127.0.0.1",
        "taskmanager.bind-host": "127.0.0.1",
        "taskmanager.rpc.port": ports["tm_rpc"],
        "taskmanager.data.port": ports["data"],
        "blob.server.port": ports["blob"],
        "taskmanager.numberOfTaskSlots": slots,
        "jobmanager.memory.process.size": "1024m",
        "taskmanager.memory.process.size": "2048m",
        "parallelism.default": 2,
        # the cluster's own checkpointing and restart strategy, which jobs submitted to it keep
        "execution.checkpointing.interval": "3 s",
        # file storage, as any real cluster has: the JobManager's in-memory default fails any checkpoint over 5 MB
        # (a job with working sets passed it before its replicas' first merged version, and restarted empty)
        "execution.checkpointing.storage": "filesystem",
        "execution.checkpointing.dir": (conf_dir.parent / "checkpoints").resolve().as_uri(),
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": 1000,
        "restart-strategy.fixed-delay.delay": "1 s",
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
        "heartbeat.timeout": 10000,
        "heartbeat.interval": 2000,
        "env.java.opts.all": JAVA_OPTS,
    }
    if elastic:
        conf.update(ADAPTIVE)
    agent = jars.loopback_agent()
    if agent is not None:  # the Python workers' gRPC servers on 127.0.0.1 only (pipelines/java-loopback)
        conf["env.java.opts.taskmanager"] = f"-javaagent:{agent}"
    (conf_dir / "config.yaml").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in conf.items()))
    src = flink_home() / "conf"
    for name in ("log4j.properties", "log4j-console.properties"):
        if (src / name).exists():
            (conf_dir / name).write_text((src / name).read_text())


@dataclass
class StandaloneCluster:
    work_dir: Path
    slots: int = 4
    #: the adaptive scheduler (:data:`ADAPTIVE`): jobs follow task managers that are added or removed
    elastic: bool = False
    rest_port: int = 0
    jobmanager: subprocess.Popen | None = None
    taskmanagers: list = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.rest_port}"

    def _env(self) -> dict:
        return {**os.environ, "FLINK_CONF_DIR": str(self.work_dir / "conf"), "FLINK_LOG_DIR": str(self.work_dir / "log"),
                "FLINK_HOME": str(flink_home())}

    def _spawn(self, script: str, log_name: str, *dynamic: str) -> subprocess.Popen:
        (self.work_dir / "log").mkdir(parents=True, exist_ok=True)
        log = open(self.work_dir / "log" / log_name, "ab")
        return subprocess.Popen(["bash", str(flink_home() / "bin" / script), "start-foreground", *dynamic],
                                env=self._env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=die_with_parent)

    def start(self, timeout: float = 90) -> "StandaloneCluster":
        self.rest_port = self.rest_port or free_port()
        write_conf(self.work_dir / "conf", self.rest_port, self.slots, self.elastic)
        self.jobmanager = self._spawn("jobmanager.sh", "jobmanager.out")
        self.add_taskmanager()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.jobmanager.poll() is not None:
                raise ConfigError(f"the JobManager exited; see {self.work_dir / 'log'}")
            try:
                if flink_rest.overview(self.address, timeout=2).get("taskmanagers", 0) >= 1:
                    return self
            except ConfigError:
                pass  # the REST endpoint is not up yet
            time.sleep(0.5)
        self.stop()
        raise ConfigError(f"the standalone cluster did not come up within {timeout:.0f}s")

    def add_taskmanager(self) -> subprocess.Popen:
        """A new TaskManager on fresh RPC and data ports: the JobManager quarantines the address of a
        TaskManager that died, so a replacement on the same port could never register."""
        tm = self._spawn("taskmanager.sh", f"taskmanager-{len(self.taskmanagers)}.out",
                         f"-Dtaskmanager.rpc.port={free_port()}", f"-Dtaskmanager.data.port={free_port()}")
        self.taskmanagers.append(tm)
        return tm

    def stop(self) -> None:
        for p in [*self.taskmanagers, self.jobmanager]:
            if p is not None and p.poll() is None:
                stop_pid(p.pid)
        self.taskmanagers = []
        self.jobmanager = None

    def __enter__(self) -> "StandaloneCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
