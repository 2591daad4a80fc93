"""A PyFlink ``StreamExecutionEnvironment`` set up the way riverflink jobs need it.

* Python workers run this interpreter (``python.executable``), not whatever
  ``python`` is on PATH: otherwise workers fail to import and, with
  checkpointing on, the job restarts forever.
* A bounded restart strategy, so a broken job fails instead of hanging.
* Checkpoints on a file system (a temporary directory on local runs), and a
  few failed checkpoints ridden out before a restart: a restart replays
  records, so it must not come from one slow checkpoint.
* Checkpoints are always *exactly-once* (aligned barriers), whatever a
  cluster's configuration says: the replicas and the merger read several
  input channels, and at-least-once checkpoints let an operator take in
  records that follow the barrier on one channel before its snapshot, so a
  restore learns (or merges) them twice.  Seen as 89 of 4,500 events merged
  twice across an adaptive rescale (``tests/test_elastic.py``).
* The Kafka connector jars (:mod:`riverflink.pipelines.jars`).
* A running cluster is reached through ``flink run`` (:mod:`pipelines.remote`);
  inside it, this environment is the cluster client's, and the cluster's
  configuration wins: its restart strategy, checkpointing (unless
  ``--checkpoint-ms`` is given), checkpoint storage, parallelism (unless
  ``--parallelism`` is given) and Python executable (``-pyexec``) are kept.
* PyFlink hard-codes the shaded class names of the fat SQL connector jar; with
  the thin jars we patch the two helpers that use them
  (:func:`patch_kafka_class_names`).
"""

from __future__ import annotations

import os
from pathlib import Path
import shutil
import subprocess
import sys

from riverflink.pipelines import jars
from riverflink.pipelines.config import ConfigError, FlinkConfig


def check_java() -> None:
    """Fail with one clear line when no Java 11+ runtime is on PATH."""
    java = shutil.which("java")
    if not java:
        raise ConfigError("Java not found: riverflink needs a Java 17 runtime (apt-get install openjdk-17-jre-headless)")
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    try:
        major = int(out.split('"')[1].split(".")[0])
    except (IndexError, ValueError):
        raise ConfigError(f"cannot read the Java version from: {out.strip()[:120]}") from None
    if major < 11:
        raise ConfigError(f"Java {major} found; riverflink needs Java 17")


def patch_kafka_class_names() -> None:
    from pyflink.datastream.connectors import kafka
    from pyflink.java_gateway import get_gateway

    def to_j_topic_partition(self):
        return get_gateway().jvm.org.apache.kafka.common.TopicPartition(self._topic, self._partition)

    def to_j_reset(self):
        return getattr(get_gateway().jvm.org.apache.kafka.clients.consumer.OffsetResetStrategy, self.name)

    kafka.KafkaTopicPartition._to_j_topic_partition = to_j_topic_partition
    kafka.KafkaOffsetResetStrategy._to_j_offset_reset_strategy = to_j_reset


#: the local mini-cluster's network settings: every endpoint Flink lets us bind is bound to 127.0.0.1
LOOPBACK = {
    "rest.bind-address": "127.0.0.1",
    "rest.address": "127.0.0.1",
    "web.submit.enable": "false",
    "web.cancel.enable": "false",
    "jobmanager.bind-host": "127.0.0.1",
    "jobmanager.rpc.address": "127.0.0.1",
    "taskmanager.bind-host": "127.0.0.1",
    "taskmanager.host": "127.0.0.1",
}


