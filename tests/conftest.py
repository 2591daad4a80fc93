"""Shared fixtures.  Every process a test starts is stopped by PID, also when the test fails."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def pytest_configure(config):
    """A SIGTERM (a CI timeout, a pkill) interrupts the run like Ctrl-C, so fixture teardown still
    stops every broker, cluster and job a test started; SIGTERM alone would skip it."""
    import signal

    def interrupt(*_):
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, interrupt)


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory):
    """A real Kafka-protocol broker.

    ``RIVERFLINK_BOOTSTRAP`` (an external cluster) wins; else the Apache Kafka
    image through testcontainers when a Docker engine answers; else the
    embedded Tansu broker on 127.0.0.1 with in-memory storage.
    """
    if os.environ.get("RIVERFLINK_BOOTSTRAP"):
        yield os.environ["RIVERFLINK_BOOTSTRAP"]
        return
    if _docker_answers():
        try:
            from testcontainers.kafka import KafkaContainer
        except ImportError:
            pass
        else:
            with KafkaContainer("apache/kafka:3.9.1") as kafka:
                yield kafka.get_bootstrap_server()
            return
    from riverflink.pipelines.broker import EmbeddedBroker

    broker = EmbeddedBroker(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log")
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
