"""Structure layers (netspec/layers/structure.py): Split, Concat, Eltwise, Slice, Silence, Filter,
BatchReindex.

Gradient checks in float64, forward values worked out by hand, Caffe's aliasing and tie rules,
spec errors. The cross-family checks of no propagate_down, float32 end to end and the GPU against
the CPU over the Split/Concat/Eltwise, ReLU/Sigmoid/TanH/Dropout and Flatten specs live here too.
"""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import F64, check_gradients, forward_backward, make_layer, rand, run_forward
from layer_cases import ACTIVATIONS, DROPOUT, F32, SHAPE, forward_backward_pair, in_place

from netspec.backend import cupy_available, get_backend, to_numpy
from netspec.blob import Blob
from netspec.errors import NetspecError, SpecError
from netspec.net import Net
from netspec.spec import parse_net
from netspec.spec.net import LayerParameter

# -- Split ----------------------------------------------------------------------------------------

SPLIT3 = {"type": "Split", "bottom": "x", "top": ["a", "b", "c"]}


def test_split_gradient():
    layer, shapes = make_layer(SPLIT3, [SHAPE])
    assert shapes == [SHAPE] * 3
    check_gradients(layer, [rand(SHAPE)], shapes)


def test_split_aliases_unless_copy_requested():
    layer, shapes = make_layer(SPLIT3, [SHAPE])
    layer.copy_tops = {1}
    bottom, top = run_forward(layer, [rand(SHAPE)], shapes)
    assert top[0].data is bottom[0].data and top[2].data is bottom[0].data
    assert not np.shares_memory(top[1].data, bottom[0].data)
    np.testing.assert_array_equal(top[1].data, bottom[0].data)
    top[1].data *= 0                                   # an in-place consumer of top 1
    assert np.all(top[0].data == bottom[0].data) and np.any(bottom[0].data != 0)


def test_split_copy_stays_separate_over_iterations():
    layer, shapes = make_layer(SPLIT3, [SHAPE])
    layer.copy_tops = {0, 2}
    x = rand(SHAPE)
    bottom, top = run_forward(layer, [x], shapes)
    for _ in range(2):
        layer.forward(bottom, top)
        top[0].data += 1.0                             # in-place consumers
        top[2].data *= 2.0
        np.testing.assert_array_equal(bottom[0].data, x)
        assert top[1].data is bottom[0].data


def test_split_single_top():
    spec = {"type": "Split", "bottom": "x", "top": "a"}
    layer, shapes = make_layer(spec, [SHAPE])
    check_gradients(layer, [rand(SHAPE)], shapes)


# -- Concat ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("param, shapes_in, want", [
    ({"axis": 1}, [(2, 3, 4), (2, 1, 4), (2, 5, 4)], (2, 9, 4)),
    ({"axis": 0}, [(2, 3, 4), (3, 3, 4)], (5, 3, 4)),
    ({"axis": -1}, [(2, 3, 4), (2, 3, 2)], (2, 3, 6)),
    ({"concat_dim": 0}, [(1, 3), (2, 3)], (3, 3)),             # legacy concat_dim
    ({}, [(2, 3)], (2, 3)),
])
def test_concat(param, shapes_in, want):
    layer, shapes = make_layer({"type": "Concat", "concat_param": param}, shapes_in)
    assert shapes == [want]
    xs = [rand(s, seed=i) for i, s in enumerate(shapes_in)]
    _, top = run_forward(layer, xs, shapes)
    np.testing.assert_array_equal(top[0].data, np.concatenate(xs, axis=layer.axis))
    check_gradients(layer, xs, shapes)


