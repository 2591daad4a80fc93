"""``ManifestPublisher``: a sharded model's manifests, one per slice published.  Keyed by model name.

Input: ``"<shard> <slice version>"`` from the merger shards
(:data:`~riverflink.operators.flink_state.SLICES_PUBLISHED`).  Output: each
manifest (:mod:`riverflink.models.manifest`) as ``"<model>\\n<JSON>"`` for the
``models`` sink, signed when the merger signs.  The pure part is
:class:`~riverflink.operators.slice_assembly.ManifestWriter`, kept in keyed
state: a restored writer goes on naming the slices it last knew, and its
manifest versions keep increasing (``max(previous + 1, now in ms)``).
"""

from __future__ import annotations

import logging
import time

from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext

from riverflink.models import manifest as manifest_doc
from riverflink.models.signing import Signer, sign
from riverflink.operators.flink_state import MANIFEST_WRITER
from riverflink.operators.loop import LoopSettings
from riverflink.operators.slice_assembly import ManifestWriter

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
            return
        doc = manifest_doc.manifest_document(manifest, created_at=time.time())
        if self.signer is not None:
            sign(doc, self.signer)
        self.m_manifests.inc()
        yield f"{s.model_name}\n{manifest_doc.dumps(doc).decode()}"
