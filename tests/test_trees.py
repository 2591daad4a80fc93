"""One Hoeffding tree grown from the replicas' merged statistics (models/hoeffding_tree.py): the wire rebuilds a
tree that keeps learning as River's own does, merged statistics equal one tree's that saw every event, the merger's
split equals River's on the same events, stale leaves are dropped and counted, hostile documents are refused."""

from __future__ import annotations

import collections
import copy
import json
import math

import pytest
from river import tree

from bench.trees import colours as mixed  # three classes from a nominal and two numeric features
from riverflink import models
from riverflink.models import hoeffding_tree
from tests import streams


def close(p, q, path="params", tol=1e-9):
    """Assert two parameter trees are equal, numbers to ``tol`` (relative)."""
    if isinstance(p, dict):
        assert isinstance(q, dict) and set(p) == set(q), f"{path}: keys {sorted(map(str, set(p) ^ set(q)))}"
        for k in p:
            close(p[k], q[k], f"{path}[{k!r}]", tol)
    elif isinstance(p, tuple):
        assert isinstance(q, tuple) and len(p) == len(q), path
        for i, (a, b) in enumerate(zip(p, q)):
            close(a, b, f"{path}[{i}]", tol)
    else:
        assert math.isclose(p, q, rel_tol=tol, abs_tol=tol), f"{path}: {p} != {q}"


def learned(model, events):
    for x, y in events:
        model.learn_one(x, y)
    return model


def statistics(params: dict, scores: bool = True) -> dict:
    """The params without the merger's bookkeeping (when each leaf last tried to split, whether growth is on), and
    without the adaptive leaves' scores unless ``scores``."""
    out = copy.deepcopy(params)
    out["model"].pop("growth")
    for node in out["nodes"].values():
        node.pop("last_attempt", None)
        if not scores:
            node.pop("mc_correct", None)
            node.pop("nb_correct", None)
    return out


@pytest.mark.parametrize("leaf_prediction,binary_split,remove_poor_attrs",
                         [("nba", False, False), ("nb", True, False), ("mc", False, False), ("mc", True, True)])
def test_the_wire_rebuilds_a_tree_that_keeps_learning_as_river_does(leaf_prediction, binary_split,
                                                                    remove_poor_attrs):
    events = mixed(4000)
    river_tree = learned(tree.HoeffdingTreeClassifier(grace_period=100, leaf_prediction=leaf_prediction,
                                                      binary_split=binary_split,
                                                      remove_poor_attrs=remove_poor_attrs), events[:1000])
    if remove_poor_attrs:
        assert any(models.get_params(river_tree)["nodes"][p]["disabled"] for p in models.get_params(river_tree)["nodes"]
                   if "leaf" in models.get_params(river_tree)["nodes"][p])
    assert hoeffding_tree.describe(river_tree)["branches"] >= 2  # a tree, not a leaf
    doc = json.loads(models.dumps(models.to_wire(river_tree, name="t", version=1)))
    copy_ = models.from_wire(doc)
    close(models.get_params(copy_), models.get_params(river_tree))
    # both go on learning (and splitting) alike: the restore kept every statistic a later split reads
    for x, y in events[1000:]:
        assert copy_.predict_proba_one(x) == river_tree.predict_proba_one(x)
        river_tree.learn_one(x, y)
        copy_.learn_one(x, y)
    assert hoeffding_tree.describe(copy_) == hoeffding_tree.describe(river_tree)
    close(models.get_params(copy_), models.get_params(river_tree))


