"""A seeded synthetic ratings stream with a low-rank truth: no downloads.

Users and items are drawn by Zipf-like popularity (a few are rated often, most
rarely); each has a hidden bias and a hidden vector of ``rank`` factors, and a
rating is ``mean + user bias + item bias + <user vector, item vector> + noise``,
clipped to ``[low, high]`` and rounded to a tenth.  Ids are text (``"u17"``,
``"i4"``), as a JSON event carries them.  Popularity ranks are shuffled, so a
user's id says nothing about how often it appears.

>>> events = list(rating_events(1000, seed=3))
>>> len(events), all(1.0 <= y <= 5.0 for _, y in events), events[0][0].user.startswith("u")
(1000, True, True)
>>> list(rating_events(5, seed=3)) == events[:5]
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from riverflink.models.rating import Rating


@dataclass(frozen=True)
class RatingsShape:
    """How many users and items, how skewed their popularity, and the truth's rank, scale and noise."""

    users: int = 50_000
    items: int = 2_000
    user_skew: float = 0.8
    item_skew: float = 1.0
    rank: int = 4
    mean: float = 3.5
    bias_sd: float = 0.4
    factor_sd: float = 0.5
    noise_sd: float = 0.3
    low: float = 1.0
    high: float = 5.0


def rating_events(n: int, seed: int = 42, shape: RatingsShape = RatingsShape()) -> Iterator[tuple[Rating, float]]:
    """``n`` events ``(Rating(user, item), y)``, deterministic for a ``seed`` (a prefix of a longer stream is
    the shorter stream)."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def popularity(count: int, skew: float) -> np.ndarray:
        p = 1.0 / np.arange(1, count + 1) ** skew
        return rng.permutation(p / p.sum())

    p_user, p_item = popularity(shape.users, shape.user_skew), popularity(shape.items, shape.item_skew)
    scale = shape.factor_sd / np.sqrt(shape.rank)
    user_bias, item_bias = rng.normal(0, shape.bias_sd, shape.users), rng.normal(0, shape.bias_sd, shape.items)
    user_vec = rng.normal(0, np.sqrt(scale), (shape.users, shape.rank))
    item_vec = rng.normal(0, np.sqrt(scale), (shape.items, shape.rank))
    block, done = 10_000, 0
    while done < n:
        users, items = rng.choice(shape.users, block, p=p_user), rng.choice(shape.items, block, p=p_item)
        truth = (shape.mean + user_bias[users] + item_bias[items]
                 + np.einsum("ij,ij->i", user_vec[users], item_vec[items]) + rng.normal(0, shape.noise_sd, block))
        ys = np.round(np.clip(truth, shape.low, shape.high), 1)
        for u, i, y in zip(users[: n - done].tolist(), items[: n - done].tolist(), ys[: n - done].tolist()):
            yield Rating(f"u{u}", f"i{i}"), y
        done += min(block, n - done)
