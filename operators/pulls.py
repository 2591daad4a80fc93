"""Pulls: a replica with a working set asks a feature's owner shard for its merged entries.  Pure Python.

As Flink Parameter Server's ``WorkerLogic`` pulls and ``onPullRecv`` answers, over the loop that exists:

1. **Request** (:class:`~riverflink.operators.messages.PullRequest`): a replica's features of one shard travel on
   the training job's internal updates edge, as bytes that :func:`~riverflink.operators.messages.update_shard`
   routes like an update piece (``messages.encode_pull``; their head says "pull": ``messages.is_pull``).
2. **Answer** (:func:`answer`): the merger shard answers from its merged parameters (the slice it last
   published): a slice document of the ``riverflink.model/1`` wire holding only those features' entries, its
   ``meta.pull`` naming the replica and the request, ``meta.acked`` the replica's last update the entries hold.
   The job signs it like every document and writes it to the ``pulls`` topic under the replica's key.
3. **Reading it** (:func:`read_answer`): the answer comes back through the replicas' own keyed input as a
   record whose partition is :data:`PULL_PARTITION` (no Kafka record has a negative partition, so no event can
   pose as one) and is validated like every document: size, schema, allow-listed classes (``from_wire``), model
   name, shard count, the replica it is for and, when the job verifies, its signature.

>>> from riverflink.models.spec import build
>>> from riverflink.operators.merge_state import MergerState
>>> from riverflink.operators.messages import decode_pull, encode_pull, is_pull
>>> template = build("LinearRegression")
>>> merger = MergerState("m", template, params={"weights": {"a": 0.5, "b": 1.0}, "intercept": 0.1})
>>> request = PullRequest("m", "3", shard=0, pull=7, features=("a", "z"), sent_at=1.0)
>>> decode_pull(encode_pull(request)) == request, is_pull(encode_pull(request))
(True, True)
>>> text = models.dumps(answer(merger, template, request))
>>> got = read_answer(text, "m", "3", shards=1)
>>> got.pull, got.shard, got.entries["weights"]
(7, 0, {'a': 0.5})
>>> read_answer(text, "m", "4", shards=1)
'a pull answer for replica 3, not 4'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from riverflink import models
from riverflink.models import numeric
from riverflink.models.document import read_document
from riverflink.models.signing import Verifier, verify
from riverflink.operators.messages import PullRequest, ReplicaId

#: the partition of a pull answer's record frame on the replicas' input (Kafka partitions are never negative)
PULL_PARTITION = -2
#: the largest pull answer a replica reads
PULL_MAX_BYTES = 2_000_000


def answer(merger: Any, template: Any, request: PullRequest) -> dict:
    """The merger shard's answer to ``request`` (a :class:`~riverflink.operators.merge_state.MergerState`): a
    slice document holding its merged entries of the requested features (the dense part whole; a feature it
    has never merged has none), unsigned."""
    params = numeric.restrict(merger.params, request.features)
    sharded = {"shard": merger.shard, "shards": merger.shards, "epoch": merger.epoch} if merger.shards > 1 else {}
    return models.to_wire(models.set_params(template.clone(), params, trusted=True), name=merger.name,
                          version=merger.version, acked={request.replica: merger.acked.get(request.replica, 0)},
                          pull={"replica": request.replica, "id": request.pull}, **sharded)


@dataclass(frozen=True)
class PullAnswer:
    """A validated answer: the request it answers, the shard's slice version, the replica's last update its
    entries hold, and its parameter tree (restricted to the requested features when applied)."""

    pull: int
    shard: int
    version: int
    acked: int
    entries: dict


def read_answer(value: str | bytes, model_name: str, replica: ReplicaId, shards: int,
                verifier: Verifier | None = None) -> PullAnswer | str:
    """The :class:`PullAnswer` in a ``pulls`` record for ``replica``, or why it is refused (a string)."""
    if len(value) > PULL_MAX_BYTES:
        return f"a pull answer of {len(value)} bytes exceeds {PULL_MAX_BYTES}"
    document = read_document(value)
    if document is None:
        return "not a riverflink.model/1 document"
    meta, tag = document.meta, document.doc["meta"].get("pull")
    if meta.name != model_name:
        return f"a pull answer for model {str(meta.name)[:80]!r}, not {model_name!r}"
    if not isinstance(tag, dict) or not isinstance(tag.get("id"), int) or isinstance(tag.get("id"), bool):
        return "a document without a pull request's id"
    if tag.get("replica") != replica:
        return f"a pull answer for replica {str(tag.get('replica'))[:40]}, not {replica}"
    if meta.shards != shards or not 0 <= meta.shard < shards or meta.version is None or meta.version < 0:
        return "a pull answer of another shard count, or without a version"
    if verifier is not None:
        bad = verify(document.doc, verifier)
        if bad:
            return f"pull answer refused: {bad}"
    try:
        model = models.from_wire(document.doc)
    except Exception as e:  # noqa: BLE001 - any invalid document is refused, whatever it breaks
        return f"pull answer refused: {type(e).__name__}: {str(e)[:200]}"
    return PullAnswer(tag["id"], meta.shard, meta.version, meta.acked.get(replica, 0), models.get_params(model))
