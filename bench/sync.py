"""Learning quality of the replica loop, with the real loop's timing, against single-node River.

A pure-Python run of the training job's own loop (:mod:`riverflink.operators.loop`:
``ReplicaSide`` and ``MergerSide``, the classes the Flink functions are shells
over), with the job's messages: updates encoded to bytes by the real codec
(float16 learned leaves by default), documents serialized and validated by
``model_feed.accept`` as the replicas and the serving job do.  Driven the way
the job drives it:

* events go round-robin to K replicas, in micro-batches of B events per replica;
* each replica learns a batch (``ReplicaSide.on_events``: learn, check its
  sync policy, take updates); updates go to the merger at once
  (``MergerSide.on_update``) and are merged per its trigger (default: on
  arrival), and whatever waits at the end of a round is merged (its timer);
* a merged document becomes visible to the replicas and to serving ``delay``
  batch rounds later (default 1: one micro-batch, as through Kafka);
* the served model (the latest visible document, as ``accept`` rebuilt it)
  predicts every event before any replica learns it.

Single-node River (predict-then-learn one event at a time, same stream, same
order) is the baseline.  Each stream's heading also gives River *served with the
loop's lag* (:func:`lag_floor`): on a drifting stream, what any merge loses to the
lag alone.  Printed per setting: served metric minus River's,
overall and after ``--warmup`` events; the replicas' own progressive metric;
updates and update bytes (binary codec) and the reduction in bytes against
JSON updates (float64) at sync every 10 events, sent mid-batch as the first slice did.  A sync policy
is checked once per micro-batch (syncing faster cannot reach the replicas sooner), so
"every 10" rows behave as "every batch".  Nothing is asserted.

Last line: ``sync: worst_class_gap=G worst_reg_mae_ratio=M reduction=X diverged=N``, where G
(points below River) and M (MAE ratio) are the worst after warm-up for the default configuration
at K=4, X the smallest byte reduction of that configuration, and N the settings of the whole grid
whose served MAE after warm-up exceeds 2x River's.

    python -m bench.sync [--quick] [--streams Phishing,Friedman] [--k 2,4,8]
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson
from river import datasets
from river.datasets import synth

from riverflink import models
from riverflink.models import sharding
from riverflink.models.api import replica_lr_scale
from riverflink.models.policies import MergePolicy
from riverflink.models.spec import build as build_model
from riverflink.models.sync import SyncPolicy
from riverflink.operators.messages import decode_update, update_shard
from riverflink.operators.loop import LoopSettings, MergerSide, ReplicaSide
from riverflink.operators.merge_state import MergeTrigger
from riverflink.operators.model_feed import FeedRules, ModelFeed
from riverflink.operators.scoring import Score, predict, river_baseline
from riverflink.operators.slice_assembly import ManifestWriter

CLASSIFIER = "StandardScaler|LogisticRegression"
REGRESSOR = "StandardScaler|LinearRegression"
MULTICLASS = "StandardScaler|SoftmaxRegression"


def _repeat(base: list, n: int, seed: int = 7) -> list:
    rng, out = random.Random(seed), []
    while len(out) < n:
        chunk = base[:]
        rng.shuffle(chunk)
        out += chunk
    return out[:n]


def stream(name: str, n: int | None = None) -> tuple[str, list]:
    """``(model spec, [(x, y), ...])`` for a named stream; feature names are strings, as on the wire."""
    spec, events = _stream(name, n)
    return spec, [({str(k): v for k, v in x.items()}, y) for x, y in events]


def _stream(name: str, n: int | None = None) -> tuple[str, list]:
    if name == "Phishing":
        return CLASSIFIER, _repeat([(dict(x), y) for x, y in datasets.Phishing()], n or 20_000)
    if name == "Hyperplane":
        return CLASSIFIER, [(x, y) for x, y in synth.Hyperplane(seed=42, n_features=10).take(n or 100_000)]
    if name == "SEA":  # concept switches at 25%, 50%, 75%
        n = n or 100_000
        out = []
        for i, variant in enumerate((0, 1, 2, 3)):
            out += [(x, y) for x, y in synth.SEA(variant=variant, seed=i).take(n // 4)]
        return CLASSIFIER, out
    if name == "ImageSegments":  # 7 classes, 18 correlated features
        return MULTICLASS, _repeat([(dict(x), y) for x, y in datasets.ImageSegments()], n or 20_000)
    if name == "RBFDrift":  # 4 classes whose centroids move all the time
        return MULTICLASS, list(synth.RandomRBFDrift(seed_model=7, seed_sample=8, n_classes=4, n_features=10,
                                                     change_speed=0.0005, n_drift_centroids=25).take(n or 50_000))
    if name == "Waveform":  # 3 classes, 21 noisy features (no drift)
        return MULTICLASS, [(x, y) for x, y in synth.Waveform(seed=42, has_noise=True).take(n or 30_000)]
    if name == "LEDSwitch":  # 10 digits on 24 noisy segments; which segments matter switches at 25%, 50%, 75%
        n = n or 40_000
        out = []
        for i in range(4):
            out += [(x, y) for x, y in synth.LEDDrift(seed=i, noise_percentage=0.1, irrelevant_features=True,
                                                       n_drift_features=7).take(n // 4)]
        return MULTICLASS, out
    if name == "TrumpApproval":
        return REGRESSOR, _repeat([(dict(x), y) for x, y in datasets.TrumpApproval()], n or 20_000)
    if name == "Friedman":
        return REGRESSOR, [(x, y) for x, y in synth.Friedman(seed=42).take(n or 50_000)]
    raise ValueError(f"unknown stream {name!r}")


@dataclass
class Setting:
    replicas: int = 4
    batch: int = 100
    delay: int = 1
    mode: str = "exact"
    sync: SyncPolicy = field(default_factory=lambda: SyncPolicy(every_events=100, every_seconds=None))
    policy: str = "delta"
    trigger: MergeTrigger = field(default_factory=MergeTrigger)
    precision: str = "float16"
    #: False: sync mid-batch as the first slice did (only for the "every 10 events" byte baseline)
    coalesce: bool = True
    #: merger shards (``--shards``), and patches between whole slices (``LoopSettings.patches``)
    shards: int = 1
    patches: int = 0

    def label(self) -> str:
        s = self.sync
        sync = f"every {s.every_events}" if s.divergence is None else f"rel {s.divergence:g} (max {s.every_events})"
        if s.on_drift:
            sync += " +drift"
        return f"K={self.replicas} {self.mode:5} {sync:22} {self.policy:14} q={self.trigger.quorum}"


@dataclass
class Outcome:
    served: Score
    served_late: Score
    river: Score
    river_late: Score
    replicas: Score
    updates: int
    update_bytes: int
    json_bytes: int
    versions: int
    task: str
    #: the last merged model (every event learned once), as the model feed rebuilt it
    final: Any = None

    def gap(self, late: bool) -> float:
        """Classifiers: served accuracy minus River's, in points.  Regressors: served MAE / River's MAE."""
        s, r = (self.served_late, self.river_late) if late else (self.served, self.river)
        if self.task == "regression":
            return (s.abs_error / s.events) / (r.abs_error / r.events) if r.abs_error else math.inf
        return 100 * (s.correct / s.events - r.correct / r.events)

    def diverged(self) -> bool:
        """The issue's bar: served MAE above 2x River's after warm-up (regression)."""
        return self.task == "regression" and not self.gap(True) <= 2.0

    def exploded(self) -> bool:
        """Numerically unstable: served MAE above 100x River's."""
        return self.task == "regression" and not self.gap(True) <= 100.0


