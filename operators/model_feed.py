"""The ``models`` topic as the jobs see it: validated before it is stored, newest version wins.

Broadcast state :data:`LATEST_MODEL` maps a model name to a :class:`Accepted`
entry.  A record is stored only when :func:`accept` finds it a valid, newer,
plausible version of the job's model:

* a ``riverflink.model/1`` JSON document (schema, allow-listed classes,
  finite values, shapes: :func:`riverflink.models.from_wire` rebuilds it);
* of this job's model name;
* with an integer version in ``[1, now in ms + max_skew_ms]``, so a forged
  far-future version can neither take over nor pin the serving model;
* no larger than ``max_bytes``;
* when a verify key is configured, signed by its private half
  (:mod:`riverflink.models.signing`); unsigned or badly signed documents are
  refused.

Anything else is logged, counted and ignored: it never crashes a job.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterable, Iterator

import orjson

from riverflink import models
from riverflink.models import manifest as manifest_doc
from riverflink.models import numeric, sharding
from riverflink.models.document import ModelMeta, SliceInfo, document_of, read_document
from riverflink.models.manifest import Manifest, SliceMeta
from riverflink.models.paging import PageCollector
from riverflink.models.signing import Verifier, verify
from riverflink.operators.slice_assembly import SliceAssembler
from riverflink.operators.slice_versions import SliceRef, patched_copy
from riverflink.operators.tracked_features import TrackedFeatures, cut_down

#: pages one slice version may take (a reader holds them until the last comes)
MAX_PAGES = 4096
#: assembled versions whose changes a reader remembers (and patches per shard)
LOG_LENGTH = 64

log = logging.getLogger("riverflink")


@dataclass(frozen=True)
class FeedRules:
    model_name: str
    #: how far ahead of this machine's clock a version (ms since the epoch) may be
    max_skew_ms: int = 60_000
    max_bytes: int = 8 << 20
    #: accept only documents signed by this key's private half (None: no signature check)
    verifier: Verifier | None = None
    #: a server (serving job, LiveModel) passes over versions the quality gate holds back; replicas take them
    serving: bool = False
    #: a sharded model is assembled into the same model object each time, the features the patches changed
    #: written in place when this reader knows them (:meth:`ModelFeed.changed_between`): O(what changed)
    #: instead of a new join.  Only for a reader that uses the newest model alone (the replicas' trainer, the
    #: serving job), never for one that hands models out (``LiveModel``): a model handed out earlier changes.
    in_place: bool = False
    #: a shard's reader (scatter/gather serving, :mod:`~riverflink.models.partial_scores`): it holds this shard's
    #: slices alone and answers a manifest with this shard's slice model, never a joined model (None: all shards)
    shard: int | None = None


@dataclass(frozen=True)
class Accepted:
    """A validated version: its metadata and its JSON text (to rebuild the model after a restore).

    An assembled sharded model (:class:`ModelFeed`) keeps its manifest as ``text`` and its slice documents as
    ``parts`` (shard order); :func:`entry_model` rebuilds either kind."""

    meta: ModelMeta
    text: str
    parts: tuple[str, ...] = ()

    @property
    def version(self) -> int:
        return self.meta.version  # type: ignore[return-value]  (accept() admits integer versions only)


def accept(value: str | bytes, rules: FeedRules, current: int | None,
           now: float | None = None) -> tuple[Accepted | None, Any, str | None]:
    """``(entry, model, None)`` for a valid newer version; ``(None, None, reason)`` otherwise.

    The record is parsed once; ``model`` is the estimator ``from_wire`` built
    while validating it.  ``reason`` is ``None`` (not an error) for another
    model's document or an older/duplicate version.
    """
    if len(value) > rules.max_bytes:
        return None, None, f"model document of {len(value)} bytes exceeds {rules.max_bytes}"
    document = read_document(value)
    if document is None:
        return None, None, "not a riverflink.model/1 document"
    return _accept_document(document.doc, document.meta, value, rules, current, now)


def _checked(doc: dict, name: Any, version: Any, rules: FeedRules, current: int | None,
             now: float | None) -> tuple[bool, str | None]:
    """``(True, None)`` when a document of model ``name`` at ``version`` is this reader's, newer than
    ``current``, within the version window and (if asked) signed; else ``(False, reason or None)``."""
    if name is None:
        return False, "model document without a model name"
    if name != rules.model_name:
        return False, None
    now = time.time() if now is None else now
    if version is None or not 1 <= version <= int(now * 1000) + rules.max_skew_ms:
        shown = str(doc["meta"].get("version"))[:40]
        return False, f"version {shown!r} is not an integer in [1, now + {rules.max_skew_ms} ms]"
    if current is not None and version <= current:
        return False, None
    if rules.verifier is not None:
        bad = verify(doc, rules.verifier)
        if bad:
            return False, f"version {version} refused: {bad}"
    return True, None


def _validated(doc: dict, meta: ModelMeta, rules: FeedRules, current: int | None, now: float | None,
               what: str) -> tuple[Any, str | None]:
    """``(model, None)`` for a document this reader takes (:func:`_checked`, then rebuilt by ``from_wire``);
    ``(None, reason or None)`` otherwise.  ``what`` names the document in a reason."""
    ok, problem = _checked(doc, meta.name, meta.version, rules, current, now)
    if not ok:
        return None, problem
    try:
        return models.from_wire(doc), None
    except Exception as e:  # noqa: BLE001 - any invalid document is refused, whatever it breaks
        return None, f"{what} refused: {type(e).__name__}: {str(e)[:200]}"


def _accept_document(doc: dict, meta: ModelMeta, value: str | bytes, rules: FeedRules, current: int | None,
                     now: float | None) -> tuple[Accepted | None, Any, str | None]:
    model, problem = _validated(doc, meta, rules, current, now, f"version {meta.version}")
    if model is None:
        return None, None, problem
    if rules.serving and meta.held:
        return None, None, None  # replicas learn on from it; serving keeps the previous version
    return Accepted(meta, _text(value)), model, None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class ModelFeed:
    """The ``models`` topic as one reader sees it, sharded models included: offer every record in order.

    * A whole-model document goes through :func:`accept`.
    * A *slice* (a model document with ``meta.shards`` > 1) and a *manifest*
      (:mod:`riverflink.models.manifest`) are each validated like a document
      (model name, version window, signature; a slice is rebuilt by
      ``from_wire``) and handed to a :class:`SliceAssembler`.  When a manifest
      newer than ``current`` has all the slices it names, :meth:`offer` answers
      the assembled model as an ordinary :class:`Accepted` entry: a whole-model
      document (never published, so unsigned) whose version is the manifest's
      and whose ``meta.slices`` lists each slice's version and acknowledgements,
      so that replicas rebase shard by shard.
    * A slice or manifest answers ``(None, None, None)`` while it waits, and a
      reason when it is refused.
    * A slice published as a *patch* (``meta.patch_of``: only the entries its
      merge touched) is applied to the slice version it names, when this reader
      holds it; otherwise it is counted in :attr:`unusable_patches` and the
      reader waits for that shard's next whole slice.  An assembled entry's
      ``parts`` then hold each shard's chain (the whole slice, then its
      patches), so that a restore can replay it.
    * A slice version published as pages (``meta.pages`` > 1,
      :mod:`riverflink.models.paging`) is taken once every page has come; its
      parts then hold every page's text.

    Restored readers call :meth:`seed` with the entry they kept, so that a later
    manifest naming some of the same slices can still be assembled.  A slice
    read before the restore point but not yet part of an assembled model is
    not kept: such a reader assembles again once that shard publishes a newer
    slice (every update of every replica makes each shard publish one).
    """

    def __init__(self, rules: FeedRules):
        self.rules = rules
        self.assembler = SliceAssembler(rules.model_name, only=rules.shard)
        #: manifest version -> (its text, its created_at)
        self._manifests: dict[int, tuple[str, float]] = {}
        #: patches whose base slice this reader did not hold (it waited for a whole slice instead)
        self.unusable_patches = 0
        #: records :meth:`versions` refused with a reason
        self.refused = 0
        #: the pages of a version still coming, by (epoch, shard): their (model, text)
        self._paging = PageCollector()
        #: (epoch, shard, slice version) -> (the version it patches, the features it holds), for recent patches
        self._patch_keys: dict = {}
        #: assembled version -> its manifest's (epoch, slice versions), for recent versions: :meth:`changed_between`
        #: walks the patches between two of them (no key sets kept per version)
        self._log: dict = {}
        #: with ``rules.in_place``: the model last assembled, and its version
        self._model: Any = None
        self._model_version: int | None = None
        #: a bounded reader (:meth:`track`): what it knows, and what its replicas track now
        self.tracking: TrackedFeatures | None = None
        self._tracked: Callable[[], Collection] | None = None

    def track(self, tracked: Callable[[], Collection]) -> None:
        """Make this a bounded reader of a sharded model (:mod:`~riverflink.operators.tracked_features`): it keeps
        the entries of the features ``tracked()`` holds at the moment each slice comes, and :meth:`known_at`
        says which it holds as merged.  Its entries keep no slice texts (``Accepted.parts`` stays empty): after
        a restore it starts empty, and its replicas pull what they hold again."""
        self.tracking, self._tracked = TrackedFeatures(), tracked

    def known_at(self, features: Iterable, meta: ModelMeta) -> set:
        """Those of ``features`` whose entries in assembled version ``meta`` are the merged ones: all of them for
        a reader that is not bounded."""
        if self.tracking is None:
            return set(features)
        return self.tracking.known_at(features, meta.epoch, tuple(s.version for s in meta.slices))

    def versions(self, values: Iterable[str | bytes]) -> Iterator[tuple[Accepted, Any]]:
        """Each newer version that ``values`` (records of ``models``, in reading order) make, as ``(entry,
        model)``, as a reader that starts from nothing takes them; :attr:`refused` counts the records refused with
        a reason.  For a reader of a whole topic (``reshard``, ``report``)."""
        current = None
        for value in values:
            entry, model, problem = self.offer(value, current)
            self.refused += bool(problem)
            if entry is not None:
                current = entry
                yield entry, model

    def offer(self, value: str | bytes, current: Accepted | None,
              now: float | None = None) -> tuple[Accepted | None, Any, str | None]:
        rules = self.rules
        if len(value) > rules.max_bytes:
            return None, None, f"model document of {len(value)} bytes exceeds {rules.max_bytes}"
        try:
            doc = orjson.loads(value)
        except (ValueError, TypeError):
            return None, None, "not a riverflink.model/1 document"
        if current is not None and self.assembler.current is None:
            self.seed(current)
        at = None if current is None else current.version
        if manifest_doc.is_manifest(doc):
            return self._manifest(doc, _text(value), at, now)
        document = document_of(doc, len(value))  # (parsed once, whatever the record holds)
        if document is None:
            return None, None, "not a riverflink.model/1 document"
        if document.meta.shards <= 1:
            return _accept_document(document.doc, document.meta, value, rules, at, now)
        return self._slice(document.doc, document.meta, _text(value), now)

    def _manifest(self, doc: dict, text: str, current: int | None, now: float | None):
        manifest = manifest_doc.manifest_of(doc)
        if manifest is None:
            return None, None, "a malformed riverflink.manifest/1 document"
        ok, problem = _checked(doc, manifest.name, manifest.version, self.rules, current, now)
        if not ok:
            return None, None, problem
        created = doc["meta"].get("created_at")
        self._manifests = {manifest.version: (text, float(created) if isinstance(created, (int, float)) else 0.0)}
        return self._assembled(self.assembler.on_manifest(manifest))

    def _slice(self, doc: dict, meta: ModelMeta, text: str, now: float | None):
        if not 0 <= meta.shard < meta.shards:
            return None, None, f"slice {meta.shard} of {meta.shards} shards"
        if not 0 <= meta.page < meta.pages <= MAX_PAGES:
            return None, None, f"page {meta.page} of {meta.pages} (at most {MAX_PAGES})"
        if self.rules.shard is not None and meta.shard != self.rules.shard:
            return None, None, None  # (another shard's reader holds it)
        model, problem = _validated(doc, meta, self.rules, None, now, f"slice {meta.shard} version {meta.version}")
        if model is None:
            return None, None, problem
        return self._assembled(self._take(meta, model, text))

    def _take(self, meta: ModelMeta, model: Any, text: str):
        """A validated slice document: held (:meth:`_hold`) at once, or, a page (:mod:`riverflink.models.paging`),
        once every page of its version has come (joined, their texts in page order); the assembler's answer."""
        if self.tracking is not None:  # (texts are not kept: a bounded reader restarts empty)
            text = ""
            if meta.pages > 1:  # (a page cut down at once: only the joined slice's entries become known)
                model = cut_down(model, self._tracked())[0]
        if meta.pages <= 1:
            return self._hold(meta, model, (text,))
        # (a newer version's pages: the older one's are dropped)
        ordered = self._paging.add((meta.epoch, meta.shard), version=meta.version, page=meta.page, of=meta.pages,
                                   item=(model, text))
        if ordered is None:
            return None
        return self._hold(meta, _joined([m for m, _ in ordered], None), tuple(t for _, t in ordered))

    def _hold(self, meta: ModelMeta, model: Any, texts: tuple[str, ...]):
        """Hand a validated slice version (its documents' ``texts``; a patch applied to its base first) to the
        assembler; its answer, or ``None`` for a patch whose base this reader does not hold."""
        key, tracking = (meta.epoch, meta.shard), self.tracking
        base = None if meta.patch_of is None else self.assembler.held.get(key, {}).get(meta.patch_of)
        if meta.patch_of is not None and base is None and tracking is None:
            self.unusable_patches += 1
            return None
        if tracking is not None:
            texts = ()  # (a bounded reader keeps no texts: it restarts empty)
        if base is None:  # a whole slice, or (a bounded reader) a patch that starts a chain of its own
            ref = SliceRef.whole(meta.version, model if tracking is None else
                                 tracking.take_whole(key, meta.version, model, self._tracked()))
        else:
            if tracking is None:
                keys, drop = frozenset(numeric.keys_of(models.get_params(model))), set()
                texts = base[2] + texts
            else:
                model, kept, drop = tracking.take_patch(key, meta.version, model, self._tracked())
                keys = frozenset(kept | drop)
            ref = base[1].patched(meta.version, model, drop)  # (in place on the newest)
            if ref is None:
                self.unusable_patches += 1
                return None
            self._patch_keys[(meta.epoch, meta.shard, meta.version)] = (meta.patch_of, keys)
            if len(self._patch_keys) > LOG_LENGTH * max(1, meta.shards):
                del self._patch_keys[next(iter(self._patch_keys))]
        head = SliceMeta(meta.name, meta.epoch, meta.shards, meta.shard, meta.version)  # type: ignore[arg-type]
        return self.assembler.on_slice(head, (meta, ref, texts))

    def changed_between(self, old: int, new: int) -> set | None:
        """The features whose entries differ between assembled versions ``old`` and ``new`` (a replica based on
        ``old`` rebases on ``new`` in place on them: ``Replica.rebase``), or ``None`` when this reader does not
        know: a whole slice came in between, or ``old`` is not among the recent versions it assembled.  The union
        of the keys of every shard's patches from ``old``'s slice version to ``new``'s."""
        a, b = self._log.get(old), self._log.get(new)
        if a is None or b is None or a[0] != b[0] or len(a[1]) != len(b[1]):
            return None
        epoch, out = b[0], set()
        for shard, (first, last) in enumerate(zip(a[1], b[1])):
            v = last
            while v != first:
                step = self._patch_keys.get((epoch, shard, v))
                if step is None or step[0] < first:
                    return None  # a whole slice (or one this reader no longer knows) in between
                out |= step[1]
                v = step[0]
        return out

    def _log_change(self, manifest: Manifest) -> None:
        """Remember the slice versions of ``manifest``, assembled now."""
        self._log[manifest.version] = (manifest.epoch, manifest.slices)
        if len(self._log) > LOG_LENGTH:
            del self._log[next(iter(self._log))]

    def _assembled(self, out) -> tuple[Accepted | None, Any, str | None]:
        """The complete set as an entry (its manifest's text, its slices' texts) and the joined model."""
        if out is None:
            return None, None, None
        manifest, parts = out.manifest, out.slices
        if self.rules.shard is not None:
            return self._own_slice(manifest, parts[self.rules.shard])
        self._log_change(manifest)
        if self.tracking is not None and self.tracking.sweep(self._tracked(), self._chains()):
            self._model = None  # (the joined model still holds the swept entries: join anew)
        metas = [m for m, _, _ in parts]
        slice_models = [ref.model() for _, ref, _ in parts]
        if any(m is None for m in slice_models):  # (an older version whose undo records are gone: the next one)
            return None, None, None
        model = self._join(slice_models, manifest.version)
        first = metas[0]  # shard 0 keeps the model's counts
        text, created = self._manifests.get(manifest.version, ("", 0.0))
        meta = ModelMeta(name=manifest.name, version=manifest.version, created_at=created or first.created_at,
                         events=first.events, counts=first.counts, shards=manifest.shards, epoch=manifest.epoch,
                         slices=tuple(SliceInfo(s, v, m.acked, m.refused_updates)
                                      for s, (v, m) in enumerate(zip(manifest.slices, metas))))
        return Accepted(meta, text, tuple(t for _, _, chain in parts for t in chain)), model, None

    def _chains(self) -> list:
        """The chains of the slice versions this reader holds, each once."""
        chains = {id(ref.chain): ref.chain for versions in self.assembler.held.values()
                  for _, ref, _ in versions.values()}
        return list(chains.values())

    def _own_slice(self, manifest: Manifest, part: tuple) -> tuple[Accepted | None, Any, str | None]:
        """A shard's reader: the manifest's version of this shard's slice, as an entry (the manifest's text and
        this shard's chain) and the slice model (the chain's own: written in place by the next patch)."""
        meta, ref, chain = part
        model = ref.model()
        if model is None:
            return None, None, None
        text, created = self._manifests.get(manifest.version, ("", 0.0))
        head = ModelMeta(name=manifest.name, version=manifest.version, created_at=created or meta.created_at,
                         shards=manifest.shards, epoch=manifest.epoch, shard=self.rules.shard)
        return Accepted(head, text, tuple(chain)), model, None

    def _join(self, slice_models: list, version: int) -> Any:
        """The model the slices of ``version`` make: a new join, or (``rules.in_place``) the last one with the
        features changed since written in place (the same parameters)."""
        model = self._model
        changed = self.changed_between(self._model_version, version) \
            if self.rules.in_place and model is not None else None
        if changed is not None:
            adapter = models.adapter_for(model)
            parts = [models.adapter_for(m).get_at(m, changed) for m in slice_models]
            if adapter.in_place(model) and all(p is not None for p in parts):
                adapter.set_at(model, sharding.join(model, parts), changed)
                self._model_version = version
                return model
        if not self.rules.in_place:
            return _joined(slice_models, version)
        # (no base remembered: it would go stale as the model changes in place)
        self._model, self._model_version = _joined(slice_models, None), version
        return self._model

    def seed(self, entry: Accepted) -> None:
        """Hold the slices of an assembled entry kept in state (a restored reader), as if just read."""
        if not entry.parts or self.assembler.current is not None:
            return
        for text in entry.parts:  # each shard's chain in order: a patch finds the version it applies to
            document = read_document(text)
            if document is not None:
                self._take(document.meta, models.from_wire(document.doc), text)
        manifest = manifest_doc.read_manifest(entry.text)
        if manifest is not None:
            self._manifests = {manifest.version: (entry.text, entry.meta.created_at or 0.0)}
            self.assembler.on_manifest(manifest)


def _joined(slice_models: list, version: int | None) -> Any:
    """One model holding every slice's parameters (the first slice's hyper-parameters); remembering ``version``
    as its base (``models.base_of``) unless ``None``."""
    model = slice_models[0].clone()  # (hyper-parameters: set_params writes every learned leaf)
    return models.set_params(model, sharding.join(model, [models.get_params(m) for m in slice_models]),
                             version=version, trusted=True)  # (validated slices; join builds new maps)


def entry_model(entry: Accepted) -> Any:
    """The estimator an accepted entry holds: its document rebuilt, or an assembled model's slices joined."""
    if entry.parts:
        slices: dict = {}  # shard -> its model so far (the chains are in order: a whole slice, then patches)
        for text in entry.parts:
            document = read_document(text)
            if document is not None:
                model, shard = models.from_wire(document.doc), document.meta.shard
                more = document.meta.patch_of is not None or document.meta.page > 0  # (a patch, or a later page)
                slices[shard] = patched_copy(slices[shard], model) if more else model
        return _joined([slices[s] for s in sorted(slices)], entry.version)
    return models.from_wire(entry.text)
