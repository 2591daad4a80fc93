"""``riverflink --config riverflink.toml COMMAND ...``: settings from a TOML file, flags winning.

The file holds the same settings as the flags, named like them (``bootstrap-servers`` or
``bootstrap_servers``).  Top-level keys apply to every command that has the setting; a table
named after a command (``[train]``, ``[serve]``...) applies to that command only and wins over the
top level::

    bootstrap-servers = "127.0.0.1:9092"
    model-name = "phishing"

    [train]
    replicas = 4
    kafka-property = ["client.id=riverflink-train"]

A key no command knows, or a ``[command]`` key that command does not take, is an error (one line),
so a typo is never silently ignored.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from riverflink.pipelines.config import ConfigError


def load(path: str | Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"--config {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {path}: not valid TOML: {e}") from None


def _commands(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _dests(p: argparse.ArgumentParser) -> set[str]:
    return {a.dest for a in p._actions if a.option_strings and a.dest not in ("help", "config")}


def parse(p: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; with ``--config FILE``, the file's settings become the command's defaults first."""
    args = p.parse_args(argv)
    if not getattr(args, "config", None):
        return args
    table = load(args.config)
    commands = _commands(p)
    everywhere = set().union(*(_dests(c) for c in commands.values()))
    chosen = commands[args.command]
    mine = _dests(chosen)
    values: dict = {}
    for key, value in table.items():
        if isinstance(value, dict):
            if key not in commands:
                raise ConfigError(f"--config {args.config}: [{key}] is not a riverflink command")
            continue
        dest = key.replace("-", "_")
        if dest not in everywhere:
            raise ConfigError(f"--config {args.config}: no command takes {key!r}")
        if dest in mine:
            values[dest] = value
    for key, value in (table.get(args.command) or {}).items():
        dest = key.replace("-", "_")
        if dest not in mine:
            raise ConfigError(f"--config {args.config}: 'riverflink {args.command}' takes no {key!r}")
        values[dest] = value
    chosen.set_defaults(**values)
    return p.parse_args(argv)
