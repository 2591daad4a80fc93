"""``SeededBiasedMF``: River's ``reco.BiasedMF`` whose latent vectors start from the id alone.

River's maths, unchanged: ``learn_one`` is River's own, and ``predict_one`` is
River's expression.  Two things differ, both needed to merge what replicas
learned (:mod:`~riverflink.models.matrix_factorization`):

* a user's or item's latent vector starts from a draw seeded by a stable hash
  of its id (:mod:`~riverflink.models.seeded_latents`), the same in every
  process, instead of River's one generator drawn in the order ids arrive;
* ``predict_one`` adds no id to the model: an unknown id is scored with the
  vector and bias it would start from, as River scores it, without keeping it.

So one ``SeededBiasedMF`` learns exactly as River's ``BiasedMF`` started from
the same vectors (``tests/test_reco.py`` checks it event by event).  ``seed``
defaults to 0, not ``None``: every process must draw alike.

>>> model = SeededBiasedMF(n_factors=4)
>>> for user, item, y in [("ann", "jaws", 4.0), ("bob", "jaws", 5.0), ("ann", "heat", 2.0)]:
...     model.learn_one(user, item, y)
>>> round(model.predict_one("bob", "heat"), 4), len(model.u_latents)
(3.6365, 2)
>>> _ = model.predict_one("carol", "jaws"); len(model.u_latents)  # predicting adds nobody
2
"""

from __future__ import annotations

import numpy as np
from river import optim, reco

from riverflink.models.item_tally import ItemTally
from riverflink.models.seeded_latents import IdSeededVectors


class SeededBiasedMF(ItemTally, reco.BiasedMF):
    """``river.reco.BiasedMF`` with id-seeded starting vectors; ``latent_initializer`` must be a ``Normal`` (its
    ``mu`` and ``sigma`` are kept; its own seed is not used) and ``weight_initializer`` a constant."""

    def __init__(self, n_factors=10, bias_optimizer: optim.base.Optimizer | None = None,
                 latent_optimizer: optim.base.Optimizer | None = None, loss: optim.losses.Loss | None = None,
                 l2_bias=0.0, l2_latent=0.0, weight_initializer: optim.initializers.Initializer | None = None,
                 latent_initializer: optim.initializers.Initializer | None = None, clip_gradient=1e12, seed=0,
                 max_items: int | None = None, max_users: int | None = None):
        seed = 0 if seed is None else seed
        super().__init__(n_factors=n_factors, bias_optimizer=bias_optimizer, latent_optimizer=latent_optimizer,
                         loss=loss, l2_bias=l2_bias, l2_latent=l2_latent, weight_initializer=weight_initializer,
                         latent_initializer=latent_initializer, clip_gradient=clip_gradient, seed=seed)
        self.u_latents = seeded_vectors(self.latent_initializer, n_factors, seed)
        self._start_tally()
        #: the merger keeps at most this many items (the least learned leave first; ``None``: no bound); a model
        #: learning alone never evicts
        self.max_items = max_items
        self.items_evicted = 0
        #: each replica keeps at most this many users (the least recently learned leave first, and their owner
        #: publishes an eviction record: :mod:`~riverflink.models.user_table`); ``None``: no bound
        self.max_users = max_users
        self.i_latents = seeded_vectors(self.latent_initializer, n_factors, seed)
        if not isinstance(self.weight_initializer, optim.initializers.Constant):
            raise ValueError("SeededBiasedMF's weight_initializer must be Zeros or Constant (biases start alike "
                             "everywhere)")

    def predict_one(self, user, item, x=None):
        y_pred = self.global_mean.get()
        y_pred += self.u_biases[user] if user in self.u_biases else self.weight_initializer()
        y_pred += self.i_biases[item] if item in self.i_biases else self.weight_initializer()
        y_pred += np.dot(self.u_latents.peek(user), self.i_latents.peek(item))
        return y_pred.item()


def seeded_vectors(initializer: optim.initializers.Initializer, n_factors: int, seed: int) -> IdSeededVectors:
    """Empty id-seeded latents drawing from ``initializer``'s normal distribution."""
    if not isinstance(initializer, optim.initializers.Normal):
        raise ValueError("a seeded matrix factorization's latent initializer must be Normal(mu, sigma), "
                         f"got {type(initializer).__name__}")
    return IdSeededVectors(n_factors, seed, initializer.mu, initializer.sigma)
