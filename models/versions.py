"""The model versions on a ``models`` topic, as views that count them see them (``top``, the jobs' status line).
Pure Python.

A model that is not sharded has one document per version.  A sharded one (``--shards M``) has M slice documents
(and patches of them) per version and one manifest naming them: the manifest is the version, and the slices are
not versions of their own.  :class:`VersionReader` turns each record into the :class:`ModelMeta` of a version, or
``None``; a manifest's ``events`` come from its shard 0 slice, once that slice has been read (the slices and the
manifest are on different keys, so on different partitions, in any order).

>>> from riverflink.models.manifest import Manifest, dumps, manifest_document
>>> reader = VersionReader()
>>> slice0 = dumps({"schema": "riverflink.model/1", "meta": {"name": "m", "version": 5, "events": 300, "shard": 0,
...                                                          "shards": 2, "epoch": 1}, "model": {}})
>>> reader.read(slice0) is None  # a slice is no version of its own
True
>>> meta = reader.read(dumps(manifest_document(Manifest("m", 9, 1, (5, 4)), created_at=2.0)))
>>> meta.name, meta.version, meta.events, meta.created_at
('m', 9, 300, 2.0)
"""

from __future__ import annotations

import orjson

from riverflink.models.document import ModelMeta, document_of
from riverflink.models.manifest import manifest_of

#: slice event counts remembered, at most (the newest are the ones manifests name)
SLICES_KEPT = 4096


class VersionReader:
    """Reads ``models`` records into versions (see the module); remembers the event counts of shard 0's slices."""

    def __init__(self) -> None:
        #: (model, epoch, slice version) -> events, for shard 0's slices
        self.slice_events: dict[tuple[str, int, int], int | None] = {}

    def read(self, value: bytes) -> ModelMeta | None:
        try:
            doc = orjson.loads(value)
        except (ValueError, TypeError):
            return None
        manifest = manifest_of(doc)
        if manifest is not None:
            created = doc["meta"].get("created_at")
            events = self.slice_events.get((manifest.name, manifest.epoch, manifest.slices[0]))
            return ModelMeta(name=manifest.name, version=manifest.version, events=events,
                             created_at=float(created) if isinstance(created, (int, float)) else None)
        document = document_of(doc, len(value))
        if document is None:
            return None
        meta = document.meta
        if meta.shards > 1:
            if meta.shard == 0 and meta.name is not None and meta.version is not None:
                self.slice_events[(meta.name, meta.epoch, meta.version)] = meta.events
                if len(self.slice_events) > SLICES_KEPT:
                    del self.slice_events[next(iter(self.slice_events))]
            return None
        return meta
