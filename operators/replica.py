"""One River replica of the training job: learn a micro-batch, sync, rebase.  Pure Python.

Contract
--------
* **Learning.** :meth:`Replica.learn_batch` takes validated ``(x, y)`` pairs
  and scores each event *before* learning it (progressive validation):

  - ``exact``: River's ``predict_one`` / ``predict_proba_one`` then
    ``learn_one``, event by event; identical to single-node River;
  - ``batch``: the whole micro-batch is predicted with the model as it stood
    at the batch's start (``predict_proba_many`` / ``predict_many``), then
    learned by one ``learn_many`` call.  River's ``learn_many`` takes one step
    on the batch's *mean* gradient; the replica passes the sample weight
    :func:`~riverflink.operators.batch_learning.batch_weight`, so one call
    moves the weights about as far as the events learned one by one would.

* **What a replica sends.** It measures what it learned from a *snapshot*
  (its parameters when it last synced or rebased).  :meth:`take_update` hands
  the merger ``delta(model, snapshot)`` with a per-replica sequence number,
  moves the snapshot forward and keeps the update *in flight* until a merged
  version acknowledges it (``meta.acked[replica] >= seq``).  Every event thus
  reaches the merger exactly once.

* **Rebasing never drops the replica's own learning.**  :meth:`rebase` onto
  merged version ``v`` sets the model to ``merged + (in-flight updates that
  v does not hold yet) + (learning not sent yet)``.  Without the in-flight
  part, a replica that rebases onto a version merged before its last update
  arrived would lose that update's learning until the next version.

Why one file of about 370 lines: learning, taking an update and rebasing read
and write the same fields (snapshot, in-flight updates, curvature and
stiffness of the period), and the save point lists them all; split apart, each
part would reach into the others' state.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from riverflink import models
from riverflink.models.labels import final_step, task_of
from riverflink.models import journal, numeric, sharding
from riverflink.models.policies import MergePolicy
from riverflink.models.sync import SyncPolicy, learned_distance, learned_norm
from riverflink.operators import delay_compensation
from riverflink.operators.batch_learning import (BATCH_WARMUP, MODES, batch_weight, feature_frame, input_moments,
                                                 input_stiffness, predict_many)
from riverflink.operators.delay_compensation import ContractionProbe
from riverflink.operators.messages import ReplicaId, ReplicaUpdate, replica_id
from riverflink.operators.scoring import Score, learn, predict

#: replays of in-flight updates are exact sums, whatever the merge policy
_REPLAY = MergePolicy("delta", clip=math.inf)
#: events sampled for a stiffness estimate, and how many syncs one estimate serves
STIFFNESS_SAMPLE = 64
STIFFNESS_EVERY = 8


@dataclass
class Replica:
    model: Any
    base_version: int = 0
    snapshot: dict = field(default_factory=dict)
    since_sync: int = 0
    first_unsynced_at: float | None = None
    seq: int = 0
    #: (seq, delta, events) of updates sent but not yet held by the version this replica is based on
    in_flight: list = field(default_factory=list)
    #: progressive score since the last sync (sent with the update)
    unsynced_score: Score = field(default_factory=Score)
    #: learned-parameter norm at the last rebase (scale for relative divergence thresholds)
    base_norm: float = 0.0
    #: ADWIN over the replica's per-chunk loss, when the sync policy syncs on drift
    detector: Any = None
    #: summed loss curvature at the unsynced events' predictions (delay compensation)
    curvature: float = 0.0
    #: parameters half-way through the unsynced period (curvature probe)
    mid: dict | None = None
    probe: ContractionProbe = field(default_factory=ContractionProbe)
    #: the inputs' stiffness for kappa (:func:`~riverflink.operators.delay_compensation.kappa`), its next
    #: estimate's sample of this period's events, and the syncs until that estimate is taken
    stiffness: float = 1.0
    stiffness_sample: list = field(default_factory=list)
    stiffness_due: int = 0
    #: a softmax replica's per-direction estimate, taken with the stiffness: ``(features, M)``, the second moment
    #: of its standardised inputs (:func:`~riverflink.operators.batch_learning.input_moments`); None: none yet
    moments: tuple | None = None
    #: the features this replica may teach the model (set by the training job; None: unbounded)
    features: Any = None
    #: a sharded model: the slice version of each shard in the manifest this replica is based on
    base_slices: tuple = ()
    #: due syncs held back at the sync policy's ``max_staleness`` (the checks that held one), and syncs sent past
    #: it after ``stale_send_s`` (staleness violations)
    syncs_held: int = 0
    staleness_violations: int = 0
    #: events this replica has learned itself (ends the batch-mode warm-up, BATCH_WARMUP)
    events_learned: int = 0
    #: classifiers: the labels this replica has learned (new ones are reported)
    classes_seen: set = field(default_factory=set)
    #: a recommender's K when it last let go of the users it does not own (:mod:`~riverflink.operators.user_owner`)
    user_layout: int | None = None
    #: whether ``snapshot`` is this replica's own tree (else it may be the merged parameters a reader shares
    #: with other replicas: an in-place rebase copies it first)
    snapshot_owned: bool = False
    #: ``mid`` holds only these features' entries (they are the only ones where it differs from the snapshot);
    #: None: ``mid`` is a whole tree
    mid_keys: set | None = None
    #: while a :meth:`save_point` is open: (the tree, features, its entries there before) of every in-place change
    #: to ``snapshot`` since, so that :meth:`restore` can undo them (None: no save point open)
    snapshot_undo: list | None = None
    #: ``--working-set``: the features this replica holds (:mod:`~riverflink.operators.working_set`; None: all it
    #: has learned or been merged), the events waiting for pulls as ``(x, y, event, raw bytes)`` in arrival
    #: order, and its unanswered pulls (request id -> (shard, features, sent at))
    working: Any = None
    waiting: list | None = None
    pulls: dict | None = None
    pull_seq: int = 0
    #: features taken from pull answers older than the version this replica is based on: the next rebase
    #: rewrites them from its merged version (an answer misses what was merged after it)
    stale_pulls: set | None = None
    #: under a bounded reader (:mod:`~riverflink.operators.tracked_features`): held features whose values may
    #: miss merges that reader never kept (learned before any pull, or restored from a checkpoint), and those of
    #: them the reader did not know at the last rebase, to pull again (None: not tracked)
    unverified: set | None = None
    refresh: set | None = None

    def note_classes(self, ys: Sequence[Any]) -> list:
        """The labels of ``ys`` this replica had not learned before, in order (and remember them)."""
        new = [y for y in dict.fromkeys(ys) if y not in self.classes_seen]
        self.classes_seen.update(new)
        return new

    def save_point(self) -> tuple:
        """What :meth:`restore` needs to undo everything learning a batch changes (the model's parameters and
        the replica's counters).  The parameters are kept as an undo log of the entries the batch changes
        (:func:`~riverflink.models.journal.hold`: a sparse linear model, behind a ``FeatureHasher`` or not,
        at the cost of the batch's features) or else whole (as costly as one ``get_params``).  Close it with
        :meth:`commit` or :meth:`restore`."""
        self.snapshot_undo = []
        params = None if journal.hold(self.model) else models.get_params(self.model)  # (None: an undo log)
        return (params, self.since_sync, self.first_unsynced_at, self.seq,
                list(self.in_flight), self.snapshot, copy.copy(self.unsynced_score), self.curvature, self.mid,
                copy.copy(self.probe), self.events_learned, copy.deepcopy(self.detector), set(self.classes_seen),
                self.stiffness, list(self.stiffness_sample), self.stiffness_due, journal.save(self.model),
                getattr(self, "mid_keys", None), getattr(self, "snapshot_owned", False), self.moments)

    def commit(self) -> None:
        """The batch since :meth:`save_point` is kept: its undo logs go."""
        self.snapshot_undo = None
        journal.release(self.model)

    def restore(self, point: tuple) -> None:
        """Back to :meth:`save_point`: a batch that raised part way leaves no trace in the replica."""
        (params, self.since_sync, self.first_unsynced_at, self.seq, self.in_flight, self.snapshot,
         self.unsynced_score, self.curvature, self.mid, self.probe, self.events_learned, self.detector,
         self.classes_seen, self.stiffness, self.stiffness_sample, self.stiffness_due, journals,
         self.mid_keys, self.snapshot_owned, self.moments) = point
        for target, keys, before in reversed(getattr(self, "snapshot_undo", None) or []):  # (changed in place)
            if target is self.snapshot:
                numeric.write_at(target, before, keys)
        self.snapshot_undo = None
        if params is None:  # (an undo log was kept instead)
            journal.undo(self.model)
        else:
            models.set_params(self.model, params)
        journal.restore(self.model, journals)

    @classmethod
    def fresh(cls, template: Any) -> "Replica":
        """An untrained replica at version 0; it rebases once a merged model arrives.  Its sparse components
        keep a journal of the features they learn (:mod:`~riverflink.models.journal`): a sync costs what the
        period's events touched, not the model's size."""
        model = template.clone()
        models.adapter_for(model).prepare_replica(model)
        journal.start(model)
        return cls(model=model, snapshot=models.get_params(model))

    @functools.cached_property
    def task(self) -> str:
        """The model's task (fixed for a replica's life; computed once)."""
        return task_of(self.model)

    @functools.cached_property
    def _compensable(self) -> bool:
        return delay_compensation.compensable(self.model)

    @functools.cached_property
    def _per_direction(self) -> bool:
        return delay_compensation.per_direction(self.model)

    def _sample_inputs(self, xs: Sequence[dict]) -> None:
        """Keep up to :data:`STIFFNESS_SAMPLE` of this period's inputs when a stiffness estimate is due."""
        if self.stiffness_due == 0 and self._compensable and len(self.stiffness_sample) < STIFFNESS_SAMPLE:
            self.stiffness_sample.extend(xs[: STIFFNESS_SAMPLE - len(self.stiffness_sample)])

    @functools.cached_property
    def _loss(self) -> str:
        return type(getattr(final_step(self.model), "loss", None)).__name__

    def _step(self, x: dict, y: Any) -> tuple[Any, dict | None]:
        """Predict ``x``, then learn ``(x, y)``; counts the event and its loss curvature (no scoring)."""
        task = self.task
        y_pred, proba = predict(self.model, x, task in ("binary", "multiclass"))
        if task == "clustering":
            self.model.learn_one(x)
        else:
            learn(self.model, x, y)
        self.curvature += delay_compensation.curvature(self._loss, proba)
        self._sample_inputs((x,))
        self._learned(1)
        return y_pred, proba

    # -- learning -----------------------------------------------------------------
    def predict_then_learn(self, x: dict, y: Any) -> tuple[Any, dict | None]:
        """Progressive validation of one event: the prediction made *before* learning ``(x, y)``.

        Classifiers also return their probabilities.  A clusterer predicts the
        cluster of ``x`` and learns ``x``; ``y`` is ignored.
        """
        y_pred, proba = self._step(x, y)
        self.unsynced_score.add(self.task, y_pred, y)
        return y_pred, proba

    def learn_batch(self, xs: Sequence[dict], ys: Sequence[Any], mode: str = "exact",
                    keep_predictions: bool = False) -> tuple[Score, list]:
        """Predict-then-learn a micro-batch; returns its :class:`Score` and, if asked, the predictions.

        ``batch`` mode predicts every event with the model as it stood at the
        batch's start, then learns them in one ``learn_many`` call (see the
        module docstring), after a warm-up of :data:`BATCH_WARMUP` events
        learned one by one; ``exact`` is event by event.  Predictions are
        ``(y_pred, proba)`` pairs.
        """
        if mode not in MODES:
            raise ValueError(f"learning mode must be one of {', '.join(MODES)}, got {mode!r}")
        score, task, out = Score(), self.task, []
        warm = BATCH_WARMUP - self.events_learned
        if mode == "batch" and warm > 0 and len(xs) >= 2:  # the warm-up: one by one, then batches
            first, first_out = self.learn_batch(xs[:warm], ys[:warm], "exact", keep_predictions)
            if len(xs) <= warm:
                return first, first_out
            rest, rest_out = self.learn_batch(xs[warm:], ys[warm:], mode, keep_predictions)
            first.merge(rest)
            return first, first_out + rest_out
        if mode == "exact" or len(xs) < 2:
            for x, y in zip(xs, ys):
                y_pred, proba = self._step(x, y)
                score.add(task, y_pred, y)
                if keep_predictions:
                    out.append((y_pred, proba))
            self.unsynced_score.merge(score)
            return score, out
        import pandas as pd

        X = feature_frame(xs)
        preds = predict_many(self.model, X, task)
        curvature = 0.0
        for (y_pred, proba), y in zip(preds, ys):
            score.add(task, y_pred, y)
            curvature += delay_compensation.curvature(self._loss, proba)
        self.curvature += curvature
        self._sample_inputs(xs)
        if task == "clustering":
            self.model.learn_many(X)
        else:
            self.model.learn_many(X, pd.Series(ys), **batch_weight(self.model, len(xs), curvature / len(xs), X))
        self._learned(len(xs))
        self.unsynced_score.merge(score)
        return score, (preds if keep_predictions else [])

    def _learned(self, n: int) -> None:
        self.since_sync += n
        self.events_learned += n
        if self.first_unsynced_at is None:
            self.first_unsynced_at = time.time()

    def train(self, xs: Sequence[dict], ys: Sequence[Any], *, mode: str, policy: SyncPolicy, model_name: str,
              replica: ReplicaId, keep_predictions: bool = False, coalesce: bool = True) -> tuple[Score, list, list]:
        """One micro-batch, as the training job runs it: learn, check the sync policy, take updates.

        Returns ``(score, updates, predictions)``.  The policy is checked once,
        at the end of the batch (``coalesce``): a merged model reaches the
        replicas one batch later at the earliest, so updates more frequent
        than the batch only multiply messages and overlap (the first slice
        synced mid-batch; ``coalesce=False`` still does, for comparisons).
        The batch is learned in two halves of the sync period (each a
        ``learn_many`` call in ``batch`` mode), for the curvature probe.
        """
        period = max(policy.every_events or 0, len(xs) if coalesce else 0) or len(xs) or 1
        total, updates, predictions = Score(), [], []
        i = 0
        while i < len(xs):
            half = max(1, period // 2)
            to_half = half - self.since_sync if self.since_sync < half else period - self.since_sync
            n = max(1, min(len(xs) - i, to_half if to_half > 0 else len(xs) - i))
            score, preds = self.learn_batch(xs[i : i + n], ys[i : i + n], mode, keep_predictions)
            i += n
            total.merge(score)
            predictions += preds
            if self.mid is None and self.since_sync >= half:
                self._take_mid()
            drift = self._drift(score, policy)
            if (not coalesce or i >= len(xs)) and self.sync_due(policy, drift=drift):
                updates.append(self.take_update(model_name, replica))
        return total, updates, predictions

    def _drift(self, score: Score, policy: SyncPolicy) -> bool:
        """Feed the chunk's loss to an ADWIN detector (only when the policy syncs on drift)."""
        loss = score.loss(self.task)
        if not policy.on_drift or loss is None:
            return False
        if self.detector is None:
            from river import drift

            self.detector = drift.ADWIN()
        self.detector.update(loss)
        return bool(self.detector.drift_detected)

    # -- sync -----------------------------------------------------------------------
    @property
    def clock_gap(self) -> int:
        """This replica's syncs that the version it is based on does not hold on every shard: its own clock
        against the slowest shard's merged clock (updates are held in order, so these are the in-flight ones)."""
        return len(self.in_flight)

    def sync_due(self, policy: SyncPolicy, now: float | None = None, drift: bool = False) -> bool:
        """Whether to take an update now: the policy's triggers, and its staleness bound (a held sync is counted
        in ``syncs_held``, one sent past the bound in ``staleness_violations``)."""
        now = time.time() if now is None else now
        waited = now - self.first_unsynced_at if self.first_unsynced_at is not None else 0.0
        if not policy.due(self.since_sync, waited, lambda: learned_distance(self.model, self.snapshot, True),
                          scale=self.base_norm, drift=drift):
            return False
        held = policy.holds(self.clock_gap, waited)
        if held:
            self.syncs_held += 1
            return False
        if held is None:
            self.staleness_violations += 1
        return True

    def _stiffness(self) -> float:
        """The inputs' stiffness, estimated from this period's sample when due (every
        :data:`STIFFNESS_EVERY` syncs: it changes as slowly as the scaler's statistics)."""
        if self.stiffness_due > 0:
            self.stiffness_due -= 1
        elif self.stiffness_sample:
            X = feature_frame(self.stiffness_sample)
            self.stiffness = input_stiffness(self.model, X)
            if self._per_direction:
                self.moments = input_moments(self.model, X)
            self.stiffness_sample = []
            self.stiffness_due = STIFFNESS_EVERY - 1
        return self.stiffness

    def _compensation(self) -> dict:
        """The update's delay-compensation fields (:func:`~riverflink.operators.delay_compensation.compensation`)."""
        kappa, directions = delay_compensation.compensation(
            self.model, self.curvature / max(1, self.since_sync), self.since_sync, self._stiffness(), self.moments)
        return {"kappa": kappa, "directions": directions}

    def _take_mid(self) -> None:
        """Keep the parameters half-way through the sync period (the curvature probe's point): the entries of
        the features learned so far, when the journals know them, else the whole tree."""
        keys = self._in_place_keys(set())
        if keys is not None:
            self.mid, self.mid_keys = models.adapter_for(self.model).get_at(self.model, keys), keys
        else:
            self.mid, self.mid_keys = models.get_params(self.model), None

    def _mid_at(self, keys: set, snapshot: dict) -> dict:
        """``mid`` restricted to ``keys`` (a superset of ``mid_keys``), from ``snapshot`` (restricted to them)."""
        out = numeric.copy_tree(snapshot)
        numeric.write_at(out, self.mid, self.mid_keys)
        return out

    def _write_snapshot(self, values: dict, keys: set) -> None:
        """Write ``values`` (restricted to ``keys``) into the snapshot in place, remembering what it held while a
        save point is open."""
        if getattr(self, "snapshot_undo", None) is not None:
            self.snapshot_undo.append((self.snapshot, keys, numeric.restrict(self.snapshot, keys)))
        numeric.write_at(self.snapshot, values, keys)

    def take_update(self, model_name: str, replica: ReplicaId) -> ReplicaUpdate:
        adapter = models.adapter_for(self.model)
        keys = self._in_place_keys(set()) if self.mid is None or getattr(self, "mid_keys", None) is not None \
            else None
        if keys is not None:  # the features learned since the snapshot: the same delta, in O(those)
            params = adapter.get_at(self.model, keys)
            before = numeric.restrict(self.snapshot, keys)
            delta = adapter.delta(self.model, params, before)
        else:
            params = models.get_params(self.model)
            before = self.snapshot
            delta = adapter.delta(self.model, params, self.snapshot, journaled=True)
        rho = shared = None
        if self.mid is not None:
            mid = self._mid_at(keys, before) if keys is not None else self.mid
            first = adapter.delta(self.model, mid, before, journaled=keys is None)
            second = adapter.delta(self.model, params, mid, journaled=keys is None)
            rho, shared = self.probe.observe(self.model, first, second)
        self.seq += 1
        update = ReplicaUpdate(
            model_name=model_name,
            replica=replica_id(replica),
            base_version=self.base_version,
            delta=delta,
            events=self.since_sync,
            sent_at=time.time(),
            seq=self.seq,
            loss=self.unsynced_score.loss(self.task),
            rho=rho,
            shared=shared,
            **self._compensation(),
        )
        self.mid, self.mid_keys = None, None
        self.curvature = 0.0
        self.in_flight.append((self.seq, delta, update.events))
        if keys is not None:
            self._write_snapshot(params, keys)
        else:
            self.snapshot, self.snapshot_owned = params, True
        journal.clear(self.model)  # the model is its snapshot again
        self.since_sync = 0
        self.first_unsynced_at = None
        self.unsynced_score = Score()
        return update

    def rebase(self, merged_params: dict | Callable[[], dict], version: int, acked: int | None | Sequence = None,
               refused: Sequence = (), slices: Sequence[int] = (), norm: bool = True,
               changed: set | None = None, merged_at: Callable[[set], dict | None] | None = None,
               known: Callable[[set], set] | None = None) -> int:
        """Adopt merged ``version`` (newer than ours), keeping every bit of learning it does not hold.

        ``acked`` is the last of this replica's update sequence numbers that
        ``version`` holds (``meta.acked``); ``None`` means unknown (then every
        in-flight update is taken as held: the pre-acknowledgement behaviour).
        ``refused``: sequence numbers the merger acknowledged without merging
        (``meta.refused_updates``: poisoned or undecodable on arrival); their
        learning stays in the model and goes out again with the next update,
        events included.  Returns how many updates are re-sent that way.

        A sharded model (``slices``: the slice version of each shard in the
        manifest of ``version``) is acknowledged shard by shard: ``acked`` and
        ``refused`` are then per shard, and an update is held, missing or
        re-sent piece by piece (:mod:`riverflink.models.sharding`).

        ``norm``: measure the merged model's norm (``base_norm``, the scale of a
        relative-divergence sync policy); without one it stays as it was.

        ``changed``: the features whose merged entries differ between the
        version this replica is based on and ``version`` (a reader's
        :meth:`~riverflink.operators.model_feed.ModelFeed.changed_between`), or
        ``None`` when not known.  Known, and with journals on every learning
        component, the rebase works in place on those features, the journal's
        and the in-flight updates' alone (what can differ from the model and
        snapshot held): the same parameters at O(what changed) instead of
        O(model).  ``merged_params`` may then be a callable (called only when
        the whole tree is needed), and ``merged_at(features)`` gives the merged
        parameters restricted to ``features`` (``None``: restrict the whole).

        ``known(features)``: a bounded reader's (:mod:`~riverflink.operators.tracked_features`) answer, which of
        ``features`` it holds as merged at ``version``; the rebase writes those alone (in place: a working
        set).  Every other feature keeps its entries, which are right unless the feature is unverified: those
        are left in :attr:`refresh` to pull again.
        """
        adapter = models.adapter_for(self.model)
        if getattr(self, "working", None) is not None:  # only the features it holds (the others are pulled)
            held = self.working.used.keys()
            changed = set(held) if changed is None else {f for f in held if f in changed}
            changed |= {f for f in (getattr(self, "stale_pulls", None) or ()) if f in held}
            changed |= {f for f in (getattr(self, "unverified", None) or ()) if f in held}
            self.stale_pulls = None
        shards = max(1, len(slices))
        acks = list(acked) if shards > 1 else [acked]
        refusals = [set(r) for r in refused] if shards > 1 else [set(refused)]
        whole = functools.cache(merged_params if callable(merged_params) else lambda: merged_params)
        whole_mid = self.mid is not None and getattr(self, "mid_keys", None) is None
        at = None if changed is None or whole_mid else self._in_place_keys(
            set(changed) | numeric.keys_of([d for _, d, _ in self.in_flight]))
        if known is not None:
            if at is None:
                raise ValueError("a bounded reader's replica rebases in place only (a working set)")
            at = known(at)
            if getattr(self, "unverified", None):
                self.unverified -= at
                self.refresh = {f for f in self.unverified if f in self.working.used}
        current = adapter.get_at(self.model, at) if at is not None else None
        if current is None:
            at = None
            merged_params = whole()
            unsent = adapter.delta(self.model, models.get_params(self.model), self.snapshot, journaled=True)
        else:
            base = numeric.restrict(self.snapshot, at)
            merged_params = (merged_at(at) if merged_at is not None else None) or numeric.restrict(whole(), at)
            unsent = adapter.delta(self.model, current, base)

        def held(seq: int, shard: int) -> bool:
            return acks[shard] is None or seq <= acks[shard]

        def part(delta: dict, owners: list[int]) -> dict | None:
            if len(owners) == shards:
                return delta
            return sharding.join(self.model, [sharding.split(self.model, delta, shards)[s] for s in owners]) \
                if owners else None

        missing, resend, resent_events = [], [], 0
        for seq, delta, n in self.in_flight:
            lacking = part(delta, [s for s in range(shards) if not held(seq, s)])
            if lacking is not None:
                missing.append(lacking)
            again = [s for s in range(shards) if acks[s] is not None and seq <= acks[s] and seq in refusals[s]]
            if again:
                resend.append(part(delta, again))
                resent_events += n if 0 in again else 0  # shard 0 keeps the counts
        self.in_flight = [u for u in self.in_flight if not all(held(u[0], s) for s in range(shards))]
        snapshot = adapter.apply(self.model, merged_params, missing, [1.0] * len(missing), _REPLAY) if missing \
            else merged_params
        params = adapter.apply(self.model, snapshot, [unsent] + resend, [1.0] * (1 + len(resend)), _REPLAY)
        for again in resend:  # learning the model now holds beyond its new snapshot, not learned by it
            journal.note(self.model, again)
        if resend:
            self.since_sync += resent_events
            self.first_unsynced_at = self.first_unsynced_at or time.time()
        if self.mid is not None:  # keep the probe's first half, moved onto the new base
            self._move_mid(adapter, snapshot, at)
        if at is not None:  # in place, on the features that can differ (the same values as below)
            numeric.check_finite(params)
            adapter.set_at(self.model, params, at)
            self._write_snapshot(snapshot, at)
        else:
            models.set_params(self.model, params)  # (its base is self.snapshot: no BaseRef copy of the model)
            # future deltas are measured from the merged point plus what is already in flight
            self.snapshot = snapshot
            self.snapshot_owned = snapshot is not merged_params
        self.base_version = version
        self.base_slices = tuple(slices)
        if norm:
            self.base_norm = learned_norm(self.model, whole())
        return len(resend)

    def take_pulled(self, entries: dict, features: set, acked: int | None, stale: bool = False) -> None:
        """Hold ``features`` at their merged entries in ``entries`` (a pull answer's tree: a feature absent
        there has its initial value), keeping every bit of this replica's own learning on them.

        ``acked``: the last of this replica's updates the entries hold (their shard's ``meta.acked``).  As a
        rebase does at those features alone: the snapshot becomes ``merged + (in-flight learning the entries
        lack)``, and the model and the probe's point move by as much, so what they learned beyond the snapshot
        (learned before the answer came, :class:`~riverflink.operators.working_set.WorkingSetSettings`) stays.
        The dense part (the intercept) is the rebase's alone.  ``stale``: the entries are older than the version
        this replica is based on; its next rebase rewrites these features from its merged version."""
        adapter, at = models.adapter_for(self.model), set(features)
        if getattr(self, "unverified", None):
            self.unverified -= at
        if getattr(self, "refresh", None):
            self.refresh -= at
        if stale:
            self.stale_pulls = (getattr(self, "stale_pulls", None) or set()) | at
        if not getattr(self, "snapshot_owned", False):
            self.snapshot, self.snapshot_owned = numeric.copy_tree(self.snapshot), True
        base = numeric.restrict(self.snapshot, at)
        merged = numeric.copy_tree(base)
        numeric.write_at(merged, entries, at, dense=False)
        missing = [numeric.restrict(d, at, dense=False) for seq, d, _ in self.in_flight if acked is None or seq > acked]
        snapshot = adapter.apply(self.model, merged, missing, [1.0] * len(missing), _REPLAY) if missing else merged
        shift = numeric.restrict(adapter.delta(self.model, snapshot, base), at, dense=False)
        current = adapter.get_at(self.model, at)
        moved = adapter.apply(self.model, current, [shift], [1.0], _REPLAY)
        numeric.check_finite(moved)
        numeric.write_at(current, moved, at, dense=False)
        adapter.set_at(self.model, current, at)
        if self.mid is not None and getattr(self, "mid_keys", None) is not None and self.mid_keys & at:
            self.mid = adapter.apply(self.model, self.mid, [shift], [1.0], _REPLAY)
        if getattr(self, "snapshot_undo", None) is not None:
            self.snapshot_undo.append((self.snapshot, at, numeric.restrict(self.snapshot, at)))
        numeric.write_at(self.snapshot, snapshot, at, dense=False)

    def evict(self, features: list) -> None:
        """Let ``features`` go: their entries leave the model and the snapshot (the caller guarantees that their
        learning is held by the merged model: none unsent, none in flight)."""
        if not features:
            return
        adapter, at = models.adapter_for(self.model), set(features)
        for pending in (getattr(self, "unverified", None), getattr(self, "refresh", None)):
            if pending:
                pending -= at
        if not getattr(self, "snapshot_owned", False):
            self.snapshot, self.snapshot_owned = numeric.copy_tree(self.snapshot), True
        adapter.set_at(self.model, adapter.get_at(self.model, ()), at)  # (empty maps: the entries at ``at`` go)
        numeric.write_at(self.snapshot, numeric.restrict(self.snapshot, (), dense=False), at, dense=False)

    def learning_features(self) -> set:
        """The features whose learning the merged model may not hold yet: unsent (the journal's) or in flight."""
        return (journal.keys(self.model) or set()) | numeric.keys_of([d for _, d, _ in self.in_flight])

    def _move_mid(self, adapter: Any, snapshot: dict, at: set | None) -> None:
        """Move the probe's point onto the new ``snapshot`` (restricted to ``at`` when not ``None``): it keeps
        what it learned beyond the old snapshot."""
        keys = getattr(self, "mid_keys", None)
        if keys is None:  # (a whole-tree point: the rebase is not in place, see rebase)
            self.mid = adapter.apply(self.model, snapshot, [adapter.delta(self.model, self.mid, self.snapshot,
                                                                           journaled=True)], [1.0], _REPLAY)
            return
        old = numeric.restrict(self.snapshot, keys)
        if at is None or keys <= at:
            new = numeric.restrict(snapshot, keys)
        else:  # (features the rebase leaves as they are: their snapshot does not move)
            new = numeric.copy_tree(old)
            numeric.write_at(new, numeric.restrict(snapshot, keys & at), keys & at)
        self.mid = adapter.apply(self.model, new, [adapter.delta(self.model, self.mid, old)], [1.0], _REPLAY)

    def _in_place_keys(self, more: set | None) -> set | None:
        """The features an in-place step visits (``more`` and the journal's), or ``None`` when it cannot work in
        place: ``more`` is not known, a learning component keeps no journal, or the model has no in-place
        form.  Takes the snapshot over (one copy) when it is still shared with the merged parameters."""
        if more is None:
            return None
        learned = journal.keys(self.model)
        if learned is None or not models.adapter_for(self.model).in_place(self.model):
            return None
        if not getattr(self, "snapshot_owned", False):
            self.snapshot, self.snapshot_owned = numeric.copy_tree(self.snapshot), True
        return more | learned
