"""Moving a sharded model from M to M' shards (``operators.resharding``, ``riverflink reshard``): the newest
version of an old epoch, published as slices of a new one, is the same model; a new job's mergers and replicas
start from it and go on learning."""

from __future__ import annotations

import random

import pytest

from riverflink import models
from riverflink.models import sharding
from riverflink.models.document import ModelMeta, read_document
from riverflink.models.signing import Signer
from riverflink.models.spec import build
from riverflink.operators.loop import LoopSettings, MergerSide, ReplicaSide
from riverflink.operators.merge_state import next_version
from riverflink.operators.messages import update_shard
from riverflink.operators.model_feed import FeedRules, ModelFeed
from riverflink.operators.resharding import resharded
from riverflink.pipelines.click_stream import click_events
from tests.cluster_jobs import riverflink
from tests.test_sharded_feed import SPEC, _run

NOW = 5_000.0  # (the version window of the feeds below: versions up to NOW in ms)


def _newest(records, feed: ModelFeed):
    entry = model = None
    for value in records:
        newer, newer_model, problem = feed.offer(value, entry, now=NOW)
        assert problem is None, problem
        if newer is not None:
            entry, model = newer, newer_model
    return entry, model


def _old_epoch(signer: Signer):
    """What a job with --shards 2 left on ``models`` (patches and pages included): its records, the newest
    model a reader assembles from them, and that model's entry."""
    records, *_ = _run(2, signer, rounds=4, patches=3, page_bytes=6_000)
    entry, model = _newest(records, ModelFeed(FeedRules("m")))
    assert entry is not None and entry.meta.shards == 2
    return records, entry, model


@pytest.mark.parametrize("shards, limit", [(3, 6_000), (1, 900_000)])
def test_a_resharded_model_is_the_newest_model_of_the_old_epoch(shards, limit):
    signer = Signer.generate()
    old, entry, model = _old_epoch(signer)
    version = next_version(entry.version, NOW)
    new = resharded(model, entry.meta, shards, version=version, epoch=8, now=NOW, max_record_bytes=limit,
                    signer=signer)
    assert all(len(record) <= limit for _, record in new)
    # a reader of the whole topic (old records, then the new ones), checking signatures, ends on the new version
    got, got_model = _newest([*old, *(r for _, r in new)], ModelFeed(FeedRules("m", verifier=signer.verifier())))
    assert got.version == version and max(1, len(got.meta.slices)) == shards
    assert got.meta.events == entry.meta.events and got.meta.epoch == (8 if shards > 1 else 0)
    assert models.get_params(got_model) == models.get_params(model)
    if shards > 1:
        docs = [read_document(r) for _, r in new[:-1]]
        assert any(d.meta.pages > 1 for d in docs)  # (the slices outgrew 6,000 bytes: pages)
        assert {k for k, _ in new} == {"m", *(f"m#{s}" for s in range(shards))}


def test_a_new_jobs_mergers_and_replicas_start_from_the_resharded_model_and_learn_on():
    old, entry, model = _old_epoch(Signer.generate())
    version = next_version(entry.version, NOW)
    new = [r for _, r in resharded(model, entry.meta, 3, version=version, epoch=8, now=NOW, max_record_bytes=6_000)]
    settings = LoopSettings("m", shards=3, epoch=9)
    merger_side, replica_side = MergerSide(settings, build(SPEC)), ReplicaSide(settings, build(SPEC))
    mergers = [merger_side.fresh(s) for s in range(3)]
    # each merger shard reads the whole topic (the job routes each slice to its own shard's merger); the pages
    # of a shard's slice come in any order
    slices = [(read_document(r), r) for r in [*old, *new]]
    rng = random.Random(3)
    for shard, merger in enumerate(mergers):
        own = [(d, r) for d, r in slices if d is not None and d.meta.shard == shard]
        tail = [x for x in own if x[0].meta.version == version]
        rng.shuffle(tail)
        for document, _ in [*(x for x in own if x[0].meta.version != version), *tail]:
            merger_side.on_model(merger, document.meta, models.from_wire(document.doc))
    parts = sharding.split(model, models.get_params(model), 3)
    for shard, merger in enumerate(mergers):
        assert merger.version == version and merger.events == entry.meta.events and merger.merges == 0
        assert sharding.entries(model, merger.params) == sharding.entries(model, parts[shard]) > 0
    assert sharding.join(model, [m.params for m in mergers]) == models.get_params(model)
    # a replica of the new job rebases on the new manifest and learns; its update merges on the resharded slices
    got, got_model = _newest([*old, *new], ModelFeed(FeedRules("m")))
    replica = replica_side.fresh()
    params = models.get_params(got_model)
    assert replica_side.on_model(replica, 0, got.meta, lambda: params)
    events = list(click_events(300, seed=21))
    learned = replica_side.on_events(replica, 0, [x for x, _ in events], [y for _, y in events])
    pieces = learned.updates or replica_side.encode(replica.take_update("m", "0"), replica)
    docs = [merger_side.on_update(mergers[update_shard(p)], p, now=NOW + 1).document for p in pieces]
    assert all(d is not None and d["meta"]["events"] == entry.meta.events + len(events) for d in docs)
    for merger in mergers:
        assert merger.merges == 1 and merger.version > version  # (a merge on the slice, not afresh)
    merged = sharding.join(model, [m.params for m in mergers])
    assert merged["steps"][1]["opt_n"].keys() >= params["steps"][1]["opt_n"].keys()  # nothing of the old model lost


