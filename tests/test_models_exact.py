"""Exact families: merging replicas equals one model trained on all the events."""

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import naive_bayes, preprocessing

from riverflink import models
from tests import streams


def close(a, b, rel=1e-9, abs_=1e-12):
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def assert_scalers_equal(a, b):
    assert set(a.counts) == set(b.counts)
    for f in b.counts:
        assert a.counts[f] == b.counts[f]
        assert close(a.means[f], b.means[f]), f
        assert close(a.vars[f], b.vars[f]), f


def train(model, events, supervised=True):
    for x, y in events:
        model.learn_one(x, y) if supervised else model.learn_one(x)
    return model


values = st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(parts=st.lists(values, min_size=1, max_size=5))
def test_scaler_merge_equals_whole_stream(parts):
    whole = preprocessing.StandardScaler()
    replicas = []
    for part in parts:
        r = preprocessing.StandardScaler()
        for v in part:
            x = {"a": v, "b": v * 0.5 + 1}
            r.learn_one(x)
            whole.learn_one(x)
        replicas.append(r)
    merged = models.merge(replicas, weights=[len(p) for p in parts])
    assert_scalers_equal(merged, whole)


@settings(max_examples=30, deadline=None)
@given(a=values, b=values, c=values)
def test_scaler_merge_commutative_and_associative(a, b, c):
    def fit(vs):
        return train(preprocessing.StandardScaler(), [({"x": v}, None) for v in vs], supervised=False)

    sa, sb, sc = fit(a), fit(b), fit(c)
    left = models.merge([models.merge([sa, sb]), sc])
    right = models.merge([sa, models.merge([sb, sc])])
    swapped = models.merge([sc, sb, sa])
    assert_scalers_equal(left, right)
    assert_scalers_equal(left, swapped)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "make, stream",
    [
        (naive_bayes.GaussianNB, lambda s: streams.gaussian_blobs(600, s)),
        (naive_bayes.MultinomialNB, lambda s: streams.word_counts(600, s)),
    ],
)
def test_naive_bayes_merge_equals_whole_stream(make, stream, seed):
    events = stream(seed)
    rng = random.Random(seed)
    k = rng.randint(2, 5)
    cuts = sorted(rng.sample(range(1, len(events)), k - 1))
    parts = [events[i:j] for i, j in zip([0, *cuts], [*cuts, len(events)])]
    replicas = [train(make(), p) for p in parts]
    whole = train(make(), events)
    merged = models.merge(replicas, weights=[len(p) for p in parts])
    for x, _ in events[:50]:
        pm, pw = merged.predict_proba_one(x), whole.predict_proba_one(x)
        assert pm.keys() == pw.keys()
        for c in pw:
            assert close(pm[c], pw[c]), (c, pm[c], pw[c])


@pytest.mark.parametrize(
    "make, stream, supervised",
    [
        (preprocessing.StandardScaler, lambda: streams.phishing(1200), False),
        (naive_bayes.GaussianNB, lambda: streams.gaussian_blobs(1200), True),
        (naive_bayes.MultinomialNB, lambda: streams.word_counts(1200), True),
    ],
)
def test_rebased_replicas_do_not_count_the_base_k_times(make, stream, supervised):
    """k replicas rebased on one merged model + disjoint new events == one model on everything."""
    events = stream()
    first, rest = events[:400], events[400:]
    base_model = train(make(), first, supervised)
    doc = models.to_wire(base_model, version=1)
    k = 4
    replicas = [models.from_wire(doc) for _ in range(k)]
    for r, part in zip(replicas, streams.split(rest, k)):
        train(r, part, supervised)
    merged = models.merge(replicas, weights=[len(p) for p in streams.split(rest, k)])
    whole = train(make(), events, supervised)
    if make is preprocessing.StandardScaler:
        assert_scalers_equal(merged, whole)
    else:
        for x, _ in events[:50]:
            pm, pw = merged.predict_proba_one(x), whole.predict_proba_one(x)
            for c in pw:
                assert close(pm[c], pw[c])


def test_different_bases_are_refused():
    a = models.from_wire(models.to_wire(preprocessing.StandardScaler(), version=1))
    b = models.from_wire(models.to_wire(preprocessing.StandardScaler(), version=2))
    with pytest.raises(ValueError, match="different base versions"):
        models.merge([a, b])
