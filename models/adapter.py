"""The adapter contract every model family implements, and the registry.

An adapter turns one family of River estimators into a *parameter tree* (see
:mod:`models.numeric`) and back, and knows how to merge such trees.  Adapters
are stateless singletons registered with :func:`register`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from riverflink.models import journal, numeric
from riverflink.models.policies import MergePolicy, average_coefficients

_ADAPTERS: list["Adapter"] = []


class UnsupportedModelError(TypeError):
    """Raised for an estimator no adapter knows how to merge or serialize."""


class Adapter:
    """Base class: generic merge driven by :attr:`kinds`.

    Subclasses set ``family`` (a short stable name used on the wire),
    ``classes`` (the River classes they handle, exact types) and ``kinds``
    (top-level param key -> leaf kind), and implement ``get_params`` /
    ``set_params``.  ``get_params`` returns fresh plain ``dict`` trees that
    share nothing with the model; ``set_params`` overwrites the model's
    learned state in place and keeps River's own container types.
    """

    family: str = ""
    classes: tuple[type, ...] = ()
    kinds: dict[str, str] = {}
    wire_supported: bool = True
    #: River classes a document of this family may name as hyper-parameters, by their public name
    components: dict[str, type] = {}
    #: the merge averages what the replicas learn by SGD, so that K replicas learn at K times the spec's rate
    #: (as under ``scaled_average``; :func:`~riverflink.models.api.replica_lr_scale`)
    averages_learning: bool = False

    # -- state ---------------------------------------------------------------
    def get_params(self, model: Any) -> dict:
        raise NotImplementedError

    def set_params(self, model: Any, params: dict) -> None:
        raise NotImplementedError

    # -- in place, at some features (families that support it; ``None``/``False`` otherwise) --------------
    def get_at(self, model: Any, keys: Any) -> dict | None:
        """``get_params(model)`` with every per-feature map cut down to ``keys`` (the dense part whole), in
        O(len(keys)); ``None`` when this family cannot."""
        return None

    def in_place(self, model: Any) -> bool:
        """Whether :meth:`get_at` and :meth:`set_at` work for ``model`` now."""
        return self.get_at(model, ()) is not None

    def set_at(self, model: Any, params: dict, keys: Any) -> bool:
        """Write ``params`` (a tree :meth:`get_at` could give for ``keys``) into ``model`` in place: for each of
        ``keys`` its entry in ``params`` (the entry removed when absent there), and the dense part; every other
        feature's entries stay.  ``False`` (nothing written) when this family cannot."""
        return False

    # -- the loop's roles (families whose structure the merger alone decides) -------------------------------
    def prepare_replica(self, model: Any) -> None:
        """Make ``model`` a replica's copy: called once on every new replica (its rebases keep it so).  Hoeffding
        trees switch growth off here; the default does nothing."""

    def grow(self, model: Any) -> int:
        """The merger's structural decisions on a freshly merged ``model``, in place (Hoeffding trees: split the
        leaves that gained their grace period); the number of changes.  The default makes none."""
        return 0

    # -- merge ---------------------------------------------------------------
    def delta(self, model: Any, params: dict, base: dict | None, journaled: bool = False,
              at: Any = None) -> dict:
        """What a replica learned since ``base`` (``None``: since an empty model).

        ``journaled``: ``base`` is the snapshot ``model``'s journal was last cleared at
        (:mod:`~riverflink.models.journal`): per-feature maps are then compared on the journal's features
        alone (the same delta, at the cost of what changed).  ``at``: the same with the features given (a set
        holding every feature whose entries can differ between ``params`` and ``base``)."""
        base = base or {}
        keys = journal.touched(model) if journaled else at
        return {
            k: numeric.subtract_at(params.get(k), base.get(k), keys, kind)
            if keys is not None and isinstance(params.get(k), dict) and kind != numeric.MOMENTS
            else numeric.subtract(params.get(k), base.get(k), kind)
            for k, kind in self.kinds.items()
            if k in params or k in base
        }

    def apply(self, model: Any, base: dict | None, deltas: Sequence[dict], weights: Sequence[float], policy: MergePolicy) -> dict:
        """``base`` plus the replicas' deltas, learned leaves combined per ``policy``.

        ``model`` is any instance of the family (a template); only pipelines use it.
        """
        has_base = base is not None
        base = base or {}
        coeffs = policy.coefficients(weights, has_base)
        avg = average_coefficients(weights)
        out = {}
        for key, kind in self.kinds.items():
            if key not in base and not any(key in d for d in deltas):
                continue
            c = avg if kind == numeric.AVERAGED else coeffs
            leaf_kind = numeric.LEARNED if kind == numeric.AVERAGED else kind
            out[key] = numeric.combine(base.get(key), [d.get(key) for d in deltas], c, leaf_kind)
        if has_base and policy.name == "delta":
            out = self._guard(base, deltas, weights, out, policy)
        return out

    def _guard(self, base: dict, deltas: Sequence[dict], weights, merged: dict, policy: MergePolicy) -> dict:
        learned = [k for k, kind in self.kinds.items() if kind == numeric.LEARNED and k in merged]
        if not learned:
            return merged
        try:
            numeric.check_finite({k: merged[k] for k in learned})
        except ValueError:
            return self.apply(None, base, deltas, weights, MergePolicy("average"))
        if math.isinf(policy.clip):  # no clip: the step's size (a walk over every parameter) is not needed
            return merged
        step = {k: numeric.subtract(merged[k], base.get(k), numeric.LEARNED) for k in learned}
        step_norm = math.sqrt(numeric.sq_norm(step))
        replica_step = max(
            math.sqrt(sum(numeric.sq_norm(d.get(k)) for k in learned)) for d in deltas
        )
        limit = policy.clip * replica_step
        if step_norm <= limit or step_norm == 0:
            return merged
        factor = limit / step_norm
        for k in learned:
            merged[k] = numeric.combine(base.get(k), [step[k]], [factor], numeric.LEARNED)
        return merged

    def scale_learned(self, model: Any, delta: dict, factor: float) -> dict:
        """``delta`` with its ``LEARNED`` leaves multiplied by ``factor`` (statistics untouched)."""
        if factor == 1.0:
            return delta
        return {
            k: numeric.combine(None, [v], [factor], numeric.LEARNED) if self.kinds.get(k) == numeric.LEARNED else v
            for k, v in delta.items()
        }

    def add_learned(self, model: Any, a: dict, b: dict, factor: float) -> dict:
        """``a`` with ``factor * b`` added to its ``LEARNED`` leaves (other leaves of ``a`` untouched)."""
        out = dict(a)
        for k, kind in self.kinds.items():
            if kind == numeric.LEARNED and (k in a or k in b):
                out[k] = numeric.combine(a.get(k), [b.get(k)], [factor], numeric.LEARNED)
        return out

    def derive(self, model: Any, params: dict, deltas: Sequence[dict]) -> dict:
        """``params`` with the parameters that are functions of others recomputed where ``deltas`` touched them.

        The merger calls it after merging updates learned on a base that other replicas' merges have since moved
        (stale updates): their learned leaves were corrected, not recomputed.  The default derives nothing."""
        return params

    def sum_deltas(self, model: Any, deltas: Sequence[dict]) -> dict:
        """One delta equal to applying ``deltas`` one after another (a replica's consecutive syncs)."""
        out = {}
        for key, kind in self.kinds.items():
            if any(key in d for d in deltas):
                leaf = numeric.LEARNED if kind == numeric.AVERAGED else kind
                out[key] = numeric.combine(None, [d.get(key) for d in deltas], [1.0] * len(deltas), leaf)
        return out


def register(adapter: Adapter) -> Adapter:
    _ADAPTERS.append(adapter)
    return adapter


def adapters() -> list[Adapter]:
    return list(_ADAPTERS)


def adapter_for(model: Any) -> Adapter:
    """The adapter for ``model``'s exact class, or :class:`UnsupportedModelError`."""
    for a in _ADAPTERS:
        if type(model) in a.classes:
            return a
    raise UnsupportedModelError(
        f"riverflink cannot merge or serialize {type(model).__module__}.{type(model).__name__}; "
        f"supported: {', '.join(supported_classes())}"
    )


def supported_classes() -> list[str]:
    return [c.__name__ for a in _ADAPTERS for c in a.classes]
