"""``riverflink produce``, ``tail``, ``models``, ``reshard``, ``report`` and ``top``: write to and read the topics."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from riverflink.pipelines.cli_context import bootstrap
from riverflink.pipelines.config import Topics
from riverflink.pipelines.options import add_options, from_args


def topic_flags(*roles: str) -> argparse.ArgumentParser:
    """A parent parser with the ``--ROLE-topic`` flags of ``roles`` (declared on :class:`Topics`)."""
    t = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_options(t, Topics, only=roles)
    return t


def cmd_produce(args) -> int:
    from tqdm import tqdm

    from riverflink.pipelines import kafka_io
    from riverflink.pipelines.sources import dataset_events, dataset_size, encode_events, file_events

    servers = bootstrap(args)
    total = args.limit
    if args.file:
        ratings = None
        if args.ratings or args.user_field or args.item_field:  # (a recommender's file: written as user, item, y)
            from riverflink.operators.events import RatingFields

            ratings = RatingFields(user=args.user_field or "user", item=args.item_field or "item")
        events = file_events(args.file, args.target, ratings)
        if args.limit:
            from itertools import islice

            events = islice(events, args.limit)
    else:
        events = dataset_events(args.dataset, args.limit, seed=args.seed)
        if total is None:
            total = dataset_size(args.dataset)
    kafka_io.create_topics(servers, {args.topic: args.partitions})
    producer = kafka_io.producer(servers)
    n = 0
    for value in tqdm(encode_events(events, start_id=args.start_id, with_label=not args.unlabelled),
                      unit="ev", desc=f"-> {args.topic}", total=total, disable=args.quiet):
        producer.send(args.topic, value=value)
        n += 1
    producer.flush()
    producer.close()
    print(f"produced {n} events to {args.topic} on {servers}")
    return 0


def cmd_tail(args) -> int:
    import difflib
    import sys
    import threading

    from riverflink.pipelines import kafka_io
    from riverflink.pipelines.config import ConfigError

    servers = bootstrap(args)
    shortcuts = {"predictions": args.predictions_topic, "models": args.models_topic, "metrics": args.metrics_topic,
                 "training": args.predictions_topic + ".training", "dlq": args.events_topic + ".dlq"}
    topic = shortcuts.get(args.what, args.what)
    existing = kafka_io.topic_names(servers)
    if topic not in existing:
        if not args.create:
            close = difflib.get_close_matches(args.what, [*shortcuts, *existing], n=1)
            raise ConfigError(f"no topic {topic!r} on {servers}" + (f" (did you mean {close[0]!r}?)" if close else "")
                              + "; pass --create to wait for it")
        kafka_io.create_topics(servers, {topic: 1})
    # "new only" by the records' own timestamps: Tansu's reported end offset can sit a batch early (DESIGN.md)
    start_ms = 0 if args.from_beginning else int(time.time() * 1000)
    n = 0
    waiting = threading.Timer(3.0, lambda: n or print(
        f"(nothing {'on' if args.from_beginning else 'new on'} {topic} yet; waiting: Ctrl-C stops)", file=sys.stderr,
        flush=True))
    waiting.daemon = True
    waiting.start()
    for record in kafka_io.consume_records(servers, topic, idle_timeout=args.idle):
        if record.timestamp < start_ms:
            continue
        value = record.value
        text = value.decode("utf-8", errors="replace")
        if args.what == "models":
            from riverflink.models.document import read_document

            from riverflink.models.manifest import read_manifest

            document = read_document(value)
            manifest = read_manifest(value) if document is None else None
            if manifest is not None:
                text = f"manifest {manifest.name[:40]} v{manifest.version} slices={list(manifest.slices)}"
            elif document is None:
                text = f"(not a model document: {len(value)} bytes)"
            else:
                meta = document.meta
                text = (f"model {_shown_name(meta)} v{meta.version} events={meta.events} "
                        f"counts={str(meta.counts)[:200]} bytes={len(value)} "
                        f"{'signed' if document.signed else 'unsigned'}"
                        + (f" patch_of=v{meta.patch_of}" if meta.patch_of is not None else "")
                        + (f" page={meta.page + 1}/{meta.pages}" if meta.pages > 1 else ""))
        print(text, flush=True)
        n += 1
        if args.limit and n >= args.limit:
            break
    waiting.cancel()
    if not n and args.idle:
        print(f"(nothing {'on' if args.from_beginning else 'new on'} {topic} within {args.idle:g} s)",
              file=sys.stderr, flush=True)
    return 0


def _has_every_shard(metas: list) -> bool:
    """Whether ``metas`` (model documents' metadata) hold a document of every shard of every model in them."""
    shards: dict = {}
    for m in metas:
        shards.setdefault((m.name, m.shards), set()).add(m.shard)
    return bool(shards) and all(seen >= set(range(n)) for (_, n), seen in shards.items())


def cmd_models(args) -> int:
    from riverflink.models.document import read_document
    from riverflink.models import matrix_factorization
    from riverflink.models.tree_structure import shape_of
    from riverflink.models.signing import verify
    from riverflink.pipelines import kafka_io
    from riverflink.pipelines.config import load_verifier

    servers = bootstrap(args)
    verifier = load_verifier(args.verify_key)
    wanted = (lambda meta: not args.model_name or meta.name == args.model_name)
    values = kafka_io.consume(servers, args.models_topic, idle_timeout=args.idle)
    if args.latest:  # the topic's tail only, widened until it holds a document of the model asked for (of each
        last = 16    # shard of a sharded one: a paged slice can fill the tail with one shard's pages)
        while True:
            values = kafka_io.read_tail(servers, args.models_topic, last)
            if len(values) < last or _has_every_shard([d.meta for d in map(read_document, values)
                                                       if d and wanted(d.meta)]):
                break
            last *= 8
    from riverflink.models.manifest import read_manifest

    rows, foreign, manifests, refusals = [], 0, 0, []
    for value in values:
        document = read_document(value)
        if document is None:
            if read_manifest(value) is not None:
                manifests += 1
            else:
                foreign += 1
            continue
        if not wanted(document.meta):
            continue
        check = "signed" if document.signed else "unsigned"
        if verifier is not None:
            problem = verify(document.doc, verifier)
            check = "verified" if problem is None else "REFUSED"
            if problem is not None:
                refusals.append(f"v{document.meta.version}: {problem}"[:200])
        rows.append((document, check))
    if args.latest:
        latest: dict = {}
        for document, check in rows:
            if verifier is not None and check != "verified":
                continue  # with a key, the newest version is the newest one it verifies
            key = (document.meta.name, document.meta.shard)  # a sharded model: each shard's newest slice
            held = latest.get(key)
            if held is None or (document.meta.version or 0) > (held[0].meta.version or 0):
                latest[key] = (document, check)
        rows = sorted(latest.values(), key=lambda row: (str(row[0].meta.name), row[0].meta.shard))
    print(f"{'name':12} {'version':>14} {'seq':>5} {'events':>8} {'bytes':>7}  {'created_at':20} {'signature':10} "
          f"counts / quality gate")
    previous: dict = {}
    for document, check in rows:
        m = document.meta
        before = previous.get((m.name, m.shard))
        previous[(m.name, m.shard)] = (m, check)
        if before is not None and not args.latest:
            marker = _new_history(before, (m, check))
            if marker:
                print(f"-- {str(m.name)[:40]}: a new history starts here: {marker}")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.created_at or 0))
        serving = f"held: {m.held}" if m.held else ("served" if m.gated else "-")
        if m.patch_of is not None:
            serving = f"patch of v{m.patch_of}"
        if m.pages > 1:
            serving += f" (page {m.page + 1} of {m.pages})"
        shape = shape_of(document.doc) or matrix_factorization.shape_of(document.doc)
        if shape:
            serving += f"  {shape}"
        print(f"{_shown_name(m)[:12]:12} {str(m.version)[:14]:>14} {str(m.sequence)[:5]:>5} {str(m.events)[:8]:>8} "
              f"{document.size:>7}  {stamp:20} {check:10} {str(m.counts)[:200]}  {serving[:200]}")
    if foreign:
        print(f"({foreign} record(s) on {args.models_topic} were not model documents and were skipped)")
    if manifests:
        print(f"({manifests} manifest(s) of sharded models: MODEL#S rows are shard S's slices, whole or a patch "
              "of an earlier one; 'riverflink tail models' shows the manifests)")
    for refusal in refusals[:20]:
        print(f"(REFUSED {refusal})")
    print("(seq: merges by the job that published the version; events: events the model holds; counts: events "
          "each replica key added to this version; signature: checked with --verify-key; quality gate: served "
          "unless held)")
    return 0


