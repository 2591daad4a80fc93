"""Sharded sparse models: the replica <-> merger loop with M merger shards against single-node River, on Clicks.

What runs: the training job's own loop classes in one process (``ReplicaSide``,
``MergerSide`` per shard, the readers' ``ModelFeed`` with slices, patches and
manifests, updates through the real codec), driven as ``bench/sync.py`` drives
them: K replicas, micro-batches of B events each, every merged record visible
one round later; the served model (the newest assembled one) predicts every
event before a replica learns it.  It is **not** the Flink job: there is one
reader here where the job has K replicas and a serving job each reading every
record, and no broker.

Baselines, same events, same order, same run:

* the project's O(active features) ``SparseLogisticRegression`` (FTRL),
  predict-then-learn: equal to River's ``LogisticRegression`` to roundoff
  (``tests/test_sparse_models.py``), so it stands in for River on the whole
  stream;
* River 0.23's own ``LogisticRegression`` with the same FTRL optimizer, timed on
  a prefix, and on windows of the stream where it learns in the stand-in's place
  on the model of that point (:func:`river_alone`): its cost per event grows
  with the model (hours at 1M events), so its CPU for the whole stream is
  estimated from those windows (:func:`river_023_seconds`);
* the peers a user would run instead, on that prefix read from the embedded
  broker (:mod:`bench.peer_learners`): a kafka-python consumer and a Quix
  Streams application, each with River 0.23 (events/s, CPU-µs per event of
  their process and the broker, accuracy).

Printed per M: served accuracy and log loss against River's, the distinct
features and parameters (entries of the per-feature maps: ``w``, ``z``, ``n``),
parameters per shard and the balance (max / mean), the largest record on the
models topic (whole slices and patches; a sharded slice over the merger's 900 KB limit goes out as pages,
as in the job; an unsharded model over it is merged but not published, and counted), update bytes per touched
parameter,
CPU-µs per event of the loop (learning, merging, publishing, reading) for the
first and the last tenth of the stream (the model is small, then large), and
against the baselines, and the bytes held at the end of the run (``objsize``: the
largest replica, the largest merger shard, the reader).

Then, for M=4 (or the last M run), the same loop with working sets (``--working-set``) of W = 10% of the model's
features (``--working-set-share``): the replicas' events go through ``on_records`` as JSON records, the merger
shards answer pulls, and the answers reach the replica within the round (a pull round trip shorter than a sync
period) or one round later (its waiting events learn a round late).  And one demo run of the real jobs with
``--working-set`` (``--job-events``; 0: none) for the pull round trips in milliseconds and the served accuracy
against the same demo without a bound.

Last line: ``sharded: M=<m> accuracy_delta=<D> largest_slice_kb=<S> shard_balance=<max/mean> bytes_per_key=<B>
speedup_vs_river=<X> clock_gap_p99=<G> replica_peak_mb=<R> unbounded_replica_mb=<U> working_set_delta=<W>
working_set_delta_late=<L> pull_p99_ms=<P> serving_p99_ratio=<S> reader_peak_mb=<B>`` for M=4 (or the last M run), with
``speedup_vs_river`` River 0.23's estimated CPU per event on the whole stream over the loop's,
``clock_gap_p99`` the 99th percentile of a replica's clock gap after its syncs (its syncs the merged model lacks
on some shard: with every record visible one round later, 1; ``tests/test_stale_synchronous.py`` runs a slow
shard), ``replica_peak_mb`` the largest replica's objects (``objsize``) at the stream's marks and end with working
sets, ``unbounded_replica_mb`` the same without (the model only grows, so the end is its peak), the working-set
accuracy deltas (points, against no bound) with answers within the round and one round later, and
``pull_p99_ms`` the job's pull round-trip p99, and ``serving_p99_ratio`` scatter/gather serving's p99 over assembled
serving's on the no-bound run's final model (``bench/sharded_serving.py``'s runs, ``--serving-seconds`` each, one
round; that bench prints the memory of each design), and ``reader_peak_mb`` the replicas' bounded reader's objects
at the marks and end with working sets (``ModelFeed.track``, as a trainer subtask's).

    python -m bench.sharded [--events 50000] [--shards 1,4,16] [--replicas 4] [--river-prefix 5000]
                            [--precision float16|compact|...]
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from dataclasses import dataclass, field

import objsize
import orjson
from river import linear_model

from riverflink import models
from riverflink.models import sharding
from riverflink.models.paging import paginate
from riverflink.models.spec import build
from riverflink.models.sync import SyncPolicy
from riverflink.models.update_codec import PRECISIONS
from riverflink.operators.frames import Record
from riverflink.operators.loop import LoopSettings, MergerSide, ReplicaSide
from riverflink.operators.messages import update_shard
from riverflink.operators.model_feed import FeedRules, ModelFeed
from riverflink.operators.tracked_features import held_by
from riverflink.operators.pulls import PULL_PARTITION
from riverflink.operators.slice_assembly import ManifestWriter
from riverflink.operators.working_set import WorkingSetSettings
from riverflink.pipelines.broker import EmbeddedBroker
from riverflink.pipelines.click_stream import click_events

from bench.peer_learners import PeerRun, kafka_python_peer, preload, quix_peer

SPEC = "LogisticRegression(ftrl=true)"
PATCHES = 15
#: the merger's limit (``MergerFunction.max_doc_bytes``): a larger record is merged but not published
MAX_RECORD = 900_000


@dataclass
class Scores:
    events: int = 0
    correct: int = 0
    log_loss: float = 0.0

    def add(self, proba: dict | None, y: bool) -> None:
        p = min(1 - 1e-15, max(1e-15, (proba or {}).get(True, 0.5)))
        self.events += 1
        self.correct += int((p >= 0.5) == bool(y))
        self.log_loss -= math.log(p if y else 1 - p)

    @property
    def accuracy(self) -> float:
        return self.correct / max(1, self.events)

    @property
    def mean_log_loss(self) -> float:
        return self.log_loss / max(1, self.events)


@dataclass
class Run:
    shards: int
    served: Scores = field(default_factory=Scores)
    #: CPU seconds over the first and the last ``window`` events, and over all
    cpu_first: float = 0.0
    cpu_last: float = 0.0
    #: (events so far, parameters the merger shards hold then, CPU-µs per event since the previous mark), at
    #: 1/64, 1/32, ..., 1/2 and all of the stream: the cost per event as the model grows
    growth: list = field(default_factory=list)
    window: int = 0
    last_window: int = 0
    cpu_total: float = 0.0
    features: int = 0
    per_shard: list = field(default_factory=list)
    replica_params: int = 0
    largest_record: int = 0
    #: the largest slice version (whole or patch) before paging, and the pages published
    largest_slice: int = 0
    pages: int = 0
    update_bytes: int = 0
    touched: int = 0
    patches: int = 0
    wholes: int = 0
    unusable: int = 0
    #: records over MAX_RECORD (the job merges them but cannot publish them)
    oversized: int = 0
    #: bytes held at the end (``objsize``): a replica (its largest), a merger shard (its largest), the reader
    replica_bytes: int = 0
    merger_bytes: int = 0
    reader_bytes: int = 0
    #: each replica's clock gap right after each of its syncs (its syncs the merged model lacks on some shard)
    gaps: list = field(default_factory=list)
    #: working sets: the largest replica's objects at the marks and the end, each batch's pull stats, the working
    #: sets at the end and the events still waiting for a pull there
    replica_peak: int = 0
    #: ... and the replicas' bounded reader (``ModelFeed.track``, as the trainer's): its objects at the marks and
    #: the end, and the most features it held
    trainer_reader_peak: int = 0
    trainer_reader_features: int = 0
    #: ... at each mark: (events so far, features it held, bytes)
    trainer_reader_marks: list = field(default_factory=list)
    #: the merged model's parameters at the end (the shards' slices joined)
    final_params: dict = field(default_factory=dict)
    pulls: list = field(default_factory=list)
    working_sets: list = field(default_factory=list)
    waiting_at_end: int = 0

    def pull_total(self, name: str) -> int:
        return sum(getattr(p, name) for p in self.pulls if p is not None)

    def gap_p99(self) -> int:
        return sorted(self.gaps)[int(0.99 * (len(self.gaps) - 1))] if self.gaps else 0


def river_alone(events: list, probes: tuple[int, ...] = ()) -> tuple[Scores, float, list[tuple[int, int, float]]]:
    """The O(active) stand-in for River, predict-then-learn: (scores, CPU seconds, River 0.23's cost curve).

    At each index in ``probes`` River 0.23's own ``LogisticRegression`` takes over the same model object (same
    attributes, same maths: the stand-in is a subclass, tested equal to roundoff) for a window of events, timed
    alone: at least :data:`PROBE_MIN` events and until :data:`PROBE_CPU_S` of CPU or :data:`PROBE_MAX` events;
    then the stand-in goes on.  The curve holds ``(index, weights then, River 0.23's CPU-µs per event)``; the
    stand-in's CPU leaves the windows out."""
    model, scores, curve = build(SPEC), Scores(), []
    fast = type(model)
    cpu, start, i = 0.0, time.process_time(), 0
    for at in sorted(set(probes) | {len(events)}):
        at = max(at, i)  # (a window may reach past the next probe: that one starts where it ended)
        for x, y in events[i: at]:
            scores.add(model.predict_proba_one(x), y)
            model.learn_one(x, y)
        cpu += time.process_time() - start
        i = at
        if at >= len(events):
            break
        weights, model.__class__ = len(model._weights), linear_model.LogisticRegression
        begin = time.process_time()
        while i < len(events) and (i - at < PROBE_MIN or
                                   (i - at < PROBE_MAX and time.process_time() - begin < PROBE_CPU_S)):
            x, y = events[i]
            scores.add(model.predict_proba_one(x), y)
            model.learn_one(x, y)
            i += 1
        curve.append((at, weights, 1e6 * (time.process_time() - begin) / (i - at)))
        model.__class__ = fast
        start = time.process_time()
    return scores, cpu, curve


#: River 0.23's timed windows (:func:`river_alone`): events at least, at most, and the CPU seconds that end one
PROBE_MIN, PROBE_MAX, PROBE_CPU_S = 20, 2_000, 2.0


def river_023_seconds(curve: list[tuple[int, int, float]], events: int) -> float:
    """River 0.23's CPU seconds for ``events`` events, estimated from its cost curve (:func:`river_alone`):
    linear between the probes (its update is O(all weights), and the weights grow between them), flat after
    the last.

    >>> river_023_seconds([(0, 0, 100.0), (1000, 50, 300.0)], 2000)
    0.5
    """
    total = 0.0
    for (a, _, ca), (b, _, cb) in zip(curve, curve[1:]):
        total += (b - a) * (ca + cb) / 2
    at, _, last = curve[-1]
    return 1e-6 * (total + (events - at) * last)


def river_023_model() -> linear_model.LogisticRegression:
    """River 0.23's own LogisticRegression with the optimizer and intercept rate of :data:`SPEC`."""
    ours = build(SPEC)
    return linear_model.LogisticRegression(optimizer=ours.optimizer.clone(), intercept_lr=ours.intercept_lr)


def river_023(events: list) -> float:
    """River 0.23's own LogisticRegression (same FTRL optimizer) on ``events``: CPU-µs per event."""
    model = river_023_model()
    start = time.process_time()
    for x, y in events:
        model.predict_proba_one(x)
        model.learn_one(x, y)
    return 1e6 * (time.process_time() - start) / len(events)


def peers(events: list) -> list[tuple[PeerRun, Scores]]:
    """The peers a user would run instead (:mod:`bench.peer_learners`), each with River 0.23's own
    LogisticRegression predict-then-learn on ``events``, read from a topic of the embedded broker (127.0.0.1)."""
    out = []
    with EmbeddedBroker() as broker:
        preload(broker.bootstrap, "clicks", events)
        for peer in (kafka_python_peer, quix_peer):
            model, scores = river_023_model(), Scores()

            def step(x: dict, y: bool, model=model, scores=scores) -> None:
                scores.add(model.predict_proba_one(x), y)
                model.learn_one(x, y)

            run = peer(broker.bootstrap, "clicks", len(events), step, broker_pid=broker.process.pid)
            if run is not None:
                out.append((run, scores))
            else:
                print("(Quix Streams is not installed: pip install -e '.[bench]')")
    return out


def loop(events: list, shards: int, replicas: int, batch: int, precision: str = "float16",
         working: WorkingSetSettings | None = None, pull_rounds: int = 1) -> Run:
    """One run of the loop.  ``working``: the replicas hold working sets and pull (their events then go through
    ``on_records`` as JSON records, as in the job); a pull answer reaches its replica ``pull_rounds`` later: 1,
    at its next batch, with the merged versions; 0, within the round, right after the batch that asked (a pull
    round trip shorter than a sync period)."""
    settings = LoopSettings("bench", shards=shards, epoch=1 if shards > 1 else 0, patches=PATCHES if shards > 1 else 0,
                            precision=precision, working_set=working,
                            sync=SyncPolicy(every_events=batch, every_seconds=None))
    side, merger_side = ReplicaSide(settings, build(SPEC)), MergerSide(settings, build(SPEC))
    reps = [side.fresh() for _ in range(replicas)]
    mergers = [merger_side.fresh(s) for s in range(shards)]
    # (in place, as the readers of the replicas' trainer and of the serving job assemble)
    feed, writer = ModelFeed(FeedRules("bench", in_place=True)), ManifestWriter("bench", epoch=1, shards=shards)
    run, current, served_model = Run(shards), None, None
    # (working sets: the replicas rebase from a bounded reader, as the trainer's; the served model stays whole)
    bounded = ModelFeed(FeedRules("bench", in_place=True)) if working is not None and shards > 1 else None
    if bounded is not None:
        bounded.track(lambda: held_by(reps))
        side.gate.bounded_reader = True
    trainer_current, trainer_model = None, None
    in_transit: list = []
    clock = 0.0
    per_round = replicas * batch
    tenth = max(per_round, len(events) // 10 // per_round * per_round)
    last_begin = (len(events) - tenth) // per_round * per_round
    last_start = None
    marks = sorted({len(events) // 2 ** k // per_round * per_round for k in range(1, 7)} - {0})
    mark_at = (0, 0.0)
    answers: dict = {k: [] for k in range(replicas)}  # (working sets) pull answers reaching each replica next round
    pending_answers: dict = {k: [] for k in range(replicas)}
    records = [Record(0, i, 0, None, orjson.dumps({"x": x, "y": y})) for i, (x, y) in enumerate(events)] \
        if working is not None else None

    def publish(doc: dict | None) -> None:
        if doc is None:
            return
        value = models.dumps(doc)
        run.largest_slice = max(run.largest_slice, len(value))
        values = [value]
        if shards > 1 and len(value) > MAX_RECORD:  # as the job's merger does: pages of the same version
            values = [models.dumps(page) for page in paginate(doc, len(value), MAX_RECORD)]
            run.pages += len(values)
        run.largest_record = max(run.largest_record, *map(len, values))
        if max(map(len, values)) > MAX_RECORD:
            run.oversized += 1
            return
        in_transit.extend(values)
        if shards > 1:
            if doc["meta"].get("patch_of") is not None:
                run.patches += 1
            else:
                run.wholes += 1
            manifest = writer.record_for(doc, clock)
            if manifest is not None:
                in_transit.append(manifest)

    start = time.process_time()
    for begin in range(0, len(events), per_round):
        if begin in marks or begin == 0:
            mark_at = _mark(run, mergers, side.template, begin, mark_at, time.process_time() - start)
        if begin == tenth:
            run.cpu_first = time.process_time() - start
        if begin == last_begin:
            last_start = time.process_time()
        arrived, in_transit[:] = list(in_transit), []
        for value in arrived:  # what was published last round is visible now
            entry, model, problem = feed.offer(value, current, now=1e9)
            assert problem is None, problem
            if entry is not None:  # (as the job: the replicas rebase on the newest one at their next batch)
                current, served_model = entry, model
            if bounded is not None:
                entry, model, problem = bounded.offer(value, trainer_current, now=1e9)
                assert problem is None, problem
                if entry is not None:
                    trainer_current, trainer_model = entry, model
                    run.trainer_reader_features = max(run.trainer_reader_features, bounded.tracking.held())
        if bounded is not None:
            if trainer_current is not None and any(r.base_version < trainer_current.version for r in reps):
                m_, meta_ = trainer_model, trainer_current.meta
                for k, r in enumerate(reps):
                    side.on_model(r, k, meta_, lambda: models.get_params(m_),
                                  changed=lambda base: bounded.changed_between(base, meta_.version),
                                  params_at=lambda keys: models.adapter_for(m_).get_at(m_, keys),
                                  known=lambda features: bounded.known_at(features, meta_))
        elif current is not None and any(r.base_version < current.version for r in reps):
            whole = functools.cache(lambda m=served_model: models.get_params(m))  # (only if a rebase needs it)
            for k, r in enumerate(reps):
                side.on_model(r, k, current.meta, whole,
                              changed=lambda base: feed.changed_between(base, current.version),
                              params_at=lambda keys, m=served_model: models.adapter_for(m).get_at(m, keys))
        chunk = events[begin: begin + per_round]
        for k in answers:
            answers[k], pending_answers[k] = pending_answers[k], []
        for k, r in enumerate(reps):
            part = chunk[k::replicas]
            if not part and not answers[k]:
                continue
            clock += 0.01
            for x, y in part:
                run.served.add(served_model.predict_proba_one(x) if served_model is not None else None, y)
            if working is None:
                out = side.on_events(r, k, [x for x, _ in part], [y for _, y in part])
            else:
                out = side.on_records(r, k, records[begin: begin + per_round][k::replicas] + answers[k])
                run.pulls.append(out.pulls)
                for data in out.pull_requests:
                    replica, doc = merger_side.on_pull(mergers[update_shard(data)], data)
                    pending_answers[int(replica)].append(Record(PULL_PARTITION, 0, 0, None, models.dumps(doc)))
                if pull_rounds == 0 and pending_answers[k]:  # (answered within the round: taken at once)
                    more = side.on_records(r, k, pending_answers[k])
                    pending_answers[k] = []
                    out.updates += more.updates
                if begin in marks:
                    run.replica_peak = max(run.replica_peak, objsize.get_deep_size(r))
            if out.updates:  # the update just taken, whole (its pieces hold these entries between them)
                run.touched += sharding.entries(side.template, r.in_flight[-1][1])
                run.gaps.append(r.clock_gap)
            for data in out.updates:
                run.update_bytes += len(data)
                publish(merger_side.on_update(mergers[update_shard(data)], data, now=clock).document)
        if bounded is not None and begin in marks:
            held = objsize.get_deep_size(bounded)
            run.trainer_reader_peak = max(run.trainer_reader_peak, held)
            run.trainer_reader_marks.append((begin, bounded.tracking.held(), held))
        for m in mergers:
            publish(merger_side.on_timer(m, now=clock).document)
        waiting = writer.flush_record(clock) if shards > 1 else None  # the manifest publisher's timer
        if waiting is not None:
            in_transit.append(waiting)
    end = time.process_time()
    _mark(run, mergers, side.template, len(events), mark_at, end - start)
    run.cpu_total = end - start
    run.cpu_last = end - (last_start if last_start is not None else start)
    run.window, run.last_window = tenth, len(events) - last_begin
    run.per_shard = [sharding.entries(side.template, m.params) for m in mergers]
    joined = sharding.join(build(SPEC), [m.params for m in mergers])
    run.final_params = joined
    run.features = len(set(joined.get("opt_z", {})) | set(joined.get("weights", {})))
    run.replica_params = sharding.entries(side.template, models.get_params(reps[0].model))
    run.unusable = feed.unusable_patches
    run.replica_bytes = max(objsize.get_deep_size(r) for r in reps)
    run.replica_peak = max(run.replica_peak, run.replica_bytes)
    run.working_sets = [len(r.working) for r in reps] if working is not None else []
    run.waiting_at_end = sum(len(r.waiting) for r in reps) if working is not None else 0
    run.merger_bytes = max(objsize.get_deep_size(m) for m in mergers)
    run.reader_bytes = objsize.get_deep_size(feed)
    if bounded is not None:
        run.trainer_reader_peak = max(run.trainer_reader_peak, objsize.get_deep_size(bounded))
    return run


def _mark(run: Run, mergers: list, template, events: int, previous: tuple, cpu: float) -> tuple:
    """Record a point of :attr:`Run.growth` (none at the start); the new previous mark."""
    if events > previous[0]:
        params = sum(sharding.entries(template, m.params) for m in mergers)
        run.growth.append((events, params, 1e6 * (cpu - previous[1]) / (events - previous[0])))
    return events, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="the issue asks for 1M (hours today: NOTES.md)")
    parser.add_argument("--shards", default="1,4,16")
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--batch", type=int, default=250, help="events per replica micro-batch (and sync)")
    parser.add_argument("--river-prefix", type=int, default=5_000, help="events River 0.23 itself is timed on")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--precision", default="float16", choices=PRECISIONS,
                        help="of the replicas' updates (train --update-precision; compact: float32 statistics, "
                             "compressed keys)")
    parser.add_argument("--working-set-share", type=float, default=0.1,
                        help="W of the working-set run, as a share of the model's features")
    parser.add_argument("--serving-seconds", type=float, default=10.0,
                        help="seconds of each serving run (assembled, scatter/gather) on the final model (0: none)")
    parser.add_argument("--job-events", type=int, default=3000,
                        help="events of the demo job that measures pull round trips (0: none)")
    args = parser.parse_args()
    events = list(click_events(args.events, seed=args.seed))
    per_round = args.replicas * args.batch
    probes = {0, max(0, len(events) - PROBE_MAX)} | {len(events) // 2 ** k // per_round * per_round for k in range(1, 7)}
    river, river_cpu, curve = river_alone(events, tuple(probes))
    river_us = 1e6 * river_cpu / len(events)
    river023_all_us = 1e6 * river_023_seconds(curve, len(events)) / len(events)
    prefix = events[: args.river_prefix]
    river023_us = river_023(prefix)
    prefix_ours_us = 1e6 * river_alone(prefix)[1] / len(prefix)
    print(f"Clicks seed {args.seed}: {len(events):,} events, K={args.replicas} replicas, batches of {args.batch}, "
          f"{PATCHES} patches between whole slices, updates at precision {args.precision}")
    print(f"River (O(active) stand-in, all events): accuracy {river.accuracy:.4f}  log loss {river.mean_log_loss:.4f}"
          f"  {river_us:.0f} CPU-µs/event")
    print(f"River 0.23 itself, first {len(prefix):,} events: {river023_us:.0f} CPU-µs/event "
          f"(the stand-in on the same prefix: {prefix_ours_us:.0f})")
    print(f"River 0.23 itself on the whole stream, estimated: {river023_all_us:,.0f} CPU-µs/event, from windows it "
          "learned in the stand-in's place (events: weights then, µs per event): "
          + ", ".join(f"{e:,}: {w:,} {u:,.0f}" for e, w, u in curve))
    for run, scores in peers(prefix):
        print(f"{run.name} (River 0.23), the same prefix from the embedded broker: {run.events_per_s:,.0f} events/s, "
              f"{run.cpu_us:.0f} CPU-µs/event (its process {1e6 * run.cpu_s / run.events:.0f}, the broker "
              f"{1e6 * run.broker_cpu_s / run.events:.0f}), accuracy {scores.accuracy:.4f}")
    print(f"{'M':>3} {'accuracy':>9} {'Δ pts':>6} {'log loss':>9} {'features':>9} {'params/shard (max/mean)':>24} "
          f"{'largest KB':>10} {'B/param':>8} {'µs first':>9} {'µs last':>8} {'µs all':>7} {'patches':>8}")
    runs = {}
    for m in [int(s) for s in args.shards.split(",")]:
        r = loop(events, m, args.replicas, args.batch, args.precision)
        balance = max(r.per_shard) / (sum(r.per_shard) / len(r.per_shard))
        us = 1e6 * r.cpu_total / len(events)
        print(f"{m:>3} {r.served.accuracy:>9.4f} {100 * (r.served.accuracy - river.accuracy):>+6.2f} "
              f"{r.served.mean_log_loss:>9.4f} {r.features:>9,} {max(r.per_shard):>13,} ({balance:.2f})"
              f"{r.largest_record / 1024:>14.0f} {r.update_bytes / max(1, r.touched):>8.1f} "
              f"{1e6 * r.cpu_first / r.window:>9.0f} {1e6 * r.cpu_last / r.last_window:>8.0f} {us:>7.0f} "
              f"{r.patches:>4}/{r.wholes:<3}")
        if r.unusable or r.oversized or r.pages:
            print(f"    (largest slice version {r.largest_slice / 1024:.0f} KB: {r.pages} pages published; "
                  f"{r.oversized} records over the job's {MAX_RECORD:,}-byte limit, not published; "
                  f"{r.unusable} patches the reader could not apply)")
        print("    CPU-µs per event as the model grows (events so far: parameters then, µs per event since the last "
              "point): " + ", ".join(f"{e:,}: {p:,} {u:.0f}" for e, p, u in r.growth))
        print(f"    held at the end: a replica {r.replica_bytes / 2**20:.1f} MiB, a merger shard "
              f"{r.merger_bytes / 2**20:.1f} MiB (its largest), the reader {r.reader_bytes / 2**20:.1f} MiB")
        runs[m] = (m, r, balance, us)
    m, r, balance, us = runs.get(4) or runs[m]
    print(f"(replica holds {r.replica_params:,} parameters; CPU per event of the loop is one process doing every "
          "replica's, merger's and one reader's work)")
    capacity = max(1, int(args.working_set_share * r.features))
    within = loop(events, m, args.replicas, args.batch, args.precision, WorkingSetSettings(capacity=capacity), 0)
    print(f"M={m} with working sets of W={capacity:,} features ({100 * args.working_set_share:.0f}% of the model's "
          f"{r.features:,}), pull answers within the round: accuracy {within.served.accuracy:.4f} "
          f"({100 * (within.served.accuracy - r.served.accuracy):+.2f} points against no bound)")
    w = loop(events, m, args.replicas, args.batch, args.precision, WorkingSetSettings(capacity=capacity))
    print(f"M={m} with working sets of W={capacity:,} features, pull answers one round later (the events that "
          f"waited learn a round late): accuracy {w.served.accuracy:.4f} "
          f"({100 * (w.served.accuracy - r.served.accuracy):+.2f} points against no bound), a replica's peak "
          f"{w.replica_peak / 2**20:.1f} MiB against {r.replica_bytes / 2**20:.1f} MiB with no bound; working sets "
          f"at the end {min(w.working_sets):,}-{max(w.working_sets):,} features (W plus what their unsent and "
          f"in-flight learning touches); pulls {w.pull_total('sent'):,} ({w.pull_total('sent') / len(events):.2f} per "
          f"event), events that waited {w.pull_total('waited'):,}, learned without a pull "
          f"{w.pull_total('unpulled'):,}, features evicted {w.pull_total('evicted'):,}; still waiting at the end "
          f"{w.waiting_at_end}")
    if w.trainer_reader_peak:
        print(f"    the replicas' bounded reader (the trainer subtask's, keeping what its replicas hold or ask for): "
              f"peak {w.trainer_reader_peak / 2**20:.1f} MiB and {w.trainer_reader_features:,} features, against "
              f"{r.reader_bytes / 2**20:.1f} MiB for the whole reader with no bound; features pulled again "
              f"{w.pull_total('refreshed'):,}; at the marks (events: features, MiB): "
              + ", ".join(f"{e:,}: {n:,} {b / 2**20:.1f}" for e, n, b in w.trainer_reader_marks))
    print("    CPU-µs per event with working sets as the model grows (the loop's, events JSON-parsed as in the job; "
          "events so far: parameters then, µs per event since the last point): "
          + ", ".join(f"{e:,}: {p:,} {u:.0f}" for e, p, u in w.growth))
    job = None
    if args.job_events:
        from riverflink.pipelines.sources import dataset_events

        job_features = len({f for x, _ in dataset_events("Clicks", args.job_events) for f in x})
        job = job_pulls(args.job_events, max(1, int(args.working_set_share * job_features)), m)
        print(f"the jobs (demo, {args.job_events:,} Clicks events at 2,000/s, M={m}), with --working-set "
              f"{job['working_set']:,}: {job['summary']}")
        print(f"    and without: {job_pulls(args.job_events, None, m)['summary']}")
    serving = None
    if args.serving_seconds and m > 1:
        from bench.sharded_serving import compare

        print(f"serving the M={m} model at the end of the no-bound run, assembled against scatter/gather "
              f"(serve --shards {m}), {args.serving_seconds:.0f} s each at 300 requests/s:")
        serving = compare(models.set_params(build(SPEC), r.final_params), len(events), m,
                          seconds=args.serving_seconds, rounds=1)
    serving_ratio = f"{serving['p99_ratio']:.2f}" if serving else "n/a"
    print(f"sharded: M={m} accuracy_delta={100 * (r.served.accuracy - river.accuracy):+.2f} "
          f"largest_slice_kb={r.largest_record / 1024:.0f} shard_balance={balance:.2f} "
          f"bytes_per_key={r.update_bytes / max(1, r.touched):.1f} speedup_vs_river={river023_all_us / us:.2f} "
          f"clock_gap_p99={r.gap_p99()} replica_peak_mb={w.replica_peak / 2**20:.1f} "
          f"unbounded_replica_mb={r.replica_bytes / 2**20:.1f} "
          f"working_set_delta={100 * (within.served.accuracy - r.served.accuracy):+.2f} "
          f"working_set_delta_late={100 * (w.served.accuracy - r.served.accuracy):+.2f} "
          f"pull_p99_ms={job['pull_p99_ms'] if job else 'n/a'} serving_p99_ratio={serving_ratio} "
          f"reader_peak_mb={w.trainer_reader_peak / 2**20:.1f}")


def job_pulls(events: int, working_set: int | None, shards: int) -> dict:
    """One demo run of the real jobs (embedded broker, Flink mini-cluster) with ``--working-set``: its summary
    line and pull round-trip p99 (ms, from the replicas' metrics records)."""
    from riverflink.pipelines import demo

    with EmbeddedBroker() as broker:
        cfg = demo.DemoConfig(bootstrap_servers=broker.bootstrap, dataset="Clicks", model_spec=SPEC, events=events,
                              rate=2000, replicas=4, shards=shards, working_set=working_set, model_name="pulls",
                              run_id=f"pulls-{int(time.time())}", timeout=600, show=0)
        result = demo.run(cfg, out=lambda *_: None)
    # (a request the serving job met before it had assembled a first model scores 0 in served_accuracy: how many
    # did depends on the machine's load, so the accuracy is also given over the requests answered with a model)
    answered = result.served_accuracy * result.requests / max(1, result.answered)
    return {"summary": f"{result.summary().removeprefix('summary: ')} answered={result.answered}/{result.requests} "
                       f"accuracy_when_answered={answered:.4f}",
            "working_set": working_set, "pull_p99_ms": round(demo.quantile(result.pull_rtt_ms, 0.99))}


if __name__ == "__main__":
    main()
