"""Scatter/gather serving of a sharded model, as three state machines.  Pure Python: no Flink import.
::

    models ──┐
             ▼
    requests ─► Scatter ──(shard, slice records, complete manifests, request batches)──► ShardScorer × M
                  │ answers it can give alone                                             │ partial scores
                  ▼                                                                       ▼
               Gather ◄──────────────────────────────(batch id: context, M partials)──────┘ ──► predictions

* :class:`Scatter` is the one reader of ``models`` and the ordering point.
  It sends each slice record to its shard's scorer, and a manifest to every
  scorer only once every slice version it names has reached them (all pages,
  a patch only on a base they hold): a *complete* manifest.  It stamps each
  batch of requests with the newest complete manifest and sends the batch to
  every scorer.  Everything goes out on one stream in this order, so a scorer
  always reads a batch after the manifest it is stamped with, and before any
  newer one.
* :class:`ShardScorer` holds one shard's slice (a
  :class:`~riverflink.operators.model_feed.ModelFeed` for that shard alone).
  Slice records wait until a manifest names them, so the slice stays at the
  stamped version while batches are scored; then it answers each request's
  partial score (:func:`~riverflink.models.partial_scores.partial_score`).
* :class:`Gather` sums a batch's M partial scores per request and answers
  as the serving job does (:func:`~riverflink.operators.records.prediction_record`).

Guaranteed: every answer equals the whole model of the stamped manifest's
version to floating-point roundoff (the order of the sum), never a mix of
versions; a partial scored on another version (a scorer that could not take a
slice) makes its requests answer ``no_model_yet``, counted.  Each scorer holds
about 1/M of the model; the scatter holds the slices' metadata alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from river.utils import inspect as river_inspect

from riverflink.models import manifest as manifest_doc
from riverflink.models.document import document_of
from riverflink.models.manifest import Manifest, SliceMeta
from riverflink.models.paging import PageCollector
from riverflink.models.partial_scores import check_partial, finish, link_of, partial_score
from riverflink.operators.dead_letters import Rejected
from riverflink.operators.events import parse_event
from riverflink.operators.frames import Record
from riverflink.operators.limits import DEFAULT_LIMITS, Limits
from riverflink.operators.model_feed import Accepted, FeedRules, ModelFeed, _checked
from riverflink.operators.records import prediction_record
from riverflink.operators.slice_assembly import SliceAssembler

#: message kinds on the scatter -> scorer stream and the -> gather stream
MODEL, BATCH, CONTEXT, PARTIAL = "m", "r", "c", "p"


def message(key: Any, kind: str, payload: str) -> str:
    """``key kind payload``: one record of the scatter/gather streams (``key``: a shard or a batch id)."""
    return f"{key} {kind} {payload}"


def read_message(text: str) -> tuple[str, str, str]:
    """``(key, kind, payload)`` of :func:`message`."""
    key, kind, payload = text.split(" ", 2)
    return key, kind, payload


@dataclass
class Scatter:
    """The ordering point (see the module).  Feed it ``models`` records (:meth:`on_model`) and request batches
    (:meth:`on_requests`); both answer what to send, in order."""

    rules: FeedRules
    limits: Limits = DEFAULT_LIMITS
    #: the newest complete manifest sent to the scorers, its created_at
    current: Manifest | None = None
    created_at: float = 0.0
    #: request batches stamped so far (their ids)
    batches: int = 0
    #: models records refused with a reason
    refused: int = 0
    assembler: SliceAssembler = field(init=False)
    pages: PageCollector = field(default_factory=PageCollector)
    #: manifest version -> (its text, created_at) for the manifests still waiting for slices
    waiting: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.assembler = SliceAssembler(self.rules.model_name)

    def on_model(self, value: str | bytes, now: float | None = None) -> tuple[list[tuple[int, str]], str | None]:
        """One ``models`` record: ``([(shard, text) to send to that shard's scorer, ...], reason refused or
        None)``.  A slice goes to its shard at once; a manifest goes to every shard once it is complete."""
        text = value.decode() if isinstance(value, bytes) else value
        if len(text) > self.rules.max_bytes:
            return [], self._refuse(f"model document of {len(text)} bytes exceeds {self.rules.max_bytes}")
        try:
            doc = orjson.loads(text)
        except (ValueError, TypeError):
            return [], self._refuse("not a riverflink.model/1 document")
        if manifest_doc.is_manifest(doc):
            manifest = manifest_doc.manifest_of(doc)
            if manifest is None:
                return [], self._refuse("a malformed riverflink.manifest/1 document")
            ok, problem = _checked(doc, manifest.name, manifest.version, self.rules, None, now)
            if not ok:
                return [], self._refuse(problem) if problem else None
            created = doc["meta"].get("created_at")
            self.waiting = {manifest.version: (text, float(created) if isinstance(created, (int, float)) else 0.0)}
            return self._complete(self.assembler.on_manifest(manifest)), None
        document = document_of(doc, len(text))
        if document is None:
            return [], self._refuse("not a riverflink.model/1 document")
        meta = document.meta
        ok, problem = _checked(doc, meta.name, meta.version, self.rules, None, now)
        if not ok:  # (another model's document, or one this reader must not take: refused with a reason)
            return [], self._refuse(problem) if problem else None
        if meta.shards <= 1:
            return [], self._refuse(f"version {meta.version} is a whole model: serve --shards answers sharded "
                                    "models only (serve without --shards)")
        if not 0 <= meta.shard < meta.shards or not 0 <= meta.page < meta.pages:
            return [], self._refuse(f"slice {meta.shard} of {meta.shards}, page {meta.page} of {meta.pages}")
        out = [(meta.shard, text)]
        if meta.pages > 1 and self.pages.add((meta.epoch, meta.shard), version=meta.version, page=meta.page,
                                             of=meta.pages, item=True) is None:
            return out, None  # (more pages of this version to come)
        held = self.assembler.held.get((meta.epoch, meta.shard), {})
        if meta.patch_of is not None and meta.patch_of not in held:
            return out, None  # (the scorer cannot use it either: it waits for the shard's next whole slice)
        head = SliceMeta(meta.name, meta.epoch, meta.shards, meta.shard, meta.version)  # type: ignore[arg-type]
        return out + self._complete(self.assembler.on_slice(head, True)), None

    def _refuse(self, reason: str) -> str:
        self.refused += 1
        return reason

    def _complete(self, assembled) -> list[tuple[int, str]]:
        """The manifest just completed, to every shard."""
        if assembled is None:
            return []
        manifest = assembled.manifest
        text, self.created_at = self.waiting.pop(manifest.version, ("", 0.0))
        self.current = manifest
        return [(s, text) for s in range(manifest.shards)]

    def on_requests(self, records: list[Record], batch: str | None = None) -> tuple[list[tuple[str, str]],
                                                                               list[tuple[int, str]], str | None]:
        """A batch of request records: ``(answers given here, as (line, status): bad requests, or all of them
        before any complete manifest; [(shard, batch text)]; the batch's context for the gather, or None)``.
        ``batch``: its id (unique; default: the count of batches stamped so far)."""
        answers, pending = [], []
        for record in records:
            event = parse_event(record, require_label=False, limits=self.limits)
            if isinstance(event, Rejected):
                answers.append((prediction_record(source="serving", request_id=None, y_pred=None, proba=None,
                                                  model_version=None, model_created_at=None, status="bad_request",
                                                  reason=event.reason, offset=event.offset), "bad_request"))
            elif self.current is None:
                answers.append((prediction_record(source="serving", request_id=event.id, y_pred=None, proba=None,
                                                  model_version=None, model_created_at=None,
                                                  status="no_model_yet"), "no_model_yet"))
            else:
                pending.append(event)
        if not pending:
            return answers, [], None
        self.batches += 1
        batch, version = batch or str(self.batches), self.current.version
        xs = orjson.dumps({"b": batch, "v": version, "x": [e.x for e in pending]}).decode()
        context = orjson.dumps({"b": batch, "v": version, "created_at": self.created_at, "shards": self.current.shards,
                                "ids": [e.id for e in pending], "ts": [e.timestamp for e in pending]}).decode()
        return answers, [(s, xs) for s in range(self.current.shards)], context


@dataclass
class ShardScorer:
    """One shard's scorer (see the module): slice records wait in ``pending`` until a manifest names them."""

    rules: FeedRules
    feed: ModelFeed = field(init=False)
    #: the manifest version this scorer stands on, its entry (kept in state for a restore) and slice model
    version: int | None = None
    entry: Accepted | None = None
    model: Any = None
    link: str | None = None
    classifier: bool = False
    #: slice records not yet named by a manifest, in arrival order: (epoch, slice version, text)
    pending: list = field(default_factory=list)
    #: records the feed refused (a problem) and manifests this scorer could not take (its slice missing)
    refused: int = 0
    missed: int = 0

    def __post_init__(self) -> None:
        self.feed = ModelFeed(self.rules)

    @property
    def shard(self) -> int:
        return self.rules.shard  # type: ignore[return-value]

    def on_model(self, text: str, now: float | None = None) -> str | None:
        """A record the scatter sent: a slice waits; a manifest takes the slices it names first, then moves this
        scorer to its version.  A reason when something is refused, else None."""
        doc = orjson.loads(text)
        if not manifest_doc.is_manifest(doc):
            document = document_of(doc, len(text))
            if document is not None:
                self.pending.append((document.meta.epoch, document.meta.version, text))
            return None
        manifest = manifest_doc.manifest_of(doc)
        if manifest is None or self.shard >= manifest.shards:
            return None
        named, problem = manifest.slices[self.shard], None
        later = []
        for epoch, version, value in self.pending:  # (an older epoch's records are dropped)
            if (epoch, version) > (manifest.epoch, named):
                later.append((epoch, version, value))
            elif epoch == manifest.epoch:
                _, _, issue = self.feed.offer(value, self.entry, now=now)
                if issue:
                    self.refused += 1
                    problem = issue
        self.pending = later
        entry, model, issue = self.feed.offer(text, self.entry, now=now)
        if entry is None:
            self.missed += 1
            return issue or problem or f"manifest {manifest.version}: slice {self.shard} version {named} not held"
        try:
            check_partial(model)
        except ValueError as e:
            self.missed += 1
            return str(e)
        self._stand_on(entry, model)
        return problem

    def _stand_on(self, entry: Accepted, model: Any) -> None:
        self.version, self.entry, self.model = entry.version, entry, model
        self.link, self.classifier = link_of(model), river_inspect.isclassifier(model)

    def on_batch(self, payload: str) -> tuple[str, str]:
        """A stamped batch: ``(its id, the gather's message payload)``, this shard's partial scores (``p`` None
        when this scorer does not stand on the stamped version)."""
        batch = orjson.loads(payload)
        if self.version != batch["v"] or self.model is None:
            return batch["b"], orjson.dumps({"s": self.shard, "v": self.version, "p": None}).decode()
        shards = self.entry.meta.shards  # type: ignore[union-attr]
        partials = [partial_score(self.model, x, self.shard, shards) for x in batch["x"]]
        return batch["b"], orjson.dumps({"s": self.shard, "v": self.version, "p": partials, "link": self.link,
                                         "classifier": self.classifier}).decode()

    def restore(self, entry: Accepted | None, pending: list) -> None:
        """Take back what was kept in state: the entry it stood on (its chain re-read) and the waiting records."""
        if entry is not None:
            self.feed.seed(entry)
            manifest = manifest_doc.read_manifest(entry.text)
            if manifest is not None:
                part = self.feed.assembler.held.get((manifest.epoch, self.shard), {}).get(manifest.slices[self.shard])
                model = part[1].model() if part is not None else None
                if model is not None:
                    self._stand_on(entry, model)
        self.pending = list(pending)


@dataclass
class Gather:
    """Sums a batch's partial scores into answers once its context and all M partials have come (the held items
    per batch id are the caller's: keyed state in the job)."""

    #: requests answered no_model_yet because a scorer stood on another version
    inconsistent: int = 0
    #: the Kafka timestamps (ms) of the requests of the batch last answered
    last_ts: list = field(default_factory=list)

    def step(self, held: dict | None, kind: str, payload: str) -> tuple[dict | None, list[str] | None]:
        """Add a context (kind :data:`CONTEXT`) or a shard's partials (:data:`PARTIAL`) to ``held`` (a batch's
        items so far, None at first): ``(held now, None)``, or ``(None, the batch's answer lines)`` once complete."""
        held = held or {"ctx": None, "parts": {}}
        item = orjson.loads(payload)
        if kind == CONTEXT:
            held["ctx"] = item
        else:
            held["parts"][item["s"]] = item
        ctx = held["ctx"]
        if ctx is None or len(held["parts"]) < ctx["shards"]:
            return held, None
        return None, self.answers(ctx, [held["parts"][s] for s in sorted(held["parts"])])

    def answers(self, ctx: dict, parts: list[dict]) -> list[str]:
        version, created = ctx["v"], ctx["created_at"]
        self.last_ts = ctx["ts"]
        if any(p["v"] != version or p["p"] is None for p in parts):
            self.inconsistent += len(ctx["ids"])
            return [prediction_record(source="serving", request_id=i, y_pred=None, proba=None, model_version=None,
                                      model_created_at=None, status="no_model_yet") for i in ctx["ids"]]
        link, classifier = parts[0]["link"], parts[0]["classifier"]
        out = []
        for n, request_id in enumerate(ctx["ids"]):
            total = 0.0
            for p in parts:  # (in shard order: the same sum on every run)
                total += p["p"][n]
            y_pred, proba = finish(link, total, classifier)
            out.append(prediction_record(source="serving", request_id=request_id, y_pred=y_pred, proba=proba,
                                         model_version=version, model_created_at=created))
        return out


def latency_ms(ctx_ts: list, now: float | None = None) -> list[int]:
    """Each request's age in ms (from its Kafka timestamp), for the latency distribution."""
    now_ms = int(1000 * (time.time() if now is None else now))
    return [max(0, now_ms - ts) for ts in ctx_ts if ts]
