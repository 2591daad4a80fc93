"""The ``models`` topic of the pure loop tests: what the merger shards publish reaches the replicas one round later.

>>> from riverflink.models.spec import build
>>> from riverflink.operators.loop import LoopSettings, ReplicaSide
>>> topic = ModelsTopic("m", shards=1)
>>> side = ReplicaSide(LoopSettings("m"), build("LinearRegression"))
>>> r = side.fresh()
>>> topic.deliver(side, [r]); topic.model is None
True
"""

from __future__ import annotations

from riverflink import models
from riverflink.operators.model_feed import FeedRules, ModelFeed
from riverflink.operators.slice_assembly import ManifestWriter
from riverflink.operators.tracked_features import held_by


class ModelsTopic:
    """Documents (and, sharded, manifests) published this round; :meth:`deliver` hands the newest complete version
    to every replica, as the job's readers do.  ``bounded``: as the trainer reads with working sets, one bounded
    reader (``ModelFeed.track``) for every replica in :attr:`replicas`, the rebases in place on what it knows."""

    def __init__(self, name: str, shards: int, bounded: bool = False):
        self.name, self.bounded, self.replicas = name, bounded, []
        self.feed = self._reader()
        self.writer = ManifestWriter(name, epoch=1, shards=shards) if shards > 1 else None
        self.records: list = []
        self.current, self.model = None, None

    def _reader(self) -> ModelFeed:
        feed = ModelFeed(FeedRules(self.name, in_place=self.bounded))
        if self.bounded:
            feed.track(lambda: held_by(self.replicas))
        return feed

    def restart_reader(self) -> None:
        """The trainer restored from a checkpoint: its reader starts empty, and waits for the next version."""
        self.feed, self.model = self._reader(), None

    def publish(self, doc: dict | None, clock: float) -> None:
        """A merger's new document (None: nothing merged), and the manifest it completes, if any."""
        if doc is not None:
            self.records.append(models.dumps(doc))
            manifest = self.writer.record_for(doc, clock) if self.writer else None
            if manifest is not None:
                self.records.append(manifest)

    def flush(self, clock: float) -> None:
        """The manifest publisher's timer: a manifest for what waits, if complete."""
        manifest = self.writer.flush_record(clock) if self.writer else None
        if manifest is not None:
            self.records.append(manifest)

    def deliver(self, side, replicas: list) -> None:
        """Every record published since the last delivery, read in order; the replicas rebase on the newest."""
        for value in self.records:
            entry, built, problem = self.feed.offer(value, self.current, now=1e9)
            assert problem is None, problem
            if entry is not None:
                self.current, self.model = entry, built
        self.records.clear()
        if self.current is None or self.model is None:
            return
        if self.bounded:
            model, meta, feed = self.model, self.current.meta, self.feed
            adapter = models.adapter_for(model)
            for k, r in enumerate(replicas):
                side.on_model(r, k, meta, lambda: models.get_params(model),
                              changed=lambda base: feed.changed_between(base, meta.version),
                              params_at=lambda keys: adapter.get_at(model, keys),
                              known=lambda features: feed.known_at(features, meta))
            return
        params = models.get_params(self.model)
        for k, r in enumerate(replicas):
            side.on_model(r, k, self.current.meta, lambda: params)
