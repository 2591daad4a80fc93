"""The replica <-> merger loop, as three messages on each side.  Pure Python: no Flink import.

::

    records ──► ReplicaSide.on_records ──► dead letters (JSON), predictions, metrics
                  │  validate, budget features, learn (Replica.train)
                  │  updates: bytes (messages.encode_update)
                  ▼
                MergerSide.on_update ──► model document (dict) ──► the models topic
                  │  decode, queue (MergeTrigger), merge (MergerState.merge, delay compensation)
                  ▲                                                      │
    MergerSide.on_model ◄─── validated documents (model_feed.accept) ◄──┤
    ReplicaSide.on_model ◄──────────────────────────────────────────────┘  rebase (Replica.rebase)

The training job's Flink functions (:mod:`~riverflink.operators.replica_trainer`,
:mod:`~riverflink.operators.merger`) are thin shells over these two classes:
they hold the state (:class:`~riverflink.operators.replica.Replica` and
:class:`~riverflink.operators.merge_state.MergerState` objects in keyed
state), register timers, count metrics and route outputs.  ``bench/sync.py``
and the loop's tests drive the same two classes with the same messages
(updates as bytes through the real codec, documents through the same
validation), so a fix here is a fix everywhere.

A model family plugs into the loop through the contract in
``docs/model-families.md``: the replica calls its ``delta``/``apply`` (take an
update, rebase), the merger its ``sum_deltas``/``apply_deltas`` and the wire
format (``to_wire``/``from_wire``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from riverflink import models
from riverflink.models import sharding, user_table
from riverflink.models.document import ModelMeta
from riverflink.models.labels import LabelRule, kind_problem, label_kind, task_of
from riverflink.models.paging import PageCollector
from riverflink.models.policies import MergePolicy
from riverflink.models.signing import Signer, Verifier
from riverflink.models.sync import SyncPolicy
from riverflink.operators.dead_letters import Rejected
from riverflink.operators.events import Event, RatingFields, parse_event
from riverflink.operators.feature_budget import FeatureBudget
from riverflink.operators.frames import USER_PARTITION, Record
from riverflink.operators.limits import DEFAULT_LIMITS, Limits
from riverflink.operators.merge_state import MergerState, MergeTrigger
from riverflink.operators.messages import (ReplicaUpdate, UndecodableUpdate, decode_pull, decode_update, encode_update,
                                          replica_id)
from riverflink.operators.pull_gate import PullGate, PullStats, check_model
from riverflink.operators.pulls import PULL_PARTITION
from riverflink.operators.pulls import answer as pull_answer
from riverflink.operators.quality_gate import QualityGate
from riverflink.operators.replica import Replica
from riverflink.operators.scoring import Score
from riverflink.operators.slice_assembly import Manifest
from riverflink.operators.user_owner import UserOwner, UserStats
from riverflink.operators.working_set import WorkingSetSettings

log = logging.getLogger("riverflink")


@dataclass(frozen=True)
class LoopSettings:
    """How one model's loop runs; the same object configures the job and the simulation."""

    model_name: str
    #: ``exact`` (River-identical) or ``batch`` (:mod:`~riverflink.operators.batch_learning`)
    mode: str = "exact"
    sync: SyncPolicy = field(default_factory=SyncPolicy)
    #: precision of learned leaves in updates (statistics exact, but with "compact": models.update_codec)
    precision: str = "float16"
    #: the merger's delay compensation replaces the old fixed clip (``docs/merge-policies.md``)
    policy: MergePolicy = field(default_factory=lambda: MergePolicy("delta", clip=math.inf))
    trigger: MergeTrigger = field(default_factory=MergeTrigger)
    #: hold back versions whose replicas learn worse by more than this (None: every version is served)
    quality_gate: float | None = None
    #: distinct features each replica admits (:mod:`~riverflink.operators.feature_budget`); None: no bound
    replica_features: int | None = None
    #: the replicas learn at this many times the spec's learning rate (``scaled_average``: K)
    lr_scale: float = 1.0
    #: classifiers: the only labels accepted (as text; others are dead-lettered); None: any, new ones counted
    classes: frozenset | None = None
    #: merger shards (:mod:`riverflink.models.sharding`): each update goes out as one piece per shard
    shards: int = 1
    #: the sharding epoch: a new one whenever ``shards`` changes (slices of other epochs never mix)
    epoch: int = 0
    #: sharded: slices published as patches between whole ones, at most this many in a row (0: always whole)
    patches: int = 0
    #: ``--working-set``: each replica holds at most this many features and pulls the others
    #: (:mod:`~riverflink.operators.pull_gate`); None: a replica holds every feature it meets
    working_set: WorkingSetSettings | None = None
    #: a recommender's events: where they name the user and the item (:class:`~riverflink.operators.events.
    #: RatingFields`; None: events carry features ``x``)
    ratings: RatingFields | None = None
    #: K, the replica keys (a recommender's replicas let go of the users they no longer own when it changes)
    replicas: int = 1
    #: the job's tag: a recommender's replica writes its user records as ``<writer>/<replica>`` and adopts only
    #: records of other writers (:mod:`~riverflink.operators.user_owner`)
    writer: str = ""


