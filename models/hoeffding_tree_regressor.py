"""HoeffdingTreeRegressor as one tree that replicas grow together: target statistics merged, splits decided centrally.

The loop is the classifier's (:mod:`models.hoeffding_tree`): replicas hold the merged tree with growth switched off
and learn with River's own ``learn_one``; each sync sends every leaf's statistics gained since the base, keyed by
the leaf's path; the merger adds them and attempts splits with River's own ``_attempt_to_split`` (variance
reduction, Hoeffding bound) once a leaf has gained its grace period (:func:`~models.tree_structure.grow`).

What a regression leaf learns, and how it merges:

* the target's moments ``stats`` ``(n, mean, m2)``: added by Chan's formula;
* per numeric feature, River's E-BST (``TEBSTSplitter``, the default, or ``EBSTSplitter``).  Its nodes hold the
  target's moments of every value at or below the node's key that passed through the node, so they do not add
  across trees of different shapes.  The params hold each key's own moments instead (a node's minus its left
  subtree's), in the E-BST's pre-order, ``{feature: {key: (n, mean, m2)}}``; they add key by key, a key new to the
  merged tree is appended, and the E-BST is rebuilt from the rows in that order: inserting a BST's keys in
  pre-order gives back its shape, so River's memory management (``remove_bad_splits`` after a failed attempt,
  which depends on the shape) prunes the rebuilt E-BST as it would River's own;
* per nominal feature, the target's moments per value ``{feature: {value: (n, mean, m2)}}``: added by Chan;
* for ``leaf_prediction`` ``model`` and ``adaptive``, the leaf's linear model (River's ``LinearRegression`` by
  default) as the linear family's params under ``linear``: the replicas' models averaged by their events, the
  replicas learning at K times the spec's rate (:func:`_settle`);
* for ``adaptive``, River's two exponentially decayed squared errors ``fmse`` ``(mean, model)``, which choose
  between the mean and the model.  They do not add: each replica sends what its events added on top of the
  decayed base, and the merge decays the base by every event the leaf gained and adds the replicas' parts (exact
  for one replica; for several it counts each replica's events as the most recent).

A delta for a leaf that has split since its base goes to the leaves below it, its target moments divided exactly
by the split feature's own statistics in the delta (the E-BST's keys at or below the threshold, or a nominal
value's moments); events that lacked the feature follow the heavier child, as River sends them.  The linear
model's change and the decayed errors go with each part in proportion to its events.  Like the classifier, the
splitter statistics of a re-routed delta are left out.  Re-routed and dropped weight is counted in ``model``.

Params::

    {"model": {"seen": w, "dropped": w, "rerouted": w, "growth": 1},
     "nodes": {path: node}}

with the node layout of :mod:`models.tree_structure`; a branch's ``stats`` and a leaf's ``stats`` are the target's
moments, a leaf also holds ``leaf`` ``{kind: 1}`` (``mean``, ``model`` or ``adaptive``, River's leaf classes),
``active``, ``last_attempt``, ``disabled``, ``ebst``, ``nominal`` and, by kind, ``linear`` and ``fmse``.

>>> from river import tree
>>> from riverflink import models
>>> t = tree.HoeffdingTreeRegressor(grace_period=50, leaf_prediction="mean")
>>> for i in range(300):
...     t.learn_one({"x": float(i % 10) / 10}, float(i % 10 < 5))
>>> copy = models.from_wire(models.dumps(models.to_wire(t)))
>>> copy.predict_one({"x": 0.2}) == t.predict_one({"x": 0.2}), describe(copy)
(True, {'depth': 1, 'leaves': 2, 'branches': 1})
"""

from __future__ import annotations

import copy
import math
from typing import Any, Sequence

from river import stats as river_stats
from river import tree
from river.tree.nodes.branch import DTBranch
from river.tree.nodes.htr_nodes import LeafAdaptive, LeafMean, LeafModel
from river.tree.splitter import EBSTSplitter, TEBSTSplitter
from river.tree.splitter.ebst_splitter import EBSTNode
from river.tree.splitter.nominal_splitter_reg import NominalSplitterReg

