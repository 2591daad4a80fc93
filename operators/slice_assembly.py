"""Consistent versions of a sharded model: manifests, and the reader that assembles only complete sets.  Pure Python.

With ``--shards M`` each merger shard publishes its slice of the model
(:mod:`riverflink.models.sharding`) with its own slice version.  A *manifest*
names the slice versions that make up one model version.  A reader (a replica,
the serving job, ``LiveModel``, ``riverflink models``) switches to a model
version only when it holds every slice its manifest names, exactly those
versions: never a mix of slices from different manifests, epochs or shard
counts.  A manifest older than the one a reader stands on is ignored; one
whose slices have not all arrived waits (the newest such one only).

Changing M starts a new *epoch*: slices and manifests carry theirs, and a
reader drops every slice of an older epoch as soon as it adopts a manifest of
the new one.

>>> a = SliceAssembler("clicks")
>>> a.on_slice(SliceMeta("clicks", epoch=1, shards=2, shard=0, version=5), {"w": 0})
>>> a.on_manifest(Manifest("clicks", version=100, epoch=1, slices=(5, 7)))  # slice 1 v7 not here yet
>>> a.on_slice(SliceMeta("clicks", epoch=1, shards=2, shard=1, version=6), {"w": 1})  # not the one named
>>> a.on_slice(SliceMeta("clicks", epoch=1, shards=2, shard=1, version=7), {"w": 2})
Assembled(manifest=Manifest(name='clicks', version=100, epoch=1, slices=(5, 7)), slices=({'w': 0}, {'w': 2}))
>>> a.on_manifest(Manifest("clicks", version=99, epoch=1, slices=(5, 6))) is None  # older than the current one
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from riverflink.models import manifest as manifest_doc
from riverflink.models.manifest import Manifest, SliceMeta

#: how long a slice may wait for the manifest that names it (the publisher's processing-time timer)
FLUSH_AFTER_MS = 100
#: slice versions a reader keeps per shard while it waits for the manifest that names them
KEEP_PER_SHARD = 8


@dataclass(frozen=True)
class Assembled:
    """A complete, consistent set: the manifest and the slices it names (slice 0 first)."""

    manifest: Manifest
    slices: tuple[Any, ...]


@dataclass
class SliceAssembler:
    """The reader side (see the module): feed it slices and manifests in any order; it answers a complete set
    when one becomes newly available, else ``None``."""

    name: str
    #: the manifest of the set last assembled
    current: Manifest | None = None
    #: the newest manifest still waiting for some of its slices
    pending: Manifest | None = None
    #: (epoch, shard) -> {slice version: slice}, the last KEEP_PER_SHARD versions
    held: dict = field(default_factory=dict)
    #: slices and manifests ignored: other models, older epochs, older versions (counted, for the metrics)
    ignored: int = 0
    #: a shard's reader (scatter/gather serving): only this shard's slices are held and needed; the others are
    #: ``None`` in an assembled set
    only: int | None = None

    def on_slice(self, meta: SliceMeta, slice_: Any) -> Assembled | None:
        if meta.name != self.name or not 0 <= meta.shard < meta.shards or (
                self.current is not None and meta.epoch < self.current.epoch) or (
                self.only is not None and meta.shard != self.only):
            self.ignored += 1
            return None
        versions = self.held.setdefault((meta.epoch, meta.shard), {})
        versions[meta.version] = slice_
        for old in sorted(versions)[:-KEEP_PER_SHARD]:
            del versions[old]
        return self._try(self.pending) if self.pending is not None else None

    def on_manifest(self, manifest: Manifest) -> Assembled | None:
        if manifest.name != self.name or not manifest.slices or not self._newer(manifest):
            self.ignored += 1
            return None
        if self.pending is None or manifest.version > self.pending.version:
            self.pending = manifest
        return self._try(self.pending)

    def _newer(self, manifest: Manifest) -> bool:
        return self.current is None or (manifest.epoch, manifest.version) > (self.current.epoch, self.current.version)

    def _try(self, manifest: Manifest) -> Assembled | None:
        parts = []
        for shard, version in enumerate(manifest.slices):
            if self.only is not None and shard != self.only:
                parts.append(None)
                continue
            slice_ = self.held.get((manifest.epoch, shard), {}).get(version)
            if slice_ is None:
                return None
            parts.append(slice_)
        self.current, self.pending = manifest, None
        for epoch, shard in [k for k in self.held if k[0] < manifest.epoch or k[1] >= manifest.shards]:
            del self.held[(epoch, shard)]
        return Assembled(manifest, tuple(parts))


@dataclass
class ManifestWriter:
    """The writer side: remembers each shard's newest published slice version and names them in a manifest.

    The first manifest comes once every shard of the epoch has published a slice.  After it, a manifest comes
    once every shard has published a newer slice (each replica update reaches every shard, so that is once per
    update merged everywhere), or once ``shards`` new slices have come since the last manifest (a shard that
    stopped publishing holds nobody back).  A manifest per slice would make every reader assemble and adopt the
    model M times per update.  Slices that wait are named by :meth:`flush`, which the publisher calls from a
    processing-time timer (:data:`FLUSH_AFTER_MS`), so the last slices of a stream are named too.  ``on_slice``
    and ``flush`` return the manifest to publish, or ``None``.

    >>> w = ManifestWriter("clicks", epoch=1, shards=2)
    >>> w.on_slice(0, 5, version=100) is None  # shard 1 has published nothing yet
    True
    >>> w.on_slice(1, 7, version=101)
    Manifest(name='clicks', version=101, epoch=1, slices=(5, 7))
    >>> w.on_slice(1, 6, version=102) is None  # an older slice than the one named
    True
    >>> w.on_slice(1, 8, version=103) is None, w.waiting  # shard 0 has nothing newer yet
    (True, True)
    >>> w.on_slice(0, 9, version=104)
    Manifest(name='clicks', version=104, epoch=1, slices=(9, 8))
    >>> w.on_slice(1, 10, version=105) is None, w.on_slice(1, 11, version=106)  # shard 0 went quiet
    (True, Manifest(name='clicks', version=106, epoch=1, slices=(9, 11)))
    >>> w.on_slice(1, 12, version=107) is None, w.flush(version=108), w.flush(version=109)  # the timer names it
    (True, Manifest(name='clicks', version=108, epoch=1, slices=(9, 12)), None)
    """

    name: str
    epoch: int
    shards: int
    latest: dict = field(default_factory=dict)
    version: int = 0
    #: shards with a slice newer than the last manifest names, and new slices since it (immutable defaults: a
    #: writer saved before these fields existed restores with them)
    fresh: frozenset = frozenset()
    since: int = 0

    @property
    def waiting(self) -> bool:
        """Whether a slice newer than the last manifest names waits to be named."""
        return bool(self.fresh) and len(self.latest) == self.shards

    def on_slice(self, shard: int, slice_version: int, version: int) -> Manifest | None:
        """Shard ``shard`` published ``slice_version``; ``version`` is the manifest version to use (monotonic)."""
        if not 0 <= shard < self.shards or slice_version <= self.latest.get(shard, -1):
            return None
        self.latest[shard] = slice_version
        self.fresh, self.since = self.fresh | {shard}, self.since + 1
        if len(self.latest) < self.shards or (self.version and len(self.fresh) < self.shards
                                              and self.since < self.shards):
            return None
        return self.flush(version)

    def flush(self, version: int) -> Manifest | None:
        """The manifest naming the slices that wait, or ``None`` when nothing waits."""
        if not self.waiting:
            return None
        self.fresh, self.since = frozenset(), 0
        self.version = max(version, self.version + 1)
        return Manifest(self.name, self.version, self.epoch, tuple(self.latest[s] for s in range(self.shards)))

    def record_for(self, doc: dict, created_at: float) -> bytes | None:
        """A published slice document ``doc`` seen by :meth:`on_slice` (its version as the manifest version): the
        manifest record to publish after it, or ``None``."""
        meta = doc["meta"]
        return _record(self.on_slice(meta["shard"], meta["version"], version=meta["version"]), created_at)

    def flush_record(self, created_at: float) -> bytes | None:
        """The manifest record naming the slices that wait (the publisher's timer, in a simulation), or ``None``."""
        return _record(self.flush(version=self.version + 1), created_at)


def _record(manifest: Manifest | None, created_at: float) -> bytes | None:
    """The (unsigned) record of ``manifest``, or ``None``."""
    return None if manifest is None else manifest_doc.dumps(manifest_doc.manifest_document(manifest, created_at))
