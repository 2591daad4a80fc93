"""The serving job: ``requests`` + latest model (broadcast from ``models``) -> ``predictions``."""

from __future__ import annotations

from pyflink.common import Types

from riverflink.operators.flink_state import LATEST_MODEL
from riverflink.operators.predictor import Predictor
from riverflink.pipelines import java_ops
from riverflink.pipelines.config import ServeConfig, load_verifier
from riverflink.pipelines.flink_kafka import frame_source, text_sink, text_source
from riverflink.pipelines.flink_runtime import make_env


def build(cfg: ServeConfig):
    cfg.validate()
    env = make_env(cfg.flink, f"riverflink-serve-{cfg.model_name}")
    t, servers = cfg.topics, cfg.bootstrap_servers
    props = cfg.kafka.properties
    requests = frame_source(env, servers, t.requests, cfg.group_id, "requests",
                           properties=props).uid("source-requests")
    model_docs = text_source(env, servers, t.models, f"{cfg.group_id}-models", "models", props,
                             tail=cfg.models_tail).uid("source-models")
    # keys only spread request batches over the predictor's subtasks, in turn (no keying by content)
    parallelism = env.get_parallelism()  # the cluster's, on a cluster (-1 if it leaves it to the job)
    keys = 4 * parallelism if parallelism > 0 else 8
    keyed, batched = java_ops.keyed_batches(requests, keys, None, cfg.batch_size, cfg.batch_ms)
    answers = (
        keyed.connect(model_docs.broadcast(LATEST_MODEL))
        .process(Predictor(cfg.model_name, batched, verifier=load_verifier(cfg.verify_key)),
                 output_type=Types.STRING())
        .name("predictor")
        .uid("predictor")
    )
    if batched:
        answers = java_ops.split_lines(answers, "split-answers")
    answers.sink_to(text_sink(servers, t.predictions, properties=props)).name("sink-predictions").uid("sink-predictions")
    return env
