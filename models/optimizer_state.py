"""Optimizer state of linear models, as mergeable parameter leaves.

What we merge, and why (a rebased replica must keep training sensibly):

* ``opt_steps`` (``n_iterations``, every optimizer) is **additive**: the merged
  model's step counter is the base's plus every replica's steps since the
  base, i.e. the number of updates single-node River would have made.  A
  replica rebased on it continues a decaying schedule (``InverseScaling``) at
  the global pace instead of restarting it or counting the base K times.
* ``opt_g2`` (AdaGrad's squared-gradient sums) is **additive** for the same
  reason: it is a sum over all updates.
* ``opt_m`` / ``opt_v`` (Adam's moment estimates) are exponential averages,
  so they are **count-weighted averaged** whatever the merge policy.
* ``opt_z`` / ``opt_n`` (FTRL-Proximal's per-coordinate sums of adjusted
  gradients and of squared gradients) are **additive**: sums over all updates,
  as in one model.  FTRL regenerates a weight from its ``z`` and ``n`` at the
  start of every step that touches it, when ``|z| > l1``; River leaves the
  weight as it was otherwise (it does not zero it).  The weights themselves
  stay learned leaves (merged as deltas): a merged weight is what serving uses
  until a replica's next step on that feature regenerates it from the merged
  ``z``/``n``, or, where ``|z| <= l1``, keeps it, exactly River's rule.

Other optimizers (momentum methods carry velocities) are refused with a clear
error instead of being merged silently wrong.
"""

from __future__ import annotations

import math
from typing import Any

from river import optim

from riverflink.models import numeric

KINDS = {
    "opt_steps": numeric.ADDITIVE,
    "opt_g2": numeric.ADDITIVE,
    "opt_m": numeric.AVERAGED,
    "opt_v": numeric.AVERAGED,
    "opt_z": numeric.ADDITIVE,
    "opt_n": numeric.ADDITIVE,
}
SUPPORTED = (optim.SGD, optim.Adam, optim.AdaGrad, optim.FTRLProximal)


def check_supported(opt: Any) -> None:
    if type(opt) not in SUPPORTED:
        from riverflink.models.adapter import UnsupportedModelError

        raise UnsupportedModelError(
            f"optimizer {type(opt).__name__} cannot be merged; supported optimizers: "
            + ", ".join(c.__name__ for c in SUPPORTED)
        )


def get_state(opt: Any) -> dict:
    check_supported(opt)
    state: dict = {"opt_steps": opt.n_iterations}
    if isinstance(opt, optim.Adam):
        state["opt_m"] = dict(opt.m or {})
        state["opt_v"] = dict(opt.v or {})
    elif isinstance(opt, optim.AdaGrad):
        state["opt_g2"] = dict(opt.g2)
    elif isinstance(opt, optim.FTRLProximal):
        state["opt_z"] = dict(opt.z)
        state["opt_n"] = dict(opt.n)
    return state


def set_state(opt: Any, params: dict) -> None:
    check_supported(opt)
    import collections

    opt.n_iterations = int(round(params.get("opt_steps", 0)))
    if isinstance(opt, optim.Adam):
        if params.get("opt_m") or params.get("opt_v"):
            opt.m = collections.defaultdict(float, params.get("opt_m", {}))
            opt.v = collections.defaultdict(float, params.get("opt_v", {}))
        else:
            opt.m = opt.v = None
    elif isinstance(opt, optim.AdaGrad):
        opt.g2 = collections.defaultdict(float, params.get("opt_g2", {}))
    elif isinstance(opt, optim.FTRLProximal):
        opt.z = collections.defaultdict(float, params.get("opt_z", {}))
        opt.n = collections.defaultdict(float, params.get("opt_n", {}))


def ftrl_weight(opt: Any, z: float, n: float) -> float | None:
    """The weight FTRL-Proximal ``opt`` regenerates from a coordinate's ``z`` and ``n`` at the start of a step
    (River's formula), or ``None`` where ``|z| <= l1`` (River then leaves the weight as it was).

    >>> ftrl_weight(optim.FTRLProximal(alpha=0.1, beta=1.0, l1=0.5, l2=1.0), z=-2.5, n=9.0)
    0.04878048780487805
    >>> ftrl_weight(optim.FTRLProximal(l1=0.5), z=0.3, n=1.0) is None
    True
    """
    if abs(z) <= opt.l1:
        return None
    return -(((opt.beta + n ** 0.5) / opt.alpha + opt.l2) ** -1) * (z - math.copysign(opt.l1, z))


def scale_lr(opt: Any, factor: float) -> Any:
    """Return a copy of ``opt`` whose learning rate (number or schedule) is multiplied."""
    opt = opt.clone(include_attributes=True) if hasattr(opt, "clone") else opt
    if isinstance(opt, optim.FTRLProximal):  # alpha is its learning rate
        opt.alpha = opt.alpha * factor
        return opt
    lr = opt.lr
    if isinstance(lr, (int, float)):
        opt.lr = lr * factor
    elif hasattr(lr, "learning_rate"):
        lr = lr.clone()
        lr.learning_rate = lr.learning_rate * factor
        opt.lr = lr
    else:
        raise ValueError(f"cannot scale learning-rate schedule {type(lr).__name__}")
    return opt


def with_state(kinds: dict) -> dict:
    return {**kinds, **KINDS}



#: an optimizer's per-feature state maps: (attribute, parameter name)
_MAPS = {optim.Adam: (("m", "opt_m"), ("v", "opt_v")), optim.AdaGrad: (("g2", "opt_g2"),),
         optim.FTRLProximal: (("z", "opt_z"), ("n", "opt_n"))}


def get_state_at(opt: Any, keys: Any) -> dict | None:
    """:func:`get_state` with its per-feature maps cut down to ``keys``; ``None`` for Adam before its first step
    (its maps are created then)."""
    check_supported(opt)
    state: dict = {"opt_steps": opt.n_iterations}
    for attr, name in _MAPS.get(type(opt), ()):
        m = getattr(opt, attr)
        if m is None:
            return None
        state[name] = {k: m[k] for k in keys if k in m}
    return state


def set_state_at(opt: Any, params: dict, keys: Any) -> bool:
    """:func:`set_state` in place at ``keys`` (see ``Adapter.set_at``); ``False`` when the maps do not exist yet."""
    check_supported(opt)
    maps = [(getattr(opt, attr), params.get(name, {})) for attr, name in _MAPS.get(type(opt), ())]
    if any(m is None for m, _ in maps):
        return False
    opt.n_iterations = int(round(params.get("opt_steps", 0)))
    for m, new in maps:
        numeric.write_entries(m, new, keys)
    return True


