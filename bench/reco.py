"""Hybrid parallelism on a ratings stream: users model-parallel, items data-parallel, against single-node River.

A pure-Python run of the training job's own loop (``ReplicaSide`` and
``MergerSide``, with the job's update codec and the readers' ``ModelFeed``),
driven as the job would be with ``--key-field user``:

* each rating goes to the replica that owns its user (``crc32(user) mod K``,
  :func:`~riverflink.operators.keying.replica_of`), in rounds of B events per
  replica; a replica learns its share of the round, checks its sync policy and
  sends item updates to the merger; a merged version becomes visible one round
  later (as through Kafka);
* after each batch a replica publishes the users it learned from, as the job does
  (``BatchOutcome.user_factors``: the records of the compacted user-factor topic);
* the served prediction for a rating, made before anyone learns it, is the
  newest visible item model with the user's published factors; a user not yet
  published is answered with the global mean plus the item bias (counted).

Single-node River is ``SeededBiasedMF`` (River's ``BiasedMF`` maths, started
from the same id-seeded vectors; ``tests/test_reco.py`` checks the two are
equal), predict-then-learn, same events, same order.  Printed per K: served and
replica MAE against River's (overall and after the first 10% of events), user
state per replica against (users it owns) x (bytes per user), item bytes per
sync, user-factor traffic, the share of requests for unknown users.  Nothing is
asserted.

Then, on one embedded broker (127.0.0.1), the first ``--kafka-events`` ratings (0: skipped) pre-loaded for each
system in turn, predict-then-learn on every one: River's own ``BiasedMF`` alone (no Kafka), a kafka-python
consumer + River, a Quix Streams application + River (the ``bench`` extra; skipped when missing), and
``riverflink train`` at K=4 for each ``--job-sync-every`` (the job's replicas' progressive MAE): events/s, CPU-µs per event over every
process including the broker, and MAE.  Then the serving job over the last run's topics, sent ratings and
rank requests (100 candidates) alternately at ``--serving-rate``: latency p50/p99 per kind, send to answer.

Last line: ``reco: K=4 mae_ratio=<R> user_bytes_per_replica=<U> item_bytes_per_sync=<I>`` (R: served MAE over
River's after the first 10%; U: mean user-state bytes per replica at the end; I: mean update bytes per sync).

    python -m bench.reco [--events 200000] [--k 2,4,8] [--spec 'BiasedMF(...)'] [--kafka-events 40000]
"""

from __future__ import annotations

import argparse
import math
import pickle
import sys
import time
import zlib


from riverflink import models
from riverflink.models.matrix_factorization import serve_score
from riverflink.models.policies import MergePolicy
from riverflink.models.spec import build
from riverflink.models.sync import SyncPolicy
from riverflink.models.user_factors import read_user_record
from riverflink.operators.loop import LoopSettings, MergerSide, ReplicaSide
from riverflink.operators.model_feed import FeedRules, ModelFeed
from riverflink.operators.events import RatingFields
from riverflink.operators.scoring import Score, river_baseline
from riverflink.pipelines.ratings_stream import rating_events

SPEC = "BiasedMF(n_factors=8,lr=0.02,l2_bias=0.001,l2_latent=0.001)"


def user_state_bytes(model) -> int:
    """A replica's user state as it holds it in memory, estimated per user: its id, its bias (a float), its
    vector (a numpy array: 112 bytes of header and 8 a factor) and its event count (an int), dict slots left out."""
    biases, counts = getattr(model, "u_biases", {}), getattr(model, "u_counts", {})
    return sum(sys.getsizeof(u) + (24 if u in biases else 0) + v.nbytes + 112
               + (sys.getsizeof(counts[u]) if u in counts else 0) for u, v in model.u_latents.items())


def checkpointed_user_bytes(model) -> int:
    """The bytes of a replica's user state in Flink's keyed state (pickled, as PyFlink writes the replica)."""
    return len(pickle.dumps((model.u_latents, getattr(model, "u_biases", None), getattr(model, "u_counts", None)),
                            protocol=pickle.HIGHEST_PROTOCOL))