def test_concat_propagate_down_subset():
    layer, shapes = make_layer({"type": "Concat"}, [(2, 3), (2, 4)])
    bottom, top = run_forward(layer, [rand((2, 3)), rand((2, 4))], shapes)
    bottom[1].diff = np.full((2, 4), 7.0)
    top[0].diff = rand(shapes[0])
    layer.backward(top, [True, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, top[0].diff[:, :3])
    assert np.all(bottom[1].diff == 7.0)


def test_concat_shape_mismatch():
    with pytest.raises(NetspecError, match="must match"):
        make_layer({"type": "Concat"}, [(2, 3, 4), (3, 3, 4)])


def test_concat_axis_and_concat_dim_together_is_an_error():
    with pytest.raises(NetspecError, match="not both"):
        make_layer({"type": "Concat", "concat_param": {"axis": 1, "concat_dim": 0}},
                   [(2, 3), (2, 3)])


# -- Eltwise --------------------------------------------------------------------------------------

ELTWISE = [
    {"operation": "SUM"},
    {"operation": "SUM", "coeff": [1.0, -0.5, 2.0]},
    {"operation": "PROD"},
    {"operation": "PROD", "stable_prod_grad": False},
    {"operation": "MAX"},
]


@pytest.mark.parametrize("param", ELTWISE, ids=lambda p: str(p))
def test_eltwise_gradient(param):
    xs = [rand(SHAPE, seed=i) for i in range(3)]
    layer, shapes = make_layer({"type": "Eltwise", "eltwise_param": param}, [SHAPE] * 3)
    check_gradients(layer, xs, shapes)
    two, shapes2 = make_layer({"type": "Eltwise", "eltwise_param": {
        **param, "coeff": param.get("coeff", [])[:2]}}, [SHAPE] * 2)
    check_gradients(two, xs[:2], shapes2)


def test_eltwise_forward_values():
    a, b, c = (np.array([1.0, -2.0, 3.0]), np.array([2.0, 5.0, -1.0]), np.array([0.5, 4.0, 3.0]))
    for param, want in [({"operation": "SUM", "coeff": [1, -1, 2]}, a - b + 2 * c),
                        ({"operation": "PROD"}, a * b * c),
                        ({"operation": "MAX"}, np.maximum(np.maximum(a, b), c))]:
        layer, shapes = make_layer({"type": "Eltwise", "eltwise_param": param}, [(3,)] * 3)
        _, top = run_forward(layer, [a, b, c], shapes)
        np.testing.assert_allclose(top[0].data, want)


def test_eltwise_max_ties_follow_caffe():
    # Caffe: bottom 1 wins a tie with bottom 0 (`a > b ? 0 : 1`); later bottoms need to be larger
    a = np.array([1.0, 1.0, 0.0])
    b = np.array([1.0, 0.0, 2.0])
    c = np.array([1.0, 1.0, 2.0])
    layer, shapes = make_layer({"type": "Eltwise", "eltwise_param": {"operation": "MAX"}},
                               [(3,)] * 3)
    _, (da, db, dc) = forward_backward_pair(layer, [a, b, c], shapes, [np.ones(3)])
    np.testing.assert_array_equal(layer.max_idx, [1, 0, 1])
    np.testing.assert_array_equal(da, [0, 1, 0])
    np.testing.assert_array_equal(db, [1, 0, 1])
    np.testing.assert_array_equal(dc, [0, 0, 0])


def test_eltwise_prod_with_zero_stable_gradient():
    a, b = np.array([0.0, 2.0]), np.array([3.0, 4.0])
    layer, shapes = make_layer({"type": "Eltwise", "eltwise_param": {"operation": "PROD"}},
                               [(2,)] * 2)
    _, (da, db) = forward_backward_pair(layer, [a, b], shapes, [np.ones(2)])
    np.testing.assert_array_equal(da, [3.0, 4.0])
    np.testing.assert_array_equal(db, [0.0, 2.0])


@pytest.mark.parametrize("op", ["SUM", "MAX"])
def test_eltwise_forward_in_place_on_bottom0(op):
    xs = [rand(SHAPE, seed=i) for i in range(3)]
    spec = {"type": "Eltwise", "eltwise_param": {"operation": op}}
    layer, shapes = make_layer(spec, [SHAPE] * 3)
    _, top = run_forward(layer, xs, shapes)
    blobs = [Blob(f"b{i}", x.copy(), np) for i, x in enumerate(xs)]
    layer.forward(blobs, blobs[:1])
    np.testing.assert_array_equal(blobs[0].data, top[0].data)


@pytest.mark.parametrize("spec, shapes_in, match", [
    ({"eltwise_param": {"operation": "PROD", "coeff": [1, 2]}}, [(2,), (2,)], "only allowed"),
    ({"eltwise_param": {"coeff": [1, 2, 3]}}, [(2,), (2,)], "one per bottom"),
    ({}, [(2,), (3,)], "equal shapes"),
    ({}, [(2,)], "at least 2"),
])
def test_eltwise_errors(spec, shapes_in, match):
    with pytest.raises(NetspecError, match=match):
        make_layer({"type": "Eltwise", **spec}, shapes_in)


# -- Slice ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("p, n_tops, shape, bounds, axis", [
    ({}, 3, (2, 6, 3), [0, 2, 4, 6], 1),
    ({"slice_point": [1, 4]}, 3, (2, 6, 3), [0, 1, 4, 6], 1),
    ({"axis": -1, "slice_point": 2}, 2, (2, 6, 3), [0, 2, 3], 2),
    ({"slice_dim": 0, "slice_point": [1]}, 2, (3, 2), [0, 1, 3], 0),
    ({}, 1, (2, 5), [0, 5], 1),
])
def test_slice(p, n_tops, shape, bounds, axis):
    top_names = [f"t{i}" for i in range(n_tops)]
    layer, tops = make_layer({"type": "Slice", "top": top_names, "slice_param": p}, [shape])
    x = rand(shape)
    _, top = run_forward(layer, [x], tops)
    for t, lo, hi in zip(top, bounds, bounds[1:]):
        np.testing.assert_array_equal(t.data, np.take(x, range(lo, hi), axis=axis))
    check_gradients(layer, [x], tops)


