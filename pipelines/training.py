"""The training job: events -> replicas -> merger -> ``models`` (and ``predictions``, ``events.dlq``).

::

    events ─► key by replica + micro-batch (Java)
                  │
                  ▼
    models ─► (broadcast) ─► ReplicaTrainer ──► metrics (one record per replica batch)
       ▲                        │     ├──bad──► events.dlq
       │                        │     └──opt──► predictions.training (per event, --training-predictions)
       │                        │ replica updates (binary codec), key_by(model name)
       │                        ▼
       └──────────────── Merger ◄── models (adopt newer versions after a restart)
"""

from __future__ import annotations

from pathlib import Path

from pyflink.common import Types

from riverflink.operators.flink_state import DEAD_LETTER, LATEST_MODEL, METRICS, PREDICTIONS
from riverflink.operators.merger import Merger
from riverflink.operators.replica_trainer import ReplicaTrainer, TrainerSettings
from riverflink.operators.merge_state import read_doc
from riverflink.pipelines import java_ops
from riverflink.pipelines.config import TrainConfig, load_signer
from riverflink.pipelines.flink_kafka import MODELS_TAIL, envelope_source, text_sink, text_source
from riverflink.pipelines.flink_runtime import make_env


def _model_name(text: str) -> str:
    doc = read_doc(text)
    return "" if doc is None else str(doc["meta"].get("name"))


def build(cfg: TrainConfig):
    """The environment with the training job's dataflow attached (not yet executed)."""
    cfg.validate()
    env = make_env(cfg.flink, f"riverflink-train-{cfg.model_name}")
    t, servers = cfg.topics, cfg.bootstrap_servers

    props = cfg.kafka.properties
    raw = envelope_source(env, servers, t.events, cfg.group_id, "events", cfg.limits, props).uid("source-events")
    # keyed (and micro-batched in the JVM): Python pays its per-record cost once per batch
    keyed, batched = java_ops.keyed_batches(raw, cfg.replicas, cfg.key_field, cfg.batch_size, cfg.batch_ms)

    model_docs = text_source(env, servers, t.models, f"{cfg.group_id}-models", "models", props,
                             tail=MODELS_TAIL).uid("source-models")
    check_ms = int(1000 * (cfg.sync_every_seconds or 1.0))
    signer = load_signer(cfg.signing_key)
    lr_scale = float(cfg.replicas) if cfg.merge_policy == "scaled_average" else 1.0
    trainer = ReplicaTrainer(TrainerSettings(
        model_spec=cfg.model_spec, model_name=cfg.model_name, sync=cfg.sync_policy(), sync_check_ms=check_ms,
        key_field=cfg.key_field, source_topic=t.events, batched=batched, mode=cfg.mode, lr_scale=lr_scale,
        training_predictions=cfg.training_predictions, update_precision=cfg.update_precision, limits=cfg.limits,
        verifier=signer.verifier() if signer else None, replica_features=cfg.max_model_features // cfg.replicas,
    ))
    trained = (
        keyed.connect(model_docs.broadcast(LATEST_MODEL))
        .process(trainer, output_type=Types.PICKLED_BYTE_ARRAY())
        .name("replica-trainer")
        .uid("replica-trainer")
    )
    trained.get_side_output(DEAD_LETTER).sink_to(text_sink(servers, t.dead_letter, properties=props)).name(
        "sink-dlq").uid("sink-dlq")
    trained.get_side_output(METRICS).sink_to(text_sink(servers, t.metrics, properties=props)).name(
        "sink-metrics").uid("sink-metrics")
    if cfg.training_predictions:
        trained.get_side_output(PREDICTIONS).sink_to(text_sink(servers, t.training_predictions, properties=props)).name(
            "sink-training-predictions").uid("sink-training-predictions")

    merger = Merger(cfg.model_spec, cfg.model_name, cfg.policy(), cfg.trigger(),
                    signing_key=str(Path(cfg.signing_key).resolve()) if cfg.signing_key else None,
                    quality_gate=cfg.quality_gate)
    merged = (
        trained.connect(model_docs)
        .key_by(lambda u: u.model_name, _model_name, key_type=Types.STRING())
        .process(merger, output_type=Types.STRING())
        .name("merger")
        .uid("merger")
        .set_parallelism(1)
    )
    models_sink = text_sink(servers, t.models, compression="gzip", properties=props, key=cfg.model_name)
    merged.sink_to(models_sink).name("sink-models").uid("sink-models").set_parallelism(1)
    return env
