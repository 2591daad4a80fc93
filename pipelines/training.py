"""The training job: events -> replicas -> merger -> ``models`` (and ``metrics``, ``events.dlq``).

::

    events ─► key by replica + micro-batch (Java) ◄── models.users (recommenders: read back, keyed by user)
                  │
                  ▼
    models ─► (broadcast) ─► ReplicaTrainer ──► metrics (one record per replica batch)
       ▲                        │     ├──bad──► events.dlq
       │                        │     ├──opt──► predictions.training (per event, --training-predictions)
       │                        │     └──reco─► models.users (recommenders: each user's factors, by its replica)
       │                        │ replica updates (bytes), keyed by model name
       │                        ▼
       └──────────────── Merger ◄── models (adopt newer versions after a restart)

With ``--shards M`` the merger runs as M keys ``<model>#<shard>``, each merging the pieces of the updates for
the features it owns and publishing its slice; a manifest publisher names each model version's slices::

    replica updates ─► (one piece per shard) ─► Merger[model#0 .. model#M-1] ──► models (slices, key model#s)
                                                      │ "<shard> <slice version>"
                                                      ▼
                                               ManifestPublisher ──────────────► models (manifests, key model)

:func:`build` reads top to bottom as the dataflow; the comment before each
step says what flows out of it.  The loop's logic is in
:mod:`riverflink.operators.loop`; the steps here only wire it to Kafka.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from pyflink.common import Types

from riverflink.models.document import read_document
from riverflink.models.manifest import shard_key
from riverflink.operators.frames import USER_PARTITION
from riverflink.operators.flink_state import (DEAD_LETTER, LATEST_MODEL, METRICS, PREDICTIONS, PULL_ANSWERS,
                                              SLICES_PUBLISHED, USER_FACTORS)
from riverflink.operators.manifest_publisher import ManifestPublisher
from riverflink.operators.merger import Merger
from riverflink.operators.pulls import PULL_MAX_BYTES
from riverflink.operators.messages import update_shard
from riverflink.operators.replica_trainer import ReplicaTrainer, TrainerSettings
from riverflink.pipelines import java_ops
from riverflink.pipelines.config import TrainConfig
from riverflink.pipelines.flink_kafka import frame_source, pull_answer_source, text_sink, text_source
from riverflink.pipelines.flink_runtime import make_env


def _model_name(text: str) -> str:
    document = read_document(text)
    return "" if document is None else str(document.meta.name)


def _shard_keys(name: str, shards: int):
    """Key selectors of the sharded merger: ``(update key, document key)``.  An update goes to the shard in its
    head (a shard out of range to shard 0, which refuses it); a slice read back to its own shard's key, anything
    else on the topic to shard 0's (whose validation ignores or refuses it)."""
    def update_key(update: bytes) -> str:
        shard = update_shard(update)
        return shard_key(name, shard if shard < shards else 0)

    def document_key(text: str) -> str:
        document = read_document(text)
        meta = None if document is None else document.meta
        ok = meta is not None and meta.shards == shards and 0 <= meta.shard < shards
        return shard_key(name, meta.shard if ok else 0)  # type: ignore[union-attr]

    return update_key, document_key


