"""A bounded reader of a sharded model: it keeps the features its replicas hold or have asked for, and knows which.

With ``--working-set`` every replica holds at most W features, but the reader
it rebases from (:class:`~riverflink.operators.model_feed.ModelFeed`, one per
trainer subtask) would still assemble every slice whole.  Bounded
(:meth:`ModelFeed.track`), the reader keeps, of every slice version it holds,
only the entries of *tracked* features: those some replica of its subtask
holds or has an unanswered pull for (:func:`held_by`).  The dense part is kept
whole.

Which entries it can vouch for is :class:`TrackedFeatures`' job.  Per
``(epoch, shard)`` it remembers, for each feature whose entry it holds, the
slice version since which that entry is the merged one (*known since*):

* a whole slice: every tracked feature it holds is known from its version on
  (the rest of the reader's entries for that shard are dropped: a new chain);
* a patch: its tracked features are known (from their first patch on, while
  the entry stays); its untracked ones are dropped from the chain, and
  forgotten, so that an old value can never pass for a merged one;
* a patch whose base the reader lacks (a restored or new reader) starts a new
  chain holding that patch's features alone: a bounded reader never waits for
  a whole slice.

A feature is known at a manifest when it is known since a version no later
than the slice version the manifest names (:meth:`known_at`).  A replica
rebases only the features the reader knows; one it holds that the reader does
not know keeps its value, which is right when that value came from a pull
answer or a rebase made while the reader tracked the feature (every merge of
it since would have come as a patch and made it known).  A value that did not
(learned before any pull, or restored from a checkpoint while the reader
starts empty) is *unverified* on the replica and pulled again
(:class:`~riverflink.operators.pull_gate.PullGate`).

Entries of features no replica tracks any more, and no patch has touched
since, are swept once the reader holds more than :data:`SWEEP_FACTOR` times what is
tracked (plus :data:`SWEEP_SLACK`): the reader's size is O(tracked features), whatever the
model's.  Pure Python.

>>> from riverflink.models.spec import build
>>> lr = lambda w: models.set_params(build("LogisticRegression(ftrl=true)"), {"weights": w})
>>> t = TrackedFeatures()
>>> kept = t.take_whole((1, 0), 5, lr({"a": 1.0, "b": 2.0}), tracked={"a"})
>>> sorted(kept._weights), t.known_at({"a", "b"}, epoch=1, slices=(5,))
(['a'], {'a'})
>>> patch, _, dropped = t.take_patch((1, 0), 6, lr({"a": 3.0, "c": 4.0}), tracked={"c"})
>>> sorted(patch._weights), dropped, sorted(t.known_at({"a", "c"}, epoch=1, slices=(6,)))
(['c'], {'a'}, ['c'])
>>> t.known_at({"c"}, epoch=1, slices=(5,))  # (known since version 6 only)
set()
"""

from __future__ import annotations

from typing import Any, Collection, Iterable

from riverflink import models
from riverflink.models import numeric, sharding

#: a bounded reader sweeps the entries no replica tracks once it holds more than SWEEP_FACTOR times what they
#: track, plus SWEEP_SLACK (amortized: each sweep frees at least a third of what it visits)
SWEEP_FACTOR = 1.5
SWEEP_SLACK = 1000


class TrackedFeatures:
    """What a bounded reader knows, per ``(epoch, shard)``: feature -> the slice version since which its entry is
    the merged one."""

    def __init__(self) -> None:
        self.known: dict = {}
        #: entries dropped because no replica tracked them (patches) and swept (counted, for the metrics)
        self.dropped = 0
        self.swept = 0

    def take_whole(self, key: tuple, version: int, model: Any, tracked: Collection) -> Any:
        """A whole slice (or the first patch of a new chain): ``model`` cut down to the tracked features, each
        known from ``version`` on; what the reader knew of this shard before is forgotten."""
        model, kept, dropped = cut_down(model, tracked)
        self.dropped += len(dropped)
        self.known[key] = dict.fromkeys(kept, version)
        return model

    def take_patch(self, key: tuple, version: int, patch: Any, tracked: Collection) -> tuple[Any, set, set]:
        """A patch on a version the reader holds: ``(patch cut down to the tracked features, those features, its
        other features)``.  The tracked ones are known (since their first patch, while held); the others are
        forgotten."""
        patch, kept, dropped = cut_down(patch, tracked)
        known = self.known.setdefault(key, {})
        for f in kept:
            known.setdefault(f, version)
        for f in dropped:
            known.pop(f, None)
        self.dropped += len(dropped)
        return patch, kept, dropped

    def known_at(self, features: Iterable, epoch: int, slices: tuple) -> set:
        """Those of ``features`` whose entries at the manifest naming slice versions ``slices`` (of ``epoch``) the
        reader holds as merged."""
        shards, out = len(slices), set()
        for f in features:
            shard = sharding.shard_of(f, shards)
            since = self.known.get((epoch, shard), {}).get(f)
            if since is not None and since <= slices[shard]:
                out.add(f)
        return out

    def held(self) -> int:
        return sum(len(k) for k in self.known.values())

    def sweep(self, tracked: Collection, chains: Iterable) -> bool:
        """Forget the features no replica tracks once the reader holds more than :data:`SWEEP_FACTOR` times what is
        tracked (plus :data:`SWEEP_SLACK`), and delete their entries from ``chains`` (the held slices' chains,
        :class:`~riverflink.operators.slice_versions.Chain`).  Whether it swept (a joined model is then stale)."""
        if self.held() <= SWEEP_FACTOR * len(tracked) + SWEEP_SLACK:
            return False
        gone: set = set()
        for known in self.known.values():
            for f in [f for f in known if f not in tracked]:
                del known[f]
                gone.add(f)
        for chain in chains:
            adapter = models.adapter_for(chain.model)
            adapter.set_at(chain.model, adapter.get_at(chain.model, ()), gone)  # (empty maps: those entries go)
        self.swept += len(gone)
        return True


def cut_down(model: Any, tracked: Collection) -> tuple[Any, set, set]:
    """``(model with only the tracked features' entries, those features, its other features)``; the dense part
    stays whole.  ``model`` is a validated slice model (it becomes the result)."""
    params = models.get_params(model)
    keys = numeric.keys_of(params)
    kept = {f for f in keys if f in tracked}
    return models.set_params(model, numeric.restrict(params, kept), trusted=True), kept, keys - kept


class Tracked:
    """The features a subtask's replicas hold or have asked for, at one moment: ``in`` and ``len``."""

    def __init__(self, held: list, asked: set):
        self._held, self._asked = held, asked

    def __contains__(self, feature: Any) -> bool:
        return feature in self._asked or any(feature in h for h in self._held)

    def __len__(self) -> int:
        return sum(len(h) for h in self._held) + len(self._asked)


def held_by(replicas: Iterable) -> Tracked:
    """What ``replicas`` (:class:`~riverflink.operators.replica.Replica` objects with working sets) hold or have
    unanswered pulls for."""
    held, asked = [], set()
    for r in replicas:
        if getattr(r, "working", None) is not None:
            held.append(r.working.used)
            for _, features, _ in (r.pulls or {}).values():
                asked.update(features)
    return Tracked(held, asked)
