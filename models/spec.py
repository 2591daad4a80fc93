"""Model specs: a short, safe text form of a River estimator.

``"StandardScaler|LogisticRegression"`` builds
``preprocessing.StandardScaler() | linear_model.LogisticRegression()``.  A step
may carry numeric/boolean keyword arguments:
``"StandardScaler|LogisticRegression(lr=0.05,l2=0.001)"``; ``lr`` sets the
optimizer's (SGD) learning rate.  Only the names below are accepted.

A few text arguments are accepted from a fixed list (:data:`CHOICES`):
``"HoeffdingTreeClassifier(grace_period=100,leaf_prediction=nb,split_criterion=gini)"``.

Recommenders: ``"BiasedMF(n_factors=8,lr=0.02,l2_latent=0.01)"`` and ``"FunkMF(...)"`` build River's
``reco.BiasedMF`` / ``reco.FunkMF`` with id-seeded starting vectors
(:mod:`riverflink.models.biased_mf`); ``lr`` is every optimizer's SGD rate, ``sigma`` the starting vectors'
spread, ``seed`` their seed (0 unless given), ``max_items`` the merger's item budget (the least learned items
leave first, counted; default: none), ``max_users`` each replica's user budget (the least recently learned
users leave first, with an eviction record on the users topic; default: none).

Sparse models: ``"FeatureHasher(n_features=1048576)|LogisticRegression(ftrl_l1=1)"``.
``FeatureHasher`` hashes with seed 0 unless given one (every process must hash
alike); ``OneHotEncoder`` emits only the event's own categories
(``drop_zeros``); ``ftrl=true`` or any ``ftrl_alpha``/``ftrl_beta``/``ftrl_l1``/
``ftrl_l2`` makes the optimizer FTRL-Proximal with those settings.  A linear
model behind either encoder, or trained by FTRL, is built as its
O(active features) form (:mod:`riverflink.models.sparse_glm`), equal to River's
results to floating-point roundoff.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from river import compose, linear_model, naive_bayes, optim, preprocessing, tree

from riverflink.models.biased_mf import SeededBiasedMF
from riverflink.models.funk_mf import SeededFunkMF
from riverflink.models.kmeans import CountingKMeans
from riverflink.models.sparse_linear_regression import SparseLinearRegression
from riverflink.models.sparse_logistic_regression import SparseLogisticRegression

FACTORIES: dict[str, Callable[..., Any]] = {
    "StandardScaler": preprocessing.StandardScaler,
    "LogisticRegression": linear_model.LogisticRegression,
    "LinearRegression": linear_model.LinearRegression,
    "Perceptron": linear_model.Perceptron,
    "PAClassifier": linear_model.PAClassifier,
    "PARegressor": linear_model.PARegressor,
    "SoftmaxRegression": linear_model.SoftmaxRegression,
    "GaussianNB": naive_bayes.GaussianNB,
    "MultinomialNB": naive_bayes.MultinomialNB,
    "KMeans": CountingKMeans,
    "HoeffdingTreeClassifier": tree.HoeffdingTreeClassifier,
    "HoeffdingTreeRegressor": tree.HoeffdingTreeRegressor,
    "FeatureHasher": lambda seed=0, **kw: preprocessing.FeatureHasher(seed=seed, **kw),
    "OneHotEncoder": lambda: preprocessing.OneHotEncoder(drop_zeros=True),
    "BiasedMF": lambda optimizer=None, sigma=0.1, seed=0, **kw: SeededBiasedMF(
        bias_optimizer=optimizer, latent_optimizer=optimizer,
        latent_initializer=optim.initializers.Normal(sigma=sigma, seed=seed), seed=seed, **kw),
    "FunkMF": lambda optimizer=None, sigma=0.1, seed=0, **kw: SeededFunkMF(
        optimizer=optimizer, initializer=optim.initializers.Normal(sigma=sigma, seed=seed), seed=seed, **kw),
}
#: the text arguments a step accepts, with their choices (every other argument is a number or a boolean)
CHOICES = {"HoeffdingTreeClassifier": {"leaf_prediction": ("mc", "nb", "nba"),
                                       "split_criterion": ("gini", "info_gain", "hellinger")},
           "HoeffdingTreeRegressor": {"leaf_prediction": ("mean", "model", "adaptive")}}
#: steps that make the linear model after them sparse, and the O(active features) form of each linear model
ENCODERS = ("FeatureHasher", "OneHotEncoder")
SPARSE = {"LogisticRegression": SparseLogisticRegression, "LinearRegression": SparseLinearRegression}
FTRL_ARGS = {"ftrl_alpha": "alpha", "ftrl_beta": "beta", "ftrl_l1": "l1", "ftrl_l2": "l2"}
_STEP = re.compile(r"^\s*([A-Za-z]+)\s*(?:\((.*)\))?\s*$")



def _value(text: str) -> Any:
    text = text.strip()
    if text in ("true", "True"):
        return True
    if text in ("false", "False"):
        return False
    try:
        return int(text)
    except ValueError:
        return float(text)


def build(spec: str) -> Any:
    """A fresh River estimator for ``spec``; ``ValueError`` with the accepted names otherwise.

    >>> build("StandardScaler|LogisticRegression(lr=0.05)")["LogisticRegression"].optimizer.learning_rate
    0.05
    >>> type(build("FeatureHasher(n_features=1024)|LogisticRegression(ftrl_l1=1)")["SparseLogisticRegression"]).__name__
    'SparseLogisticRegression'
    >>> build("HoeffdingTreeClassifier(grace_period=100,leaf_prediction=nb)").leaf_prediction
    'nb'
    >>> build("HoeffdingTreeClassifier(leaf_prediction=knn)")
    Traceback (most recent call last):
    ValueError: argument 'leaf_prediction=knn' of HoeffdingTreeClassifier must be one of mc, nb, nba
    >>> build("LogisticRegression(lr=0.05")
    Traceback (most recent call last):
    ValueError: model step 'LogisticRegression(lr=0.05' has an unbalanced '(' in spec 'LogisticRegression(lr=0.05'
    >>> build("LogisticRegresion")
    Traceback (most recent call last):
    ValueError: unknown model step 'LogisticRegresion' in spec 'LogisticRegresion' (did you mean LogisticRegression?); known: ...
    """
    import difflib

    steps = []
    encoded = False
    for part in spec.split("|"):
        if part.count("(") != part.count(")"):
            paren = "(" if part.count("(") > part.count(")") else ")"
            raise ValueError(f"model step {part.strip()!r} has an unbalanced {paren!r} in spec {spec!r}")
        m = _STEP.match(part)
        if not m or m.group(1) not in FACTORIES:
            name = m.group(1) if m else part.strip()
            close = difflib.get_close_matches(name, FACTORIES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(f"unknown model step {part.strip()!r} in spec {spec!r}{hint}; known: {', '.join(FACTORIES)}")
        kwargs = {}
        for arg in filter(None, (m.group(2) or "").split(",")):
            name, _, value = arg.partition("=")
            choices = CHOICES.get(m.group(1), {}).get(name.strip())
            if choices is not None:
                if value.strip() not in choices:
                    raise ValueError(f"argument {arg.strip()!r} of {m.group(1)} must be one of {', '.join(choices)}")
                kwargs[name.strip()] = value.strip()
                continue
            try:
                kwargs[name.strip()] = _value(value)
            except ValueError:
                raise ValueError(f"argument {arg.strip()!r} of {m.group(1)} must be a number or a boolean") from None
        if "lr" in kwargs:
            kwargs["optimizer"] = optim.SGD(kwargs.pop("lr"))
        factory = FACTORIES[m.group(1)]
        ftrl = {FTRL_ARGS[k]: kwargs.pop(k) for k in list(kwargs) if k in FTRL_ARGS}
        if kwargs.pop("ftrl", False) or ftrl:
            if "optimizer" in kwargs:
                raise ValueError(f"{m.group(1)}: lr sets SGD's learning rate; FTRL's is ftrl_alpha")
            kwargs["optimizer"] = optim.FTRLProximal(**ftrl)
        if m.group(1) in SPARSE and (encoded or type(kwargs.get("optimizer")) is optim.FTRLProximal):
            factory = SPARSE[m.group(1)]
        encoded = encoded or m.group(1) in ENCODERS
        try:
            steps.append(factory(**kwargs))
        except (TypeError, ValueError) as e:
            raise ValueError(f"bad arguments for {m.group(1)}: {e}") from None
    return steps[0] if len(steps) == 1 else compose.Pipeline(*steps)
