"""The shape of a Hoeffding tree that replicas grow together, whatever its leaves learn (classes or a target).

Both tree families (:mod:`models.hoeffding_tree`, :mod:`models.hoeffding_tree_regressor`) lay a tree out the same
way in their params: ``{"nodes": {path: node}}``, ``path`` ``""`` for the root and ``"<parent path>/<child index>"``
below it (:func:`child`).  A branch node is ``{"stats", "depth", SPLIT: ...}`` with SPLIT ``numeric_split``
``{feature: threshold}``, ``nominal_split`` ``{feature: {value: 0}}`` or ``multiway_split`` ``{feature: {value:
child index}}``; a leaf node holds ``leaf`` (``{kind: 1}``) and what its family learns.  This module holds what
does not depend on the leaves: walking and describing a tree, the branches' params and their rebuild, the
replicas' frozen growth (:func:`freeze`) and the merger's split attempts (:func:`grow`, River's own
``_attempt_to_split``).
"""

from __future__ import annotations

from typing import Any, Callable

from river.tree.nodes.branch import DTBranch, NominalBinaryBranch, NominalMultiwayBranch, NumericBinaryBranch

from riverflink.models.adapter import Adapter

#: a branch node's test, by the key that holds it
SPLITS = ("numeric_split", "nominal_split", "multiway_split")
#: the deepest path a document may hold (a hostile document cannot make the rebuild recurse without bound)
MAX_DEPTH = 64
#: the families laid out this way (``riverflink models`` shows their shape)
FAMILIES = ("hoeffding_tree", "hoeffding_tree_regressor")


def child(path: str, index: int) -> str:
    """The path of child ``index`` of the node at ``path``.

    >>> child("", 1), child("1", 0)
    ('1', '1/0')
    """
    return f"{path}/{index}" if path else str(index)


def walk(node, path: str = ""):
    """``(path, node)`` for every node under ``node``, parents before children."""
    stack = [(path, node)]
    while stack:
        path, node = stack.pop()
        yield path, node
        if isinstance(node, DTBranch):
            for i in reversed(range(len(node.children))):
                stack.append((child(path, i), node.children[i]))


def freeze(model: Any) -> Any:
    """Switch ``model``'s growth off for good, as a replica holds the merged tree: River's ``learn_one`` then
    updates the statistics of the leaf an event reaches and never splits it, and later ``set_params`` (rebases)
    keep it off.  Returns ``model``."""
    model._growth_allowed = False
    model._riverflink_frozen = True
    return model


def describe(model: Any) -> dict:
    """``{"depth", "leaves", "branches"}`` of a tree (``riverflink models`` shows them)."""
    nodes = dict(walk(model._root)) if model._root is not None else {}
    leaves = [n for n in nodes.values() if not isinstance(n, DTBranch)]
    return {"depth": max((n.depth for n in leaves), default=0), "leaves": len(leaves),
            "branches": len(nodes) - len(leaves)}


def shape_of(doc: dict) -> str | None:
    """``tree: depth D, L leaves, B branches`` for a tree family's model document (as ``riverflink models``
    lists it, without rebuilding the tree); ``None`` for another family's.

    >>> from river import tree
    >>> from riverflink import models
    >>> t = tree.HoeffdingTreeClassifier(grace_period=50)
    >>> for i in range(200):
    ...     t.learn_one({"x": float(i % 10)}, i % 10 < 5)
    >>> shape_of(models.to_wire(t))
    'tree: depth 1, 2 leaves, 1 branches'
    >>> shape_of({"family": "hoeffding_tree", "params": {"nodes": [["", 7]]}})
    'tree: malformed'
    """
    if doc.get("family") not in FAMILIES:
        return None
    try:  # (any record of the topic: a malformed one is said so, not raised)
        nodes = [dict(fields) for _, fields in dict(doc.get("params", {})).get("nodes", [])]
        leaves = [n for n in nodes if "leaf" in n]
        depth = max((int(n.get("depth", 0)) for n in leaves), default=0)
    except (TypeError, ValueError, AttributeError):
        return "tree: malformed"
    return f"tree: depth {depth}, {len(leaves)} leaves, {len(nodes) - len(leaves)} branches"


def grow(model: Any) -> int:
    """The merger's split attempts, with River's own ``_attempt_to_split``, on ``model`` in place: every active leaf
    that has gained ``grace_period`` weight since its last attempt is tried once, as River's ``learn_one`` would
    try it (a leaf at ``max_depth`` is deactivated instead).  Nothing is tried once River's memory management
    switched growth off, or on a replica's frozen copy.  Returns the number of leaves that split."""
    if model._root is None or getattr(model, "_riverflink_frozen", False):
        return 0
    parents = {}
    for path, node in walk(model._root):
        if isinstance(node, DTBranch):
            for i, c in enumerate(node.children):
                parents[id(c)] = (node, i)
    split = 0
    for path, node in list(walk(model._root)):
        if isinstance(node, DTBranch) or not node.is_active() or not model._growth_allowed:
            continue
        if node.depth >= model.max_depth:
            node.deactivate()
            model._n_active_leaves -= 1
            model._n_inactive_leaves += 1
            continue
        weight = node.total_weight
        # (merged weights carry the rounding of the deltas' differences: a leaf River attempts at exactly its
        # grace period can read a hair below it here, and would then be attempted one event late)
        if weight - node.last_split_attempt_at < model.grace_period * (1 - 1e-9):
            continue
        parent, branch = parents.get(id(node), (None, None))
        before = model._root if parent is None else parent.children[branch]
        model._attempt_to_split(node, parent, branch)
        node.last_split_attempt_at = weight
        after = model._root if parent is None else parent.children[branch]
        split += after is not before
    return split


