"""One Hoeffding tree regressor grown from the replicas' merged statistics (models/hoeffding_tree_regressor.py): the
wire rebuilds a tree that keeps learning exactly as River's does, merged statistics equal those of one tree that saw
every event, one replica synced on every event grows River's tree, a stale delta is divided exactly by the split
feature's statistics, hostile documents are refused, and the loop grows one tree that holds every event once."""

from __future__ import annotations

import copy
import json

import pytest
from river import tree
from river.tree.nodes.branch import DTBranch
from river.tree.splitter import EBSTSplitter

from riverflink import models
from riverflink.models import hoeffding_tree_regressor as regressor
from riverflink.models.tree_structure import branch_test, child, describe, freeze, grow, walk
from tests import streams
from tests.test_trees import _edit, close, learned


def statistics(params: dict, models_too: bool = True) -> dict:
    """The params without the merger's bookkeeping, and without the leaf models and decayed errors unless
    ``models_too`` (they depend on what each replica's leaf model predicted along the way)."""
    out = copy.deepcopy(params)
    out["model"].pop("growth")
    for node in out["nodes"].values():
        node.pop("last_attempt", None)
        if not models_too:
            node.pop("linear", None)
            node.pop("fmse", None)
    return out


def splits_of(model) -> dict:
    """``{path: test}`` of a tree's branches."""
    return {p: branch_test(n) for p, n in walk(model._root) if isinstance(n, DTBranch)} if model._root else {}


@pytest.mark.parametrize("leaf_prediction", ["mean", "model", "adaptive"])
def test_the_wire_rebuilds_a_regressor_that_keeps_learning_as_river_does(leaf_prediction):
    events = streams.friedman_shops(3000, shops=leaf_prediction == "mean")  # (River's linear leaves take numbers)
    river_tree = learned(tree.HoeffdingTreeRegressor(grace_period=100, leaf_prediction=leaf_prediction),
                         events[:1500])
    assert describe(river_tree)["branches"] >= 3
    params = models.get_params(river_tree)
    if leaf_prediction == "mean":  # both splitter kinds carried
        assert any(n.get("nominal") for n in params["nodes"].values() if "leaf" in n)
    copy_ = models.from_wire(json.loads(models.dumps(models.to_wire(river_tree, name="t", version=1))))
    close(models.get_params(copy_), params)
    for x, y in events[1500:]:  # both go on learning, splitting and pruning their E-BSTs alike
        assert abs(copy_.predict_one(x) - river_tree.predict_one(x)) < 1e-9
        river_tree.learn_one(x, y)
        copy_.learn_one(x, y)
    assert describe(copy_) == describe(river_tree) and describe(copy_)["branches"] > 3
    close(models.get_params(copy_), models.get_params(river_tree))


@pytest.mark.parametrize("leaf_prediction", ["mean", "adaptive"])
def test_merged_regression_statistics_equal_those_of_one_tree_that_saw_every_event(leaf_prediction):
    events = streams.friedman_shops(2400, seed=1, shops=leaf_prediction == "mean")
    base = learned(tree.HoeffdingTreeRegressor(grace_period=100, leaf_prediction=leaf_prediction), events[:1000])
    doc = models.to_wire(base, version=1)
    replicas = [freeze(models.from_wire(doc)) for _ in range(3)]
    parts = streams.split(events[1000:], 3)
    for replica, part in zip(replicas, parts):
        learned(replica, part)
    one = learned(freeze(models.from_wire(doc)), events[1000:])
    merged = models.apply_deltas(base, models.get_params(base), [models.delta(r) for r in replicas],
                                 [len(p) for p in parts], version=2)
    assert describe(merged) == describe(base)  # replicas never split
    close(statistics(models.get_params(merged), models_too=False),
          statistics(models.get_params(one), models_too=False))
    assert models.get_params(merged)["model"]["dropped"] == 0 == models.get_params(merged)["model"]["rerouted"]