@dataclass
class _Version:
    """A merged version as every reader sees it: the assembled model and how a replica rebases onto it."""

    model: Any
    rebase: Callable[[ReplicaSide, Any, int], None]


def simulate(spec: str, events: list, s: Setting, warmup: int, baseline: tuple[Score, Score],
             observe: Callable[[int, Any], None] | None = None) -> Outcome:
    """Drive the job's loop (``ReplicaSide``/``MergerSide``) as the module says; with ``s.shards`` > 1, one
    merger per shard, slice documents (whole or patches) and manifests assembled by the readers' ``ModelFeed``.
    ``observe(events, model)``: called with each merged version (one shard) as published, after the round's
    events."""
    settings = LoopSettings("sim", mode=s.mode, sync=s.sync, precision=s.precision,
                            policy=MergePolicy(s.policy, clip=math.inf), trigger=s.trigger,
                            lr_scale=replica_lr_scale(build_model(spec), s.replicas, s.policy),
                            shards=s.shards, epoch=1 if s.shards > 1 else 0, patches=s.patches)
    replica_side, merger_side = ReplicaSide(settings, build_model(spec)), MergerSide(settings, build_model(spec))
    replicas = [replica_side.fresh() for _ in range(s.replicas)]
    mergers = [merger_side.fresh(shard) for shard in range(s.shards)]
    rules = FeedRules("sim")
    task = replicas[0].task
    served, served_late, own = Score(), Score(), Score()
    visible: _Version | None = None  # the newest version replicas and serving see
    in_transit: list = []  # (visible from round, a record of the models topic)
    updates = update_bytes = json_bytes = versions = 0
    per_round = s.replicas * s.batch
    clock = 0.0
    final = None
    writer = ManifestWriter("sim", epoch=1, shards=s.shards)
    feed = ModelFeed(rules)  # what every reader runs: whole documents, or slices (and patches) and manifests
    current = None  # the feed's newest entry

    def publish(doc: dict | None, rnd: int) -> None:
        nonlocal versions, final
        if doc is None:
            return
        in_transit.append((rnd + s.delay, models.dumps(doc)))
        if s.shards == 1:
            versions += 1
            final = models.from_wire(doc)
            if observe is not None:
                observe(min(len(events), (rnd + 1) * per_round), final)
            return
        manifest = writer.record_for(doc, clock)
        if manifest is not None:
            in_transit.append((rnd + s.delay, manifest))
            versions += 1
            model = build_model(spec)  # what the mergers hold: the slices just named
            final = models.set_params(model, sharding.join(model, [m.params for m in mergers]))

    def arrive(value: bytes) -> _Version | None:
        nonlocal current
        entry, model, problem = feed.offer(value, current)
        assert problem is None, problem
        if entry is None:
            return None
        current, params = entry, models.get_params(model)
        return _Version(model, lambda side, r, k, m=entry.meta: side.on_model(r, k, m, lambda: params))

    for start in range(0, len(events), per_round):
        rnd = start // per_round
        while in_transit and in_transit[0][0] <= rnd:
            newer = arrive(in_transit.pop(0)[1])
            visible = newer or visible
        chunk = events[start : start + per_round]
        for k, r in enumerate(replicas):
            batch = chunk[k :: s.replicas]
            if not batch:
                continue
            clock += 0.01
            if visible is not None:
                visible.rebase(replica_side, r, k)
            for j, (x, y) in enumerate(batch):  # the served model answers before anyone learns the event
                y_pred = predict(visible.model, x)[0] if visible is not None else None
                served.add(task, y_pred, y)
                if start + k + j * s.replicas >= warmup:
                    served_late.add(task, y_pred, y)
            out = replica_side.on_events(r, k, [x for x, _ in batch], [y for _, y in batch], coalesce=s.coalesce)
            own.merge(out.score)
            for data in out.updates:
                updates += 1
                update_bytes += len(data)
                if s.precision == "float64" and s.shards == 1:  # the JSON byte baseline: the same update as JSON
                    json_bytes += len(orjson.dumps(decode_update(data).delta, option=orjson.OPT_NON_STR_KEYS))
                publish(merger_side.on_update(mergers[update_shard(data)], data, now=clock).document, rnd)
        for merger in mergers:  # nothing waits longer than a round
            publish(merger_side.on_timer(merger, now=clock).document, rnd)
        waiting = writer.flush_record(clock) if s.shards > 1 else None  # the manifest publisher's timer
        if waiting is not None:
            in_transit.append((rnd + s.delay, waiting))
            versions += 1
    return Outcome(served, served_late, baseline[0], baseline[1], own, updates, update_bytes, json_bytes,
                   versions, task, final)


