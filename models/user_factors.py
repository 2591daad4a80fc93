"""The user-factor records of a recommender: what a replica publishes about the users it owns.  Pure Python.

Users are model-parallel: one replica learns each user, and the user's bias and
latent vector never enter a model document.  The serving job needs them, so a
replica publishes each user it learned from, once per micro-batch, on the
compacted topic ``<models>.users`` keyed by the user (the newest record of each
user is what a reader needs)::

    {"schema": "riverflink.user/1", "model": "default", "user": "u17", "bias": 0.12, "vector": [0.1, ...]}

The user id sits under the training job's ``--user-field`` (``"user"`` by
default), so that the serving job keys a record as it keys that user's
requests.  A reader takes a record only if it passes :func:`read_user_record`;
anything else is refused with a reason, never raised.

>>> from riverflink.models.biased_mf import SeededBiasedMF
>>> model = SeededBiasedMF(n_factors=2)
>>> model.learn_one("ann", "jaws", 4.0)
>>> key, value = user_record("default", model, "ann")
>>> key, read_user_record(value, "default", n_factors=2).user
(b'"ann"', 'ann')
>>> read_user_record(value.replace(b'"bias"', b'"bias_"'), "default", n_factors=2)
'a user-factor record needs a finite number "bias"'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

SCHEMA = "riverflink.user/1"
#: the largest user-factor record a reader takes
MAX_RECORD_BYTES = 64 * 1024


@dataclass(frozen=True)
class UserFactors:
    user: Any
    bias: float
    vector: tuple


def user_record(model_name: str, model: Any, user: Any, user_field: str = "user") -> tuple[bytes, bytes]:
    """``(Kafka key, value)`` of ``user``'s record: the key is the id as JSON (text ids keep any character)."""
    biases = getattr(model, "u_biases", None)
    bias = float(biases.get(user, 0.0)) if biases is not None else 0.0
    vector = model.u_latents.peek(user).tolist()
    return orjson.dumps(user), orjson.dumps({"schema": SCHEMA, "model": model_name, user_field: user, "bias": bias,
                                             "vector": vector})


def read_user_record(value: bytes | None, model_name: str, n_factors: int | None = None,
                     user_field: str = "user") -> UserFactors | str:
    """The record's :class:`UserFactors`, or why it is refused (not JSON, another schema or model, a bad id, a
    non-finite number, a vector of another length than ``n_factors`` when given)."""
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
    user = doc.get(user_field)
    if isinstance(user, bool) or not isinstance(user, (str, int)) or len(str(user)) > 200:
        return f"a user-factor record needs a string or integer {user_field!r}"
    bias = doc.get("bias")
    if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not math.isfinite(bias):
        return 'a user-factor record needs a finite number "bias"'
    vector = doc.get("vector")
    if not isinstance(vector, list) or not vector or not all(
            type(v) in (int, float) and math.isfinite(v) for v in vector):
        return 'a user-factor record needs a non-empty list of finite numbers "vector"'
    if n_factors is not None and len(vector) != n_factors:
        return f"a user-factor record's vector has {len(vector)} factors, the model {n_factors}"
    return UserFactors(user, float(bias), tuple(float(v) for v in vector))
