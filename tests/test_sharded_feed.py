"""Readers of a sharded model (pure): slices and manifests read off ``models`` become one whole model, validated
like every document, and replicas rebase on it shard by shard (``operators.model_feed.ModelFeed``)."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from riverflink import models
from riverflink.models import manifest as manifest_doc
from riverflink.models.manifest import Manifest
from riverflink.models.paging import paginate
from riverflink.models import numeric, sharding
from riverflink.models.sharding import join
from riverflink.models.document import ModelMeta, read_document
from riverflink.models.signing import Signer, sign
from riverflink.models.spec import build
from riverflink.operators.loop import LoopSettings, MergerSide, ReplicaSide
from riverflink.operators.messages import update_shard
from riverflink.operators import model_feed, slice_versions
from riverflink.operators.model_feed import FeedRules, ModelFeed, _joined, entry_model
from riverflink.operators.slice_assembly import ManifestWriter
from riverflink.pipelines.click_stream import click_events

SPEC = "FeatureHasher(n_features=4096)|LogisticRegression(ftrl=true)"


def _run(shards: int, signer: Signer, rounds: int = 3, patches: int = 0, rebase: bool = False,
         page_bytes: int | None = None):
    """Two replicas learn click events; each update's pieces go to their merger shard; every new slice is
    signed; the manifests a ManifestWriter names follow (and, at each round's end, the one its timer names).  Returns (records in publication order, the
    replica side, the replicas, the mergers).  ``patches``: slices published as patches between whole ones;
    ``rebase``: the replicas rebase on every model a reader assembles, as in the job (else they never do);
    ``page_bytes``: slice documents larger than this go out as pages, as the merger publishes them."""
    settings = LoopSettings("m", shards=shards, epoch=7, patches=patches)
    replicas, mergers = ReplicaSide(settings, build(SPEC)), MergerSide(settings, build(SPEC))
    states = [mergers.fresh(s) for s in range(shards)]
    writer = ManifestWriter("m", epoch=7, shards=shards)
    reps = [replicas.fresh() for _ in range(2)]
    events = list(click_events(200 * rounds, seed=9))
    out = []
    feed, current, read = ModelFeed(FeedRules("m")), None, 0
    for r in range(rounds):
        for k, rep in enumerate(reps):
            for value in out[read:] if rebase else ():  # what was published since this replica's last batch
                entry, model, _ = feed.offer(value, current, now=5_000.0)
                if entry is not None:
                    current, params = entry, models.get_params(model)
                    for j, other in enumerate(reps):
                        replicas.on_model(other, j, entry.meta, lambda: params)
            read = len(out)
            chunk = events[(2 * r + k) * 100: (2 * r + k + 1) * 100]
            learned = replicas.on_events(rep, k, [x for x, _ in chunk], [y for _, y in chunk])
            pieces = learned.updates or replicas.encode(rep.take_update("m", str(k)), rep)
            for piece in pieces:
                doc = mergers.on_update(states[update_shard(piece)], piece, now=1000.0 + len(out)).document
                if doc is None:
                    continue
                pages = paginate(doc, len(models.dumps(doc)), page_bytes) if page_bytes else [doc]
                out.extend(models.dumps(sign(page, signer)) for page in pages)
                manifest = writer.on_slice(doc["meta"]["shard"], doc["meta"]["version"], version=2_000_000 + len(out))
                if manifest is not None:
                    out.append(manifest_doc.dumps(sign(manifest_doc.manifest_document(manifest, 1.0), signer)))
        waiting = writer.flush(version=2_000_000 + len(out))  # the publisher's timer names what waits
        if waiting is not None:
            out.append(manifest_doc.dumps(sign(manifest_doc.manifest_document(waiting, 1.0), signer)))
    return out, replicas, reps, states


def test_a_reader_assembles_exactly_the_slices_a_manifest_names_and_replicas_rebase_on_it():
    signer = Signer.generate()
    records, side, reps, states = _run(3, signer)
    feed = ModelFeed(FeedRules("m", verifier=signer.verifier()))
    current, assembled = None, []
    for value in records:
        entry, model, problem = feed.offer(value, current, now=5_000.0)
        assert problem is None
        if entry is not None:
            current = entry
            assembled.append(entry.version)
            assert models.get_params(model) == models.get_params(entry_model(entry))
    assert len(assembled) >= 5 and assembled == sorted(assembled)
    # the last assembled model is exactly the merger shards' slices joined
    template = build(SPEC)
    assert models.get_params(entry_model(current)) == join(template, [s.params for s in states])
    meta = current.meta
    assert [s.version for s in meta.slices] == [s.version for s in states]
    assert meta.events == states[0].events == 600
    # a replica rebases on it shard by shard: every piece acknowledged, nothing in flight
    rep = reps[0]
    assert side.on_model(rep, 0, meta, lambda: models.get_params(entry_model(current)))
    assert rep.base_version == meta.version and rep.base_slices == tuple(s.version for s in meta.slices)
    assert rep.in_flight == []


def test_forged_slices_and_manifests_are_refused_with_a_reason():
    signer, forger = Signer.generate(), Signer.generate()
    records, *_ = _run(2, forger, rounds=1)
    feed = ModelFeed(FeedRules("m", verifier=signer.verifier()))
    problems = [feed.offer(v, None, now=5_000.0)[2] for v in records]
    assert problems and all(p and "refused" in p for p in problems), problems
    bad = manifest_doc.dumps({"schema": manifest_doc.SCHEMA, "meta": {"name": "m", "version": 5, "slices": [1]}})
    assert "malformed" in ModelFeed(FeedRules("m")).offer(bad, None)[2]


@pytest.mark.parametrize("patches, page_bytes", [(0, None), (3, None), (3, 6_000)])
def test_a_restored_reader_seeded_with_its_entry_assembles_a_manifest_that_reuses_old_slices(patches, page_bytes):
    signer = Signer.generate()
    records, *_ = _run(2, signer, rounds=6 if patches else 3, patches=patches, rebase=bool(patches),
                       page_bytes=page_bytes)
    first = ModelFeed(FeedRules("m"))
    current = None
    history = []
    for value in records:
        entry = first.offer(value, current, now=5_000.0)[0]
        current = entry or current
        history.append(current)
    # restore right after the second-to-last assembly (the manifest that completed it); replay what came after
    cut = min(i for i, e in enumerate(history) if e is not None and e.version == current.version) - 1
    while history[cut] is history[cut - 1]:
        cut -= 1
    kept = history[cut]
    restored = ModelFeed(FeedRules("m"))
    again = None
    for value in records[cut + 1:]:
        again = restored.offer(value, kept, now=5_000.0)[0] or again
    assert again is not None and again.version == current.version and again.text == current.text and again.parts == current.parts
    assert dataclasses.replace(again.meta) == current.meta
    assert not patches or any(read_document(t).meta.patch_of for t in kept.parts)  # a chain was replayed
    assert not page_bytes or any(read_document(t).meta.page for t in kept.parts)  # pages were replayed


def _assembled(records: list, start: int = 0, in_place: bool = False) -> tuple[dict, ModelFeed]:
    """Every model a reader that starts reading at ``records[start]`` assembles: version -> parameters."""
    feed, current, out = ModelFeed(FeedRules("m", in_place=in_place)), None, {}
    for value in records[start:]:
        entry, model, problem = feed.offer(value, current, now=5_000.0)
        assert problem is None
        if entry is not None:
            current, out[entry.version] = entry, models.get_params(model)
            assert models.get_params(entry_model(entry)) == out[entry.version]
    return out, feed


@pytest.mark.parametrize("shards", [2, 3])
def test_slices_published_as_patches_assemble_exactly_the_models_whole_slices_do(shards):
    signer = Signer.generate()
    whole, *_ = _run(shards, signer, rounds=6, rebase=True)
    patched, _, _, states = _run(shards, signer, rounds=6, patches=3, rebase=True)
    docs = [read_document(v) for v in patched if read_document(v) is not None]
    patches = [d for d in docs if d.meta.patch_of is not None]
    assert len(docs) == len(patches) + len([d for d in docs if d.meta.patch_of is None])
    assert len(patches) >= shards and len(docs) - len(patches) >= shards  # whole slices every 4th, per shard
    full, _ = _assembled(whole)
    assembled, feed = _assembled(patched)
    assert len(full) >= 10 and assembled == full and feed.unusable_patches == 0
    assert list(assembled.values())[-1] == join(build(SPEC), [s.params for s in states])
    # a patch holds what its merge touched: smaller than the whole slice of the same shard and version
    sizes = {(read_document(v).meta.shard, read_document(v).meta.version): len(v) for v in whole
             if read_document(v) is not None}
    assert all(d.size < sizes[(d.meta.shard, d.meta.version)] for d in patches)


@pytest.mark.parametrize("patches", [0, 3])
def test_slices_published_as_pages_assemble_exactly_the_models_single_documents_do(patches):
    signer = Signer.generate()
    single, *_ = _run(2, signer, rounds=6, patches=patches, rebase=True)
    paged, *_ = _run(2, signer, rounds=6, patches=patches, rebase=True, page_bytes=6_000)
    docs = [d for v in paged if (d := read_document(v)) is not None]
    assert max(d.meta.pages for d in docs) >= 3 and all(d.size < 6_000 for d in docs)
    assert max(len(v) for v in single) > 12_000  # (the same slices, unpaged)
    full, _ = _assembled(single)
    assembled, feed = _assembled(paged)  # (manifest versions differ: the test numbers them by record)
    assert len(full) >= 10 and list(assembled.values()) == list(full.values()) and feed.unusable_patches == 0


def test_a_slice_version_missing_a_page_is_never_assembled_and_a_bad_page_number_is_refused():
    signer = Signer.generate()
    records, *_ = _run(2, signer, rounds=3, page_bytes=6_000)
    paged = [i for i, v in enumerate(records) if (d := read_document(v)) is not None and d.meta.page == 1]
    gone = read_document(records[paged[-1]]).meta
    version = max(_assembled(records)[0])
    without, _ = _assembled(records[:paged[-1]] + records[paged[-1] + 1:])
    assert version not in without and max(without) < version  # the manifests naming that slice version wait
    doc = read_document(records[paged[0]]).doc
    bad = models.dumps(sign({**doc, "meta": {**doc["meta"], "page": 5, "pages": 2}}, signer))
    assert "page 5 of 2" in ModelFeed(FeedRules("m")).offer(bad, None, now=5_000.0)[2]
    assert gone.pages >= 2


def test_whole_slices_come_once_the_patches_since_the_last_held_as_many_entries_as_the_slice():
    """A chain (a whole slice and its patches) stays about twice the slice, and whole slices get rarer as the
    model grows against what a merge touches (at least ``patches`` patches between two whole slices)."""
    records, *_ = _run(2, Signer.generate(), rounds=10, patches=3, rebase=True)
    template = build(SPEC)
    for shard in (0, 1):
        chain, stretched = [], 0
        for d in (read_document(v) for v in records):
            if d is None or d.meta.shard != shard:
                continue
            entries = sharding.entries(template, models.get_params(models.from_wire(d.doc)))
            if d.meta.patch_of is None and len(chain) >= 3:  # (fewer: the first, or a patch of half the slice)
                assert sum(chain) >= entries, (chain, entries)
                stretched += len(chain) > 3
            chain = [] if d.meta.patch_of is None else chain + [entries]
        assert stretched  # the slice outgrew what four merges touch: more than three patches in a row


def test_a_reader_assembling_in_place_holds_the_models_a_fresh_join_gives(monkeypatch):
    """``FeedRules.in_place``: the features the patches changed are written into the last assembled model."""
    records, *_ = _run(3, Signer.generate(), rounds=6, patches=3, rebase=True)
    joined = []
    monkeypatch.setattr(model_feed, "_joined", lambda *a: joined.append(a) or _joined(*a))
    fresh, _ = _assembled(records)
    joins = len(joined)
    in_place, _ = _assembled(records, in_place=True)
    assert len(fresh) >= 10 and in_place == fresh
    assert joins - (len(joined) - joins) >= 5  # versions written in place (the others follow a whole slice)


@pytest.mark.parametrize("in_place", [False, True])
def test_manifests_read_after_newer_slices_assemble_older_versions_rebuilt_from_undo_records(in_place, monkeypatch):
    """A reader patches each shard's newest slice in place (``operators.slice_versions``); a manifest read after
    newer slices (another partition) names an older version, rebuilt from the undo records: the same models."""
    records, *_ = _run(3, Signer.generate(), rounds=6, patches=3, rebase=True)
    reference, _ = _assembled(records)
    late = _delayed_manifests(records, 4)  # every manifest read four records later than it was published
    rebuilt = []
    method = slice_versions.Chain.rebuilt
    monkeypatch.setattr(slice_versions.Chain, "rebuilt", lambda self, v: rebuilt.append(method(self, v)) or rebuilt[-1])
    delayed, feed = _assembled(late, in_place=in_place)
    assert sum(m is not None for m in rebuilt) >= 5 and feed.unusable_patches == 0
    assert len(delayed) >= 10 and all(delayed[v] == reference[v] for v in delayed)


def _delayed_manifests(records: list, by: int) -> list:
    """``records`` with every manifest moved ``by`` records later (the slices after it come first)."""
    out: list = []
    waiting: list = []  # [records still to pass, manifest]
    for value in records:
        if manifest_doc.is_manifest(orjson.loads(value)):
            waiting.append([by, value])
            continue
        out.append(value)
        for w in waiting:
            w[0] -= 1
        out += [m for n, m in waiting if n <= 0]
        waiting = [w for w in waiting if w[0] > 0]
    return out + [m for _, m in waiting]


def test_a_reader_that_missed_a_patch_base_waits_for_the_next_whole_slice():
    signer = Signer.generate()
    records, *_ = _run(2, signer, rounds=6, patches=3, rebase=True)
    reference, _ = _assembled(records)
    late_start = next(i for i, v in enumerate(records) if (d := read_document(v)) is not None and d.meta.patch_of)
    late, feed = _assembled(records, late_start + 1)
    assert feed.unusable_patches > 0 and late  # it skipped patches, then caught up on whole slices
    assert all(late[v] == reference[v] for v in late) and max(late) == max(reference)


@pytest.mark.parametrize("kind", [{"patch_of": 40}, {"page": 0, "pages": 3}])
def test_a_merger_adopting_a_patch_or_a_page_takes_its_version_but_not_its_parameters(kind):
    settings = LoopSettings("m", shards=2, epoch=7, patches=3)
    merger = MergerSide(settings, build(SPEC)).fresh(1)
    before = merger.params
    meta = ModelMeta(name="m", version=50, shard=1, shards=2, epoch=7, **kind)
    assert merger.adopt(meta, lambda: {"bad": "never taken"})
    assert merger.version == 50 and merger.params is before and merger.since_whole is None


def test_a_manifest_from_the_writer_reads_back():
    m = Manifest("m", version=12, epoch=3, slices=(4, 9, 2))
    assert manifest_doc.read_manifest(manifest_doc.dumps(manifest_doc.manifest_document(m, 1.0))) == m


def test_manifests_match_their_json_schema():
    import json
    import pathlib

    import jsonschema

    schema = json.loads((pathlib.Path(models.__file__).parent / "schema" / "manifest.schema.json").read_text())
    doc = sign(manifest_doc.manifest_document(Manifest("m", version=12, epoch=3, slices=(4, 9)), 1.0),
               Signer.generate())
    jsonschema.validate(doc, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**doc, "meta": {**doc["meta"], "slices": [4]}}, schema)


@pytest.mark.parametrize("late_by", [0, 4])
def test_a_bounded_reader_holds_the_merged_entries_of_every_feature_it_says_it_knows(late_by):
    """``ModelFeed.track`` (working sets): the reader keeps the features its replicas track at each record, and
    whatever it says it knows at a version has that version's merged entries; the rest it does not hold."""
    records, *_ = _run(3, Signer.generate(), rounds=6, patches=3, rebase=True)
    records = _delayed_manifests(records, late_by) if late_by else records
    reference, _ = _assembled(records)
    features = sorted(numeric.keys_of(list(reference.values())[-1]))
    position = [0]

    def tracked() -> set:  # (what replicas hold moves: a window over the features that slides every 10 records)
        start = (position[0] // 10) * len(features) // 20
        return set(features[start: start + len(features) // 3])

    feed, current = ModelFeed(FeedRules("m", in_place=True)), None
    feed.track(tracked)
    known_total = unknown_total = 0
    for position[0], value in enumerate(records):
        entry, model, problem = feed.offer(value, current, now=5_000.0)
        assert problem is None
        if entry is None:
            continue
        current, params, merged = entry, models.get_params(model), reference[entry.version]
        assert not entry.parts  # (no slice texts kept: it restarts empty)
        held = numeric.keys_of(params)
        known = feed.known_at(features, entry.meta)
        assert known <= held <= set(tracked()) | set(features)
        for name in ("opt_z", "opt_n", "weights"):
            leaf = params["steps"][1][name]
            assert {f: leaf[f] for f in known if f in leaf} == {f: merged["steps"][1][name][f] for f in known
                                                               if f in merged["steps"][1][name]}, name
        assert params["steps"][1]["intercept"] == merged["steps"][1]["intercept"]
        known_total, unknown_total = known_total + len(known), unknown_total + len(held - known)
    assert feed.tracking.held() < len(features) / 2 and known_total > 0 and feed.tracking.dropped > 0
