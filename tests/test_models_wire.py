"""The model document: JSON only, versioned, allow-listed, poison-guarded."""

import json
import math
import pathlib

import jsonschema
import pytest
from river import cluster, linear_model, naive_bayes, preprocessing, tree

from riverflink import models
from tests import streams

SCHEMA_FILE = pathlib.Path(models.__file__).parent / "schema" / "model.schema.json"

SUPPORTED = [
    lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
    lambda: naive_bayes.GaussianNB(),
    lambda: naive_bayes.MultinomialNB(),
    lambda: linear_model.SoftmaxRegression(),
    lambda: models.CountingKMeans(n_clusters=3, seed=1),
]


def trained(make):
    m = make()
    for x, y in streams.gaussian_blobs(200):
        x = {k: abs(v) for k, v in x.items()}
        if isinstance(m, cluster.KMeans):
            m.learn_one(x)
        else:
            m.learn_one(x, y if not isinstance(m, preprocessing.StandardScaler) else None)
    return m


@pytest.mark.parametrize("make", SUPPORTED)
def test_document_is_plain_json_matching_the_schema_and_round_trips(make):
    m = trained(make)
    doc = models.to_wire(m, name="demo", version=4, counts={"r0": 100, "r1": 100})
    text = models.dumps(doc).decode()
    assert b"\x80" not in text.encode()  # no pickle protocol header
    jsonschema.validate(json.loads(text), json.loads(SCHEMA_FILE.read_text()))
    back = models.from_wire(text)
    for x, _ in streams.gaussian_blobs(20, seed=3):
        x = {k: abs(v) for k, v in x.items()}
        if hasattr(m, "predict_proba_one") and not isinstance(m, cluster.KMeans):
            assert back.predict_proba_one(x) == m.predict_proba_one(x)
        else:
            assert back.predict_one(x) == m.predict_one(x)
    assert models.base_of(back).version == 4


def test_boolean_class_labels_and_int_keys_survive():
    m = linear_model.SoftmaxRegression()
    m.learn_one({1: 1.0, "a": 2.0}, True)
    m.learn_one({1: -1.0}, False)
    back = models.from_wire(json.loads(json.dumps(models.to_wire(m))))
    assert back.predict_proba_one({1: 1.0}) == m.predict_proba_one({1: 1.0})


@pytest.mark.parametrize("damage", [
    lambda d: d["params"].__setitem__("weights", [["x"]]),
    lambda d: d["params"].__setitem__("weights", "oops"),
    lambda d: d["hyper"].__setitem__("no_such_argument", 1),
    lambda d: d["hyper"]["optimizer"].__setitem__("args", {"lr": {"class": "river.optim.schedulers.Constant"}}),
])
def test_malformed_documents_raise_value_error(damage):
    doc = models.to_wire(linear_model.LogisticRegression())
    damage(doc)
    with pytest.raises(ValueError, match="malformed"):
        models.from_wire(doc)


def test_unknown_schema_version_is_rejected():
    doc = models.to_wire(linear_model.LogisticRegression())
    doc["schema"] = "riverflink.model/99"
    with pytest.raises(ValueError, match="unsupported model document schema"):
        models.from_wire(doc)


def test_classes_outside_the_allow_list_are_never_imported():
    doc = models.to_wire(linear_model.LogisticRegression())
    doc["class"] = "os.system"
    with pytest.raises(ValueError, match="allow-list"):
        models.from_wire(doc)
    doc = models.to_wire(linear_model.LogisticRegression())
    doc["hyper"]["optimizer"]["class"] = "subprocess.Popen"
    with pytest.raises(ValueError, match="allow-list"):
        models.from_wire(doc)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_parameters_are_refused_by_name(bad):
    m = linear_model.LogisticRegression()
    m.learn_one({"x": 1.0}, True)
    m._weights["x"] = bad
    with pytest.raises(ValueError, match="weights.*'x'"):
        models.to_wire(m)
    ok = linear_model.LogisticRegression()
    ok.learn_one({"x": 1.0}, True)
    with pytest.raises(ValueError, match="non-finite"):
        models.merge([ok, m])
    doc = models.to_wire(ok)
    doc["params"]["intercept"] = 1e400  # json's inf
    with pytest.raises(ValueError, match="intercept"):
        models.from_wire(json.loads(json.dumps(doc)))


def test_unsupported_model_names_the_supported_families():
    with pytest.raises(models.UnsupportedModelError, match="LogisticRegression.*StandardScaler|StandardScaler.*LogisticRegression"):
        models.merge([linear_model.ALMAClassifier(), linear_model.ALMAClassifier()])


def test_unsupported_optimizer_is_refused():
    from river import optim

    m = linear_model.LogisticRegression(optimizer=optim.Momentum())
    with pytest.raises(models.UnsupportedModelError, match="Momentum.*SGD, Adam, AdaGrad, FTRLProximal"):
        models.get_params(m)


def test_trees_merge_into_a_voting_ensemble_and_never_go_on_the_wire():
    events = streams.phishing(600)
    trees = [tree.HoeffdingAdaptiveTreeClassifier(seed=1) for _ in range(3)]
    for t, part in zip(trees, streams.split(events, 3)):
        for x, y in part:
            t.learn_one(x, y)
    merged = models.merge(trees)
    from river import ensemble

    assert isinstance(merged, ensemble.VotingClassifier)
    assert len(merged.models) == 3
    correct = sum(merged.predict_one(x) == y for x, y in events[:300])
    assert correct > 200
    with pytest.raises(NotImplementedError, match="not supported on the wire"):
        models.to_wire(trees[0])


def test_kmeans_rebased_replicas_average_matched_centers_by_count():
    events = [x for x, _ in streams.gaussian_blobs(1500, seed=2)]
    base = models.CountingKMeans(n_clusters=3, halflife=0.1, seed=42)
    for x in events[:300]:
        base.learn_one(x)
    doc = models.to_wire(base, version=1)
    replicas = [models.from_wire(doc) for _ in range(3)]
    for r, part in zip(replicas, streams.split(events[300:], 3)):
        for x in part:
            r.learn_one(x)
    merged = models.merge(replicas, weights=[400, 400, 400])
    assert sum(merged.counts.values()) == 1500
    bc = models.get_params(base)
    for j in merged.centers:
        gained = [r.counts[j] - base.counts[j] for r in replicas]
        if sum(gained) == 0:
            continue
        for f in merged.centers[j]:
            expected = bc["centers"][j][f] + sum(
                g * (r.centers[j][f] - bc["centers"][j][f]) for g, r in zip(gained, replicas)
            ) / sum(gained)
            assert math.isclose(merged.centers[j][f], expected, rel_tol=1e-9, abs_tol=1e-12)


def test_kmeans_unrelated_models_are_matched_before_averaging():
    a = models.CountingKMeans(n_clusters=2, seed=1)
    b = models.CountingKMeans(n_clusters=2, seed=2)
    models.set_params(a, {"centers": {0: {"x": 0.0}, 1: {"x": 10.0}}, "counts": {0: 5, 1: 5}})
    models.set_params(b, {"centers": {0: {"x": 11.0}, 1: {"x": 1.0}}, "counts": {0: 5, 1: 5}})
    merged = models.merge([a, b])
    assert sorted(c["x"] for c in merged.centers.values()) == [0.5, 10.5]