@dataclass
class BatchOutcome:
    """What one micro-batch of a replica produced."""

    #: the merged version the batch was learned on
    base_version: int
    score: Score | None = None
    #: encoded updates for the merger
    updates: list[bytes] = field(default_factory=list)
    #: a recommender's user-factor records ``(key, value)`` of the users the batch learned from, then eviction
    #: records (:mod:`~riverflink.models.user_factors`), and what the batch did to its users
    user_factors: list = field(default_factory=list)
    users: UserStats | None = None
    #: the learned events, in order, and their ``(y_pred, proba)`` when predictions were asked for
    events: list[Event] = field(default_factory=list)
    predictions: list = field(default_factory=list)
    #: rejected records (reason, raw bytes, position), in order
    rejected: list[Rejected] = field(default_factory=list)
    features_dropped: int = 0
    #: the whole batch was dead-lettered because the model raised while learning it
    learning_failed: bool = False
    #: the replica had nothing unsent before this batch and has now: check its sync policy later (a timer)
    unsent_started: bool = False
    #: classifiers: labels first learned in this batch, after the replica's first one (a typo becomes a class
    #: for good)
    new_classes: list = field(default_factory=list)
    #: ``--working-set``: pull requests for the merger shards (bytes, on the updates edge), what the pull gate
    #: did, and the replica's unanswered pulls and waiting events after the batch
    pull_requests: list[bytes] = field(default_factory=list)
    pulls: PullStats | None = None


