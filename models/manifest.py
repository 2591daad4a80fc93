"""The manifest document (``riverflink.manifest/1``): one version of a sharded model, naming its slices.

With ``--shards M`` the merger shards publish *slices* (ordinary
``riverflink.model/1`` documents holding one shard's parameters, with
``meta.shard``, ``meta.shards`` and ``meta.epoch``) on the ``models`` topic,
each under the Kafka key ``<model>#<shard>``, and a manifest under the key
``<model>`` names the slice version of each shard that make up one model
version.  Readers assemble a model only from exactly the slices a manifest
names (:mod:`riverflink.operators.slice_assembly`).

A manifest is small and plain::

    {"schema": "riverflink.manifest/1",
     "meta": {"name": "clicks", "version": 1767225600123, "epoch": 1767225500000,
              "slices": [1767225600101, 1767225600098], "created_at": 1767225600.123},
     "signature": {...}}

It is signed like a model document (:mod:`riverflink.models.signing`) when the
merger signs.  Reading is lenient (anything malformed reads as ``None``);
validation against a reader's rules is :class:`riverflink.operators.model_feed.ModelFeed`'s.

>>> doc = manifest_document(Manifest("clicks", version=9, epoch=1, slices=(5, 7)), created_at=1.5)
>>> read_manifest(dumps(doc))
Manifest(name='clicks', version=9, epoch=1, slices=(5, 7))
>>> read_manifest(b'{"schema": "riverflink.manifest/1", "meta": {"name": "x", "version": 1, "slices": [1]}}') is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

SCHEMA = "riverflink.manifest/1"
#: how every manifest this package writes begins (a cheap test before parsing; others are parsed)
PREFIX = '{"schema":"' + SCHEMA + '"'
#: a manifest names at least two slices (one shard is an ordinary model document) and at most this many
MAX_SHARDS = 1024


@dataclass(frozen=True)
class SliceMeta:
    """What a slice document says of itself (its ``meta``)."""

    name: str
    epoch: int
    shards: int
    shard: int
    version: int


@dataclass(frozen=True)
class Manifest:
    """One model version of a sharded model: the slice version of each shard, in shard order."""

    name: str
    version: int
    epoch: int
    slices: tuple[int, ...]

    @property
    def shards(self) -> int:
        return len(self.slices)


def shard_key(name: str, shard: int) -> str:
    """The Kafka record key of a shard's slices on ``models`` (a compacted topic keeps each shard's newest).

    >>> shard_key("clicks", 3)
    'clicks#3'
    """
    return f"{name}#{shard}"


def manifest_document(manifest: Manifest, created_at: float, **extra_meta: Any) -> dict:
    """The JSON document of ``manifest`` (not yet signed)."""
    return {"schema": SCHEMA, "meta": {"name": manifest.name, "version": manifest.version, "epoch": manifest.epoch,
                                       "slices": list(manifest.slices), "created_at": created_at, **extra_meta}}


def dumps(doc: dict) -> bytes:
    return orjson.dumps(doc)


def is_manifest(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("schema") == SCHEMA


def manifest_of(doc: Any) -> Manifest | None:
    """The :class:`Manifest` a parsed document describes, or ``None`` if it is not a well-formed manifest."""
    if not is_manifest(doc) or not isinstance(doc.get("meta"), dict):
        return None
    meta = doc["meta"]
    name, version, epoch, slices = meta.get("name"), meta.get("version"), meta.get("epoch", 0), meta.get("slices")
    if not isinstance(name, str) or type(version) is not int or type(epoch) is not int or epoch < 0:
        return None
    if not isinstance(slices, list) or not 2 <= len(slices) <= MAX_SHARDS:
        return None
    if not all(type(v) is int and v > 0 for v in slices):
        return None
    return Manifest(name, version, epoch, tuple(slices))


def read_manifest(value: str | bytes) -> Manifest | None:
    """Parse a ``models`` record; its :class:`Manifest`, or ``None`` for anything else."""
    try:
        doc = orjson.loads(value)
    except (ValueError, TypeError):
        return None
    return manifest_of(doc)
