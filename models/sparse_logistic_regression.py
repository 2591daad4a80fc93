"""``SparseLogisticRegression``: River's ``LogisticRegression`` learning in O(features of the event).

>>> from river import linear_model, optim
>>> from riverflink.models.sparse_logistic_regression import SparseLogisticRegression
>>> fast = SparseLogisticRegression(optimizer=optim.FTRLProximal(l1=0.5))
>>> river = linear_model.LogisticRegression(optimizer=optim.FTRLProximal(l1=0.5))
>>> for i in range(200):
...     x, y = {f"f{i % 7}": 1.0, f"g{i % 11}": 1.0}, i % 3 == 0
...     fast.learn_one(x, y); river.learn_one(x, y)
>>> x = {"f1": 1.0, "g2": 1.0}
>>> abs(fast.predict_proba_one(x)[True] - river.predict_proba_one(x)[True]) < 1e-12
True
"""

from __future__ import annotations

from river import linear_model

from riverflink.models.sparse_glm import SparseGLM


class SparseLogisticRegression(SparseGLM, linear_model.LogisticRegression):
    """River's ``LogisticRegression`` (same parameters, same maths) with :class:`SparseGLM`'s O(active) update.

    Refuses (``ValueError``) what would make an update touch every weight: optimizers other than SGD and
    FTRLProximal, a model-level ``l1``/``l2``, initializers other than Zeros.
    """
