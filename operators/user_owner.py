"""A recommender replica's users, batch by batch: adopt, let go, publish, evict.  Pure Python, no Flink.

The training job reads ``<models>.users`` back (frames at
:data:`~riverflink.operators.frames.USER_PARTITION`, keyed by user with the
events, so a record reaches the replica that owns its user now).  Before a
batch learns, :meth:`UserOwner.before`:

1. lets go of the users the replica no longer owns, once after a change of
   ``--replicas`` (:func:`~riverflink.models.user_table.release`);
2. adopts the factors of records another writer (another job, or another
   replica) published, when they learned more of the user than the replica has
   (:func:`~riverflink.models.user_table.adopt`).  A replica never adopts its own
   records: after a failover it re-learns what it replays instead.

After a batch learned, :meth:`UserOwner.after` gives the records to publish:
one per user of the batch, then an eviction record per user evicted beyond
the model's ``max_users``.

>>> from riverflink.models.biased_mf import SeededBiasedMF
>>> from riverflink.models.user_factors import user_record
>>> from riverflink.operators.events import RatingFields
>>> from riverflink.operators.frames import USER_PARTITION, Record
>>> old = SeededBiasedMF(n_factors=2)
>>> old.learn_one("ann", "jaws", 4.0)
>>> _, value = user_record("m", old, "ann", writer="old-job/0")
>>> class R: model = SeededBiasedMF(n_factors=2)
>>> owner = UserOwner("m", RatingFields(), replicas=1, writer="new-job")
>>> stats = owner.before(R, 0, [Record(USER_PARTITION, 0, 0, None, value)])
>>> stats.adopted, R.model.u_counts
(1, {'ann': 1})
>>> owner.before(R, 0, [Record(USER_PARTITION, 1, 0, None, b"{")]).refused
1
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Sequence

from riverflink.models import user_table
from riverflink.models.signing import Signer, Verifier
from riverflink.models.user_factors import eviction_record, read_user_record, user_record
from riverflink.operators.events import RatingFields
from riverflink.operators.frames import Record

log = logging.getLogger("riverflink")


#: the counts the trainer reports: its metrics ``users_<name>`` and the batch records' fields of the same names
REPORTED = ("adopted", "released", "evicted", "refused")


@dataclass
class UserStats:
    """What one batch did to a replica's users (the trainer's metrics)."""

    adopted: int = 0
    #: users let go of after a change of ``--replicas`` (their new owner adopts them)
    released: int = 0
    evicted: int = 0
    #: records on the users topic that failed validation (logged and counted; they are the job's own output)
    refused: int = 0
    #: records read and left (the replica's own, or no newer than what it holds)
    skipped: int = 0

    def add(self, other: "UserStats | None") -> None:
        if other is not None:
            for f in dataclasses.fields(self):
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def reported(self) -> dict:
        """``{"users_<name>": count}`` of the :data:`REPORTED` counts."""
        return {f"users_{name}": getattr(self, name) for name in REPORTED}

    def __bool__(self) -> bool:
        return any(getattr(self, name) for name in REPORTED)


class UserOwner:
    """The user half of a recommender replica, for one job: its model name, rating fields, ``replicas`` (K) and
    ``writer`` (the job's tag: each replica writes ``<writer>/<replica>``)."""

    def __init__(self, model_name: str, ratings: RatingFields, replicas: int, writer: str,
                 signer: Signer | None = None, verifier: Verifier | None = None):
        """``signer``: the records published are signed with it (``--signing-key``); ``verifier``: only records
        signed by its key are adopted."""
        self.name, self.ratings, self.replicas, self.writer = model_name, ratings, max(1, replicas), writer
        self.signer, self.verifier = signer, verifier

    def writer_of(self, key: Any) -> str:
        return f"{self.writer}/{key}"

    def before(self, replica: Any, key: Any, records: Sequence[Record]) -> UserStats:
        """Let go of users owned elsewhere (first batch under a new K), then take ``records`` (user-factor
        frames) in order.  ``replica.model`` is the recommender; ``key`` the replica's index."""
        stats = UserStats()
        model = replica.model
        if getattr(replica, "user_layout", None) != self.replicas:
            index = _index(key)
            if index is not None and 0 <= index < self.replicas:
                stats.released = len(user_table.release(model, index, self.replicas))
            replica.user_layout = self.replicas
        mine = self.writer_of(key)
        n_factors = getattr(model, "n_factors", None)
        for record in records:
            # (the signature is checked only on another writer's record: most records read back are the replica's
            # own, skipped, and an Ed25519 check costs about 120 us)
            factors = read_user_record(record.value, self.name, n_factors, self.ratings.user)
            if self.verifier is not None and not isinstance(factors, str) and factors.writer != mine:
                factors = read_user_record(record.value, self.name, n_factors, self.ratings.user, self.verifier)
            if isinstance(factors, str):
                log.warning("replica %s ignores a record on the users topic (offset %s): %s", key, record.offset,
                            factors)
                stats.refused += 1
            elif factors.writer != mine and user_table.adopt(model, factors):
                stats.adopted += 1
            else:
                stats.skipped += 1
        return stats

    def after(self, replica: Any, key: Any, users: Sequence[Any], stats: UserStats) -> list[tuple[bytes, bytes]]:
        """The records to publish after a batch that learned from ``users`` (in order, repeats allowed): each
        user's factors, then an eviction record for each user evicted beyond the model's ``max_users``."""
        model, writer, field = replica.model, self.writer_of(key), self.ratings.user
        out = [user_record(self.name, model, user, field, writer, self.signer) for user in dict.fromkeys(users)]
        evicted = user_table.evict(model, getattr(model, "max_users", None))
        stats.evicted += len(evicted)
        out += [eviction_record(self.name, user, events, field, writer, self.signer) for user, events in evicted]
        return out


def _index(key: Any) -> int | None:
    """The replica's index behind its Flink key (an int, or what prints as one), else None."""
    try:
        return int(str(key))
    except ValueError:
        return None