def run(spec: str, events: list, k: int, batch: int, sync_every: int, delay: int = 1) -> dict:
    settings = LoopSettings("reco", sync=SyncPolicy(every_events=sync_every, every_seconds=None),
                            policy=MergePolicy("delta", clip=math.inf), ratings=RatingFields())
    replica_side, merger_side = ReplicaSide(settings, build(spec)), MergerSide(settings, build(spec))
    replicas = [replica_side.fresh() for _ in range(k)]
    merger = merger_side.fresh(0)
    feed, current = ModelFeed(FeedRules("reco")), None
    visible = None  # (merged model, its params) as the replicas and serving see it
    in_transit: list = []
    published: dict = {}  # user -> UserFactors: the compacted user-factor topic
    served, served_late, own = Score(), Score(), Score()
    unknown = updates = update_bytes = user_bytes = user_records = versions = 0
    late_from = len(events) // 10
    owners = [zlib.crc32(str(r.user).encode()) % k for r, _ in events]
    clock = 0.0
    for start in range(0, len(events), k * batch):
        rnd = start // (k * batch)
        while in_transit and in_transit[0][0] <= rnd:
            entry, model, problem = feed.offer(in_transit.pop(0)[1], current)
            assert problem is None, problem
            if entry is not None:
                current, visible = entry, (model, models.get_params(model), entry.meta)
        chunk = range(start, min(start + k * batch, len(events)))
        for r_index, replica in enumerate(replicas):
            mine = [i for i in chunk if owners[i] == r_index]
            if not mine:
                continue
            clock += 0.01
            if visible is not None:
                params = visible[1]
                replica_side.on_model(replica, r_index, visible[2], lambda p=params: p)
            xs, ys = [events[i][0] for i in mine], [events[i][1] for i in mine]
            for i, x, y in zip(mine, xs, ys):
                factors = published.get(x.user)
                y_pred = None if visible is None else serve_score(visible[0], factors, x.item)
                unknown += factors is None
                served.add("regression", y_pred, y)
                if i >= late_from:
                    served_late.add("regression", y_pred, y)
            out = replica_side.on_events(replica, r_index, xs, ys)
            own.merge(out.score)
            for key, value in out.user_factors:  # what the job publishes on <models>.users, read as serving reads it
                user_bytes += len(key) + len(value)
                user_records += 1
                factors = read_user_record(value, "reco", replica.model.n_factors)
                published[factors.user] = factors
            for data in out.updates:
                updates += 1
                update_bytes += len(data)
                doc = merger_side.on_update(merger, data, now=clock).document
                if doc is not None:
                    versions += 1
                    in_transit.append((rnd + delay, models.dumps(doc)))
        doc = merger_side.on_timer(merger, now=clock).document
        if doc is not None:
            versions += 1
            in_transit.append((rnd + delay, models.dumps(doc)))
    users = [len(r.model.u_latents) for r in replicas]
    state = [user_state_bytes(r.model) for r in replicas]
    pickled = [checkpointed_user_bytes(r.model) for r in replicas]
    doc_bytes = len(models.dumps(models.to_wire(visible[0], name="reco", version=1))) if visible else 0
    return {"served": served, "served_late": served_late, "own": own, "unknown": unknown / len(events),
            "updates": updates, "update_bytes": update_bytes / max(updates, 1), "user_bytes": user_bytes,
            "user_records": user_records, "users": users, "state": state, "pickled": pickled, "versions": versions,
            "doc_bytes": doc_bytes, "model": visible[0] if visible else None, "published": published}


