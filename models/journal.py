"""Which features a replica's model touched since its last sync, so that a delta costs what changed.  Pure Python.

A replica measures what it learned as ``params - snapshot`` (its parameters at
the last sync).  Walking every per-feature map for that costs O(model) per
sync: 66 ms for 200k weights, paid by every replica at every sync, however few
features the period's events had.  A *journal* is the set of features whose
per-feature entries may differ from the snapshot's; a delta then visits those
alone (:meth:`~riverflink.models.adapter.Adapter.delta` with ``journaled=True``).

Contract:

* Only components that record what they learn keep one: the sparse linear
  models (:class:`~riverflink.models.sparse_glm.SparseGLM` adds each event's
  features in ``learn_one`` and ``learn_many``).  Any other component (a
  ``StandardScaler``, River's own classes) has none and is diffed in full, so
  a journal can only make a delta cheaper, never different.
* Whoever clears a journal must hold a snapshot equal to the model's
  parameters at that moment (the replica clears it when it takes an update);
  whoever adds learning to a model without learning it (a replay of refused
  updates on a rebase) must :func:`note` its keys.  A journal may hold more
  features than changed, never fewer.

>>> from riverflink.models.spec import build
>>> from riverflink import models
>>> model = build("LogisticRegression(ftrl=true)")
>>> start(model)
>>> model.learn_one({"a": 1.0, "b": 1.0}, True)
>>> sorted(touched(model))
['a', 'b']
>>> before = models.get_params(model); clear(model); model.learn_one({"c": 1.0}, False)
>>> adapter = models.adapter_for(model)
>>> adapter.delta(model, models.get_params(model), before, journaled=True) == adapter.delta(
...     model, models.get_params(model), before)
True
"""

from __future__ import annotations

from typing import Any

#: the attribute a journaled component keeps its set of touched features in
ATTR = "_riverflink_touched"


def _components(model: Any) -> list:
    from river import compose

    return list(model.steps.values()) if isinstance(model, compose.Pipeline) else [model]


def start(model: Any) -> None:
    """Give every component of ``model`` that can record what it learns an empty journal."""
    from riverflink.models.sparse_glm import SparseGLM

    for component in _components(model):
        if isinstance(component, SparseGLM):
            setattr(component, ATTR, set())


def touched(component: Any) -> set | None:
    """The features ``component`` touched since its journal was last cleared; ``None`` without a journal."""
    return component.__dict__.get(ATTR)


def clear(model: Any) -> None:
    """Empty every journal of ``model`` (its parameters are now the snapshot deltas are measured from)."""
    for component in _components(model):
        if touched(component) is not None:
            component.__dict__[ATTR] = set()


def save(model: Any) -> list:
    """Copies of ``model``'s journals (for an undo: :func:`restore`)."""
    return [None if touched(c) is None else set(touched(c)) for c in _components(model)]


def restore(model: Any, saved: list) -> None:
    for component, keys in zip(_components(model), saved):
        if keys is not None:
            component.__dict__[ATTR] = keys


def note(model: Any, delta: dict) -> None:
    """Add the features of ``delta``'s per-feature maps (``model``'s parameter-tree shape) to the journals."""
    from river import compose

    parts = delta.get("steps", []) if isinstance(model, compose.Pipeline) else [delta]
    for component, part in zip(_components(model), parts):
        keys = touched(component)
        if keys is not None:
            for value in part.values():
                if isinstance(value, dict):
                    keys.update(value)


def keys(model: Any) -> set | None:
    """Every feature any component of ``model`` touched since its journal was last cleared; ``None`` when a
    component that learns per-feature state keeps no journal (then what it touched is not known)."""
    from riverflink.models.adapter import adapter_for
    from riverflink.models.feature_encoders import FeatureEncoderAdapter

    out: set = set()
    for component in _components(model):
        keys_ = touched(component)
        if keys_ is None:
            if not isinstance(adapter_for(component), FeatureEncoderAdapter):
                return None
        else:
            out |= keys_
    return out


# -- undo logs: a save point at the cost of what a batch touches ------------------------------------------------

#: the attribute the learning component keeps its open undo log in
UNDO = "_riverflink_undo"


class UndoLog:
    """The entries a component held, when the log was opened, at every feature it has learned since, and its
    dense part then: :func:`undo` puts them back.  Kept by :class:`~riverflink.models.sparse_glm.SparseGLM`,
    which calls :meth:`before` ahead of each step with the features it is about to change."""

    def __init__(self) -> None:
        self.keys: set = set()
        #: (features, the component's entries at them before they changed), in the order they were saved
        self.saved: list = []

    def before(self, component: Any, features: Any) -> None:
        new = [k for k in features if k not in self.keys]
        if new or not self.saved:  # (the first entry also keeps the dense part as it was when the log opened)
            from riverflink.models.api import adapter_for

            self.keys.update(new)
            self.saved.append((new, adapter_for(component).get_at(component, new)))


def hold(model: Any) -> bool:
    """Open an undo log on ``model`` (a replica's save point): ``True`` when one records everything learning
    changes, that is when the last component learns through ``SparseGLM`` and the others keep no state (a
    ``FeatureHasher``); ``False`` (nothing opened) otherwise."""
    from river import preprocessing

    from riverflink.models.sparse_glm import SparseGLM

    *first, last = _components(model)
    if not isinstance(last, SparseGLM) or any(type(c) is not preprocessing.FeatureHasher for c in first):
        return False
    last.__dict__[UNDO] = UndoLog()
    return True


def undo(model: Any) -> None:
    """Put back what ``model`` learned since :func:`hold` (the entries saved, newest first), and close the log."""
    from riverflink.models.api import adapter_for

    last = _components(model)[-1]
    log = last.__dict__.pop(UNDO)
    adapter = adapter_for(last)
    for keys, before in reversed(log.saved):
        adapter.set_at(last, before, keys)


def release(model: Any) -> None:
    """Close the undo log :func:`hold` opened (what was learned stays)."""
    _components(model)[-1].__dict__.pop(UNDO, None)