@pytest.mark.parametrize("leaf_prediction", ["mean", "adaptive"])
def test_one_replica_synced_on_every_event_grows_rivers_regressor(leaf_prediction):
    """K=1 at the model level: a frozen replica learns one event, the merger adds its delta and grows (River's
    ``_attempt_to_split``, and its E-BST pruning after a failed attempt), the replica rebases.  Same splits at the
    same events, the same predictions, and River's statistics, leaf models and decayed errors at the end.  (On
    numeric features: River does not attempt a split after an event that reached its leaf without the branch's
    feature, down the heavier path, while the merger attempts once the weight is there: with such events the
    merger's attempts can come an event early, seen once in 2,000 events with a nominal feature missing in 5%.)"""
    events = streams.friedman_shops(1500, seed=2, shops=False)
    river = tree.HoeffdingTreeRegressor(grace_period=40, leaf_prediction=leaf_prediction)
    template = tree.HoeffdingTreeRegressor(grace_period=40, leaf_prediction=leaf_prediction)
    params = models.get_params(template)
    for i, (x, y) in enumerate(events):
        replica = freeze(models.set_params(template.clone(), params, version=i))
        assert abs(replica.predict_one(x) - river.predict_one(x)) < 1e-9, i
        replica.learn_one(x, y)
        merged = models.apply_deltas(template, params, [models.delta(replica)], [1])
        grow(merged)
        params = models.get_params(merged)
        river.learn_one(x, y)
        assert splits_of(merged) == splits_of(river), i
    assert describe(river)["branches"] >= 10
    close(statistics(params), statistics(models.get_params(river)), tol=1e-6)


def test_a_stale_delta_is_divided_by_the_split_features_own_statistics():
    """A delta based on the root leaf arrives after the root split: the left child gains exactly the target
    moments of the delta's events at or below the threshold (E-BST keys are the feature's values), the right child
    the rest; the leaf models move by the parts' shares of the change."""
    events = streams.friedman_shops(1800, seed=3, shops=False)
    make = lambda: tree.HoeffdingTreeRegressor(grace_period=1200, splitter=EBSTSplitter(),  # noqa: E731
                                              leaf_prediction="model")
    empty = make()
    doc = models.to_wire(empty, version=0)
    early, late = (freeze(models.from_wire(doc)) for _ in range(2))
    learned(early, events[:1200])
    learned(late, events[1200:1500])
    v1 = models.apply_deltas(empty, models.get_params(empty), [models.delta(early)], [1200], version=1)
    assert grow(v1) == 1
    before = models.get_params(v1)
    v2 = models.apply_deltas(v1, before, [models.delta(late)], [300], version=2)  # late's base: v0
    after = models.get_params(v2)
    assert after["model"]["rerouted"] == 300 and after["model"]["dropped"] == 0 and after["model"]["seen"] == 1500
    root = before["nodes"][""]
    assert "numeric_split" in root, "the test needs a numeric split at the root"
    (feature, threshold), = root["numeric_split"].items()
    went = [[y for x, y in events[1200:1500] if feature in x and (x[feature] <= threshold) == left]
            for left in (True, False)]
    heavier = 0 if before["nodes"]["0"]["stats"][0] >= before["nodes"]["1"]["stats"][0] else 1
    went[heavier] += [y for x, y in events[1200:1500] if feature not in x]
    for i, ys in enumerate(went):
        gained = models.numeric.chan_subtract(after["nodes"][child("", i)]["stats"],
                                              before["nodes"][child("", i)]["stats"])
        mean = sum(ys) / len(ys)
        close(gained, (float(len(ys)), mean, sum((y - mean) ** 2 for y in ys)), tol=1e-6)
        assert after["nodes"][child("", i)]["ebst"] == before["nodes"][child("", i)]["ebst"]  # left out
        assert after["nodes"][child("", i)]["linear"] != before["nodes"][child("", i)]["linear"]


def test_one_replicas_consecutive_regression_deltas_sum_to_its_delta_over_both():
    events = streams.friedman_shops(1500, seed=4, shops=False)
    base = learned(tree.HoeffdingTreeRegressor(grace_period=100), events[:800])
    replica = freeze(models.from_wire(models.to_wire(base, version=1)))
    adapter = models.adapter_for(base)
    learned(replica, events[800:1100])
    first, snapshot = models.delta(replica), models.get_params(replica)
    learned(replica, events[1100:])
    second = adapter.delta(replica, models.get_params(replica), snapshot)
    both = models.delta(replica)
    a = models.apply_deltas(base, models.get_params(base), [adapter.sum_deltas(base, [first, second])], [700])
    b = models.apply_deltas(base, models.get_params(base), [both], [700])
    close(statistics(models.get_params(a)), statistics(models.get_params(b)))


