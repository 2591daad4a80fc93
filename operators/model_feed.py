"""The ``models`` topic as the jobs see it: validated before it is stored, newest version wins.

Broadcast state :data:`LATEST_MODEL` maps a model name to a :class:`Accepted`
entry.  A record is stored only when :func:`accept` finds it a valid, newer,
plausible version of the job's model:

* a ``riverflink.model/1`` JSON document (schema, allow-listed classes,
  finite values, shapes: :func:`riverflink.models.from_wire` rebuilds it);
* of this job's model name;
* with an integer version in ``[1, now in ms + max_skew_ms]``, so a forged
  far-future version can neither take over nor pin the serving model;
* no larger than ``max_bytes``;
* when a verify key is configured, signed by its private half
  (:mod:`riverflink.models.signing`); unsigned or badly signed documents are
  refused.

Anything else is logged, counted and ignored: it never crashes a job.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from riverflink import models
from riverflink.models.document import ModelMeta, read_document
from riverflink.models.signing import Verifier, verify

log = logging.getLogger("riverflink")


@dataclass(frozen=True)
class FeedRules:
    model_name: str
    #: how far ahead of this machine's clock a version (ms since the epoch) may be
    max_skew_ms: int = 60_000
    max_bytes: int = 8 << 20
    #: accept only documents signed by this key's private half (None: no signature check)
    verifier: Verifier | None = None
    #: a server (serving job, LiveModel) passes over versions the quality gate holds back; replicas take them
    serving: bool = False


@dataclass(frozen=True)
class Accepted:
    """A validated version: its metadata and its JSON text (to rebuild the model after a restore)."""

    meta: ModelMeta
    text: str

    @property
    def version(self) -> int:
        return self.meta.version  # type: ignore[return-value]  (accept() admits integer versions only)


def accept(value: str | bytes, rules: FeedRules, current: int | None,
           now: float | None = None) -> tuple[Accepted | None, Any, str | None]:
    """``(entry, model, None)`` for a valid newer version; ``(None, None, reason)`` otherwise.

    The record is parsed once; ``model`` is the estimator ``from_wire`` built
    while validating it.  ``reason`` is ``None`` (not an error) for another
    model's document or an older/duplicate version.
    """
    if len(value) > rules.max_bytes:
        return None, None, f"model document of {len(value)} bytes exceeds {rules.max_bytes}"
    document = read_document(value)
    if document is None:
        return None, None, "not a riverflink.model/1 document"
    doc, meta = document.doc, document.meta
    if meta.name is None:
        return None, None, "model document without a model name"
    if meta.name != rules.model_name:
        return None, None, None
    version = meta.version
    now = time.time() if now is None else now
    if version is None or not 1 <= version <= int(now * 1000) + rules.max_skew_ms:
        shown = str(doc["meta"].get("version"))[:40]
        return None, None, f"version {shown!r} is not an integer in [1, now + {rules.max_skew_ms} ms]"
    if current is not None and version <= current:
        return None, None, None
    if rules.verifier is not None:
        bad = verify(doc, rules.verifier)
        if bad:
            return None, None, f"version {version} refused: {bad}"
    try:
        model = models.from_wire(doc)
    except Exception as e:  # noqa: BLE001 - any invalid document is refused, whatever it breaks
        return None, None, f"version {version} refused: {type(e).__name__}: {str(e)[:200]}"
    if rules.serving and meta.held:
        return None, None, None  # replicas learn on from it; serving keeps the previous version
    text = value.decode() if isinstance(value, bytes) else value
    return Accepted(meta, text), model, None
