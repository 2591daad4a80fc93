"""HoeffdingTreeClassifier as one tree that replicas grow together: statistics merged, splits decided centrally.

The replicas hold the merged tree with growth switched off (:func:`freeze`) and learn with River's own
``learn_one``; what they send is each leaf's statistics gained since the base (:meth:`HoeffdingTreeAdapter.delta`),
keyed by the leaf's path.  The merger adds them exactly (:meth:`~HoeffdingTreeAdapter.apply`: class weights and
nominal counts summed, each Gaussian by Chan's formula, ranges by min/max) and then attempts splits with River's
own ``_attempt_to_split`` and Hoeffding bound on the merged statistics (:func:`grow`), in the horizontal style of
Spark MLlib's tree aggregation.  A delta for a leaf that has split since its base goes to the leaves below it
(its class weights shared as River shares them at a split; :func:`_settle`), counted in the model's ``rerouted``
statistic; what finds no leaf is dropped and counted in ``dropped``.  The loop reaches the family through
``Adapter.prepare_replica`` (:func:`freeze`) and ``Adapter.grow`` (:func:`grow`).

Params: a tree of numbers whose keys carry every name, so that the wire's ``[key, value]`` pairs hold it (a map
that mixes numbers and maps starts with a map: :func:`numeric.copy_tree` copies a map whose first value is a number
as a flat map)::

    {"model": {"seen": w, "dropped": w, "rerouted": w, "growth": 1},
     "classes": {label: 1},
     "nodes": {path: node}}

``path`` is ``""`` for the root and ``"<parent path>/<child index>"`` below it (:func:`child`).  A branch node is
``{"depth", "stats", SPLIT: ...}`` with SPLIT ``numeric_split`` ``{feature: threshold}``, ``nominal_split``
``{feature: {value: 0}}`` or ``multiway_split`` ``{feature: {value: child index}}``.  A leaf is ``{"depth", "stats",
"leaf": {kind: 1}, "active", "last_attempt", "disabled": {feature: 1}, "mc_correct", "nb_correct",
"gaussian": {feature: {label: (n, mean, m2, min, max)}}, "nominal": {feature: {label: {value: w}}},
"nominal_seen": {feature: (total, missing)}}`` with kind ``mc``, ``nb`` or ``nba`` (River's leaf classes).  Only
River's ``GaussianSplitter`` watches numeric features; another splitter is refused.  Each Gaussian is restored
field by field (count, mean and ``M2``), never from its variance alone.

The regressor is :mod:`models.hoeffding_tree_regressor`; not yet here: the adaptive and extremely fast trees
(``models/tree.py``).

>>> from river import tree
>>> from riverflink import models
>>> from riverflink.models import hoeffding_tree
>>> t = tree.HoeffdingTreeClassifier(grace_period=50)
>>> for i in range(200):
...     t.learn_one({"x": float(i % 10)}, i % 10 < 5)
>>> copy = models.from_wire(models.dumps(models.to_wire(t)))
>>> copy.predict_proba_one({"x": 2.0}) == t.predict_proba_one({"x": 2.0})
True
>>> hoeffding_tree.describe(copy)
{'depth': 1, 'leaves': 2, 'branches': 1}
"""

from __future__ import annotations

import collections
import math
from typing import Any, Sequence

from river import proba, tree
from river.tree.nodes.branch import DTBranch
from river.tree.nodes.htc_nodes import LeafMajorityClass, LeafNaiveBayes, LeafNaiveBayesAdaptive
from river.tree.splitter import GaussianSplitter
from river.tree.splitter.nominal_splitter_classif import NominalSplitterClassif

from riverflink.models import numeric
from riverflink.models.adapter import register
from riverflink.models.policies import MergePolicy
# (SPLITS, child, describe, freeze, grow and shape_of are this module's API too)
from riverflink.models.tree_structure import (SPLITS, GrownTreeAdapter, branch_test, build_tree,  # noqa: F401
                                              child, describe, freeze, grow, heavier, shape_of, walk)

#: leaf kind on the wire -> River's leaf class (the allow-list; subclasses first, so that exact types map back)
LEAF_KINDS = {"nba": LeafNaiveBayesAdaptive, "nb": LeafNaiveBayes, "mc": LeafMajorityClass}
_KIND_OF = {cls: kind for kind, cls in LEAF_KINDS.items()}


