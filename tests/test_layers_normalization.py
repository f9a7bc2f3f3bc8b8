"""Normalization layers (netspec/layers/normalization.py): BatchNorm, Scale, Bias, LRN, MVN.

Gradient checks in float64, closed forms derived here, LRN against a literal implementation of
Caffe's loops, in-place runs, parity with real Caffe (tests/golden/layers/, float32) and with
PyTorch where it is installed; and the float32 and GPU tables across families (LRN,
Deconvolution, Im2col, SPP, Crop, Slice, Reshape, Tile, Reduction, ArgMax, Filter, BatchReindex,
Embed, Parameter, Bias).
"""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import (
    check_gradients,
    forward_backward,
    forward_backward_blobs,
    make_layer,
    rand,
    run_forward,
)
from layer_cases import F32, GAUSS, close, deconv_spec, embed_spec, golden, im2col_spec, in_place

from netspec.backend import cupy_available, get_backend, to_numpy
from netspec.blob import Blob
from netspec.errors import NetspecError, SpecError

# -- BatchNorm ------------------------------------------------------------------------------------

BN_SHAPES = [(4, 3, 5, 5), (6, 4)]


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batchnorm_train_gradient(shape):
    layer, tops = make_layer({"type": "BatchNorm"}, [shape], phase="TRAIN")
    assert not layer.use_global_stats
    check_gradients(layer, [rand(shape) * 2 + 1], tops, check_params=False)


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batchnorm_global_gradient_and_value(shape):
    layer, tops = make_layer({"type": "BatchNorm"}, [shape], phase="TEST")
    assert layer.use_global_stats
    c = shape[1]
    mean_sum, var_sum = rand(c, 1), np.abs(rand(c, 2)) + 0.5
    layer.blobs[0].data[...] = mean_sum
    layer.blobs[1].data[...] = var_sum
    layer.blobs[2].data[...] = 2.5
    x = rand(shape, 3)
    _, top = run_forward(layer, [x], tops)
    bshape = (1, c) + (1,) * (len(shape) - 2)
    want = (x - (mean_sum / 2.5).reshape(bshape)) / np.sqrt((var_sum / 2.5).reshape(bshape) + 1e-5)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12)
    check_gradients(layer, [x], tops, check_params=False)



@pytest.mark.parametrize("inplace", [False, True])
def test_batchnorm_scale_exact_after_repeated_forwards(inplace):
    """float32 BatchNorm → Scale (batch statistics), forward twice then backward: the values of
    the formulas written out in NumPy in the layers' order of operations, bit for bit (the
    layers reuse the previous x̂ and the tops' and diffs' arrays for their intermediates)."""
    shape = (4, 3, 5, 6)
    bn, tops = make_layer({"type": "BatchNorm"}, [shape], backend=F32)
    sc, _ = make_layer({"type": "Scale", "scale_param": {"bias_term": True}}, [shape], backend=F32)
    rng = np.random.default_rng(2)
    s, b = (rng.uniform(0.5, 1.5, 3).astype(np.float32) for _ in range(2))
    sc.blobs[0].data[...], sc.blobs[1].data[...] = s, b
    x_blob = Blob("x", np.zeros(shape, np.float32), np)
    mid = x_blob if inplace else Blob("m", np.zeros(shape, np.float32), np)
    out = mid if inplace else Blob("y", np.zeros(shape, np.float32), np)
    for _ in range(2):
        x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
        x_blob.data[...] = x
        bn.forward([x_blob], [mid])
        sc.forward([mid], [out])
    dy = rng.standard_normal(shape).astype(np.float32)
    out.diff = dy.copy()
    sc.backward([out], [True], [mid])
    bn.backward([mid], [True], [x_blob])

    x3 = x.reshape(4, 3, -1)
    xc = x3 - x3.mean(axis=(0, 2))[:, None]
    std = np.sqrt((xc * xc).mean(axis=(0, 2)) + np.float32(1e-5))[:, None]
    xn = xc / std
    y = xn * s.reshape(1, 3, 1) + b.reshape(1, 3, 1)
    np.testing.assert_array_equal(out.data, y.reshape(shape))
    dy3 = dy.reshape(4, 3, -1)
    dxn = dy3 * s.reshape(1, 3, 1)
    dx = (dxn - dxn.mean(axis=(0, 2), keepdims=True)
          - (dxn * xn).mean(axis=(0, 2), keepdims=True) * xn) / std
    np.testing.assert_array_equal(x_blob.diff, dx.reshape(shape))
    np.testing.assert_array_equal(sc.blobs[0].diff, (dy3 * xn).sum(axis=(0, 2)))

