"""Leaf arithmetic for parameter trees.

A *parameter tree* is what an adapter's ``get_params`` returns: nested ``dict``
objects whose leaves are numbers (``float``/``int``) or *moments* tuples
``(n, mean, m2)``.  Every leaf belongs to one of four kinds, declared by the
adapter per top-level key:

``ADDITIVE``
    counts that add up exactly (class counts, optimizer step counters,
    AdaGrad's squared-gradient sums).  Merge = base + sum of deltas.
``MOMENTS``
    ``(n, mean, m2)`` triples.  Merge uses Chan et al.'s parallel formula and
    is exact up to floating-point rounding; the delta is its exact inverse.
``LEARNED``
    parameters produced by a learning rule (weights, intercepts, Adam's moment
    estimates).  Merge = base + sum(c_i * delta_i), the coefficients ``c_i``
    coming from the merge policy.
``AVERAGED``
    learned parameters that are always count-weighted averaged whatever the
    policy (Adam's ``m``/``v``: summing them would overshoot).

Sparse semantics: a key missing from a tree counts as 0 (or as the empty
moment ``(0, 0.0, 0.0)``).  :func:`combine` results hold the union of keys and
never drop one; a delta (:func:`subtract`) of flat maps leaves out the entries
equal in both trees, so a delta's size is what changed, not the model's.

>>> subtract({"a": 1.0, "b": 2.0, "c": 0.0}, {"a": 1.0, "b": 1.5}, LEARNED)
{'b': 0.5, 'c': 0.0}
"""

from __future__ import annotations

import math
import operator
from typing import Any, Sequence

ADDITIVE = "additive"
MOMENTS = "moments"
LEARNED = "learned"
AVERAGED = "averaged"

Moments = tuple  # (n, mean, m2)
EMPTY_MOMENTS: Moments = (0, 0.0, 0.0)


def chan_merge(a: Moments, b: Moments) -> Moments:
    """Moments of the union of two disjoint samples (Chan et al., 1979).

    >>> chan_merge((2, 1.0, 2.0), (2, 3.0, 2.0))
    (4, 2.0, 8.0)
    """
    na, ma, sa = a
    nb, mb, sb = b
    n = na + nb
    if n == 0:
        return EMPTY_MOMENTS
    if na == 0:
        return (nb, mb, sb)
    if nb == 0:
        return (na, ma, sa)
    d = mb - ma
    return (n, ma + d * nb / n, sa + sb + d * d * na * nb / n)


def chan_subtract(ab: Moments, b: Moments) -> Moments:
    """Moments of sample ``a`` given the moments of ``a ∪ b`` and of ``b``.

    The exact inverse of :func:`chan_merge` (up to rounding).

    >>> chan_subtract((4, 2.0, 8.0), (2, 3.0, 2.0))
    (2, 1.0, 2.0)
    """
    n, m, s = ab
    nb, mb, sb = b
    na = n - nb
    if na <= 0:
        return EMPTY_MOMENTS
    if nb == 0:
        return (na, m, s)
    ma = (n * m - nb * mb) / na
    d = mb - ma
    return (na, ma, max(s - sb - d * d * na * nb / n, 0.0))


def _is_moments(v: Any) -> bool:
    return isinstance(v, tuple)


def _flat(*maps: dict) -> bool:
    """True when every map's first value is a plain number (the maps of weights and counts: the fast paths below
    do the same arithmetic in one loop, and fall back to the recursive one on a ``TypeError``)."""
    for m in maps:
        for v in m.values():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return False
            break
    return True


def subtract(p: Any, base: Any, kind: str) -> Any:
    """Delta tree ``p - base`` for one kind (union of keys; missing = zero)."""
    if isinstance(p, dict) or isinstance(base, dict):
        p = p if isinstance(p, dict) else {}
        base = base if isinstance(base, dict) else {}
        if kind != MOMENTS and _flat(p, base):
            try:
                get = base.get
                # entries equal in both are left out (they are 0): a delta holds what changed, not the model
                out = {k: v - get(k, 0) for k, v in p.items() if v != get(k, _ABSENT)}
                if len(p) < len(base) or not base.keys() <= p.keys():
                    out.update({k: 0 - v for k, v in base.items() if k not in p})
                return out
            except TypeError:
                pass
        out = {}
        for k in {**base, **p}:
            out[k] = subtract(p.get(k, _zero_like(base.get(k))), base.get(k, _zero_like(p.get(k))), kind)
        return out
    if kind == MOMENTS:
        return chan_subtract(p or EMPTY_MOMENTS, base or EMPTY_MOMENTS)
    return (p or 0) - (base or 0)


_ABSENT = object()