def lag_floor(spec: str, events: list, s: Setting, warmup: int) -> Score:
    """Single-node River served with the loop's lag, from event ``warmup`` on: during a round (``s.replicas`` x
    ``s.batch`` events) it answers with River's model as of the start of round ``rnd - s.delay + 1``, as a
    perfect merge would.  What the served model loses to that lag alone, on a drifting stream, is no merge's
    fault: a merge is as good as it can be at this floor."""
    import copy

    from riverflink.models.labels import task_of

    model, per_round = build_model(spec), s.replicas * s.batch
    task, snapshots, late = task_of(model), [], Score()
    for i, (x, y) in enumerate(events):
        if i % per_round == 0:
            snapshots = (snapshots + [copy.deepcopy(model)])[-s.delay:]
        if i >= warmup:
            late.add(task, predict(snapshots[0], x)[0] if len(snapshots) == s.delay else None, y)
        model.learn_one(x, y)
    return late


def _fmt(o: Outcome) -> str:
    if o.task == "regression":
        return (f"served/River MAE {o.gap(False):8.3f}x  late {o.gap(True):8.3f}x  "
                f"replicas MAE {o.replicas.abs_error / o.replicas.events:8.3f}")
    return (f"served-River {o.gap(False):+6.2f} pts  late {o.gap(True):+6.2f}  "
            f"replicas acc {o.replicas.correct / o.replicas.events:.4f}")


