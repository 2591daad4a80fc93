"""Scatter/gather serving (pure): a scatter, one scorer per shard holding its slice alone, and a gather answer every
request exactly as the whole model of the manifest it was stamped with, to 1e-9, whatever order slices and manifests
come in (``operators.scatter_gather``)."""

from __future__ import annotations

import orjson
import pytest

from riverflink import models
from riverflink.models import sharding
from riverflink.models.document import read_document
from riverflink.models.partial_scores import check_partial, finish, link_of, partial_score
from riverflink.models.signing import Signer
from riverflink.models.spec import build
from riverflink.operators.frames import Record
from riverflink.operators.model_feed import FeedRules, ModelFeed
from riverflink.operators.scatter_gather import Gather, Scatter, ShardScorer
from riverflink.pipelines.click_stream import click_events
from tests.test_sharded_feed import _run


def _requests(n: int, seed: int) -> list[Record]:
    return [Record(0, i, 1_000, None, orjson.dumps({"id": f"r{seed}-{i}", "x": x}))
            for i, (x, _) in enumerate(click_events(n, seed=seed))]


def _serve(records: list[str], shards: int, verifier) -> tuple[list[dict], dict, list[int], int]:
    """Every record to the scatter, a batch of requests after each; returns (answers, the whole models by manifest
    version as a reader of every shard assembles them, the slice entries each scorer held at the end, refusals)."""
    scatter = Scatter(FeedRules("m", verifier=verifier))
    scorers = [ShardScorer(FeedRules("m", verifier=verifier, in_place=True, shard=s)) for s in range(shards)]
    gather, answers = Gather(), []
    whole, current, by_version = ModelFeed(FeedRules("m", verifier=verifier)), None, {}
    for n, value in enumerate(records):
        entry, model, problem = whole.offer(value, current, now=5_000.0)
        assert problem is None
        if entry is not None:
            current, by_version[entry.version] = entry, model
        sends, problem = scatter.on_model(value, now=5_000.0)
        assert problem is None
        for shard, text in sends:
            assert scorers[shard].on_model(text, now=5_000.0) is None
        given, batch, context = scatter.on_requests(_requests(5, seed=n))
        answers += [orjson.loads(a) for a, _ in given]
        if context is None:
            continue
        held, lines = None, None
        for shard, payload in batch:
            _, partials = scorers[shard].on_batch(payload)
            held, lines = gather.step(held, "p", partials)
        held, lines = gather.step(held, "c", context)
        assert held is None
        answers += [dict(orjson.loads(a), _x=x) for a, (x, _) in zip(lines, click_events(5, seed=n))]
    entries = [sharding.entries(s.model, models.get_params(s.model)) for s in scorers]
    return answers, by_version, entries, gather.inconsistent


@pytest.mark.parametrize("order", ["published", "manifests_early"])
@pytest.mark.parametrize("patches,page_bytes", [(0, None), (4, None), (4, 6_000)])
def test_answers_equal_the_whole_model_of_their_version(order, patches, page_bytes):
    signer = Signer.generate()
    records, *_ = _run(3, signer, rounds=4, patches=patches, page_bytes=page_bytes)
    if order == "manifests_early":  # each manifest read before the last two records published ahead of it
        for i in range(len(records)):
            if orjson.loads(records[i]).get("schema", "").startswith("riverflink.manifest") and i >= 2:
                records.insert(i - 2, records.pop(i))
    answers, by_version, entries, inconsistent = _serve(records, 3, signer.verifier())
    ok = [a for a in answers if a["status"] == "ok"]
    assert inconsistent == 0 and len(ok) > 0.8 * len(answers), (len(ok), len(answers))
    assert {a["status"] for a in answers} <= {"ok", "no_model_yet"}
    versions = set()
    for a in ok:
        model = by_version[a["model_version"]]
        versions.add(a["model_version"])
        assert abs(dict(map(tuple, a["proba"]))[True] - model.predict_proba_one(a["_x"])[True]) < 1e-9
        assert a["prediction"] == model.predict_one(a["_x"])
    assert len(versions) >= 3  # (answers moved with the model)
    # each scorer holds about a third of the model's per-feature entries
    final = by_version[max(by_version)]
    total = sharding.entries(final, models.get_params(final))
    assert sum(entries) >= total and max(entries) < 0.5 * total, (entries, total)