def temporary_checkpoint_dir() -> str:
    """A ``file://`` directory for a local run's checkpoints, removed when this process exits."""
    import atexit
    import tempfile

    path = tempfile.mkdtemp(prefix="riverflink-checkpoints-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return Path(path).as_uri()


#: JVM options of a local run's mini-cluster (PyFlink's gateway reads ``JVM_ARGS``; set it to override)
LOCAL_JVM_ARGS = "-XX:TieredStopAtLevel=1"


def local_parallelism(cores: int | None = None) -> int:
    """A local run's default parallelism: 2, or 1 on a machine this process may run on one core of.

    Measured on 2 cores (``bench/throughput.py --parallelism 1,2``, 40k Phishing events, same run, Dec 4):
    parallelism 2 learned faster in both modes (exact 21.3k against 17.5k events/s, batch 36.3k against 28.3k).
    More than 2 was not measured (these machines have 2 cores), so it is never chosen by default.

    >>> local_parallelism(1), local_parallelism(2), local_parallelism(16)
    (1, 2, 2)
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(2, cores))


def make_env(cfg: FlinkConfig, job_name: str, unclaimed_state_ok: bool = False):
    """The environment, ready for sources and sinks; raises ``ConfigError`` early.  ``unclaimed_state_ok``: a
    savepoint may hold state of an operator the job no longer has (a recommender's users source of another
    ``--replicas``: its uid names K), which is left behind."""
    cfg.validate()
    check_java()
    jar_paths = jars.all_jars()
    # Local mode runs Python subtasks in this process ("loopback"), all behind one GIL; a worker
    # process per subtask measured ~1.3x faster at parallelism 2 (bench/throughput.py).
    # RIVERFLINK_PYTHON_WORKERS=loopback restores PyFlink's default.  Must be set before the JVM starts.
    from riverflink.pipelines.remote import inside_flink_run

    local = not cfg.jobmanager and not inside_flink_run()
    if local and os.environ.get("RIVERFLINK_PYTHON_WORKERS", "process") == "process":
        os.environ.setdefault("_python_worker_execution_mode", "process")
    if local:
        # The mini-cluster's JVM compiles with C1 only: C2's compiler threads took a whole core for
        # the first minutes on these 2-core machines (serving 184 -> 114 CPU-us per request, training
        # 75 -> 63 CPU-us per event in batch mode, same run; NOTES.md).  riverflink-loopback.jar, a Java agent,
        # makes Beam's gRPC servers for the Python workers listen on 127.0.0.1 only (pipelines/java-loopback).
        # An existing JVM_ARGS wins (and then neither applies).
        agent = jars.loopback_agent()
        os.environ.setdefault("JVM_ARGS", LOCAL_JVM_ARGS + (f" -javaagent:{agent}" if agent else ""))
    if local and cfg.metrics_port:
        # Flink's Prometheus reporter ships as a plugin inside the PyFlink wheel, but the local
        # mini-cluster loads no plugins: put its jar on the JVM's classpath through HADOOP_CLASSPATH,
        # the variable PyFlink's gateway appends to it.
        import pyflink

        jar = next((Path(pyflink.__file__).parent / "plugins" / "metrics-prometheus").glob("*.jar"))
        os.environ["HADOOP_CLASSPATH"] = os.pathsep.join(filter(None, [str(jar), os.environ.get("HADOOP_CLASSPATH")]))
    from pyflink.common import Configuration
    from pyflink.datastream import CheckpointingMode, StreamExecutionEnvironment

    conf = Configuration()
    conf.set_string("pipeline.name", job_name)
    if local:
        conf.set_string("python.executable", sys.executable)
        conf.set_string("python.client.executable", sys.executable)
        conf.set_string("restart-strategy.type", "fixed-delay")
        conf.set_string("restart-strategy.fixed-delay.attempts", str(cfg.restart_attempts))
        conf.set_string("restart-strategy.fixed-delay.delay", "2 s")
    # bundles flush live state to Flink at least this often (and at every checkpoint)
    if cfg.savepoint:
        conf.set_string("execution.savepoint.path", cfg.savepoint)
        if unclaimed_state_ok:
            conf.set_string("execution.savepoint.ignore-unclaimed-state", "true")
    if local:
        # the mini-cluster listens on loopback only, and its web endpoint accepts no jar and no cancel
        for key, value in LOOPBACK.items():
            conf.set_string(key, value)
        from riverflink.pipelines.broker import free_port

        ui_port = free_port()  # chosen here so that the web UI's address can be printed
        conf.set_string("rest.bind-port", str(ui_port))
        conf.set_string("rest.port", str(ui_port))
        print(f"Flink web UI (this machine only): http://127.0.0.1:{ui_port}", file=sys.stderr, flush=True)
        if cfg.metrics_port:
            conf.set_string("metrics.reporter.prom.factory.class",
                            "org.apache.flink.metrics.prometheus.PrometheusReporterFactory")
            conf.set_string("metrics.reporter.prom.port", str(cfg.metrics_port))
    if local:
        # 'riverflink stop' needs somewhere to put the savepoint; a local run keeps them with riverflink's state
        from riverflink.pipelines.cli_context import STATE_DIR

        (STATE_DIR / "savepoints").mkdir(parents=True, exist_ok=True)
        conf.set_string("execution.checkpointing.savepoint-dir", (STATE_DIR / "savepoints").resolve().as_uri())
        # a stopped local job's Kafka admin threads (the sources' split enumerators) can still log after the job's
        # classloader closed; Flink's leak check then prints a log4j stack trace after 'stopped' (seen once in CI)
        conf.set_string("classloader.check-leaked-classloader", "false")
    checkpoint_dir = cfg.checkpoint_dir or (temporary_checkpoint_dir() if local else None)
    if checkpoint_dir:
        # file storage: the JobManager's in-memory default fails any checkpoint over 5 MB
        conf.set_string("execution.checkpointing.storage", "filesystem")
        conf.set_string("execution.checkpointing.dir", checkpoint_dir)
    conf.set_string("python.fn-execution.bundle.time", str(cfg.bundle_ms))
    conf.set_string("execution.buffer-timeout", f"{cfg.buffer_timeout_ms} ms")
    conf.set_string("python.fn-execution.bundle.size", str(cfg.bundle_size))
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.add_jars(*(p.resolve().as_uri() for p in jar_paths))
    if local or cfg.parallelism is not None:
        env.set_parallelism(cfg.parallelism or local_parallelism())
    # fixed once a job has state: keyed state (replicas) can later be rescaled up to this many subtasks
    env.set_max_parallelism(128)
    cluster_checkpoints = not local and env.get_checkpoint_config().is_checkpointing_enabled()
    if not cluster_checkpoints or cfg.checkpoint_ms is not None:
        env.enable_checkpointing(cfg.checkpoint_ms or 5000, CheckpointingMode.EXACTLY_ONCE)
    # exactly-once state: a restore must never replay what a snapshot already holds (module docstring)
    env.get_checkpoint_config().set_checkpointing_mode(CheckpointingMode.EXACTLY_ONCE)
    if local:
        env.get_checkpoint_config().set_tolerable_checkpoint_failure_number(cfg.tolerable_failed_checkpoints)
    patch_kafka_class_names()
    return env
