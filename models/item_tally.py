"""``ItemTally``: what a seeded matrix factorization counts per item for the merge.  Pure Python.

Per item, the events learned and the sum of their users' squared vector norms
(the squared loss's curvature along the item's vector, up to a factor 2): the
merger discounts a replica's stale move of an item by what the events merged on
it since have already corrected (:mod:`~riverflink.models.matrix_factorization`).

>>> from riverflink.models.funk_mf import SeededFunkMF
>>> model = SeededFunkMF(n_factors=2)
>>> model.learn_one("ann", "jaws", 4.0); model.learn_one("bob", "jaws", 2.0)
>>> model.i_counts["jaws"], model.i_curvature["jaws"] > 0
(2, True)
"""

from __future__ import annotations

import collections

import numpy as np


class ItemTally:
    """Mixin before a River ``reco`` class: River's ``learn_one``, then the item's tallies."""

    def _start_tally(self) -> None:
        self.i_counts: collections.Counter = collections.Counter()
        self.i_curvature: collections.Counter = collections.Counter()

    def learn_one(self, user, item, y, x=None):
        vector = self.u_latents.peek(user)
        curvature = float(np.dot(vector, vector))  # (before the step: River updates the vector in place)
        super().learn_one(user, item, y, x)
        self.i_counts[item] += 1
        self.i_curvature[item] += curvature