class HoeffdingTreeAdapter(GrownTreeAdapter):
    family = "hoeffding_tree"
    classes = (tree.HoeffdingTreeClassifier,)
    components = {"river.tree.GaussianSplitter": GaussianSplitter}  # the one splitter a document may name
    kinds: dict[str, str] = {}  # no learned leaves: statistics merge exactly, nothing to delay-compensate

    # -- state -----------------------------------------------------------------------------------------------
    def get_params(self, model: Any) -> dict:
        if type(model.splitter) is not GaussianSplitter:
            raise ValueError(f"a merged Hoeffding tree watches numeric features with GaussianSplitter only, "
                             f"not {type(model.splitter).__name__}")
        nodes = {} if model._root is None else {path: _node_params(n) for path, n in walk(model._root)}
        return {"model": self.bookkeeping(model),
                "classes": {c: 1 for c in model.classes},
                "nodes": nodes}

    def set_params(self, model: Any, params: dict) -> None:
        if type(model.splitter) is not GaussianSplitter:
            raise ValueError(f"splitter {type(model.splitter).__name__} is not supported on the wire")
        head = params.get("model", {})
        model._root = build_tree(params.get("nodes", {}),
                                 lambda node, depth, path: _build_leaf(model, node, depth, path),
                                 _class_weights)
        model.classes = set(params.get("classes", {}))
        self.restore_bookkeeping(model, head)

    # -- merge -----------------------------------------------------------------------------------------------
    def delta(self, model: Any, params: dict, base: dict | None, journaled: bool = False, at: Any = None) -> dict:
        """Each leaf's statistics gained since ``base``, by path (leaves that gained nothing left out).

        ``{"leaves": {path: leaf delta}, "classes": {label: 1}, "seen": w}``; a leaf delta holds ``stats``,
        ``mc_correct``, ``nb_correct``, ``gaussian`` (Chan differences, with the leaf's current min and max),
        ``nominal`` and ``nominal_seen``.  A leaf that is not a leaf of ``base`` is sent whole."""
        base_nodes = (base or {}).get("nodes", {})
        leaves = {}
        for path, node in params.get("nodes", {}).items():
            if "leaf" not in node:
                continue
            was = base_nodes.get(path)
            d = _leaf_delta(node, was if was is not None and "leaf" in was else None)
            if d is not None:
                leaves[path] = d
        seen = params.get("model", {}).get("seen", 0.0) - (base or {}).get("model", {}).get("seen", 0.0)
        return {"leaves": leaves, "classes": dict(params.get("classes", {})), "seen": seen}

    def apply(self, model: Any, base: dict | None, deltas: Sequence[dict], weights: Sequence[float],
              policy: MergePolicy) -> dict:
        """``base`` with every delta's leaf statistics added (weights and policy do not apply: statistics add
        exactly).  A delta for a leaf that has split since its base is shared among the leaves below it
        (:func:`_settle`; its weight added to ``model.rerouted``); what finds no leaf is dropped
        (``model.dropped``).  An empty tree's first root leaf is made here; without a base, only root leaves can
        be merged (``ValueError`` otherwise)."""
        out = numeric.copy_tree(base) if base is not None else _empty_params()
        nodes, head = out["nodes"], out["model"]
        for d in deltas:
            head["seen"] = head.get("seen", 0.0) + d.get("seen", 0.0)
            out["classes"].update(d.get("classes", {}))
            for path, gained in d.get("leaves", {}).items():
                if base is None and path != "":
                    raise ValueError("Hoeffding trees merge from a common base version (the loop's replicas "
                                     "always have one); these trees grew apart")
                if path == "" and not nodes:  # the first events of an empty tree: its root leaf
                    nodes[""] = _empty_leaf(_KIND_OF[type(model._new_leaf())] if model is not None else "nba")
                node = nodes.get(path)
                if node is not None and "leaf" not in node:
                    head["rerouted"] = head.get("rerouted", 0.0) + sum(gained.get("stats", {}).values())
                lost = _settle(nodes, path, gained)
                if lost > 1e-9 * max(1.0, sum(gained.get("stats", {}).values())):  # (not the shares' rounding)
                    head["dropped"] = head.get("dropped", 0.0) + lost
        try:  # River sorts a tree's classes to predict: labels that do not sort together poison the tree
            sorted(out["classes"])
        except TypeError:
            raise ValueError(f"a tree's classes must sort together, got {sorted(map(repr, out['classes']))}") from None
        return out

    def sum_deltas(self, model: Any, deltas: Sequence[dict]) -> dict:
        """One replica's consecutive deltas (all on the same tree) as one: each leaf's gains added up."""
        leaves: dict = {}
        for d in deltas:
            for path, gained in d.get("leaves", {}).items():
                _add_leaf(leaves.setdefault(path, _leaf_statistics()), gained)
        return {"leaves": leaves, "classes": {c: 1 for d in deltas for c in d.get("classes", {})},
                "seen": sum(d.get("seen", 0.0) for d in deltas)}