#: a newest version younger than this may come from a job that still runs (``reshard`` warns)
RECENT_S = 60.0


def cmd_reshard(args) -> int:
    """Publish the newest version of ``--model-name`` as ``--shards`` slices of a new epoch
    (:mod:`riverflink.operators.resharding`), for a job started again with that ``--shards``."""
    from riverflink.models.signing import Signer
    from riverflink.operators.merge_state import next_version
    from riverflink.operators.model_feed import FeedRules, ModelFeed
    from riverflink.operators.resharding import resharded
    from riverflink.pipelines import kafka_io
    from riverflink.pipelines.config import MODELS_TAIL, ConfigError, check_max_record_bytes, load_key, load_verifier

    check_max_record_bytes(args.max_record_bytes)
    servers = bootstrap(args)
    verifier = load_verifier(args.verify_key)
    signer = load_key("--signing-key", args.signing_key, Signer.load)
    feed = ModelFeed(FeedRules(args.model_name, verifier=verifier))
    entry = model = None
    for entry, model in feed.versions(kafka_io.consume(servers, args.models_topic, idle_timeout=args.idle)):
        pass  # (the newest is kept)
    if entry is None:
        raise ConfigError(f"no complete version of model {args.model_name!r} on {args.models_topic} "
                          f"({feed.refused} record(s) refused){' with this --verify-key' if verifier else ''}")
    now = time.time()
    age = now - (entry.meta.created_at or 0.0)
    if age < RECENT_S:
        print(f"riverflink: warning: version {entry.version} of {args.model_name!r} is {age:.0f} s old: stop its job "
              "first (readers rank the resharded epoch above every version a running job publishes later)",
              file=sys.stderr)
    version = next_version(entry.version, now)
    # the epoch after the old one: newer than it for every reader, and older than any job started since (a job's
    # epoch is its start time in ms), so a job started before or after this takes over from it
    epoch = entry.meta.epoch + 1
    try:
        records = resharded(model, entry.meta, args.shards, version=version, epoch=epoch, now=now,
                            max_record_bytes=args.max_record_bytes, signer=signer)
    except ValueError as e:
        raise ConfigError(f"cannot reshard {args.model_name!r}: {e}") from None
    kafka_io.produce(servers, args.models_topic, [r for _, r in records], keys=[k.encode() for k, _ in records])
    print(f"{args.model_name}: version {entry.version} ({entry.meta.shards} shard(s), {entry.meta.events} events) "
          f"published as version {version} of {args.shards} shard(s), epoch {epoch}: {len(records)} "
          f"record(s), the largest {max(len(r) for _, r in records):,} bytes{', signed' if signer else ''}")
    tail = f" --models-tail {len(records)}" if len(records) > MODELS_TAIL else ""  # (a new job reads the newest)
    print(f"start the job with --shards {args.shards}{tail}: its mergers and replicas start from this version")
    return 0


