"""Seeded, real streams for tests (River's bundled datasets; nothing downloaded)."""

from __future__ import annotations

import random

from river import datasets


def phishing(n: int, seed: int = 0) -> list[tuple[dict, bool]]:
    """``n`` events of River's Phishing dataset, shuffled and repeated with a fixed seed."""
    base = [(dict(x), y) for x, y in datasets.Phishing()]
    rng = random.Random(seed)
    out: list = []
    while len(out) < n:
        chunk = base[:]
        rng.shuffle(chunk)
        out.extend(chunk)
    return out[:n]


def gaussian_blobs(n: int, seed: int = 0, k: int = 3) -> list[tuple[dict, int]]:
    """Labelled 3-feature Gaussian blobs (for Naive Bayes, KMeans and multiclass)."""
    rng = random.Random(seed)
    centers = [{f"f{j}": rng.uniform(-5, 5) for j in range(3)} for _ in range(k)]
    out = []
    for _ in range(n):
        c = rng.randrange(k)
        out.append(({f: v + rng.gauss(0, 1) for f, v in centers[c].items()}, c))
    return out


def word_counts(n: int, seed: int = 0) -> list[tuple[dict, str]]:
    """Bag-of-words events for MultinomialNB."""
    rng = random.Random(seed)
    vocab = {"spam": ["buy", "cheap", "win", "free"], "ham": ["meet", "lunch", "report", "free"]}
    out = []
    for _ in range(n):
        y = rng.choice(["spam", "ham"])
        x: dict = {}
        for w in rng.choices(vocab[y], k=rng.randint(1, 5)):
            x[w] = x.get(w, 0) + 1
        out.append((x, y))
    return out


def split(stream: list, k: int) -> list[list]:
    """Round-robin partition into ``k`` parts."""
    return [stream[i::k] for i in range(k)]


def friedman_shops(n: int, seed: int = 0, shops: bool = True) -> list[tuple[dict, float]]:
    """River's Friedman regression stream (ten numeric features in [0, 1]) with a nominal ``shop`` that shifts the
    target (missing in 5% of events; without the feature when not ``shops``: River's linear leaf models fail on a
    text feature)."""
    from river.datasets import synth

    rng = random.Random(seed)
    shift = {"north": 0.0, "south": 4.0, "east": -3.0}
    out = []
    for x, y in synth.Friedman(seed=seed).take(n):
        x = {str(k): v for k, v in x.items()}
        shop = rng.choice(sorted(shift))
        if rng.random() > 0.05 and shops:
            x["shop"] = shop
        out.append((x, y + shift[shop]))
    return out
