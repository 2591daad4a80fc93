"""``SparseLinearRegression``: River's ``LinearRegression`` learning in O(features of the event).

>>> from river import linear_model
>>> from riverflink.models.sparse_linear_regression import SparseLinearRegression
>>> fast, river = SparseLinearRegression(), linear_model.LinearRegression()
>>> for i in range(200):
...     x, y = {f"f{i % 7}": 1.0, i % 13: 0.5}, float(i % 5)
...     fast.learn_one(x, y); river.learn_one(x, y)
>>> x = {"f3": 1.0, 4: 0.5}
>>> abs(fast.predict_one(x) - river.predict_one(x)) < 1e-12
True
"""

from __future__ import annotations

from river import linear_model

from riverflink.models.sparse_glm import SparseGLM


class SparseLinearRegression(SparseGLM, linear_model.LinearRegression):
    """River's ``LinearRegression`` (same parameters, same maths) with :class:`SparseGLM`'s O(active) update.

    Refuses (``ValueError``) what would make an update touch every weight: optimizers other than SGD and
    FTRLProximal, a model-level ``l1``/``l2``, initializers other than Zeros.
    """

    def __init__(self, optimizer=None, loss=None, l2=0.0, l1=0.0, intercept_init=0.0, intercept_lr=0.01,
                 clip_gradient=1e12, initializer=None):
        super().__init__(optimizer=optimizer, loss=loss, l2=l2, l1=l1, intercept_init=intercept_init,
                         intercept_lr=intercept_lr, clip_gradient=clip_gradient, initializer=initializer)
        self._check_sparse()