def _shown_name(meta) -> str:
    """A model's name, or ``name#shard`` for a slice of a sharded model."""
    name = str(meta.name)[:40]
    return f"{name}#{meta.shard}" if meta.shards > 1 else name


def _new_history(before: tuple, after: tuple) -> str:
    """Why version ``after`` does not continue ``before``'s history ("" when it does): ``(ModelMeta, check)`` each.

    >>> from riverflink.models.document import ModelMeta
    >>> _new_history((ModelMeta(sequence=40, events=27000), "signed"), (ModelMeta(sequence=1, events=384), "unsigned"))
    'sequence restarted at 1 (a new job: it adopted the newest version it accepted, or started empty); signed -> unsigned'
    """
    (m0, c0), (m1, c1) = before, after
    reasons = []
    if m1.sequence is not None and m0.sequence is not None and m1.sequence <= m0.sequence:
        reasons.append(f"sequence restarted at {m1.sequence} (a new job: it adopted the newest version it accepted, "
                       "or started empty)")
    if c0.split()[0] != c1.split()[0]:
        reasons.append(f"{c0.split()[0]} -> {c1.split()[0]}")
    return "; ".join(reasons)


def _run_topics(args) -> Topics:
    return Topics.for_run(args.run) if args.run else from_args(Topics, args)


