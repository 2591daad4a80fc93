"""Typed job configuration; every check fails fast with one readable line."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from riverflink.models.policies import POLICIES, MergePolicy
from riverflink.models.update_codec import PRECISIONS
from riverflink.operators.merge_state import MergeTrigger
from riverflink.operators.parse import DEFAULT_LIMITS, Limits
from riverflink.operators.replica import MODES
from riverflink.models.spec import build as build_model
from riverflink.models.sync import SyncPolicy

if TYPE_CHECKING:
    from riverflink.pipelines.kafka_config import KafkaSettings


class ConfigError(ValueError):
    """A bad setting; its message is the one line the CLI prints."""


_HOSTPORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


#: partitions of each topic riverflink creates, by role
PARTITIONS = {"events": 2, "dead_letter": 1, "predictions": 2, "models": 1, "requests": 2, "metrics": 1,
              "training_predictions": 2}



def _kafka_settings():
    from riverflink.pipelines.kafka_config import KafkaSettings

    return KafkaSettings()

@dataclass(frozen=True)
class Topics:
    """The topic of each role; the dead-letter topic is always ``<events>.dlq``.

    >>> Topics.for_run("r1").cli_args()[:2]
    ['--events-topic', 'events-r1']
    """

    events: str = "events"
    dead_letter: str = "events.dlq"
    predictions: str = "predictions"
    models: str = "models"
    requests: str = "requests"
    #: one record per replica micro-batch: events learned, dead letters, progressive score, offsets
    metrics: str = "metrics"
    #: per-event training predictions (``--training-predictions``), apart from serving's answers
    training_predictions: str = "predictions.training"

    @classmethod
    def for_run(cls, run: str) -> "Topics":
        """Topics of one run only (``events-RUN`` ...), so that a shared broker never mixes runs."""
        return cls(f"events-{run}", f"events-{run}.dlq", f"predictions-{run}", f"models-{run}", f"requests-{run}",
                   f"metrics-{run}", f"predictions-{run}.training")

    def cli_args(self, command: str = "train") -> list[str]:
        """The ``riverflink train`` (or ``serve``) flags that select these topics."""
        flags = {"events": "--events-topic", "requests": "--requests-topic", "predictions": "--predictions-topic",
                 "models": "--models-topic", "metrics": "--metrics-topic"}
        roles = ("requests", "predictions", "models") if command == "serve" else (
            "events", "predictions", "models", "metrics")
        return [a for r in roles for a in (flags[r], getattr(self, r))]

    def to_create(self, *roles: str) -> dict[str, int]:
        """``{topic: partitions}`` for ``roles`` (default: every role)."""
        return {getattr(self, r): PARTITIONS[r] for r in roles or PARTITIONS}


@dataclass(frozen=True)
class FlinkConfig:
    """Where and how jobs run: ``jobmanager=None`` is the local mini-cluster."""

    jobmanager: str | None = None
    #: None: 2 on a local run, the cluster's parallelism.default on a cluster
    parallelism: int | None = None
    #: None: 5000 on a local run; on a cluster, the cluster's checkpointing if it configures one, else 5000
    checkpoint_ms: int | None = None
    restart_attempts: int = 3
    #: Python operators hand their output (and state) to Flink at least this often: latency vs per-record cost
    bundle_ms: int = 100
    bundle_size: int = 1000
    #: restore operator state (replicas, merger, Kafka offsets) from this savepoint
    savepoint: str | None = None
    #: serve Flink's metrics (riverflink's group included) for Prometheus on this port (local runs)
    metrics_port: int | None = None
    #: Flink's execution.buffer-timeout: how long a network buffer may wait before it is sent
    buffer_timeout_ms: int = 100
    #: checkpoint storage URI (None: a temporary directory on local runs, the cluster's own setting on a cluster)
    checkpoint_dir: str | None = None
    #: consecutive failed checkpoints a job rides out before it restarts (Flink's default, 0, restarts on the first)
    tolerable_failed_checkpoints: int = 5

    def validate(self) -> None:
        if self.jobmanager is not None and not _HOSTPORT.match(self.jobmanager):
            raise ConfigError(f"--jobmanager must be HOST:PORT, got {self.jobmanager!r}")
        if self.parallelism is not None and self.parallelism < 1:
            raise ConfigError(f"--parallelism must be >= 1, got {self.parallelism}")
        if self.checkpoint_ms is not None and self.checkpoint_ms < 100:
            raise ConfigError(f"--checkpoint-ms must be >= 100, got {self.checkpoint_ms}")
        inside_flink_run = os.environ.get("RIVERFLINK_IN_FLINK_RUN") == "1" or "PYFLINK_GATEWAY_PORT" in os.environ
        if self.savepoint and not self.jobmanager and not inside_flink_run:
            # a local run restores from this machine's file system; check it before starting Flink
            local = re.sub(r"^file:(//)?", "", self.savepoint)
            if "://" not in local and not Path(local).exists():
                raise ConfigError(f"--from-savepoint {self.savepoint}: no such savepoint")
        if self.metrics_port is not None and not 0 < self.metrics_port < 65536:
            raise ConfigError(f"--metrics-port must be a TCP port, got {self.metrics_port}")
        if self.bundle_ms < 1 or self.bundle_size < 1:
            raise ConfigError(f"--bundle-ms and --bundle-size must be >= 1, got {self.bundle_ms}, {self.bundle_size}")


@dataclass(frozen=True)
class TrainConfig:
    bootstrap_servers: str
    model_spec: str = "StandardScaler|LogisticRegression"
    model_name: str = "default"
    replicas: int = 4
    key_field: str = "key"
    sync_every_events: int | None = 100
    sync_every_seconds: float | None = 1.0
    sync_divergence: float | None = None
    merge_policy: str = "delta"
    merge_wait_ms: int = 500
    #: distinct replicas with a pending update that start a merge (1: merge on arrival)
    merge_quorum: int = 1
    #: exact: predict_one + learn_one per event; batch: predict the micro-batch, then one learn_many
    mode: str = "exact"
    #: also write one progressive-validation prediction per training event (else one metrics record per batch)
    training_predictions: bool = False
    update_precision: str = "float16"
    limits: Limits = DEFAULT_LIMITS
    #: hold back merged versions whose replicas learn worse than the served version's by more than this
    #: (classifiers: absolute error rate; regressors: relative MAE); None: every version is served
    quality_gate: float | None = None
    #: distinct features the merged model may hold (each replica admits max_model_features // replicas)
    max_model_features: int = 10_000
    #: Ed25519 private key (PEM) the merger signs model documents with; replicas then verify them
    signing_key: str | None = None
    #: events per micro-batch handed to a Python replica, and the longest an event waits for its batch
    batch_size: int = 500
    batch_ms: int = 50
    group_id: str = "riverflink-train"
    topics: Topics = field(default_factory=Topics)
    flink: FlinkConfig = field(default_factory=FlinkConfig)
    kafka: KafkaSettings = field(default_factory=lambda: _kafka_settings())

    def validate(self) -> None:
        check_bootstrap(self.bootstrap_servers)
        self.kafka.validate()
        self.flink.validate()
        if self.replicas < 1:
            raise ConfigError(f"--replicas must be >= 1, got {self.replicas}")
        if self.quality_gate is not None and not self.quality_gate >= 0:
            raise ConfigError(f"--quality-gate must be >= 0, got {self.quality_gate}")
        if self.max_model_features < self.replicas:
            raise ConfigError(f"--max-model-features must be >= --replicas ({self.replicas}), "
                              f"got {self.max_model_features}")
        if self.mode not in MODES:
            raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.update_precision not in PRECISIONS:
            raise ConfigError(f"--update-precision must be one of {', '.join(PRECISIONS)}, got {self.update_precision!r}")
        if self.merge_policy not in POLICIES:
            raise ConfigError(f"--merge-policy must be one of {', '.join(POLICIES)}, got {self.merge_policy!r}")
        check_batching(self.batch_size, self.batch_ms)
        load_signer(self.signing_key)
        if self.merge_wait_ms < 1:
            raise ConfigError(f"--merge-wait-ms must be >= 1, got {self.merge_wait_ms}")
        try:
            model = build_model(self.model_spec)
            self.trigger()
            if self.mode == "batch":
                from riverflink.operators.replica import supports_batch

                if not supports_batch(model):
                    raise ConfigError(f"--mode batch needs River's learn_many and predict_*_many in every step of "
                                      f"{self.model_spec!r}; use --mode exact for this model")
            if self.merge_policy == "scaled_average":
                from riverflink.models import scale_learning_rate

                scale_learning_rate(model, self.replicas)
            self.sync_policy()
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def sync_policy(self) -> SyncPolicy:
        return SyncPolicy(self.sync_every_events, self.sync_every_seconds, self.sync_divergence)

    def policy(self) -> MergePolicy:
        # the merger's adaptive staleness discount replaces the old fixed clip (docs/merge-policies.md)
        return MergePolicy(self.merge_policy, clip=float("inf"))

    def trigger(self) -> MergeTrigger:
        return MergeTrigger(quorum=self.merge_quorum, wait_ms=self.merge_wait_ms)


@dataclass(frozen=True)
class ServeConfig:
    bootstrap_servers: str
    model_name: str = "default"
    group_id: str = "riverflink-serve"
    #: requests per micro-batch, and the longest a request waits for its batch
    batch_size: int = 500
    batch_ms: int = 10
    topics: Topics = field(default_factory=Topics)
    flink: FlinkConfig = field(default_factory=FlinkConfig)
    #: Ed25519 public key (PEM): answer only with model documents signed by its private half
    verify_key: str | None = None
    kafka: KafkaSettings = field(default_factory=lambda: _kafka_settings())

    def validate(self) -> None:
        check_bootstrap(self.bootstrap_servers)
        self.kafka.validate()
        self.flink.validate()
        check_batching(self.batch_size, self.batch_ms)
        load_verifier(self.verify_key)


def load_signer(path: str | None):
    """The merger's signing key, or ``None``; a bad file is a ``ConfigError``."""
    from riverflink.models.signing import Signer

    return _load_key("--signing-key", path, Signer.load)


def load_verifier(path: str | None):
    """The verify key (a public key, or a private key's public half), or ``None``."""
    from riverflink.models.signing import Verifier

    return _load_key("--verify-key", path, Verifier.load)


def _load_key(flag: str, path: str | None, load):
    if not path:
        return None
    try:
        return load(path)
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"{flag} {path}: {e}") from None


def check_batching(size: int, ms: int) -> None:
    if size < 1 or ms < 1:
        raise ConfigError(f"--batch-size and --batch-ms must be >= 1, got {size}, {ms}")


def check_bootstrap(servers: str) -> None:
    if not servers or not all(_HOSTPORT.match(s.strip()) for s in servers.split(",")):
        raise ConfigError(f"--bootstrap-servers must be HOST:PORT[,HOST:PORT...], got {servers!r}")