from riverflink.models import numeric
from riverflink.models.adapter import register
from riverflink.models.linear import LINEAR
from riverflink.models.policies import MergePolicy
from riverflink.models.tree_structure import (GrownTreeAdapter, branch_test, build_tree, child,  # noqa: F401
                                              describe, freeze, grow, heavier, walk)

#: leaf kind on the wire -> River's leaf class (the allow-list; exact types)
LEAF_KINDS = {"adaptive": LeafAdaptive, "model": LeafModel, "mean": LeafMean}
_KIND_OF = {cls: kind for kind, cls in LEAF_KINDS.items()}
#: the numeric splitters whose statistics a document may carry
SPLITTERS = (TEBSTSplitter, EBSTSplitter)
EMPTY = numeric.EMPTY_MOMENTS
#: how a leaf model's (already weighted) change is added
_SUM = MergePolicy("delta", clip=math.inf)


class HoeffdingTreeRegressorAdapter(GrownTreeAdapter):
    family = "hoeffding_tree_regressor"
    classes = (tree.HoeffdingTreeRegressor,)
    components = {"river.tree.TEBSTSplitter": TEBSTSplitter, "river.tree.EBSTSplitter": EBSTSplitter}
    kinds: dict[str, str] = {}  # statistics merge exactly; leaf models averaged (:func:`_settle`)
    averages_learning = True  # (so replicas' leaf models learn at K times the spec's rate)

    # -- state -----------------------------------------------------------------------------------------------
    def get_params(self, model: Any) -> dict:
        _check_splitter(model)
        nodes = {} if model._root is None else {path: _node_params(n) for path, n in walk(model._root)}
        return {"model": self.bookkeeping(model),
                "nodes": nodes}

    def set_params(self, model: Any, params: dict) -> None:
        _check_splitter(model)
        head = params.get("model", {})
        model._root = build_tree(params.get("nodes", {}),
                                 lambda node, depth, path: _build_leaf(model, node, depth, path),
                                 lambda node, path: _var(node["stats"], path))
        self.restore_bookkeeping(model, head)

    # -- merge -----------------------------------------------------------------------------------------------
    def delta(self, model: Any, params: dict, base: dict | None, journaled: bool = False, at: Any = None) -> dict:
        """Each leaf's statistics gained since ``base``, by path (leaves that gained nothing left out):
        ``{"leaves": {path: {"stats", "base_n", "ebst", "nominal"[, "linear", "base_linear"][, "fmse"]}},
        "seen": w}`` (``base_n`` and ``base_linear``: the leaf's weight and linear model in ``base``).  A leaf that
        is not a leaf of ``base`` is sent whole."""
        base_nodes = (base or {}).get("nodes", {})
        leaves = {}
        for path, node in params.get("nodes", {}).items():
            if "leaf" in node:
                was = base_nodes.get(path)
                d = _leaf_delta(model, node, was if was is not None and "leaf" in was else None)
                if d is not None:
                    leaves[path] = d
        seen = params.get("model", {}).get("seen", 0.0) - (base or {}).get("model", {}).get("seen", 0.0)
        return {"leaves": leaves, "seen": seen}

    def apply(self, model: Any, base: dict | None, deltas: Sequence[dict], weights: Sequence[float],
              policy: MergePolicy) -> dict:
        """``base`` with every delta's leaf statistics added, and each leaf's linear model moved by the replicas'
        changes (:func:`_settle`; ``weights`` and ``policy`` do not apply).  A delta for a leaf that has split since
        its base is divided among the leaves below it (:func:`_settle`, counted in ``model.rerouted``); what finds no
        leaf is dropped (``model.dropped``).  Without a base, only root leaves merge (``ValueError`` otherwise)."""
        out = numeric.copy_tree(base) if base is not None else _empty_params()
        nodes, head = out["nodes"], out["model"]
        for d in deltas:
            head["seen"] = head.get("seen", 0.0) + d.get("seen", 0.0)
            for path, gained in d.get("leaves", {}).items():
                if base is None and path != "":
                    raise ValueError("Hoeffding trees merge from a common base version (the loop's replicas "
                                     "always have one); these trees grew apart")
                if path == "" and not nodes:  # the first events of an empty tree: its root leaf
                    nodes[""] = _empty_leaf(model)
                weight = gained["stats"][0]
                node = nodes.get(path)
                if node is not None and "leaf" not in node:
                    head["rerouted"] = head.get("rerouted", 0.0) + weight
                lost = _settle(model, nodes, path, gained)
                if lost > 1e-9 * max(1.0, weight):
                    head["dropped"] = head.get("dropped", 0.0) + lost
        return out

    def sum_deltas(self, model: Any, deltas: Sequence[dict]) -> dict:
        """One replica's consecutive deltas (all on the same tree) as one: each leaf's gains added up (the linear
        changes summed, the decayed errors decayed by the later deltas' events)."""
        leaves: dict = {}
        for d in deltas:
            for path, gained in d.get("leaves", {}).items():
                if path in leaves:
                    _add_leaf(leaves[path], gained, _decay(model))
                    if "linear" in gained:
                        leaves[path]["linear"] = LINEAR.sum_deltas(None, [leaves[path].get("linear", {}),
                                                                          gained["linear"]])
                else:
                    leaves[path] = numeric.copy_tree(gained)
        return {"leaves": leaves, "seen": sum(d.get("seen", 0.0) for d in deltas)}