def _node_params(node) -> dict:
    # (``stats`` first: numeric.copy_tree and check_finite take a map whose first value is a number for a flat map)
    out: dict = {"stats": {c: float(w) for c, w in node.stats.items()}, "depth": int(node.depth)}
    if isinstance(node, DTBranch):
        out.update(branch_test(node))
    else:
        kind = _KIND_OF.get(type(node))
        if kind is None:
            raise ValueError(f"{type(node).__name__} leaves are not supported on the wire")
        out.update({"leaf": {kind: 1}, "active": 1 if node.is_active() else 0,
                    "last_attempt": float(node.last_split_attempt_at),
                    "disabled": {f: 1 for f in node._disabled_attrs},
                    "mc_correct": float(getattr(node, "_mc_correct_weight", 0.0)),
                    "nb_correct": float(getattr(node, "_nb_correct_weight", 0.0)),
                    "gaussian": {}, "nominal": {}, "nominal_seen": {}})
        for feature, s in (node.splitters or {}).items():
            if type(s) is GaussianSplitter:
                out["gaussian"][feature] = {
                    c: (g._var.mean.n, float(g._var.mean._mean), float(g._var._S),
                        float(s._min_per_class[c]), float(s._max_per_class[c]))
                    for c, g in s._att_dist_per_class.items()}
            elif type(s) is NominalSplitterClassif:
                out["nominal"][feature] = {c: {v: float(w) for v, w in counts.items()}
                                           for c, counts in s._att_dist_per_class.items() if counts}
                # (River's cond_proba leaves an empty map for every class it was asked about: nothing learned)
                out["nominal_seen"][feature] = (float(s._total_weight_observed), float(s._missing_weight_observed))
            else:
                raise ValueError(f"splitter {type(s).__name__} is not supported on the wire")
    return out


def _class_weights(node: dict, path: str) -> dict:
    stats = {c: float(w) for c, w in node["stats"].items()}
    if any(w < 0 for w in stats.values()):
        raise ValueError(f"tree node {path!r} has a negative class weight")
    return stats


def _build_leaf(model, node: dict, depth: int, path: str):
    stats = _class_weights(node, path)
    (kind, _), = node["leaf"].items()
    if kind not in LEAF_KINDS:
        raise ValueError(f"tree leaf {path!r} has unknown kind {kind!r}")
    leaf = LEAF_KINDS[kind](stats, depth, model.splitter)
    leaf.last_split_attempt_at = float(node.get("last_attempt", leaf.total_weight))
    leaf._disabled_attrs = set(node.get("disabled", {}))
    if kind == "nba":
        leaf._mc_correct_weight = float(node.get("mc_correct", 0.0))
        leaf._nb_correct_weight = float(node.get("nb_correct", 0.0))
    if not node.get("active", 1):
        leaf.deactivate()
        return leaf
    for feature, per_class in node.get("gaussian", {}).items():
        s = model.splitter.clone()
        for c, (n, mean, m2, lo, hi) in per_class.items():
            if n < 0 or m2 < 0 or lo > hi:
                raise ValueError(f"tree leaf {path!r}: feature {feature!r} has an impossible Gaussian")
            g = proba.Gaussian()
            g._var.mean.n, g._var.mean._mean, g._var._S = n, float(mean), float(m2)
            s._att_dist_per_class[c] = g
            s._min_per_class[c], s._max_per_class[c] = float(lo), float(hi)
        leaf.splitters[feature] = s
    for feature, per_class in node.get("nominal", {}).items():
        s = NominalSplitterClassif()
        s._total_weight_observed, s._missing_weight_observed = map(float, node["nominal_seen"][feature])
        s._att_dist_per_class = collections.defaultdict(dict, {c: dict(v) for c, v in per_class.items()})
        s._att_values = {v for counts in per_class.values() for v in counts}
        leaf.splitters[feature] = s
    return leaf


