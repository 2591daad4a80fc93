"""What a final merged model must hold when every event reached it exactly once: checked by content.

``meta.events`` is a sum of the replicas' counts and survives a delta lost or applied twice;
a StandardScaler's statistics do not.  Its per-feature counts, means and variances merge exactly
(Chan et al.), whatever the order and the replicas, so the final model's scaler must equal
River's scaler trained once on the valid events.
"""

from __future__ import annotations

from typing import Iterable

from river import preprocessing

from riverflink import models


def assert_scaler_holds_each_event_once(doc: dict, events: Iterable[tuple[dict, object]],
                                        features: Iterable[str] | None = None, tol: float = 1e-9) -> None:
    """The ``StandardScaler`` of the model document ``doc`` equals River's on ``events`` (counts exactly, means
    and variances to ``tol``, relative); ``features`` restricts the check to those names."""
    scaler = models.from_wire(doc)["StandardScaler"]
    river = preprocessing.StandardScaler()
    for x, _ in events:
        river.learn_one(x)
    names = sorted(river.counts) if features is None else sorted(features)
    assert names, "no feature to check"
    counts = {k: scaler.counts.get(k, 0) for k in names}
    expected = {k: river.counts.get(k, 0) for k in names}
    assert counts == expected, {k: (counts[k], expected[k]) for k in names if counts[k] != expected[k]}
    for k in names:
        for ours, theirs, what in ((scaler.means[k], river.means[k], "mean"), (scaler.vars[k], river.vars[k], "var")):
            assert abs(ours - theirs) <= tol * max(1.0, abs(theirs)), (k, what, ours, theirs)
