"""Delay compensation, on both sides of the loop.  Pure Python.

A replica learns on a merged version that is already old when its update
reaches the merger: other replicas' updates were merged meanwhile, and they
corrected the same errors.  Adding every update in full would correct a
shared error K times (the plain delta sum diverged on regression).

* **Replica side** (:func:`kappa`, :class:`ContractionProbe`): each update
  carries ``kappa = 1 - (1 - lr * h) ** S`` (``h`` the mean loss curvature at
  the replica's predictions, :func:`curvature`; ``S`` its events), the part
  of a parameter offset its ``S`` SGD steps would have undone; where that
  cannot be estimated, the probe's ``rho`` and ``shared`` from the two halves
  of each sync period.  A softmax update carries the same per input direction
  instead (:func:`directions`: a matrix, not a scalar).
* **Merger side** (:class:`Compensator`): ``delta - kappa * O`` with ``O``
  how far the merged parameters moved from the point the replica learned
  from (its base plus its own raw updates merged since), else a scalar
  discount ``1 - shared * (1 - rho ** s)`` for staleness ``s``.  With
  :class:`~riverflink.operators.messages.Directions`: ``delta - C O`` on the
  final step's weights (:func:`directed`).  It remembers the last versions'
  parameters (:func:`params_memory`) for that.

The maths and the measurements behind it: ``docs/merge-policies.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from riverflink import models
from riverflink.models import numeric
from riverflink.operators.messages import DIRECTIONS_MAX, Directions, ReplicaId, ReplicaUpdate

# -- replica side -------------------------------------------------------------------------------


def curvature(loss: str, proba: dict | None) -> float:
    """Second derivative of the final step's loss (its class name) at a prediction (squared: 2; log: p(1 - p);
    cross-entropy: the mean over classes of ``p_c (1 - p_c)``, the diagonal of the softmax Hessian on the logits).

    >>> curvature("Squared", None), curvature("Log", {True: 0.5, False: 0.5}), curvature("Hinge", None)
    (2.0, 0.25, 0.0)
    >>> curvature("CrossEntropy", {"a": 0.5, "b": 0.5, "c": 0.0})
    0.1666...
    """
    if loss == "Squared":
        return 2.0
    if loss == "Log" and proba:
        p = float(proba.get(True, 0.0))
        return p * (1.0 - p)
    if loss == "CrossEntropy" and proba:
        return sum(float(p) * (1.0 - float(p)) for p in proba.values()) / len(proba)
    return 0.0


def kappa(model: Any, mean_curvature: float, events: int, stiffness: float = 1.0) -> float | None:
    """``kappa = 1 - (1 - lr * h * stiffness) ** events``, or ``None`` where it cannot be estimated.

    For a linear model behind a StandardScaler trained by plain SGD with
    squared or log loss, ``h`` the mean loss curvature at the replica's
    predictions and ``stiffness`` the largest eigenvalue of the second-moment
    matrix of the standardised inputs (:func:`compensable` models only;
    :func:`~riverflink.operators.batch_learning.input_stiffness`): the part of
    a parameter offset ``D`` along the stiffest direction that the replica's
    ``events`` SGD steps would have removed had it started from a model offset
    by ``D``.  The merger uses it (:meth:`Compensator.correct`).  Correlated
    inputs make that direction stiffer than one feature's unit variance: with
    curvature alone, four replicas on TrumpApproval's six correlated features
    overshot along it once merges came three or more batches late.

    A linear model trained by FTRL-Proximal gets the same form for its intercept (``lr`` its
    ``intercept_lr``, the input constant 1): the merger derives its weights instead.  ``bench/sync.py``'s
    loop, Clicks (seed 21, 12,000 events), K=4, served accuracy against River over the last 8,000: merges
    one round late -0.31 points without it, -0.34 with it; four rounds +0.05, -0.14; eight rounds -10.00
    (the merged intercept at 2.6x River's), -3.81.
    """
    if mean_curvature <= 0 or events <= 0:
        return None
    from river import optim

    from riverflink.models.labels import final_step

    last = final_step(model)
    if type(getattr(last, "optimizer", None)) is optim.FTRLProximal:
        # FTRL: the merger derives the weights stale updates touched from the merged z and n
        # (models.linear.LinearAdapter.derive); what is left to compensate is the intercept, which every event
        # steps by intercept_lr along the constant input 1
        step = min(1.0, last.intercept_lr.get(last.optimizer.n_iterations) * mean_curvature)
        return 1.0 - (1.0 - step) ** events
    if not compensable(model):
        return None
    step = min(1.0, last.optimizer.learning_rate * mean_curvature * max(1.0, stiffness))
    return 1.0 - (1.0 - step) ** events


def per_direction(model: Any) -> bool:
    """True for the models compensated per input direction (:func:`directions`) and never by a scalar ``kappa``
    alone: softmax regression behind a StandardScaler, under plain SGD.

    Measured (``bench/sync.py``'s loop, K=4, gap to River after 1,000 events, merges one round late, then three):
    with the probe's scalar discount ImageSegments -0.46 and -3.75 points, Waveform -2.94 and -6.47, LEDSwitch
    -0.96 and -6.27, RBFDrift -1.03 and -7.83; per direction -0.16 and -1.58, -0.28 and -1.47, -1.06 and -6.02,
    -1.23 and -5.64 (the last two drift: River served with the loop's lag loses -0.96 and -1.20 at one round).
    A scalar kappa along the stiffest direction did worse than the discount on three of the four (NOTES.md).
    On the binary and regression streams per direction was within 0.1 points of the scalar kappa at one and three
    rounds, and far worse on TrumpApproval's correlated features with batches of 50 and merges four rounds late
    (the final model at 2.2-4.1x River's MAE over three seeds, against 0.99-1.05x): those keep the scalar.
    """
    from river import linear_model

    from riverflink.models.labels import final_step

    return compensable(model) and isinstance(final_step(model), linear_model.SoftmaxRegression)


def directions(model: Any, mean_curvature: float, events: int, moments: tuple | None) -> Directions | None:
    """``C = I - (I - lr h M)^S`` over the features of ``moments`` (``(features, M)``,
    :func:`~riverflink.operators.batch_learning.input_moments`) for a :func:`per_direction` model: along each
    eigenvector of ``M`` (eigenvalue ``m``), the part of a parameter offset the update's ``events`` SGD steps
    would have undone, ``1 - (1 - lr h m)^S``; the scalar :func:`kappa` is that along the stiffest one alone.
    ``None`` where it cannot be estimated (no moments yet, too many features, no curvature).

    >>> import numpy as np
    >>> from riverflink.models.spec import build
    >>> model = build("StandardScaler|SoftmaxRegression")  # SGD, lr 0.01
    >>> d = directions(model, 0.2, 100, (["a", "b"], np.diag([4.0, 0.25])))
    >>> d.features, [round(v, 4) for v in d.upper]  # 1 - (1 - 0.008)^100, 0, 1 - (1 - 0.0005)^100
    (('a', 'b'), [0.5521, 0.0, 0.0488])
    """
    import numpy as np

    if moments is None or mean_curvature <= 0 or events <= 0 or not per_direction(model):
        return None
    features, M = moments
    if not 0 < len(features) <= DIRECTIONS_MAX:
        return None
    from riverflink.models.labels import final_step

    step = final_step(model).optimizer.learning_rate * mean_curvature
    lam, V = np.linalg.eigh(np.asarray(M, dtype=float))
    c = 1.0 - np.clip(1.0 - step * np.clip(lam, 0.0, None), 0.0, 1.0) ** events
    return Directions.of_matrix(features, (V * c) @ V.T)


def compensation(model: Any, mean_curvature: float, events: int, stiffness: float,
                 moments: tuple | None) -> tuple[float | None, Directions | None]:
    """``(kappa, directions)`` for an update of ``events`` at ``mean_curvature``: :func:`kappa` alone, or for a
    :func:`per_direction` model its :func:`directions` with the ``kappa`` of a unit-variance feature (for the
    features the directions leave out); a softmax model without directions gets neither (the scalar discount)."""
    if not per_direction(model):
        return kappa(model, mean_curvature, events, stiffness), None
    d = directions(model, mean_curvature, events, moments)
    return (kappa(model, mean_curvature, events), d) if d is not None else (None, None)


def directed(template: Any, offset: dict, d: Directions, kappa: float) -> dict:
    """What to subtract from a stale update for an ``offset`` of the merged parameters: ``C O`` on each weight row
    of the final step (one per class) over ``d``'s features, ``kappa O`` on every other learned entry."""
    import numpy as np
    from river import compose

    family = models.adapter_for(template)
    out = family.scale_learned(template, offset, kappa)
    pipeline = isinstance(template, compose.Pipeline)
    last = offset["steps"][-1] if pipeline else offset
    weights = last.get("weights")
    if not isinstance(weights, dict):
        return out
    C, at = d.matrix(), {f: i for i, f in enumerate(d.features)}

    def row(w: dict) -> dict:
        v = np.zeros(len(at))
        for f, x in w.items():
            if f in at:
                v[at[f]] = x
        cv = C @ v
        return {f: float(cv[at[f]]) if f in at else kappa * x for f, x in w.items()}

    nested = any(isinstance(w, dict) for w in weights.values())
    new_last = {**(out["steps"][-1] if pipeline else out),
                "weights": {c: row(w) for c, w in weights.items()} if nested else row(weights)}
    return {**out, "steps": [*out["steps"][:-1], new_last]} if pipeline else new_last


def compensable(model: Any) -> bool:
    """True for the models :func:`kappa` can estimate: a StandardScaler, then a linear step under plain SGD."""
    from river import compose, optim, preprocessing

    from riverflink.models.labels import final_step

    scaled = isinstance(model, compose.Pipeline) and any(
        isinstance(s, preprocessing.StandardScaler) for s in list(model.steps.values())[:-1])
    return scaled and type(getattr(final_step(model), "optimizer", None)) is optim.SGD


@dataclass
class ContractionProbe:
    """Estimates, from the two halves of each sync period, how a replica's learning splits.

    Model of one half's learned step: a part on an error the replicas share,
    which shrinks by ``t = sqrt(rho)`` per half, plus noise from the half's own
    events: ``first = s + n1``, ``second = t s + n2``.  Moving averages over
    sync periods of ``A = |first|^2``, ``B = |second|^2`` and
    ``C = <second, first>`` give ``A - B = |s|^2 (1 - t^2)`` and
    ``C = t |s|^2``, hence ``t`` and the shared fraction ``phi = |s|^2 / A``.
    Returns ``(rho, phi)``; with no shared part (``C <= 0``), ``(1.0, 0.0)``.
    """

    smoothing: float = 0.3
    a: float = 0.0
    b: float = 0.0
    c: float = 0.0

    def observe(self, model: Any, first: dict, second: dict) -> tuple[float, float]:
        from riverflink.models.sync import learned_dot

        w = self.smoothing
        self.a = (1 - w) * self.a + w * learned_dot(model, first, first)
        self.b = (1 - w) * self.b + w * learned_dot(model, second, second)
        self.c = (1 - w) * self.c + w * learned_dot(model, second, first)
        if self.c <= 0 or self.a <= 0:
            return 1.0, 0.0
        k = (self.a - self.b) / self.c
        t = min(1.0, max(0.0, (-k + math.sqrt(k * k + 4)) / 2))
        shared = self.c / t if t > 0 else self.a
        return t * t, min(1.0, max(0.0, shared / self.a))


# -- merger side --------------------------------------------------------------------------------

#: how many recent versions the merger remembers to measure staleness
VERSION_MEMORY = 256
#: versions whose parameters the merger keeps (checkpointed with it) for delay compensation, at most:
#: an update whose base has been forgotten falls back to a scalar discount, and at tens of versions
#: per second 24 versions (the first bound) covered less than the 0.2-0.9 s an update's base was old
#: under a backlog (batch mode lost 0.65-0.93 points against River at 200k Phishing events; +0.03 to
#: +0.07 with 256, same run series)
PARAMS_MEMORY = 256
#: ... and within this many parameter values in all (a model of 20k weights keeps 25 versions)
PARAMS_BUDGET = 500_000
PARAMS_MIN = 24


def params_memory(params: Any) -> int:
    """How many versions' parameters to keep for a model whose parameters are ``params``.

    >>> params_memory({"w": {str(i): 0.0 for i in range(20)}}), params_memory({"w": {str(i): 0.0 for i in range(100_000)}})
    (256, 24)
    """
    return max(PARAMS_MIN, min(PARAMS_MEMORY, PARAMS_BUDGET // max(1, numeric.leaves(params))))


@dataclass
class Compensator:
    """The merger's memory of recent versions, and the correction of stale updates it allows."""

    template: Any
    #: (version, replicas merged into it) for the last few versions, oldest first
    history: list = field(default_factory=list)
    #: version -> parameters, for the last few versions
    params_at: dict = field(default_factory=dict)
    #: replica -> [(version, sum of the raw deltas of its updates merged into that version)], last few
    applied: dict = field(default_factory=dict)
    #: how many versions ``params_at`` and ``applied`` keep (:func:`params_memory`, refreshed every 32 merges)
    keep_versions: int = PARAMS_MIN
    #: version -> the features whose per-feature entries its merge changed (None: not known), for the versions
    #: in ``params_at`` (or ``undo_at``): the offset of a stale update is then measured on those features alone
    touched_at: dict = field(default_factory=dict)
    #: a merger that merges in place (a sharded one) keeps, instead of whole versions in ``params_at``, an *undo
    #: record* per version: version -> (its parent version, the parent's parameters at the features the merge
    #: changed, with the dense part).  A version's parameters at any features are the current ones with the
    #: records since it applied, newest first (:meth:`params_of`).
    undo_at: dict = field(default_factory=dict)

    def staleness(self, base_version: int, replica: ReplicaId, version: int) -> int:
        """Merges of other replicas' updates between ``base_version`` and ``version`` (all remembered if older)."""
        if base_version == version:
            return 0
        n = 0
        for v, replicas in reversed(self.history):
            if v <= base_version:
                return n
            n += replica not in replicas
        return n

    def discount(self, update: ReplicaUpdate, version: int) -> float:
        """The factor on ``update``'s learned parameters: ``1 - shared * (1 - rho ** s)``.

        Only the part of the step on errors shared with other replicas
        (``shared``, estimated by the replica) overlaps with their updates;
        the rest is information of the replica's own events and is kept whole.
        An update without estimates (its replica's first sync periods) is
        taken as fully shared and saturated: its stale learned parameters get
        factor 0 (statistics are always merged exactly).
        """
        s = self.staleness(update.base_version, update.replica, version)
        if s == 0:
            return 1.0
        rho = 0.0 if update.rho is None else min(1.0, max(0.0, update.rho))
        shared = 1.0 if update.shared is None else min(1.0, max(0.0, update.shared))
        return 1.0 - shared * (1.0 - rho**s)

    def correct(self, update: ReplicaUpdate, params: dict, version: int, earlier: list = ()) -> dict:
        """``update``'s delta, corrected for what was merged since its base.

        ``params``/``version``: the merged model now.  ``earlier``: ``(raw
        delta, corrected delta)`` of the same replica's updates ahead of it in
        this merge.  With ``update.kappa`` and the base's parameters still
        remembered: ``delta - kappa * O``, where ``O`` is how far the merged
        parameters have moved from the point the replica learned this update
        from (its base plus the raw deltas of its own updates merged since:
        what its model held).  ``O`` shrinks as the replica's own corrections
        are merged, so several updates on one base remove other replicas'
        progress once in all (``1 - prod(1 - kappa)``), not once each.
        Otherwise the scalar discount of :meth:`discount`.
        """
        family = models.adapter_for(self.template)
        keys = self._touched_since(update.base_version, version)
        base = self.params_of(update.base_version, params, version, keys)
        if update.kappa is None or base is None:
            return family.scale_learned(self.template, update.delta, self.discount(update, version))
        if update.base_version == version and not earlier:
            return update.delta
        offset = family.delta(self.template, params, base, at=keys)
        for v, raw in self.applied.get(update.replica, []):
            if v > update.base_version:
                offset = family.add_learned(self.template, offset, raw, -1.0)
        for raw, corrected in earlier:
            offset = family.add_learned(self.template, family.add_learned(self.template, offset, raw, -1.0),
                                        corrected, 1.0)
        kappa = min(1.0, max(0.0, update.kappa))
        if getattr(update, "directions", None) is not None:
            return family.add_learned(self.template, update.delta, directed(self.template, offset, update.directions,
                                                                            kappa), -1.0)
        return family.add_learned(self.template, update.delta, offset, -kappa)

    def _touched_since(self, base_version: int, version: int) -> set | None:
        """Every feature whose entries a merge after ``base_version`` up to ``version`` changed; ``None`` when
        some such merge's features are not known (then the offset compares every entry: the same result)."""
        known = getattr(self, "touched_at", None)  # (None: a compensator checkpointed before it kept them)
        after = [v for v in (self.undo_at if self.in_place else self.params_at) if base_version < v <= version]
        if not after and self.in_place:
            return set()
        if not after or known is None or any(known.get(v) is None for v in after):
            return None
        return set().union(*(known[v] for v in after))

    @property
    def in_place(self) -> bool:
        """Versions are kept as undo records (:meth:`remember_undo`), not whole (:meth:`remember`)."""
        return bool(getattr(self, "undo_at", None))

    def params_of(self, version: int, params: dict, now: int, keys: set | None) -> dict | None:
        """The parameters of ``version`` (``params`` are version ``now``'s), at ``keys`` at least (every feature
        when ``None``); ``None`` when they are not remembered.  Whole versions are kept as they were; with undo
        records, a tree of ``keys``' entries and the dense part, built from ``params`` and the records since
        ``version``: ``O(keys + the features merged since)``, not the model's size."""
        whole = self.params_at.get(version)
        if whole is not None or not self.in_place:
            return whole
        if version == now:
            return params
        records = sorted(v for v in self.undo_at if version < v <= now)
        if keys is None or not records or self.undo_at[records[0]][0] != version:
            return None  # (older than the oldest record, or not a version this merger merged)
        out = numeric.restrict(params, keys)
        for v in reversed(records):  # newest first: the oldest record after ``version`` writes last
            numeric.write_at(out, self.undo_at[v][1], keys & self.touched_at[v])
        return out

    def remember(self, version: int, params: dict, replicas: frozenset, raw: dict, merges: int,
                 touched: set | None = None) -> None:
        """Record merged ``version``: its parameters, the replicas in it and each one's raw merged delta;
        ``touched``: the features whose entries its merge changed (``None``: not known)."""
        self.params_at[version] = params
        self._record(version, replicas, raw, merges, touched, params)
        if len(self.params_at) > self.keep_versions:
            self.params_at = dict(list(self.params_at.items())[-self.keep_versions:])
            self.touched_at = {v: self.touched_at.get(v) for v in self.params_at}

    def remember_undo(self, version: int, parent: int, before: dict, replicas: frozenset, raw: dict, merges: int,
                      touched: set) -> None:
        """:meth:`remember` for a merger that merged ``version`` in place on ``parent``: ``before`` holds
        ``parent``'s entries at ``touched`` (the features the merge changed) and its dense part."""
        self.params_at = {}
        self.undo_at = getattr(self, "undo_at", {})  # (a compensator checkpointed before it kept them)
        self.undo_at[version] = (parent, before)
        self._record(version, replicas, raw, merges, touched, before)
        if len(self.undo_at) > self.keep_versions:
            self.undo_at = dict(list(self.undo_at.items())[-self.keep_versions:])
            self.touched_at = {v: self.touched_at[v] for v in self.undo_at}

    def _record(self, version: int, replicas: frozenset, raw: dict, merges: int, touched: set | None,
                sized: dict) -> None:
        self.history.append((version, replicas))
        del self.history[:-VERSION_MEMORY]
        self.touched_at = getattr(self, "touched_at", {})
        self.touched_at[version] = touched
        if merges % 32 == 1:  # the model's size changes slowly: count its parameters now and then
            self.keep_versions = params_memory(sized)
        for r, step in raw.items():
            self.applied[r] = (self.applied.get(r, []) + [(version, step)])[-self.keep_versions:]

    def restart_from(self, version: int, params: dict) -> None:
        """Forget every version but ``version`` (a merger adopting a model it did not merge)."""
        self.params_at = {version: params}
        self.touched_at = {}
        self.undo_at = {}
