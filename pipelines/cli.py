"""``riverflink``: run the embedded broker, produce events, submit jobs, watch the topics.

Every error a user can cause (bad flag, unreachable broker or cluster,
missing Java or jars) ends the command with one ``riverflink: error: ...`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from riverflink.pipelines.broker import exit_on_sigterm
from riverflink.pipelines.config import ConfigError, FlinkConfig, ServeConfig, Topics, TrainConfig

STATE_DIR = Path(os.environ.get("RIVERFLINK_HOME", Path(__file__).resolve().parents[1] / ".riverflink"))
BROKER_FILE = STATE_DIR / "broker.json"


def default_bootstrap() -> str | None:
    """``RIVERFLINK_BOOTSTRAP``, else the embedded broker started by ``riverflink broker start``."""
    if os.environ.get("RIVERFLINK_BOOTSTRAP"):
        return os.environ["RIVERFLINK_BOOTSTRAP"]
    if BROKER_FILE.exists():
        return json.loads(BROKER_FILE.read_text())["bootstrap"]
    return None


def _bootstrap(args) -> str:
    servers = args.bootstrap_servers or default_bootstrap()
    if not servers:
        raise ConfigError("no Kafka: pass --bootstrap-servers HOST:PORT, set RIVERFLINK_BOOTSTRAP, "
                          "or run 'riverflink broker start'")
    return servers


def _kafka(args):
    """The job's Kafka settings: the process's client properties (set in main) and topic creation."""
    from riverflink.pipelines.kafka_config import KafkaSettings, current

    return KafkaSettings(current(), replication_factor=args.replication_factor,
                         create_topics=not args.no_create_topics)


def _topics(args) -> Topics:
    d = Topics()
    events = getattr(args, "events_topic", d.events)
    predictions = getattr(args, "predictions_topic", d.predictions)
    return Topics(events=events, dead_letter=events + ".dlq", predictions=predictions,
                  models=getattr(args, "models_topic", d.models), requests=getattr(args, "requests_topic", d.requests),
                  metrics=getattr(args, "metrics_topic", d.metrics), training_predictions=predictions + ".training")


def _limits(args):
    from riverflink.operators.parse import Limits

    try:
        return Limits(max_event_bytes=args.max_event_bytes, max_features=args.max_features,
                      max_abs_value=args.max_abs_value)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _flink(args) -> FlinkConfig:
    return FlinkConfig(jobmanager=args.jobmanager, parallelism=args.parallelism, checkpoint_ms=args.checkpoint_ms,
                       bundle_ms=args.bundle_ms, bundle_size=args.bundle_size, savepoint=args.from_savepoint,
                       metrics_port=args.metrics_port, buffer_timeout_ms=args.buffer_timeout_ms,
                       checkpoint_dir=args.checkpoint_dir)


# -- commands ---------------------------------------------------------------------
def cmd_broker(args) -> int:
    from riverflink.pipelines.broker import EmbeddedBroker, stop_pid

    STATE_DIR.mkdir(parents=True, exist_ok=True)
    state = json.loads(BROKER_FILE.read_text()) if BROKER_FILE.exists() else None
    alive = state is not None and _pid_alive(state["pid"])
    if args.action == "status":
        print(f"running: {state['bootstrap']} (pid {state['pid']})" if alive else "not running")
        return 0 if alive else 1
    if args.action == "stop":
        if alive:
            stop_pid(state["pid"])
        BROKER_FILE.unlink(missing_ok=True)
        print("stopped" if alive else "not running")
        return 0
    if alive:
        print(f"already running: {state['bootstrap']} (pid {state['pid']})")
        return 0
    # outlives this command on purpose: 'riverflink broker stop' ends it
    broker = EmbeddedBroker(port=args.port, log_path=STATE_DIR / "broker.log", tied_to_parent=False).start()
    BROKER_FILE.write_text(json.dumps({"bootstrap": broker.bootstrap, "pid": broker.process.pid}))
    print(f"embedded Tansu broker on {broker.bootstrap} (pid {broker.process.pid}); stop it with 'riverflink broker stop'")
    return 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def cmd_produce(args) -> int:
    from tqdm import tqdm

    from riverflink.pipelines import kafka_io
    from riverflink.pipelines.sources import encode_events, file_events, river_events

    servers = _bootstrap(args)
    if args.file:
        events = file_events(args.file, args.target)
    else:
        events = river_events(args.dataset, args.limit, seed=args.seed)
    kafka_io.create_topics(servers, {args.topic: args.partitions})
    producer = kafka_io.producer(servers)
    n = 0
    for value in tqdm(encode_events(events, start_id=args.start_id, with_label=not args.unlabelled),
                      unit="ev", desc=f"-> {args.topic}", disable=args.quiet):
        producer.send(args.topic, value=value)
        n += 1
    producer.flush()
    producer.close()
    print(f"produced {n} events to {args.topic} on {servers}")
    return 0


def _run_job(build, cfg, name: str, args) -> int:
    """Local: build and run here until stopped.  ``--jobmanager``: hand over to ``flink run`` (detached)."""
    from riverflink.pipelines import remote

    if cfg.flink.jobmanager and not remote.inside_flink_run():  # (a --config file may name it inside too)
        return remote.submit(remote.strip_jobmanager(args.argv), cfg.flink.jobmanager, args.python_executable,
                             cfg.flink.savepoint)
    env = build(cfg)
    if remote.inside_flink_run():
        env.execute(name)  # the cluster client runs it (detached)
        return 0
    print(f"running {name} on the local mini-cluster (Ctrl-C stops it)", flush=True)
    try:
        env.execute(name)
    except Exception as e:  # noqa: BLE001 - a failed job ends with its root cause on one line
        if type(e).__name__ == "KeyboardInterrupt":
            raise
        raise ConfigError(f"job {name} failed: {root_cause(e)}") from e
    return 0


def root_cause(e: BaseException) -> str:
    """The innermost cause of a (Java or Python) exception, on one line."""
    text = str(e)
    causes = [line.strip() for line in text.splitlines() if line.strip().startswith("Caused by:")]
    if causes:
        return causes[-1][len("Caused by:"):].strip()[:400]
    while e.__cause__ is not None:
        e = e.__cause__
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return f"{type(e).__name__}: {first}"[:400]


def cmd_train(args) -> int:
    from riverflink.pipelines import training

    cfg = TrainConfig(
        bootstrap_servers=_bootstrap(args), model_spec=args.model, model_name=args.model_name,
        replicas=args.replicas, key_field=args.key_field, sync_every_events=args.sync_every or None,
        sync_every_seconds=args.sync_seconds or None, sync_divergence=args.sync_divergence,
        merge_policy=args.merge_policy, merge_wait_ms=args.merge_wait_ms, topics=_topics(args), flink=_flink(args),
        group_id=args.group_id or "riverflink-train", batch_size=args.batch_size, batch_ms=args.batch_ms,
        mode=args.mode, training_predictions=args.training_predictions, merge_quorum=args.merge_quorum,
        update_precision=args.update_precision, limits=_limits(args), signing_key=args.signing_key,
        max_model_features=args.max_model_features, quality_gate=args.quality_gate, kafka=_kafka(args),
    )
    roles = ("events", "dead_letter", "models", "metrics") + (("training_predictions",) if cfg.training_predictions else ())
    _preflight(cfg, cfg.topics.to_create(*roles))
    return _run_job(training.build, cfg, f"riverflink-train-{cfg.model_name}", args)


def cmd_serve(args) -> int:
    from riverflink.pipelines import serving

    cfg = ServeConfig(bootstrap_servers=_bootstrap(args), model_name=args.model_name, topics=_topics(args),
                      flink=_flink(args), group_id=args.group_id or "riverflink-serve",
                      batch_size=args.batch_size, batch_ms=args.batch_ms, verify_key=args.verify_key,
                      kafka=_kafka(args))
    _preflight(cfg, cfg.topics.to_create("requests", "predictions", "models"))
    return _run_job(serving.build, cfg, f"riverflink-serve-{cfg.model_name}", args)


def _preflight(cfg: TrainConfig | ServeConfig, topics: dict[str, int]) -> None:
    """Fail fast on a bad setting, an unreachable Kafka or ``--jobmanager``; then create ``topics``."""
    from riverflink.pipelines import flink_rest, kafka_io

    cfg.validate()
    kafka_io.check_reachable(cfg.bootstrap_servers)
    if cfg.flink.jobmanager:
        flink_rest.jobs(cfg.flink.jobmanager)
    if cfg.kafka.create_topics:
        kafka_io.create_topics(cfg.bootstrap_servers, topics, cfg.kafka.replication_factor,
                               {cfg.topics.models: {"cleanup.policy": "compact"}})
    else:
        missing = sorted(set(topics) - kafka_io.topic_names(cfg.bootstrap_servers))
        if missing:
            raise ConfigError(f"--no-create-topics, and these topics do not exist: {', '.join(missing)}")


def cmd_stop(args) -> int:
    from riverflink.pipelines import flink_rest

    FlinkConfig(jobmanager=args.jobmanager).validate()
    job_id = args.job_id or flink_rest.find_running(args.jobmanager, args.name)
    target = args.savepoint_dir
    if target and "://" not in target:  # a plain path means this machine's file system; URIs pass unchanged
        target = Path(target).resolve().as_uri()
    path = flink_rest.stop_with_savepoint(args.jobmanager, job_id, target)
    print(f"stopped {job_id}; savepoint: {path}")
    print(f"resume with: riverflink train ... --jobmanager {args.jobmanager} --from-savepoint {path}")
    return 0


def cmd_tail(args) -> int:
    from riverflink.pipelines import kafka_io

    servers = _bootstrap(args)
    topic = {"predictions": args.predictions_topic, "models": args.models_topic, "metrics": args.metrics_topic,
             "training": args.predictions_topic + ".training",
             "dlq": args.events_topic + ".dlq"}.get(args.what, args.what)
    n = 0
    for value in kafka_io.consume(servers, topic, from_beginning=args.from_beginning, idle_timeout=args.idle):
        text = value.decode("utf-8", errors="replace")
        if args.what == "models":
            from riverflink.operators.merge_state import read_doc

            doc = read_doc(value)
            if doc is None:
                text = f"(not a model document: {len(value)} bytes)"
            else:
                meta = doc["meta"]
                text = (f"model {str(meta.get('name'))[:40]} v{str(meta.get('version'))[:20]} "
                        f"events={str(meta.get('events'))[:20]} counts={str(meta.get('counts'))[:200]} "
                        f"bytes={len(value)} {'signed' if 'signature' in doc else 'unsigned'}")
        print(text, flush=True)
        n += 1
        if args.limit and n >= args.limit:
            break
    return 0


def cmd_models(args) -> int:
    from riverflink.models.signing import verify
    from riverflink.operators.merge_state import read_doc
    from riverflink.pipelines import kafka_io
    from riverflink.pipelines.config import load_verifier

    servers = _bootstrap(args)
    verifier = load_verifier(args.verify_key)
    rows, foreign = [], 0
    values = kafka_io.consume(servers, args.models_topic, idle_timeout=args.idle)
    if args.latest:  # the topic's tail only, widened until it holds a document of the model asked for
        last = 16
        while True:
            values = kafka_io.read_tail(servers, args.models_topic, last)
            docs = [read_doc(v) for v in values]
            if len(values) < last or any(d and (not args.model_name or d["meta"].get("name") == args.model_name)
                                         for d in docs):
                break
            last *= 8
    for value in values:
        doc = read_doc(value)
        if doc is None:
            foreign += 1
            continue
        meta = doc["meta"]
        if args.model_name and meta.get("name") != args.model_name:
            continue
        check = "unsigned" if "signature" not in doc else "signed"
        if verifier is not None:
            check = verify(doc, verifier) or "verified"
        created = meta.get("created_at") if isinstance(meta.get("created_at"), (int, float)) else 0
        held = meta.get("held")
        serving = f"held: {held}" if held else ("served" if "held" in meta else "-")
        rows.append((meta.get("name"), meta.get("version"), meta.get("sequence"), meta.get("events"),
                     meta.get("counts"), created, len(value), check, serving))
    if args.latest:
        latest = {}
        for r in rows:
            if r[0] not in latest or (isinstance(r[1], int) and r[1] > (latest[r[0]][1] or 0)):
                latest[r[0]] = r
        rows = list(latest.values())
    print(f"{'name':12} {'version':>14} {'seq':>5} {'events':>8} {'bytes':>7}  {'created_at':20} {'signature':10} "
          f"counts / quality gate")
    for name, version, seq, events, counts, created, size, check, serving in rows:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
        print(f"{str(name)[:12]:12} {str(version)[:14]:>14} {str(seq)[:5]:>5} {str(events)[:8]:>8} {size:>7}  "
              f"{stamp:20} {check[:40]:10} {str(counts)[:200]}  {serving[:200]}")
    if foreign:
        print(f"({foreign} record(s) on {args.models_topic} were not model documents and were skipped)")
    return 0


def _run_topics(args) -> Topics:
    return Topics.for_run(args.run) if args.run else _topics(args)


def cmd_report(args) -> int:
    from riverflink.pipelines import report

    servers = _bootstrap(args)
    topics = _run_topics(args)
    r = report.read_run(servers, topics, idle=args.idle)
    out = Path(args.out or f"report-{args.run or 'default'}")
    page = report.write(r, out, f"riverflink run {args.run or topics.events}")
    print(r.summary())
    print(f"report: {page}")
    return 0


def cmd_top(args) -> int:
    from riverflink.pipelines import top

    topics = _run_topics(args)
    top.run(_bootstrap(args), topics.metrics, topics.models, f"riverflink {args.run or topics.metrics}",
            duration=args.duration)
    return 0


def cmd_keys(args) -> int:
    from riverflink.models.signing import Signer

    private, public = Signer.generate().write(args.directory)
    print(f"signing key (keep it secret; for 'train --signing-key'): {private}")
    print(f"verify key (for 'serve --verify-key', LiveModel(verify_key=...), 'models --verify-key'): {public}")
    return 0


def cmd_demo(args) -> int:
    from riverflink.pipelines import demo
    from riverflink.pipelines.broker import EmbeddedBroker

    cfg_kwargs = dict(dataset=args.dataset, events=args.events, rate=args.rate, replicas=args.replicas,
                      merge_policy=args.merge_policy, parallelism=args.parallelism, file=args.file,
                      target=args.target, model_spec=args.model, mode=args.mode)
    from riverflink.models.spec import build as build_model

    try:
        build_model(args.model)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if args.bootstrap_servers:
        result = demo.run(demo.DemoConfig(bootstrap_servers=args.bootstrap_servers, **cfg_kwargs))
    else:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        with EmbeddedBroker(log_path=STATE_DIR / "demo-broker.log") as broker:
            print(f"embedded Tansu broker on {broker.bootstrap} (pid {broker.process.pid})")
            result = demo.run(demo.DemoConfig(bootstrap_servers=broker.bootstrap, run_id="", **cfg_kwargs))
    print(f"{len(result.model_versions)} model versions (latest v{result.model_versions[-1]}), replicas contributing: "
          f"{sorted(result.replicas_contributing)}, requests answered={result.answered} "
          f"no_model_yet={result.no_model_yet}")
    print(f"model age at answer (ms): {result.percentiles(result.model_age_ms)}; "
          f"request -> prediction latency (ms): {result.percentiles(result.latency_ms)}")
    print(result.summary())
    return 0 if result.learned + result.dead_lettered == result.events else 1


# -- parser -----------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    from riverflink.models.policies import POLICIES
    from riverflink.pipelines.sources import RIVER_DATASETS

    from riverflink import __version__

    p = argparse.ArgumentParser(prog="riverflink", description=__doc__.split("\n\n")[0].replace("``", "'"),
                                allow_abbrev=False)
    p.add_argument("--version", action="version", version=f"riverflink {__version__}")
    p.add_argument("--config", metavar="FILE.toml",
                   help="settings from a TOML file (flags win; see docs in riverflink.pipelines.config_file)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, *parents) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=list(parents), allow_abbrev=False)

    def bootstrap_parent() -> argparse.ArgumentParser:
        b = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        b.add_argument("--bootstrap-servers", metavar="HOST:PORT",
                       help="any Kafka cluster (default: $RIVERFLINK_BOOTSTRAP, else the embedded broker)")
        b.add_argument("--kafka-config", metavar="FILE",
                       help="Kafka client properties (Java properties: security.protocol, sasl.*, ssl.*...) for "
                            "every client, the jobs' included (default: $RIVERFLINK_KAFKA_CONFIG)")
        b.add_argument("--kafka-property", action="append", default=[], metavar="KEY=VALUE",
                       help="one Kafka client property, over the file's (repeatable)")
        return b

    def topics_parent(*roles: str) -> argparse.ArgumentParser:
        t = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        helps = {"events": ("--events-topic", "events", "labelled events (dead letters go to EVENTS.dlq)"),
                 "requests": ("--requests-topic", "requests", "prediction requests"),
                 "predictions": ("--predictions-topic", "predictions",
                                 "serving answers (training's per-event records: PREDICTIONS.training)"),
                 "models": ("--models-topic", "models", "the serving topic of versioned model documents"),
                 "metrics": ("--metrics-topic", "metrics", "one record per replica micro-batch")}
        for role in roles:
            flag, default, text = helps[role]
            t.add_argument(flag, default=default, help=text)
        return t

    kafka = bootstrap_parent()

    flink = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    flink.add_argument("--jobmanager", metavar="HOST:PORT",
                       help="submit to a running Flink cluster's REST endpoint (default: local mini-cluster)")
    flink.add_argument("--python-executable", help="Python of the cluster's workers (default: this one)")
    flink.add_argument("--parallelism", type=int,
                       help="subtasks per operator (default: 2 locally, the cluster's parallelism.default on a cluster)")
    flink.add_argument("--checkpoint-ms", type=int,
                       help="checkpoint interval (default: 5000 locally; on a cluster, its own checkpointing if it "
                            "configures one, else 5000)")
    flink.add_argument("--checkpoint-dir", metavar="URI",
                       help="where checkpoints go (file://, s3://...; default: a temporary directory on local "
                            "runs, the cluster's execution.checkpointing.dir on a cluster)")
    flink.add_argument("--bundle-ms", type=int, default=100,
                       help="Python operators flush output at least this often (lower: fresher, slower)")
    flink.add_argument("--bundle-size", type=int, default=1000, help="... or after this many records")
    flink.add_argument("--buffer-timeout-ms", type=int, default=100,
                       help="Flink sends a network buffer at least this often (lower: less latency, more CPU)")
    flink.add_argument("--model-name", default="default", help="name of the model on the models topic")
    flink.add_argument("--replication-factor", type=int, default=-1,
                       help="of the topics riverflink creates (default: the broker's default.replication.factor)")
    flink.add_argument("--no-create-topics", action="store_true",
                       help="create no topic (for clusters where clients may not): they must exist")
    flink.add_argument("--from-savepoint", metavar="PATH",
                       help="restore replicas, merger and Kafka offsets from a savepoint (any --parallelism)")
    flink.add_argument("--group-id", help="Kafka consumer group (default: riverflink-train / riverflink-serve)")
    flink.add_argument("--metrics-port", type=int, metavar="PORT",
                       help="serve Flink's metrics, riverflink's group included, for Prometheus on this port "
                            "(local runs; on a cluster, configure its reporters)")
    b = command("broker", "start, stop or check the embedded Tansu broker (127.0.0.1, in memory)")
    b.add_argument("action", choices=["start", "stop", "status"])
    b.add_argument("--port", type=int, default=0, help="listen port (default: a free one)")
    b.set_defaults(func=cmd_broker)

    pr = command("produce", "send a River dataset, a JSONL or a CSV file to a topic", kafka)
    pr.add_argument("--topic", default="events")
    src = pr.add_mutually_exclusive_group()
    src.add_argument("--dataset", default="Phishing", choices=RIVER_DATASETS, help="bundled River dataset")
    src.add_argument("--file", help="a .jsonl file of {\"x\": {...}, \"y\": ...} lines, or a .csv with a header")
    pr.add_argument("--target", help="label column of a CSV file")
    pr.add_argument("--limit", type=int, help="events to send (datasets are shuffled and repeated to reach it)")
    pr.add_argument("--seed", type=int, default=42)
    pr.add_argument("--start-id", type=int, default=0, help="first event id")
    pr.add_argument("--unlabelled", action="store_true", help="drop labels (to send prediction requests)")
    pr.add_argument("--partitions", type=int, default=2, help="partitions if the topic is created")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=cmd_produce)

    tr = command("train", "run the training job (replicas, merger)", kafka,
                 topics_parent("events", "predictions", "models", "metrics"), flink)
    tr.add_argument("--model", default="StandardScaler|LogisticRegression",
                    help="model spec, e.g. 'StandardScaler|LogisticRegression(lr=0.05)' or 'GaussianNB'")
    tr.add_argument("--replicas", type=int, default=4, help="K: replica keys are crc32(event key) mod K")
    tr.add_argument("--key-field", default="key", help="event field used as replica key (else Kafka key, id)")
    tr.add_argument("--sync-every", type=int, default=100, help="a replica syncs after S events (0: never)")
    tr.add_argument("--sync-seconds", type=float, default=1.0, help="... or T seconds after its first unsynced event")
    tr.add_argument("--sync-divergence", type=float, help="... or when its weights moved this far (L2)")
    tr.add_argument("--merge-policy", default="delta", choices=POLICIES)
    tr.add_argument("--merge-wait-ms", type=int, default=500, help="merge whatever is pending after this")
    tr.add_argument("--merge-quorum", type=int, default=1,
                    help="replicas with a pending update that start a merge (default 1: merge on arrival)")
    tr.add_argument("--mode", default="exact", choices=["exact", "batch"],
                    help="exact: predict_one + learn_one per event; batch: predict the micro-batch, then learn_many")
    tr.add_argument("--training-predictions", action="store_true",
                    help="also write one progressive-validation prediction per training event to --predictions-topic")
    tr.add_argument("--update-precision", default="float16", choices=["float16", "float32", "float64"],
                    help="precision of learned parameters in replica -> merger updates (statistics stay exact)")
    tr.add_argument("--signing-key", default=os.environ.get("RIVERFLINK_SIGNING_KEY"), metavar="PEM",
                    help="Ed25519 private key: the merger signs every model document and replicas accept only "
                         "signed ones (default: $RIVERFLINK_SIGNING_KEY; make one with 'riverflink keys')")
    tr.add_argument("--max-event-bytes", type=int, default=1 << 20, help="larger events are dead-lettered")
    tr.add_argument("--max-features", type=int, default=1000, help="events with more features are dead-lettered")
    tr.add_argument("--quality-gate", type=float, metavar="MARGIN",
                    help="hold back merged versions whose replicas' recent progressive error rate (classifiers, "
                         "absolute: 0.02 = 2 points) or MAE (regressors, relative: 0.2 = 20%%) is worse than the "
                         "served version's by more than MARGIN; serving keeps the previous version (default: off)")
    tr.add_argument("--max-model-features", type=int, default=10_000,
                    help="distinct features the model may hold; each replica admits its share (this / --replicas) "
                         "first come, first served, and drops (and counts) later new ones")
    tr.add_argument("--max-abs-value", type=float, default=1e9,
                    help="events with a feature beyond +-this are dead-lettered")
    tr.add_argument("--batch-size", type=int, default=500, help="events per micro-batch handed to a replica")
    tr.add_argument("--batch-ms", type=int, default=50, help="longest an event waits for its micro-batch")
    tr.set_defaults(func=cmd_train)

    sv = command("serve", "run the serving job (requests -> predictions)", kafka,
                 topics_parent("requests", "predictions", "models"), flink)
    sv.add_argument("--batch-size", type=int, default=500, help="requests per micro-batch (a batch also ends after --batch-ms)")
    sv.add_argument("--batch-ms", type=int, default=10, help="longest a request waits for its micro-batch")
    sv.add_argument("--verify-key", default=os.environ.get("RIVERFLINK_VERIFY_KEY"), metavar="PEM",
                    help="answer only with model documents signed by this Ed25519 key (default: $RIVERFLINK_VERIFY_KEY)")
    # latency over throughput for serving: measured with bench/serving.py (docs in README)
    sv.set_defaults(func=cmd_serve, bundle_ms=10, buffer_timeout_ms=10)

    st = command("stop", "stop a job on a running cluster with a savepoint (to upgrade or rescale)")
    st.add_argument("--jobmanager", metavar="HOST:PORT", required=True)
    which = st.add_mutually_exclusive_group(required=True)
    which.add_argument("--job-id")
    which.add_argument("--name", help="job name, e.g. riverflink-train-default")
    st.add_argument("--savepoint-dir", metavar="DIR_OR_URI",
                    help="where the savepoint goes; a URI (s3://..., hdfs://...) is passed unchanged "
                         "(default: the cluster's state.savepoints.dir)")
    st.set_defaults(func=cmd_stop)

    tl = command("tail", "print predictions, models, metrics or dead letters as they arrive", kafka,
                 topics_parent("events", "predictions", "models", "metrics"))
    tl.add_argument("what", nargs="?", default="predictions",
                    help="predictions, training (per-event training predictions), metrics, models, dlq, or a topic")
    tl.add_argument("--from-beginning", action="store_true")
    tl.add_argument("--limit", type=int, help="stop after N records")
    tl.add_argument("--idle", type=float, help="stop after this many seconds without a record")
    tl.set_defaults(func=cmd_tail)

    rp = command("report", "plots and an HTML page of a run: served vs single-node River, versions, events/s",
                 kafka, topics_parent("events", "models", "metrics"))
    rp.add_argument("--run", help="the run's id (topics events-RUN, models-RUN, metrics-RUN, as 'demo' makes)")
    rp.add_argument("--out", default=None, help="directory for the PNGs and index.html (default: report-RUN)")
    rp.add_argument("--idle", type=float, default=3.0, help="seconds without a record that end reading a topic")
    rp.set_defaults(func=cmd_report)

    tp = command("top", "a live terminal view of a training run (replicas, versions, events/s)", kafka,
                 topics_parent("models", "metrics"))
    tp.add_argument("--run", help="the run's id (topics models-RUN and metrics-RUN)")
    tp.add_argument("--duration", type=float, help="stop after this many seconds (default: Ctrl-C)")
    tp.set_defaults(func=cmd_top)

    md = command("models", "list the model versions on the serving topic", kafka, topics_parent("models"))
    md.add_argument("--model-name", help="only this model")
    md.add_argument("--latest", action="store_true", help="only the newest version of each model (reads the topic's tail, not its history)")
    md.add_argument("--idle", type=float, default=3.0, help="seconds without a record that end the listing")
    md.add_argument("--verify-key", default=os.environ.get("RIVERFLINK_VERIFY_KEY"), metavar="PEM",
                    help="check every document's signature against this Ed25519 key")
    md.set_defaults(func=cmd_models)

    ky = command("keys", "make an Ed25519 key pair for signed model documents")
    ky.add_argument("directory", help="where to write signing.pem (private) and verify.pem (public)")
    ky.set_defaults(func=cmd_keys)

    dm = sub.add_parser("demo", allow_abbrev=False, help="embedded broker + both jobs + a labelled stream; prints live predictions")
    dm.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="use this Kafka instead of an embedded broker")
    dm.add_argument("--dataset", default="Phishing", choices=RIVER_DATASETS)
    dm.add_argument("--file", help="a labelled .jsonl or .csv file instead of --dataset")
    dm.add_argument("--target", help="label column of a CSV file")
    dm.add_argument("--model", default="StandardScaler|LogisticRegression",
                    help="model spec, e.g. 'StandardScaler|LinearRegression' for a regression stream")
    dm.add_argument("--mode", default="exact", choices=["exact", "batch"])
    dm.add_argument("--events", type=int, default=10_000, help="events to send (a file: at most this many)")
    dm.add_argument("--rate", type=float, default=2_000.0, help="events per second to produce")
    dm.add_argument("--replicas", type=int, default=4)
    dm.add_argument("--merge-policy", default="delta", choices=POLICIES)
    dm.add_argument("--parallelism", type=int, default=2)
    dm.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    exit_on_sigterm()
    try:
        from riverflink.pipelines import config_file

        args = config_file.parse(parser(), argv)
        args.argv = argv
    except ConfigError as e:
        print(f"riverflink: error: {e}", file=sys.stderr)
        return 2
    try:
        if hasattr(args, "kafka_config"):
            from riverflink.pipelines import kafka_config

            kafka_config.configure(kafka_config.KafkaProperties.load(args.kafka_config, args.kafka_property))
        return args.func(args)
    except ConfigError as e:
        _log_trace(e)
        print(f"riverflink: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - anything else: one line here, the trace in the log file
        log = _log_trace(e)
        print(f"riverflink: error: {root_cause(e)} (trace: {log})", file=sys.stderr)
        return 1


def _log_trace(e: BaseException) -> Path:
    import traceback

    path = STATE_DIR / "cli.log"
    try:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} riverflink {' '.join(sys.argv[1:])}\n")
            f.write("".join(traceback.format_exception(e)))
    except OSError:
        pass
    return path


if __name__ == "__main__":
    sys.exit(main())
