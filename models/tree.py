"""Adaptive and extremely fast Hoeffding trees: they cannot be averaged, so merging builds a voting ensemble.

(``HoeffdingTreeClassifier`` is merged from its statistics instead: :mod:`models.hoeffding_tree`.)
``merge`` of these tree classifiers returns ``river.ensemble.VotingClassifier`` over
deep copies of the replicas' trees.  Cost: prediction time and memory grow
linearly with the number of replicas (a Hoeffding tree pickles to ~470 KB
after 10k events), and replicas cannot be rebased onto the ensemble; each
keeps growing its own tree.  Trees have no wire format yet: :func:`models.to_wire`
raises instead of pickling.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

from river import ensemble, tree

from riverflink.models.adapter import Adapter, register


class TreeEnsembleAdapter(Adapter):
    family = "tree_ensemble"
    classes = (
        tree.HoeffdingAdaptiveTreeClassifier,
        tree.ExtremelyFastDecisionTreeClassifier,
    )
    wire_supported = False

    def get_params(self, model: Any) -> dict:
        raise NotImplementedError(
            f"{type(model).__name__} has no parameter vector; trees are merged into a voting ensemble "
            "and are not supported on the wire yet"
        )

    set_params = get_params  # type: ignore[assignment]

    def ensemble(self, models: Sequence[Any]) -> Any:
        """A majority-vote (probability-averaging) ensemble over copies of ``models``."""
        return ensemble.VotingClassifier([copy.deepcopy(m) for m in models], use_probabilities=True)


TREES = register(TreeEnsembleAdapter())
