"""A slice version too large for one Kafka record, as pages.  Pure Python.

Kafka refuses records over its message limit (1 MB by default; the merger
publishes at most ``max_doc_bytes``, 900 KB).  A sharded model's whole slice
grows with the model, so a merger shard publishes a slice version whose
document would be larger as ``pages`` documents of the same version
(``meta.page`` = 0 .. pages - 1, ``meta.pages``).  Each page is a valid slice
document of its own (validated and signed like every document): about
``1/pages`` of every per-feature map's entries
(:func:`~riverflink.models.sharding.pages`) and the whole dense part.  A
reader takes the version once it holds all its pages
(:class:`~riverflink.operators.model_feed.ModelFeed`); a manifest names the
version, never a page.  Patches are paged the same way when they are that
large.

>>> from riverflink.models.spec import build
>>> from riverflink.models import get_params, to_wire, dumps
>>> model = build("LogisticRegression")
>>> for i in range(300):
...     model.learn_one({f"feature-{i}": 1.0}, i % 2 == 0)
>>> doc = to_wire(model, name="m", version=9, shard=0, shards=2, epoch=1)
>>> size = len(dumps(doc))
>>> paged = paginate(doc, size, max_bytes=size // 2)
>>> [(p["meta"]["page"], p["meta"]["pages"], p["meta"]["version"]) for p in paged]
[(0, 3, 9), (1, 3, 9), (2, 3, 9)]
>>> all(len(dumps(p)) < size // 2 for p in paged)
True
>>> paginate(doc, size, max_bytes=size) == [doc]
True
"""

from __future__ import annotations

import math

from riverflink.models import sharding
from riverflink.models.api import get_params, set_params
from riverflink.models.wire import from_wire, to_wire

#: pages aim at this share of the limit (entries differ in size: keys, values, maps of different lengths)
FILL = 0.75


def paginate(doc: dict, size: int, max_bytes: int) -> list[dict]:
    """``doc`` (an unsigned slice document, ``size`` bytes encoded) as the documents to publish: ``[doc]`` when it
    fits ``max_bytes``, else its pages (same version and meta, plus ``page`` and ``pages``).  A page may still
    exceed ``max_bytes`` when a few entries hold most of the bytes; the publisher's size check catches that."""
    if size <= max_bytes:
        return [doc]
    n = max(2, math.ceil(size / (FILL * max_bytes)))
    model = from_wire(doc)
    out = []
    for i, params in enumerate(sharding.pages(model, get_params(model), n)):
        page = to_wire(set_params(model.clone(), params))
        page["meta"] = {**doc["meta"], "page": i, "pages": n}
        out.append(page)
    return out
