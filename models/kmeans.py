"""KMeans: count-weighted average of matched centers (as Flink ML's OnlineKMeans).

River's ``cluster.KMeans`` keeps no per-center counts, so riverflink ships
:class:`CountingKMeans`, a ``cluster.KMeans`` that also counts how many events
each center absorbed.  Plain ``KMeans`` is accepted too; its events are then
assumed spread evenly over its centers.

Params: ``centers`` = {j: {feature: value}} and ``counts`` = {j: n}.

Merging:

* **Replicas rebased on a common model** (the training job's normal case)
  keep center identity: center ``j`` of every replica descends from center
  ``j`` of the base.  The merged center is the base center moved by the
  count-weighted average of the replicas' moves (a replica that assigned no
  event to ``j`` does not pull it); counts add up.
* **Unrelated models** (no common base) are matched greedily to the first
  model: repeatedly pair the closest remaining (reference center, other
  center) by Euclidean distance over the union of features, then average the
  matched centers weighted by their counts.

River draws new center coordinates from a seeded RNG but iterates features in
``dict`` order, so runs only repeat across processes with a fixed
``PYTHONHASHSEED``.

>>> from riverflink.models.kmeans import CountingKMeans
>>> km = CountingKMeans(n_clusters=2, seed=1)
>>> for x in [{"a": 0.0}, {"a": 10.0}, {"a": 0.5}]: km.learn_one(x)
>>> sum(km.counts.values())
3
"""

from __future__ import annotations

import collections
import math
from typing import Any, Sequence

from river import cluster

from riverflink.models.adapter import Adapter, register
from riverflink.models.policies import MergePolicy


class CountingKMeans(cluster.KMeans):
    """``river.cluster.KMeans`` that also counts the events assigned to each center."""

    def __init__(self, n_clusters=5, halflife=0.5, mu=0, sigma=1, p=2, seed: int | None = None):
        super().__init__(n_clusters=n_clusters, halflife=halflife, mu=mu, sigma=sigma, p=p, seed=seed)
        self.counts: collections.Counter = collections.Counter()

    def learn_predict_one(self, x):
        closest = super().learn_predict_one(x)
        self.counts[closest] += 1
        return closest

    def learn_one(self, x):
        self.learn_predict_one(x)


def _distance(a: dict, b: dict) -> float:
    return math.sqrt(sum((a.get(k, 0.0) - b.get(k, 0.0)) ** 2 for k in {*a, *b}))


class KMeansAdapter(Adapter):
    family = "kmeans"
    classes = (CountingKMeans, cluster.KMeans)
    kinds = {}

    def get_params(self, model: Any) -> dict:
        counts = getattr(model, "counts", None)
        return {
            "centers": {j: dict(c) for j, c in model.centers.items()},
            "counts": {j: float(counts[j]) if counts is not None else 0.0 for j in model.centers},
        }

    def set_params(self, model: Any, params: dict) -> None:
        factory = next(iter(model.centers.values())).default_factory
        model.centers = {
            int(j): collections.defaultdict(factory, c) for j, c in params["centers"].items()
        }
        if hasattr(model, "counts"):
            model.counts = collections.Counter({int(j): int(round(n)) for j, n in params["counts"].items()})

    def delta(self, model: Any, params: dict, base: dict | None, journaled: bool = False,
              at: Any = None) -> dict:
        """Absolute centers plus the counts gained since ``base`` (no journal, ``at`` unused: a few centers)."""
        base_counts = (base or {}).get("counts", {})
        return {
            "centers": params["centers"],
            "counts": {j: n - base_counts.get(j, 0.0) for j, n in params["counts"].items()},
        }

    def sum_deltas(self, model: Any, deltas: Sequence[dict]) -> dict:
        """Consecutive deltas: the latest centers, the counts added up."""
        counts: dict = {}
        for d in deltas:
            for j, n in d["counts"].items():
                counts[j] = counts.get(j, 0.0) + n
        return {"centers": deltas[-1]["centers"], "counts": counts}

    def apply(self, model: Any, base: dict | None, deltas: Sequence[dict], weights: Sequence[float], policy: MergePolicy) -> dict:
        deltas = [_fill_counts(d, w) for d, w in zip(deltas, weights)]
        if base is None:
            deltas = [deltas[0]] + [_match(deltas[0], d) for d in deltas[1:]]
            base = {"centers": {j: {} for j in deltas[0]["centers"]}, "counts": {}}
        centers, counts = {}, {}
        for j, bc in base["centers"].items():
            moves = [(d["counts"].get(j, 0.0), d["centers"].get(j, bc)) for d in deltas]
            total = sum(n for n, _ in moves)
            counts[j] = base["counts"].get(j, 0.0) + total
            if total <= 0:
                centers[j] = dict(bc)
                continue
            feats = {k for _, c in moves for k in c} | set(bc)
            centers[j] = {
                k: bc.get(k, 0.0) + sum(n * (c.get(k, 0.0) - bc.get(k, 0.0)) for n, c in moves) / total for k in feats
            }
        return {"centers": centers, "counts": counts}


def _fill_counts(delta: dict, weight: float) -> dict:
    """Plain KMeans has no counts: spread the replica's weight evenly over its centers."""
    if sum(delta["counts"].values()) > 0 or not delta["centers"]:
        return delta
    share = float(weight) / len(delta["centers"])
    return {"centers": delta["centers"], "counts": {j: share for j in delta["centers"]}}


def _match(reference: dict, other: dict) -> dict:
    """Relabel ``other``'s centers to the closest of ``reference``'s (greedy)."""
    pairs = sorted(
        (_distance(rc, oc), rj, oj)
        for rj, rc in reference["centers"].items()
        for oj, oc in other["centers"].items()
    )
    mapping, used = {}, set()
    for _, rj, oj in pairs:
        if rj not in mapping and oj not in used:
            mapping[rj] = oj
            used.add(oj)
    return {
        "centers": {rj: other["centers"][oj] for rj, oj in mapping.items()},
        "counts": {rj: other["counts"].get(oj, 0.0) for rj, oj in mapping.items()},
    }


KMEANS = register(KMeansAdapter())