def _decay(model: Any) -> float | None:
    """River's decay of the adaptive leaves' squared errors, per event (``None`` without a model)."""
    return float(model.model_selector_decay) if model is not None else None


def _check_splitter(model: Any) -> None:
    if type(model.splitter) not in SPLITTERS:
        raise ValueError(f"a merged Hoeffding tree regressor watches numeric features with TEBSTSplitter or "
                         f"EBSTSplitter only, not {type(model.splitter).__name__}")


def _moments(var: river_stats.Var) -> tuple:
    return (var.mean.n, float(var.mean._mean), float(var._S))


def _var(moments: Any, path: str = "") -> river_stats.Var:
    """A River ``Var`` restored field by field from ``(n, mean, m2)`` (``ValueError`` for impossible moments)."""
    n, mean, m2 = moments
    if n < 0 or m2 < -1e-9 * max(1.0, abs(n)):
        raise ValueError(f"tree node {path!r} has impossible target moments {tuple(moments)!r}")
    var = river_stats.Var()
    var.mean.n, var.mean._mean, var._S = n, float(mean), max(float(m2), 0.0)
    return var


def _node_params(node) -> dict:
    # (``stats`` first, as in every tree node)
    out: dict = {"stats": _moments(node.stats), "depth": int(node.depth)}
    if isinstance(node, DTBranch):
        out.update(branch_test(node))
        return out
    kind = _KIND_OF.get(type(node))
    if kind is None:
        raise ValueError(f"{type(node).__name__} leaves are not supported on the wire")
    out.update({"leaf": {kind: 1}, "active": 1 if node.is_active() else 0,
                "last_attempt": float(node.last_split_attempt_at),
                "disabled": {f: 1 for f in node._disabled_attrs}, "ebst": {}, "nominal": {}})
    for feature, s in (node.splitters or {}).items():
        if type(s) in SPLITTERS:
            out["ebst"][feature] = ebst_rows(s._root)
        elif type(s) is NominalSplitterReg:
            out["nominal"][feature] = {v: _moments(var) for v, var in s._statistics.items()}
        else:
            raise ValueError(f"splitter {type(s).__name__} is not supported on the wire")
    if kind != "mean":
        out["linear"] = LINEAR.get_params(node._leaf_model)
    if kind == "adaptive":
        out["fmse"] = (float(node._fmse_mean), float(node._fmse_model))
    return out


