"""Sharded parameters (pure): shard ownership, slices, and readers that only ever see complete, consistent sets."""

from __future__ import annotations

import random

import pytest

from riverflink.models import get_params
from riverflink.models.sharding import join, shard_of, split
from riverflink.models.spec import build
from riverflink.operators.slice_assembly import Manifest, ManifestWriter, SliceAssembler, SliceMeta
from riverflink.pipelines.click_stream import click_events


def test_shard_of_is_stable_and_balanced_on_hashed_and_named_features():
    """The same owner in every process (another hash seed; pinned values) and 1/M of the features each, +-15%."""
    import os
    import subprocess
    import sys

    names = [f"site=s{i}" for i in range(50)] + list(range(50))
    code = f"from riverflink.models.sharding import shard_of; print([shard_of(k, 16) for k in {names!r}])"
    other = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": "123"},
                           capture_output=True, text=True, check=True).stdout.strip()
    assert other == str([shard_of(k, 16) for k in names])
    assert [shard_of(k, 7) for k in (0, 1, "0", "ad=a1")] == [4, 2, 3, 4]
    features = {k for x, _ in click_events(20_000, seed=5) for k in x}
    for shards in (4, 16):
        counts = [0] * shards
        for k in features:
            counts[shard_of(k, shards)] += 1
        mean = len(features) / shards
        assert max(counts) / mean < 1.15 and min(counts) / mean > 0.85, counts


@pytest.mark.parametrize("spec", ["LogisticRegression(ftrl_l1=0.5)",
                                  "FeatureHasher(n_features=65536)|LogisticRegression(ftrl=true)",
                                  "StandardScaler|LinearRegression"])
def test_split_then_join_gives_the_model_back(spec):
    model = build(spec)
    for x, y in click_events(2000, seed=2):
        model.learn_one(x, float(y) if "Linear" in spec else y)
    params = get_params(model)
    slices = split(model, params, 5)
    assert join(model, slices) == params
    sizes = [len(str(s)) for s in slices[1:]]
    assert min(sizes) > 0.5 * max(sizes)  # per-feature entries spread over the shards


def test_unshardable_models_are_refused():
    with pytest.raises(ValueError, match="GaussianNB cannot be sharded"):
        split(build("GaussianNB"), {}, 2)


def test_readers_never_assemble_a_mix_of_manifests_whatever_the_arrival_order():
    """Three shards publish slices; a writer names them in manifests; every reader gets the messages in its own
    random order (slices of several versions, manifests late or early) and must only ever assemble exactly
    the slice versions some manifest named, newer and newer."""
    rng = random.Random(3)
    shards = 3
    writer = ManifestWriter("m", epoch=1, shards=shards)
    messages, named = [], {}
    for step in range(120):  # (a manifest once every shard has published anew, or after 3 new slices)
        shard = rng.randrange(shards)
        version = step + 1
        messages.append(("slice", SliceMeta("m", 1, shards, shard, version), (shard, version)))
        manifest = writer.on_slice(shard, version, version=1000 + step)
        if manifest is not None:
            messages.append(("manifest", manifest, None))
            named[manifest.version] = manifest.slices
    assert len(named) > 30
    for trial in range(50):
        order = messages[:]
        # deliver with bounded disorder, as partitions of different topics interleave
        for i in range(len(order) - 1, 0, -1):
            j = max(0, i - rng.randrange(6))
            order[i], order[j] = order[j], order[i]
        reader, last = SliceAssembler("m"), 0
        for kind, meta, payload in order:
            out = reader.on_slice(meta, payload) if kind == "slice" else reader.on_manifest(meta)
            if out is not None:
                assert out.manifest.version > last
                last = out.manifest.version
                assert tuple(v for _, v in out.slices) == named[out.manifest.version]
                assert [s for s, _ in out.slices] == list(range(shards))
        assert last == max(named), (trial, last)


def test_a_new_epoch_with_another_shard_count_replaces_the_old_one_whole():
    reader = SliceAssembler("m")
    reader.on_slice(SliceMeta("m", 1, 2, 0, 1), "a0")
    reader.on_slice(SliceMeta("m", 1, 2, 1, 1), "a1")
    assert reader.on_manifest(Manifest("m", 10, 1, (1, 1))).slices == ("a0", "a1")
    # epoch 2 has 3 shards; its manifest waits for all three of its own slices, never epoch 1's
    assert reader.on_manifest(Manifest("m", 11, 2, (1, 1, 1))) is None
    assert reader.on_slice(SliceMeta("m", 2, 3, 0, 1), "b0") is None
    assert reader.on_slice(SliceMeta("m", 2, 3, 1, 1), "b1") is None
    assert reader.on_slice(SliceMeta("m", 2, 3, 2, 1), "b2").slices == ("b0", "b1", "b2")
    assert reader.on_slice(SliceMeta("m", 1, 2, 0, 2), "late a0") is None and reader.ignored == 1
    assert reader.on_manifest(Manifest("m", 12, 1, (2, 1))) is None and reader.ignored == 2


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, f"{prefix}/{k!r}")
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from _leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, tree


@pytest.mark.parametrize("spec,stream_name,delay", [("LogisticRegression(ftrl_l1=0.5)", "Clicks", 1),
                                                    ("StandardScaler|LogisticRegression", "Phishing", 3),
                                                    ("StandardScaler|LinearRegression", "Friedman", 3)])
def test_four_shards_learn_exactly_what_one_merger_learns(spec, stream_name, delay):
    """The job's loop with 4 merger shards (updates split by shard, slices merged and delay-compensated on their
    own, acknowledged shard by shard, readers on manifests) against one merger, same events, same timing:
    the same final model to roundoff and the same served predictions."""
    from bench.sync import Setting, simulate, stream
    from riverflink.operators.scoring import river_baseline

    if stream_name == "Clicks":
        events = [(x, y) for x, y in click_events(2000, seed=4)]
    else:
        spec_, events = stream(stream_name, 3000)
        assert spec_ == spec
    base = river_baseline(build(spec), events, warmup=500)[:2]
    one, four = (simulate(spec, events, Setting(replicas=4, shards=m, delay=delay), 500, base) for m in (1, 4))
    assert four.updates == 4 * one.updates and four.versions > 0.8 * one.versions
    a, b = dict(_leaves(get_params(one.final))), dict(_leaves(get_params(four.final)))
    assert a.keys() == b.keys() and len(a) > 30
    assert max(abs(a[k] - b[k]) for k in a) < 1e-9
    assert one.served.events == four.served.events
    if one.task == "regression":
        assert abs(one.served.abs_error - four.served.abs_error) < 1e-6 * one.served.abs_error
    else:
        assert one.served.correct == four.served.correct


def test_a_merger_shard_adopts_only_its_own_slices_read_back():
    from riverflink.models.document import ModelMeta
    from riverflink.operators.loop import LoopSettings, MergerSide

    side = MergerSide(LoopSettings("m", shards=4, epoch=1), build("LogisticRegression(ftrl=true)"))
    merger = side.fresh(shard=2)
    model = build("LogisticRegression(ftrl=true)")
    assert not side.on_model(merger, ModelMeta(name="m", version=50, shard=1, shards=4), model)
    assert not side.on_model(merger, ModelMeta(name="m", version=50, shard=2, shards=2), model)
    assert side.on_model(merger, ModelMeta(name="m", version=50, shard=2, shards=4), model) and merger.version == 50
