"""The user-factor records of a recommender: what a replica publishes about the users it owns.  Pure Python.

Users are model-parallel: one replica learns each user, and the user's bias and
latent vector never enter a model document.  The serving job needs them, so a
replica publishes each user it learned from, once per micro-batch, on the
compacted topic ``<models>.users`` keyed by the user (the newest record of each
user is what a reader needs)::

    {"schema": "riverflink.user/1", "model": "default", "user": "u17", "bias": 0.12, "vector": [0.1, ...],
     "events": 12, "writer": "default@2026-12-05T08:00:00/3"}

``events`` counts the user's events the factors learned from, and ``writer``
names the job and replica that wrote it: after a change of ``--replicas`` a
user's new owner adopts its factors from the newest record of another writer
(:mod:`~riverflink.models.user_table`).  When a replica evicts a user it writes
an eviction record (``"evicted": true``, no factors) under the same key: the
serving job forgets the user, and so does a replica that adopted it.  (It is a
record, not a Kafka tombstone with no value: both jobs route a record by the
user id in its value; compaction keeps one small record per evicted user.)

With ``--signing-key`` the replicas sign each record as the merger signs documents
(:mod:`~riverflink.models.signing`: Ed25519 over the record's canonical JSON), and
readers with the verify key (the serving job, ``LiveModel``, the training job
reading its users back) refuse a record without a valid signature.

The user id sits under the training job's ``--user-field`` (``"user"`` by
default), so that the serving job keys a record as it keys that user's
requests.  A reader takes a record only if it passes :func:`read_user_record`;
anything else is refused with a reason, never raised.

>>> from riverflink.models.biased_mf import SeededBiasedMF
>>> model = SeededBiasedMF(n_factors=2)
>>> model.learn_one("ann", "jaws", 4.0)
>>> key, value = user_record("default", model, "ann", writer="job/0")
>>> factors = read_user_record(value, "default", n_factors=2)
>>> key, factors.user, factors.events, factors.writer, factors.evicted
(b'"ann"', 'ann', 1, 'job/0', False)
>>> read_user_record(eviction_record("default", "ann", 1, writer="job/0")[1], "default", n_factors=2).evicted
True
>>> read_user_record(value.replace(b'"bias"', b'"bias_"'), "default", n_factors=2)
'a user-factor record needs a finite number "bias"'
>>> from riverflink.models.signing import Signer
>>> signer = Signer.generate()
>>> _, signed = user_record("default", model, "ann", writer="job/0", signer=signer)
>>> read_user_record(signed, "default", verifier=signer.verifier()).user
'ann'
>>> read_user_record(value, "default", verifier=signer.verifier())
'a user-factor record: document is not signed (a verify key is configured)'
>>> read_user_record(signed.replace(b'"events":1', b'"events":9'), "default", verifier=signer.verifier())
'a user-factor record: signature does not match the document'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from riverflink.models.signing import Signer, Verifier, sign, verify

SCHEMA = "riverflink.user/1"
#: the largest user-factor record a reader takes
MAX_RECORD_BYTES = 64 * 1024


@dataclass(frozen=True)
class UserFactors:
    """One record read: the user's factors, how many of its events they learned, who wrote them; an eviction
    record (``evicted``) has no factors (``bias`` 0, ``vector`` empty)."""

    user: Any
    bias: float
    vector: tuple
    events: int = 0
    writer: str = ""
    evicted: bool = False


def user_record(model_name: str, model: Any, user: Any, user_field: str = "user",
                writer: str = "", signer: Signer | None = None) -> tuple[bytes, bytes]:
    """``(Kafka key, value)`` of ``user``'s record: the key is the id as JSON (text ids keep any character);
    signed by ``signer`` when given."""
    biases = getattr(model, "u_biases", None)
    bias = float(biases.get(user, 0.0)) if biases is not None else 0.0
    vector = model.u_latents.peek(user).tolist()
    events = getattr(model, "u_counts", {}).get(user, 0)
    return _record(user, {"schema": SCHEMA, "model": model_name, user_field: user, "bias": bias, "vector": vector,
                          "events": events, "writer": writer}, signer)


def eviction_record(model_name: str, user: Any, events: int, user_field: str = "user",
                    writer: str = "", signer: Signer | None = None) -> tuple[bytes, bytes]:
    """``(Kafka key, value)`` saying that ``writer`` evicted ``user`` after learning ``events`` of its events."""
    return _record(user, {"schema": SCHEMA, "model": model_name, user_field: user, "evicted": True,
                          "events": events, "writer": writer}, signer)


def _record(user: Any, doc: dict, signer: Signer | None) -> tuple[bytes, bytes]:
    return orjson.dumps(user), orjson.dumps(doc if signer is None else sign(doc, signer))


def read_user_record(value: bytes | None, model_name: str, n_factors: int | None = None,
                     user_field: str = "user", verifier: Verifier | None = None) -> UserFactors | str:
    """The record's :class:`UserFactors`, or why it is refused (not JSON, another schema or model, a bad id, a
    non-finite number, a vector of another length than ``n_factors`` when given, a negative event count or a
    writer that is not short text, no valid signature by ``verifier``'s key when given)."""
    if value is None or len(value) > MAX_RECORD_BYTES:
        return f"a user-factor record must hold 1 to {MAX_RECORD_BYTES} bytes"
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return "a user-factor record is not JSON"
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        return f"a user-factor record must have schema {SCHEMA!r}"
    if doc.get("model") != model_name:
        return f"a user-factor record of model {str(doc.get('model'))[:100]!r}, not {model_name!r}"
    if verifier is not None:
        problem = verify(doc, verifier)
        if problem is not None:
            return f"a user-factor record: {problem}"
    user = doc.get(user_field)
    if isinstance(user, bool) or not isinstance(user, (str, int)) or len(str(user)) > 200:
        return f"a user-factor record needs a string or integer {user_field!r}"
    events, writer = doc.get("events", 0), doc.get("writer", "")
    if isinstance(events, bool) or not isinstance(events, int) or not 0 <= events < 2**53:
        return 'a user-factor record\'s "events" must be a count'
    if not isinstance(writer, str) or len(writer) > 300:
        return 'a user-factor record\'s "writer" must be text of at most 300 characters'
    if doc.get("evicted", False) is not False:
        if doc["evicted"] is not True:
            return 'a user-factor record\'s "evicted" must be true or false'
        return UserFactors(user, 0.0, (), events, writer, evicted=True)
    bias = doc.get("bias")
    if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not math.isfinite(bias):
        return 'a user-factor record needs a finite number "bias"'
    vector = doc.get("vector")
    if not isinstance(vector, list) or not vector or not all(
            type(v) in (int, float) and math.isfinite(v) for v in vector):
        return 'a user-factor record needs a non-empty list of finite numbers "vector"'
    if n_factors is not None and len(vector) != n_factors:
        return f"a user-factor record's vector has {len(vector)} factors, the model {n_factors}"
    return UserFactors(user, float(bias), tuple(float(v) for v in vector), events, writer)
