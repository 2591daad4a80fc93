"""``SeededFunkMF``: River's ``reco.FunkMF`` whose latent vectors start from the id alone.

As :mod:`~riverflink.models.biased_mf`: River's ``learn_one``, River's
prediction without adding ids, vectors seeded by a stable hash of the id
(:mod:`~riverflink.models.seeded_latents`), ``seed`` 0 by default.

>>> model = SeededFunkMF(n_factors=4)
>>> model.learn_one("ann", "jaws", 4.0)
>>> _ = model.predict_one("bob", "jaws"); sorted(model.u_latents), sorted(model.i_latents)
(['ann'], ['jaws'])
"""

from __future__ import annotations

import numpy as np
from river import optim, reco

from riverflink.models.biased_mf import seeded_vectors
from riverflink.models.item_tally import ItemTally


class SeededFunkMF(ItemTally, reco.FunkMF):
    """``river.reco.FunkMF`` with id-seeded starting vectors (``initializer`` must be a ``Normal``)."""

    def __init__(self, n_factors=10, optimizer: optim.base.Optimizer | None = None,
                 loss: optim.losses.Loss | None = None, l2=0.0,
                 initializer: optim.initializers.Initializer | None = None, clip_gradient=1e12, seed=0,
                 max_items: int | None = None, max_users: int | None = None):
        seed = 0 if seed is None else seed
        super().__init__(n_factors=n_factors, optimizer=optimizer, loss=loss, l2=l2, initializer=initializer,
                         clip_gradient=clip_gradient, seed=seed)
        self.u_latents = seeded_vectors(self.initializer, n_factors, seed)
        self._start_tally()
        #: the merger keeps at most this many items (the least learned leave first; ``None``: no bound); a model
        #: learning alone never evicts
        self.max_items = max_items
        self.items_evicted = 0
        #: each replica keeps at most this many users (the least recently learned leave first, and their owner
        #: publishes an eviction record: :mod:`~riverflink.models.user_table`); ``None``: no bound
        self.max_users = max_users
        self.i_latents = seeded_vectors(self.initializer, n_factors, seed)

    def predict_one(self, user, item, x=None):
        return np.dot(self.u_latents.peek(user), self.i_latents.peek(item)).item()
