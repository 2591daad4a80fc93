"""The messages of the replica -> merger loop: one replica id type, a typed update, and its bytes.  Pure Python.

Inside the training job an update travels as **bytes** (:func:`encode_update`,
the binary codec of :mod:`riverflink.models.update_codec` with the message
fields in its header); everywhere else it is a decoded :class:`ReplicaUpdate`
whose ``delta`` is a parameter-delta tree.  Merged models travel back as
model documents (:mod:`riverflink.models.document`).

>>> from river import linear_model
>>> m = linear_model.LinearRegression()
>>> m.learn_one({"a": 1.0}, 2.0)
>>> from riverflink import models
>>> u = ReplicaUpdate("m", replica_id(3), 0, models.delta(m), events=1, sent_at=0.0, seq=1)
>>> back = decode_update(encode_update(m, u, "float64"))
>>> back == u, back.replica
(True, '3')
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from riverflink.models.update_codec import decode_with_meta, encode

#: A replica's id: its key (``crc32(event key) mod K``) as text, as in ``meta.counts`` and ``meta.acked``.
ReplicaId = str


def replica_id(key: Any) -> ReplicaId:
    """The id of the replica behind a Flink key (an int) or any other key."""
    return str(key)


@dataclass(frozen=True)
class ReplicaUpdate:
    """What a replica learned since its last sync, as the merger receives it (decoded)."""

    model_name: str
    replica: ReplicaId
    #: the merged version the replica was rebased on when it learned this
    base_version: int
    #: parameters now minus parameters at the last sync (a parameter-delta tree of the model's family)
    delta: dict
    events: int
    sent_at: float
    #: per-replica sequence number (the merger acknowledges it in ``meta.acked``)
    seq: int = 0
    #: progressive loss of the replica over these events (error rate or MAE); None if unknown
    loss: float | None = None
    #: estimated fraction of a shared error that survives this many events of learning (ContractionProbe)
    rho: float | None = None
    #: estimated fraction of the update's learned step that is on errors shared with other replicas
    shared: float | None = None
    #: delay compensation: the fraction of a parameter offset these events' learning would have undone
    kappa: float | None = None


_FIELDS = {"model_name": str, "replica": str, "base_version": int, "events": int, "sent_at": float, "seq": int,
           "loss": float, "rho": float, "shared": float, "kappa": float}


def encode_update(template: Any, update: ReplicaUpdate, precision: str = "float16") -> bytes:
    """The bytes an update travels as inside the job (learned leaves at ``precision``)."""
    meta = {k: v for k, v in asdict(update).items() if k != "delta"}
    return encode(template, update.delta, precision, meta=meta)


def decode_update(data: bytes) -> ReplicaUpdate:
    """The update :func:`encode_update` wrote; ``ValueError`` for anything else."""
    delta, meta = decode_with_meta(data)
    if meta is None:
        raise ValueError("update without its message fields")
    fields: dict = {}
    for name, kind in _FIELDS.items():
        v = meta.get(name)
        if v is None and kind is float and name != "sent_at":
            fields[name] = None
            continue
        ok = isinstance(v, kind) if kind is not float else isinstance(v, (int, float)) and math.isfinite(v)
        if not ok or isinstance(v, bool):
            raise ValueError(f"update field {name!r} is not a {kind.__name__}: {str(v)[:40]!r}")
        fields[name] = float(v) if kind is float else v
    return ReplicaUpdate(delta=delta, **fields)