def serving_path(model, published: dict, items: list, requests: int = 2000, candidates: int = 100) -> tuple:
    """The serving predictor's own work per request (``Predictor._answer``: parse, score, answer record), called
    directly on the merged model with the published users: microseconds per rating request and per rank request
    over ``candidates`` items, alternately, as ``(rate p50, rate p99, rank p50, rank p99)``.  The Kafka hop and
    the JVM around it are not in these figures (bench/serving.py measures them for a classifier)."""
    import random

    import orjson

    from riverflink.operators.frames import Record
    from riverflink.operators.predictor import Predictor

    class Table(dict):  # (Flink's MapState get/put, the predictor's only use of it)
        put = dict.__setitem__

    p = Predictor("reco", batched=False, users=True)
    p.version, p.created_at, p.model, p.recommender, p.users = 1, 0.0, model, True, Table()
    for factors in published.values():
        p.users.put(orjson.dumps(factors.user).decode(), orjson.dumps([factors.bias, factors.vector]).decode())
    rng, users = random.Random(1), list(published)
    rate, rank = [], []
    for i in range(requests):
        user = rng.choice(users)
        one = Record(0, i, 0, None, orjson.dumps({"id": i, "user": user, "item": rng.choice(items)}))
        many = Record(0, i, 0, None, orjson.dumps({"id": i, "user": user, "items": rng.sample(items, candidates),
                                                   "n": 10}))
        for record, times in ((one, rate), (many, rank)):
            t = time.perf_counter()
            p._answer(record)
            times.append(1e6 * (time.perf_counter() - t))

    def pct(xs: list, q: float) -> float:
        return sorted(xs)[int(q * (len(xs) - 1))]

    return pct(rate, 0.5), pct(rate, 0.99), pct(rank, 0.5), pct(rank, 0.99)


def rivers_own(spec: str):
    """River's own ``reco.BiasedMF`` / ``reco.FunkMF`` with the spec's settings (what a user would run)."""
    from river import reco

    from riverflink.models.biased_mf import SeededBiasedMF

    m = build(spec)
    if isinstance(m, SeededBiasedMF):
        return reco.BiasedMF(n_factors=m.n_factors, bias_optimizer=m.bias_optimizer,
                             latent_optimizer=m.latent_optimizer, loss=m.loss, l2_bias=m.l2_bias,
                             l2_latent=m.l2_latent, weight_initializer=m.weight_initializer,
                             latent_initializer=m.latent_initializer, clip_gradient=m.clip_gradient, seed=m.seed)
    return reco.FunkMF(n_factors=m.n_factors, optimizer=m.optimizer, loss=m.loss, l2=m.l2, initializer=m.initializer,
                       clip_gradient=m.clip_gradient, seed=m.seed)


def river_step(spec: str):
    """``(step, score)``: the user's code, River's predict-then-learn on one rating, and its running score."""
    model, score = rivers_own(spec), Score()

    def step(x: tuple, y: float) -> None:
        score.add("regression", model.predict_one(*x), y)
        model.learn_one(*x, y)

    return step, score


def on_kafka(spec: str, events: list, replicas: int, parallelism: int, syncs: list,
             serving_rate: float = 0.0) -> None:
    """The systems a user could run, each on the same pre-loaded ratings on one embedded broker (printed)."""
    from bench.peer_learners import kafka_python_peer, preload, quix_peer
    from bench.throughput import REPO, flink_job
    from riverflink.pipelines import kafka_io
    from riverflink.pipelines.broker import EmbeddedBroker
    from riverflink.pipelines.config import FlinkConfig, TrainConfig

    print(f"\non one broker: {len(events):,} ratings pre-loaded for each system; predict, then learn, on each")
    step, score = river_step(spec)
    wall, cpu = time.perf_counter(), time.process_time()
    for x, y in events:
        step((x.user, x.item), y)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"(a) River's own model alone      {len(events) / wall:9,.0f} events/s {1e6 * cpu / len(events):7.1f} "
          f"CPU-us/event MAE {mae(score):.4f}", flush=True)
    (REPO / ".riverflink").mkdir(exist_ok=True)
    with EmbeddedBroker() as broker:
        for label, peer in (("(b)", kafka_python_peer), ("(c)", quix_peer)):
            topic = f"reco-peer-{time.time_ns()}"
            kafka_io.create_topics(broker.bootstrap, {topic: 2})
            preload(broker.bootstrap, topic, events)
            step, score = river_step(spec)
            run = peer(broker.bootstrap, topic, len(events), step, broker.process.pid,
                       unpack=lambda e: ((e["user"], e["item"]), e["y"]))
            if run is None:
                print(f"{label} Quix Streams is not installed (pip install -e '.[bench]')")
                continue
            print(f"{label} {run.name:<28} {run.events_per_s:9,.0f} events/s {run.cpu_us:7.1f} CPU-us/event "
                  f"MAE {mae(score):.4f}", flush=True)
        for sync in syncs:
            cfg = TrainConfig(broker.bootstrap, model_spec=spec, replicas=replicas, sync_every_events=sync,
                              flink=FlinkConfig(parallelism=parallelism))
            job = flink_job(broker.bootstrap, cfg, events, {}, broker.process.pid)
            print(f"(d) riverflink train K={replicas}, p={parallelism}, sync every {sync:<5} {job['events_per_s']:9,.0f} "
                  f"events/s {job['cpu_us']:7.1f} CPU-us/event MAE {job['mae']:.4f} (the replicas' own; job + "
                  f"broker; {job['model_versions']} versions, {job['model_bytes'] / 1e6:.0f} MB of documents)",
                  flush=True)
        if serving_rate:
            from bench.serving import pct
            lat = rank_latency(broker.bootstrap, job, events, serving_rate, 15.0)
            r50, r99, k50, k99 = (pct(lat[kind], q) for kind in ("rate", "rank") for q in (0.5, 0.99))
            print(f"(e) riverflink serve, {serving_rate:.0f} requests/s for 15 s, half ratings, half ranks of 100 "
                  f"candidates (send to answer): rate p50 {r50:.0f} ms p99 {r99:.0f} ms over {len(lat['rate'])}; "
                  f"rank p50 {k50:.0f} ms p99 {k99:.0f} ms over {len(lat['rank'])} ({k50 / r50:.2f}x at p50, "
                  f"{k99 / r99:.2f}x at p99)", flush=True)