def _settle(nodes: dict, path: str, gained: dict) -> float:
    """Add the leaf delta ``gained`` at ``path``; where that leaf has split since, share its class weights among
    the children as River shares a leaf's class weights when it splits it: per class, by the split feature's
    Gaussian (its ``cdf`` at the threshold, within the observed range) or nominal counts in ``gained`` itself; a
    class whose events lacked the feature follows the heavier child, as River sends such an event.  A re-routed
    delta's splitter statistics are left out: spreading the parent's Gaussians over the children in proportion
    (untruncated, with the parent's range) made the served tree worse in the loop (``bench/trees.py`` figures in
    NOTES.md).  Returns the weight that found no leaf (a path the tree does not have, a nominal value no branch
    takes)."""
    node = nodes.get(path)
    weight = sum(gained.get("stats", {}).values())
    if node is None:
        return weight
    if "leaf" in node:
        _add_leaf(node, gained)
        return 0.0
    lost = weight
    for index, fraction in _shares(nodes, path, node, gained).items():
        part = _scaled(gained, fraction)
        moved = sum(part["stats"].values())
        if moved:
            lost -= moved - _settle(nodes, child(path, index), part)
    return max(lost, 0.0)


def _shares(nodes: dict, path: str, node: dict, gained: dict) -> dict[int, dict]:
    """``{child index: {class: the share of that class's weight in gained going there}}`` for a branch."""
    stats = gained.get("stats", {})
    out: dict[int, dict] = collections.defaultdict(dict)
    if "multiway_split" in node:
        (feature, mapping), = node["multiway_split"].items()
        for c in stats:
            counts = gained.get("nominal", {}).get(feature, {}).get(c, {})
            total = sum(counts.values())
            for value, w in counts.items():
                if value in mapping and total:
                    out[mapping[value]][c] = out[mapping[value]].get(c, 0.0) + w / total
            if not total:
                out[heavier(nodes, path, len(mapping), _leaf_weight)][c] = 1.0
        return out
    split = "numeric_split" if "numeric_split" in node else "nominal_split"
    (feature, test), = node[split].items()
    for c in stats:
        if split == "numeric_split":
            g = gained.get("gaussian", {}).get(feature, {}).get(c)
            left = None if g is None else _left_share(g, test)
        else:
            counts = gained.get("nominal", {}).get(feature, {}).get(c, {})
            total = sum(counts.values())
            (value, _), = test.items()
            left = counts.get(value, 0.0) / total if total else None
        if left is None:
            left = 1.0 if heavier(nodes, path, 2, _leaf_weight) == 0 else 0.0
        out[0][c], out[1][c] = left, 1.0 - left
    return out


def _left_share(g: tuple, threshold: float) -> float:
    """The share of a class's values of a feature at or below ``threshold``, as River's ``GaussianSplitter``
    estimates it for a split (all or nothing outside the observed range, else the Gaussian's ``cdf``)."""
    n, mean, m2, lo, hi = g
    if threshold < lo:
        return 0.0
    if threshold >= hi:
        return 1.0
    gaussian = proba.Gaussian()
    gaussian._var.mean.n, gaussian._var.mean._mean, gaussian._var._S = n, mean, m2
    return min(max(gaussian.cdf(threshold), 0.0), 1.0)


def _leaf_weight(node: dict) -> float:
    return sum(node["stats"].values())


def _scaled(gained: dict, fraction: dict) -> dict:
    """The class weights of ``gained`` multiplied by ``fraction[class]``, and the adaptive leaves' scores in
    proportion; no splitter statistics (see :func:`_settle`)."""
    stats = {c: w * fraction.get(c, 0.0) for c, w in gained.get("stats", {}).items()}
    stats = {c: w for c, w in stats.items() if w}
    total = sum(gained.get("stats", {}).values())
    share = sum(stats.values()) / total if total else 0.0
    return {"stats": stats, "gaussian": {}, "nominal": {}, "nominal_seen": {},
            "mc_correct": gained.get("mc_correct", 0.0) * share, "nb_correct": gained.get("nb_correct", 0.0) * share}


