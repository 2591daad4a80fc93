"""``riverflink``: run the embedded broker, produce events, submit jobs, watch the topics.

Every error a user can cause (bad flag, unreachable broker or cluster,
missing Java or jars) ends the command with one ``riverflink: error: ...`` line.

The commands live by group: :mod:`~riverflink.pipelines.cli_jobs` (train, serve, stop),
:mod:`~riverflink.pipelines.cli_topics` (produce, tail, models, report, top) and
:mod:`~riverflink.pipelines.cli_local` (broker, keys, demo); the jobs' flags are derived from their
config classes (:mod:`~riverflink.pipelines.options`).
"""

from __future__ import annotations

import os
import signal

# Ctrl-C or SIGTERM while the (slow) imports below run: nothing has started yet, so leave quietly;
# main() hands both signals back to Python's handling once it runs.
signal.signal(signal.SIGINT, lambda *_: os._exit(130))
signal.signal(signal.SIGTERM, lambda *_: os._exit(143))

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from riverflink.pipelines import cli_jobs, cli_local, cli_topics  # noqa: E402
from riverflink.pipelines.broker import exit_on_sigterm  # noqa: E402
from riverflink.pipelines.cli_context import STATE_DIR, root_cause  # noqa: E402
from riverflink.pipelines.config import ConfigError  # noqa: E402


CONFIG_HELP = ("settings from a TOML file, before or after the command: keys are the flags' names without their "
               "dashes (replicas = 4), a [train] or [serve] table applies to that command only, and flags win")


class Parser(argparse.ArgumentParser):
    """argparse that ends a bad command line with one ``riverflink: error:`` line, and suggests the flag or
    command a misspelled one was probably meant to be."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        print(f"riverflink: error: {message}{self._suggestion(message)}", file=sys.stderr)
        sys.exit(2)

    def _suggestion(self, message: str) -> str:
        import difflib
        import re

        known = set(self._option_string_actions)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                known |= set(action.choices)
                for sp in action.choices.values():
                    known |= set(sp._option_string_actions)
        words = re.findall(r"(--?[\w-]+|'[\w-]+')", message)
        for word in words:
            word = word.strip("'")
            if word in known:
                continue
            close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.75)
            if close:
                return f" (did you mean {close[0]}?)"
        return ""


def parser() -> argparse.ArgumentParser:
    from riverflink import __version__

    p = Parser(prog="riverflink", description=__doc__.split("\n\n")[0].replace("``", "'"), allow_abbrev=False)
    p.add_argument("--version", action="version", version=f"riverflink {__version__}")
    p.add_argument("--config", metavar="FILE.toml", help=CONFIG_HELP)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, *parents) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, parents=list(parents), allow_abbrev=False)
        # the global option after the command too; SUPPRESS keeps a --config given before it
        c.add_argument("--config", metavar="FILE.toml", default=argparse.SUPPRESS, help=CONFIG_HELP)
        return c

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


def _no_interrupt_traces(record) -> bool:
    """Drops py4j's ``logging.exception`` of the Ctrl-C that stops a job (it logs through the root logger)."""
    return not (record.exc_info and record.exc_info[0] is not None and issubclass(record.exc_info[0], KeyboardInterrupt))


def _interrupt_in_finalizer(unraisable) -> None:
    """A Ctrl-C that lands in a finalizer (py4j's weak-reference callbacks run often while a job starts) cannot
    propagate: Python would print it as "Exception ignored in" and go on. End the command as the Ctrl-C asked."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        _end_now(130)
    sys.__unraisablehook__(unraisable)


def main(argv: list[str] | None = None) -> int:
    import logging

    argv = sys.argv[1:] if argv is None else argv
    exit_on_sigterm()
    logging.getLogger().addFilter(_no_interrupt_traces)
    sys.unraisablehook = _interrupt_in_finalizer
    try:  # (until the handler below is set, a Ctrl-C ends the process at once with 130: the import-time handler)
        signal.signal(signal.SIGINT, _interrupt)
        from riverflink.pipelines import config_file

        args = config_file.parse(parser(), argv)
        args.argv = argv
    except ConfigError as e:
        print(f"riverflink: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # (a Ctrl-C while the arguments are read: CI's loaded machine took 1.5 s there)
        _end_now(130)
    try:
        if hasattr(args, "kafka_config"):
            from riverflink.pipelines import kafka_config

            kafka_config.configure(kafka_config.KafkaProperties.load(args.kafka_config, args.kafka_property))
        return args.func(args)
    except ConfigError as e:
        _log_trace(e)
        if _INTERRUPTED:  # what failed was cut short by the Ctrl-C (a JVM gateway half started)
            _end_now(130)
        print(f"riverflink: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _end_now(130)
    except SystemExit as e:
        if e.code == 143:  # SIGTERM (exit_on_sigterm): the same, after the finally blocks above have run
            _end_now(143)
        raise
    except Exception as e:  # noqa: BLE001 - anything else: one line here, the trace in the log file
        log = _log_trace(e)
        if _INTERRUPTED:
            _end_now(130)
        print(f"riverflink: error: {root_cause(e)} (trace: {log})", file=sys.stderr)
        return 1


#: a Ctrl-C came: whatever fails after it is its consequence, and the command ends as a Ctrl-C (130)
_INTERRUPTED = False


def _interrupt(signum, frame) -> None:
    """Ctrl-C: a KeyboardInterrupt (so that ``finally`` blocks stop what they started), and an exit within 10 s
    whatever the interrupted call does with it."""
    import threading

    import logging

    global _INTERRUPTED
    _INTERRUPTED = True
    logging.getLogger("py4j").setLevel(logging.CRITICAL + 1)  # its failed reconnects are the Ctrl-C's doing
    watchdog = threading.Timer(10.0, _end_now, args=(130,))
    watchdog.daemon = True
    watchdog.start()
    raise KeyboardInterrupt


def _end_now(code: int) -> None:
    """Stop every process this command started (the JVM, its Python workers, an embedded broker), then exit at
    once: a JVM gateway half set up when the signal came can keep the interpreter from exiting."""
    from riverflink.pipelines.broker import descendants

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False

    children = descendants(os.getpid())[1:]
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 1.0)):
        for pid in children:
            if alive(pid):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
        deadline = time.time() + grace
        while any(alive(p) for p in children) and time.time() < deadline:
            time.sleep(0.05)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


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
