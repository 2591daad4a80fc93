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

    def __init__(self, optimizer=None, loss=None, l2=0.0, l1=0.0, intercept_init=0.0, intercept_lr=0.01,
                 clip_gradient=1e12, initializer=None):
        super().__init__(optimizer=optimizer, loss=loss, l2=l2, l1=l1, intercept_init=intercept_init,
                         intercept_lr=intercept_lr, clip_gradient=clip_gradient, initializer=initializer)
        self._check_sparse()
