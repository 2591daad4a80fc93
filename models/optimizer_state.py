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

Other optimizers (FTRL regenerates weights from ``z``/``n``; momentum methods
carry velocities) are refused with a clear error instead of being merged
silently wrong.
"""

from __future__ import annotations

from typing import Any

from river import optim

from riverflink.models import numeric

KINDS = {
    "opt_steps": numeric.ADDITIVE,
    "opt_g2": numeric.ADDITIVE,
    "opt_m": numeric.AVERAGED,
    "opt_v": numeric.AVERAGED,
}
SUPPORTED = (optim.SGD, optim.Adam, optim.AdaGrad)


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


def scale_lr(opt: Any, factor: float) -> Any:
    """Return a copy of ``opt`` whose learning rate (number or schedule) is multiplied."""
    opt = opt.clone(include_attributes=True) if hasattr(opt, "clone") else opt
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

