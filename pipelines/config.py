"""Typed job configuration; every check fails fast with one readable line."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from riverflink.models.manifest import MAX_SHARDS
from riverflink.models.policies import POLICIES, MergePolicy
from riverflink.models.update_codec import PRECISIONS
from riverflink.operators.merge_state import MergeTrigger
from riverflink.operators.limits import DEFAULT_LIMITS, Limits
from riverflink.operators.batch_learning import MODES
from riverflink.pipelines.options import nested, option
from riverflink.models.rating import is_recommender
from riverflink.models.spec import build as build_model
from riverflink.models.sync import SyncPolicy

if TYPE_CHECKING:
    from riverflink.operators.loop import LoopSettings
    from riverflink.pipelines.kafka_config import KafkaSettings


class ConfigError(ValueError):
    """A bad setting; its message is the one line the CLI prints."""


#: with --shards: each merger shard publishes this many patches (what a merge touched) between whole slices; a
#: reader that missed a patch's base (it started, or compaction dropped it) waits for the next whole slice
SLICE_PATCHES = 15
_HOSTPORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


def host_port(text: str) -> str:
    """``HOST:PORT`` from itself or from a URL (``http://127.0.0.1:8081/`` is what Flink prints).

    >>> host_port("http://127.0.0.1:8081/"), host_port("localhost:8081")
    ('127.0.0.1:8081', 'localhost:8081')
    """
    return re.sub(r"^[a-z]+://", "", text.strip()).rstrip("/")


#: partitions of each topic riverflink creates, by role
PARTITIONS = {"events": 2, "dead_letter": 1, "predictions": 2, "models": 1, "requests": 2, "metrics": 1,
              "training_predictions": 2, "pulls": 2, "users": 2}



def _kafka_settings():
    from riverflink.pipelines.kafka_config import KafkaSettings

    return KafkaSettings()

#: a new job reads this many newest records per partition of ``models`` by default (``--models-tail``)
MODELS_TAIL = 64


@dataclass(frozen=True)
class Topics:
    """The topic of each role; the dead-letter topic is always ``<events>.dlq``.

    >>> Topics.for_run("r1").dead_letter
    'events-r1.dlq'
    >>> Topics.for_run("r1").cli_args("serve")[:2]
    ['--predictions-topic', 'predictions-r1']
    """

    events: str = option("events", "labelled events (dead letters go to EVENTS.dlq)", flag="--events-topic")
    dead_letter: str = "events.dlq"
    predictions: str = option("predictions", "serving answers (training's per-event records: PREDICTIONS.training)",
                              flag="--predictions-topic")
    models: str = option("models", "the serving topic of versioned model documents", flag="--models-topic")
    requests: str = option("requests", "prediction requests", flag="--requests-topic")
    #: one record per replica micro-batch: events learned, dead letters, progressive score, offsets
    metrics: str = option("metrics", "one record per replica micro-batch", flag="--metrics-topic")
    #: per-event training predictions (``--training-predictions``), apart from serving's answers
    training_predictions: str = "predictions.training"
    #: the merger shards' answers to the replicas' pulls (``--working-set``), keyed by replica
    pulls: str = "models.pulls"
    #: a recommender's user factors, published by the replicas that own the users (compacted, keyed by user)
    users: str = "models.users"

    @classmethod
    def named(cls, events: str = "events", predictions: str = "predictions", models: str = "models",
              requests: str = "requests", metrics: str = "metrics", **_derived: str) -> "Topics":
        """Topics by role; the dead-letter, training-predictions, pulls and users topics follow from events,
        predictions and models."""
        return cls(events, events + ".dlq", predictions, models, requests, metrics, predictions + ".training",
                   models + ".pulls", models + ".users")

    @classmethod
    def for_run(cls, run: str) -> "Topics":
        """Topics of one run only (``events-RUN`` ...), so that a shared broker never mixes runs."""
        return cls.named(f"events-{run}", f"predictions-{run}", f"models-{run}", f"requests-{run}", f"metrics-{run}")

    def cli_args(self, command: str = "train") -> list[str]:
        """The ``riverflink train`` (or ``serve``) flags that select these topics (declared on the fields)."""
        from riverflink.pipelines.options import settings

        config = ServeConfig if command == "serve" else TrainConfig
        roles = config.__dataclass_fields__["topics"].metadata["nested"]
        return [a for s in settings(Topics, self) if s.path[0] in roles for a in (s.flag, s.default)]

    def to_create(self, *roles: str) -> dict[str, int]:
        """``{topic: partitions}`` for ``roles`` (default: every role)."""
        return {getattr(self, r): PARTITIONS[r] for r in roles or PARTITIONS}


@dataclass(frozen=True)
class FlinkConfig:
    """Where and how jobs run: ``jobmanager=None`` is the local mini-cluster."""

    jobmanager: str | None = option(None, "submit to a running Flink cluster's REST endpoint (default: local "
                                    "mini-cluster; a URL is fine)", metavar="HOST:PORT", parse=host_port)
    parallelism: int | None = option(None, "subtasks per operator (default: 2 locally, 1 on one core; the cluster's "
                                     "parallelism.default on a cluster)")
    checkpoint_ms: int | None = option(None, "checkpoint interval (default: 5000 locally; on a cluster, its own "
                                       "checkpointing if it configures one, else 5000)")
    restart_attempts: int = 3
    bundle_ms: int = option(100, "Python operators flush output at least this often (lower: fresher, slower)")
    bundle_size: int = option(1000, "... or after this many records")
    savepoint: str | None = option(None, "restore replicas, merger and Kafka offsets from a savepoint (any "
                                   "--parallelism)", flag="--from-savepoint", metavar="PATH")
    metrics_port: int | None = option(None, "serve Flink's metrics, riverflink's group included, for Prometheus on "
                                      "this port (local runs; on a cluster, configure its reporters)", metavar="PORT")
    buffer_timeout_ms: int = option(100, "Flink sends a network buffer at least this often (lower: less latency, "
                                    "more CPU)")
    checkpoint_dir: str | None = option(None, "where checkpoints go (file://, s3://...; default: a temporary "
                                        "directory on local runs, the cluster's execution.checkpointing.dir on a "
                                        "cluster)", metavar="URI")
    #: consecutive failed checkpoints a job rides out before it restarts (Flink's default, 0, restarts on the first)
    tolerable_failed_checkpoints: int = 5

    def validate(self) -> None:
        if self.jobmanager is not None and not _HOSTPORT.match(self.jobmanager):
            raise ConfigError(f"--jobmanager must be HOST:PORT, got {self.jobmanager!r}")
        if self.parallelism is not None and self.parallelism < 1:
            raise ConfigError(f"--parallelism must be >= 1, got {self.parallelism}")
        if self.checkpoint_ms is not None and self.checkpoint_ms < 100:
            raise ConfigError(f"--checkpoint-ms must be >= 100, got {self.checkpoint_ms}")
        from riverflink.pipelines.remote import inside_flink_run  # (remote imports this module)

        if self.savepoint and not self.jobmanager and not inside_flink_run():
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
    model_spec: str = option("StandardScaler|LogisticRegression", "model spec, e.g. "
                             "'StandardScaler|LogisticRegression(lr=0.05)' or 'GaussianNB'", flag="--model")
    model_name: str = option("default", "name of the model on the models topic")
    replicas: int = option(4, "K: replica keys are crc32(event key) mod K")
    key_field: str = option("key", "event field used as replica key (else Kafka key, id); recommenders: the user "
                            "field")
    user_field: str = option("user", "recommenders (BiasedMF, FunkMF): the event field naming the user; events are "
                             "keyed by it, so one replica owns each user")
    item_field: str = option("item", "recommenders: the event field naming the item")
    sync_every_events: int | None = option(100, "a replica syncs after S events (0: never)", flag="--sync-every",
                                           none_as=0)
    sync_every_seconds: float | None = option(1.0, "... or T seconds after its first unsynced event (0: never)",
                                              flag="--sync-seconds", none_as=0.0)
    sync_divergence: float | None = option(None, "... or when its weights moved this fraction of their norm (L2)")
    max_staleness: int | None = option(None, "S: a replica holds a due sync while S of its syncs are not yet in the "
                                       "merged model on every shard, and learns on (stale synchronous parallel; "
                                       "metrics clock_gap, syncs_held, staleness_violations); default: no bound",
                                       metavar="S")
    working_set: int | None = option(None, "W: each replica holds at most W features (plus those of its unsent and "
                                     "in-flight learning), least recently used leave, and an event needing others "
                                     "waits while they are pulled from their merger shard (FTRL linear models; "
                                     "metrics pull_*, working_set, features_evicted); default: no bound",
                                     metavar="W")
    expire_after: int | None = option(None, "with --working-set: a feature no event of a replica used for N of its "
                                      "events leaves its working set (metric features_expired)", metavar="N")
    merge_policy: str = option("delta", "how learned parameters combine (docs/merge-policies.md)", choices=POLICIES)
    merge_wait_ms: int = option(500, "merge whatever is pending after this")
    merge_quorum: int = option(1, "replicas with a pending update that start a merge (1: merge on arrival)")
    mode: str = option("exact", "exact: predict_one + learn_one per event; batch: predict the micro-batch, then "
                       "learn_many", choices=MODES)
    training_predictions: bool = option(False, "also write one progressive-validation prediction per training "
                                        "event to PREDICTIONS.training (else one metrics record per batch)")
    update_precision: str = option("float16", "precision of learned parameters in replica -> merger updates "
                                   "(statistics stay exact); compact: float16 parameters and float32 per-feature "
                                   "statistics such as FTRL's z and n (fewer bytes, lossy)", choices=PRECISIONS)
    limits: Limits = nested(lambda: DEFAULT_LIMITS)
    quality_gate: float | None = option(
        None, "hold back merged versions whose replicas' recent progressive error rate (classifiers, absolute: "
        "0.02 = 2 points) or MAE (regressors, relative: 0.2 = 20%) is worse than the served version's by more "
        "than MARGIN; serving keeps the previous version (default: off)", metavar="MARGIN")
    max_model_features: int = option(10_000, "distinct features the model may hold; each replica admits its share "
                                     "(this / --replicas) first come, first served, and drops (and counts) later "
                                     "new ones (no bound with --shards > 1)")
    shards: int = option(1, "M: merger shards; each merges and publishes the parameters of the features it owns "
                         "(a stable hash of the feature), and a manifest names the slices of each version "
                         "(linear models, StandardScaler, FeatureHasher, OneHotEncoder; docs/model-families.md)",
                         metavar="M")
    max_record_bytes: int = option(900_000, "largest model document the merger publishes on MODELS (keep it under "
                                   "the brokers' message.max.bytes); with --shards > 1 a larger slice goes out as "
                                   "pages, without it a larger model is not published (counted, logged)",
                                   metavar="BYTES")
    signing_key: str | None = option(None, "Ed25519 private key, read by the merger's task managers alone: the "
                                     "merger signs every model document and replicas accept only signed ones "
                                     "(default: $RIVERFLINK_SIGNING_KEY; make one with 'riverflink keys')",
                                     env="RIVERFLINK_SIGNING_KEY", metavar="PEM")
    signing_verify_key: str | None = option(None, "the public half of --signing-key, which this command reads and "
                                            "the replicas check documents with (default: verify.pem next to the "
                                            "signing key)", metavar="PEM")
    models_tail: int = option(MODELS_TAIL, "records per partition of MODELS a new job reads first, the newest (raise "
                              "it to cover a model published in more records: 'riverflink reshard' prints how many)",
                              metavar="N")
    classes: str | None = option(None, "classifiers: the labels to accept, comma-separated (others are "
                                 "dead-lettered); default: any label, and a label first seen mid-stream is logged "
                                 "and counted (metric new_classes)", metavar="A,B,...")
    batch_size: int = option(500, "events per micro-batch handed to a replica")
    batch_ms: int = option(50, "longest an event waits for its micro-batch")
    group_id: str = option("riverflink-train", "Kafka consumer group")
    topics: Topics = nested(Topics, only=("events", "predictions", "models", "metrics"))
    flink: FlinkConfig = nested(FlinkConfig)
    kafka: KafkaSettings = nested(lambda: _kafka_settings())

    def validate(self) -> None:
        check_bootstrap(self.bootstrap_servers)
        self.kafka.validate()
        self.flink.validate()
        if self.replicas < 1:
            raise ConfigError(f"--replicas must be >= 1, got {self.replicas}")
        if self.quality_gate is not None and not self.quality_gate >= 0:
            raise ConfigError(f"--quality-gate must be >= 0, got {self.quality_gate}")
        if self.max_staleness is not None and self.max_staleness < 1:
            raise ConfigError(f"--max-staleness must be >= 1, got {self.max_staleness}")
        if self.working_set is not None and self.working_set < 1:
            raise ConfigError(f"--working-set must be >= 1, got {self.working_set}")
        if self.expire_after is not None and (self.expire_after < 1 or self.working_set is None):
            raise ConfigError("--expire-after needs --working-set and must be >= 1")
        if not 1 <= self.shards <= MAX_SHARDS:
            raise ConfigError(f"--shards must be in [1, {MAX_SHARDS}], got {self.shards}")
        if self.shards > 1 and self.quality_gate is not None:
            raise ConfigError("--quality-gate does not work with --shards > 1 yet (each shard would judge alone)")
        check_max_record_bytes(self.max_record_bytes)
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
        check_models_tail(self.models_tail)
        self.verifier()
        from riverflink.pipelines.remote import inside_flink_run  # (remote imports this module)

        if self.signing_key and not self.flink.jobmanager and not inside_flink_run() and not Path(self.signing_key).is_file():
            # a local run's task manager reads it on this machine: say so now (without reading it here)
            raise ConfigError(f"--signing-key {self.signing_key}: no such file")
        if self.merge_wait_ms < 1:
            raise ConfigError(f"--merge-wait-ms must be >= 1, got {self.merge_wait_ms}")
        try:
            model = build_model(self.model_spec)
            self.trigger()
            if self.mode == "batch":
                from riverflink.operators.batch_learning import supports_batch

                if not supports_batch(model):
                    raise ConfigError(f"--mode batch needs River's learn_many and predict_*_many in every step of "
                                      f"{self.model_spec!r}; use --mode exact for this model")
            if self.merge_policy == "scaled_average":
                from riverflink.models import scale_learning_rate

                scale_learning_rate(model, self.replicas)
            if self.shards > 1:
                from riverflink.models.sharding import check_shardable

                check_shardable(model)
            if self.working_set is not None:
                from riverflink.operators.pull_gate import check_model

                check_model(model)
            if is_recommender(model):
                self._check_recommender()
            self.sync_policy()
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def _check_recommender(self) -> None:
        """A recommender's events are keyed by user (users are model-parallel); what does not work with it yet."""
        if self.key_field not in ("key", self.user_field):
            raise ConfigError(f"a recommender's events are keyed by its user field ({self.user_field!r}); "
                              f"--key-field {self.key_field!r} would split a user's state over replicas")
        if self.user_field == self.item_field:
            raise ConfigError(f"--user-field and --item-field must differ, got {self.user_field!r} twice")

    @property
    def recommender(self) -> bool:
        """Whether the model learns from ratings (``False`` for a spec that does not build: ``validate`` says why)."""
        try:
            return is_recommender(build_model(self.model_spec))
        except ValueError:
            return False

    @property
    def event_key_field(self) -> str:
        """The field events are keyed by: ``--key-field``, or a recommender's user field."""
        return self.user_field if self.recommender else self.key_field

    def rating_fields(self):
        """A recommender's :class:`~riverflink.operators.events.RatingFields`, else ``None``."""
        from riverflink.operators.events import RatingFields

        return RatingFields(user=self.user_field, item=self.item_field) if self.recommender else None

    def verifier(self):
        """The public half of the signing key (``--signing-verify-key``, else ``verify.pem`` next to
        ``--signing-key``), or ``None`` without signing.  The private key itself is never read here: only the
        merger's task managers read it (a client submitting to a cluster may not even have it)."""
        if not self.signing_key:
            return None
        path = self.signing_verify_key or str(Path(self.signing_key).with_name("verify.pem"))
        if not self.signing_verify_key and not Path(path).is_file():
            raise ConfigError(f"--signing-key: the replicas need its public half, and {path} does not exist; pass "
                              "--signing-verify-key (riverflink keys writes verify.pem next to signing.pem)")
        return load_verifier(path)

    def loop_settings(self) -> "LoopSettings":
        """The replica <-> merger loop's settings (:mod:`riverflink.operators.loop`)."""
        from riverflink.models.api import replica_lr_scale
        from riverflink.operators.loop import LoopSettings
        from riverflink.operators.working_set import WorkingSetSettings

        return LoopSettings(
            model_name=self.model_name, mode=self.mode, sync=self.sync_policy(), precision=self.update_precision,
            policy=self.policy(), trigger=self.trigger(), quality_gate=self.quality_gate,
            replica_features=self.max_model_features // self.replicas
            if self.shards <= 1 and not self.recommender else None,
            shards=self.shards, epoch=int(time.time() * 1000) if self.shards > 1 else 0,
            patches=SLICE_PATCHES if self.shards > 1 else 0,
            working_set=WorkingSetSettings(self.working_set, self.expire_after) if self.working_set else None,
            lr_scale=replica_lr_scale(build_model(self.model_spec), self.replicas, self.merge_policy),
            ratings=self.rating_fields(), replicas=self.replicas,
            classes=frozenset(c.strip().lower() if c.strip().lower() in ("true", "false") else c.strip()
                              for c in self.classes.split(",") if c.strip()) if self.classes else None)

    def sync_policy(self) -> SyncPolicy:
        return SyncPolicy(self.sync_every_events, self.sync_every_seconds, self.sync_divergence,
                          max_staleness=self.max_staleness)

    def policy(self) -> MergePolicy:
        # the merger's adaptive staleness discount replaces the old fixed clip (docs/merge-policies.md)
        return MergePolicy(self.merge_policy, clip=float("inf"))

    def trigger(self) -> MergeTrigger:
        return MergeTrigger(quorum=self.merge_quorum, wait_ms=self.merge_wait_ms)


@dataclass(frozen=True)
class ServeConfig:
    bootstrap_servers: str
    model_name: str = option("default", "name of the model on the models topic")
    group_id: str = option("riverflink-serve", "Kafka consumer group")
    batch_size: int = option(500, "requests per micro-batch (a batch also ends after --batch-ms)")
    batch_ms: int = option(10, "longest a request waits for its micro-batch")
    models_tail: int = option(MODELS_TAIL, "records per partition of MODELS a new job reads first, the newest (raise "
                              "it to cover a model published in more records: 'riverflink reshard' prints how many)",
                              metavar="N")
    shards: int = option(1, "M > 1: answer by scatter/gather over a sharded model's slices, each of M scorer "
                         "subtasks holding its shards' slices alone (a request's partial scores summed per request; "
                         "linear and logistic models); 1: every predictor holds the whole model", metavar="M")
    user_field: str | None = option(None, "recommenders (BiasedMF, FunkMF): the request field naming the user; "
                                    "requests are then keyed by it and answered with that user's factors from "
                                    "MODELS.users (without it every user is answered as unknown: the global mean "
                                    "plus the item's bias)")
    item_field: str = option("item", "recommenders: the request field naming the item")
    topics: Topics = nested(Topics, only=("requests", "predictions", "models"))
    #: latency over throughput for serving: measured with bench/serving.py (docs in README)
    flink: FlinkConfig = nested(lambda: FlinkConfig(bundle_ms=10, buffer_timeout_ms=10))
    verify_key: str | None = option(None, "answer only with model documents signed by this Ed25519 key (default: "
                                    "$RIVERFLINK_VERIFY_KEY)", env="RIVERFLINK_VERIFY_KEY", metavar="PEM")
    kafka: KafkaSettings = nested(lambda: _kafka_settings())

    def validate(self) -> None:
        check_bootstrap(self.bootstrap_servers)
        self.kafka.validate()
        self.flink.validate()
        check_batching(self.batch_size, self.batch_ms)
        check_models_tail(self.models_tail)
        if not 1 <= self.shards <= MAX_SHARDS:
            raise ConfigError(f"--shards must be in [1, {MAX_SHARDS}], got {self.shards}")
        load_verifier(self.verify_key)
        if self.user_field is not None and self.shards > 1:
            raise ConfigError("--user-field serves a recommender; --shards > 1 serves sharded linear models")
        if self.user_field is not None and self.user_field == self.item_field:
            raise ConfigError(f"--user-field and --item-field must differ, got {self.user_field!r} twice")

    def rating_fields(self):
        """Where a recommender's requests name the user and the item."""
        from riverflink.operators.events import RatingFields

        return RatingFields(user=self.user_field or "user", item=self.item_field)


def load_verifier(path: str | None):
    """The verify key (an Ed25519 public key; a private key is refused), or ``None``."""
    from riverflink.models.signing import Verifier

    return load_key("--verify-key", path, Verifier.load)


def load_key(flag: str, path: str | None, load):
    """``load(path)`` (a key), ``None`` without a path; a key that does not load is a ``ConfigError`` naming ``flag``."""
    if not path:
        return None
    try:
        return load(path)
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"{flag} {path}: {e}") from None


def check_max_record_bytes(n: int) -> None:
    if not 10_000 <= n <= 100 << 20:
        raise ConfigError(f"--max-record-bytes must be in [10000, {100 << 20}], got {n}")


def check_models_tail(n: int) -> None:
    if n < 1:
        raise ConfigError(f"--models-tail must be >= 1, got {n}")


def check_batching(size: int, ms: int) -> None:
    if size < 1 or ms < 1:
        raise ConfigError(f"--batch-size and --batch-ms must be >= 1, got {size}, {ms}")


def check_bootstrap(servers: str) -> None:
    if not servers or not all(_HOSTPORT.match(s.strip()) for s in servers.split(",")):
        raise ConfigError(f"--bootstrap-servers must be HOST:PORT[,HOST:PORT...], got {servers!r}")
