"""Which labels a model accepts, checked *before* any stage of it learns.  Pure Python.

River does not validate labels: a binary ``LogisticRegression`` fed ``y=5`` or
``y="zzz"`` learns something wrong, or raises half-way through a pipeline whose
scaler has already counted the event.  The training job therefore checks every
label against the model's task first and dead-letters what does not fit, so a
dead-lettered event never touches the model.

>>> from riverflink.models.spec import build
>>> rule = LabelRule.for_model(build("StandardScaler|LogisticRegression"))
>>> rule.task, rule.problem(True), rule.problem(1), rule.problem("zzz")
('binary', None, None, "a binary classifier needs a bool label (or 0/1), got 'zzz'")
>>> LabelRule.for_model(build("LinearRegression")).problem(True)
'a regressor needs a numeric label, got True'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from river import compose
from river.utils import inspect as river_inspect

TASKS = ("binary", "multiclass", "regression", "clustering")
#: a multiclass label longer than this is refused (a class name, not a document)
MAX_LABEL_CHARS = 200


def final_step(model: Any) -> Any:
    return list(model.steps.values())[-1] if isinstance(model, compose.Pipeline) else model


def task_of(model: Any) -> str:
    """``binary``, ``multiclass``, ``regression`` or ``clustering``."""
    if river_inspect.isclusterer(model):
        return "clustering"
    if river_inspect.isclassifier(model):
        return "multiclass" if getattr(final_step(model), "_multiclass", False) else "binary"
    return "regression"


@dataclass(frozen=True)
class LabelRule:
    """Which labels a model's task can learn from.

    ``classes`` (classifiers): the only labels accepted, compared as text; ``None`` accepts any.

    >>> rule = LabelRule("multiclass", classes=frozenset({"cat", "dog"}))
    >>> rule.problem("dog") is None, rule.problem("dgo")
    (True, "label 'dgo' is not one of the declared classes (cat, dog)")
    """

    task: str
    classes: frozenset | None = None

    @classmethod
    def for_model(cls, model: Any, classes: "frozenset | None" = None) -> "LabelRule":
        return cls(task_of(model), classes)

    @property
    def needs_label(self) -> bool:
        return self.task != "clustering"

    def problem(self, y: Any) -> str | None:
        """``None`` when ``y`` is a label this task can learn from; else the reason it is not."""
        if self.task == "clustering":
            return None
        if self.classes is not None and self.task in ("binary", "multiclass") and label_text(y) not in self.classes:
            return f"label {_short(y)} is not one of the declared classes ({', '.join(sorted(self.classes))})"
        if self.task == "binary":
            if isinstance(y, bool) or (type(y) in (int, float) and y in (0, 1)):
                return None
            return f"a binary classifier needs a bool label (or 0/1), got {_short(y)}"
        if self.task == "multiclass":
            if isinstance(y, (bool, int)) or (isinstance(y, str) and 0 < len(y) <= MAX_LABEL_CHARS):
                return None
            return f"a classifier needs a bool, integer or short string label, got {_short(y)}"
        if isinstance(y, bool) or not isinstance(y, (int, float)):
            return f"a regressor needs a numeric label, got {_short(y)}"
        try:
            ok = math.isfinite(y) and abs(y) <= 1e100
        except OverflowError:
            ok = False
        return None if ok else f"a regressor needs a finite label of magnitude <= 1e100, got {_short(y)}"


def label_kind(y: Any) -> str:
    """``number`` (bool, int, float) or ``text``: the labels of one classifier must be of one kind, since a model
    sorts its classes together (River's trees do; ``True < "a"`` raises).

    >>> label_kind(True), label_kind(3), label_kind("cat")
    ('number', 'number', 'text')
    """
    return "text" if isinstance(y, str) else "number"


def kind_problem(y: Any, kinds: set) -> str | None:
    """Why a classifier's label ``y`` does not go with labels of ``kinds`` (:func:`label_kind`), or ``None``.

    >>> kind_problem("cat", {"number"})
    "label 'cat' is text, and this stream's labels are numbers: a model sorts its classes together"
    >>> kind_problem(2, {"number"}) is None and kind_problem("cat", set()) is None
    True
    """
    kind = label_kind(y)
    if not kinds or kind in kinds:
        return None
    return (f"label {_short(y)} is {kind}, and this stream's labels are "
            f"{'numbers' if 'number' in kinds else 'text'}: a model sorts its classes together")


def label_text(y: Any) -> str:
    """A label as ``--classes`` names it: ``true`` / ``false`` for booleans, else its text.

    >>> label_text(True), label_text(3), label_text("Cat")
    ('true', '3', 'Cat')
    """
    return str(y).lower() if isinstance(y, bool) else str(y)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
