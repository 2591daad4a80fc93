"""Latent vectors whose starting values depend on the id alone, not on the order ids arrive in.  Pure Python.

River's matrix factorization draws each new user's or item's latent vector from
one random generator, in the order of first access, so the same item starts
from different vectors on different replicas, and a merge of what replicas
learned about it would mix unrelated starts.  Here an id's vector is drawn
from a generator seeded by ``(seed, a stable hash of the id)``, as Flink
Parameter Server's ``PseudoRandomFactorInitializer`` seeds by id: every
process, in any order, starts an id from the same vector.  The hash is
BLAKE2b of the id's type and text (never Python's salted ``hash``), so ``7``
and ``"7"`` are two ids.

>>> a = IdSeededVectors(n_factors=3, seed=1)
>>> b = IdSeededVectors(n_factors=3, seed=1)
>>> _ = b["other"]  # b meets another id first
>>> bool((a["alice"] == b["alice"]).all()), len(a), bool((a.peek("bob") == b.peek("bob")).all()), len(a)
(True, 1, True, 1)
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

#: the id types a latent vector may be kept for (what a JSON event can carry as a user or an item)
ID_TYPES = (str, int)


def id_seed(key: Any, seed: int) -> list[int]:
    """The generator seed for ``key``'s vector: ``seed`` and 64 bits of BLAKE2b over the id's type and text.

    >>> id_seed("alice", 0) == id_seed("alice", 0), id_seed("7", 0) == id_seed(7, 0)
    (True, False)
    """
    digest = hashlib.blake2b(f"{type(key).__name__}:{key}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return [int(seed) & 0xFFFFFFFFFFFFFFFF, int.from_bytes(digest, "little")]


def initial_vector(key: Any, n_factors: int, seed: int, mu: float = 0.0, sigma: float = 0.1) -> np.ndarray:
    """``key``'s starting vector: ``n_factors`` draws of a normal(``mu``, ``sigma``) seeded by :func:`id_seed`."""
    return np.random.default_rng(id_seed(key, seed)).normal(loc=mu, scale=sigma, size=n_factors)


#: initial vectors :meth:`IdSeededVectors.peek` drew and did not store, kept for the ids' next reads
PEEKED = 64


class IdSeededVectors(dict):
    """``id -> latent vector`` (numpy arrays); reading a missing id stores its :func:`initial_vector`, as River's
    ``defaultdict`` of latents does, and :meth:`peek` gives it without storing it (predictions must not add ids).

    A new id is read several times around its first event (predicted, tallied, learned), and drawing its vector
    costs about 11 us (numpy's generator set-up): the last :data:`PEEKED` vectors peeked are kept apart, and
    taken, not drawn again, when the id is stored.  The values are the same either way.
    """

    def __init__(self, n_factors: int, seed: int, mu: float = 0.0, sigma: float = 0.1, items: Any = ()):
        super().__init__(items)
        self.n_factors, self.seed, self.mu, self.sigma = int(n_factors), int(seed), float(mu), float(sigma)
        self._peeked: dict = {}

    def initial(self, key: Any) -> np.ndarray:
        return initial_vector(key, self.n_factors, self.seed, self.mu, self.sigma)

    def __missing__(self, key: Any) -> np.ndarray:
        vector = self._peeked.pop(key, None)
        if vector is None:
            vector = self.initial(key)
        self[key] = vector
        return vector

    def peek(self, key: Any) -> np.ndarray:
        """``key``'s vector, or its initial one when it has none (nothing is stored; do not change it)."""
        vector = self.get(key)
        if vector is not None:
            return vector
        vector = self._peeked.get(key)
        if vector is None:
            if len(self._peeked) >= PEEKED:
                self._peeked.clear()
            vector = self._peeked[key] = self.initial(key)
        return vector

    def __reduce__(self):  # (copies and checkpoints keep the settings as well as the vectors)
        return (type(self), (self.n_factors, self.seed, self.mu, self.sigma, dict(self)))
