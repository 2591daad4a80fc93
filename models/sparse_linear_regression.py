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
