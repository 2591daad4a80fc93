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


class ModelsTopic:
    """Documents (and, sharded, manifests) published this round; :meth:`deliver` hands the newest complete version
    to every replica, as the job's readers do."""

    def __init__(self, name: str, shards: int):
        self.feed = ModelFeed(FeedRules(name))
        self.writer = ManifestWriter(name, epoch=1, shards=shards) if shards > 1 else None
        self.records: list = []
        self.current, self.model = None, None

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
        if self.current is not None:
            params = models.get_params(self.model)
            for k, r in enumerate(replicas):
                side.on_model(r, k, self.current.meta, lambda: params)
