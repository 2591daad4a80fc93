"""Delay compensation per input direction (softmax): the matrix a replica sends, its wire form, and what the
merger subtracts with it.  Pure logic, no broker."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from river import linear_model

from riverflink import models
from riverflink.models.spec import build
from riverflink.operators import delay_compensation
from riverflink.operators.messages import (Directions, ReplicaUpdate, UndecodableUpdate, decode_update,
                                           encode_update)


def test_the_matrix_undoes_each_input_direction_as_far_as_the_replicas_steps_would():
    """Along an eigenvector of M with eigenvalue m, ``S`` steps at ``lr h`` undo ``1 - (1 - lr h m)^S`` of an
    offset: a stiff direction more than a soft one, whatever the basis the features are in."""
    rotation = np.array([[1.0, 1.0], [1.0, -1.0]]) / np.sqrt(2)
    M = rotation @ np.diag([9.0, 0.1]) @ rotation.T
    d = delay_compensation.directions(build("StandardScaler|SoftmaxRegression"), 0.1, 50, (["a", "b"], M))
    stiff, soft = rotation[:, 0], rotation[:, 1]
    assert d.matrix() @ stiff == pytest.approx((1 - (1 - 0.001 * 9.0) ** 50) * stiff)
    assert d.matrix() @ soft == pytest.approx((1 - (1 - 0.001 * 0.1) ** 50) * soft)
    # only softmax behind a scaler gets directions; binary and regression models keep the scalar kappa
    assert delay_compensation.directions(build("StandardScaler|LogisticRegression"), 0.1, 50, (["a", "b"], M)) is None
    kappa, none = delay_compensation.compensation(build("StandardScaler|LogisticRegression"), 0.1, 50, 9.0,
                                                  (["a", "b"], M))
    assert none is None and kappa == pytest.approx(1 - (1 - 0.001 * 9.0) ** 50)
    # a softmax replica without an estimate yet sends neither: the merger falls back to the scalar discount
    assert delay_compensation.compensation(build("StandardScaler|SoftmaxRegression"), 0.1, 50, 9.0, None) == \
        (None, None)


def test_the_merger_subtracts_the_matrix_times_each_class_rows_offset():
    template = build("StandardScaler|SoftmaxRegression")
    d = Directions(("a", "b"), (0.5, 0.25, 0.75))  # C = [[0.5, 0.25], [0.25, 0.75]]
    offset = {"steps": [{}, {"weights": {"x": {"a": 1.0, "b": 2.0, "c": 4.0}, "y": {"b": -2.0}}}]}
    out = delay_compensation.directed(template, offset, d, kappa=0.1)
    w = out["steps"][1]["weights"]
    assert w["x"] == pytest.approx({"a": 0.5 + 0.5, "b": 0.25 + 1.5, "c": 0.4})  # "c": outside C, kappa
    assert w["y"] == pytest.approx({"b": -1.5})


def test_directions_travel_with_the_update_and_a_broken_block_is_refused():
    m = linear_model.SoftmaxRegression()
    m.learn_one({"a": 1.0, "b": 2.0}, "x")
    d = Directions(("a", 3), (0.5, -0.25, 0.125))
    u = ReplicaUpdate("m", "1", 0, models.delta(m), events=1, sent_at=0.0, seq=4, kappa=0.2, shard=2, directions=d)
    data = encode_update(m, u, "float64")
    assert decode_update(data) == u
    block = d.encode()
    at = data.index(block)

    def raw(names: bytes, triangle: bytes, n: int = 2) -> bytes:
        return struct.pack("<HI", n, len(names)) + names + triangle

    good = struct.pack("<3e", 0.5, -0.25, 0.125)
    assert raw(b'["a",3]', good) == block
    for broken in (raw(b'["a",3]', struct.pack("<3e", 0.5, float("inf"), 0.125)),  # an entry outside [-1, 1]
                   raw(b'["a","a"]', good),  # the same feature twice
                   raw(b'["a",true]', good),  # a feature that is not a str or int
                   raw(b'["a",3]', good[:-2] + b"\x00"),  # a short triangle
                   raw(b'["a",3,"c"]', good)):  # more features than the triangle covers
        with pytest.raises(ValueError, match="malformed directions"):
            Directions.decode(broken)
        # inside an update (the head's length updated): refused, and its replica and seq still known
        head = bytearray(data[:at])
        struct.pack_into("<I", head, len(head) - len(b"m1") - 6, len(broken))
        with pytest.raises(UndecodableUpdate) as e:
            decode_update(bytes(head) + broken + data[at + len(block):])
        assert e.value.replica == "1" and e.value.seq == 4 and "malformed directions" in str(e.value)