def build(cfg: TrainConfig):
    """The environment with the training job's dataflow attached (not yet executed)."""
    cfg.validate()
    # (a recommender's savepoint holds the users source of its --replicas: another K leaves it behind)
    env = make_env(cfg.flink, f"riverflink-train-{cfg.model_name}", unclaimed_state_ok=cfg.recommender)
    t, servers, props = cfg.topics, cfg.bootstrap_servers, cfg.kafka.properties
    job_tag = f"{cfg.model_name}@{time.strftime('%Y-%m-%dT%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d}"
    loop = dataclasses.replace(cfg.loop_settings(), writer=job_tag)  # (names the writer of a recommender's user records)
    verifier = cfg.verifier()  # the public key; the private one is read by the merger (and a recommender's replicas)

    # bytes: one binary record frame per Kafka record of `events` (partition, offset, key, value)
    raw = frame_source(env, servers, t.events, cfg.group_id, "events", cfg.limits, props).uid("source-events")

    # --working-set: the merger shards' answers to the replicas' pulls, as Row(replica, one frame at partition
    # PULL_PARTITION), which no event's frame can have
    answers = None
    if loop.working_set is not None:
        answers = pull_answer_source(env, servers, t.pulls, f"{cfg.group_id}-pulls", cfg.replicas, PULL_MAX_BYTES,
                                     props).uid("source-pulls")

    # a recommender's users, read back from the start (frames at USER_PARTITION, keyed with their user's events):
    # a replica adopts those another job or replica learned (after a change of --replicas: a new source, by
    # its uid, that a savepoint of another K has no position for) and skips its own
    if loop.ratings is not None:
        users = frame_source(env, servers, t.users, f"{cfg.group_id}-users", "users", cfg.limits, props,
                             partition_mark=USER_PARTITION, earliest=True).uid(f"source-users-k{cfg.replicas}")
        raw = raw.union(users)

    # keyed by replica (crc32(event key) mod K) and micro-batched in the JVM: bytes, many frames per record;
    # without riverflink's jar, one value string per record keyed in Python (`batched` is False)
    keyed, batched = java_ops.keyed_batches(raw, cfg.replicas, cfg.event_key_field, cfg.batch_size, cfg.batch_ms,
                                            answers)

    # str: the model documents on `models`, to every replica (broadcast) and to the merger
    model_docs = text_source(env, servers, t.models, f"{cfg.group_id}-models", "models", props,
                             tail=cfg.models_tail).uid("source-models")

    # bytes: encoded replica updates (operators.messages) and pull requests (operators.pulls); side outputs: str JSON dead letters, metrics
    # records and (if asked) per-event training predictions
    trainer = ReplicaTrainer(TrainerSettings(
        loop=loop, model_spec=cfg.model_spec, sync_check_ms=int(1000 * (cfg.sync_every_seconds or 1.0)),
        key_field=cfg.event_key_field, source_topic=t.events, batched=batched,
        training_predictions=cfg.training_predictions, limits=cfg.limits,
        verifier=verifier, signing_key=str(Path(cfg.signing_key).resolve()) if cfg.signing_key else None,
        job_tag=job_tag,
    ))
    updates = (
        keyed.connect(model_docs.broadcast(LATEST_MODEL))
        .process(trainer, output_type=Types.PRIMITIVE_ARRAY(Types.BYTE()))
        .name("replica-trainer")
        .uid("replica-trainer")
    )
    updates.get_side_output(DEAD_LETTER).sink_to(text_sink(servers, t.dead_letter, properties=props)).name(
        "sink-dlq").uid("sink-dlq")
    updates.get_side_output(METRICS).sink_to(text_sink(servers, t.metrics, properties=props)).name(
        "sink-metrics").uid("sink-metrics")
    if loop.ratings is not None:  # a recommender's users, for serving: "<user as JSON>\n<record>" (compacted)
        updates.get_side_output(USER_FACTORS).sink_to(text_sink(servers, t.users, compression="gzip",
                                                                properties=props, keyed_lines=True)).name(
            "sink-users").uid("sink-users")
    if cfg.training_predictions:
        updates.get_side_output(PREDICTIONS).sink_to(text_sink(servers, t.training_predictions,
                                                               properties=props)).name(
            "sink-training-predictions").uid("sink-training-predictions")

    # str: each new version's JSON document (signed when --signing-key is set); one merger per model, or with
    # --shards M one per shard, each publishing its slice as "<model>#<shard>\n<JSON>"
    name = cfg.model_name
    signing_key = str(Path(cfg.signing_key).resolve()) if cfg.signing_key else None
    merger = Merger(loop, cfg.model_spec, signing_key=signing_key, verify_key=verifier.public_raw if verifier else None,
                    max_doc_bytes=cfg.max_record_bytes)

    def sink_pull_answers(merged) -> None:
        # str: "<replica>\n<answer JSON>", a slice document of the pulled features (signed like every document)
        if loop.working_set is not None:
            merged.get_side_output(PULL_ANSWERS).sink_to(
                text_sink(servers, t.pulls, properties=props, keyed_lines=True)).name("sink-pulls").uid("sink-pulls")
    if loop.shards <= 1:
        merged = (
            updates.connect(model_docs)
            .key_by(lambda _update: name, _model_name, key_type=Types.STRING())
            .process(merger, output_type=Types.STRING())
            .name("merger")
            .uid("merger")
            .set_parallelism(1)
        )
        # the serving topic, compacted and keyed by model name
        models_sink = text_sink(servers, t.models, compression="gzip", properties=props, key=name)
        merged.sink_to(models_sink).name("sink-models").uid("sink-models").set_parallelism(1)
        sink_pull_answers(merged)
        return env

    update_key, document_key = _shard_keys(name, loop.shards)
    slices = (
        updates.connect(model_docs)
        .key_by(update_key, document_key, key_type=Types.STRING())
        .process(merger, output_type=Types.STRING())
        .name("merger-shards")
        .uid("merger-shards")
    )
    sink_pull_answers(slices)
    # str: "<model>\n<manifest JSON>", once every shard has published anew (a timer names what waits)
    manifests = (
        slices.get_side_output(SLICES_PUBLISHED)
        .key_by(lambda _slice: name, key_type=Types.STRING())
        .process(ManifestPublisher(loop, signing_key=signing_key), output_type=Types.STRING())
        .name("manifest-publisher")
        .uid("manifest-publisher")
        .set_parallelism(1)
    )
    # slices under "<model>#<shard>", manifests under "<model>": a compacted topic keeps each one's newest
    models_sink = text_sink(servers, t.models, compression="gzip", properties=props, keyed_lines=True)
    slices.union(manifests).sink_to(models_sink).name("sink-models").uid("sink-models").set_parallelism(1)
    return env
