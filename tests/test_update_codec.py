"""The replica -> merger update codec (pure): what it sends decodes to the same delta, and a touched parameter
of a hashed sparse model costs at most 10 bytes on the wire."""

from __future__ import annotations

import pytest

from riverflink import models
from riverflink.models import update_codec
from riverflink.models.adapter import adapter_for
from riverflink.models.spec import build
from riverflink.pipelines.click_stream import click_events


def _delta(spec: str, events: int = 500) -> tuple:
    model = build(spec)
    before = models.get_params(model)
    for x, y in click_events(events, seed=4):
        model.learn_one(x, y)
    return model, adapter_for(model).delta(model, models.get_params(model), before)


def _entries(tree) -> int:
    if isinstance(tree, dict):
        if "steps" in tree:
            return sum(_entries(s) for s in tree["steps"])
        return sum(len(v) for v in tree.values() if isinstance(v, dict))
    return 0


@pytest.mark.parametrize("spec", ["FeatureHasher(n_features=1048576)|LogisticRegression(ftrl=true)",
                                  "LogisticRegression(ftrl=true)", "StandardScaler|LogisticRegression"])
def test_an_update_decodes_to_the_delta_it_encodes(spec):
    model, delta = _delta(spec)
    assert update_codec.decode(update_codec.encode(model, delta, precision="float64")) == delta


def test_a_touched_parameter_of_a_hashed_model_costs_at_most_10_bytes():
    """Raw integer keys (no key table), sent once for FTRL's z and n together (9.8 bytes here; 14.9 with a key
    table and a key array per map).  z and n are exact float64 statistics, 8 bytes each, and most touched
    features carry only those two (River's FTRL recomputes a weight when the feature comes back): the issue's
    8 bytes would need lossy statistics."""
    model, delta = _delta("FeatureHasher(n_features=1048576)|LogisticRegression(ftrl=true)")
    data = update_codec.encode(model, delta)
    entries = _entries(delta)
    assert entries > 3000 and len(data) / entries <= 10.0, len(data) / entries
    back = update_codec.decode(data)
    assert all(set(a) == set(b) for a, b in zip(back["steps"][1].values(), delta["steps"][1].values())
               if isinstance(a, dict))


def test_updates_of_the_previous_codec_version_still_decode():
    model, delta = _delta("LogisticRegression(ftrl=true)")  # (string keys: the same layout in versions 1 and 2)
    data = update_codec.encode(model, delta, precision="float64")
    assert update_codec.decode(bytes([1]) + data[1:]) == delta
    with pytest.raises(ValueError, match="unknown update codec version"):
        update_codec.decode(bytes([9]) + data[1:])