class ReplicaSide:
    """The replica half of the loop: on a model version, on a batch, on a timer (one replica key at a time)."""

    def __init__(self, settings: LoopSettings, template: Any, verifier: Verifier | None = None,
                 signer: Signer | None = None):
        """``verifier``: pull answers (and a recommender's user records) are taken only when signed by its key (as
        model documents); ``signer``: a recommender's user records are signed with it."""
        if settings.lr_scale != 1.0:  # the scaled_average policy: K replicas at K times the learning rate
            template = models.scale_learning_rate(template, settings.lr_scale)
        if settings.shards > 1:
            sharding.check_shardable(template)
        self.s, self.template = settings, template
        self.labels = LabelRule.for_model(template, settings.classes)
        self.gate = None
        self.users = None if settings.ratings is None else UserOwner(settings.model_name, settings.ratings,
                                                                      settings.replicas, settings.writer,
                                                                      signer, verifier)
        if settings.working_set is not None:
            check_model(template)
            self.gate = PullGate(settings.working_set, settings.model_name, settings.shards, verifier)

    def fresh(self) -> Replica:
        """An untrained replica at version 0 (with an empty working set under ``working_set``)."""
        replica = Replica.fresh(self.template)
        if self.gate is not None:
            self.gate.start(replica)
        return replica

    def on_model(self, replica: Replica, key: Any, meta: ModelMeta, params: Callable[[], dict],
                 changed: Callable[[int], set | None] | None = None,
                 params_at: Callable[[set], dict | None] | None = None,
                 known: Callable[[set], set] | None = None) -> bool:
        """Rebase ``replica`` onto a validated merged version if it is newer; ``params()`` gives its parameters.

        Updates of this replica that the version lists as refused are sent again with its next update.  An
        assembled sharded model (``meta.slices``, :class:`~riverflink.operators.model_feed.ModelFeed`) is
        acknowledged shard by shard; ``changed(base version)``, the features that changed since the version the
        replica is based on (``ModelFeed.changed_between``), lets it rebase in place on them, taking the merged
        parameters at those features from ``params_at(features)`` (``None``: from ``params()``).  ``known``: a
        bounded reader's (``ModelFeed.known_at``) answer, which features it holds as merged (see
        ``Replica.rebase``)."""
        if meta.version is None or meta.version <= replica.base_version or max(1, len(meta.slices)) != self.s.shards:
            return False  # (a model of another shard count is another job's: its acknowledgements are not ours)
        rid = replica_id(key)
        if meta.slices:
            return self._rebase_sharded(replica, rid, meta.version, tuple(s.version for s in meta.slices),
                                        [s.acked.get(rid, 0) for s in meta.slices],
                                        [s.refused_updates.get(rid, ()) for s in meta.slices], params,
                                        changed(replica.base_version) if changed is not None else None, params_at,
                                        known)
        resent = replica.rebase(params(), meta.version, meta.acked.get(rid, 0), meta.refused_updates.get(rid, ()),
                                norm=self.s.sync.divergence is not None)
        if resent:
            log.warning("replica %s sends the learning of %d refused update(s) again", rid, resent)
        return True

    def on_sharded_model(self, replica: Replica, key: Any, manifest: Manifest, metas: Sequence[ModelMeta],
                         slices: Callable[[], Sequence[dict]]) -> bool:
        """Rebase ``replica`` onto a complete, consistent set of slices (:class:`SliceAssembler`'s answer) if
        its manifest is newer; ``metas`` are the slices' metadata, ``slices()`` their parameters, shard order.
        Each shard acknowledges (and refuses) its own piece of every update."""
        if manifest.version <= replica.base_version:
            return False
        rid = replica_id(key)
        return self._rebase_sharded(replica, rid, manifest.version, manifest.slices,
                                    [m.acked.get(rid, 0) for m in metas], [m.refused_updates.get(rid, ()) for m in metas],
                                    sharding.join(self.template, slices()))

    def _rebase_sharded(self, replica: Replica, rid: str, version: int, slice_versions: tuple, acks: list,
                        refusals: list, params: dict | Callable[[], dict], changed: set | None = None,
                        params_at: Callable[[set], dict | None] | None = None,
                        known: Callable[[set], set] | None = None) -> bool:
        resent = replica.rebase(params, version, acks, refusals, slices=slice_versions,
                                norm=self.s.sync.divergence is not None, changed=changed, merged_at=params_at,
                                known=known)
        if resent:
            log.warning("replica %s sends the learning of %d refused update piece(s) again", rid, resent)
        return True

    def on_records(self, replica: Replica, key: Any, records: Sequence[Record], *, key_field: str = "key",
                   limits: Limits = DEFAULT_LIMITS, keep_predictions: bool = False) -> BatchOutcome:
        """Validate every record (label included) before anything learns, then learn the valid ones.

        Never raises: a record that fails validation is rejected with its
        reason; a batch the model raises on is rejected whole (every valid
        event in it, ``learning_failed``) and rolled back, so what is
        dead-lettered was never learned (transactional per batch).

        Under ``working_set``, pull answers (records at ``PULL_PARTITION``) are taken first, and events that
        need features the replica does not hold wait for their pulls (:mod:`~riverflink.operators.pull_gate`);
        a call with no records gives the waiting events another chance (a timer).

        A recommender's user-factor records (at ``USER_PARTITION``) are taken before the events learn
        (:class:`~riverflink.operators.user_owner.UserOwner`).
        """
        answers: list = []
        user_stats = None
        if self.users is not None:
            user_records = [r for r in records if r.partition == USER_PARTITION]
            records = [r for r in records if r.partition != USER_PARTITION] if user_records else records
            user_stats = self.users.before(replica, key, user_records)
        if self.gate is not None:
            answers = [r for r in records if r.partition == PULL_PARTITION]
            records = [r for r in records if r.partition != PULL_PARTITION] if answers else records
        xs, ys, events, rejected = [], [], [], []
        kinds = {label_kind(y) for y in replica.classes_seen} if self.labels.task in ("binary", "multiclass") \
            else None
        for record in records:
            event = parse_event(record, require_label=self.labels.needs_label, key_field=key_field, limits=limits,
                                ratings=self.s.ratings)
            if not isinstance(event, Rejected):
                problem = self.labels.problem(event.y)
                if problem is None and kinds is not None:  # one kind of label a stream (a tree sorts its classes)
                    problem = kind_problem(event.y, kinds)
                    if problem is None:
                        kinds.add(label_kind(event.y))
                if problem is not None:
                    event = Rejected(problem, record.value, event.partition, event.offset)
            if isinstance(event, Rejected):
                rejected.append(event)
                continue
            xs.append(event.x)
            ys.append(event.y)
            events.append((event, record.value))
        out = BatchOutcome(replica.base_version, rejected=rejected, users=user_stats)
        if xs and self.s.replica_features:
            if replica.features is None:
                replica.features = FeatureBudget(self.s.replica_features)
            xs, out.features_dropped = replica.features.admit(xs)
        if self.gate is not None:
            xs, ys, events = self._through_gate(replica, key, answers, xs, ys, events, out)
        if not xs:
            return out
        point = replica.save_point()
        # (a recommender's users are not in the replica's snapshot: the batch's own are saved apart)
        users_point = user_table.save(replica.model, {x.user for x in xs}) if self.users is not None else None
        try:
            learned = self.on_events(replica, key, xs, ys, keep_predictions)
        except Exception as e:  # noqa: BLE001 - validated events should learn; never die on one
            log.exception("replica %s could not learn a batch; rolled it back", key)
            replica.restore(point)
            if users_point is not None:
                user_table.restore(replica.model, users_point)
            reason = (f"the model could not learn this batch (nothing of it was learned): "
                      f"{type(e).__name__}: {str(e)[:200]}")
            out.rejected += [Rejected(reason, raw, ev.partition, ev.offset) for ev, raw in events]
            out.learning_failed = True
            return out
        replica.commit()
        if self.gate is not None:
            self.gate.settle(replica, xs, out.pulls)
        learned.rejected, learned.features_dropped = out.rejected, out.features_dropped
        learned.pull_requests, learned.pulls = out.pull_requests, out.pulls
        if learned.users is not None:
            learned.users.add(user_stats)
        if learned.new_classes:
            log.warning("replica %s learns new class(es) %s (declare --classes to refuse unknown labels)", key,
                        ", ".join(repr(c) for c in learned.new_classes[:10]))
        learned.events = [ev for ev, _ in events]
        return learned

    def _through_gate(self, replica: Replica, key: Any, answers: list, xs: list, ys: list, events: list,
                      out: BatchOutcome) -> tuple[list, list, list]:
        """Take the pull answers, then split the events into those that learn now (returned, as ``xs, ys,
        events``) and those that wait; the pull requests and the gate's counts go into ``out``."""
        out.pulls = PullStats()
        self.gate.start(replica)  # (a replica restored from a job without working sets)
        self.gate.on_answers(replica, key, answers, out.pulls)
        batch = [(x, y, event, raw) for x, y, (event, raw) in zip(xs, ys, events)]
        ready, out.pull_requests = self.gate.admit(replica, key, batch, out.pulls)
        return [i[0] for i in ready], [i[1] for i in ready], [(i[2], i[3]) for i in ready]

    def on_events(self, replica: Replica, key: Any, xs: Sequence[dict], ys: Sequence[Any],
                  keep_predictions: bool = False, coalesce: bool = True) -> BatchOutcome:
        """Learn validated events (predict-then-learn) and take the updates the sync policy asks for.

        ``coalesce=False`` checks the sync policy mid-batch, as the first slice did (comparisons only).
        """
        version, idle = replica.base_version, replica.since_sync == 0
        first = replica.events_learned == 0
        new_classes = replica.note_classes(ys) if replica.task in ("binary", "multiclass") else []
        new_classes = [] if first else new_classes  # a replica's first batch introduces every class it has
        score, updates, predictions = replica.train(xs, ys, mode=self.s.mode, policy=self.s.sync,
                                                    model_name=self.s.model_name, replica=replica_id(key),
                                                    keep_predictions=keep_predictions, coalesce=coalesce)
        pieces = [b for u in updates for b in self.encode(u, replica)]
        users, user_stats = [], None
        if self.users is not None:  # (users are model-parallel: their owner publishes them for serving)
            user_stats = UserStats()
            users = self.users.after(replica, key, [x.user for x in xs], user_stats)
        return BatchOutcome(version, score, pieces, user_factors=users, users=user_stats, predictions=predictions,
                            unsent_started=idle and replica.since_sync > 0, new_classes=new_classes)

    def on_timer(self, replica: Replica, key: Any, now: float | None = None) -> list[bytes]:
        """A quiet replica's check: its update (one piece per shard) if the sync policy says so (time or
        divergence); else nothing."""
        if replica.since_sync == 0 or not replica.sync_due(self.s.sync, now):
            return []
        return self.encode(replica.take_update(self.s.model_name, replica_id(key)), replica)

    def encode(self, update: ReplicaUpdate, replica: Replica) -> list[bytes]:
        """The update's bytes: one message, or with ``shards`` > 1 one piece per shard (in shard order), each
        holding that shard's parameters and based on that shard's slice version (route by
        :func:`~riverflink.operators.messages.update_shard`)."""
        if self.s.shards <= 1:
            return [encode_update(self.template, update, self.s.precision)]
        bases = replica.base_slices if len(replica.base_slices) == self.s.shards else (0,) * self.s.shards
        pieces = sharding.split(self.template, update.delta, self.s.shards)
        return [encode_update(self.template, dataclasses.replace(update, delta=piece, shard=s, base_version=base),
                              self.s.precision) for s, (piece, base) in enumerate(zip(pieces, bases))]


