"""``riverflink train``, ``serve`` and ``stop``: submit the jobs, locally or to a cluster, and stop them.

Their flags are derived from ``TrainConfig`` and ``ServeConfig`` (:mod:`riverflink.pipelines.options`).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from riverflink.pipelines.cli_context import bootstrap, root_cause
from riverflink.pipelines.config import ConfigError, FlinkConfig, ServeConfig, TrainConfig, host_port
from riverflink.pipelines.options import add_options, from_args


def job_config(cls: type, args: argparse.Namespace):
    """A job's config (``TrainConfig`` or ``ServeConfig``) from its flags, with the process's Kafka client
    properties (``main`` sets them from ``--kafka-config`` / ``--kafka-property``)."""
    from riverflink.pipelines.kafka_config import current

    try:
        cfg = from_args(cls, args, bootstrap_servers=bootstrap(args))
    except ValueError as e:  # a check in a nested config's constructor (Limits)
        raise ConfigError(str(e)) from None
    return dataclasses.replace(cfg, kafka=dataclasses.replace(cfg.kafka, properties=current()))


def _run_job(build, cfg, kind: str, args) -> int:
    """Local: build and run here until stopped.  ``--jobmanager``: hand over to ``flink run`` (detached).

    ``kind``: ``train`` or ``serve``; the job is named ``riverflink-KIND-MODEL``."""
    name = f"riverflink-{kind}-{cfg.model_name}"
    from riverflink.pipelines import remote

    if cfg.flink.jobmanager and not remote.inside_flink_run():  # (a --config file may name it inside too)
        return remote.submit(remote.strip_jobmanager(args.argv), cfg.flink.jobmanager, args.python_executable,
                             cfg.flink.savepoint, unclaimed_state_ok=kind == "train" and cfg.recommender)
    env = build(cfg)
    if remote.inside_flink_run():
        env.execute(name)  # the cluster client runs it (detached)
        return 0
    print(f"running {name} on the local mini-cluster (Ctrl-C stops it)", flush=True)
    from riverflink.pipelines import job_status

    status = job_status.start(kind, cfg, args.status_every)
    try:
        env.execute(name)
    except Exception as e:  # noqa: BLE001 - a failed job ends with its root cause on one line
        if type(e).__name__ == "KeyboardInterrupt":
            raise
        cause = root_cause(e)
        if "JobCancellationException" in f"{cause} {e}":  # py4j's text carries the Java exception chain
            raise ConfigError(f"job {name} was cancelled") from e
        raise ConfigError(f"job {name} failed: {cause}") from e
    finally:
        if status is not None:  # no status line after the job's last word
            status.set()
    # a streaming job only finishes when 'riverflink stop' (or Flink's stop-with-savepoint) stopped it
    print(f"{name} stopped (with a savepoint: resume with --from-savepoint, as 'riverflink stop' printed)",
          flush=True)
    return 0


def cmd_train(args) -> int:
    from riverflink.pipelines import training

    cfg = job_config(TrainConfig, args)
    roles = ("events", "dead_letter", "models", "metrics") + (("training_predictions",) if cfg.training_predictions else ()) \
        + (("pulls",) if cfg.working_set else ()) + (("users",) if cfg.rating_fields() else ())
    _preflight(cfg, cfg.topics.to_create(*roles))
    return _run_job(training.build, cfg, "train", args)


def cmd_serve(args) -> int:
    from riverflink.pipelines import serving

    cfg = job_config(ServeConfig, args)
    _preflight(cfg, cfg.topics.to_create("requests", "predictions", "models", *(("users",) if cfg.user_field else ())))
    return _run_job(serving.build, cfg, "serve", args)


def _preflight(cfg: TrainConfig | ServeConfig, topics: dict[str, int]) -> None:
    """Fail fast on a bad setting, an unreachable Kafka or ``--jobmanager``; then create ``topics``."""
    from riverflink.pipelines import flink_rest, kafka_io

    cfg.validate()
    kafka_io.check_reachable(cfg.bootstrap_servers)
    if cfg.flink.jobmanager:
        flink_rest.jobs(cfg.flink.jobmanager)
    if cfg.kafka.create_topics:
        kafka_io.create_topics(cfg.bootstrap_servers, topics, cfg.kafka.replication_factor,
                               {cfg.topics.models: {"cleanup.policy": "compact"},
                                cfg.topics.users: {"cleanup.policy": "compact"}})
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
    name = next((j["name"] for j in flink_rest.jobs(args.jobmanager) if j["jid"] == job_id), "")
    path = flink_rest.stop_with_savepoint(args.jobmanager, job_id, target)
    print(f"stopped {job_id}; savepoint: {path}")
    command = "serve" if name.startswith("riverflink-serve") else "train"
    # a local run's mini-cluster ends with its job; a standalone cluster keeps answering
    where = f" --jobmanager {args.jobmanager}" if flink_rest.still_up(args.jobmanager) else ""
    print(f"resume with: riverflink {command} ... (the same flags){where} --from-savepoint {path}")
    return 0


def register(command, kafka: argparse.ArgumentParser) -> None:
    """Add ``train``, ``serve`` and ``stop`` to the CLI (``command(name, help, *parents)``)."""
    for name, help, config, func, status in (
            ("train", "run the training job (replicas, merger)", TrainConfig, cmd_train, "learned, versions, lag"),
            ("serve", "run the serving job (requests -> predictions)", ServeConfig, cmd_serve,
             "answers by status, the model")):
        job = command(name, help, kafka)
        add_options(job, config)
        job.add_argument("--python-executable", help="Python of the cluster's workers (default: this one)")
        job.add_argument("--status-every", type=float, default=10.0, metavar="SECONDS",
                         help=f"a local run prints a status line this often: {status} (0: never)")
        job.set_defaults(func=func)

    st = command("stop", "stop a job on a running cluster with a savepoint (to upgrade or rescale)")
    st.add_argument("--jobmanager", metavar="HOST:PORT", required=True, type=host_port,
                    help="the cluster's REST endpoint (a URL is fine; a local run prints its own)")
    which = st.add_mutually_exclusive_group(required=True)
    which.add_argument("--job-id")
    which.add_argument("--name", help="job name, e.g. riverflink-train-default")
    st.add_argument("--savepoint-dir", metavar="DIR_OR_URI",
                    help="where the savepoint goes; a URI (s3://..., hdfs://...) is passed unchanged "
                         "(default: the cluster's state.savepoints.dir)")
    st.set_defaults(func=cmd_stop)