def test_applying_regression_deltas_leaves_the_base_untouched():
    events = streams.friedman_shops(1500, seed=5, shops=False)
    base = learned(tree.HoeffdingTreeRegressor(grace_period=100), events[:1000])
    params = models.get_params(base)
    kept = copy.deepcopy(params)
    replica = freeze(models.from_wire(models.to_wire(base, version=1)))
    learned(replica, events[1000:])
    models.adapter_for(base).apply(base, params, [models.delta(replica)], [500], models.MergePolicy("delta"))
    assert params == kept


def _doc():
    t = learned(tree.HoeffdingTreeRegressor(grace_period=100), streams.friedman_shops(1500, shops=False))
    return json.loads(models.dumps(models.to_wire(t, version=1)))


def _fields(node):
    return dict(node[1])


@pytest.mark.parametrize("attack", ["unknown leaf kind", "negative count", "unsortable keys", "impossible moments",
                                    "splitter off the allow-list", "leaf model off the allow-list",
                                    "unreachable node"])
def test_a_hostile_regressor_document_is_refused(attack):
    doc = _doc()
    nodes = doc["params"]["nodes"]
    leaf = next(n for n in nodes if "leaf" in _fields(n) and _fields(n)["ebst"])
    rows = _fields(leaf)["ebst"][0][1]  # [[key, [n, mean, m2]], ...] of the first numeric feature
    if attack == "unknown leaf kind":
        _edit(leaf, "leaf", [["subprocess", 1]])
    elif attack == "negative count":
        _edit(leaf, "stats", [-5.0, 1.0, 0.0])
    elif attack == "unsortable keys":
        rows.append(["high", [1.0, 2.0, 0.0]])
    elif attack == "impossible moments":
        rows[0][1] = [3.0, 1.0, -40.0]
    elif attack == "splitter off the allow-list":
        doc["hyper"]["splitter"] = {"class": "river.tree.QOSplitter", "args": {}}
    elif attack == "leaf model off the allow-list":
        doc["hyper"]["leaf_model"] = {"class": "river.neighbors.KNNRegressor", "args": {}}
    elif attack == "unreachable node":
        nodes.append(["7/7", copy.deepcopy(leaf[1])])
    with pytest.raises(ValueError):
        models.from_wire(doc)


def test_the_loop_grows_one_regression_tree_that_holds_every_event_once():
    """The replica/merger loop (``bench/sync.simulate``) at K=4 with merged versions three rounds late, so that
    stale deltas reach leaves that have split since: every event counted once, nothing dropped, and the served tree
    (mean leaves) within 1.15x River's MAE after warm-up (bench/trees.py measures the leaf models)."""
    from bench.sync import Setting, simulate
    from riverflink.models.spec import build
    from riverflink.models.sync import SyncPolicy
    from riverflink.operators.merge_state import MergeTrigger
    from riverflink.operators.scoring import river_baseline

    spec = "HoeffdingTreeRegressor(grace_period=200,leaf_prediction=mean)"
    events = streams.friedman_shops(8000, seed=6)
    whole, late, _ = river_baseline(build(spec), events, warmup=2000)
    outcome = simulate(spec, events, Setting(replicas=4, delay=3, batch=37, trigger=MergeTrigger(quorum=1),
                                             sync=SyncPolicy(every_events=50, every_seconds=None)),
                       2000, (whole, late))
    params = models.get_params(outcome.final)
    assert len(events) - 4 * 50 < params["model"]["seen"] <= len(events), params["model"]
    assert params["model"]["dropped"] == 0 and params["model"]["rerouted"] > 0
    assert describe(outcome.final)["branches"] >= 10
    assert outcome.gap(late=True) < 1.15, outcome.gap(late=True)
