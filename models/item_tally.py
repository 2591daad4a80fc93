"""``ItemTally``: what a seeded matrix factorization counts per item for the merge, and per user.  Pure Python.

Per item, the events learned and the sum of their users' squared vector norms
(the squared loss's curvature along the item's vector, up to a factor 2): the
merger discounts a replica's stale move of an item by what the events merged on
it since have already corrected (:mod:`~riverflink.models.matrix_factorization`).
Per user, the events learned, in the order users were last learned (the least
recently learned first): a replica adopts a moved user's factors only from a
record that learned more of the user (:mod:`~riverflink.models.user_table`), and
evicts from the front.

>>> from riverflink.models.funk_mf import SeededFunkMF
>>> model = SeededFunkMF(n_factors=2)
>>> model.learn_one("ann", "jaws", 4.0); model.learn_one("bob", "jaws", 2.0)
>>> model.i_counts["jaws"], model.i_curvature["jaws"] > 0, model.u_counts
(2, True, {'ann': 1, 'bob': 1})
>>> model.learn_one("ann", "heat", 3.0); list(model.u_counts.items())  # ann is now the most recent
[('bob', 1), ('ann', 2)]
"""

from __future__ import annotations

import collections

import numpy as np


class ItemTally:
    """Mixin before a River ``reco`` class: River's ``learn_one``, then the item's tallies."""

    def _start_tally(self) -> None:
        self.i_counts: collections.Counter = collections.Counter()
        self.i_curvature: collections.Counter = collections.Counter()
        #: user -> events learned, least recently learned first
        self.u_counts: dict = {}

    def learn_one(self, user, item, y, x=None):
        vector = self.u_latents.peek(user)
        curvature = float(np.dot(vector, vector))  # (before the step: River updates the vector in place)
        super().learn_one(user, item, y, x)
        self.i_counts[item] += 1
        self.i_curvature[item] += curvature
        self.u_counts[user] = self.u_counts.pop(user, 0) + 1
