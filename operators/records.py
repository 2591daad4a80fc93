"""The JSON prediction records the jobs write to the ``predictions`` topic, and how a reader of the ``metrics``
topic tells a batch record from its at-least-once copy."""

from __future__ import annotations

import orjson
import time
from typing import Any


def prediction_record(
    *,
    source: str,
    request_id: Any,
    y_pred: Any,
    proba: dict | None,
    model_version: int | None,
    model_created_at: float | None,
    status: str = "ok",
    **extra: Any,
) -> str:
    """One line on the ``predictions`` topic.

    ``source`` is ``training`` (progressive validation inside a replica) or
    ``serving``; ``model_age_ms`` is the time since the merger created the
    model that answered; ``status`` is ``ok``, ``no_model_yet`` or
    ``bad_request``.
    """
    now = time.time()
    if hasattr(y_pred, "item"):  # a NumPy scalar from a *_many prediction
        y_pred = y_pred.item()
    rec = {
        "source": source,
        "id": request_id,
        "status": status,
        "prediction": y_pred,
        "proba": None if proba is None else [[k, float(v)] for k, v in proba.items()],
        "model_version": model_version,
        "model_age_ms": None if model_created_at is None else round(1000 * (now - model_created_at), 1),
        "ts": now,
        **extra,
    }
    return orjson.dumps(rec, default=str, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode()


def batch_key(m: dict) -> tuple:
    """What identifies one replica batch's ``metrics`` record: its replica and the offsets it learned (its
    timestamp where a job without riverflink's jar records no offsets).  The metrics sink is at-least-once, so a
    reader counts a key once: a producer retry or a replayed batch writes the same record again.

    >>> m = {"replica": "3", "offsets": {"1": [10, 19], "0": [4, 6]}, "ts": 5.0, "events": 13}
    >>> batch_key(m) == batch_key({**m, "ts": 9.0}), batch_key(m) == batch_key({**m, "replica": "2"})
    (True, False)
    """
    offsets = tuple(sorted((p, tuple(r)) for p, r in (m.get("offsets") or {}).items()))
    return (m.get("replica"), offsets or m.get("ts"))


class SeenBatches:
    """The :func:`batch_key` of the last ``keep`` batch records counted, so that a copy counts once: a copy comes
    soon after its original (a producer retry, a replay from the last checkpoint), and a view that runs for days
    holds a bounded set.

    >>> seen = SeenBatches(keep=2)
    >>> [seen.first({"replica": r, "ts": 1.0}) for r in ("a", "b", "a", "c", "a")]
    [True, True, False, True, True]
    """

    def __init__(self, keep: int = 1 << 16):
        self.keep, self.keys = keep, {}

    def first(self, m: dict) -> bool:
        """True the first time ``m``'s batch is seen (among the last ``keep``)."""
        key = batch_key(m)
        if key in self.keys:
            return False
        self.keys[key] = None
        if len(self.keys) > self.keep:
            del self.keys[next(iter(self.keys))]
        return True