DEFAULT = Setting()


def grid(ks: list[int], quick: bool) -> list[Setting]:
    """Every K x periodic sync x policy; at K=4 also relative-divergence and drift-triggered syncs."""
    syncs = [SyncPolicy(every_events=10, every_seconds=None), SyncPolicy(every_events=100, every_seconds=None),
             SyncPolicy(every_events=400, every_seconds=None)]
    out = [Setting(replicas=k, sync=sync, policy=pol)
           for k, sync, pol in itertools.product(ks, syncs, ("delta", "average", "scaled_average"))]
    if not quick and 4 in ks:
        for sync in (SyncPolicy(every_events=1000, every_seconds=None, divergence=0.01),
                     SyncPolicy(every_events=1000, every_seconds=None, divergence=0.03),
                     SyncPolicy(every_events=1000, every_seconds=None, divergence=0.03, on_drift=True)):
            out.append(Setting(replicas=4, sync=sync, policy="delta"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default="Phishing,Hyperplane,SEA,ImageSegments,LEDSwitch,TrumpApproval,Friedman",
                    help="multiclass (StandardScaler|SoftmaxRegression): ImageSegments, LEDSwitch (drift), "
                         "also RBFDrift (drift), Waveform")
    ap.add_argument("--k", default="2,4,8")
    ap.add_argument("--events", type=int, help="events per stream (default: each stream's own size)")
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--delay", type=int, default=1, help="publish delay in micro-batch rounds")
    ap.add_argument("--quick", action="store_true", help="fewer sync settings")
    ap.add_argument("--default-only", action="store_true", help="only the default configuration at K=4")
    args = ap.parse_args()
    ks = [int(k) for k in args.k.split(",")]
    worst_gap, worst_ratio, diverged, exploded, reductions = -math.inf, 0.0, 0, 0, []
    for name in args.streams.split(","):
        spec, events = stream(name, args.events)
        base = river_baseline(build_model(spec), events, args.warmup)[:2]
        # the byte baseline: the first slice's loop, JSON updates every 10 events, mid-batch
        every10 = simulate(spec, events, Setting(sync=SyncPolicy(every_events=10, every_seconds=None),
                                                 delay=args.delay, coalesce=False, precision="float64"),
                           args.warmup, base)
        settings = [Setting(delay=args.delay)] if args.default_only else grid(ks, args.quick)
        floor = lag_floor(spec, events, Setting(delay=args.delay), args.warmup)
        late = base[1]
        floor_gap = (f"MAE {floor.abs_error / late.abs_error:.3f}x" if every10.task == "regression" and late.abs_error
                     else f"{100 * (floor.correct - late.correct) / late.events:+.2f} pts")
        print(f"\n== {name}: {len(events)} events, {spec}; River "
              + (f"MAE {base[0].abs_error / base[0].events:.4f}" if every10.task == "regression"
                 else f"accuracy {base[0].correct / base[0].events:.4f}")
              + f"; River served with the default setting's lag, late: {floor_gap}")
        for s in settings:
            s.delay = args.delay
            o = simulate(spec, events, s, args.warmup, base)
            reduction = every10.json_bytes / max(o.update_bytes, 1)
            print(f"{s.label()}  {_fmt(o)}  updates {o.updates:6d}  bytes {o.update_bytes:9d}  "
                  f"vs every-10 JSON {reduction:6.1f}x", flush=True)
            diverged += o.diverged()
            exploded += o.exploded()
            if s.replicas == 4 and s.sync == DEFAULT.sync and s.policy == DEFAULT.policy and s.mode == DEFAULT.mode:
                reductions.append(reduction)
                if o.task == "regression":
                    worst_ratio = max(worst_ratio, o.gap(True))
                else:
                    worst_gap = max(worst_gap, -o.gap(True))
    print(f"(settings above 2x River's MAE after warm-up: {diverged}; above 100x, numerically unstable: {exploded})")
    print(f"sync: worst_class_gap={worst_gap:.2f} worst_reg_mae_ratio={worst_ratio:.3f} "
          f"reduction={min(reductions or [0]):.1f} diverged={diverged}")


if __name__ == "__main__":
    main()