def subtract_at(p: dict | None, base: dict | None, keys: Any, kind: str = LEARNED) -> dict:
    """:func:`subtract` of two maps where they can differ only at ``keys`` (a journal, or :func:`keys_of` a
    merge's deltas): the same delta, visiting ``keys`` alone.  A map of maps (softmax weights per class) has its
    outer keys in ``keys``, and the inner maps at them are subtracted whole.

    >>> subtract_at({"a": 1.0, "b": 2.5, "c": 0.0}, {"a": 1.0, "b": 2.0}, {"b", "c"}) == {'b': 0.5, 'c': 0.0}
    True
    >>> subtract_at({"x": {"a": 1.0}, "y": {"a": 2.0}}, {"x": {"a": 0.5}}, {"x", "y"}) == {"x": {"a": 0.5}, "y": {"a": 2.0}}
    True
    """
    p, base = p or {}, base or {}
    pget, bget = p.get, base.get
    out = {}
    for k in keys:
        v, b = pget(k, _ABSENT), bget(k, _ABSENT)
        if isinstance(v, dict) or isinstance(b, dict):
            if v != b:
                out[k] = subtract({} if v is _ABSENT else v, {} if b is _ABSENT else b, kind)
        elif v is _ABSENT:
            if b is not _ABSENT:
                out[k] = 0 - b
        elif b is _ABSENT:
            out[k] = v - 0
        elif v != b:
            out[k] = v - b
    return out


def _zero_like(v: Any) -> Any:
    if isinstance(v, dict):
        return {}
    if _is_moments(v):
        return EMPTY_MOMENTS
    return 0


def combine(base: Any, deltas: Sequence[Any], coeffs: Sequence[float], kind: str) -> Any:
    """``base`` plus the deltas, each scaled by its coefficient (moments: merged).

    For ``ADDITIVE`` and ``MOMENTS`` leaves the coefficients are ignored: those
    statistics are exact sums.
    """
    if isinstance(base, dict) or any(isinstance(d, dict) for d in deltas):
        base = base if isinstance(base, dict) else {}
        ds = [d if isinstance(d, dict) else {} for d in deltas]
        if kind != MOMENTS and _flat(base, *ds):
            try:
                return _combine_flat(base, ds, coeffs, kind)
            except TypeError:
                pass
        keys: dict = dict.fromkeys(base)
        for d in ds:
            keys.update(dict.fromkeys(d))
        return {
            k: combine(base.get(k), [d.get(k) for d in ds], coeffs, kind) for k in keys
        }
    if kind == MOMENTS:
        out = base or EMPTY_MOMENTS
        for d in deltas:
            out = chan_merge(out, d or EMPTY_MOMENTS)
        return out
    total = base or 0
    if kind == ADDITIVE:
        for d in deltas:
            total = total + (d or 0)
        return total
    for d, c in zip(deltas, coeffs):
        total = total + c * (d or 0)
    return float(total)


def _combine_flat(base: dict, ds: list, coeffs: Sequence[float], kind: str) -> dict:
    """:func:`combine` of maps of plain numbers: the same sums in the same order, one pass per delta."""
    out = dict(base)
    get = out.get
    for d, c in zip(ds, coeffs if kind != ADDITIVE else [None] * len(ds)):
        if kind == ADDITIVE:
            for k, v in d.items():
                out[k] = (get(k) or 0) + v
        else:
            for k, v in d.items():
                out[k] = float((get(k) or 0) + c * v)
    return out  # entries no delta holds are the base's own (the work is the deltas' size, not the model's)