def _empty_params() -> dict:
    return {"model": {"seen": 0.0, "dropped": 0.0, "rerouted": 0.0, "growth": 1}, "classes": {}, "nodes": {}}


def _leaf_statistics() -> dict:
    """A leaf's statistics, empty: the shape of a leaf delta (``stats`` first, see the module doc)."""
    return {"stats": {}, "mc_correct": 0.0, "nb_correct": 0.0, "gaussian": {}, "nominal": {}, "nominal_seen": {}}


def _empty_leaf(kind: str) -> dict:
    out = _leaf_statistics()
    out.update({"depth": 0, "leaf": {kind: 1}, "active": 1, "last_attempt": 0.0, "disabled": {}})
    return out


def _leaf_delta(node: dict, was: dict | None) -> dict | None:
    was = was or {}
    stats = _minus(node.get("stats", {}), was.get("stats", {}))
    if not any(stats.values()):
        return None
    gaussian = {}
    for f, per_class in node.get("gaussian", {}).items():
        before = was.get("gaussian", {}).get(f, {})
        gained = {}
        for c, (n, mean, m2, lo, hi) in per_class.items():
            b = before.get(c)
            moments = numeric.chan_subtract((n, mean, m2), b[:3]) if b else (n, mean, m2)
            if moments[0]:
                gained[c] = (*moments, lo, hi)
        if gained:
            gaussian[f] = gained
    nominal = {}
    for f, per_class in node.get("nominal", {}).items():
        before = was.get("nominal", {}).get(f, {})
        gained = {c: d for c, counts in per_class.items() if (d := _minus(counts, before.get(c, {})))}
        if gained:
            nominal[f] = gained
    seen = {f: tuple(a - b for a, b in zip(t, was.get("nominal_seen", {}).get(f, (0.0, 0.0))))
            for f, t in node.get("nominal_seen", {}).items()}
    return {"stats": stats, "gaussian": gaussian, "nominal": nominal,
            "nominal_seen": {f: t for f, t in seen.items() if any(t)},
            "mc_correct": node.get("mc_correct", 0.0) - was.get("mc_correct", 0.0),
            "nb_correct": node.get("nb_correct", 0.0) - was.get("nb_correct", 0.0)}


def _minus(a: dict, b: dict) -> dict:
    out = {k: v - b.get(k, 0.0) for k, v in a.items()}
    return {k: v for k, v in out.items() if v}


def _add_leaf(node: dict, gained: dict) -> None:
    """Add a leaf delta to a leaf's params in place (an inactive leaf keeps no splitter statistics)."""
    for c, w in gained.get("stats", {}).items():
        node["stats"][c] = node["stats"].get(c, 0.0) + w
    node["mc_correct"] = node.get("mc_correct", 0.0) + gained.get("mc_correct", 0.0)
    node["nb_correct"] = node.get("nb_correct", 0.0) + gained.get("nb_correct", 0.0)
    if not node.get("active", 1):
        return
    disabled = node.get("disabled", {})
    for f, per_class in gained.get("gaussian", {}).items():
        if f in disabled:
            continue
        have = node.setdefault("gaussian", {}).setdefault(f, {})
        for c, (n, mean, m2, lo, hi) in per_class.items():
            if c in have:
                h = have[c]
                have[c] = (*numeric.chan_merge(h[:3], (n, mean, m2)), min(h[3], lo), max(h[4], hi))
            else:
                have[c] = (n, mean, m2, lo, hi)
    for f, per_class in gained.get("nominal", {}).items():
        if f in disabled:
            continue
        have = node.setdefault("nominal", {}).setdefault(f, {})
        for c, counts in per_class.items():
            into = have.setdefault(c, {})
            for v, w in counts.items():
                into[v] = into.get(v, 0.0) + w
    for f, (total, missing) in gained.get("nominal_seen", {}).items():
        if f in disabled:
            continue
        t, m = node.setdefault("nominal_seen", {}).get(f, (0.0, 0.0))
        node["nominal_seen"][f] = (t + total, m + missing)


HOEFFDING_TREE = register(HoeffdingTreeAdapter())