@pytest.mark.parametrize("stream", ["phishing", "mixed"])
def test_merged_statistics_equal_those_of_one_tree_that_saw_every_event(stream):
    events = streams.phishing(2500) if stream == "phishing" else mixed(2500)
    base = learned(tree.HoeffdingTreeClassifier(grace_period=100), events[:1000])
    doc = models.to_wire(base, version=1)
    replicas = [hoeffding_tree.freeze(models.from_wire(doc)) for _ in range(3)]
    for replica, part in zip(replicas, streams.split(events[1000:], 3)):
        learned(replica, part)
    one = learned(hoeffding_tree.freeze(models.from_wire(doc)), events[1000:])
    merged = models.apply_deltas(base, models.get_params(base), [models.delta(r) for r in replicas],
                                 [len(p) for p in streams.split(events[1000:], 3)], version=2)
    assert hoeffding_tree.describe(merged) == hoeffding_tree.describe(base)  # replicas never split
    # the adaptive leaves' scores (how often majority class and naive Bayes were right) depend on what each tree
    # predicted along the way: they are summed, not equal to one tree's
    close(statistics(models.get_params(merged), scores=False), statistics(models.get_params(one), scores=False))
    assert models.get_params(merged)["model"]["dropped"] == 0
    assert all(merged.predict_one(x) == one.predict_one(x) for x, _ in events[:300])


def test_the_merger_splits_where_river_splits_on_the_same_events():
    """Two replicas learn 600 events each on an empty tree with growth off; the merger's attempt, at the weight
    where River's own tree attempts, makes River's split with River's children."""
    events = streams.phishing(1200)
    river_tree = learned(tree.HoeffdingTreeClassifier(grace_period=1200), events)
    assert hoeffding_tree.describe(river_tree)["branches"] == 1, "the test needs River to split at event 1200"
    empty = tree.HoeffdingTreeClassifier(grace_period=1200)
    doc = models.to_wire(empty, version=0)
    replicas = [hoeffding_tree.freeze(models.from_wire(doc)) for _ in range(2)]
    for replica, part in zip(replicas, streams.split(events, 2)):
        learned(replica, part)
    merged = models.apply_deltas(empty, models.get_params(empty), [models.delta(r) for r in replicas], [600, 600])
    assert hoeffding_tree.describe(merged)["branches"] == 0
    assert hoeffding_tree.grow(merged) == 1
    assert hoeffding_tree.grow(merged) == 0  # no new weight: no second attempt
    close(models.get_params(merged)["nodes"], models.get_params(river_tree)["nodes"], tol=1e-7)


def test_a_delta_for_a_leaf_that_split_since_goes_to_the_leaves_below_it():
    """A replica's delta based on the root leaf arrives after the root split: its class weights are shared between
    the two new leaves by its own Gaussian of the split feature, close to where its events would have gone."""
    events = streams.phishing(1800)
    empty = tree.HoeffdingTreeClassifier(grace_period=1200)
    doc = models.to_wire(empty, version=0)
    early, late = (hoeffding_tree.freeze(models.from_wire(doc)) for _ in range(2))
    learned(early, events[:1200])
    learned(late, events[1200:1500])
    v1 = models.apply_deltas(empty, models.get_params(empty), [models.delta(early)], [1200], version=1)
    assert hoeffding_tree.grow(v1) == 1
    v2 = models.apply_deltas(v1, models.get_params(v1), [models.delta(late)], [300], version=2)  # late's base: v0
    before, after = models.get_params(v1), models.get_params(v2)
    assert after["model"]["rerouted"] == 300 and after["model"]["dropped"] == 0 and after["model"]["seen"] == 1500
    gained = {p: {c: w - before["nodes"][p]["stats"].get(c, 0.0) for c, w in n["stats"].items()}
              for p, n in after["nodes"].items() if "leaf" in n}
    assert math.isclose(sum(sum(g.values()) for g in gained.values()), 300)
    (feature, threshold), = before["nodes"][""]["numeric_split"].items()
    went_left = collections.Counter(y for x, y in events[1200:1500] if x[feature] <= threshold)
    assert sum(abs(gained["0"].get(c, 0.0) - went_left[c]) for c in (True, False)) < 30  # of 300
    for p, n in after["nodes"].items():  # splitter statistics of a re-routed delta are left out
        if "leaf" in n:
            assert n["gaussian"] == before["nodes"][p]["gaussian"]
    # a replica rebased on v1 learns on the new leaves, and its delta lands where it learned
    rebased = hoeffding_tree.freeze(models.from_wire(models.to_wire(v1, version=1)))
    learned(rebased, events[1500:])
    v3 = models.get_params(models.apply_deltas(v1, models.get_params(v1), [models.delta(rebased)], [300]))
    assert v3["model"]["rerouted"] == 0
    close(statistics(v3)["nodes"], statistics(models.get_params(rebased))["nodes"])