@pytest.mark.parametrize("p, n_tops, words", [
    ({"slice_point": [2]}, 3, "slice_point"),
    ({"slice_point": [3, 2]}, 3, "increasing"),
    ({"slice_point": [6]}, 2, "increasing"),
    ({}, 4, "evenly"),
    ({"axis": 1, "slice_dim": 1}, 2, "not both"),
])
def test_slice_errors(p, n_tops, words):
    with pytest.raises(NetspecError, match=words):
        make_layer({"type": "Slice", "top": [f"t{i}" for i in range(n_tops)],
                    "slice_param": p}, [(2, 6, 3)])


# -- Silence --------------------------------------------------------------------------------------

def bare_layer(spec, bottom_shapes, backend=F64, phase="TRAIN"):
    """Like make_layer, for layers whose top count make_layer cannot express (Silence)."""
    from netspec.layers import registry

    spec = dict(spec)
    spec.setdefault("name", spec["type"].lower())
    lp = LayerParameter.model_validate(spec)
    layer = registry.get(lp.type)(lp, phase, backend, np.random.default_rng(0))
    layer.check_arity(len(bottom_shapes), len(lp.top))
    return layer, layer.setup([tuple(s) for s in bottom_shapes])


def test_silence_has_no_tops_and_zero_gradient():
    layer, tops = bare_layer({"type": "Silence", "bottom": ["a", "b"]}, [(2, 3), (4,)])
    assert tops == []
    bottom = [Blob("a", rand((2, 3)), np), Blob("b", rand(4), np)]
    for b in bottom:
        b.diff = np.ones(b.shape)
    layer.forward(bottom, [])
    layer.backward([], [True, False], bottom)
    assert np.all(bottom[0].diff == 0) and np.all(bottom[1].diff == 1)
    with pytest.raises(SpecError):
        bare_layer({"type": "Silence", "bottom": "a", "top": "t"}, [(2,)])


def test_silence_in_a_net_swallows_an_output():
    net = Net(parse_net({"name": "s", "layer": [
        {"name": "in", "type": "Input", "top": ["a", "b"], "input_param": {"shape": {"dim": [2, 3]}}},
        {"name": "sil", "type": "Silence", "bottom": "b"},
        {"name": "loss", "type": "EuclideanLoss", "bottom": ["a", "a"], "top": "loss"},
    ]}), "TRAIN", F32)
    assert net.output_names == ["loss"]
    net.forward_backward()


# -- Filter, BatchReindex -------------------------------------------------------------------------

