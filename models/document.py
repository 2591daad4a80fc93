"""A model document as read off the ``models`` topic: the parsed JSON once, and its metadata typed.

Every reader of the topic (the replicas, the merger, the serving job,
``LiveModel``, ``riverflink tail`` / ``models`` / ``top`` / ``report`` and the
demo) parses a record with :func:`read_document` and reads its metadata from
:class:`ModelMeta`, never from loose dict lookups.  Reading is lenient and
never raises: a field of the wrong type reads as absent (``None``, ``{}`` or
0), because anyone can write to the topic.  Validation (allow-listed classes,
finite values, version window, signature) is
:func:`riverflink.operators.model_feed.accept`'s job.

>>> d = read_document(b'{"schema": "riverflink.model/1", "meta": {"name": "m", "version": 7, "acked": {"0": 3}}}')
>>> d.meta.name, d.meta.version, d.meta.acked, d.meta.held
('m', 7, {'0': 3}, None)
>>> read_document(b"not json") is None, read_document(b'{"schema": "other"}') is None
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from riverflink.models.wire import SCHEMA


def _int(v: Any) -> int | None:
    return v if type(v) is int else None


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _seq_lists(v: Any) -> dict[str, list[int]]:
    if not isinstance(v, dict):
        return {}
    return {str(k): [n for n in s if type(n) is int] for k, s in v.items() if isinstance(s, list)}


def _int_map(v: Any) -> dict[str, int]:
    return {str(k): n for k, n in v.items() if type(n) is int} if isinstance(v, dict) else {}


@dataclass(frozen=True)
class SliceInfo:
    """One shard's slice inside an assembled sharded model: its version and what it acknowledges."""

    shard: int
    version: int
    #: replica -> the last of its update pieces this slice holds
    acked: dict[str, int] = field(default_factory=dict)
    #: replica -> pieces this shard refused (their learning is sent again)
    refused_updates: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelMeta:
    """The ``meta`` of a model document (``docs/model-document.md``), typed.

    ``counts`` and ``acked`` are keyed by replica id (the replica key as text).
    """

    name: str | None = None
    version: int | None = None
    #: when the merger created it (seconds since the epoch)
    created_at: float | None = None
    #: events the model holds in all (exact: a sum over every merged update)
    events: int | None = None
    #: replica -> events it contributed to this version
    counts: dict[str, int] = field(default_factory=dict)
    #: replica -> the last of its update sequence numbers this version holds
    acked: dict[str, int] = field(default_factory=dict)
    #: merges so far, this one included
    sequence: int | None = None
    parent: int | None = None
    policy: str | None = None
    staleness: int = 0
    refused: int = 0
    #: why the quality gate holds this version back from serving (None: served)
    held: str | None = None
    #: the version serving keeps while this one is held
    served: int | None = None
    held_back: int = 0
    #: whether the quality gate ran for this version (then ``held`` is meaningful)
    gated: bool = False
    #: replica -> sequence numbers of its updates the merger refused (their learning is sent again)
    refused_updates: dict[str, list[int]] = field(default_factory=dict)
    #: a slice of a sharded model (``--shards``): which shard, of how many, in which epoch (0/1/0: not sharded)
    shard: int = 0
    shards: int = 1
    epoch: int = 0
    #: a slice published as a *patch*: the slice version it applies to (its entries are those the merge touched;
    #: :func:`riverflink.models.sharding.patched`); None: the whole slice
    patch_of: int | None = None
    #: a slice version too large for one record goes out as ``pages`` documents, this one page ``page`` of them
    #: (each a valid slice document holding a share of the per-feature entries and the whole dense part;
    #: :mod:`riverflink.models.paging`); 0 of 1: the whole version in this document
    page: int = 0
    pages: int = 1
    #: an assembled sharded model (built by a reader, operators.model_feed.ModelFeed, never read from a
    #: document): the slices it was assembled from, in shard order (empty for anything else)
    slices: tuple[SliceInfo, ...] = ()

    @classmethod
    def read(cls, meta: Any) -> "ModelMeta":
        """The typed metadata of a ``meta`` object; anything malformed reads as absent."""
        if not isinstance(meta, dict):
            return cls()
        name, held, policy = meta.get("name"), meta.get("held"), meta.get("policy")
        return cls(
            name=name if isinstance(name, str) else None,
            version=_int(meta.get("version")),
            created_at=_float(meta.get("created_at")),
            events=_int(meta.get("events")),
            counts=_int_map(meta.get("counts")),
            acked=_int_map(meta.get("acked")),
            sequence=_int(meta.get("sequence")),
            parent=_int(meta.get("parent")),
            policy=policy if isinstance(policy, str) else None,
            staleness=_int(meta.get("staleness")) or 0,
            refused=_int(meta.get("refused")) or 0,
            held=str(held)[:300] if held else None,
            served=_int(meta.get("served")),
            held_back=_int(meta.get("held_back")) or 0,
            gated="held" in meta,
            refused_updates=_seq_lists(meta.get("refused_updates")),
            shard=_int(meta.get("shard")) or 0,
            shards=max(1, _int(meta.get("shards")) or 1),
            epoch=_int(meta.get("epoch")) or 0,
            patch_of=_int(meta.get("patch_of")),
            page=_int(meta.get("page")) or 0,
            pages=max(1, _int(meta.get("pages")) or 1),
        )


@dataclass(frozen=True)
class ModelDocument:
    """One record of the ``models`` topic: its parsed JSON (``doc``), typed ``meta`` and size in bytes."""

    doc: dict
    meta: ModelMeta
    size: int

    @property
    def signed(self) -> bool:
        return "signature" in self.doc


def read_document(value: str | bytes) -> ModelDocument | None:
    """Parse a ``models`` record once; ``None`` for anything that is not a ``riverflink.model/1`` document."""
    try:
        doc = orjson.loads(value)
    except (ValueError, TypeError):
        return None
    return document_of(doc, len(value))


def document_of(doc: Any, size: int) -> ModelDocument | None:
    """A record's already parsed JSON as a document of ``size`` bytes; ``None`` unless a ``riverflink.model/1``."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("meta"), dict):
        return None
    return ModelDocument(doc, ModelMeta.read(doc["meta"]), size)


def of_dict(doc: dict) -> ModelDocument:
    """A document the merger has just built (a dict), with its typed metadata."""
    return ModelDocument(doc, ModelMeta.read(doc.get("meta")), 0)