def test_one_replicas_consecutive_deltas_sum_to_its_delta_over_both():
    events = mixed(1500)
    base = learned(tree.HoeffdingTreeClassifier(grace_period=100), events[:800])
    doc = models.to_wire(base, version=1)
    replica = hoeffding_tree.freeze(models.from_wire(doc))
    adapter = models.adapter_for(base)
    learned(replica, events[800:1100])
    first = models.delta(replica)
    snapshot = models.get_params(replica)
    learned(replica, events[1100:])
    second = adapter.delta(replica, models.get_params(replica), snapshot)
    both = models.delta(replica)
    summed = adapter.sum_deltas(base, [first, second])
    a = models.apply_deltas(base, models.get_params(base), [summed], [700])
    b = models.apply_deltas(base, models.get_params(base), [both], [700])
    close(statistics(models.get_params(a)), statistics(models.get_params(b)))


def test_trees_that_grew_apart_are_not_merged():
    events = streams.phishing(1200)
    trees = [learned(tree.HoeffdingTreeClassifier(grace_period=100), part) for part in streams.split(events, 2)]
    with pytest.raises(ValueError, match="common base"):
        models.merge(trees)


def _doc():
    t = learned(tree.HoeffdingTreeClassifier(grace_period=100), mixed(1500))
    return json.loads(models.dumps(models.to_wire(t, version=1)))


def _nodes(doc):
    return doc["params"]["nodes"]  # [[path, [[key, value], ...]], ...]


def _edit(node, key, value):
    for pair in node[1]:
        if pair[0] == key:
            pair[1] = value
            return
    node[1].append([key, value])


@pytest.mark.parametrize("attack", ["unknown leaf kind", "missing child", "unreachable node", "wrong depth",
                                    "negative weight", "splitter off the allow-list", "impossible gaussian",
                                    "two splits"])
def test_a_hostile_tree_document_is_refused(attack):
    doc = _doc()
    nodes = _nodes(doc)
    branch = next(n for n in nodes if any(k.endswith("_split") for k, _ in n[1]))
    leaf = next(n for n in nodes if any(k == "leaf" for k, _ in n[1]) and
                any(k == "gaussian" and v for k, v in n[1]))
    if attack == "unknown leaf kind":
        _edit(leaf, "leaf", [["os.system", 1]])
    elif attack == "missing child":
        nodes.remove(next(n for n in nodes if n[0] == hoeffding_tree.child(branch[0], 1)))
    elif attack == "unreachable node":
        nodes.append(["9/9", copy.deepcopy(leaf[1])])
    elif attack == "wrong depth":
        _edit(leaf, "depth", 40)
    elif attack == "negative weight":
        _edit(leaf, "stats", [[k, -1.0] for k, _ in dict(leaf[1])["stats"]])
    elif attack == "splitter off the allow-list":
        doc["hyper"]["splitter"] = {"class": "river.tree.HistogramSplitter", "args": {}}
    elif attack == "impossible gaussian":
        feature = dict(leaf[1])["gaussian"][0]
        feature[1][0][1] = [1.0, 0.0, -5.0, 0.0, 1.0]
    elif attack == "two splits":
        _edit(branch, "leaf", [["nba", 1]])
    with pytest.raises(ValueError):
        models.from_wire(doc)