def test_batchnorm_global_zero_factor_uses_zero_statistics():
    layer, tops = make_layer({"type": "BatchNorm", "batch_norm_param": {"use_global_stats": True}},
                             [(2, 3)], phase="TRAIN")
    layer.blobs[0].data[...] = 5.0  # ignored: factor 0 scales the sums by 0
    x = rand((2, 3))
    _, top = run_forward(layer, [x], tops)
    np.testing.assert_allclose(top[0].data, x / np.sqrt(1e-5))


def test_batchnorm_moving_averages_two_forwards():
    maf, shape = 0.9, (3, 2, 4, 2)
    layer, tops = make_layer({"type": "BatchNorm",
                              "batch_norm_param": {"moving_average_fraction": maf}},
                             [shape], phase="TRAIN")
    x1, x2 = rand(shape, 1) + 3, rand(shape, 2) * 0.5 - 1
    m = 3 * 4 * 2
    run_forward(layer, [x1], tops)
    run_forward(layer, [x2], tops)

    def stats(x):  # per channel mean and unbiased variance
        xc = x.transpose(1, 0, 2, 3).reshape(2, -1)
        return xc.mean(axis=1), xc.var(axis=1) * m / (m - 1)

    (mu1, v1), (mu2, v2) = stats(x1), stats(x2)
    np.testing.assert_allclose(layer.blobs[0].data, maf * mu1 + mu2, rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[1].data, maf * v1 + v2, rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[2].data, [maf * 1 + 1], rtol=1e-12)
    # the global estimate then is the factor-weighted average of the two batches
    np.testing.assert_allclose(layer.blobs[0].data / layer.blobs[2].data,
                               (maf * mu1 + mu2) / (maf + 1), rtol=1e-12)


def test_batchnorm_statistics_are_not_learnable():
    layer, _ = make_layer({"type": "BatchNorm"}, [(2, 3, 4, 4)])
    assert [b.shape for b in layer.blobs] == [(3,), (3,), (1,)]
    assert all(b.lr_mult == 0 and b.decay_mult == 0 for b in layer.blobs)
    assert all(np.all(b.data == 0) for b in layer.blobs)
    make_layer({"type": "BatchNorm", "param": [{"lr_mult": 0}] * 3}, [(2, 3)])
    with pytest.raises(SpecError, match="statistics"):
        make_layer({"type": "BatchNorm", "param": [{"lr_mult": 0}, {"lr_mult": 1}]}, [(2, 3)])
    with pytest.raises(SpecError):  # Caffe's lr_mult default is 1, so this is refused too
        make_layer({"type": "BatchNorm", "param": [{"decay_mult": 0}]}, [(2, 3)])


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_batchnorm_in_place_equals_out_of_place(phase):
    shape = (4, 3, 2, 2)
    x, dy = rand(shape, 1), rand(shape, 2)
    results = []
    for shared in (False, True):
        layer, tops = make_layer({"type": "BatchNorm"}, [shape], phase=phase)
        layer.blobs[1].data[...] = 1.5
        layer.blobs[2].data[...] = 1.0
        if shared:
            y, dx = in_place(layer, x, dy)
            results.append((y, dx, [b.data.copy() for b in layer.blobs]))
        else:
            bottom, top = forward_backward_blobs(layer, [x], tops, [dy])
            results.append((top[0].data, bottom[0].diff, [b.data.copy() for b in layer.blobs]))
    (y0, dx0, p0), (y1, dx1, p1) = results
    np.testing.assert_allclose(y1, y0, rtol=1e-14)
    np.testing.assert_allclose(dx1, dx0, rtol=1e-12)
    for a, b in zip(p0, p1):
        np.testing.assert_allclose(a, b, rtol=1e-14)


# -- Scale ----------------------------------------------------------------------------------------