def test_a_merger_that_has_merged_takes_no_resharded_slice():
    old, entry, model = _old_epoch(Signer.generate())
    new = resharded(model, entry.meta, 2, version=next_version(entry.version, NOW), epoch=8, now=NOW)
    side = MergerSide(LoopSettings("m", shards=2, epoch=9), build(SPEC))
    merger = side.fresh(0)
    merger.merges, before = 1, models.get_params(build(SPEC))
    document = read_document(new[0][1])
    side.on_model(merger, document.meta, models.from_wire(document.doc))
    assert merger.version == document.meta.version and merger.params == before  # (its counter only)


def test_families_that_cannot_be_sharded_are_refused():
    model = build("GaussianNB")
    with pytest.raises(ValueError, match="shard"):
        resharded(model, ModelMeta(name="g", version=3), 2, version=4, epoch=1, now=NOW)
    with pytest.raises(ValueError, match="over the 6,000-byte record limit: keep it sharded"):
        _, entry, model = _old_epoch(Signer.generate())
        resharded(model, entry.meta, 1, version=next_version(entry.version, NOW), epoch=1, now=NOW,
                  max_record_bytes=6_000)
    with pytest.raises(ValueError, match="--shards must be"):
        resharded(build(SPEC), ModelMeta(name="m", version=3), 0, version=4, epoch=1, now=NOW)


@pytest.mark.integration
def test_riverflink_reshard_on_a_real_broker(kafka_bootstrap):
    """``riverflink reshard`` reads an old epoch's records off a topic and publishes the same model as three
    slices (pages under --max-record-bytes), which a reader of the topic then assembles; a model that is not on
    the topic is one error line."""
    import time

    from riverflink.pipelines import kafka_io
    from riverflink.pipelines.live_model import LiveModel

    old, entry, model = _old_epoch(Signer.generate())
    topic = f"models-reshard-{int(time.time() * 1000)}"
    kafka_io.create_topics(kafka_bootstrap, {topic: 1})
    kafka_io.produce(kafka_bootstrap, topic, old)
    res = riverflink("reshard", "--bootstrap-servers", kafka_bootstrap, "--models-topic", topic, "--model-name", "m",
                     "--shards", "3", "--max-record-bytes", "10000", "--idle", "2")
    assert res.returncode == 0, res.stderr
    assert f"version {entry.version} (2 shard(s), {entry.meta.events} events)" in res.stdout
    assert "warning" not in res.stderr  # (the old versions are long past: no job of theirs runs)
    with LiveModel(kafka_bootstrap, "m", topic=topic) as live:
        deadline = time.time() + 30
        while time.time() < deadline and (live.version or 0) <= entry.version:
            time.sleep(0.2)
        assert live.version > entry.version
        assert models.get_params(live.model) == models.get_params(model)
    records = kafka_io.read_tail(kafka_bootstrap, topic, 200)
    fresh = [d for r in records if (d := read_document(r)) is not None and d.meta.version == live.version]
    assert {d.meta.shard for d in fresh} == {0, 1, 2} and all(d.meta.shards == 3 for d in fresh)
    assert all(d.meta.epoch == entry.meta.epoch + 1 for d in fresh)  # (the next epoch: see cmd_reshard)
    assert all(len(r) <= 10_000 for r in records[len(old):])
    res = riverflink("reshard", "--bootstrap-servers", kafka_bootstrap, "--models-topic", topic, "--model-name", "x",
                     "--shards", "3", "--idle", "1")
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"riverflink: error: no complete version of model 'x' on {topic} (0 record(s) refused)"]


def test_a_new_merger_waits_for_the_version_its_replicas_start_from():
    """A replica of a new job read the resharded model before its merger did: the merger holds the update until
    it has read the version the update is based on, then merges on it; a version it never reads is waited for
    only ``AWAIT_BASE_S``."""
    from riverflink.operators.merge_state import AWAIT_BASE_S

    old, entry, model = _old_epoch(Signer.generate())
    version = next_version(entry.version, NOW)
    new = [r for _, r in resharded(model, entry.meta, 2, version=version, epoch=8, now=NOW)]
    got, got_model = _newest([*old, *new], ModelFeed(FeedRules("m")))
    settings = LoopSettings("m", shards=2, epoch=9)
    for reads_its_slice in (True, False):
        merger_side, replica_side = MergerSide(settings, build(SPEC)), ReplicaSide(settings, build(SPEC))
        mergers = [merger_side.fresh(s) for s in range(2)]
        replica, params = replica_side.fresh(), models.get_params(got_model)
        replica_side.on_model(replica, 0, got.meta, lambda: params)
        events = list(click_events(250, seed=5))
        learned = replica_side.on_events(replica, 0, [x for x, _ in events], [y for _, y in events])
        pieces = learned.updates or replica_side.encode(replica.take_update("m", "0"), replica)
        for piece in pieces:
            out = merger_side.on_update(mergers[update_shard(piece)], piece, now=NOW)
            assert out.document is None and out.wait  # (held: a timer looks again)
        assert all(merger_side.on_timer(m, now=NOW + 1).document is None for m in mergers)
        if reads_its_slice:
            for value in new:
                document = read_document(value)
                if document is not None:
                    merger_side.on_model(mergers[document.meta.shard], document.meta, models.from_wire(document.doc))
            docs = [merger_side.on_timer(m, now=NOW + 2).document for m in mergers]
            assert all(d["meta"]["events"] == entry.meta.events + len(events) for d in docs)
            assert sharding.join(model, [m.params for m in mergers])["steps"][1]["opt_steps"] == \
                models.get_params(model)["steps"][1]["opt_steps"] + len(events)
        else:
            docs = [merger_side.on_timer(m, now=NOW + AWAIT_BASE_S + 1).document for m in mergers]
            assert all(d["meta"]["events"] == len(events) for d in docs)  # (merged at last, afresh)