def branch_test(node: DTBranch) -> dict:
    """A branch's test as its params hold it: ``{SPLIT: {feature: ...}}`` (``ValueError`` for a branch kind the
    wire does not carry)."""
    if isinstance(node, NumericBinaryBranch):
        return {"numeric_split": {node.feature: float(node.threshold)}}
    if isinstance(node, NominalBinaryBranch):
        return {"nominal_split": {node.feature: {node.value: 0}}}
    if isinstance(node, NominalMultiwayBranch):
        return {"multiway_split": {node.feature: dict(node._mapping)}}
    raise ValueError(f"{type(node).__name__} branches are not supported on the wire")


def build_tree(nodes: dict, build_leaf: Callable[[dict, int, str], Any], branch_stats: Callable[[dict, str], Any]):
    """The root of the tree ``nodes`` lays out (``None`` for no nodes), with River's branch classes;
    ``build_leaf(node, depth, path)`` and ``branch_stats(node, path)`` make the family's leaves and branch
    statistics.  ``ValueError`` for a node at the wrong depth, both or neither leaf and branch, a multiway branch
    whose children are not numbered 0..n-1, or a node the root does not reach."""
    if not nodes:
        return None
    used: set = set()

    def build(path: str):
        node = nodes[path]
        used.add(path)
        depth = int(node["depth"])
        if not 0 <= depth <= MAX_DEPTH or depth != (path.count("/") + 1 if path else 0):
            raise ValueError(f"tree node {path!r} has depth {depth}")
        splits = [k for k in SPLITS if k in node]
        if "leaf" in node:
            if splits:
                raise ValueError(f"tree node {path!r} is both a leaf and a branch")
            return build_leaf(node, depth, path)
        if len(splits) != 1 or len(node[splits[0]]) != 1:
            raise ValueError(f"tree node {path!r} is neither a leaf nor one split")
        stats = branch_stats(node, path)
        (feature, test), = node[splits[0]].items()
        if splits[0] == "numeric_split":
            return NumericBinaryBranch(stats, feature, float(test), depth, build(child(path, 0)), build(child(path, 1)))
        if splits[0] == "nominal_split":
            (value, _), = test.items()
            return NominalBinaryBranch(stats, feature, value, depth, build(child(path, 0)), build(child(path, 1)))
        order = sorted(test.items(), key=lambda kv: kv[1])
        if [i for _, i in order] != list(range(len(order))) or not order:
            raise ValueError(f"tree node {path!r}: a multiway branch's children must be numbered 0..n-1")
        children = [build(child(path, i)) for i in range(len(order))]
        return NominalMultiwayBranch(stats, feature, [v for v, _ in order], depth, *children)

    root = build("")
    if len(used) != len(nodes):
        raise ValueError(f"{len(nodes) - len(used)} tree nodes are not reachable from the root")
    return root


class GrownTreeAdapter(Adapter):
    """What both tree families do alike in the loop: replicas frozen, the merger grows, and the tree's bookkeeping
    (``{"seen", "dropped", "rerouted", "growth"}`` under the params' ``model``)."""

    def prepare_replica(self, model: Any) -> None:
        freeze(model)

    def grow(self, model: Any) -> int:
        return grow(model)

    @staticmethod
    def bookkeeping(model: Any) -> dict:
        """The params' ``model``: events learned, stale weight dropped and re-routed, whether growth is on."""
        return {"seen": float(model._train_weight_seen_by_model),
                "dropped": float(getattr(model, "_riverflink_dropped", 0.0)),
                "rerouted": float(getattr(model, "_riverflink_rerouted", 0.0)),
                "growth": 1 if model._growth_allowed else 0}

    @staticmethod
    def restore_bookkeeping(model: Any, head: dict) -> None:
        """Set ``model``'s bookkeeping from the params' ``model`` and River's leaf counts from its (rebuilt) tree;
        a replica's frozen growth stays off."""
        model._train_weight_seen_by_model = float(head.get("seen", 0.0))
        model._riverflink_dropped = float(head.get("dropped", 0.0))
        model._riverflink_rerouted = float(head.get("rerouted", 0.0))
        model._growth_allowed = bool(head.get("growth", 1)) and not getattr(model, "_riverflink_frozen", False)
        leaves = [n for _, n in walk(model._root) if not isinstance(n, DTBranch)] if model._root is not None else []
        model._n_active_leaves = sum(1 for n in leaves if n.is_active())
        model._n_inactive_leaves = len(leaves) - model._n_active_leaves


def heavier(nodes: dict, path: str, children: int, weight_of: Callable[[dict], float]) -> int:
    """The child of the branch at ``path`` whose leaves hold the most weight (``weight_of(leaf node)``), River's
    ``most_common_path``: where an event without the split feature goes."""
    weights = [0.0] * children
    for p, n in nodes.items():
        if "leaf" in n and p.startswith(path + "/" if path else ""):
            head = p[len(path) + 1:] if path else p
            i = int(head.split("/")[0])
            if i < children:
                weights[i] += weight_of(n)
    return max(range(children), key=lambda i: (weights[i], -i))