SCALE_CASES = [  # (scale_param, bottom shape, expected scale shape)
    ({}, (2, 3, 4, 5), (3,)),
    ({"bias_term": True}, (2, 3, 4, 5), (3,)),
    ({"axis": 1, "num_axes": 2, "bias_term": True}, (2, 3, 4, 5), (3, 4)),
    ({"axis": 2, "num_axes": -1}, (2, 3, 4, 5), (4, 5)),
    ({"axis": 0, "num_axes": 0, "bias_term": True}, (2, 3, 4, 5), ()),
    ({"axis": -1, "bias_term": True}, (2, 3, 4), (4,)),
    ({"axis": 0, "num_axes": -1}, (3, 4), (3, 4)),
]


@pytest.mark.parametrize("sp,shape,sshape", SCALE_CASES)
def test_scale_learned_gradient(sp, shape, sshape):
    layer, tops = make_layer({"type": "Scale", "scale_param": sp}, [shape])
    assert layer.blobs[0].shape == sshape
    assert np.all(layer.blobs[0].data == 1)  # Caffe's default filler: constant 1
    if sp.get("bias_term"):
        assert len(layer.blobs) == 2 and layer.blobs[1].shape == sshape
        assert np.all(layer.blobs[1].data == 0)
    for i, b in enumerate(layer.blobs):
        b.data[...] = rand(b.shape, 10 + i)
    check_gradients(layer, [rand(shape)], tops)


def test_scale_forward_value():
    layer, tops = make_layer({"type": "Scale", "scale_param": {"axis": 1, "num_axes": 2,
                                                               "bias_term": True}}, [(2, 3, 4, 5)])
    s, b = rand((3, 4), 1), rand((3, 4), 2)
    layer.blobs[0].data[...] = s
    layer.blobs[1].data[...] = b
    x = rand((2, 3, 4, 5))
    _, top = run_forward(layer, [x], tops)
    np.testing.assert_allclose(top[0].data, x * s[:, :, None] + b[:, :, None], rtol=1e-14)


@pytest.mark.parametrize("bias", [False, True])
def test_scale_two_bottoms_gradient(bias):
    shape, sshape = (2, 3, 4, 5), (3, 4)
    layer, tops = make_layer({"type": "Scale", "scale_param": {"bias_term": bias}},
                             [shape, sshape])
    assert len(layer.blobs) == (1 if bias else 0)
    if bias:
        layer.blobs[0].data[...] = rand(sshape, 5)
    check_gradients(layer, [rand(shape), rand(sshape, 1)], tops)


def test_scale_filler_and_shape_errors():
    layer, _ = make_layer({"type": "Scale", "scale_param": {
        "filler": {"type": "constant", "value": 3}, "bias_term": True,
        "bias_filler": {"type": "constant", "value": -2}}}, [(2, 3)])
    assert np.all(layer.blobs[0].data == 3) and np.all(layer.blobs[1].data == -2)
    with pytest.raises(Exception, match="scale"):
        make_layer({"type": "Scale", "scale_param": {"axis": 1, "num_axes": 3}}, [(2, 3)])
    with pytest.raises(Exception, match="does not match"):
        make_layer({"type": "Scale"}, [(2, 3, 4), (4,)])


def test_scale_in_place_equals_out_of_place():
    shape = (2, 3, 4)
    x, dy = rand(shape, 1), rand(shape, 2)
    spec = {"type": "Scale", "scale_param": {"bias_term": True}}
    out = []
    for shared in (False, True):
        layer, tops = make_layer(spec, [shape])
        layer.blobs[0].data[...] = rand((3,), 3)
        layer.blobs[1].data[...] = rand((3,), 4)
        if shared:
            y, dx = in_place(layer, x, dy)
            out.append([y, dx] + [b.diff for b in layer.blobs])
        else:
            bottom, top = forward_backward_blobs(layer, [x], tops, [dy])
            out.append([top[0].data, bottom[0].diff] + [b.diff for b in layer.blobs])
    for a, b in zip(*out):
        np.testing.assert_allclose(b, a, rtol=1e-14)


def test_scale_param_diffs_accumulate():
    layer, tops = make_layer({"type": "Scale", "scale_param": {"bias_term": True}}, [(2, 3)])
    x, dy = rand((2, 3)), rand((2, 3), 1)
    forward_backward_blobs(layer, [x], tops, [dy])
    forward_backward_blobs(layer, [x], tops, [dy])
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * (x * dy).sum(axis=0))
    np.testing.assert_allclose(layer.blobs[1].diff, 2 * dy.sum(axis=0))