@dataclass
class MergeOutcome:
    """What one message to the merger produced."""

    #: the new version's document (not yet signed), or None
    document: dict | None = None
    #: updates refused by this step (poisoned or undecodable)
    refused: int = 0
    #: the first pending update has arrived: merge by ``trigger.wait_ms`` at the latest (the shell's timer)
    wait: bool = False


class MergerSide:
    """The merger half of the loop: on an update, on a timer, on a model document read back."""

    def __init__(self, settings: LoopSettings, template: Any):
        self.s, self.template = settings, template
        #: by shard, the pages' parameters of a paged whole slice a merger that never merged is reading (not
        #: state: the pages of a version are read back together, and again after a restore)
        self._pages = PageCollector()

    def fresh(self, shard: int = 0) -> MergerState:
        """A new merger (of shard ``shard``'s slice when the model is sharded)."""
        return self.configure(MergerState(self.s.model_name, self.template, trigger=self.s.trigger, shard=shard,
                                          shards=self.s.shards, epoch=self.s.epoch))

    def restore(self, merger: MergerState | None, shard: int = 0) -> MergerState:
        """Shard ``shard``'s merger from its saved state (``None``: none yet): configured with this job's settings,
        or fresh when it was saved as a slice of another shard count (logged; moving a job to another
        ``--shards``: ``docs/model-families.md``).

        >>> from riverflink.models.spec import build as build_model
        >>> side = MergerSide(LoopSettings("m", shards=2, epoch=5), build_model("LogisticRegression"))
        >>> restored = side.restore(MergerState("m", build_model("LogisticRegression"), version=9, shards=4), shard=1)
        >>> restored.version, restored.shard, restored.shards, restored.epoch
        (0, 1, 2, 5)
        """
        if merger is not None and merger.shards != self.s.shards:
            log.warning("merger shard %d: its saved state is a slice of %d shard(s), this job has %d: it starts its "
                        "slice afresh", shard, merger.shards, self.s.shards)
            merger = None
        return self.fresh(shard) if merger is None else self.configure(merger)

    def configure(self, merger: MergerState | None) -> MergerState:
        """A new merger, or a restored one with this job's settings (they win over a restored state's)."""
        merger = merger or MergerState(self.s.model_name, self.template, trigger=self.s.trigger)
        merger.trigger = self.s.trigger
        merger.patches = self.s.patches
        margin = self.s.quality_gate
        if margin is None:
            merger.gate = None
        elif merger.gate is None or merger.gate.margin != margin:
            merger.gate = QualityGate(margin, regression=task_of(merger.template) == "regression")
        return merger

    def on_update(self, merger: MergerState, data: bytes, now: float | None = None) -> MergeOutcome:
        """Queue an update (bytes from a replica); merge when the trigger says so."""
        try:
            update = decode_update(data)
        except UndecodableUpdate as e:
            log.error("refusing replica %s's update %d, which does not decode (it will send it again): %s",
                      e.replica, e.seq, e)
            merger.refuse(e.replica, e.seq)
            return MergeOutcome(refused=1)
        except ValueError as e:
            log.error("refusing an undecodable replica update: %s", e)
            merger.refused += 1
            return MergeOutcome(refused=1)
        if update.shard != merger.shard:
            log.error("refusing replica %s's update %d for shard %d: this merger merges shard %d", update.replica,
                      update.seq, update.shard, merger.shard)
            merger.refuse(update.replica, update.seq)
            return MergeOutcome(refused=1)
        first = not merger.pending
        if merger.add(update, now) and not merger.awaits_base(now):
            return self.merge(merger, now)
        return MergeOutcome(wait=first)

    def on_pull(self, merger: MergerState, data: bytes) -> tuple[str, dict] | None:
        """A replica's pull request (bytes, :func:`~riverflink.operators.pulls.is_pull`): ``(replica id, the
        answer document)``, unsigned, from this shard's merged parameters; ``None`` (logged) for a request this
        shard cannot answer."""
        try:
            request = decode_pull(data)
        except ValueError as e:
            log.error("ignoring a pull request: %s", e)
            return None
        if request.shard != merger.shard or request.model_name != merger.name:
            log.error("ignoring replica %s's pull for shard %d of %r: this merger merges shard %d of %r",
                      request.replica, request.shard, request.model_name, merger.shard, merger.name)
            return None
        return request.replica, pull_answer(merger, self.template, request)

    def on_timer(self, merger: MergerState, now: float | None = None) -> MergeOutcome:
        """Merge whatever waits (the trigger's ``wait_ms`` has passed)."""
        if merger.awaits_base(now):  # (again after another wait: MergerState.awaits_base)
            return MergeOutcome(wait=True)
        return self.merge(merger, now) if merger.pending else MergeOutcome()

    def on_model(self, merger: MergerState, meta: ModelMeta, model: Any) -> bool:
        """A validated document read back from the topic: keep the version counter ahead of it (and, while the
        merger has never merged, take its parameters: :meth:`MergerState.adopt`).

        A whole slice published as pages (``meta.pages`` > 1: a resharded model, ``riverflink reshard``, or this
        job's own before a restart) is taken once all its pages have come, in any order, joined; a merger that
        has merged only raises its counter on them."""
        if meta.pages <= 1 or meta.patch_of is not None or merger.merges:
            return merger.adopt(meta, lambda: models.get_params(model))
        if (meta.version or 0) <= merger.version or (meta.shard, meta.shards) != (merger.shard, merger.shards):
            return False
        held = self._pages.add(merger.shard, version=meta.version, page=meta.page, of=meta.pages,
                               item=models.get_params(model))
        if held is None:
            return False
        whole = dataclasses.replace(meta, page=0, pages=1)
        return merger.adopt(whole, lambda: sharding.join(self.template, held))

    def merge(self, merger: MergerState, now: float | None = None) -> MergeOutcome:
        refused = merger.refused
        doc = merger.merge(self.s.policy, now=time.time() if now is None else now)
        return MergeOutcome(doc, merger.refused - refused)
