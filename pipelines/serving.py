"""The serving job: ``requests`` + the newest model (from ``models``) -> ``predictions``.

Two dataflows.  By default every predictor subtask holds the whole model (:func:`build`).  With ``--shards M`` a
sharded linear model is served by scatter/gather (:func:`_scatter_gather`): M scorers each hold their shards' slices
alone and answer partial scores, summed per request (:mod:`riverflink.operators.scatter_gather`).
"""

from __future__ import annotations

from pyflink.common import Types

from riverflink.operators.flink_state import LATEST_MODEL, SCATTER, SCATTER_ANSWERS, SCATTER_CONTEXTS
from riverflink.operators.partial_serving import GatherFunction, ScatterFunction, ScorerFunction
from riverflink.operators.frames import USER_PARTITION
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
    if cfg.shards > 1:
        answers, batched = _scatter_gather(cfg, requests, model_docs)
    else:
        if cfg.user_field is not None:
            # a recommender's users: their factor records (frames at USER_PARTITION), keyed with their requests
            # (from the start of the topic unless restored: a new serving job holds no user yet)
            users = frame_source(env, servers, t.users, f"{cfg.group_id}-users", "users", properties=props,
                                 partition_mark=USER_PARTITION, earliest=True).uid("source-users")
            requests = requests.union(users)
        # keyed by user for a recommender (its users' factors live with their requests), else spread in turn
        keyed, batched = java_ops.keyed_batches(requests, keys, cfg.user_field, cfg.batch_size, cfg.batch_ms)
        answers = (
            keyed.connect(model_docs.broadcast(LATEST_MODEL))
            .process(Predictor(cfg.model_name, batched, verifier=load_verifier(cfg.verify_key),
                               ratings=cfg.rating_fields(), users=cfg.user_field is not None),
                     output_type=Types.STRING())
            .name("predictor")
            .uid("predictor")
        )
    if batched:  # (answers to a batch are lines of one string: one Kafka record per line)
        answers = java_ops.split_lines(answers, "split-answers")
    answers.sink_to(text_sink(servers, t.predictions, properties=props)).name("sink-predictions").uid("sink-predictions")
    return env


#: what reaches the scorers: (shard, message); the gather: (batch id, message)
SHARD_ROW = Types.ROW([Types.INT(), Types.STRING()])
BATCH_ROW = Types.ROW([Types.STRING(), Types.STRING()])


def _scatter_gather(cfg: ServeConfig, requests, model_docs):
    """Request frames and ``models`` records -> (answer lines, whether request batches are frames), by
    scatter/gather over the model's slices."""
    verifier = load_verifier(cfg.verify_key)
    # request batches under one key (batched and keyed in the JVM): one scatter subtask orders them with the models
    keyed, batched = java_ops.keyed_batches(requests, 1, None, cfg.batch_size, cfg.batch_ms)
    # Row(shard, "shard kind payload"): slice records to their shard, complete manifests and stamped request
    # batches to every shard, in one order; side outputs: answers given alone, each batch's context
    scattered = (
        keyed.connect(model_docs.broadcast(SCATTER))
        .process(ScatterFunction(cfg.model_name, batched, verifier=verifier), output_type=SHARD_ROW)
        .name("scatter")
        .uid("scatter")
        .set_parallelism(1)
    )
    # Row(batch id, "batch p partials"): each shard's partial scores, from its slice alone (a subtask holds the
    # slices of the shards keyed to it: one each with --parallelism M)
    partials = (
        java_ops.keyed_rows(scattered, Types.INT(), Types.STRING())
        .process(ScorerFunction(cfg.model_name, verifier=verifier), output_type=BATCH_ROW)
        .name("shard-scorers")
        .uid("shard-scorers")
    )
    # str: a batch's answer lines, once its context and every shard's partials have come (one subtask, as the
    # scatter: the work is a sum per request, and a second subtask took about 2 s over its first batch, which
    # bench/sharded_serving.py measured as the run's p99)
    gathered = (
        java_ops.keyed_rows(partials.union(scattered.get_side_output(SCATTER_CONTEXTS)), Types.STRING(), Types.STRING())
        .process(GatherFunction(), output_type=Types.STRING())
        .name("gather")
        .uid("gather")
        .set_parallelism(1)
    )
    return gathered.union(scattered.get_side_output(SCATTER_ANSWERS)), batched
