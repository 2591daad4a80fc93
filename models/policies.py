"""Merge policies for *learned* parameters (weights, intercepts, centers).

Exact statistics (counts, moments) ignore the policy: they are always summed.
Only leaves of kind ``LEARNED`` are combined as ``base + sum(c_i * delta_i)``
where ``delta_i`` is what replica ``i`` learned since the common base and the
coefficients ``c_i`` come from the policy:

``average``
    ``c_i = n_i / sum(n)``.  A count-weighted average of the replicas.  Acts
    like one model trained at learning rate / K; always stable, slow to follow
    drift (about 1 point lost on drifting streams in our K=8 simulation).
``delta``
    ``c_i = 1``.  Keeps every replica's full update, so the merged model
    learns as fast as single-node River.  Stable while ``S * K * lr`` is small
    (S = events per replica between syncs); beyond that the K summed steps
    overshoot and, on regression, diverge (TrumpApproval, K=8, S=100: MAE
    565x River's).  It is therefore guarded: the combined step is clipped to
    ``clip * max_i |delta_i|`` (L2 over the learned leaves, ``clip=1`` by
    default: the merged model never moves further than the farthest replica
    did on its own, a step one replica already took safely) and a non-finite
    result falls back to ``average``.  With the guard, ``delta`` matched or
    beat ``average`` at every K in {4, 8} and S in {10, 100, 500} in
    ``bench/merge_policies.py``, which merges *synchronously*; with the real
    loop's one-batch delay the guarded sum still diverged on regression
    (Friedman, K=4, every 10), so the training job runs ``delta`` unclipped
    and corrects stale updates instead (delay compensation,
    ``operators/delay_compensation.py``; ``docs/merge-policies.md``).
``scaled_average``
    ``c_i = n_i / sum(n)`` like ``average``, but the training job trains each
    replica at ``K`` times the learning rate (:func:`models.scale_learning_rate`),
    which recovers the single-node pace while staying an average.

Without a common base (replicas trained from scratch, unrelated models) every
policy degrades to ``average`` for learned leaves: summing independent weight
vectors has no meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

POLICIES = ("average", "delta", "scaled_average")


@dataclass(frozen=True)
class MergePolicy:
    """How learned parameters are combined.

    >>> MergePolicy("delta").coefficients([10, 30], has_base=True)
    [1.0, 1.0]
    >>> MergePolicy("average").coefficients([10, 30], has_base=True)
    [0.25, 0.75]
    """

    name: str = "delta"
    clip: float = 1.0
    # default policy: guarded delta (see module docstring and docs/merge-policies.md)

    def __post_init__(self) -> None:
        if self.name not in POLICIES:
            raise ValueError(f"unknown merge policy {self.name!r}; choose one of {', '.join(POLICIES)}")
        if not self.clip > 0:
            raise ValueError(f"merge policy clip must be > 0, got {self.clip!r}")

    def coefficients(self, weights: Sequence[float], has_base: bool) -> list[float]:
        """Per-replica coefficient for learned leaves."""
        if self.name == "delta" and has_base:
            return [1.0 for _ in weights]
        return average_coefficients(weights)


def average_coefficients(weights: Sequence[float]) -> list[float]:
    """``n_i / sum(n)``; equal shares when every weight is zero."""
    total = float(sum(weights))
    if total <= 0:
        return [1.0 / len(weights) for _ in weights]
    return [w / total for w in weights]


def as_policy(policy: "str | MergePolicy | None") -> MergePolicy:
    if policy is None:
        return MergePolicy()
    if isinstance(policy, MergePolicy):
        return policy
    return MergePolicy(str(policy))
