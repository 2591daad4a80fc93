"""A reader's recent versions of one shard's slice: the newest patched in place, older ones kept as undo records.

A sharded model's readers (:class:`~riverflink.operators.model_feed.ModelFeed`)
hold a few recent versions of each slice, because a manifest may name a
slice version older than the newest one read (slices and manifests come on
different partitions).  Holding each version as its own model cost a copy of
the slice per patch and up to eight slices per shard in memory.  Here a patch
on the newest version is written into that version's model in place (a
:class:`Chain` moves forward), and an *undo record* keeps the entries it
overwrote; an older version is rebuilt from the chain's model and the records
since it only when something asks for it (:meth:`SliceRef.model`).  A patch on
any other version, a family that cannot be written in place, and a whole slice
start a new chain.  Pure Python.

Guaranteed: :meth:`SliceRef.model` gives the same parameters as applying the
patches to copies (``sharding.patched``), for every version still held
(``tests/test_sharded_feed.py``), and a model it gives is never written again
unless it is the chain's newest (a rebuilt older version is a new object).

>>> from riverflink.models.spec import build
>>> def lr(w, b=0.0):
...     return models.set_params(build("LogisticRegression"), {"weights": w, "intercept": b})
>>> first = SliceRef.whole(5, lr({"a": 1.0, "b": 1.0}))
>>> second = first.patched(6, lr({"b": 2.0, "c": 3.0}, 0.5))
>>> second.model()._weights.to_dict(), second.model().intercept
({'a': 1.0, 'b': 2.0, 'c': 3.0}, 0.5)
>>> first.model()._weights.to_dict(), first.model().intercept  # rebuilt from the undo record
({'a': 1.0, 'b': 1.0}, 0.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from riverflink import models
from riverflink.models import numeric, sharding

#: undo records a chain keeps: the versions a reader holds per shard (``slice_assembly.KEEP_PER_SHARD``) and more
KEEP_RECORDS = 16


@dataclass
class Chain:
    """A slice model written in place at each patch (it is version ``head``), and undo records: version ->
    (the version it patched, the features the patch changed, that version's entries at them and dense part)."""

    model: Any
    head: int
    undo: dict = field(default_factory=dict)

    def rebuilt(self, version: int) -> Any | None:
        """A new model of ``version`` (an earlier version of this chain); ``None`` when its records are gone."""
        newer = sorted((v for v in self.undo if v > version), reverse=True)
        if not newer or self.undo[newer[-1]][0] != version:
            return None
        model = self.model.clone()  # (hyper-parameters; set_params writes every learned leaf)
        models.set_params(model, models.get_params(self.model), trusted=True)  # (get_params: a fresh tree)
        adapter = models.adapter_for(model)
        for v in newer:  # newest first: the record right after ``version`` writes last
            _, keys, before = self.undo[v]
            adapter.set_at(model, before, keys)
        return model


@dataclass(frozen=True)
class SliceRef:
    """One held slice version: its chain, and which version of it."""

    chain: Chain
    version: int

    @classmethod
    def whole(cls, version: int, model: Any) -> "SliceRef":
        """A whole slice (a document, or its pages joined): the start of a chain."""
        return cls(Chain(model, version), version)

    def model(self) -> Any | None:
        """The slice model of this version (the chain's own when it is the newest: do not write to it)."""
        return self.chain.model if self.chain.head == self.version else self.chain.rebuilt(self.version)

    def patched(self, version: int, patch: Any, drop: set = frozenset()) -> "SliceRef | None":
        """Version ``version``: ``patch`` (a patch document's model) applied to this one; ``None`` when this
        version can no longer be rebuilt.  In place when this is its chain's newest version and the family
        writes in place (an undo record keeps what it overwrote); on a new chain otherwise.  ``drop``: features
        whose entries leave the new version (a bounded reader's untracked ones,
        :mod:`~riverflink.operators.tracked_features`)."""
        chain = self.chain
        params = models.get_params(patch)
        adapter = models.adapter_for(chain.model)
        if chain.head == self.version and adapter.in_place(chain.model):
            keys = numeric.keys_of(params) | drop
            before = adapter.get_at(chain.model, keys)
            # (set_at removes the entries of ``keys`` that the tree lacks: the dropped ones)
            if before is not None and adapter.set_at(chain.model, sharding.patched(
                    patch, numeric.restrict(before, keys - drop) if drop else before, params), keys):
                chain.undo[version] = (self.version, keys, before)
                for old in sorted(chain.undo)[:-KEEP_RECORDS]:
                    del chain.undo[old]
                chain.head = version
                return SliceRef(chain, version)
        base = self.model()
        if base is None:
            return None
        new = patched_copy(base, patch)
        if drop:
            params = models.get_params(new)
            models.set_params(new, numeric.restrict(params, numeric.keys_of(params) - drop), trusted=True)
        return SliceRef.whole(version, new)


def patched_copy(base: Any, patch: Any) -> Any:
    """The slice ``patch`` (a patch document's model, which becomes the result) gives applied to slice ``base``
    (left as it is)."""
    # (both validated when read; sharding.patched builds new maps)
    return models.set_params(patch, sharding.patched(patch, models.get_params(base), models.get_params(patch)),
                             trusted=True)
