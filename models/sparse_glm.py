"""River's linear update, in O(features of the event) instead of O(all weights).  Pure Python.

River 0.23's ``GLM.learn_one`` wraps the weights in a masked ``VectorDict``
whose dot product and in-place update walk every stored weight, so one event
costs O(model): 128 µs at 3,000 weights, 1,900 at 40,000 (issue "sharded
parameter server"; River fixed it upstream in 0.24, which PyFlink's numpy pin
keeps out of reach).  :class:`SparseGLM` keeps River's maths exactly and only
changes which weights are visited: the event's own.

It is a mixin for River's ``LogisticRegression`` and ``LinearRegression``
(:mod:`~riverflink.models.sparse_logistic_regression`,
:mod:`~riverflink.models.sparse_linear_regression`) and supports what keeps the
update O(active): the optimizers ``SGD`` and ``FTRLProximal`` (whose own
``l1``/``l2`` act per coordinate), no model-level ``l1``/``l2`` (River applies
them to every weight at every step), and the ``Zeros`` initializer.  The tests
check equality with River's own classes to floating-point roundoff
(``tests/test_sparse_models.py``).
"""

from __future__ import annotations

from typing import Any

from river import optim, utils

from riverflink.models.journal import ATTR as JOURNAL
from riverflink.models.journal import UNDO

#: optimizers whose step touches only the gradient's keys
OPTIMIZERS = (optim.SGD, optim.FTRLProximal)


class SparseGLM:
    """O(active features) ``learn_one`` and raw dot product for a River GLM subclass (see the module).

    Its constructor takes River's GLM parameters and refuses (``ValueError``) what would make an update touch
    every weight."""

    def __init__(self, optimizer=None, loss=None, l2=0.0, l1=0.0, intercept_init=0.0, intercept_lr=0.01,
                 clip_gradient=1e12, initializer=None):
        super().__init__(optimizer=optimizer, loss=loss, l2=l2, l1=l1, intercept_init=intercept_init,
                         intercept_lr=intercept_lr, clip_gradient=clip_gradient, initializer=initializer)
        self._check_sparse()

    def _check_sparse(self) -> None:
        if type(self.optimizer) not in OPTIMIZERS:
            raise ValueError(f"{type(self).__name__} supports the optimizers SGD and FTRLProximal, "
                             f"not {type(self.optimizer).__name__}")
        if self.l1 or self.l2:
            raise ValueError(f"{type(self).__name__} takes no model-level l1/l2 (River applies them to every "
                             "weight at every step); use FTRLProximal's own l1/l2")
        if not isinstance(self.initializer, optim.initializers.Zeros):
            raise ValueError(f"{type(self).__name__} supports the Zeros initializer only")

    def _raw_dot_one(self, x: dict) -> float:
        get = self._weights.get
        return sum(get(k, 0.0) * v for k, v in x.items()) + self.intercept

    def learn_one(self, x: dict, y: Any, w: float = 1.0) -> None:
        """River's ``GLM._fit`` on the event's features alone: same gradient, intercept step and optimizer step.
        A replica's journal (:mod:`~riverflink.models.journal`) records the features."""
        touched = self.__dict__.get(JOURNAL)
        if touched is not None:
            touched.update(x)
        undo = self.__dict__.get(UNDO)
        if undo is not None:
            undo.before(self, x)
        loss_gradient = self.loss.gradient(y_true=y, y_pred=self._raw_dot_one(x)) * w
        loss_gradient = float(utils.math.clamp(loss_gradient, -self.clip_gradient, self.clip_gradient))
        self.intercept -= self._get_intercept_update(loss_gradient)
        weights = self._weights
        get = weights.get
        local = {k: get(k, 0.0) for k in x}
        self.optimizer.step(w=local, g={k: loss_gradient * v for k, v in x.items()})
        for k, v in local.items():
            if v != 0.0 or k in weights:
                weights[k] = v

    def learn_many(self, X, y, w: float = 1) -> None:
        """River's own ``learn_many`` (O(columns of ``X``)), its columns recorded in a replica's journal."""
        touched = self.__dict__.get(JOURNAL)
        if touched is not None:
            touched.update(X.columns)
        undo = self.__dict__.get(UNDO)
        if undo is not None:
            undo.before(self, X.columns)
        super().learn_many(X, y, w)
