"""The replica side of working sets and pulls (``--working-set W``): which events learn now, which wait.  Pure.

Per batch, for one replica (:meth:`PullGate.on_answers`, then :meth:`PullGate.admit`, then learning, then
:meth:`PullGate.settle`):

1. **Answers first.** Each pull answer that came with the batch (records at
   :data:`~riverflink.operators.pulls.PULL_PARTITION`) is validated and, if it answers one of the replica's
   unanswered pulls, taken (:meth:`Replica.take_pulled`): its features join the working set.
2. **Never block.** An event learns now when the replica holds every feature it has (or the version it is based on
   holds nothing merged by that feature's shard: nothing to pull); else it waits, in arrival
   order, in the replica's bounded buffer.  Pulls unanswered for ``pull_timeout_s`` are given up, and beyond
   ``buffer`` waiting events the oldest learn at once: on what the replica holds, a feature it lacks at its
   initial value (both counted as ``unpulled``; a late answer is ignored and counted).
3. **The pull limiter.** The features the waiting events lack and no pull has asked for go out as pull requests,
   one per owner shard (at most :data:`~riverflink.operators.pulls.PULL_MAX_FEATURES` each), while the replica
   has fewer than ``max_pulls`` unanswered; the rest are asked for once a slot frees.
4. **Eviction.** After learning, the working set lets go of what it must (least recently used beyond its
   capacity, expired), never a feature whose learning the merged model may lack (unsent or in flight) nor one a
   waiting event needs.

The working set counts features; each holds its family's per-feature entries (a weight, and FTRL's ``z`` and
``n``).  It needs a model whose per-feature maps are keyed by the events' own feature names and that learns in
place with a journal (a linear model with FTRL, ``LogisticRegression(ftrl=true)`` or
``LinearRegression(ftrl=true)``, on its own): :func:`check_model`.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from riverflink import models
from riverflink.models import journal, sharding
from riverflink.models.signing import Verifier
from riverflink.operators.frames import Record
from riverflink.operators.messages import PULL_MAX_FEATURES, PullRequest, encode_pull, replica_id
from riverflink.operators.pulls import PullAnswer, read_answer
from riverflink.operators.replica import Replica
from riverflink.operators.working_set import WorkingSet, WorkingSetSettings

log = logging.getLogger("riverflink")


def check_model(template: Any) -> None:
    """``ValueError`` unless ``template`` can learn with a working set (see the module docstring)."""
    from river import compose, preprocessing

    model = template.clone()
    journal.start(model)
    stages = list(model.steps.values()) if isinstance(model, compose.Pipeline) else [model]
    renaming = [type(s).__name__ for s in stages
                if isinstance(s, (preprocessing.FeatureHasher, preprocessing.OneHotEncoder))]
    if renaming or journal.keys(model) is None or not models.adapter_for(model).in_place(model):
        why = f"{renaming[0]} renames the events' features" if renaming else "it does not learn in place"
        raise ValueError(f"--working-set needs a sparse linear model keyed by the events' features "
                         f"(LogisticRegression(ftrl=true) or LinearRegression(ftrl=true), on its own): {why}")


def _pullable(feature: Any) -> bool:
    return isinstance(feature, (str, int)) and not isinstance(feature, bool)


@dataclass
class PullStats:
    """What one batch's pass through the gate did (the trainer's metrics)."""

    sent: int = 0
    answered: int = 0
    #: answers refused (invalid, another replica's) or late (their pull was given up)
    refused: int = 0
    late: int = 0
    timed_out: int = 0
    #: new events that had to wait for a pull, and events learned without every pull they needed
    waited: int = 0
    unpulled: int = 0
    #: requests the limiter held back this pass
    limited: int = 0
    evicted: int = 0
    expired: int = 0
    #: held features asked for again: unverified, and unknown to the bounded reader (``Replica.refresh``)
    refreshed: int = 0
    #: pull round trips answered in this batch, in milliseconds
    round_trips_ms: list = field(default_factory=list)


class PullGate:
    """The replica side of pulls for one job (settings, model name, shard count, the answers' verifier)."""

    def __init__(self, settings: WorkingSetSettings, model_name: str, shards: int,
                 verifier: Verifier | None = None):
        self.s, self.model_name, self.shards, self.verifier = settings, model_name, max(1, shards), verifier
        #: the replicas rebase from a bounded reader (:mod:`~riverflink.operators.tracked_features`): features
        #: they come to hold without a pull are unverified, and pulled again when that reader does not know them
        self.bounded_reader = False

    def restored(self, replica: Replica) -> None:
        """A replica restored from a checkpoint under a bounded reader, which starts empty: everything it holds is
        unverified (its next rebase writes what the reader knows and leaves the rest to pull again)."""
        if self.bounded_reader and getattr(replica, "working", None) is not None:
            replica.unverified, replica.refresh = set(replica.working.used), set()

    def start(self, replica: Replica) -> None:
        """Give a replica its (empty) working set, once."""
        if getattr(replica, "working", None) is None:
            replica.working, replica.waiting, replica.pulls = WorkingSet(self.s), [], {}
            # (request ids start anywhere: an answer left on the pulls topic by an earlier job, read again by a new
            # one, names no request of this replica's and is dropped as late)
            replica.pull_seq = random.getrandbits(48)

    def on_answers(self, replica: Replica, key: Any, answers: Sequence[Record], stats: PullStats,
                   now: float | None = None) -> None:
        """Take the answers to this replica's unanswered pulls (others are counted and dropped)."""
        now = time.time() if now is None else now
        rid = replica_id(key)
        for record in answers:
            got = read_answer(record.value, self.model_name, rid, self.shards, self.verifier)
            if not isinstance(got, PullAnswer):
                stats.refused += 1
                log.warning("replica %s ignores a record on the pulls topic: %s", rid, got)
                continue
            asked = replica.pulls.pop(got.pull, None)
            if asked is None or asked[0] != got.shard:
                stats.late += 1
                continue
            shard, features, sent_at = asked
            base = replica.base_slices[shard] if len(replica.base_slices) == self.shards > 1 else replica.base_version
            replica.take_pulled(got.entries, set(features), got.acked, stale=got.version < base)
            replica.working.use(features)
            stats.answered += 1
            stats.round_trips_ms.append(1000 * (now - sent_at))

    def admit(self, replica: Replica, key: Any, batch: list, stats: PullStats,
              now: float | None = None) -> tuple[list, list[bytes]]:
        """``(items that learn now, pull requests as bytes)`` for ``batch`` (new ``(x, y, event, raw)`` items):
        the waiting items first, in arrival order, then the new ones."""
        now = time.time() if now is None else now
        held, pulls = replica.working.used, replica.pulls
        given_up: set = set()
        for pull, (_, features, sent_at) in list(pulls.items()):
            if now - sent_at >= self.s.pull_timeout_s:
                del pulls[pull]
                stats.timed_out += 1
                given_up.update(features)
        old = len(replica.waiting)
        ready, wait = [], []
        unmerged = self._unmerged_shards(replica)
        for i, item in enumerate(replica.waiting + batch):
            lacking = [f for f in item[0] if f not in held and _pullable(f) and self._owner(f) not in unmerged]
            if not lacking:
                ready.append(item)
            elif all(f in given_up for f in lacking):
                ready.append(item)
                stats.unpulled += 1
            else:
                wait.append(item)
                stats.waited += i >= old
        over = len(wait) - self.s.buffer
        if over > 0:  # (the bound on waiting events: the oldest learn on what the replica holds)
            ready, wait = ready + wait[:over], wait[over:]
            stats.unpulled += over
        replica.waiting = wait
        return ready, self._requests(replica, key, wait, stats, now)

    def _owner(self, feature: Any) -> int:
        return sharding.shard_of(feature, self.shards)

    def _unmerged_shards(self, replica: Replica) -> set:
        """The shards of which the version this replica is based on holds nothing merged (none at all before its
        first version): every feature they own is at its initial value there, so it learns without a pull, and the
        rebase onto the first version that holds it writes it whole (merged entries, in-flight and unsent
        learning)."""
        if len(replica.base_slices) == self.shards > 1:
            return {s for s, v in enumerate(replica.base_slices) if v == 0}
        return set(range(self.shards)) if replica.base_version == 0 else set()

    def _requests(self, replica: Replica, key: Any, wait: list, stats: PullStats, now: float) -> list[bytes]:
        held, pulls = replica.working.used, replica.pulls
        asked = {f for _, features, _ in pulls.values() for f in features}
        unmerged = self._unmerged_shards(replica)
        need: dict[int, list] = {}
        for item in wait:
            for f in item[0]:
                if f not in held and f not in asked and _pullable(f) and self._owner(f) not in unmerged:
                    asked.add(f)
                    need.setdefault(self._owner(f), []).append(f)
        for f in getattr(replica, "refresh", None) or ():  # (held, unverified, unknown to the bounded reader)
            if f not in asked and _pullable(f) and self._owner(f) not in unmerged:
                asked.add(f)
                need.setdefault(self._owner(f), []).append(f)
                stats.refreshed += 1
        out: list[bytes] = []
        for shard, features in sorted(need.items()):
            for i in range(0, len(features), PULL_MAX_FEATURES):
                if len(pulls) >= self.s.max_pulls:
                    stats.limited += 1
                    return out
                replica.pull_seq += 1
                chunk = tuple(features[i : i + PULL_MAX_FEATURES])
                pulls[replica.pull_seq] = (shard, chunk, now)
                out.append(encode_pull(PullRequest(self.model_name, replica_id(key), shard, replica.pull_seq,
                                                   chunk, now)))
                stats.sent += 1
        return out

    def settle(self, replica: Replica, learned: Sequence[dict], stats: PullStats) -> None:
        """After learning ``learned`` (the events' inputs): they used their features; let go of what must go."""
        ws = replica.working
        used = {f for x in learned for f in x}
        if self.bounded_reader:  # (held without a pull: it may lack merges the reader did not keep)
            fresh = {f for f in used if f not in ws.used}
            if fresh:
                replica.unverified = (getattr(replica, "unverified", None) or set()) | fresh
        ws.use(used, len(learned))
        if len(ws) <= ws.settings.capacity and ws.settings.expire_after is None:
            return
        evicted, expired = ws.evicted, ws.expired
        protected = replica.learning_features() | {f for item in replica.waiting for f in item[0]}
        replica.evict(ws.leaving(protected))
        stats.evicted += ws.evicted - evicted
        stats.expired += ws.expired - expired

    def next_deadline(self, replica: Replica) -> float | None:
        """When this replica's oldest unanswered pull times out (None: none unanswered)."""
        pulls = getattr(replica, "pulls", None)
        return min(sent for _, _, sent in pulls.values()) + self.s.pull_timeout_s if pulls else None
