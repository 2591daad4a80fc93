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


class PageCollector:
    """The pages of paged versions as they come, per key (a reader's ``(epoch, shard)``, a merger's shard).

    :meth:`add` holds one page's item; once every page of that version has come (in any order) it returns
    their items in page order and forgets them.  One version is collected per key: a page of another version
    (or page count) drops what was held for the key.

    >>> pages = PageCollector()
    >>> pages.add(0, version=7, page=1, of=2, item="b") is None
    True
    >>> pages.add(0, version=7, page=0, of=2, item="a")
    ['a', 'b']
    """

    def __init__(self) -> None:
        #: key -> ((version, pages), {page: item})
        self._open: dict = {}

    def add(self, key, *, version: int | None, page: int, of: int, item) -> list | None:
        held_for, held = self._open.get(key, (None, {}))
        if held_for != (version, of):
            held_for, held = (version, of), {}
            self._open[key] = (held_for, held)
        held[page] = item
        if len(held) < of:
            return None
        del self._open[key]
        return [held[i] for i in range(of)]