def ebst_rows(root: EBSTNode | None) -> dict:
    """Each key's own target moments in an E-BST (its node's minus its left subtree's), in pre-order.

    >>> s = EBSTSplitter()
    >>> for x, y in [(2, 1.0), (1, 3.0), (3, 5.0), (1, 4.0)]:
    ...     s.update(x, y, 1.0)
    >>> rows = ebst_rows(s._root)
    >>> [(k, n, m) for k, (n, m, _) in rows.items()]
    [(2, 1.0, 1.0), (1, 2.0, 3.5), (3, 1.0, 5.0)]
    >>> ebst_rows(build_ebst(rows)) == rows
    True
    """
    if root is None:
        return {}
    total: dict[int, tuple] = {}  # id(node) -> moments of its whole subtree
    order, stack = [], [root]
    while stack:  # pre-order
        node = stack.pop()
        order.append(node)
        stack.extend(c for c in (node._right, node._left) if c is not None)
    for node in reversed(order):  # children before parents
        right = total.get(id(node._right), EMPTY) if node._right is not None else EMPTY
        total[id(node)] = numeric.chan_merge(_moments(node.estimator), right)
    rows = {}
    for node in order:
        left = total[id(node._left)] if node._left is not None else EMPTY
        rows[node.att_val] = numeric.chan_subtract(_moments(node.estimator), left)
    return rows


def build_ebst(rows: dict, path: str = "") -> EBSTNode | None:
    """The E-BST whose keys are inserted in ``rows``' order, each node holding its own moments and its left
    subtree's (as River's ``EBSTNode`` does); ``None`` for no rows.  Inserting a BST's keys in pre-order (as
    :func:`ebst_rows` gives them) or in any order that puts a key after its ancestors gives back its shape.
    ``ValueError`` for keys that do not sort, a repeated key or impossible moments."""
    if not rows:
        return None
    nodes = []
    for key, moments in rows.items():
        node = EBSTNode.__new__(EBSTNode)
        node.att_val, node._left, node._right = key, None, None
        node._update_estimator = EBSTNode._update_estimator_univariate
        node.estimator = _var(moments, path)
        nodes.append(node)
    try:
        for node in nodes[1:]:  # inserted in order, as River inserts (a new key becomes a leaf of the BST)
            at = nodes[0]
            while True:
                if node.att_val == at.att_val:
                    raise ValueError(f"tree leaf {path!r}: an E-BST's keys must be distinct")
                side = "_left" if node.att_val < at.att_val else "_right"
                below = getattr(at, side)
                if below is None:
                    setattr(at, side, node)
                    break
                at = below
    except TypeError:
        raise ValueError(f"tree leaf {path!r}: an E-BST's keys must sort together") from None
    subtree: dict[int, tuple] = {}
    for node in reversed(nodes):  # (a node comes after its parent in the rows: children before parents here)
        left = subtree.get(id(node._left), EMPTY) if node._left is not None else EMPTY
        right = subtree.get(id(node._right), EMPTY) if node._right is not None else EMPTY
        own = _moments(node.estimator)
        node.estimator = _var(numeric.chan_merge(own, left), path)
        subtree[id(node)] = numeric.chan_merge(numeric.chan_merge(own, left), right)
    return nodes[0]


def _build_leaf(model, node: dict, depth: int, path: str):
    (kind, _), = node["leaf"].items()
    if kind not in LEAF_KINDS:
        raise ValueError(f"tree leaf {path!r} has unknown kind {kind!r}")
    stats = _var(node["stats"], path)
    if kind == "mean":
        leaf = LeafMean(stats, depth, model.splitter)
    else:
        leaf_model = copy.deepcopy(model.leaf_model)
        LINEAR.set_params(leaf_model, node.get("linear", {}))
        leaf = LEAF_KINDS[kind](stats, depth, model.splitter, leaf_model)
        if kind == "adaptive":
            leaf._fmse_mean, leaf._fmse_model = map(float, node.get("fmse", (0.0, 0.0)))
    leaf.last_split_attempt_at = float(node.get("last_attempt", leaf.total_weight))
    leaf._disabled_attrs = set(node.get("disabled", {}))
    if not node.get("active", 1):
        leaf.deactivate()
        return leaf
    for feature, rows in node.get("ebst", {}).items():
        s = model.splitter.clone()
        s._root = build_ebst(rows, path)
        leaf.splitters[feature] = s
    for feature, per_value in node.get("nominal", {}).items():
        s = NominalSplitterReg()
        s._statistics = {v: _var(m, path) for v, m in per_value.items()}
        leaf.splitters[feature] = s
    return leaf