def test_partial_scores_of_a_pipeline_sum_to_its_answer():
    model = build("StandardScaler|LinearRegression")
    for i in range(80):
        model.learn_one({f"f{i % 11}": 1.0 + i % 4, i % 5: 2.0}, float(i % 7))
    check_partial(model)
    slices = [models.set_params(model.clone(), p) for p in sharding.split(model, models.get_params(model), 4)]
    for i in range(20):
        x = {f"f{i % 13}": float(i), i % 6: 1.0}
        total = sum(partial_score(s, x, shard, 4) for shard, s in enumerate(slices))
        assert abs(finish(link_of(model), total, False)[0] - model.predict_one(x)) < 1e-9


def test_what_scatter_gather_cannot_serve_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="drop_first"):
        check_partial(build("OneHotEncoder(drop_first=true)|LogisticRegression"))
    scatter = Scatter(FeedRules("m"))
    whole = models.dumps(models.to_wire(build("LogisticRegression"), name="m", version=5, created_at=1.0))
    assert read_document(whole) is not None
    sends, problem = scatter.on_model(whole, now=5_000.0)
    assert sends == [] and "whole model" in problem and scatter.refused == 1
    sends, problem = scatter.on_model(b"\x00garbage", now=5_000.0)
    assert sends == [] and problem and scatter.refused == 2
    # requests before any complete manifest are answered at once
    given, batch, context = scatter.on_requests(_requests(3, seed=1) + [Record(0, 9, 1, None, b"{not json")])
    assert [orjson.loads(a)["status"] for a, _ in given] == ["no_model_yet"] * 3 + ["bad_request"] and context is None
    assert [status for _, status in given] == ["no_model_yet"] * 3 + ["bad_request"]


def test_a_restored_scorer_answers_as_before():
    """A scorer rebuilt from what its job keeps in state (the entry it stood on, the slice records waiting) takes
    the next manifests and answers as one that ran through."""
    import pickle

    signer = Signer.generate()
    records, *_ = _run(2, signer, rounds=4, patches=4)
    rules = [FeedRules("m", verifier=signer.verifier(), in_place=True, shard=s) for s in range(2)]
    scatter, ran = Scatter(FeedRules("m", verifier=signer.verifier())), [ShardScorer(r) for r in rules]
    restored: list = [None, None]
    for n, value in enumerate(records):
        sends, _ = scatter.on_model(value, now=5_000.0)
        for shard, text in sends:
            ran[shard].on_model(text, now=5_000.0)
            if restored[shard] is not None:
                restored[shard].on_model(text, now=5_000.0)
        if n == len(records) // 2:  # (what the job's state holds, through pickle as Flink keeps it)
            scatter = pickle.loads(pickle.dumps(scatter))
            for s, scorer in enumerate(ran):
                restored[s] = ShardScorer(rules[s])
                restored[s].restore(*pickle.loads(pickle.dumps((scorer.entry, scorer.pending))))
                assert restored[s].version == scorer.version is not None
            at_restore = ran[0].version
    _, batch, _ = scatter.on_requests(_requests(20, seed=3))
    assert ran[0].version > at_restore  # (the restored scorers took later manifests too)
    for shard, payload in batch:
        assert restored[shard].version == ran[shard].version
        assert orjson.loads(restored[shard].on_batch(payload)[1]) == orjson.loads(ran[shard].on_batch(payload)[1])


def test_partials_of_another_version_answer_no_model_yet_and_are_counted():
    gather = Gather()
    ctx = orjson.dumps({"b": "7", "v": 5, "created_at": 1.0, "shards": 2, "ids": ["a", "b"], "ts": [1, 2]}).decode()
    held, lines = gather.step(None, "c", ctx)
    held, lines = gather.step(held, "p", orjson.dumps({"s": 0, "v": 5, "p": [0.1, 0.2], "link": "Log",
                                                       "classifier": True}).decode())
    assert lines is None
    held, lines = gather.step(held, "p", orjson.dumps({"s": 1, "v": 4, "p": None}).decode())
    assert held is None and [orjson.loads(a)["status"] for a in lines] == ["no_model_yet"] * 2
    assert gather.inconsistent == 2
