"""Sparse linear models: the O(active features) forms equal River's own, on the wire, merged, and through the loop."""

from __future__ import annotations

import pytest
from river import linear_model, optim, preprocessing

from riverflink import models
from riverflink.models.spec import build
from riverflink.models.sparse_linear_regression import SparseLinearRegression
from riverflink.models.sparse_logistic_regression import SparseLogisticRegression
from riverflink.models.sync import SyncPolicy
from riverflink.operators.loop import LoopSettings, MergerSide, ReplicaSide
from riverflink.operators.model_feed import FeedRules, accept
from riverflink.pipelines.click_stream import click_events

EVENTS = list(click_events(3000, seed=11))
OPTIMIZERS = {
    "sgd": lambda: optim.SGD(0.05),
    "ftrl": lambda: optim.FTRLProximal(),
    "ftrl_l1": lambda: optim.FTRLProximal(alpha=0.1, l1=0.5, l2=0.1),
}


def weight(model, k) -> float:
    return model._weights.get(k, 0.0)


def hashed(x: dict) -> dict:
    """River 0.23's own ``FeatureHasher | LogisticRegression`` raises (its hasher returns a Counter, which the
    linear model's VectorDict refuses): the River reference is fed the hasher's output as a dict."""
    return dict(HASHER.transform_one(x))


HASHER = preprocessing.FeatureHasher(n_features=1 << 12, seed=0)


@pytest.mark.parametrize("opt", OPTIMIZERS)
@pytest.mark.parametrize("hash_first", [False, True])
def test_sparse_logistic_regression_equals_river(opt, hash_first):
    """Every prediction along the stream and every final weight, to roundoff (summation order differs)."""
    encode = hashed if hash_first else dict
    fast = SparseLogisticRegression(optimizer=OPTIMIZERS[opt]())
    river = linear_model.LogisticRegression(optimizer=OPTIMIZERS[opt]())
    worst = 0.0
    for x, y in EVENTS:
        x = encode(x)
        worst = max(worst, abs(fast.predict_proba_one(x)[True] - river.predict_proba_one(x)[True]))
        fast.learn_one(x, y)
        river.learn_one(x, y)
    assert worst < 1e-9, worst
    keys = set(fast._weights) | set(river._weights)
    assert len(keys) > (1000 if hash_first else 3000)
    assert max(abs(weight(fast, k) - weight(river, k)) for k in keys) < 1e-9
    assert abs(fast.intercept - river.intercept) < 1e-12
    if opt.startswith("ftrl"):
        assert fast.optimizer.z.keys() == river.optimizer.z.keys()
        assert max(abs(fast.optimizer.z[k] - river.optimizer.z[k]) for k in fast.optimizer.z) < 1e-9


def test_sparse_linear_regression_equals_river():
    fast, river = SparseLinearRegression(), linear_model.LinearRegression()
    for i, (x, y) in enumerate(EVENTS):
        target = float(y) + 0.01 * (i % 7)
        assert abs(fast.predict_one(x) - river.predict_one(x)) < 1e-9
        fast.learn_one(x, target)
        river.learn_one(x, target)


def test_sparse_models_refuse_what_would_touch_every_weight():
    with pytest.raises(ValueError, match="model-level l1/l2"):
        SparseLogisticRegression(l2=0.01)
    with pytest.raises(ValueError, match="optimizers SGD and FTRLProximal"):
        SparseLogisticRegression(optimizer=optim.Adam())
    with pytest.raises(ValueError, match="bad arguments for LogisticRegression"):
        build("FeatureHasher|LogisticRegression(l2=0.1)")


def test_hashed_ftrl_model_survives_the_wire_with_integer_keys():
    model = build("FeatureHasher(n_features=1048576)|LogisticRegression(ftrl_l1=0.5)")
    for x, y in EVENTS[:500]:
        model.learn_one(x, y)
    back = models.from_wire(models.dumps(models.to_wire(model, name="m", version=1)))
    final = back["SparseLogisticRegression"]
    assert all(isinstance(k, int) for k in final._weights) and all(isinstance(k, int) for k in final.optimizer.z)
    for x, _ in EVENTS[500:700]:
        assert back.predict_proba_one(x) == model.predict_proba_one(x)


def test_one_replica_through_the_loop_equals_river():
    """K=1: a replica learning every event, its updates merged (FTRL's z and n summed), equals River."""
    spec = "FeatureHasher(n_features=1048576)|LogisticRegression(ftrl_l1=0.5)"
    settings = LoopSettings("m", sync=SyncPolicy(every_events=100, every_seconds=None), precision="float64")
    replica_side, merger_side = ReplicaSide(settings, build(spec)), MergerSide(settings, build(spec))
    replica, merger = replica_side.fresh(), merger_side.fresh()
    hasher = preprocessing.FeatureHasher(n_features=1048576, seed=0)
    river = linear_model.LogisticRegression(optimizer=optim.FTRLProximal(l1=0.5))
    final = None
    for start in range(0, 2000, 100):
        batch = EVENTS[start : start + 100]
        out = replica_side.on_events(replica, 0, [x for x, _ in batch], [y for _, y in batch])
        for data in out.updates:
            doc = merger_side.on_update(merger, data, now=float(start)).document
            if doc is not None:
                entry, final, problem = accept(models.dumps(doc), FeedRules("m"), None)
                assert problem is None, problem
                replica_side.on_model(replica, 0, entry.meta, lambda: models.get_params(final))
        for x, y in batch:
            river.learn_one(dict(hasher.transform_one(x)), y)
    assert final is not None
    for x, _ in EVENTS[2000:2300]:
        p = river.predict_proba_one(dict(hasher.transform_one(x)))[True]
        assert abs(final.predict_proba_one(x)[True] - p) < 1e-9


def test_a_stale_ftrl_update_gets_its_weights_from_the_merged_z_and_n():
    """Two replicas learn on the same base; the second one's update arrives after the first was merged (stale):
    the weights of the features it touched are FTRL's own function of the merged (exactly summed) ``z`` and
    ``n``, where ``|z| > l1``; the first, fresh update's weights are merged as learned, as at K=1."""
    from riverflink.models.optimizer_state import ftrl_weight

    spec = "LogisticRegression(ftrl_l1=0.5)"
    settings = LoopSettings("m", sync=SyncPolicy(every_events=100, every_seconds=None), precision="float64")
    replica_side, merger_side = ReplicaSide(settings, build(spec)), MergerSide(settings, build(spec))
    merger, replicas = merger_side.fresh(), [replica_side.fresh(), replica_side.fresh()]
    pieces = []
    for k, replica in enumerate(replicas):
        batch = EVENTS[100 * k: 100 * (k + 1)]
        pieces += replica_side.on_events(replica, k, [x for x, _ in batch], [y for _, y in batch]).updates
    first = merger_side.on_update(merger, pieces[0], now=1.0).document
    after_first = models.get_params(models.from_wire(first))
    assert after_first["weights"] == models.get_params(replicas[0].model)["weights"]  # fresh: as learned
    params = models.get_params(models.from_wire(merger_side.on_update(merger, pieces[1], now=2.0).document))
    opt = build(spec).optimizer
    touched = models.get_params(replicas[1].model)["opt_z"]
    derived = {k: ftrl_weight(opt, params["opt_z"][k], params["opt_n"][k]) for k in touched}
    assert sum(w is not None for w in derived.values()) > 20
    for k, w in derived.items():
        if w is not None:
            assert params["weights"][k] == pytest.approx(w, rel=1e-12), k
