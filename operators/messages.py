"""The messages of the replica -> merger loop: one replica id type, a typed update, and its bytes.  Pure Python.

Inside the training job an update travels as **bytes** (:func:`encode_update`:
its fields packed in 74 bytes plus its names and any :class:`Directions`, then its delta through the
binary codec of :mod:`riverflink.models.update_codec`); everywhere else it is a decoded :class:`ReplicaUpdate`
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
import struct
from dataclasses import dataclass
from typing import Any

import orjson

from riverflink.models.update_codec import decode, encode

#: A replica's id: its key (``crc32(event key) mod K``) as text, as in ``meta.counts`` and ``meta.acked``.
ReplicaId = str


def replica_id(key: Any) -> ReplicaId:
    """The id of the replica behind a Flink key (an int) or any other key."""
    return str(key)


#: the most features a :class:`Directions` covers (its matrix travels as n (n + 1) / 2 float16 values)
DIRECTIONS_MAX = 64


@dataclass(frozen=True)
class Directions:
    """Delay compensation per direction of the inputs (softmax updates; :mod:`~riverflink.operators.delay_compensation`):
    the symmetric matrix ``C = I - (I - lr h M)^S`` over ``features`` (``M`` the second moment of the
    standardised inputs, ``h`` the mean loss curvature, ``S`` the update's events).  The merger subtracts ``C O``
    from a stale update's weights, ``O`` how far the merged weights moved meanwhile, each class's row alone.

    ``upper``: C's upper triangle, row by row.  On the wire: the feature count, the features as JSON, then the
    triangle as float16 (C's entries lie in [-1, 1]).

    >>> d = Directions(("a", 7), (0.5, -0.25, 0.125))
    >>> d.matrix().tolist()
    [[0.5, -0.25], [-0.25, 0.125]]
    >>> Directions.decode(d.encode()) == d
    True
    """

    features: tuple
    upper: tuple

    def matrix(self) -> Any:
        import numpy as np

        n = len(self.features)
        out = np.zeros((n, n))
        out[np.triu_indices(n)] = self.upper
        return out + np.triu(out, 1).T

    @classmethod
    def of_matrix(cls, features: list, C: Any) -> "Directions":
        import numpy as np

        return cls(tuple(features), tuple(float(v) for v in np.asarray(C)[np.triu_indices(len(features))]))

    def encode(self) -> bytes:
        names = orjson.dumps(list(self.features))
        return (struct.pack("<HI", len(self.features), len(names)) + names
                + struct.pack(f"<{len(self.upper)}e", *self.upper))

    @classmethod
    def decode(cls, data: bytes) -> "Directions":
        """``ValueError`` for anything :meth:`encode` could not have written (sizes, feature names, values)."""
        try:
            n, n_names = struct.unpack_from("<HI", data)
            features = orjson.loads(data[6 : 6 + n_names])
            upper = struct.unpack_from(f"<{n * (n + 1) // 2}e", data, 6 + n_names)
        except (struct.error, orjson.JSONDecodeError) as e:
            raise ValueError(f"malformed directions: {e}") from None
        if not 0 < n <= DIRECTIONS_MAX or not isinstance(features, list) or len(features) != n \
                or len(data) != 6 + n_names + 2 * len(upper):
            raise ValueError("malformed directions: sizes")
        if len(set(features)) != n or not all(isinstance(f, (str, int)) and not isinstance(f, bool) for f in features):
            raise ValueError("malformed directions: feature names")
        if not all(-1.001 <= v <= 1.001 for v in upper):  # (NaN fails too)
            raise ValueError("malformed directions: an entry outside [-1, 1]")
        return cls(tuple(features), upper)


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
    #: the merger shard this piece of the update is for (``--shards``; 0 when the model is not sharded):
    #: its delta holds that shard's parameters only, and ``base_version`` is that shard's slice version
    shard: int = 0
    #: delay compensation per input direction (softmax), applied with ``kappa`` for the features it leaves out
    directions: Directions | None = None


#: the fixed fields of an encoded update, before its names and its delta: base_version, events, seq, sent_at,
#: loss, rho, shared, kappa (NaN for None), the UTF-8 lengths of model_name and replica, the length of the
#: encoded directions (0: none), the shard (last: :func:`update_shard` reads it alone)
_HEAD = struct.Struct("<qqqdddddHHIH")


def _opt(v: float | None) -> float:
    return math.nan if v is None else float(v)


def _back(v: float) -> float | None:
    return None if math.isnan(v) else v


def encode_update(template: Any, update: ReplicaUpdate, precision: str = "float16") -> bytes:
    """The bytes an update travels as inside the job: its fields packed, then its delta through the binary codec
    (learned leaves at ``precision``)."""
    name, replica = update.model_name.encode(), update.replica.encode()
    directions = update.directions.encode() if update.directions is not None else b""
    head = _HEAD.pack(update.base_version, update.events, update.seq, update.sent_at, _opt(update.loss),
                      _opt(update.rho), _opt(update.shared), _opt(update.kappa), len(name), len(replica),
                      len(directions), update.shard)
    return b"".join([head, name, replica, directions, encode(template, update.delta, precision)])


class UndecodableUpdate(ValueError):
    """An update whose fields decoded but whose delta did not: the merger can still tell its replica."""

    def __init__(self, message: str, replica: ReplicaId, seq: int):
        super().__init__(message)
        self.replica, self.seq = replica, seq


def _head(data: bytes, what: str) -> tuple:
    """An encoded message's fixed fields, model name and replica id, and where the rest begins; ``ValueError``
    (naming ``what``) when they do not decode."""
    try:
        head = _HEAD.unpack_from(data)
        n_name, n_replica, at = head[8], head[9], _HEAD.size
        name = data[at : at + n_name].decode()
        replica = data[at + n_name : at + n_name + n_replica].decode()
    except (struct.error, UnicodeDecodeError) as e:
        raise ValueError(f"malformed {what}: {e}") from None
    return head, name, replica, at + n_name + n_replica


def decode_update(data: bytes) -> ReplicaUpdate:
    """The update :func:`encode_update` wrote; ``ValueError`` for anything else (:class:`UndecodableUpdate` when
    only its delta is broken)."""
    (base, events, seq, sent_at, loss, rho, shared, kappa, _, _, n_dirs, shard), name, replica, at = \
        _head(data, "update")
    try:
        directions = Directions.decode(data[at : at + n_dirs]) if n_dirs else None
    except ValueError as e:
        raise UndecodableUpdate(str(e), replica, seq) from None
    try:
        delta = decode(data[at + n_dirs :])
    except ValueError as e:
        raise UndecodableUpdate(str(e), replica, seq) from None
    if math.isnan(sent_at) or not all(math.isnan(v) or math.isfinite(v) for v in (loss, rho, shared, kappa)):
        raise ValueError("update fields are not finite")
    return ReplicaUpdate(name, replica, base, delta, events, sent_at, seq, _back(loss), _back(rho), _back(shared),
                         _back(kappa), shard, directions)


#: the most features one pull request asks for (more go out as several requests)
PULL_MAX_FEATURES = 4096
#: a pull request's head: an update head whose base version is this (an update's is a version, >= 0)
_PULL = -1


@dataclass(frozen=True)
class PullRequest:
    """A replica's request for the merged entries of ``features``, all owned by ``shard``
    (:mod:`~riverflink.operators.pulls`).

    >>> r = PullRequest("m", "3", shard=1, pull=7, features=("a", 5), sent_at=1.0)
    >>> decode_pull(encode_pull(r)) == r, is_pull(encode_pull(r)), update_shard(encode_pull(r))
    (True, True, 1)
    """

    model_name: str
    replica: ReplicaId
    shard: int
    #: the replica's number for this request (the answer names it)
    pull: int
    features: tuple
    sent_at: float


def encode_pull(request: PullRequest) -> bytes:
    """A request's bytes on the updates edge: an update head (so that :func:`update_shard` routes it) marked as a
    pull, then the features as JSON."""
    name, replica = request.model_name.encode(), request.replica.encode()
    head = _HEAD.pack(_PULL, 0, request.pull, request.sent_at, math.nan, math.nan, math.nan, math.nan, len(name),
                      len(replica), 0, request.shard)
    return b"".join([head, name, replica, orjson.dumps(list(request.features))])


def is_pull(data: bytes) -> bool:
    """Whether bytes on the updates edge are a pull request (else an update)."""
    return len(data) >= _HEAD.size and struct.unpack_from("<q", data)[0] == _PULL


def decode_pull(data: bytes) -> PullRequest:
    """The request :func:`encode_pull` wrote; ``ValueError`` for anything else."""
    (kind, _, pull, sent_at, *_, shard), name, replica, at = _head(data, "pull request")
    try:
        features = orjson.loads(data[at:])
    except orjson.JSONDecodeError as e:
        raise ValueError(f"malformed pull request: {e}") from None
    if kind != _PULL or not isinstance(features, list) or len(features) > PULL_MAX_FEATURES:
        raise ValueError("malformed pull request")
    return PullRequest(name, replica, shard, pull, tuple(features), sent_at)


def update_shard(data: bytes) -> int:
    """The shard an encoded update is for, from its fixed fields alone (the job routes updates by it); 0 for
    bytes too short to say (the merger then refuses them).

    >>> from river import linear_model
    >>> u = ReplicaUpdate("m", "1", 0, {}, events=1, sent_at=0.0, shard=3)
    >>> update_shard(encode_update(linear_model.LinearRegression(), u)), update_shard(b"junk")
    (3, 0)
    """
    if len(data) < _HEAD.size:
        return 0
    return int.from_bytes(data[_HEAD.size - 2 : _HEAD.size], "little")
