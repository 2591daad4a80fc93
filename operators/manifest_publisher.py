"""``ManifestPublisher``: a sharded model's manifests, about one per update merged everywhere.  Keyed by model name.

Input: ``"<shard> <slice version>"`` from the merger shards
(:data:`~riverflink.operators.flink_state.SLICES_PUBLISHED`).  Output: each
manifest (:mod:`riverflink.models.manifest`) as ``"<model>\\n<JSON>"`` for the
``models`` sink, signed when the merger signs.  The pure part is
:class:`~riverflink.operators.slice_assembly.ManifestWriter`, kept in keyed
state: a restored writer goes on naming the slices it last knew, and its
manifest versions keep increasing (``max(previous + 1, now in ms)``).  Slices the
writer holds back (it waits for every shard's newer slice) are named by a
processing-time timer :data:`~riverflink.operators.slice_assembly.FLUSH_AFTER_MS`
later at most, so a stream's last slices are named too.
"""

from __future__ import annotations

import logging
import time

from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext

from riverflink.models import manifest as manifest_doc
from riverflink.models.signing import Signer, sign
from riverflink.operators.flink_state import MANIFEST_WRITER
from riverflink.operators.loop import LoopSettings
from riverflink.operators.slice_assembly import FLUSH_AFTER_MS, ManifestWriter

log = logging.getLogger("riverflink")


class ManifestPublisher(KeyedProcessFunction):
    def __init__(self, settings: LoopSettings, signing_key: str | None = None):
        self.settings, self.signing_key = settings, signing_key

    def open(self, ctx: RuntimeContext):
        self.state = ctx.get_state(MANIFEST_WRITER)
        self.signer = Signer.load(self.signing_key) if self.signing_key else None
        self.m_manifests = ctx.get_metrics_group().add_group("riverflink").counter("manifests")

    def process_element(self, value, ctx):
        s = self.settings
        writer = self.state.value()
        if writer is None or writer.shards != s.shards:
            writer = ManifestWriter(s.model_name, epoch=s.epoch, shards=s.shards)
        try:
            shard, slice_version = (int(v) for v in value.split())
        except ValueError:
            log.error("manifest publisher: ignoring %r (not '<shard> <slice version>')", value[:80])
            return
        manifest = writer.on_slice(shard, slice_version, version=int(time.time() * 1000))
        self.state.update(writer)
        if manifest is None:
            if writer.waiting:  # (one timer per period: Flink keeps one per key and timestamp)
                now = ctx.timer_service().current_processing_time()
                ctx.timer_service().register_processing_time_timer((now // FLUSH_AFTER_MS + 1) * FLUSH_AFTER_MS)
            return
        yield self._record(manifest)

    def on_timer(self, timestamp: int, ctx):
        writer = self.state.value()
        manifest = None if writer is None else writer.flush(version=int(time.time() * 1000))
        if manifest is None:
            return
        self.state.update(writer)
        yield self._record(manifest)

    def _record(self, manifest) -> str:
        doc = manifest_doc.manifest_document(manifest, created_at=time.time())
        if self.signer is not None:
            sign(doc, self.signer)
        self.m_manifests.inc()
        return f"{self.settings.model_name}\n{manifest_doc.dumps(doc).decode()}"
