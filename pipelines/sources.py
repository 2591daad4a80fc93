"""Event sources for ``riverflink produce`` and the demo: River datasets, synthetic streams, JSONL and CSV files."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Iterator

from riverflink.models.rating import Rating
from riverflink.operators.events import RatingFields
from riverflink.pipelines.config import ConfigError

#: River datasets bundled with the package (no download)
RIVER_DATASETS = ("Phishing", "Bananas", "TrumpApproval", "ChickWeights", "SolarFlare", "ImageSegments")
#: seeded synthetic streams (:mod:`~riverflink.pipelines.click_stream`), and their length when none is asked
SYNTHETIC = {"Clicks": 100_000, "Ratings": 100_000}
DATASETS = RIVER_DATASETS + tuple(SYNTHETIC)

#: deliberately malformed events (each must end up on the dead-letter topic)
MALFORMED: tuple[bytes, ...] = (
    b"this is not json",
    b'{"x": [1, 2, 3], "y": true}',
    b'{"x": {"a": "text"}, "y": false}',
    b'{"x": {"a": 1.0}}',
    b"\xff\xfe\x00 binary garbage",
    b'["an", "array"]',
    b'{"x": {"a": 1e999}, "y": true}',
    b'{"x": {"a": 1e200}, "y": true}',
    b'{"x": {"a": 1.0}, "y": [1, 2]}',
    b'{"x": {"a": 1.0}, "y": "a label a binary classifier refuses"}',
)


def dataset_events(name: str, n: int | None = None, seed: int = 42) -> Iterator[tuple[dict, object]]:
    """``(x, y)`` from a bundled River dataset (:func:`river_events`) or a synthetic stream (``Clicks``: sparse
    one-hot features, :func:`~riverflink.pipelines.click_stream.click_events`; ``Ratings``: a recommender's
    ``(Rating, rating)``, :func:`~riverflink.pipelines.ratings_stream.rating_events`; ``n`` defaults to
    100,000)."""
    if name == "Clicks":
        from riverflink.pipelines.click_stream import click_events

        return click_events(SYNTHETIC[name] if n is None else n, seed=seed)
    if name == "Ratings":  # (a recommender's: Rating(user, item) and a rating, pipelines/ratings_stream.py)
        from riverflink.pipelines.ratings_stream import rating_events

        return rating_events(SYNTHETIC[name] if n is None else n, seed=seed)
    return river_events(name, n, seed)


def dataset_size(name: str) -> int:
    """How many events :func:`dataset_events` gives for ``name`` when no count is asked."""
    if name in SYNTHETIC:
        return SYNTHETIC[name]
    from river import datasets

    return getattr(datasets, name)().n_samples


def river_events(name: str, n: int | None = None, seed: int = 42) -> Iterator[tuple[dict, object]]:
    """``(x, y)`` from a bundled River dataset, shuffled and repeated to ``n`` events (default: once)."""
    from river import datasets

    if name not in RIVER_DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    base = [(_plain(x), y) for x, y in getattr(datasets, name)()]
    rng = random.Random(seed)
    total = len(base) if n is None else n
    count = 0
    while count < total:
        chunk = base[:]
        rng.shuffle(chunk)
        for x, y in chunk[: total - count]:
            yield x, y
        count += min(len(chunk), total - count)


def _plain(x: dict) -> dict:
    """Numeric features only, with string names (River's StandardScaler wants string names)."""
    return {str(k): float(v) for k, v in x.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def file_events(path: str, target: str | None, ratings: RatingFields | None = None) -> Iterator[tuple[dict, object]]:
    """``(x, y)`` from a JSONL file (one event object per line) or a CSV with a header row.

    ``ratings``: a recommender's file, whose events name a user and an item (fields or columns ``ratings.user``
    and ``ratings.item``; the rating is ``y``, or the CSV column ``target``, default ``y``): ``(Rating, y)``.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"no such file: {path}")
    if ratings is not None:
        yield from _rating_file(p, path, target or "y", ratings)
        return
    if p.suffix in (".jsonl", ".json", ".ndjson"):
        with p.open(encoding="utf-8", errors="strict") as f:
            for n, doc in _json_objects(f, path):
                if not isinstance(doc.get("x"), dict):
                    raise ConfigError(f"{path}:{n}: expected {{\"x\": {{...}}, \"y\": ...}}")
                yield doc["x"], doc.get("y")
        return
    if not target:
        raise ConfigError("a CSV source needs --target COLUMN (the label column)")
    with p.open(newline="", encoding="utf-8", errors="strict") as f:
        reader = csv.DictReader(_lines(f, path))
        for row in reader:
            if target not in row:
                raise ConfigError(f"{path}: CSV has no column {target!r} (columns: {', '.join(reader.fieldnames or [])})")
            y = row.pop(target)
            try:
                x = {k: float(v) for k, v in row.items() if k is not None and v not in ("", None)}
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{path}:{reader.line_num}: {e}") from None
            yield x, _label(y)


def _rating_file(p: Path, path: str, target: str, fields: RatingFields) -> Iterator[tuple[Rating, float]]:
    """A recommender's ratings from a JSONL or CSV file (see :func:`file_events`)."""
    def rating(doc: dict, where: str) -> tuple[Rating, float]:
        missing = [f for f in (fields.user, fields.item, target) if doc.get(f) in (None, "")]
        if missing:
            raise ConfigError(f"{where}: a rating needs {', '.join(repr(f) for f in missing)} (rename the fields "
                              "with --user-field, --item-field, --target)")
        try:
            y = float(doc[target])
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: the rating {target!r} must be a number, got {doc[target]!r}") from None
        user, item = doc[fields.user], doc[fields.item]
        if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in (user, item)):
            raise ConfigError(f"{where}: user and item ids must be strings or integers")
        context = doc.get("x") if isinstance(doc.get("x"), dict) else {}
        return Rating(user, item, context), y

    with p.open(newline="", encoding="utf-8", errors="strict") as f:
        if p.suffix in (".jsonl", ".json", ".ndjson"):
            for n, doc in _json_objects(f, path):
                yield rating(doc, f"{path}:{n}")
            return
        reader = csv.DictReader(_lines(f, path))
        for row in reader:
            yield rating(row, f"{path}:{reader.line_num}")


def _json_objects(f, path: str) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` of each non-blank line of a JSONL file; a line that is not a JSON object is a
    ``ConfigError`` naming it."""
    for n, line in enumerate(_lines(f, path), 1):
        if line.strip():
            try:
                doc = json.loads(line)
            except ValueError as e:
                raise ConfigError(f"{path}:{n}: not a JSON object: {e}") from None
            if not isinstance(doc, dict):
                raise ConfigError(f"{path}:{n}: expected a JSON object")
            yield n, doc


def _lines(f, path: str):
    try:
        yield from f
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _label(text: str):
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        return text


def encode_events(events, *, start_id: int = 0, with_label: bool = True) -> Iterator[bytes]:
    """One JSON event per ``(x, y)``, ids from ``start_id``; a recommender's ``Rating`` as ``user``, ``item``
    (and ``x`` when it has context)."""
    for i, (x, y) in enumerate(events, start_id):
        if type(x) is Rating:
            doc = {"id": i, "user": x.user, "item": x.item, **({"x": x.context} if x.context else {})}
        else:
            doc = {"id": i, "x": x}
        if with_label:
            doc["y"] = y
        yield json.dumps(doc).encode()