def rank_latency(servers: str, job: dict, events: list, rate: float, seconds: float, candidates: int = 100) -> dict:
    """The serving job over a training run's topics (its merged items and published users): requests paced at
    ``rate`` for ``seconds``, alternately a rating and a rank over ``candidates`` items; milliseconds from send to
    receipt of the answer, per kind: ``{"rate": [...], "rank": [...]}``."""
    import random

    import orjson

    from bench.serving import paced, start_serving
    from bench.throughput import REPO
    from riverflink.pipelines import kafka_io
    from riverflink.pipelines.broker import stop_pid
    from riverflink.pipelines.config import ServeConfig

    topics, run = job["topics"], job["run"]
    kafka_io.create_topics(servers, topics.to_create("requests"))
    cfg = ServeConfig(servers, model_name=run, group_id=f"{run}-serve", user_field="user", topics=topics)
    proc = start_serving(servers, cfg, REPO / ".riverflink" / "bench-reco-serving.log")
    rng = random.Random(5)
    users, items = sorted({r.user for r, _ in events}), sorted({r.item for r, _ in events})
    try:
        reader = kafka_io.TopicReader(servers, topics.predictions, fetch_max_wait_ms=10)
        deadline = time.time() + 300
        # until it answers with a model and has read the users back: the last users the job published are known
        last = list(dict.fromkeys(r.user for r, _ in reversed(events)))[:5]
        known: set = set()
        while time.time() < deadline and proc.poll() is None and len(known) < len(last):
            kafka_io.produce(servers, topics.requests, [orjson.dumps({"id": f"probe-{u}", "user": u,
                                                                      "item": items[0]}) for u in last])
            known |= {r["id"] for r in reader.poll_json(2000)
                      if r and str(r.get("id")).startswith("probe-") and r.get("status") == "ok"
                      and r.get("known_user", True)}
        sent: dict = {}
        latency: dict = {"rate": [], "rank": []}
        producer = kafka_io.producer(servers)

        def send(i: int) -> None:
            user = rng.choice(users)
            if i % 2:
                rid, doc = f"k{i}", {"user": user, "items": rng.sample(items, candidates), "n": 10}
            else:
                rid, doc = f"r{i}", {"user": user, "item": rng.choice(items)}
            sent[rid] = time.time()
            producer.send(topics.requests, orjson.dumps({"id": rid, **doc}))

        import threading
        stop = threading.Event()

        def receive() -> None:
            while not stop.is_set():
                for r in reader.poll_json(50):
                    if r and r.get("status") == "ok" and r.get("id") in sent:
                        latency["rank" if r["id"][0] == "k" else "rate"].append(1000 * (time.time() - sent[r["id"]]))

        thread = threading.Thread(target=receive, daemon=True)
        thread.start()
        paced(rate, seconds, send)
        producer.flush()
        while sum(map(len, latency.values())) < len(sent) and time.time() < deadline:
            time.sleep(0.2)
        stop.set()
        thread.join()
        return latency
    finally:
        stop_pid(proc.pid)