def test_the_loop_grows_one_tree_that_holds_every_event_once():
    """The replica/merger loop (``bench/sync.simulate``: the job's classes, updates through the codec, documents
    through the readers' validation) with merged versions arriving three rounds late, so that replicas rebase with
    updates in flight and stale deltas reach leaves that have split since: the final tree counts every event once,
    drops nothing, and the served tree tracks River's after warm-up.  (Its leaves' weights need not add up to the
    events: a split hands its children the class weights of the events that had the split feature, as River's does.)"""
    from bench.sync import Setting, simulate
    from riverflink.models.spec import build
    from riverflink.models.sync import SyncPolicy
    from riverflink.operators.merge_state import MergeTrigger
    from riverflink.operators.scoring import river_baseline

    spec = "HoeffdingTreeClassifier(grace_period=200)"
    events = mixed(8000, seed=3)
    river = build(spec)
    whole, late, _ = river_baseline(river, events, warmup=2000)
    for replicas, delay, bound in ((1, 1, -1.0), (4, 3, -4.0)):  # (points after warm-up against River)
        outcome = simulate(spec, events, Setting(replicas=replicas, delay=delay, batch=37,
                                                 trigger=MergeTrigger(quorum=1),
                                                 sync=SyncPolicy(every_events=50, every_seconds=None)),
                           2000, (whole, late))
        params = models.get_params(outcome.final)
        # every event once: none twice, none lost but the replicas' last unsynced ones (fewer than a sync each)
        assert len(events) - replicas * 50 < params["model"]["seen"] <= len(events), params["model"]
        assert params["model"]["dropped"] == 0
        assert hoeffding_tree.describe(outcome.final)["branches"] >= 5
        assert outcome.gap(late=True) > bound, (replicas, outcome.gap(late=True))
    assert params["model"]["rerouted"] > 0  # (K=4, three rounds late: the case this test is for)


def test_applying_deltas_leaves_the_base_untouched():
    """Replicas rebase on one shared merged tree: applying their deltas must copy it, not write into it."""
    events = mixed(1500)
    base = learned(tree.HoeffdingTreeClassifier(grace_period=100), events[:1000])
    params = models.get_params(base)
    kept = copy.deepcopy(params)
    replica = hoeffding_tree.freeze(models.from_wire(models.to_wire(base, version=1)))
    learned(replica, events[1000:])
    models.adapter_for(base).apply(base, params, [models.delta(replica)], [500], models.MergePolicy("delta"))
    assert params == kept


def test_one_replica_synced_on_every_event_grows_rivers_tree():
    """K=1 at the model level: a frozen replica learns one event, the merger adds its delta and grows, the replica
    rebases.  The merged tree makes River's splits (same leaf, feature and threshold) within one event of River's,
    and ends with River's leaf statistics within one event's weight.  Not to the event: a leaf made by a split
    starts at a fractional weight computed from the merged Gaussians (Chan's sums; River's are Welford's updates),
    and when its weight lands on a grace period within rounding, River and the merger try it one event apart
    (seen here at event 1850 with a grace period of 50)."""
    events = streams.phishing(2000)
    river = tree.HoeffdingTreeClassifier(grace_period=50)
    template = tree.HoeffdingTreeClassifier(grace_period=50)
    params = models.get_params(template)
    ours, rivers = [], []  # (event, path, test) of each split

    def splits(nodes: dict, at: int, seen: list) -> None:
        for path, node in nodes.items():
            test = next(((k, v) for k, v in node.items() if k in hoeffding_tree.SPLITS), None)
            if test is not None and path not in {p for _, p, _ in seen}:
                seen.append((at, path, test))

    for i, (x, y) in enumerate(events):
        replica = hoeffding_tree.freeze(models.set_params(template.clone(), params, version=i))
        replica.learn_one(x, y)
        merged = models.apply_deltas(template, params, [models.delta(replica)], [1])
        hoeffding_tree.grow(merged)
        params = models.get_params(merged)
        river.learn_one(x, y)
        splits(params["nodes"], i, ours)
        splits(models.get_params(river)["nodes"], i, rivers)
    assert len(rivers) >= 2 and [p for _, p, _ in ours] == [p for _, p, _ in rivers]
    for (i, _, (kind, test)), (j, _, (river_kind, river_test)) in zip(ours, rivers):
        assert abs(i - j) <= 1 and kind == river_kind
        close(test, river_test, tol=1e-6)
    for path, node in models.get_params(river)["nodes"].items():
        if "leaf" in node:
            assert sum(abs(w - params["nodes"][path]["stats"].get(c, 0.0)) for c, w in node["stats"].items()) <= 1