def cmd_report(args) -> int:
    from riverflink.pipelines import report

    servers = bootstrap(args)
    topics = _run_topics(args)
    from riverflink.pipelines.config import load_verifier

    r = report.read_run(servers, topics, idle=args.idle, verifier=load_verifier(args.verify_key))
    out = Path(args.out or f"report-{args.run or 'default'}")
    page = report.write(r, out, f"riverflink run {args.run or topics.events}")
    print(r.summary())
    print(f"report: {page}")
    return 0


def cmd_top(args) -> int:
    import sys

    from riverflink.pipelines import top
    from riverflink.pipelines.config import ConfigError

    servers = bootstrap(args)
    if not args.run and args.metrics_topic == "metrics":  # no run named: follow the newest
        run = top.newest_run(servers)
        if run is None:
            raise ConfigError(f"no metrics on {servers} yet: start 'riverflink train' (or 'demo'), or name --run")
        args.run = run or None
        print(f"following the newest run: {run or 'the plain topics (metrics, models)'}", file=sys.stderr)
    topics = _run_topics(args)
    top.run(servers, topics.metrics, topics.models, f"riverflink top {args.run or topics.metrics}",
            duration=args.duration, plain=args.plain or not sys.stdout.isatty())
    return 0


def register(command, kafka: argparse.ArgumentParser) -> None:
    """Add the topic commands to the CLI (``command(name, help, *parents)``)."""
    from riverflink.pipelines.sources import DATASETS

    pr = command("produce", "send a River dataset, a JSONL or a CSV file to a topic", kafka)
    pr.add_argument("--topic", default="events")
    src = pr.add_mutually_exclusive_group()
    src.add_argument("--dataset", default="Phishing", choices=DATASETS,
                     help="bundled River dataset, Clicks (synthetic, sparse: one-hot features of Zipf-distributed "
                          "categorical fields and tokens) or Ratings (synthetic ratings for BiasedMF/FunkMF: user, "
                          "item, y); the synthetic ones 100,000 events unless --limit")
    src.add_argument("--file", help="a .jsonl file of {\"x\": {...}, \"y\": ...} lines, or a .csv with a header")
    pr.add_argument("--target", help="label column of a CSV file (a ratings file: the rating, default y)")
    pr.add_argument("--ratings", action="store_true",
                    help="the file holds ratings (user, item, y), sent as {\"user\", \"item\", \"y\"} events for "
                         "BiasedMF/FunkMF; implied by --user-field or --item-field")
    pr.add_argument("--user-field", help="a ratings file's user field or column (default user)")
    pr.add_argument("--item-field", help="a ratings file's item field or column (default item)")
    pr.add_argument("--limit", type=int, help="events to send (datasets are shuffled and repeated to reach it)")
    pr.add_argument("--seed", type=int, default=42)
    pr.add_argument("--start-id", type=int, default=0, help="first event id")
    pr.add_argument("--unlabelled", action="store_true", help="drop labels (to send prediction requests)")
    pr.add_argument("--partitions", type=int, default=2, help="partitions if the topic is created")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=cmd_produce)

    tl = command("tail", "print predictions, models, metrics or dead letters as they arrive", kafka,
                 topic_flags("events", "predictions", "models", "metrics"))
    tl.add_argument("what", nargs="?", default="predictions",
                    help="predictions, training (per-event training predictions), metrics, models, dlq, or a topic")
    tl.add_argument("--from-beginning", action="store_true",
                    help="print the topic's history first (default: only records written from now on)")
    tl.add_argument("--create", action="store_true", help="create the topic if it does not exist, and wait for it")
    tl.add_argument("--limit", type=int, help="stop after N records")
    tl.add_argument("--idle", type=float, help="stop after this many seconds without a record")
    tl.set_defaults(func=cmd_tail)

    rp = command("report", "plots and an HTML page of a run: served vs single-node River, versions, events/s",
                 kafka, topic_flags("events", "models", "metrics"))
    rp.add_argument("--run", help="the run's id (topics events-RUN, models-RUN, metrics-RUN, as 'demo' makes)")
    rp.add_argument("--out", default=None, help="directory for the PNGs and index.html (default: report-RUN)")
    rp.add_argument("--idle", type=float, default=3.0, help="seconds without a record that end reading a topic")
    rp.add_argument("--verify-key", default=os.environ.get("RIVERFLINK_VERIFY_KEY"), metavar="PEM",
                    help="replay only the versions this Ed25519 key verifies (default: $RIVERFLINK_VERIFY_KEY)")
    rp.set_defaults(func=cmd_report)

    tp = command("top", "a live terminal view of a training run (replicas, versions, events/s)", kafka,
                 topic_flags("models", "metrics"))
    tp.add_argument("--run", help="the run's id (topics models-RUN and metrics-RUN)")
    tp.add_argument("--duration", type=float, help="stop after this many seconds (default: Ctrl-C)")
    tp.add_argument("--plain", action="store_true",
                    help="one line a second instead of a live table (the default when output is not a terminal)")
    tp.set_defaults(func=cmd_top)

    md = command("models", "list the model versions on the serving topic", kafka, topic_flags("models"))
    md.add_argument("--model-name", help="only this model")
    md.add_argument("--latest", action="store_true", help="only the newest version of each model (reads the topic's tail, not its history)")
    md.add_argument("--idle", type=float, default=3.0, help="seconds without a record that end the listing")
    md.add_argument("--verify-key", default=os.environ.get("RIVERFLINK_VERIFY_KEY"), metavar="PEM",
                    help="check every document's signature against this Ed25519 key")
    md.set_defaults(func=cmd_models)

    rs = command("reshard", "publish a model's newest version as --shards slices of a new epoch, for a job "
                 "started again with another --shards", kafka, topic_flags("models"))
    rs.add_argument("--model-name", required=True, help="the model to reshard")
    rs.add_argument("--shards", type=int, required=True, help="M' merger shards of the job that goes on (1: unsharded)")
    rs.add_argument("--max-record-bytes", type=int, default=900_000,
                    help="largest record published (a larger slice goes out as pages; the job's --max-record-bytes)")
    rs.add_argument("--signing-key", default=os.environ.get("RIVERFLINK_SIGNING_KEY"), metavar="PEM",
                    help="sign what is published (the job's --signing-key; default: $RIVERFLINK_SIGNING_KEY)")
    rs.add_argument("--verify-key", default=os.environ.get("RIVERFLINK_VERIFY_KEY"), metavar="PEM",
                    help="read only versions this Ed25519 key verifies (default: $RIVERFLINK_VERIFY_KEY)")
    rs.add_argument("--idle", type=float, default=3.0, help="seconds without a record that end reading the topic")
    rs.set_defaults(func=cmd_reshard)

