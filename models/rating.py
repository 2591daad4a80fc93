"""``Rating``: the input of a recommender's event, in place of a feature dict.  Pure Python.

A rating event is ``{"user": ..., "item": ..., "y": 4.0}`` with optional context
``"x"``; a request is the same without ``y``.  The operators pass a ``Rating``
where other models take ``x``, and :func:`~riverflink.operators.scoring.predict`
and :func:`~riverflink.operators.scoring.learn` call River's recommender API
with it (``predict_one(user, item, x)``, ``learn_one(user, item, y, x)``).

>>> Rating("ann", "jaws").context
{}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Rating:
    """``item`` is one item, or (a request to rank) a list of candidate items, of which ``top`` are answered
    (``None``: all, best first)."""

    user: Any
    item: Any
    context: dict = field(default_factory=dict)
    top: int | None = None


def is_recommender(model: Any) -> bool:
    """Whether ``model`` learns from ratings (River's ``reco`` rankers: ``learn_one(user, item, y)``).

    >>> from riverflink.models.spec import build
    >>> is_recommender(build("BiasedMF")), is_recommender(build("LinearRegression"))
    (True, False)
    """
    from river.reco.base import Ranker

    return isinstance(model, Ranker)