def _empty_params() -> dict:
    return {"model": {"seen": 0.0, "dropped": 0.0, "rerouted": 0.0, "growth": 1}, "nodes": {}}


def _empty_leaf(model) -> dict:
    kind = _KIND_OF[type(model._new_leaf())] if model is not None else "mean"
    out: dict = {"stats": EMPTY, "depth": 0, "leaf": {kind: 1}, "active": 1, "last_attempt": 0.0, "disabled": {},
                 "ebst": {}, "nominal": {}}
    if kind != "mean":
        out["linear"] = LINEAR.get_params(copy.deepcopy(model.leaf_model))
    if kind == "adaptive":
        out["fmse"] = (0.0, 0.0)
    return out


def _leaf_delta(model, node: dict, was: dict | None) -> dict | None:
    was = was or {}
    stats = numeric.chan_subtract(node["stats"], was.get("stats", EMPTY))
    if not stats[0]:
        return None
    out: dict = {"stats": stats, "base_n": float(was.get("stats", EMPTY)[0]),
                 "ebst": _rows_delta(node.get("ebst", {}), was.get("ebst", {})),
                 "nominal": _rows_delta(node.get("nominal", {}), was.get("nominal", {}))}
    if "linear" in node:
        out["linear"] = LINEAR.delta(model.leaf_model if model is not None else None, node["linear"],
                                     was.get("linear"))
        if "linear" in was:
            out["base_linear"] = was["linear"]
    if "fmse" in node:
        factor = _decay(model) ** stats[0] if model is not None else 0.0
        before = was.get("fmse", (0.0, 0.0))
        out["fmse"] = tuple(now - factor * b for now, b in zip(node["fmse"], before))
    return out


def _rows_delta(now: dict, before: dict) -> dict:
    """Per feature, each key's moments gained (keys that gained nothing left out; new keys in ``now``'s order)."""
    out = {}
    for feature, rows in now.items():
        was = before.get(feature, {})
        gained = {}
        for key, moments in rows.items():
            d = numeric.chan_subtract(moments, was[key]) if key in was else moments
            if d[0] > 1e-12 * max(1.0, moments[0]):
                gained[key] = d
        if gained:
            out[feature] = gained
    return out


def _add_rows(into: dict, gained: dict) -> None:
    for feature, rows in gained.items():
        have = into.setdefault(feature, {})
        for key, moments in rows.items():
            have[key] = numeric.chan_merge(have[key], moments) if key in have else moments


def _add_leaf(node: dict, gained: dict, decay: float | None = None) -> None:
    """Add a leaf delta's statistics to a leaf's params (or to an earlier delta) in place: moments, rows, and the
    decayed errors as if ``gained``'s events came after the leaf's (its errors decayed by ``decay`` per event).
    An inactive leaf keeps no splitter statistics; the linear change is merged by the caller."""
    node["stats"] = numeric.chan_merge(node["stats"], gained["stats"])
    if "fmse" in gained:
        factor = decay ** gained["stats"][0] if decay is not None else 1.0
        node["fmse"] = tuple(factor * a + b for a, b in zip(node.get("fmse", (0.0, 0.0)), gained["fmse"]))
    if not node.get("active", 1):
        return
    disabled = node.get("disabled", {})
    _add_rows(node.setdefault("ebst", {}), {f: r for f, r in gained.get("ebst", {}).items() if f not in disabled})
    _add_rows(node.setdefault("nominal", {}),
              {f: r for f, r in gained.get("nominal", {}).items() if f not in disabled})


