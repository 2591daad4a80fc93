"""The users a recommender replica owns: adopt moved ones, let go of others, evict beyond a budget.  Pure Python.

Users are model-parallel: events are keyed by user, so replica ``crc32(user) mod K``
owns a user (:func:`owner`, the same key as the JVM's ``KeyedMicroBatcher`` and
:func:`~riverflink.operators.keying.replica_of`).  After a change of ``--replicas``
(K) a user's events reach another replica.  Then:

* the new owner **adopts** the user's factors from the ``<models>.users`` records of
  another writer (:func:`adopt`): a record is taken when it learned more of the
  user's events than the replica has (so a replica never takes back its own past, and
  a user met fresh a few events before its record arrived is replaced by the record
  that learned more of it);
* a replica **lets go** of the users it no longer owns (:func:`release`), once, on its
  first batch under the new K;
* with a budget (``max_users`` per replica) the least recently learned users beyond it
  are **evicted** (:func:`evict`), and their owner publishes an eviction record.

Each function changes the model's ``u_biases``, ``u_latents`` and ``u_counts`` alone; items are never touched.

>>> from riverflink.models.biased_mf import SeededBiasedMF
>>> from riverflink.models.user_factors import UserFactors
>>> old, new = SeededBiasedMF(n_factors=2), SeededBiasedMF(n_factors=2)
>>> for item in ("jaws", "heat", "jaws"):
...     old.learn_one("ann", item, 4.0)
>>> record = UserFactors("ann", old.u_biases["ann"], tuple(old.u_latents["ann"]), events=3, writer="job1/0")
>>> adopt(new, record), new.u_biases["ann"] == old.u_biases["ann"], bool((new.u_latents["ann"] == old.u_latents["ann"]).all())
(True, True, True)
>>> adopt(new, record), new.u_counts["ann"]  # (no newer learning in it)
(False, 3)
>>> evict(new, max_users=0), len(new.u_latents), len(new.u_biases)
([('ann', 3)], 0, 0)
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from riverflink.models.user_factors import UserFactors


def owner(user: Any, replicas: int) -> int:
    """The replica that owns ``user`` among ``replicas``: ``crc32`` of its text, modulo ``replicas``.

    >>> owner("ann", 4) == owner("ann", 4), owner(17, 3) == owner("17", 3)
    (True, True)
    """
    return zlib.crc32(str(user).encode("utf-8", "surrogatepass")) % replicas


def events_of(model: Any, user: Any) -> int:
    """How many of ``user``'s events ``model`` learned (0: it does not hold the user)."""
    return model.u_counts.get(user, 0)


def adopt(model: Any, record: UserFactors) -> bool:
    """Take ``record``'s factors for its user if they learned more of the user's events than ``model`` has;
    an eviction record makes ``model`` forget a user it learned no more of than the record says.  Returns
    whether the model changed.  The caller has checked that another writer wrote ``record``."""
    held = events_of(model, record.user)
    if record.evicted:
        if held == 0 or held > record.events:
            return False
        forget(model, [record.user])
        return True
    if record.events <= held or len(record.vector) != len(model.u_latents.peek(record.user)):
        return False
    if hasattr(model, "u_biases"):
        model.u_biases[record.user] = record.bias
    model.u_latents[record.user] = np.array(record.vector, dtype=float)
    model.u_counts.pop(record.user, None)
    model.u_counts[record.user] = record.events
    return True


def save(model: Any, users: Any) -> dict:
    """What :func:`restore` needs to put ``users`` back as they are now (a batch about to learn them)."""
    biases = getattr(model, "u_biases", None)
    return {user: (None if user not in model.u_latents else
                   (None if biases is None else biases.get(user), model.u_latents[user].copy(), model.u_counts.get(user)))
            for user in users}


def restore(model: Any, saved: dict) -> None:
    """Put the users :func:`save` saved back: their bias, vector and count, or forgotten if they were unknown.

    >>> from riverflink.models.biased_mf import SeededBiasedMF
    >>> model = SeededBiasedMF(n_factors=2)
    >>> model.learn_one("ann", "jaws", 4.0)
    >>> before, saved = model.predict_one("ann", "jaws"), save(model, ["ann", "bob"])
    >>> model.learn_one("ann", "jaws", 1.0); model.learn_one("bob", "jaws", 1.0)
    >>> restore(model, saved)
    >>> sorted(model.u_latents), model.u_counts, model.predict_one("ann", "jaws") != before  # (items moved)
    (['ann'], {'ann': 1}, True)
    """
    biases = getattr(model, "u_biases", None)
    for user, held in saved.items():
        if held is None:
            forget(model, [user])
            continue
        bias, vector, count = held
        if biases is not None and bias is not None:
            biases[user] = bias
        model.u_latents[user] = vector
        model.u_counts.pop(user, None)
        if count is not None:
            model.u_counts[user] = count


def forget(model: Any, users: list) -> None:
    """Drop ``users``' biases, vectors and counts."""
    biases = getattr(model, "u_biases", None)
    for user in users:
        model.u_latents.pop(user, None)
        model.u_counts.pop(user, None)
        if biases is not None:
            biases.pop(user, None)


def release(model: Any, index: int, replicas: int) -> list:
    """Forget the users that replica ``index`` of ``replicas`` does not own; returns them."""
    gone = [user for user in model.u_latents if owner(user, replicas) != index]
    forget(model, gone)
    return gone


def evict(model: Any, max_users: int | None) -> list:
    """Forget the least recently learned users beyond ``max_users`` (None: no bound); returns ``(user, events)``
    of each, least recent first."""
    extra = 0 if max_users is None else len(model.u_counts) - max_users
    if extra <= 0:
        return []
    gone = []
    for user in model.u_counts:
        gone.append((user, model.u_counts[user]))
        if len(gone) == extra:
            break
    forget(model, [user for user, _ in gone])
    return gone
