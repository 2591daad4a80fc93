"""``riverflink``: run the embedded broker, produce events, submit jobs, watch the topics.

Every error a user can cause (bad flag, unreachable broker or cluster,
missing Java or jars) ends the command with one ``riverflink: error: ...`` line.

The commands live by group: :mod:`~riverflink.pipelines.cli_jobs` (train, serve, stop),
:mod:`~riverflink.pipelines.cli_topics` (produce, tail, models, report, top) and
:mod:`~riverflink.pipelines.cli_local` (broker, keys, demo); the jobs' flags are derived from their
config classes (:mod:`~riverflink.pipelines.options`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from riverflink.pipelines import cli_jobs, cli_local, cli_topics
from riverflink.pipelines.broker import exit_on_sigterm
from riverflink.pipelines.cli_context import STATE_DIR, root_cause
from riverflink.pipelines.config import ConfigError


def parser() -> argparse.ArgumentParser:
    from riverflink import __version__

    p = argparse.ArgumentParser(prog="riverflink", description=__doc__.split("\n\n")[0].replace("``", "'"),
                                allow_abbrev=False)
    p.add_argument("--version", action="version", version=f"riverflink {__version__}")
    p.add_argument("--config", metavar="FILE.toml",
                   help="settings from a TOML file (flags win; see docs in riverflink.pipelines.config_file)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, *parents) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=list(parents), allow_abbrev=False)

    kafka = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    kafka.add_argument("--bootstrap-servers", metavar="HOST:PORT",
                       help="any Kafka cluster (default: $RIVERFLINK_BOOTSTRAP, else the embedded broker)")
    kafka.add_argument("--kafka-config", metavar="FILE",
                       help="Kafka client properties (Java properties: security.protocol, sasl.*, ssl.*...) for "
                            "every client, the jobs' included (default: $RIVERFLINK_KAFKA_CONFIG)")
    kafka.add_argument("--kafka-property", action="append", default=[], metavar="KEY=VALUE",
                       help="one Kafka client property, over the file's (repeatable)")
    cli_local.register(command)
    cli_topics.register(command, kafka)
    cli_jobs.register(command, kafka)
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
