"""A sparse, click-like synthetic stream with a hidden logistic truth: seeded, no downloads.

Each event has one value of each of several categorical fields (Zipf-distributed:
a few values are frequent, most are rare, as ads, sites and users are) and a
handful of tokens from a Zipf vocabulary (as hashed n-grams of a query are).
Every field value and every token has a hidden weight; the label is drawn from
``sigmoid(bias + the event's weights)``.  Features are one-hot by name,
``{"site=s417": 1.0, "tok=t93": 1.0, ...}``, so they pass the events' numeric
validation as they are and suit ``FeatureHasher`` or a linear model directly.

The distinct features grow with the stream like real click logs: about 1.5M over
the first 1M events (490k over 200k) of the default shape (``bench/sharded.py`` prints the count).

>>> events = list(click_events(1000, seed=3))
>>> len(events), all(v == 1.0 for x, _ in events for v in x.values()), {y for _, y in events} == {True, False}
(1000, True, True)
>>> list(click_events(5, seed=3)) == events[:5]
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator


@dataclass(frozen=True)
class Field:
    """One categorical field: its name, how many values it has, how skewed they are, how much they matter."""

    name: str
    values: int
    zipf: float
    weight_sd: float


#: the default shape: small fields with strong effects, huge ones with weak effects (users, queries)
FIELDS = (
    Field("device", 8, 1.5, 0.8),
    Field("hour", 24, 1.1, 0.3),
    Field("country", 200, 1.3, 0.5),
    Field("ad", 20_000, 1.2, 1.0),
    Field("site", 50_000, 1.2, 0.8),
    Field("user", 2_000_000, 1.05, 0.6),
    Field("page", 1_000_000, 1.1, 0.5),
)
TOKENS = Field("tok", 1_000_000, 1.1, 0.4)
TOKENS_PER_EVENT = 4
BIAS = -1.0


def click_events(n: int, seed: int = 42, fields: tuple[Field, ...] = FIELDS, tokens: Field = TOKENS,
                 tokens_per_event: int = TOKENS_PER_EVENT) -> Iterator[tuple[dict, bool]]:
    """``n`` events ``(x, y)``: one-hot features by name and a boolean label.

    Deterministic for a ``seed``; the hidden weights are drawn the first time a
    value appears, so two seeds give two different truths (held-out streams).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    truth: dict[str, float] = {}
    block = 10_000
    columns = list(fields) + [tokens] * tokens_per_event
    done = 0
    while done < n:
        size = min(block, n - done)
        draws = [(rng.zipf(f.zipf, block) - 1) % f.values for f in columns]  # whole blocks: a prefix of a
        noise = rng.random(block)  # longer stream is the shorter stream
        for i in range(size):
            x = {}
            score = BIAS
            for f, values in zip(columns, draws):
                name = f"{f.name}={f.name[0]}{values[i]}"
                w = truth.get(name)
                if w is None:
                    w = truth[name] = float(rng.normal(0.0, f.weight_sd))
                if name not in x:
                    x[name] = 1.0
                    score += w
            yield x, bool(noise[i] < 1.0 / (1.0 + math.exp(-score)))
        done += size
