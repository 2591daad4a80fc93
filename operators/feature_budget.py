"""How many distinct features a replica may teach the model.  Pure Python.

Every feature a model has learned costs room in every model document from then
on (one event of 10,000 distinct features grew every later document from 1.8 KB
to 382 KB).  A :class:`FeatureBudget` admits a replica's features first come,
first served, up to ``limit`` distinct names; a feature beyond the budget is
**dropped** from its event (the event is still learned on its admitted
features) and counted.  The training job gives each of its K replicas
``max_model_features // K``, so a merged model never holds more than
``max_model_features`` features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence


@dataclass
class FeatureBudget:
    """Admits at most ``limit`` distinct feature names, in the order they are first seen.

    >>> budget = FeatureBudget(limit=2)
    >>> budget.admit([{"a": 1.0, "b": 2.0}, {"a": 0.5, "c": 3.0}])
    ([{'a': 1.0, 'b': 2.0}, {'a': 0.5}], 1)
    >>> sorted(budget.names), budget.dropped
    (['a', 'b'], 1)
    """

    limit: int
    names: set = field(default_factory=set)
    #: feature values dropped so far (one per feature per event)
    dropped: int = 0

    def admit(self, xs: Sequence[dict]) -> tuple[list, int]:
        """``(xs with only admitted features, features dropped in this call)``; events are never removed.

        The common case (every name already admitted, or room for all) costs
        one set union over the batch.
        """
        seen = set().union(*xs)
        if seen <= self.names:
            return list(xs), 0
        if len(self.names | seen) <= self.limit:
            self.names |= seen
            return list(xs), 0
        out, dropped = [], 0
        for x in xs:
            for name in x:
                if name not in self.names and len(self.names) < self.limit:
                    self.names.add(name)
            kept = {k: v for k, v in x.items() if k in self.names}
            dropped += len(x) - len(kept)
            out.append(kept)
        self.dropped += dropped
        return out, dropped