def _settle(model, nodes: dict, path: str, gained: dict) -> float:
    """Add the leaf delta ``gained`` at ``path``; where that leaf has split since, divide it among the children
    (:func:`_parts`).  Returns the weight that found no leaf.

    The leaf's linear model moves toward the replica's (its base's plus its change) by ``n / (n + G)``: ``n`` the
    delta's events, ``G`` the events the leaf gained from other replicas since the delta's base.  With nothing
    merged in between (one replica; replicas taking turns) the change is applied whole, as River's model would
    have learned it; models learned in parallel from one base are averaged by their events, in any order of
    arrival.  Replicas learn at K times the spec's rate to make up for the average (``averages_learning``, as
    the ``scaled_average`` policy does for linear models); K=1 learns at River's.  A re-routed part (its leaf
    did not exist at the base) adds its share of the change times ``n / (n + G)``.  Measured (NOTES.md):
    summing the changes made ``model`` leaves diverge at K=4, since each replica's change already covers most
    of the way to its optimum; adding each change times ``n / (n + G)`` without moving toward the replica's
    model, or averaging without the faster rate, left the leaf models further behind River's."""
    node = nodes.get(path)
    weight = gained["stats"][0]
    if node is None:
        return weight
    if "leaf" in node:
        others = max(0.0, node["stats"][0] - gained.get("base_n", 0.0))
        _add_leaf(node, gained, _decay(model))
        if "linear" in gained and "linear" in node:
            c = weight / (weight + others) if weight else 0.0
            change = LINEAR.scale_learned(None, gained["linear"], c)
            if others and "base_linear" in gained:  # toward the replica's model: c * (base + change - now)
                change = LINEAR.add_learned(None, change, LINEAR.delta(None, gained["base_linear"], node["linear"]),
                                            c)
            node["linear"] = LINEAR.apply(model.leaf_model if model is not None else None, node["linear"], [change],
                                          [1.0], _SUM)
        return 0.0
    lost = weight
    for index, moments in _parts(nodes, path, node, gained).items():
        if moments[0] > 0:
            part = _part(gained, moments)
            lost -= moments[0] - _settle(model, nodes, child(path, index), part)
    return max(lost, 0.0)


def _parts(nodes: dict, path: str, node: dict, gained: dict) -> dict[int, tuple]:
    """``{child index: target moments}``: ``gained``'s events divided by the branch's test, from the split
    feature's own statistics in ``gained``; the events without them go to the heavier child."""
    out: dict[int, tuple] = {}

    def add(i: int, m: tuple) -> None:
        out[i] = numeric.chan_merge(out.get(i, EMPTY), m)

    if "numeric_split" in node:
        (feature, threshold), = node["numeric_split"].items()
        for key, m in gained.get("ebst", {}).get(feature, {}).items():
            add(0 if key <= threshold else 1, m)
        children = 2
    elif "nominal_split" in node:
        (feature, test), = node["nominal_split"].items()
        (value, _), = test.items()
        for v, m in gained.get("nominal", {}).get(feature, {}).items():
            add(0 if v == value else 1, m)
        children = 2
    else:
        (feature, mapping), = node["multiway_split"].items()
        for v, m in gained.get("nominal", {}).get(feature, {}).items():
            if v in mapping:
                add(mapping[v], m)
        children = len(mapping)
    placed = EMPTY
    for m in out.values():
        placed = numeric.chan_merge(placed, m)
    if "multiway_split" in node:  # (values no branch takes are lost, not missing)
        for v, m in gained.get("nominal", {}).get(feature, {}).items():
            if v not in mapping:
                placed = numeric.chan_merge(placed, m)
    rest = numeric.chan_subtract(gained["stats"], placed)
    if rest[0] > 1e-9 * max(1.0, gained["stats"][0]):
        add(heavier(nodes, path, children, lambda n: n["stats"][0]), rest)
    return out


def _part(gained: dict, moments: tuple) -> dict:
    """The part of a leaf delta with target ``moments``: the linear change and decayed errors in proportion to
    its events; no splitter statistics (see the module doc)."""
    share = moments[0] / gained["stats"][0] if gained["stats"][0] else 0.0
    out: dict = {"stats": moments, "ebst": {}, "nominal": {}}
    if "linear" in gained:
        out["linear"] = LINEAR.scale_learned(None, gained["linear"], share)
    if "fmse" in gained:
        out["fmse"] = tuple(share * e for e in gained["fmse"])
    return out


HOEFFDING_TREE_REGRESSOR = register(HoeffdingTreeRegressorAdapter())