def copy_tree(tree: Any) -> Any:
    """A copy of a parameter tree that shares no dict with it (leaves are immutable: numbers and tuples).

    >>> t = {"w": {"a": 1.0}, "m": (1, 0.5, 0.0)}
    >>> c = copy_tree(t); c["w"]["a"] = 2.0; t["w"]["a"]
    1.0
    """
    if isinstance(tree, dict):
        if _flat(tree):
            return dict(tree)
        return {k: copy_tree(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [copy_tree(v) for v in tree]
    return tree


def sq_norm(tree: Any) -> float:
    """Sum of squares of all numeric leaves (moments count their mean)."""
    if isinstance(tree, dict):
        if _flat(tree):
            try:
                values = list(map(float, tree.values()))
                return float(sum(map(operator.mul, values, values)))
            except TypeError:
                pass
        return sum(sq_norm(v) for v in tree.values())
    if _is_moments(tree):
        return float(tree[1]) ** 2
    return float(tree or 0) ** 2


def leaves(tree: Any) -> int:
    """How many numeric leaves a parameter tree holds (a moments triple counts as one).

    >>> leaves({"w": {"a": 1.0, "b": 2.0}, "m": (3, 1.0, 0.5), "n": 4})
    4
    """
    if isinstance(tree, dict):
        return sum(leaves(v) for v in tree.values())
    return 1


def dot(a: Any, b: Any) -> float:
    """Dot product of two trees of numeric leaves (missing keys count as 0)."""
    if isinstance(a, dict):
        b = b if isinstance(b, dict) else {}
        return sum(dot(v, b.get(k)) for k, v in a.items())
    if _is_moments(a) or a is None or b is None or _is_moments(b):
        return 0.0
    return float(a) * float(b)


def check_finite(tree: Any, path: str = "params") -> None:
    """Raise ``ValueError`` naming the first NaN or infinite leaf under ``tree``."""
    if isinstance(tree, dict):
        if _flat(tree):
            try:  # (a sum of numbers is finite only when every one is; an overflowing sum takes the long way)
                if math.isfinite(sum(tree.values())) or all(map(math.isfinite, tree.values())):
                    return
            except (TypeError, OverflowError):
                pass
        for k, v in tree.items():
            check_finite(v, f"{path}[{k!r}]")
        return
    if isinstance(tree, (tuple, list)):
        for i, v in enumerate(tree):
            check_finite(v, f"{path}[{i}]")
        return
    if isinstance(tree, (int, float)) and not isinstance(tree, bool) and not math.isfinite(tree):
        raise ValueError(f"non-finite parameter {path} = {tree!r}: refusing to merge or serialize it")


def keys_of(deltas: Any) -> set:
    """The keys of every map of maps in ``deltas`` (parameter trees, or lists of them): the features whose
    per-feature entries they touch.

    >>> sorted(keys_of([{"weights": {"a": 1.0}, "intercept": 0.5}, {"steps": [{}, {"opt_z": {"b": 0.1}}]}]))
    ['a', 'b']
    """
    out: set = set()
    stack = [deltas]
    while stack:
        tree = stack.pop()
        if isinstance(tree, list):
            stack.extend(tree)
        elif isinstance(tree, dict):
            for value in tree.values():
                if isinstance(value, dict):
                    out.update(value)
                elif isinstance(value, list):
                    stack.extend(value)
    return out


def restrict(tree: Any, keys: Any, dense: bool = True) -> Any:
    """``tree`` (a parameter tree) with every map of per-feature entries cut down to ``keys``; other leaves whole
    (``dense=False``: left out, a delta that moves those features' entries alone).

    >>> restrict({"weights": {"a": 1.0, "b": 2.0}, "intercept": 0.5, "steps": [{"w": {"b": 1}}]}, {"b"})
    {'weights': {'b': 2.0}, 'intercept': 0.5, 'steps': [{'w': {'b': 1}}]}
    >>> restrict({"weights": {"a": 1.0, "b": 2.0}, "intercept": 0.5}, {"b"}, dense=False)
    {'weights': {'b': 2.0}}
    """
    if isinstance(tree, list):
        return [restrict(t, keys, dense) for t in tree]
    if not isinstance(tree, dict):
        return tree
    out = {}
    for name, value in tree.items():
        if isinstance(value, dict):
            out[name] = {k: value[k] for k in keys if k in value}
        elif isinstance(value, list):
            out[name] = restrict(value, keys, dense)
        elif dense:
            out[name] = value
    return out


def write_at(tree: dict, part: dict, keys: Any, dense: bool = True) -> None:
    """Write ``part`` (``restrict(new tree, keys)``) into ``tree`` in place: each per-feature map takes ``part``'s
    entries for ``keys`` (removing those ``part`` lacks), other leaves are replaced (``dense=False``: they stay).

    >>> t = {"weights": {"a": 1.0, "b": 2.0, "c": 3.0}, "intercept": 0.5}
    >>> write_at(t, {"weights": {"b": 5.0}, "intercept": 0.7}, {"b", "c"}); t
    {'weights': {'a': 1.0, 'b': 5.0}, 'intercept': 0.7}
    >>> write_at(t, {"weights": {"c": 3.0}, "intercept": 9.0}, {"b", "c"}, dense=False); t
    {'weights': {'a': 1.0, 'c': 3.0}, 'intercept': 0.7}
    """
    if isinstance(tree, list):
        for t, p in zip(tree, part, strict=True):
            write_at(t, p, keys, dense)
        return
    for name, value in part.items():
        if isinstance(value, dict):
            write_entries(tree.setdefault(name, {}), value, keys)
        elif isinstance(value, list):
            write_at(tree[name], value, keys, dense)
        elif dense:
            tree[name] = value


def write_entries(target: Any, new: dict, keys: Any) -> None:
    """``target`` (a map: a dict, a ``VectorDict``) takes ``new``'s entry for each of ``keys``; keys absent from
    ``new`` are removed from it.

    >>> t = {"a": 1.0, "b": 2.0}; write_entries(t, {"c": 3.0}, {"b", "c"}); t
    {'a': 1.0, 'c': 3.0}
    """
    for k in keys:
        v = new.get(k, _ABSENT)
        if v is not _ABSENT:
            target[k] = v
        elif k in target:
            del target[k]
