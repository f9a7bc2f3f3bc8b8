"""Reduction layers (netspec/layers/reduction.py): Reduction, ArgMax.

Forward against a literal implementation of Caffe's ArgMax loop and closed forms, float64
gradient checks, spec errors; and the golden-net table across families (each case of
tests/golden/layers/ built as a net from its prototxt: LRN, Tile, Reduction, ArgMax, SPP,
Filter, BatchReindex, Embed, Parameter, Bias).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from gradcheck import check_gradients, make_layer, rand, run_forward
from layer_cases import golden_net, run_golden

from netspec.errors import SpecError

# -- Reduction ------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize("axis, shape", [(0, (2, 3, 4)), (1, (2, 3, 4)), (-1, (2, 3, 4)),
                                         (2, (2, 3, 4))])
def test_reduction(op, axis, shape):
    coeff = -0.7
    layer, tops = make_layer({"type": "Reduction", "reduction_param":
                              {"operation": op, "axis": axis, "coeff": coeff}}, [shape])
    a = axis % len(shape)
    assert tops == [shape[:a]]
    x = rand(shape, 5)
    _, (y,) = run_forward(layer, [x], tops)
    flat = x.reshape(math.prod(shape[:a]), -1)
    f = {"SUM": flat, "ASUM": np.abs(flat), "SUMSQ": flat ** 2, "MEAN": flat / flat.shape[1]}
    np.testing.assert_allclose(y.data, coeff * f[op].sum(axis=1).reshape(shape[:a]),
                               rtol=1e-12)
    check_gradients(layer, [x], tops)


def test_reduction_defaults_to_a_scalar_sum():
    layer, tops = make_layer({"type": "Reduction"}, [(2, 3)])
    assert tops == [()]
    _, (y,) = run_forward(layer, [np.arange(6.0).reshape(2, 3)], tops)
    assert float(y.data) == 15.0


# -- ArgMax ---------------------------------------------------------------------------------------

def argmax_reference(x, top_k, axis, out_max_val):
    """Caffe's ArgMaxLayer::Forward_cpu, literally (std::greater on (value, index) pairs)."""
    if axis is not None:
        dim = x.shape[axis]
        axis_dist = math.prod(x.shape[axis:]) // dim
        shape = list(x.shape)
        shape[axis] = top_k
    else:
        dim, axis_dist = math.prod(x.shape[1:]), 1
        shape = [1] * max(x.ndim, 3)
        shape[0], shape[2] = x.shape[0], top_k
        if out_max_val:
            shape[1] = 2
    flat, out = x.reshape(-1), np.zeros(math.prod(shape))
    for i in range(x.size // dim):
        pairs = [(flat[(i // axis_dist * dim + j) * axis_dist + i % axis_dist], j)
                 for j in range(dim)]
        pairs.sort(reverse=True)
        for j in range(top_k):
            if out_max_val and axis is not None:
                out[(i // axis_dist * top_k + j) * axis_dist + i % axis_dist] = pairs[j][0]
            elif out_max_val:
                out[2 * i * top_k + j] = pairs[j][1]
                out[2 * i * top_k + top_k + j] = pairs[j][0]
            else:
                out[(i // axis_dist * top_k + j) * axis_dist + i % axis_dist] = pairs[j][1]
    return out.reshape(shape)


@pytest.mark.parametrize("p, shape", [
    ({"top_k": 2, "axis": 1}, (2, 3, 4, 5)),
    ({"top_k": 2, "axis": 1, "out_max_val": True}, (2, 3, 4, 5)),
    ({"top_k": 3, "axis": -1}, (2, 3, 4)),
    ({}, (3, 5)),
    ({"top_k": 3}, (2, 3, 2, 2)),
    ({"top_k": 2, "out_max_val": True}, (2, 3, 2)),
    ({"out_max_val": True}, (4, 6)),
])
def test_argmax_matches_reference(p, shape):
    x = np.round(rand(shape, 6), 1)          # rounded: many ties, ordered as Caffe orders them
    x.reshape(-1)[:4] = 0.5
    layer, tops = make_layer({"type": "ArgMax", "argmax_param": p}, [shape])
    _, (y,) = run_forward(layer, [x], tops)
    want = argmax_reference(x, p.get("top_k", 1), p.get("axis"), p.get("out_max_val", False))
    assert tops == [want.shape]
    np.testing.assert_array_equal(y.data, want)


def test_argmax_ties_prefer_the_larger_index():
    layer, tops = make_layer({"type": "ArgMax", "argmax_param": {"top_k": 3}}, [(1, 4)])
    _, (y,) = run_forward(layer, [np.array([[1.0, 2.0, 1.0, 2.0]])], tops)
    assert y.data.reshape(-1).tolist() == [3.0, 1.0, 2.0]
    assert tops == [(1, 1, 3)]


@pytest.mark.parametrize("p, words", [({"top_k": 0}, "less than 1"),
                                      ({"top_k": 4, "axis": 1}, "top_k"),
                                      ({"top_k": 13}, "top_k")])
def test_argmax_errors(p, words):
    with pytest.raises(SpecError, match=words):
        make_layer({"type": "ArgMax", "argmax_param": p}, [(2, 3, 4)])


def test_caffe_golden_argmax_exact():
    net, g = golden_net("argmax_top2_axis1")
    net.blobs["x"].data[...] = g["input/x"]
    net.forward()
    np.testing.assert_array_equal(net.blobs["y"].data, g["top/y"])


# -- Caffe parity: each golden case as a net built from its prototxt ------------------------------

GOLDEN_CASES = ["lrn_across", "lrn_within", "tile_axis1", "reduction_sum_axis1",
                "reduction_asum_axis1", "reduction_sumsq_axis1", "reduction_mean_axis1",
                "argmax_top2_axis1", "spp_max", "filter", "batch_reindex", "embed",
                "parameter", "bias_axis1"]


#: what each case's backward is compared on (forward-only cases: nothing)
GOLDEN_BACKWARD = {"spp_max": ["x"], "bias_axis1": ["x", "l/0"], "embed": ["l/0", "l/1"],
                   "argmax_top2_axis1": [], "filter": [], "batch_reindex": [], "parameter": []}


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_caffe_golden_net(case):
    net, g = golden_net(case)
    compared = run_golden(net, g)
    assert compared == GOLDEN_BACKWARD.get(case, ["x"])
