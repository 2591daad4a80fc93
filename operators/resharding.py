"""Moving a model from M merger shards to M': the records that publish an assembled model as M' slices.

A sharded job's slices and manifests carry an epoch; readers never mix epochs or shard counts.  A job moves
from ``--shards M`` to ``--shards M'`` through a new epoch that starts from the old one's model:

1. stop the job;
2. ``riverflink reshard --model-name NAME --shards M'`` reads ``models``, assembles the newest version (slices
   and manifest, or a whole document when M was 1) exactly as every reader does
   (:class:`~riverflink.operators.model_feed.ModelFeed`), and publishes it with :func:`resharded`: M' whole
   slices of the next epoch (the old one + 1: newer than it, older than any job's, whose epoch is its start
   time in ms; paged where a slice is larger than a record may be) and a manifest naming them (for M' = 1,
   one whole document);
3. start the job with ``--shards M'``: each merger shard takes its slice (a merger that has never merged takes
   the newest whole slice of its shard, pages joined: ``MergerSide.on_model``), and the replicas rebase on the
   manifest.

The replicas' learning not yet merged when the old job stopped is not carried over (a stopped job's replicas
have at most one sync each in flight).  Nothing here imports Flink.
"""

from __future__ import annotations

from typing import Any

from riverflink import models
from riverflink.models import manifest as manifest_doc
from riverflink.models import sharding
from riverflink.models.document import ModelMeta
from riverflink.models.manifest import Manifest, shard_key
from riverflink.models.paging import paginate
from riverflink.models.signing import Signer, sign


def resharded(model: Any, meta: ModelMeta, shards: int, *, version: int, epoch: int, now: float,
              max_record_bytes: int = 900_000, signer: Signer | None = None) -> list[tuple[str, bytes]]:
    """``(Kafka key, record)`` pairs, in publishing order, that publish ``model`` (the assembled version
    ``meta``) as ``version`` of a model of ``shards`` shards in epoch ``epoch``: each shard's whole slice (its
    pages when larger than ``max_record_bytes``), then the manifest; for ``shards`` = 1 the whole document.

    Every document keeps the model's events; shard 0's (or the whole document's) keeps its counts.  None
    acknowledges a replica update (the job that starts from it has new replicas) and ``parent`` is the version
    it was assembled from.  Signed with ``signer`` when given.  Raises ``ValueError`` for a model that cannot be
    sharded (:func:`~riverflink.models.sharding.check_shardable`), a bad shard count, or, with ``shards`` = 1, a
    document over ``max_record_bytes``.

    >>> from river import datasets
    >>> from riverflink.models.spec import build
    >>> model = build("LogisticRegression(ftrl=true)")
    >>> for x, y in datasets.Phishing().take(50):
    ...     model.learn_one(x, y)
    >>> records = resharded(model, ModelMeta(name="p", version=7, events=50), 3, version=9, epoch=1, now=0.0)
    >>> [key for key, _ in records]
    ['p#0', 'p#1', 'p#2', 'p']
    """
    if not 1 <= shards <= manifest_doc.MAX_SHARDS:
        raise ValueError(f"--shards must be in [1, {manifest_doc.MAX_SHARDS}], not {shards}")
    name = str(meta.name)
    common = dict(name=name, version=version, created_at=now, events=meta.events, parent=meta.version, sequence=0,
                  acked={}, **({"policy": meta.policy} if meta.policy else {}))
    if shards == 1:
        doc = models.to_wire(model, counts=meta.counts, **common)
        text = models.dumps(_signed(doc, signer))
        if len(text) > max_record_bytes:
            raise ValueError(f"the model is {len(text):,} bytes as one document, over the {max_record_bytes:,}-byte "
                             "record limit: keep it sharded (--shards 2 or more) or raise --max-record-bytes")
        return [(name, text)]
    params = models.get_params(model)
    records: list[tuple[str, bytes]] = []
    for shard, part in enumerate(sharding.split(model, params, shards)):  # (raises for an unshardable family)
        doc = models.to_wire(models.set_params(model.clone(), part, trusted=True),
                             counts=meta.counts if shard == 0 else {}, shard=shard, shards=shards, epoch=epoch,
                             **common)
        text = models.dumps(doc)
        pages = paginate(doc, len(text), max_record_bytes)
        records += [(shard_key(name, shard), models.dumps(_signed(page, signer))) for page in pages]
    manifest = manifest_doc.manifest_document(Manifest(name, version, epoch, (version,) * shards), created_at=now)
    records.append((name, manifest_doc.dumps(_signed(manifest, signer))))
    return records


def _signed(doc: dict, signer: Signer | None) -> dict:
    return doc if signer is None else sign(doc, signer)
