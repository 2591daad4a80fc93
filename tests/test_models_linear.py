"""Linear families, optimizer state, policies and the delta guard."""

import math

import pytest
from river import compose, linear_model, metrics, optim, preprocessing

from riverflink import models
from tests import streams

LINEAR = [
    lambda: linear_model.LogisticRegression(),
    lambda: linear_model.LinearRegression(),
    lambda: linear_model.Perceptron(),
    lambda: linear_model.PAClassifier(),
    lambda: linear_model.PARegressor(),
    lambda: linear_model.SoftmaxRegression(),
    lambda: linear_model.LogisticRegression(optimizer=optim.Adam()),
    lambda: linear_model.LogisticRegression(optimizer=optim.AdaGrad()),
]


def fit(model, events):
    for x, y in events:
        model.learn_one(x, y)
    return model


@pytest.mark.parametrize("make", LINEAR)
def test_average_of_independent_replicas_is_count_weighted_with_feature_union(make):
    a = fit(make(), [({"x": 1.0, "y": 2.0}, True)] * 3)
    b = fit(make(), [({"z": -1.0}, False)] * 5)
    merged = models.merge([a, b], weights=[1, 3])
    pa, pb, pm = (models.get_params(m) for m in (a, b, merged))
    if "weights" in pm and isinstance(next(iter(pm["weights"].values())), dict):  # softmax: per class
        classes = set(pa["weights"]) | set(pb["weights"])
        assert set(pm["weights"]) == classes
        return
    assert set(pm["weights"]) == {"x", "y", "z"}
    for f in ("x", "y", "z"):
        expected = 0.25 * pa["weights"].get(f, 0.0) + 0.75 * pb["weights"].get(f, 0.0)
        assert math.isclose(pm["weights"][f], expected, abs_tol=1e-12)
    assert math.isclose(pm["intercept"], 0.25 * pa["intercept"] + 0.75 * pb["intercept"], abs_tol=1e-12)


@pytest.mark.parametrize("make", LINEAR)
def test_wire_round_trip_predicts_identically(make):
    events = [({"a": float(i % 7), "b": 1.0 - i % 3}, bool(i % 2)) for i in range(50)]
    model = fit(make(), events)
    clone = models.from_wire(models.to_wire(model, name="m", version=7))
    for x, _ in events[:10]:
        if hasattr(model, "predict_proba_one"):
            assert clone.predict_proba_one(x) == model.predict_proba_one(x)
        assert clone.predict_one(x) == model.predict_one(x)


def test_rebased_sgd_step_counter_is_global_and_schedule_continues():
    """With InverseScaling the merged step counter is base + sum of replica steps."""
    make = lambda: linear_model.LogisticRegression(optimizer=optim.SGD(optim.schedulers.InverseScaling(0.5)))  # noqa: E731
    events = streams.phishing(800)
    base = fit(make(), events[:200])
    doc = models.to_wire(base, version=1)
    replicas = [models.from_wire(doc) for _ in range(3)]
    for r, part in zip(replicas, streams.split(events[200:], 3)):
        fit(r, part)
    merged = models.merge(replicas, weights=[200, 200, 200])
    assert merged.optimizer.n_iterations == 800
    # the schedule continues from the global step, not from 0 and not from 3 * 200 + 600
    expected_lr = 0.5 / (800 + 1) ** 0.5
    assert math.isclose(merged.optimizer.learning_rate, expected_lr)
    rebased = models.from_wire(models.to_wire(merged, version=2))
    fit(rebased, events[:10])
    assert rebased.optimizer.n_iterations == 810


def test_delta_policy_keeps_full_updates_and_average_divides_by_k():
    base = fit(linear_model.LinearRegression(), [({"x": 1.0}, 1.0)])
    doc = models.to_wire(base, version=1)
    a, b = models.from_wire(doc), models.from_wire(doc)
    fit(a, [({"x": 1.0}, 3.0)])
    fit(b, [({"x": 1.0}, 3.0)])
    w0 = base.weights["x"]
    da = a.weights["x"] - w0
    delta = models.merge([a, b], weights=[1, 1], policy=models.MergePolicy("delta", clip=1e9))
    average = models.merge([a, b], weights=[1, 1], policy="average")
    assert math.isclose(delta.weights["x"], w0 + 2 * da)
    assert math.isclose(average.weights["x"], w0 + da)
    guarded = models.merge([a, b], weights=[1, 1], policy="delta")  # step capped at one replica's
    assert math.isclose(guarded.weights["x"], w0 + da)


def test_delta_guard_clips_blow_up():
    base = linear_model.LinearRegression()
    base.learn_one({"x": 1.0}, 1.0)
    doc = models.to_wire(base, version=1)
    replicas = [models.from_wire(doc) for _ in range(8)]
    for r in replicas:
        models.set_params(r, {**models.get_params(r), "weights": {"x": 100.0}})
    merged = models.merge(replicas, policy="delta")
    unguarded = models.merge(replicas, policy=models.MergePolicy("delta", clip=1e9))
    w0 = base.weights["x"]
    assert math.isclose(unguarded.weights["x"], w0 + 8 * (100 - w0))
    # guarded: the step is no longer than the longest replica step
    assert math.isclose(merged.weights["x"], 100.0, rel_tol=1e-3)


def test_scale_learning_rate():
    m = compose.Pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression(optimizer=optim.SGD(0.01)))
    fast = models.scale_learning_rate(m, 4)
    assert math.isclose(fast["LogisticRegression"].optimizer.learning_rate, 0.04)


def test_pipeline_merges_stage_by_stage():
    make = lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression()  # noqa: E731
    events = streams.phishing(400)
    parts = streams.split(events, 2)
    a, b = fit(make(), parts[0]), fit(make(), parts[1])
    merged = models.merge([a, b], weights=[200, 200])
    whole_scaler = preprocessing.StandardScaler()
    for x, _ in events:
        whole_scaler.learn_one(x)
    for f in whole_scaler.counts:
        assert math.isclose(merged["StandardScaler"].means[f], whole_scaler.means[f], rel_tol=1e-9, abs_tol=1e-12)
    wa, wb = a["LogisticRegression"].weights, b["LogisticRegression"].weights
    for f in wa:
        assert math.isclose(merged["LogisticRegression"].weights[f], (wa[f] + wb.get(f, 0)) / 2, abs_tol=1e-12)