# -- Bias -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("p, shapes", [
    ({}, [(2, 3, 4, 5)]),
    ({"axis": 2, "num_axes": 2}, [(2, 3, 4, 5)]),
    ({"axis": 0, "num_axes": -1}, [(2, 3)]),
    ({"num_axes": 0}, [(2, 3, 4)]),                              # scalar bias
    ({"axis": -2, "filler": GAUSS}, [(2, 3, 4)]),
    ({}, [(2, 3, 4, 5), (3, 4)]),                                # bias as bottom 1
    ({"axis": 0}, [(2, 3, 4), (2,)]),
    ({"axis": 2}, [(2, 3, 4), ()]),                              # scalar bottom: axis ignored
])
def test_bias(p, shapes):
    layer, tops = make_layer({"type": "Bias", "bias_param": p}, shapes)
    assert tops == [shapes[0]]
    xs = [rand(s, i) for i, s in enumerate(shapes)]
    if len(shapes) == 1:
        layer.blobs[0].data[...] = rand(layer.blobs[0].shape, 9)
        b = layer.blobs[0].data
    else:
        b = xs[1]
    axis = 0 if np.ndim(b) == 0 else p.get("axis", 1) % len(shapes[0])
    _, (y,) = run_forward(layer, xs, tops)
    bshape = (1,) * axis + np.shape(b) + (1,) * (len(shapes[0]) - axis - np.ndim(b))
    np.testing.assert_allclose(y.data, xs[0] + np.reshape(b, bshape), rtol=1e-15)
    check_gradients(layer, xs, tops)


def test_bias_learned_default_zero_and_in_place():
    layer, tops = make_layer({"type": "Bias", "bottom": "x", "top": "x"}, [(2, 3, 4)])
    assert layer.blobs[0].shape == (3,) and not layer.blobs[0].data.any()
    layer.blobs[0].data[...] = [1.0, 2.0, 3.0]
    x = Blob("x", rand((2, 3, 4)), np)
    x0 = x.data.copy()
    layer.forward([x], [x])
    np.testing.assert_allclose(x.data, x0 + np.array([1.0, 2, 3]).reshape(1, 3, 1))
    x.diff = rand((2, 3, 4), 1)
    dy = x.diff.copy()
    layer.backward([x], [True], [x])
    np.testing.assert_array_equal(x.diff, dy)
    np.testing.assert_allclose(layer.blobs[0].diff, dy.sum(axis=(0, 2)))


def test_bias_errors():
    with pytest.raises(NetspecError, match="does not match"):
        make_layer({"type": "Bias"}, [(2, 3, 4), (4,)])
    with pytest.raises(NetspecError, match="extends past"):
        make_layer({"type": "Bias", "bias_param": {"axis": 2, "num_axes": 2}}, [(2, 3, 4)])


# -- LRN ------------------------------------------------------------------------------------------

def lrn_reference(x, size, alpha, beta, k, region):
    N, C, H, W = x.shape
    p = (size - 1) // 2
    y = np.zeros_like(x)
    for n in range(N):
        for c in range(C):
            for h in range(H):
                for w in range(W):
                    if region == "ACROSS_CHANNELS":
                        win = x[n, max(c - p, 0):min(c + p + 1, C), h, w]
                        s = k + alpha / size * np.sum(win ** 2)
                    else:
                        win = x[n, c, max(h - p, 0):min(h + p + 1, H),
                                max(w - p, 0):min(w + p + 1, W)]
                        s = 1 + alpha / size ** 2 * np.sum(win ** 2)
                    y[n, c, h, w] = x[n, c, h, w] * s ** -beta
    return y


LRN_CASES = [
    dict(local_size=5, alpha=0.1, beta=0.75, k=2.0),
    dict(local_size=3, alpha=1.0, beta=0.5),
    dict(local_size=1, alpha=0.3, beta=1.5, k=0.5),
    dict(local_size=7, alpha=0.2, beta=0.75),                        # wider than C = 4
    dict(local_size=3, alpha=0.1, beta=0.75, norm_region="WITHIN_CHANNEL"),
    dict(local_size=5, alpha=2.0, beta=0.6, k=9.0, norm_region="WITHIN_CHANNEL"),  # k unused
]


