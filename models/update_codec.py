"""A compact binary codec for replica -> merger updates (delta trees).  Pure Python + NumPy.

Model documents on the ``models`` topic stay JSON, readable anywhere; the
updates replicas send the merger inside the training job are the traffic, so
they get a binary form:

* learned leaves (weights, intercepts) as float16 when every value fits
  (|v| <= 65504 and the cast keeps it finite), else float32
  (``precision="float32"`` forces float32, ``"float64"`` sends them exactly);
* statistics (counts, moments, optimizer counters) exact, as float64; with
  ``precision="compact"`` the per-feature statistics maps that are not integer
  (FTRL's ``z`` and ``n``) go as float32 (a relative rounding of 6e-8 per
  update), learned leaves as with ``"float16"``, a scaler's moments stay
  exact, and the header (the key table above all) is zlib-compressed (codec
  version 3);
* a moments count ``n`` sent once when every feature shares it (dense events);
* every key (feature or class name) once, in a key table shared by all stages, or, for a map
  whose keys are all integers in ``[0, 2**32)`` (hashed features), the integers themselves;
* a map's keys once when the map before it in the tree has the same keys in the same order
  (FTRL's ``z``, ``n`` and weights), as the narrowest unsigned integers that hold them;
* a one-byte codec version first.

Layout: ``version byte | uint32 header length | orjson header | arrays``.

>>> from river import preprocessing, linear_model
>>> m = preprocessing.StandardScaler() | linear_model.LogisticRegression()
>>> for i in range(20): m.learn_one({f"feature_{j}": float(i % (j + 2)) for j in range(8)}, i % 2 == 0)
>>> from riverflink.models import get_params, adapter_for
>>> delta = adapter_for(m).delta(m, get_params(m), None)
>>> back = decode(encode(m, delta, precision="float64"))
>>> back == delta
True
>>> len(encode(m, delta)) < len(orjson.dumps(delta, option=orjson.OPT_NON_STR_KEYS))
True
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np
import orjson

from riverflink.models import numeric
from riverflink.models.adapter import adapter_for

#: 2: raw integer keys (``ki``); version 1 updates (a savepoint's, in flight) still decode; 3: version 2 with a
#: zlib-compressed header (``precision="compact"``)
VERSION = 2
COMPRESSED = 3
VERSIONS = (1, 2, 3)
#: the largest header a compressed update may inflate to
MAX_HEADER = 256 << 20
PRECISIONS = ("float16", "float32", "float64", "compact")
_F16_MAX = 65504.0


class _Writer:
    def __init__(self, precision: str):
        self.precision = precision
        #: (type, key) -> its id in the key table, and the table's tokens (1, 1.0 and True are three keys)
        self.keys: dict = {}
        self.tokens: list = []
        self.arrays: list[np.ndarray] = []
        #: the last map's keys, how they went ("k": key-table ids, "ki": raw integers), their array and types
        self.last: tuple | None = None

    def keys_array(self, keys, raw: bool = True) -> tuple[str, int]:
        """``(how, array)`` for a map's ``keys``: the previous map's array when it has the same keys in the same
        order (a component's maps mostly do); else, with ``raw``, the integers themselves when every key is an
        int in ``[0, 2**32)`` (hashed features: no key table), or their ids in the key table.  Arrays use the
        narrowest unsigned type that holds them."""
        keys = list(keys)
        kinds = list(map(type, keys))  # (1, 1.0 and True are equal keys, but three features)
        if self.last is not None and self.last[0] == keys and self.last[3] == kinds and (raw or self.last[1] == "k"):
            return self.last[1], self.last[2]
        if raw and keys and set(map(type, keys)) == {int} and min(keys) >= 0 and max(keys) < 1 << 32:
            how, ids, bound = "ki", keys, max(keys) + 1
        else:
            how = "k"
            ids = [self.key_id(k) for k in keys]
            bound = len(self.tokens)
        self.last = (keys, how, self.array(np.array(ids, dtype=_narrowest(bound))), kinds)
        return how, self.last[2]

    def key_id(self, k: Any) -> int:
        """``k``'s id in the key table (added when new)."""
        ident = (type(k), k)
        i = self.keys.get(ident)
        if i is None:
            i = self.keys[ident] = len(self.tokens)
            self.tokens.append(_key_token(k))
        return i

    def array(self, a: np.ndarray) -> int:
        self.arrays.append(np.ascontiguousarray(a))
        return len(self.arrays) - 1

    def values(self, values: list, learned: bool, statistic_map: bool = False) -> int:
        """The array of ``values`` at the writer's precision (``learned``: a learned leaf; ``statistic_map``: a
        per-feature map of float statistics, float32 with ``"compact"``)."""
        a = np.asarray(values, dtype=np.float64)
        if statistic_map and not learned and self.precision == "compact":
            return self.array(a.astype(np.float32))
        if learned and self.precision != "float64":
            if self.precision == "float16" and (a.size == 0 or np.max(np.abs(a)) <= _F16_MAX):
                return self.array(a.astype(np.float16))
            return self.array(a.astype(np.float32))
        return self.array(a)


def _narrowest(bound: int) -> type:
    """The narrowest unsigned integer type holding ``0 .. bound - 1``."""
    return np.uint8 if bound <= 1 << 8 else np.uint16 if bound <= 1 << 16 else np.uint32


def _key_token(k: Any) -> Any:
    # JSON keeps str, int and bool apart; tuples and floats are tagged
    if isinstance(k, (str, bool, int)) or k is None:
        return k if not isinstance(k, bool) else {"b": k}
    return {"f": k} if isinstance(k, float) else {"r": repr(k)}


def _key_value(t: Any) -> Any:
    if isinstance(t, dict):
        if "b" in t:
            return bool(t["b"])
        if "f" in t:
            return float(t["f"])
        return t["r"]
    return t


def _encode(node: Any, learned: bool, w: _Writer) -> Any:
    if isinstance(node, dict):
        if node and all(isinstance(v, tuple) and len(v) == 3 for v in node.values()):  # moments (n, mean, m2)
            ns = [v[0] for v in node.values()]
            shared = len(set(ns)) == 1
            return {"m": w.keys_array(node, raw=False)[1], **({"n": ns[0]} if shared else {"na": w.values(ns, False)}),
                    "mean": w.values([v[1] for v in node.values()], False),
                    "m2": w.values([v[2] for v in node.values()], False)}
        if node and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in node.values()):
            ints = all(isinstance(v, int) for v in node.values())
            how, ids = w.keys_array(node)
            return {how: ids, "v": w.values(list(node.values()), learned and not ints, statistic_map=not ints),
                    "i": ints}
        return {"d": [[_key_token(k), _encode(v, learned, w)] for k, v in node.items()]}
    if isinstance(node, tuple):
        return {"t": list(node)}
    if isinstance(node, list):
        return {"l": [_encode(v, learned, w) for v in node]}
    return {"x": node}