def mae(score: Score) -> float:
    return score.abs_error / max(score.events, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--k", default="2,4,8")
    ap.add_argument("--spec", default=SPEC)
    ap.add_argument("--batch", type=int, default=100, help="events per replica per round")
    ap.add_argument("--sync-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--delay", type=int, default=1, help="rounds before a merged version is visible")
    ap.add_argument("--kafka-events", type=int, default=40_000, help="ratings for the systems on a broker (0: skip)")
    ap.add_argument("--parallelism", type=int, default=2, help="the training job's, on the broker")
    ap.add_argument("--job-sync-every", default="100,500", help="the training job's --sync-every-events, each run")
    ap.add_argument("--serving-rate", type=float, default=200.0,
                    help="requests/s to the serving job after the last training run (0: no serving)")
    args = ap.parse_args()
    events = list(rating_events(args.events, seed=args.seed))
    late_from = len(events) // 10
    t = time.perf_counter()
    river, river_late, _ = river_baseline(build(args.spec), events, warmup=late_from)
    river_s = time.perf_counter() - t
    print(f"{len(events)} ratings, {len({r.user for r, _ in events})} users, {len({r.item for r, _ in events})} "
          f"items; {args.spec}; sync every {args.sync_every} events, rounds of {args.batch} per replica, versions "
          f"visible {args.delay} round(s) later")
    print(f"River (SeededBiasedMF, one process): MAE {mae(river):.4f}, after the first 10% {mae(river_late):.4f} "
          f"({1e6 * river_s / len(events):.0f} us/event)", flush=True)
    line = None
    for k in (int(v) for v in args.k.split(",")):
        t = time.perf_counter()
        o = run(args.spec, events, k, args.batch, args.sync_every, args.delay)
        wall = time.perf_counter() - t
        ratio, ratio_all = mae(o["served_late"]) / mae(river_late), mae(o["served"]) / mae(river)
        per_user = [s / max(u, 1) for s, u in zip(o["state"], o["users"])]
        mean_state = sum(o["state"]) / k
        print(f"K={k}: served MAE {mae(o['served']):.4f} ({ratio_all:.3f}x River), after 10% "
              f"{mae(o['served_late']):.4f} ({ratio:.3f}x); replicas' own {mae(o['own']):.4f} "
              f"({mae(o['own']) / mae(river):.3f}x); unknown-user requests {100 * o['unknown']:.2f}%", flush=True)
        pickled = [p / max(u, 1) for p, u in zip(o["pickled"], o["users"])]
        print(f"     users per replica {min(o['users'])}-{max(o['users'])}, user state {mean_state / 1e6:.2f} MB per "
              f"replica ({min(per_user):.0f}-{max(per_user):.0f} bytes per user in memory, "
              f"{min(pickled):.0f}-{max(pickled):.0f} in its checkpoint); item update {o['update_bytes']:.0f} "
              f"bytes per sync ({o['updates']} syncs); user-factor topic {o['user_records']} records, "
              f"{o['user_bytes'] / 1e6:.1f} MB; document {o['doc_bytes'] / 1024:.0f} KB; {wall:.0f} s", flush=True)
        if k == 4 and o["model"] is not None:
            r50, r99, k50, k99 = serving_path(o["model"], o["published"], sorted({r.item for r, _ in events}))
            print(f"     serving predictor's own work per request: rate p50 {r50:.0f} us, p99 {r99:.0f} us; rank of "
                  f"100 candidates p50 {k50:.0f} us, p99 {k99:.0f} us ({k50 / r50:.1f}x at p50)", flush=True)
        if k == 4:
            line = (f"reco: K=4 mae_ratio={ratio:.3f} user_bytes_per_replica={mean_state:.0f} "
                    f"item_bytes_per_sync={o['update_bytes']:.0f}")
    if args.kafka_events:
        on_kafka(args.spec, events[:args.kafka_events], 4, args.parallelism,
                 [int(v) for v in args.job_sync_every.split(",")], args.serving_rate)
    if line:
        print(line)


if __name__ == "__main__":
    main()
