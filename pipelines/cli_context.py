"""What every ``riverflink`` command shares: the state folder, the Kafka to talk to, one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

from riverflink.pipelines.config import ConfigError

STATE_DIR = Path(os.environ.get("RIVERFLINK_HOME", Path(__file__).resolve().parents[1] / ".riverflink"))
BROKER_FILE = STATE_DIR / "broker.json"


def default_bootstrap() -> str | None:
    """``RIVERFLINK_BOOTSTRAP``, else the embedded broker started by ``riverflink broker start``."""
    if os.environ.get("RIVERFLINK_BOOTSTRAP"):
        return os.environ["RIVERFLINK_BOOTSTRAP"]
    if BROKER_FILE.exists():
        return json.loads(BROKER_FILE.read_text())["bootstrap"]
    return None


def bootstrap(args) -> str:
    """The Kafka bootstrap servers a command talks to; a ``ConfigError`` when none is known."""
    servers = getattr(args, "bootstrap_servers", None) or default_bootstrap()
    if not servers:
        raise ConfigError("no Kafka: pass --bootstrap-servers HOST:PORT, set RIVERFLINK_BOOTSTRAP, "
                          "or run 'riverflink broker start'")
    return servers


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