@pytest.mark.parametrize("p", LRN_CASES)
def test_lrn_forward_matches_reference(p):
    shape = (2, 4, 5, 6)
    x = rand(shape)
    layer, tops = make_layer({"type": "LRN", "lrn_param": p}, [shape])
    _, (y,) = run_forward(layer, [x], tops)
    want = lrn_reference(x, p["local_size"], p["alpha"], p["beta"], p.get("k", 1.0),
                         p.get("norm_region", "ACROSS_CHANNELS"))
    np.testing.assert_allclose(y.data, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("p", LRN_CASES)
def test_lrn_gradients(p):
    shape = (2, 4, 5, 6)
    layer, tops = make_layer({"type": "LRN", "lrn_param": p}, [shape])
    check_gradients(layer, [rand(shape, 1)], tops)


def test_lrn_repeatable_and_overwrites():
    for region in ("ACROSS_CHANNELS", "WITHIN_CHANNEL"):
        layer, tops = make_layer({"type": "LRN", "lrn_param": {"norm_region": region}},
                                 [(2, 3, 4, 4)])
        x, dy = rand((2, 3, 4, 4)), rand((2, 3, 4, 4), 1)
        first = forward_backward(layer, [x], tops, [dy])
        again = forward_backward(layer, [x], tops, [dy])
        for a, b in zip(first[:2], again[:2]):
            np.testing.assert_array_equal(a[0], b[0])


def test_lrn_scratch_border_is_zeroed_per_call(monkeypatch):
    """LRN pads chunks of samples in the thread's scratch, which other layers leave dirty:
    filled with NaN before each call, and in chunks of one sample (a batch of 3), both
    regions give bit for bit the results of a clean call on the whole batch."""
    from netspec.layers.base import thread_scratch
    from netspec.layers.normalization import LRN
    for region in ("ACROSS_CHANNELS", "WITHIN_CHANNEL"):
        spec = {"type": "LRN", "lrn_param": {"norm_region": region, "local_size": 3}}
        layer, tops = make_layer(spec, [(3, 3, 4, 5)])
        assert layer._chunk == 3
        x, dy = rand((3, 3, 4, 5)), rand((3, 3, 4, 5), 1)
        clean = forward_backward(layer, [x], tops, [dy])
        monkeypatch.setattr(LRN, "chunk_bytes", 1)
        layer, tops = make_layer(spec, [(3, 3, 4, 5)])
        monkeypatch.undo()
        assert layer._chunk == 1
        thread_scratch(layer.backend, "lrn_pad", 10_000).fill(np.nan)
        dirty = forward_backward(layer, [x], tops, [dy])
        for a, b in zip(clean[:2], dirty[:2]):
            np.testing.assert_array_equal(a[0], b[0])


def test_torch_lrn_across_channels():
    torch = pytest.importorskip("torch")
    shape = (2, 7, 4, 5)
    x, dy = rand(shape, 2), rand(shape, 3)
    p = dict(local_size=5, alpha=0.3, beta=0.75, k=2.0)
    layer, tops = make_layer({"type": "LRN", "lrn_param": p}, [shape])
    (y,), (dx,), _ = forward_backward(layer, [x], tops, [dy])
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.local_response_norm(tx, 5, alpha=0.3, beta=0.75, k=2.0)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_lrn_refuses_in_place():
    with pytest.raises(SpecError, match="in place"):
        make_layer({"type": "LRN", "bottom": "x", "top": "x"}, [(1, 2, 3, 3)])


def test_lrn_even_local_size_refused():
    with pytest.raises(SpecError, match="odd"):
        make_layer({"type": "LRN", "lrn_param": {"local_size": 4}}, [(1, 2, 3, 3)])
    with pytest.raises(NetspecError, match="4 axes"):
        make_layer({"type": "LRN"}, [(1, 2, 3)])


# -- MVN ------------------------------------------------------------------------------------------

def test_mvn_closed_form_and_top_shape():
    x = rand((2, 3, 4, 5)) * 2 + 3
    layer, tops = make_layer({"type": "MVN", "mvn_param": {"eps": 1e-3}}, [x.shape])
    _, top = run_forward(layer, [x], tops)
    g = x.reshape(6, 20)
    want = (g - g.mean(1, keepdims=True)) / (g.std(1, keepdims=True) + 1e-3)
    np.testing.assert_allclose(top[0].data.reshape(6, 20), want, rtol=1e-9)
    # Caffe's Reshape gives the 4-D legacy shape; in place keeps the bottom's
    _, tops = make_layer({"type": "MVN", "bottom": "x", "top": "y"}, [(3, 7)])
    assert tops == [(3, 7, 1, 1)]
    _, tops = make_layer({"type": "MVN", "bottom": "x", "top": "x"}, [(3, 7)])
    assert tops == [(3, 7)]
    with pytest.raises(NetspecError, match="at most 4 axes"):
        make_layer({"type": "MVN"}, [(1, 2, 3, 4, 5)])


# -- Caffe parity (golden values from real Caffe, float32) ----------------------------------------

@pytest.mark.parametrize("case,bn_param", [
    ("batchnorm_train_scale", {"use_global_stats": False, "moving_average_fraction": 0.9,
                               "eps": 1e-5}),
    ("batchnorm_global_scale", {"use_global_stats": True, "eps": 1e-5}),
])
def test_caffe_batchnorm_scale(case, bn_param):
    g = golden(case)
    x = g["input/x"]
    bn, (shape,) = make_layer({"name": "bn", "type": "BatchNorm", "batch_norm_param": bn_param},
                              [x.shape], backend=F32)
    sc, _ = make_layer({"name": "scale", "type": "Scale", "scale_param": {"bias_term": True}},
                       [shape], backend=F32)
    for layer in (bn, sc):
        for i, blob in enumerate(layer.blobs):
            blob.data[...] = g[f"param/{layer.name}/{i}"]
    xb, xn, y = (Blob(n, np.zeros(shape, np.float32), np) for n in ("x", "xn", "y"))
    xb.data[...] = x
    bn.forward([xb], [xn])
    sc.forward([xn], [y])
    close(xn.data, g["top/xn"])
    close(y.data, g["top/y"])
    y.diff = g["topdiff/y"].copy()
    sc.backward([y], [True], [xn])
    bn.backward([xn], [True], [xb])
    close(xb.diff, g["bottomdiff/x"])
    for layer in (bn, sc):
        for i, blob in enumerate(layer.blobs):
            assert blob.data.dtype == np.float32
            close(blob.diff, g[f"paramdiff/{layer.name}/{i}"])
            close(blob.data, g[f"param_after/{layer.name}/{i}"])


def test_caffe_scale_two_bottoms():
    g = golden("scale_two_bottoms")
    layer, tops = make_layer({"name": "l", "type": "Scale", "scale_param": {"axis": 0}},
                             [g["input/x"].shape, g["input/s"].shape], backend=F32)
    bottom, top = forward_backward_blobs(layer, [g["input/x"], g["input/s"]], tops, [g["topdiff/y"]])
    close(top[0].data, g["top/y"])
    close(bottom[0].diff, g["bottomdiff/x"])
    close(bottom[1].diff, g["bottomdiff/s"])


# -- PyTorch parity -------------------------------------------------------------------------------

def test_torch_batchnorm2d_training():
    torch = pytest.importorskip("torch")
    shape = (4, 3, 5, 6)
    x, dy = rand(shape), rand(shape, 1)
    layer, tops = make_layer({"type": "BatchNorm",
                              "batch_norm_param": {"moving_average_fraction": 0.0}}, [shape])
    bottom, top = forward_backward_blobs(layer, [x], tops, [dy])
    tx = torch.tensor(x, requires_grad=True)
    bn = torch.nn.BatchNorm2d(3, eps=1e-5, momentum=1.0, affine=False).double().train()
    ty = bn(tx)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(top[0].data, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bottom[0].diff, tx.grad.numpy(), rtol=1e-8, atol=1e-12)
    # momentum 1 keeps only this batch: torch's running stats = Caffe's sums with factor 1
    np.testing.assert_allclose(layer.blobs[0].data / layer.blobs[2].data,
                               bn.running_mean.numpy(), rtol=1e-10)
    np.testing.assert_allclose(layer.blobs[1].data / layer.blobs[2].data,
                               bn.running_var.numpy(), rtol=1e-10)


# -- float32 end to end and the GPU, across families ----------------------------------------------

F32_CASES = [  # (spec, bottom arrays, top diffs or None for forward only)
    ({"type": "LRN"}, [rand((2, 6, 3, 3))], [rand((2, 6, 3, 3), 1)]),
    ({"type": "LRN", "lrn_param": {"norm_region": "WITHIN_CHANNEL"}}, [rand((2, 3, 5, 5))],
     [rand((2, 3, 5, 5), 1)]),
    (deconv_spec(num_output=3, kernel_size=4, stride=2, pad=1), [rand((2, 2, 3, 3))],
     [rand((2, 3, 6, 6), 1)]),
    (im2col_spec(kernel_size=3, pad=1), [rand((2, 2, 4, 4))], [rand((2, 18, 4, 4), 1)]),
    ({"type": "SPP", "spp_param": {"pyramid_height": 2, "pool": "AVE"}}, [rand((2, 2, 5, 5))],
     [rand((2, 10), 1)]),
    ({"type": "Crop"}, [rand((2, 2, 5, 5)), rand((1, 1, 3, 3))], [rand((2, 2, 3, 3), 1)]),
    ({"type": "Slice", "top": ["a", "b"]}, [rand((2, 4))], [rand((2, 2), 1), rand((2, 2), 2)]),
    ({"type": "Reshape", "reshape_param": {"shape": {"dim": [-1]}}}, [rand((2, 4))],
     [rand((8,), 1)]),
    ({"type": "Tile", "tile_param": {"tiles": 2}}, [rand((2, 3))], [rand((2, 6), 1)]),
    ({"type": "Reduction", "reduction_param": {"operation": "MEAN", "axis": 1}},
     [rand((2, 3))], [rand((2,), 1)]),
    ({"type": "ArgMax", "argmax_param": {"out_max_val": True, "top_k": 2}}, [rand((2, 5))],
     None),
    ({"type": "Filter", "top": ["y"]}, [rand((3, 2)), np.array([1.0, 0.0, 1.0])],
     [rand((2, 2), 1)]),
    ({"type": "BatchReindex"}, [rand((3, 2)), np.array([2.0, 2.0])], [rand((2, 2), 1)]),
    (embed_spec(num_output=3, input_dim=4), [np.array([[1.0, 3.0]])], [rand((1, 2, 3), 1)]),
    ({"type": "Parameter", "parameter_param": {"shape": {"dim": [2]}}}, [], [rand((2,), 1)]),
    ({"type": "Bias", "bias_param": {"filler": GAUSS}}, [rand((2, 3, 2))],
     [rand((2, 3, 2), 1)]),
]


@pytest.mark.parametrize("spec,bottoms,diffs", F32_CASES, ids=[c[0]["type"] for c in F32_CASES])
def test_float32_end_to_end(spec, bottoms, diffs):
    """Tops, diffs, parameter diffs and every array a layer caches stay float32."""
    bottoms = [np.asarray(b, dtype=np.float32) for b in bottoms]
    layer, tops = make_layer(spec, [b.shape for b in bottoms], backend=F32)
    bottom, top = run_forward(layer, bottoms, tops)
    if diffs is not None:
        for t, d in zip(top, diffs):
            t.diff = np.array(d, dtype=np.float32)
        layer.backward(top, [i not in layer.no_grad_bottoms for i in range(len(bottom))],
                       bottom)
    arrays = [t.data for t in top] + [b.data for b in layer.blobs] + [b.diff for b in layer.blobs]
    arrays += [b.diff for b in bottom if b._diff is not None]
    arrays += [v for v in vars(layer).values() if isinstance(v, np.ndarray)]
    floats = [a for a in arrays if np.issubdtype(np.asarray(a).dtype, np.floating)]
    assert floats and all(np.asarray(a).dtype == np.float32 for a in floats)


GPU_CASES = [c for c in F32_CASES] + [
    ({"type": "ArgMax", "argmax_param": {"top_k": 2, "axis": 1}}, [np.round(rand((2, 4, 3)), 1)],
     None),
    ({"type": "Bias"}, [rand((2, 3, 2)), rand((3,), 2)], [rand((2, 3, 2), 1)]),
    ({"type": "SPP", "spp_param": {"pyramid_height": 3}}, [rand((2, 2, 7, 9))],
     [rand((2, 42), 1)]),
]


@pytest.mark.gpu
@pytest.mark.parametrize("spec,bottoms,diffs", GPU_CASES, ids=[c[0]["type"] for c in GPU_CASES])
def test_gpu_matches_cpu(spec, bottoms, diffs):
    if not cupy_available():
        pytest.skip("needs CuPy and a CUDA device")
    gpu = get_backend(gpu=True)
    shapes = [np.shape(b) for b in bottoms]
    cpu_layer, tops = make_layer(spec, shapes, backend=F32, seed=5)
    gpu_layer, _ = make_layer(spec, shapes, backend=gpu, seed=5)
    if diffs is None:
        want = run_forward(cpu_layer, [np.asarray(b, np.float32) for b in bottoms], tops)[1]
        got = run_forward(gpu_layer, [gpu.xp.asarray(b, np.float32) for b in bottoms], tops,
                          gpu.xp)[1]
        for w, g in zip(want, got):
            close(to_numpy(g.data), w.data)
        return
    want = forward_backward(cpu_layer, bottoms, tops, diffs)
    got = forward_backward(gpu_layer, bottoms, tops, diffs, xp=gpu.xp)
    for w_list, g_list in zip(want, got):
        for w, g in zip(w_list, g_list):
            if w is None:
                assert g is None
            else:
                close(g, w)


# -- Normalize (SSD) -------------------------------------------------------------------------------

NORMALIZE_CASES = [(across, shared) for across in (True, False) for shared in (True, False)]


@pytest.mark.parametrize("across,shared", NORMALIZE_CASES)
def test_normalize_gradients_and_closed_form(across, shared):
    x = rand((2, 4, 3, 3), seed=9)
    spec = {"type": "Normalize", "norm_param": {
        "across_spatial": across, "channel_shared": shared,
        "scale_filler": {"type": "gaussian", "std": 1.0}}}
    layer, shapes = make_layer(spec, [x.shape])
    s = layer.blobs[0].data
    assert s.shape == (() if shared else (4,))
    _, (y,) = run_forward(layer, [x], shapes)
    axes = (1, 2, 3) if across else (1,)
    r = np.sqrt((x * x).sum(axis=axes, keepdims=True) + 1e-10)
    np.testing.assert_allclose(y.data, x / r * (s if shared else s.reshape(1, -1, 1, 1)),
                               rtol=1e-12)
    check_gradients(layer, [x], shapes)


def test_normalize_scale_filler_defaults_to_one():
    layer, _ = make_layer({"type": "Normalize"}, [(1, 3, 2, 2)])
    assert layer.blobs[0].shape == () and float(layer.blobs[0].data) == 1.0


@pytest.mark.parametrize("case", ["normalize_channel", "normalize_spatial_shared"])
def test_fork_golden_normalize(case):
    from layer_cases import fork_golden_net, run_golden
    net, g = fork_golden_net(case)
    assert sorted(run_golden(net, g)) == ["n/0", "x"]


def test_normalize_shared_scale_round_trips_through_a_caffemodel(tmp_path):
    """The shared scale is a 0-d blob, as in SSD's caffemodels: exported and read back as ()."""
    pytest.importorskip("google.protobuf")
    import yaml

    from netspec.caffe.caffemodel import read_caffemodel_arrays
    from netspec.caffe.export import export_net
    from netspec.net import Net
    from netspec.snapshot import load_weights
    from netspec.spec import load_net

    spec = {"name": "n", "layer": [
        {"name": "x", "type": "Input", "top": "x", "input_param": {"shape": {"dim": [1, 2, 3, 3]}}},
        {"name": "n", "type": "Normalize", "bottom": "x", "top": "y",
         "norm_param": {"scale_filler": {"type": "constant", "value": 10}}}]}
    (tmp_path / "n.yaml").write_text(yaml.safe_dump(spec))
    np.savez(tmp_path / "w.npz", **{"n/0": np.array(3.5, np.float32)})
    export_net(tmp_path / "n.yaml", tmp_path / "n.prototxt", weights=tmp_path / "w.npz",
               caffemodel=tmp_path / "n.caffemodel")
    arrays = read_caffemodel_arrays(tmp_path / "n.caffemodel")
    assert arrays["n/0"].shape == () and float(arrays["n/0"]) == 3.5
    net = Net(load_net(tmp_path / "n.yaml"), "TEST", F32)
    assert load_weights(net, tmp_path / "n.caffemodel") == ([], [])
    assert float(net.layer_by_name("n").blobs[0].data) == 3.5