def test_filter_forward_backward():
    x, z = rand((5, 2, 3)), rand((5, 4), 1)
    sel = np.array([0.0, 1.0, 0.0, -2.0, 0.5]).reshape(5, 1)
    layer, tops = make_layer({"type": "Filter", "bottom": ["x", "z", "s"], "top": ["a", "b"]},
                             [x.shape, z.shape, sel.shape])
    assert tops == [x.shape, z.shape]          # Caffe's first reshape: the full batch
    assert layer.no_grad_bottoms == (2,)
    dys = [rand((3, 2, 3), 2), rand((3, 4), 3)]
    (a, b), (dx, dz, dsel), _ = forward_backward(layer, [x, z, sel], tops, dys)
    keep = [1, 3, 4]
    np.testing.assert_array_equal(a, x[keep])
    np.testing.assert_array_equal(b, z[keep])
    assert dsel is None
    want = np.zeros_like(x)
    want[keep] = dys[0]
    np.testing.assert_array_equal(dx, want)
    check_gradients(layer, [x, z, sel], [(3, 2, 3), (3, 4)])
    (a, _), _, _ = forward_backward(layer, [x, z, np.zeros((5, 1))], tops,
                                    [np.zeros((0, 2, 3)), np.zeros((0, 4))])
    assert a.shape == (0, 2, 3)


@pytest.mark.parametrize("shapes, tops, words", [
    ([(4, 3), (4, 2)], ["y"], "singletons"),
    ([(4, 3), (5,)], ["y"], "first dimension"),
    ([(4, 3), (4,)], ["y", "z"], "one top per"),
])
def test_filter_errors(shapes, tops, words):
    with pytest.raises(NetspecError, match=words):
        make_layer({"type": "Filter", "top": tops}, shapes)


def test_batch_reindex():
    x = rand((3, 2, 2))
    perm = np.array([2.0, 0.0, 2.0, 1.9])            # float indices, truncated like Caffe
    layer, tops = make_layer({"type": "BatchReindex"}, [x.shape, perm.shape])
    assert tops == [(4, 2, 2)]
    dy = rand((4, 2, 2), 1)
    (y,), (dx, none), _ = forward_backward(layer, [x, perm], tops, [dy])
    np.testing.assert_array_equal(y, x[[2, 0, 2, 1]])
    assert none is None
    np.testing.assert_allclose(dx, np.stack([dy[1], dy[3], dy[0] + dy[2]]), rtol=1e-15)
    check_gradients(layer, [x, perm], tops)


def test_batch_reindex_errors():
    layer, tops = make_layer({"type": "BatchReindex"}, [(3, 2), (2,)])
    with pytest.raises(NetspecError, match="reindex indices"):
        run_forward(layer, [rand((3, 2)), np.array([0.0, 3.0])], tops)
    with pytest.raises(NetspecError, match="reindex indices"):
        run_forward(layer, [rand((3, 2)), np.array([-0.5, 1.0])], tops)
    with pytest.raises(NetspecError, match="1-D"):
        make_layer({"type": "BatchReindex"}, [(3, 2), (2, 1)])


# -- no propagate_down, float32 end to end (with the neuron and Flatten specs) --------------------

@pytest.mark.parametrize("spec, n_bottoms", [
    *[(s, 1) for s in ACTIVATIONS], (DROPOUT, 1), (SPLIT3, 1), ({"type": "Flatten"}, 1),
    ({"type": "Concat"}, 2), *[({"type": "Eltwise", "eltwise_param": p}, 3) for p in ELTWISE],
], ids=lambda v: str(v))
def test_no_propagate_down_leaves_bottom_diff(spec, n_bottoms):
    layer, shapes = make_layer(spec, [SHAPE] * n_bottoms)
    bottom, top = run_forward(layer, [rand(SHAPE, seed=i) for i in range(n_bottoms)], shapes)
    for b in bottom:
        b.diff = np.full(SHAPE, 5.0)
    for t in top:
        t.diff = rand(t.shape)
    layer.backward(top, [False] * n_bottoms, bottom)
    assert all(np.all(b.diff == 5.0) for b in bottom)


@pytest.mark.parametrize("spec, n_bottoms", [
    *[(s, 1) for s in ACTIVATIONS], (DROPOUT, 1), (SPLIT3, 1), ({"type": "Flatten"}, 1),
    ({"type": "Concat"}, 2), *[({"type": "Eltwise", "eltwise_param": p}, 3) for p in ELTWISE],
], ids=lambda v: str(v))
def test_float32_end_to_end(spec, n_bottoms):
    layer, shapes = make_layer(spec, [SHAPE] * n_bottoms, backend=F32)
    xs = [rand(SHAPE, seed=i).astype(np.float32) for i in range(n_bottoms)]
    tops, dxs = forward_backward_pair(layer, xs, shapes, [rand(s, seed=9) for s in shapes])
    assert all(a.dtype == np.float32 for a in tops + dxs)


