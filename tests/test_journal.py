"""A replica's journal (``models.journal``) changes what a sync costs, never what it sends: the same loop run
with and without journals sends equal updates and ends with equal models (pure)."""

from __future__ import annotations

import pytest

from riverflink import models
from riverflink.models import journal
from riverflink.models.adapter import adapter_for
from riverflink.models.spec import build
from riverflink.operators.delay_compensation import Compensator
from riverflink.operators.loop import LoopSettings, MergerSide, ReplicaSide
from riverflink.operators.merge_state import MergerState
from riverflink.operators.messages import decode_update, update_shard
from riverflink.operators.model_feed import FeedRules, ModelFeed
from riverflink.operators.slice_assembly import ManifestWriter
from riverflink.pipelines.click_stream import click_events


def _loop(spec: str, shards: int, mode: str = "exact", in_place: bool = False) -> tuple[list, list]:
    """Three replicas learn click events in batches of 50 and rebase on every model a reader assembles from what
    the mergers publish (whole documents, or slices and manifests).  Returns (every update's delta, in order;
    each replica's final parameters)."""
    settings = LoopSettings("m", shards=shards, epoch=1 if shards > 1 else 0, mode=mode, patches=3)
    side, merger_side = ReplicaSide(settings, build(spec)), MergerSide(settings, build(spec))
    mergers = [merger_side.fresh(s) for s in range(shards)]
    replicas = [side.fresh() for _ in range(3)]
    feed, current = ModelFeed(FeedRules("m", in_place=in_place)), None
    writer = ManifestWriter("m", epoch=1, shards=shards)
    events = list(click_events(1800, seed=5))
    sent, published = [], []

    def publish(doc: dict | None) -> None:
        if doc is None:
            return
        published.append(models.dumps(doc))
        manifest = writer.record_for(doc, 1.0) if shards > 1 else None
        if manifest is not None:
            published.append(manifest)

    for start in range(0, len(events), 150):
        for k, replica in enumerate(replicas):
            batch = events[start + 50 * k: start + 50 * (k + 1)]
            out = side.on_events(replica, k, [x for x, _ in batch], [y for _, y in batch])
            for data in out.updates:
                sent.append(decode_update(data).delta)
                publish(merger_side.on_update(mergers[update_shard(data)], data, now=start + k).document)
        for m in mergers:
            publish(merger_side.on_timer(m, now=start + 100).document)
        waiting = writer.flush_record(1.0) if shards > 1 else None  # the manifest publisher's timer
        if waiting is not None:
            published.append(waiting)
        for value in published:
            entry, model, problem = feed.offer(value, current, now=10_000.0)
            assert problem is None
            if entry is not None:
                current, params = entry, models.get_params(model)
                changed = (lambda base, v=entry.version: feed.changed_between(base, v)) if in_place else None
                at = (lambda keys, m=model: adapter_for(m).get_at(m, keys)) if in_place else None
                for k, replica in enumerate(replicas):
                    side.on_model(replica, k, entry.meta, lambda: params, changed=changed, params_at=at)
        published.clear()
    return sent, [models.get_params(r.model) for r in replicas]


@pytest.mark.parametrize("spec, shards, mode", [
    ("LogisticRegression(ftrl=true)", 1, "exact"),
    ("LogisticRegression(ftrl=true)", 2, "exact"),
    ("FeatureHasher(n_features=4096)|LogisticRegression(ftrl=true)", 1, "exact"),
    ("LogisticRegression(ftrl=true)", 1, "batch"),
])
def test_updates_and_models_are_the_same_with_and_without_journals(spec, shards, mode, monkeypatch):
    journaled = _loop(spec, shards, mode)
    monkeypatch.setattr(journal, "start", lambda model: None)
    plain = _loop(spec, shards, mode)
    assert len(journaled[0]) == len(plain[0]) >= 15
    assert journaled == plain


def _answers(monkeypatch, cls: type, name: str) -> list:
    """Every answer ``cls.name`` gives from now on, in a list (the method still answers as before)."""
    answers, method = [], getattr(cls, name)

    def counted(self, *args):
        answers.append(method(self, *args))
        return answers[-1]

    monkeypatch.setattr(cls, name, counted)
    return answers


@pytest.mark.parametrize("spec, shards", [("LogisticRegression(ftrl=true)", 2), ("StandardScaler|LogisticRegression", 1)])
def test_delay_compensation_on_the_features_merged_since_a_base_equals_it_on_every_entry(spec, shards, monkeypatch):
    """The merger measures a stale update's offset on the features merged since its base alone
    (``Compensator.touched_at``): the same updates and models as comparing every entry.  A sharded merger merges
    in place and rebuilds a base from undo records (``Compensator.params_of``): the same as merging whole slices
    and keeping whole versions."""
    used = _answers(monkeypatch, Compensator, "_touched_since")
    rebuilt = _answers(monkeypatch, Compensator, "params_of")
    undone = _answers(monkeypatch, Compensator, "remember_undo")
    restricted = _loop(spec, shards)
    assert sum(u is not None for u in used) >= 8  # stale updates were compensated on their features
    if shards > 1:  # ... merged in place, on bases rebuilt from undo records
        assert len(undone) >= 15 and sum(b is not None for b in rebuilt) >= 8
        monkeypatch.setattr(MergerState, "in_place", property(lambda self: False))
    monkeypatch.setattr(Compensator, "_touched_since", lambda self, base_version, version: None)
    assert _loop(spec, shards) == restricted


@pytest.mark.parametrize("spec, mode", [("LogisticRegression(ftrl=true)", "exact"),
                                        ("FeatureHasher(n_features=4096)|LogisticRegression(ftrl=true)", "exact"),
                                        ("LogisticRegression(ftrl=true)", "batch")])
def test_replicas_rebasing_in_place_on_what_changed_hold_the_same_models(spec, mode, monkeypatch):
    """A replica told which features changed since its base (``ModelFeed.changed_between``) rebases in place on
    them and the journal's: the same updates and models as rebasing on the whole merged model."""
    known = _answers(monkeypatch, ModelFeed, "changed_between")
    in_place = _loop(spec, 2, mode, in_place=True)
    assert sum(k is not None for k in known) >= 10  # most rebases went in place (patches between whole slices)
    assert _loop(spec, 2, mode) == in_place


def test_an_undo_log_puts_back_exactly_what_learning_changed_since_it_was_opened():
    """``journal.hold``/``undo`` (a replica's save point): learn_one and learn_many, behind a hasher or not."""
    import pandas as pd

    events = list(click_events(300, seed=2))
    for spec in ("LogisticRegression(ftrl=true)", "FeatureHasher(n_features=64)|LogisticRegression(ftrl=true)"):
        model = build(spec)
        for x, y in events[:100]:
            model.learn_one(x, y)
        before = models.get_params(model)
        assert journal.hold(model)
        for x, y in events[100:200]:
            model.learn_one(x, y)
        if "|" not in spec:
            model.learn_many(pd.DataFrame([x for x, _ in events[200:]]).fillna(0.0),
                             pd.Series([y for _, y in events[200:]]))
        assert models.get_params(model) != before
        journal.undo(model)
        assert models.get_params(model) == before
    assert not journal.hold(build("StandardScaler|LogisticRegression(ftrl=true)"))  # (it keeps whole copies)
