"""A trace of the training loop's steps, for finding where an event was counted twice.  Off by default.

Set ``RIVERFLINK_TRACE_LOOP=DIR`` in the environment of the task managers;
every replica and merger process then appends one JSON line per step to
``DIR/trace-<pid>.jsonl``: state restored, batch learned (source offsets),
update sent, rebase (what the version acknowledged), merge (which updates),
version adopted.  A development tool like the sampling profiler: one
``time.time()`` and a short write per step when on, one attribute test when off.

>>> tracer = LoopTrace(None)
>>> tracer.on
False
>>> tracer.write("merge", version=1)  # off: nothing happens
"""

from __future__ import annotations

import os
import time

import orjson


class LoopTrace:
    """Appends ``{"t": ..., "step": ..., **fields}`` lines to ``DIR/trace-<pid>.jsonl`` when ``directory`` is set."""

    def __init__(self, directory: str | None):
        self.on = bool(directory)
        self._file = None
        if self.on:
            os.makedirs(directory, exist_ok=True)
            self._file = open(os.path.join(directory, f"trace-{os.getpid()}.jsonl"), "ab", buffering=0)

    def write(self, step: str, **fields) -> None:
        if self._file is not None:
            self._file.write(orjson.dumps({"t": time.time(), "pid": os.getpid(), "step": step, **fields},
                                          option=orjson.OPT_NON_STR_KEYS) + b"\n")


def from_environment() -> LoopTrace:
    """The trace ``RIVERFLINK_TRACE_LOOP`` asks for (off when unset)."""
    return LoopTrace(os.environ.get("RIVERFLINK_TRACE_LOOP"))


def slow_shard_from_environment() -> tuple[int, float] | None:
    """``(shard, seconds)`` from ``RIVERFLINK_SLOW_SHARD=SHARD:SECONDS``: that merger shard sleeps so long before
    each update it takes in (a slow shard, injected for a test of bounded staleness); ``None`` when unset.

    >>> import os
    >>> os.environ["RIVERFLINK_SLOW_SHARD"] = "1:0.05"
    >>> slow_shard_from_environment()
    (1, 0.05)
    >>> del os.environ["RIVERFLINK_SLOW_SHARD"]
    """
    value = os.environ.get("RIVERFLINK_SLOW_SHARD")
    if not value:
        return None
    shard, seconds = value.split(":", 1)
    return int(shard), float(seconds)
