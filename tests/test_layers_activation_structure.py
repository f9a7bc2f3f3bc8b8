"""Activation (ReLU, Sigmoid, TanH, Dropout) and structure (Split, Flatten, Concat, Eltwise) layers.

Gradient checks in float64, in-place runs against out-of-place ones, Dropout statistics,
Caffe parity (tests/golden/layers/, recorded by BVLC Caffe) and PyTorch where installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gradcheck import check_gradients, make_layer, run_forward
from netspec.backend import Backend, cupy_available, get_backend, to_numpy
from netspec.blob import Blob
from netspec.errors import NetspecError

F32 = Backend(np, np.float32)
GOLDEN = Path(__file__).parent / "golden" / "layers"
SHAPE = (2, 3, 4, 5)


def rand(shape, seed=0, away_from_zero=0.0):
    """Standard normal values; with ``away_from_zero`` d, none lies in (−d, d) (no ReLU kink)."""
    x = np.random.default_rng(seed).standard_normal(shape)
    return np.where(np.abs(x) < away_from_zero, np.sign(x + 1e-12) * away_from_zero, x) \
        if away_from_zero else x


def reseeding(layer, seed=0):
    """Make a Dropout layer draw the same mask on every forward (a fixed function to check)."""
    forward = layer.forward

    def fwd(bottom, top):
        layer.rng = np.random.default_rng(seed)
        forward(bottom, top)

    layer.forward = fwd
    return layer


def forward_backward(layer, bottoms, top_shapes, top_diffs, xp=np):
    """Out-of-place forward then backward; returns (tops, bottom diffs)."""
    bottom, top = run_forward(layer, bottoms, top_shapes, xp)
    for t, d in zip(top, top_diffs):
        t.diff = xp.array(d, dtype=layer.dtype)
    layer.backward(top, [True] * len(bottom), bottom)
    return [t.data.copy() for t in top], [b.diff.copy() for b in bottom]


def in_place(layer, x, dy, xp=np):
    """Forward and backward with the same Blob as bottom and top; returns (y, dx)."""
    blob = Blob("x", xp.array(x, dtype=layer.dtype), xp)
    layer.forward([blob], [blob])
    blob.diff = xp.array(dy, dtype=layer.dtype)   # top diff and bottom diff: one array
    layer.backward([blob], [True], [blob])
    return blob.data, blob.diff


def assert_in_place_matches(spec, x, phase="TRAIN", seed=0):
    """In-place forward/backward equals the out-of-place (gradient-checked) result."""
    dy = rand(x.shape, seed=7)
    ref_layer, shapes = make_layer(spec, [x.shape], phase=phase)
    if ref_layer.type_name == "Dropout":
        reseeding(ref_layer, seed)
    (y_ref,), (dx_ref,) = forward_backward(ref_layer, [x], shapes, [dy])
    layer, _ = make_layer(spec, [x.shape], phase=phase)
    if layer.type_name == "Dropout":
        reseeding(layer, seed)
    y, dx = in_place(layer, x, dy)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=0)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=0)


# -- activations: gradients and in-place --------------------------------------------------------

ACTIVATIONS = [
    {"type": "ReLU"},
    {"type": "ReLU", "relu_param": {"negative_slope": 0.1}},
    {"type": "ReLU", "relu_param": {"negative_slope": -0.3}},
    {"type": "Sigmoid"},
    {"type": "TanH"},
]


@pytest.mark.parametrize("spec", ACTIVATIONS, ids=lambda s: str(s))
def test_activation_gradients(spec):
    x = rand(SHAPE, away_from_zero=0.05)
    layer, shapes = make_layer(spec, [SHAPE])
    check_gradients(layer, [x], shapes)


@pytest.mark.parametrize("spec", ACTIVATIONS, ids=lambda s: str(s))
def test_activation_in_place(spec):
    assert_in_place_matches(spec, rand(SHAPE, away_from_zero=0.05))


def test_relu_values():
    x = np.array([-2.0, -0.5, 0.0, 0.5, 3.0])
    layer, shapes = make_layer({"type": "ReLU", "relu_param": {"negative_slope": 0.1}}, [x.shape])
    (y,), (dx,) = forward_backward(layer, [x], shapes, [np.ones(5)])
    np.testing.assert_allclose(y, [-0.2, -0.05, 0.0, 0.5, 3.0])
    np.testing.assert_allclose(dx, [0.1, 0.1, 0.1, 1.0, 1.0])   # Caffe: x <= 0 takes the slope


def test_sigmoid_saturates_without_overflow():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=np.float32)
    layer, shapes = make_layer({"type": "Sigmoid"}, [x.shape], backend=F32)
    with np.errstate(all="raise"):
        (y,), _ = forward_backward(layer, [x], shapes, [np.ones(5)])
    np.testing.assert_allclose(y, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-7)


# -- Dropout ------------------------------------------------------------------------------------

DROPOUT = {"type": "Dropout", "dropout_param": {"dropout_ratio": 0.3}}


def test_dropout_gradient_fixed_mask():
    x = rand(SHAPE)
    layer, shapes = make_layer(DROPOUT, [SHAPE])
    check_gradients(reseeding(layer), [x], shapes)


def test_dropout_in_place():
    assert_in_place_matches(DROPOUT, rand(SHAPE), phase="TRAIN")
    assert_in_place_matches(DROPOUT, rand(SHAPE), phase="TEST")


def test_dropout_test_phase_is_identity():
    x, dy = rand(SHAPE), rand(SHAPE, seed=1)
    layer, shapes = make_layer(DROPOUT, [SHAPE], phase="TEST")
    (y,), (dx,) = forward_backward(layer, [x], shapes, [dy])
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(dx, dy)


def test_dropout_train_statistics():
    r, n = 0.3, 1_000_000
    p = 1.0 - r
    x = np.random.default_rng(1).uniform(0.5, 1.5, n).astype(np.float32)
    layer, shapes = make_layer(DROPOUT, [(n,)], backend=F32, seed=3)
    dy = np.ones(n, dtype=np.float32)
    (y,), (dx,) = forward_backward(layer, [x], shapes, [dy])
    assert y.dtype == np.float32 and dx.dtype == np.float32
    kept = y != 0
    # keep rate ~ Binomial(n, p)/n: 6 standard deviations
    assert abs(kept.mean() - p) < 6 * np.sqrt(p * (1 - p) / n)
    # kept values are x / (1 - r) (float32), dropped ones exactly 0, backward uses the same mask
    np.testing.assert_allclose(y[kept], x[kept] * np.float32(1 / p), rtol=1e-6)
    np.testing.assert_array_equal(dx, np.where(kept, np.float32(1 / p), np.float32(0)))
    # E[y | x] = x with Var[y_i | x] = x_i² (1 − p)/p: mean(y) − mean(x) has sd sqrt(Σx²(1−p)/p)/n
    sd = np.sqrt(np.sum(x.astype(np.float64) ** 2) * (1 - p) / p) / n
    assert abs(y.mean(dtype=np.float64) - x.mean(dtype=np.float64)) < 6 * sd


def test_dropout_masks_differ_between_iterations_and_follow_the_seed():
    x = np.ones((1000,))
    a, shapes = make_layer(DROPOUT, [x.shape], seed=5)
    b, _ = make_layer(DROPOUT, [x.shape], seed=5)
    ya1 = run_forward(a, [x], shapes)[1][0].data.copy()
    ya2 = run_forward(a, [x], shapes)[1][0].data.copy()
    yb1 = run_forward(b, [x], shapes)[1][0].data.copy()
    assert not np.array_equal(ya1, ya2)
    np.testing.assert_array_equal(ya1, yb1)


# -- Split --------------------------------------------------------------------------------------

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


# -- Flatten ------------------------------------------------------------------------------------

@pytest.mark.parametrize("param, want", [
    ({}, (2, 60)),
    ({"axis": 2}, (2, 3, 20)),
    ({"axis": 1, "end_axis": 2}, (2, 12, 5)),
    ({"axis": -2, "end_axis": -1}, (2, 3, 20)),
    ({"axis": 0}, (120,)),
])
def test_flatten_shapes_and_gradient(param, want):
    layer, shapes = make_layer({"type": "Flatten", "flatten_param": param}, [SHAPE])
    assert shapes == [want]
    x = rand(SHAPE)
    _, top = run_forward(layer, [x], shapes)
    np.testing.assert_array_equal(top[0].data, x.reshape(want))
    check_gradients(layer, [x], shapes)


def test_flatten_refuses_in_place():
    layer, _ = make_layer({"type": "Flatten"}, [SHAPE])
    blob = Blob("x", rand(SHAPE), np)
    with pytest.raises(NetspecError, match="in place"):
        layer.forward([blob], [blob])


def test_flatten_bad_axes():
    with pytest.raises(NetspecError, match="end_axis"):
        make_layer({"type": "Flatten", "flatten_param": {"axis": 2, "end_axis": 1}}, [SHAPE])


# -- Concat -------------------------------------------------------------------------------------

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


# -- Eltwise ------------------------------------------------------------------------------------

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
    _, (da, db, dc) = forward_backward(layer, [a, b, c], shapes, [np.ones(3)])
    np.testing.assert_array_equal(layer.max_idx, [1, 0, 1])
    np.testing.assert_array_equal(da, [0, 1, 0])
    np.testing.assert_array_equal(db, [1, 0, 1])
    np.testing.assert_array_equal(dc, [0, 0, 0])


def test_eltwise_prod_with_zero_stable_gradient():
    a, b = np.array([0.0, 2.0]), np.array([3.0, 4.0])
    layer, shapes = make_layer({"type": "Eltwise", "eltwise_param": {"operation": "PROD"}},
                               [(2,)] * 2)
    _, (da, db) = forward_backward(layer, [a, b], shapes, [np.ones(2)])
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


# -- float32 stays float32 ----------------------------------------------------------------------

@pytest.mark.parametrize("spec, n_bottoms", [
    *[(s, 1) for s in ACTIVATIONS], (DROPOUT, 1), (SPLIT3, 1), ({"type": "Flatten"}, 1),
    ({"type": "Concat"}, 2), *[({"type": "Eltwise", "eltwise_param": p}, 3) for p in ELTWISE],
], ids=lambda v: str(v))
def test_float32_end_to_end(spec, n_bottoms):
    layer, shapes = make_layer(spec, [SHAPE] * n_bottoms, backend=F32)
    xs = [rand(SHAPE, seed=i).astype(np.float32) for i in range(n_bottoms)]
    tops, dxs = forward_backward(layer, xs, shapes, [rand(s, seed=9) for s in shapes])
    assert all(a.dtype == np.float32 for a in tops + dxs)


# -- Caffe parity (tests/golden/layers/, float32) -----------------------------------------------

def golden(case):
    return np.load(GOLDEN / f"{case}.npz")


@pytest.mark.parametrize("run_in_place", [False, True])
def test_caffe_relu_leaky(run_in_place):
    g = golden("relu_leaky")
    spec = {"name": "l", "type": "ReLU", "bottom": "x", "top": "y",
            "relu_param": {"negative_slope": 0.1}}
    x, dy = g["input/x"], g["topdiff/y"]
    layer, shapes = make_layer(spec, [x.shape], backend=F32)
    if run_in_place:
        y, dx = in_place(layer, x, dy)
    else:
        (y,), (dx,) = forward_backward(layer, [x], shapes, [dy])
    np.testing.assert_allclose(y, g["top/y"], rtol=1e-5)
    np.testing.assert_allclose(dx, g["bottomdiff/x"], rtol=1e-5)


def test_caffe_sigmoid_tanh():
    g = golden("sigmoid_tanh")
    x = g["input/x"]
    sig, s_shapes = make_layer({"name": "s", "type": "Sigmoid", "bottom": "x", "top": "s"},
                               [x.shape], backend=F32)
    tanh, t_shapes = make_layer({"name": "t", "type": "TanH", "bottom": "s", "top": "y"},
                                s_shapes, backend=F32)
    xb, sb = run_forward(sig, [x], s_shapes)
    _, yb = run_forward(tanh, [sb[0].data], t_shapes)
    np.testing.assert_allclose(sb[0].data, g["top/s"], rtol=1e-5)
    np.testing.assert_allclose(yb[0].data, g["top/y"], rtol=1e-5)
    yb[0].diff = g["topdiff/y"].copy()
    tanh.backward(yb, [True], sb)
    sig.backward(sb, [True], xb)
    np.testing.assert_allclose(xb[0].diff, g["bottomdiff/x"], rtol=1e-5, atol=1e-7)


def test_caffe_flatten_axis2():
    g = golden("flatten_axis2")
    x, dy = g["input/x"], g["topdiff/y"]
    layer, shapes = make_layer({"name": "l", "type": "Flatten", "bottom": "x", "top": "y",
                                "flatten_param": {"axis": 2}}, [x.shape], backend=F32)
    assert shapes == [g["top/y"].shape]
    (y,), (dx,) = forward_backward(layer, [x], shapes, [dy])
    np.testing.assert_allclose(y, g["top/y"], rtol=1e-5)
    np.testing.assert_allclose(dx, g["bottomdiff/x"], rtol=1e-5)


# -- PyTorch parity (skipped when torch is absent) ----------------------------------------------

@pytest.mark.parametrize("spec, fn", [
    ({"type": "ReLU", "relu_param": {"negative_slope": 0.1}},
     lambda torch, t: torch.nn.functional.leaky_relu(t, 0.1)),
    ({"type": "Sigmoid"}, lambda torch, t: torch.sigmoid(t)),
    ({"type": "TanH"}, lambda torch, t: torch.tanh(t)),
], ids=["leaky_relu", "sigmoid", "tanh"])
def test_against_torch(spec, fn):
    torch = pytest.importorskip("torch")
    x = rand(SHAPE, away_from_zero=0.01).astype(np.float32)
    dy = rand(SHAPE, seed=3).astype(np.float32)
    layer, shapes = make_layer(spec, [SHAPE], backend=F32)
    (y,), (dx,) = forward_backward(layer, [x], shapes, [dy])
    t = torch.tensor(x, requires_grad=True)
    out = fn(torch, t)
    out.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, out.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, t.grad.numpy(), rtol=1e-5, atol=1e-6)


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
    want_y, want_dx = forward_backward(cpu_layer, xs, shapes, dys)
    got_y, got_dx = forward_backward(gpu_layer, xs, shapes, dys, xp=gpu.xp)
    for got, want in zip(got_y + got_dx, want_y + want_dx):
        assert got.dtype == np.float32     # the same mask too: Dropout draws on the host
        np.testing.assert_allclose(to_numpy(got), want, rtol=1e-5, atol=1e-7)
    if n_bottoms == 1 and spec.get("type") in ("ReLU", "Sigmoid", "TanH", "Dropout"):
        layer, _ = make_layer(spec, [SHAPE], backend=gpu, seed=4)
        y, dx = in_place(layer, xs[0], dys[0], xp=gpu.xp)
        np.testing.assert_allclose(to_numpy(y), want_y[0], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(to_numpy(dx), want_dx[0], rtol=1e-5, atol=1e-7)