def _encode_tree(model: Any, tree: dict, w: _Writer) -> dict:
    from river import compose

    if isinstance(model, compose.Pipeline):
        return {"steps": [_encode_tree(s, t, w) for s, t in zip(model.steps.values(), tree["steps"])]}
    kinds = adapter_for(model).kinds
    return {k: _encode(v, kinds.get(k) == numeric.LEARNED, w) for k, v in tree.items()}


def encode(model: Any, tree: dict, precision: str = "float16") -> bytes:
    """Bytes for ``tree``, a delta (or parameter) tree of ``model``'s family."""
    if precision not in PRECISIONS:
        raise ValueError(f"update precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    w = _Writer(precision)
    body = _encode_tree(model, tree, w)
    header = orjson.dumps({"keys": w.tokens, "arrays": [[a.dtype.str, a.size] for a in w.arrays], "tree": body})
    version = VERSION
    if precision == "compact":  # (level 1: the header shrinks to about a third, for about 0.7 µs per event learned)
        version, header = COMPRESSED, zlib.compress(header, 1)
    return b"".join([bytes([version]), struct.pack("<I", len(header)), header, *(a.tobytes() for a in w.arrays)])


def decode(data: bytes) -> dict:
    """The tree :func:`encode` wrote (learned leaves at the precision they were sent with, as floats);
    ``ValueError`` for anything else."""
    try:
        return _decode(data)
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - malformed bytes are a ValueError, whatever they break
        raise ValueError(f"malformed update: {type(e).__name__}: {str(e)[:200]}") from None


def _decode(data: bytes) -> dict:
    if not data or data[0] not in VERSIONS:
        raise ValueError(f"unknown update codec version {data[:1]!r}")
    (n,) = struct.unpack_from("<I", data, 1)
    header = data[5: 5 + n]
    if data[0] == COMPRESSED:
        inflate = zlib.decompressobj()
        header = inflate.decompress(header, MAX_HEADER)
        if inflate.unconsumed_tail or not inflate.eof:
            raise ValueError("malformed update: its compressed header is cut short or inflates past "
                             f"{MAX_HEADER} bytes")
    header = orjson.loads(header)
    arrays, offset = [], 5 + n
    for dtype, size in header["arrays"]:
        dt = np.dtype(dtype)
        arrays.append(np.frombuffer(data, dtype=dt, count=size, offset=offset))
        offset += dt.itemsize * size
    keys = [_key_value(t) for t in header["keys"]]

    def node(e: dict) -> Any:
        if "m" in e:
            ks = [keys[i] for i in arrays[e["m"]]]
            ns = [e["n"]] * len(ks) if "n" in e else arrays[e["na"]].tolist()
            return {k: (_num(c), float(mu), float(m2)) for k, c, mu, m2 in
                    zip(ks, ns, arrays[e["mean"]].tolist(), arrays[e["m2"]].tolist())}
        if "k" in e:
            vals = arrays[e["v"]].tolist()
            return {keys[i]: (int(v) if e["i"] else float(v)) for i, v in zip(arrays[e["k"]].tolist(), vals)}
        if "ki" in e:  # raw integer keys (hashed features)
            vals = arrays[e["v"]].tolist()
            return dict(zip(arrays[e["ki"]].tolist(), map(int, vals) if e["i"] else map(float, vals)))
        if "d" in e:
            return {_key_value(k): node(v) for k, v in e["d"]}
        if "t" in e:
            return tuple(e["t"])
        if "l" in e:
            return [node(v) for v in e["l"]]
        return e["x"]

    def tree(t: dict) -> dict:
        if "steps" in t and isinstance(t["steps"], list):
            return {"steps": [tree(s) for s in t["steps"]]}
        return {k: node(v) for k, v in t.items()}

    return tree(header["tree"])


def _num(v: Any) -> Any:
    f = float(v)
    return int(f) if f.is_integer() else f