# -- GPU (CuPy) against the CPU, float32 (skipped without CuPy and a GPU) -------------------------

ALL_LAYERS = [
    *[(s, 1) for s in ACTIVATIONS], (DROPOUT, 1), (SPLIT3, 1), ({"type": "Flatten"}, 1),
    ({"type": "Concat"}, 2), ({"type": "Concat", "concat_param": {"axis": 0}}, 3),
    *[({"type": "Eltwise", "eltwise_param": p}, 3) for p in ELTWISE],
]


@pytest.mark.gpu
@pytest.mark.parametrize("spec, n_bottoms", ALL_LAYERS, ids=lambda v: str(v))
def test_gpu_matches_cpu(spec, n_bottoms):
    if not cupy_available():
        pytest.skip("needs CuPy and an NVIDIA GPU")
    gpu = get_backend(gpu=True)
    xs = [rand(SHAPE, seed=i).astype(np.float32) for i in range(n_bottoms)]
    cpu_layer, shapes = make_layer(spec, [SHAPE] * n_bottoms, backend=F32, seed=4)
    gpu_layer, _ = make_layer(spec, [SHAPE] * n_bottoms, backend=gpu, seed=4)
    dys = [rand(s, seed=9).astype(np.float32) for s in shapes]
    want_y, want_dx = forward_backward_pair(cpu_layer, xs, shapes, dys)
    got_y, got_dx = forward_backward_pair(gpu_layer, xs, shapes, dys, xp=gpu.xp)
    for got, want in zip(got_y + got_dx, want_y + want_dx):
        assert got.dtype == np.float32     # the same mask too: Dropout draws on the host
        np.testing.assert_allclose(to_numpy(got), want, rtol=1e-5, atol=1e-7)
    if n_bottoms == 1 and spec.get("type") in ("ReLU", "Sigmoid", "TanH", "Dropout"):
        layer, _ = make_layer(spec, [SHAPE], backend=gpu, seed=4)
        y, dx = in_place(layer, xs[0], dys[0], xp=gpu.xp)
        np.testing.assert_allclose(to_numpy(y), want_y[0], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(to_numpy(dx), want_dx[0], rtol=1e-5, atol=1e-7)


# -- Axpy (SENet) ----------------------------------------------------------------------------------

@pytest.mark.parametrize("a_shape", [(2, 3, 1, 1), (2, 3)])
def test_axpy_forward_and_gradients(a_shape):
    a, x, y = rand(a_shape, seed=10), rand((2, 3, 4, 5), seed=11), rand((2, 3, 4, 5), seed=12)
    layer, shapes = make_layer({"type": "Axpy"}, [a.shape, x.shape, y.shape])
    assert shapes == [(2, 3, 4, 5)]
    _, (t,) = run_forward(layer, [a, x, y], shapes)
    np.testing.assert_allclose(t.data, a.reshape(2, 3, 1, 1) * x + y, rtol=1e-14)
    check_gradients(layer, [a, x, y], shapes)


@pytest.mark.parametrize("shapes,match", [
    ([(2, 3, 1, 1), (2, 3, 4, 5), (2, 3, 4, 4)], "must have one shape"),
    ([(2, 3, 2, 1), (2, 3, 4, 5), (2, 3, 4, 5)], r"must be \(N, C, 1, 1\)"),
    ([(2, 4, 1, 1), (2, 3, 4, 5), (2, 3, 4, 5)], r"must be \(N, C, 1, 1\)"),
])
def test_axpy_refuses_mismatched_shapes(shapes, match):
    with pytest.raises(NetspecError, match=match):
        make_layer({"type": "Axpy"}, shapes)


def test_fork_golden_axpy():
    from layer_cases import fork_golden_net, run_golden
    net, g = fork_golden_net("axpy")
    assert sorted(run_golden(net, g)) == ["a", "b", "x"]
