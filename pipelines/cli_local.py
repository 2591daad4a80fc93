"""``riverflink broker``, ``keys`` and ``demo``: what runs on this machine alone."""

from __future__ import annotations

import json
import os
from pathlib import Path

from riverflink.pipelines.cli_context import BROKER_FILE, STATE_DIR
from riverflink.pipelines.config import ConfigError
from riverflink.pipelines.options import add_options, from_args


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


def cmd_keys(args) -> int:
    from riverflink.models.signing import Signer

    try:
        private, public = Signer.generate().write(args.directory, force=args.force)
    except FileExistsError as e:
        raise ConfigError(str(e)) from None
    print(f"signing key (keep it secret; for 'train --signing-key'): {private}")
    print(f"verify key (for 'serve --verify-key', LiveModel(verify_key=...), 'models --verify-key'): {public}")
    return 0


def cmd_demo(args) -> int:
    from riverflink.models.spec import build as build_model
    from riverflink.pipelines.broker import EmbeddedBroker

    try:
        build_model(args.model)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if args.bootstrap_servers:
        result = _demo_run(args, args.bootstrap_servers)
    else:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        with EmbeddedBroker(log_path=STATE_DIR / "demo-broker.log") as broker:
            print(f"embedded Tansu broker on {broker.bootstrap} (pid {broker.process.pid}); its topics go with it: "
                  f"--report DIR keeps the run's report, --bootstrap-servers a broker that stays")
            result = _demo_run(args, broker.bootstrap)
    print(f"{len(result.model_versions)} model versions (latest v{result.model_versions[-1]}), replicas contributing: "
          f"{sorted(result.replicas_contributing)}, requests answered={result.answered} "
          f"no_model_yet={result.no_model_yet}")
    print(f"model age at answer (ms): {result.percentiles(result.model_age_ms)}; "
          f"request -> prediction latency (ms): {result.percentiles(result.latency_ms)}")
    print(result.summary())
    return 0 if result.learned + result.dead_lettered == result.events else 1


def _demo_run(args, servers: str):
    """One demo run on ``servers``: its id first, its report (``--report DIR``) before the broker can go."""
    from riverflink.pipelines import demo

    cfg = from_args(demo.DemoConfig, args, bootstrap_servers=servers)
    print(f"run {cfg.run_id}: topics {cfg.topics.events}, {cfg.topics.models}, {cfg.topics.metrics}, ...; "
          f"'riverflink top --run {cfg.run_id}' and 'riverflink report --run {cfg.run_id}' read them", flush=True)
    result = demo.run(cfg)
    if args.report and cfg.recommender:
        print("report: not written (the report does not read recommenders' ratings yet)")
    elif args.report:
        from riverflink.pipelines import report

        r = report.read_run(servers, cfg.topics)
        page = report.write(r, Path(args.report), f"riverflink demo run {cfg.run_id}")
        print(r.summary())
        print(f"report: {page}")
    return result


def register(command) -> None:
    """Add the local commands to the CLI (``command(name, help, *parents)``)."""
    from riverflink.pipelines.demo import DemoConfig

    b = command("broker", "start, stop or check the embedded Tansu broker (127.0.0.1, in memory)")
    b.add_argument("action", choices=["start", "stop", "status"])
    b.add_argument("--port", type=int, default=0, help="listen port (default: a free one)")
    b.set_defaults(func=cmd_broker)

    ky = command("keys", "make an Ed25519 key pair for signed model documents")
    ky.add_argument("directory", help="where to write signing.pem (private) and verify.pem (public)")
    ky.add_argument("--force", action="store_true", help="replace an existing key pair (readers of the old one stop accepting)")
    ky.set_defaults(func=cmd_keys)

    dm = command("demo", "embedded broker + both jobs + a labelled stream; prints live predictions")
    dm.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="use this Kafka instead of an embedded broker")
    add_options(dm, DemoConfig)
    dm.add_argument("--report", metavar="DIR", help="write the run's report (PNGs and index.html) to DIR at the end")
    dm.set_defaults(func=cmd_demo)
