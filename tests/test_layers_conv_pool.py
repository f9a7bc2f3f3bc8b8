"""Convolution and Pooling layers.

* float64 gradient checks (every layout and code path of both layers);
* forward against literal loop implementations of Caffe's ``conv_layer.cpp`` /
  ``pooling_layer.cpp`` (written here, independent of the layers' vectorised code);
* output sizes worked out by hand;
* Caffe parity: tests/golden/layers/ recorded by BVLC Caffe (float32);
* PyTorch parity where installed (float64).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from gradcheck import check_gradients, forward_backward, make_layer, rand, run_forward
from netspec.backend import Backend, cupy_available, get_backend
from netspec.errors import SpecError
from netspec.layers import conv as conv_module
from netspec.layers import pool as pool_module
from netspec.layers.pool import pooled_size

F32 = Backend(np, np.float32)
GOLDEN = Path(__file__).parent / "golden" / "layers"
GAUSS = {"type": "gaussian", "std": 1.0}


def conv_spec(**conv_param):
    conv_param.setdefault("weight_filler", GAUSS)
    conv_param.setdefault("bias_filler", GAUSS)
    return {"type": "Convolution", "name": "conv", "convolution_param": conv_param}


def pool_spec(top=None, **pool_param):
    spec = {"type": "Pooling", "name": "pool", "pooling_param": pool_param}
    if top:
        spec["top"] = top
    return spec


# -- literal references (Caffe's loops) ---------------------------------------------------
def conv_reference(x, w, b, stride, pad, dilation, group):
    """Caffe's convolution, one output pixel at a time."""
    N, _, H, W = x.shape
    M, Cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    Ho = (H + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    Wo = (W + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = np.zeros((N, M, Ho, Wo))
    Mg = M // group
    for g in range(group):
        xs, ws = xpad[:, g * Cg:(g + 1) * Cg], w[g * Mg:(g + 1) * Mg]
        for ho in range(Ho):
            for wo in range(Wo):
                patch = xs[:, :, ho * sh:ho * sh + dh * (kh - 1) + 1:dh,
                           wo * sw:wo * sw + dw * (kw - 1) + 1:dw]
                y[:, g * Mg:(g + 1) * Mg, ho, wo] = np.einsum("ncij,mcij->nm", patch, ws)
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def pool_reference(x, kernel, stride, pad, method, ceil=True, global_pooling=False):
    """Caffe's pooling_layer.cpp Forward_cpu, literally; returns (top, mask)."""
    N, C, H, W = x.shape
    if global_pooling:
        kernel, stride, pad = (H, W), (1, 1), (0, 0)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    rnd = math.ceil if ceil else math.floor
    Ho = int(rnd((H + 2 * ph - kh) / sh)) + 1
    Wo = int(rnd((W + 2 * pw - kw) / sw)) + 1
    if ph or pw:
        Ho -= (Ho - 1) * sh >= H + ph
        Wo -= (Wo - 1) * sw >= W + pw
    y = np.zeros((N, C, Ho, Wo))
    mask = np.full((N, C, Ho, Wo), -1.0)
    for i in range(Ho):
        for j in range(Wo):
            hs, ws = i * sh - ph, j * sw - pw
            he, we = min(hs + kh, H + ph), min(ws + kw, W + pw)
            pool_size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, H), min(we, W)
            win = x[:, :, hs:he, ws:we].reshape(N, C, -1)
            if method == "MAX":
                a = win.argmax(axis=2)                # first maximum in scan order
                y[:, :, i, j] = win.max(axis=2)
                mask[:, :, i, j] = (hs + a // (we - ws)) * W + ws + a % (we - ws)
            else:
                y[:, :, i, j] = win.sum(axis=2) / pool_size
    return y, mask


# -- Convolution ----------------------------------------------------------------------------
CONV_CASES = {
    "pad_stride": ((2, 3, 7, 7), dict(num_output=4, kernel_size=3, pad=1, stride=2)),
    "group2": ((2, 4, 6, 6), dict(num_output=6, kernel_size=3, group=2)),
    "dilation": ((2, 3, 9, 9), dict(num_output=3, kernel_size=3, pad=2, dilation=2)),
    "hw_fields": ((2, 3, 7, 6), dict(num_output=4, kernel_h=3, kernel_w=2, pad_h=1, pad_w=0,
                                     stride_h=2, stride_w=1)),
    "repeated_hw": ((2, 2, 8, 7), dict(num_output=2, kernel_size=[3, 2], pad=[1, 2],
                                       stride=[2, 1], dilation=[1, 2])),
    "no_bias": ((2, 3, 6, 6), dict(num_output=5, kernel_size=2, stride=2, bias_term=False)),
    # stride 1, one group: transposed-convolution or col2im bottom diffs (by layout)
    "same_pad": ((2, 3, 6, 6), dict(num_output=4, kernel_size=3, pad=1)),
    "unpadded": ((2, 4, 7, 9), dict(num_output=3, kernel_h=2, kernel_w=4)),
    "wide_kernel": ((2, 2, 5, 11), dict(num_output=2, kernel_h=1, kernel_w=5, pad_h=0, pad_w=2)),
}



def _hw(p, name, default):
    """(h, w) of a conv param dict, for the reference."""
    if f"{name}_h" in p:
        return p[f"{name}_h"], p[f"{name}_w"]
    v = p.get("kernel_size" if name == "kernel" else name, default)
    v = v if isinstance(v, list) else [v]
    return v[0], v[-1]


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_forward_matches_reference(case, layout):
    shape, p = CONV_CASES[case]
    layer, tops = make_layer(conv_spec(**p), [shape], seed=1)
    assert layer.conv.fwd.chunk == (1 if layout.startswith("chunk1") else shape[0])
    x = rand(shape)
    _, top = run_forward(layer, [x], tops)
    b = layer.blobs[1].data if p.get("bias_term", True) else None
    want = conv_reference(x, layer.blobs[0].data, b, _hw(p, "stride", 1), _hw(p, "pad", 0),
                          _hw(p, "dilation", 1), p.get("group", 1))
    assert top[0].shape == want.shape
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_gradients(case, layout):
    shape, p = CONV_CASES[case]
    layer, tops = make_layer(conv_spec(**p), [shape], seed=2)
    assert len(layer.blobs) == (2 if p.get("bias_term", True) else 1)
    check_gradients(layer, [rand(shape, 3)], tops)


def test_conv_two_bottoms_share_weights(layout):
    """Caffe: N bottoms -> N tops with one set of weights; parameter gradients add up."""
    spec = conv_spec(num_output=3, kernel_size=3, pad=1)
    layer, tops = make_layer(dict(spec, top=["y0", "y1"]), [(2, 2, 5, 5)] * 2, seed=4)
    assert tops == [(2, 3, 5, 5)] * 2
    x0, x1 = rand((2, 2, 5, 5), 5), rand((2, 2, 5, 5), 6)
    _, top = run_forward(layer, [x0, x1], tops)
    single, _ = make_layer(spec, [(2, 2, 5, 5)], seed=4)
    for x, t in zip((x0, x1), top):
        np.testing.assert_allclose(t.data, run_forward(single, [x], tops[:1])[1][0].data)
    check_gradients(layer, [x0, x1], tops)


def test_conv_backward_twice_and_buffers_reused(layout):
    """Backward reuses forward's columns; a second backward (columns overwritten) recomputes
    them; parameter diffs accumulate (+=) and bottom diffs are overwritten."""
    shape, p = CONV_CASES["group2"]
    layer, tops = make_layer(conv_spec(**p), [shape], seed=7)
    dy = rand(tops[0], 8)
    (y1,), (dx1,), (dw1, db1) = forward_backward(layer, [rand(shape, 9)], tops, [dy])
    bottom, top = run_forward(layer, [rand(shape, 9)], tops)
    top[0].diff = dy
    layer.backward(top, [True], bottom)
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(top[0].data, y1)
    np.testing.assert_allclose(bottom[0].diff, dx1)
    np.testing.assert_allclose(layer.blobs[0].diff, 3 * dw1)
    np.testing.assert_allclose(layer.blobs[1].diff, 3 * db1)


@pytest.mark.parametrize("path", ["transposed", "col2im", "taps"])
def test_conv_partial_last_chunk(monkeypatch, path):
    """A batch of 5 in chunks of 2 (2 + 2 + 1): same forward as the reference, and gradients,
    with each bottom-diff path (col2im in chunks of 2 as well)."""
    shape, p = (5, 3, 6, 6), dict(num_output=4, kernel_size=3, pad=1)
    per_sample = 6 * 6 * 3 * 3 * 3 * 8                       # Ho·Wo·C·kh·kw float64 columns
    # col2im's per sample: dcol and dy (Ho·Wo·(kh·kw·C + M)) and the padded bottom diff
    col2im_per_sample = (6 * 6 * (3 * 3 * 3 + 4) + 8 * 8 * 3) * 8
    assert (2 * col2im_per_sample) // per_sample == 2
    monkeypatch.setattr(conv_module, "COL_CHUNK_BYTES", 2 * col2im_per_sample)
    monkeypatch.setattr(conv_module, "TRANSPOSED_MIN_CHANNELS", 1)
    monkeypatch.setattr(conv_module, "TRANSPOSED_BACKWARD", path == "transposed")
    monkeypatch.setattr(conv_module, "COL2IM_BACKWARD", path == "col2im")
    layer, tops = make_layer(conv_spec(**p), [shape], seed=11)
    assert layer.conv.fwd.chunks() == [(0, 2), (2, 2), (4, 1)]
    assert (layer.conv.transposed, layer.conv.col2im) == (path == "transposed", path == "col2im")
    if path == "col2im":
        assert layer.conv._tap_chunk == 2
    x = rand(shape, 12)
    _, top = run_forward(layer, [x], tops)
    want = conv_reference(x, layer.blobs[0].data, layer.blobs[1].data, (1, 1), (1, 1), (1, 1), 1)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12, atol=1e-12)
    check_gradients(layer, [x], tops)


@pytest.mark.parametrize("pair_transposed", [True, False])
@pytest.mark.parametrize("path", ["transposed", "col2im", "taps"])
def test_conv_kernel_rows_partial_chunks(monkeypatch, path, pair_transposed):
    """Columns along W with one GEMM per kernel row, a batch of 5 in chunks of 2 (2 + 2 + 1),
    against the reference and the finite-difference gradients, with each bottom-diff path and
    both orientations of the weight products; the per-tap case with dilation 2 and stride_w 2
    (kernel row i reads padded rows 2i …)."""
    if path == "taps":
        shape, p = (5, 8, 9, 9), dict(num_output=8, kernel_size=3, pad=2, dilation=2,
                                      stride_h=1, stride_w=2)
        stride, pad, dil, Hp, Wo = (1, 2), (2, 2), (2, 2), 13, 5
    else:
        shape, p = (5, 8, 6, 6), dict(num_output=8, kernel_size=3, pad=1)
        stride, pad, dil, Hp, Wo = (1, 1), (1, 1), (1, 1), 8, 6
    per_sample = Hp * Wo * 3 * 8 * 8           # Hp·Wo·kw·C float64 columns along W
    monkeypatch.setattr(conv_module, "COL_CHUNK_BYTES", 2 * 2 * per_sample)   # half: 2 samples
    monkeypatch.setattr(conv_module, "TRANSPOSED_BACKWARD", path == "transposed")
    monkeypatch.setattr(conv_module, "COL2IM_BACKWARD", path == "col2im")
    for name in ("PAIR_TRANSPOSED_MIN_COLUMNS", "PAIR_TRANSPOSED_MIN_ASPECT"):
        monkeypatch.setattr(conv_module, name, 0 if pair_transposed else 10**9)
    layer, tops = make_layer(conv_spec(**p), [shape], seed=13)
    conv = layer.conv
    assert conv.fwd.krows and conv.fwd.chunks() == [(0, 2), (2, 2), (4, 1)]
    assert conv.fwd.pair_transposed == pair_transposed
    assert (conv.transposed, conv.col2im) == (path == "transposed", path == "col2im")
    if path == "transposed":                   # dy (5, 8, 6, 6) padded by 1: the same chunks
        conv.backward_data(rand(tops[0], 14), layer.blobs[0].data, rand(shape, 15))
        assert conv._bwd.krows and conv._bwd.chunks() == [(0, 2), (2, 2), (4, 1)]
    x = rand(shape, 16)
    _, top = run_forward(layer, [x], tops)
    want = conv_reference(x, layer.blobs[0].data, layer.blobs[1].data, stride, pad, dil, 1)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12, atol=1e-12)
    check_gradients(layer, [x], tops)


def test_conv_backward_path_choice():
    """Stride-1 "same" convolutions on enough channels take the transposed-convolution bottom
    diff; other stride-1 ones of one group (unpadded: the transposed GEMM would be
    (H·W)/(Ho·Wo) times larger; few channels) take col2im, strided ones per-tap products. Few-channel inputs use the NCHW
    column layout."""
    def plan(shape, **p):
        return make_layer(conv_spec(**p), [shape], backend=F32)[0].conv
    cifar2 = plan((100, 32, 16, 16), num_output=32, kernel_size=5, pad=2)
    lenet2 = plan((64, 20, 12, 12), num_output=50, kernel_size=5)
    lenet1 = plan((64, 1, 28, 28), num_output=20, kernel_size=5)
    strided = plan((2, 16, 9, 9), num_output=8, kernel_size=3, pad=1, stride=2)
    assert (cifar2.transposed, lenet2.transposed, lenet1.transposed, strided.transposed) == \
        (True, False, False, False)
    assert (cifar2.col2im, lenet2.col2im, lenet1.col2im, strided.col2im) == \
        (False, True, True, False)
    assert (cifar2.fwd.rows, lenet2.fwd.rows, lenet1.fwd.rows) == (True, True, False)
    # one group, stride_h 1, rows layout: columns along W only, one GEMM per kernel row
    assert (cifar2.fwd.krows, lenet2.fwd.krows, lenet1.fwd.krows, strided.fwd.krows) == \
        (True, True, False, False)
    # their chunk's columns (Hp·Wo·kw·C floats per sample) stay within half the cache
    # budget (5 samples of CIFAR conv2: 1.0 MB); other layouts' within the budget
    assert cifar2.fwd.chunk == (conv_module.COL_CHUNK_BYTES // 2) // (20 * 16 * 5 * 32 * 4)
    assert strided.fwd.chunk == min(2, conv_module.COL_CHUNK_BYTES // (5 * 5 * 16 * 9 * 4))
    # weight products as colsᵀ @ zᵀ when the columns (kw·C values) are wide: ≥ 256 or ≥ 4×
    # z's channels. The transposed backwards of CIFAR conv2 / conv3 read dy's columns, 5·32 =
    # 160 / 5·64 = 320 wide, against x's 32 channels; LeNet conv2's 100 against dy's 50
    cifar3 = plan((100, 32, 8, 8), num_output=64, kernel_size=5, pad=2)
    for conv in (cifar2, cifar3):
        conv.backward_data(F32.zeros((100, conv.M, conv.Ho, conv.Wo)),
                           F32.zeros((conv.M, 32, 5, 5)), F32.zeros((100, 32, conv.H, conv.W)))
    assert (cifar2._bwd.pair_transposed, cifar3._bwd.pair_transposed) == (True, True)
    assert (cifar2.fwd.pair_transposed, cifar3.fwd.pair_transposed,
            lenet2.fwd.pair_transposed) == (True, False, False)


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_weight_grad_same_with_and_without_bottom_diff(case, layout):
    """dW computed alongside the bottom diff (on the transposed path: from the columns of dy)
    equals dW computed alone from the columns of x."""
    shape, p = CONV_CASES[case]
    layer, tops = make_layer(conv_spec(**p), [shape], seed=11)
    x, dy = rand(shape, 12), rand(tops[0], 13)
    _, (dx,), (dw_with, *_) = forward_backward(layer, [x], tops, [dy], propagate=[True])
    layer.blobs[0].diff[...] = 0
    _, (none,), (dw_alone, *_) = forward_backward(layer, [x], tops, [dy], propagate=[False])
    assert dx is not None and none is None
    np.testing.assert_allclose(dw_with, dw_alone, rtol=1e-12, atol=1e-12)


def test_conv_no_propagate_down_leaves_bottom_diff():
    layer, tops = make_layer(conv_spec(num_output=2, kernel_size=3), [(1, 1, 5, 5)])
    bottom, top = run_forward(layer, [rand((1, 1, 5, 5))], tops)
    bottom[0].diff[...] = 7.0
    top[0].diff = rand(tops[0])
    layer.backward(top, [False], bottom)
    assert np.all(bottom[0].diff == 7.0)
    assert np.any(layer.blobs[0].diff != 0)


def test_conv_float32_end_to_end():
    layer, tops = make_layer(conv_spec(num_output=4, kernel_size=3, pad=1), [(2, 3, 6, 6)],
                             backend=F32)
    _, (dx,), (dw, db) = forward_backward(layer, [rand((2, 3, 6, 6))], tops,
                                          [rand(tops[0])])
    buffers = (layer.conv.fwd.col, layer.conv.fwd.buf)
    assert {a.dtype for a in (dx, dw, db, *buffers)} == {np.dtype(np.float32)}


def _random_geometries(count, seed):
    """Random 2-D convolution geometries (bottom shape, convolution_param)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        g = int(rng.choice([1, 1, 2]))
        kh, kw = (int(v) for v in rng.integers(1, 5, 2))
        sh, sw = (int(v) for v in rng.integers(1, 4, 2))
        dh, dw = (int(v) for v in rng.integers(1, 3, 2))
        ph, pw = (int(v) for v in rng.integers(0, 3, 2))
        H, W = (int(v) for v in rng.integers(4, 12, 2))
        if H + 2 * ph < dh * (kh - 1) + 1 or W + 2 * pw < dw * (kw - 1) + 1:
            continue
        shape = (int(rng.integers(1, 4)), g * int(rng.integers(1, 4)), H, W)
        out.append((shape, dict(num_output=g * int(rng.integers(1, 4)), kernel_h=kh, kernel_w=kw,
                                stride_h=sh, stride_w=sw, pad_h=ph, pad_w=pw,
                                dilation=[dh, dw], group=g)))
    return out


@pytest.mark.parametrize("shape, p", _random_geometries(12, 2026))
def test_conv_random_geometries_float32_and_float64(shape, p, layout):
    """Random shapes/stride/pad/dilation/group: float64 forward = the loop reference to 1e-12;
    float32 forward, bottom and weight diffs = float64's to float32 precision."""
    layer64, tops = make_layer(conv_spec(**p), [shape], seed=8)
    layer32, _ = make_layer(conv_spec(**p), [shape], backend=F32, seed=8)
    layer32.blobs[0].data[...] = layer64.blobs[0].data
    layer32.blobs[1].data[...] = layer64.blobs[1].data
    x, dy = rand(shape, 9), rand(tops[0], 10)
    want = conv_reference(x, layer64.blobs[0].data, layer64.blobs[1].data,
                          (p["stride_h"], p["stride_w"]), (p["pad_h"], p["pad_w"]),
                          tuple(p["dilation"]), p["group"])
    r64 = forward_backward(layer64, [x], tops, [dy])
    r32 = forward_backward(layer32, [x], tops, [dy])
    np.testing.assert_allclose(r64[0][0], want, rtol=1e-12, atol=1e-12)
    for a32, a64 in zip((*r32[0], *r32[1], *r32[2]), (*r64[0], *r64[1], *r64[2])):
        np.testing.assert_allclose(a32, a64, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(a64).max()))


def test_conv_output_sizes():
    # LeNet: conv1 28 -> 24, conv2 12 -> 8 (kernel 5, no pad)
    assert make_layer(conv_spec(num_output=20, kernel_size=5), [(64, 1, 28, 28)])[1] == \
        [(64, 20, 24, 24)]
    assert make_layer(conv_spec(num_output=50, kernel_size=5), [(64, 20, 12, 12)])[1] == \
        [(64, 50, 8, 8)]
    # extent d(k-1)+1 = 5: (9 + 4 - 5) // 2 + 1 = 5;  (10 + 0 - 3) // 3 + 1 = 3 (floor)
    assert make_layer(conv_spec(num_output=6, kernel_size=3, stride=2, pad=2, dilation=2,
                                group=2), [(2, 4, 9, 9)])[1] == [(2, 6, 5, 5)]
    assert make_layer(conv_spec(num_output=1, kernel_h=3, kernel_w=1, stride_h=3, stride_w=1),
                      [(1, 1, 10, 4)])[1] == [(1, 1, 3, 4)]


@pytest.mark.parametrize("p, shape, words", [
    (dict(num_output=2, kernel_size=3, kernel_h=3, kernel_w=3), (1, 1, 5, 5), "not both"),
    (dict(num_output=2, kernel_h=3), (1, 1, 5, 5), "together"),
    (dict(num_output=2), (1, 1, 5, 5), "required"),
    (dict(num_output=2, kernel_size=[3, 3, 3]), (1, 1, 5, 5), "1 or 2 values"),
    (dict(num_output=3, kernel_size=3, group=2), (1, 4, 5, 5), "divisible"),
    (dict(num_output=2, kernel_size=3), (1, 1, 5), "2-D"),
    (dict(num_output=2, kernel_size=3, stride=0), (1, 1, 5, 5), "stride"),
])
def test_conv_spec_errors(p, shape, words):
    with pytest.raises(SpecError, match=words):
        make_layer(conv_spec(**p), [shape])


def test_conv_kernel_larger_than_input_is_an_error():
    with pytest.raises(Exception, match="exceeds"):
        make_layer(conv_spec(num_output=1, kernel_size=5), [(1, 1, 3, 3)])


# -- Pooling --------------------------------------------------------------------------------
@pytest.fixture(params=["MAX", "AVE", "AVE_taps"])
def method(request, monkeypatch):
    """The pooling method of a test: MAX, AVE (as the pooling matrix wherever the planes are
    small enough, as in these cases) or AVE computed tap by tap (``AVE_taps``)."""
    if request.param == "AVE_taps":
        monkeypatch.setattr(pool_module, "AVE_MATRIX_MAX_CELLS_PER_TAP", 0)
        return "AVE"
    return request.param


#: name -> (bottom shape, pooling_param); covers direct (tiling, gaps) and phased layouts,
#: ceil overhang, padding, the "last window starts inside" rule, FLOOR, global, h/w fields
POOL_CASES = {
    "k2s2_tiles": ((2, 3, 6, 8), dict(kernel_size=2, stride=2)),
    "k2s3_gaps": ((2, 3, 8, 8), dict(kernel_size=2, stride=3)),
    "k3s2_ceil_overhang": ((2, 3, 8, 8), dict(kernel_size=3, stride=2)),
    "k3s2_pad1": ((2, 3, 7, 7), dict(kernel_size=3, stride=2, pad=1)),
    "k2s2_pad1_rule": ((2, 3, 5, 5), dict(kernel_size=2, stride=2, pad=1)),
    "k3s1_pad1": ((2, 2, 5, 6), dict(kernel_size=3, stride=1, pad=1)),
    "k3s2_floor_uncovered": ((2, 3, 8, 8), dict(kernel_size=3, stride=2, round_mode="FLOOR")),
    "hw_fields": ((2, 3, 7, 6), dict(kernel_h=3, kernel_w=2, stride_h=2, stride_w=1,
                                     pad_h=1, pad_w=0)),
    "k4s3_pad2": ((2, 2, 9, 10), dict(kernel_size=4, stride=3, pad=2)),
    "global": ((2, 3, 5, 4), dict(global_pooling=True)),
}


def _pool_ref(shape, p, x, method):
    if "kernel_h" in p:
        k, s, pad = (p["kernel_h"], p["kernel_w"]), (p["stride_h"], p["stride_w"]), \
            (p["pad_h"], p["pad_w"])
    else:
        k = (p.get("kernel_size", 0),) * 2
        s, pad = (p.get("stride", 1),) * 2, (p.get("pad", 0),) * 2
    return pool_reference(x, k, s, pad, method, ceil=p.get("round_mode", "CEIL") == "CEIL",
                          global_pooling=p.get("global_pooling", False))


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pool_forward_matches_reference(case, method):
    shape, p = POOL_CASES[case]
    x = rand(shape, 11)
    want, want_mask = _pool_ref(shape, p, x, method)
    top = ["y", "mask"] if method == "MAX" else None
    layer, tops = make_layer(pool_spec(pool=method, top=top, **p), [shape])
    _, got = run_forward(layer, [x], tops)
    assert got[0].shape == want.shape
    np.testing.assert_allclose(got[0].data, want, rtol=1e-12, atol=1e-12)
    if method == "MAX":
        np.testing.assert_array_equal(got[1].data, want_mask)


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pool_gradients(case, method):
    shape, p = POOL_CASES[case]
    layer, tops = make_layer(pool_spec(pool=method, **p), [shape])
    check_gradients(layer, [rand(shape, 12)], tops)


def _random_pool_geometries(count, seed):
    """Random pooling geometries (bottom shape, pooling_param): kernel, stride, pad and
    rounding per dim, kept to Caffe's constraints (pad < kernel, the window fits)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        kh, kw = (int(v) for v in rng.integers(1, 5, 2))
        sh, sw = (int(v) for v in rng.integers(1, 4, 2))
        ph, pw = int(rng.integers(0, kh)), int(rng.integers(0, kw))
        H, W = (int(v) for v in rng.integers(3, 13, 2))
        if H + 2 * ph < kh or W + 2 * pw < kw:
            continue
        shape = (int(rng.integers(1, 4)), int(rng.integers(1, 4)), H, W)
        out.append((shape, dict(kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, pad_h=ph,
                                pad_w=pw, round_mode=str(rng.choice(["CEIL", "FLOOR"])))))
    return out


@pytest.mark.parametrize("shape, p", _random_pool_geometries(12, 2027))
def test_pool_random_geometries_float32_and_float64(shape, p, method):
    """Random kernel/stride/pad/rounding: float64 forward = Caffe's loop to 1e-12, float64
    gradients = finite differences, float32 top and bottom diff = float64's."""
    spec = pool_spec(pool=method, **p)
    layer64, tops = make_layer(spec, [shape])
    layer32, _ = make_layer(spec, [shape], backend=F32)
    x, dy = rand(shape, 17), rand(tops[0], 18)
    want, _ = pool_reference(x, (p["kernel_h"], p["kernel_w"]), (p["stride_h"], p["stride_w"]),
                             (p["pad_h"], p["pad_w"]), method, ceil=p["round_mode"] == "CEIL")
    r64 = forward_backward(layer64, [x], tops, [dy])
    np.testing.assert_allclose(r64[0][0], want, rtol=1e-12, atol=1e-12)
    check_gradients(layer64, [x], tops)
    r32 = forward_backward(layer32, [x.astype(np.float32)], tops, [dy])
    for a32, a64 in ((r32[0][0], r64[0][0]), (r32[1][0], r64[1][0])):
        assert a32.dtype == np.float32
        np.testing.assert_allclose(a32, a64, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pool_max_in_test_phase_keeps_maxima_only_and_backward_still_works(case):
    """A TEST-phase MAX layer without the mask top skips the winners in its forward; a backward
    after it (``netspec time --phase TEST``) recomputes them: both passes equal TRAIN's."""
    shape, p = POOL_CASES[case]
    x = rand(shape, 13)
    x[..., 0, 1] = x[..., 0, 0]                       # a tie: the first in scan order wins
    train, tops = make_layer(pool_spec(pool="MAX", **p), [shape])
    test, _ = make_layer(pool_spec(pool="MAX", **p), [shape], phase="TEST")
    dy = [rand(tops[0], 14)]
    want = forward_backward(train, [x], tops, dy)
    _, top = run_forward(test, [x], tops)
    np.testing.assert_array_equal(top[0].data, want[0][0])
    assert test._argmax_stale == ("global_pooling" not in p)     # the maxima-only path ran
    got = forward_backward(test, [x], tops, dy)
    np.testing.assert_array_equal(got[0][0], want[0][0])
    np.testing.assert_array_equal(got[1][0], want[1][0])
    assert not test._argmax_stale


@pytest.mark.parametrize("case", ["k2s2_tiles", "k3s2_pad1", "global"])
def test_pool_max_ties_go_to_first_in_scan_order(case):
    """All-equal windows: Caffe's strict '>' scan sends the gradient to the first cell only."""
    shape, p = POOL_CASES[case]
    layer, tops = make_layer(pool_spec(pool="MAX", top=["y", "mask"], **p), [shape])
    (_, mask), (dx,), _ = forward_backward(layer, [np.ones(shape)], tops,
                                           [np.ones(tops[0]), np.zeros(tops[1])])
    _, want_mask = _pool_ref(shape, p, np.ones(shape), "MAX")
    np.testing.assert_array_equal(mask, want_mask)
    want_dx = np.zeros(shape).reshape(shape[0], shape[1], -1)
    for n in range(shape[0]):
        for c in range(shape[1]):
            np.add.at(want_dx[n, c], want_mask[n, c].astype(int).ravel(), 1.0)
    np.testing.assert_array_equal(dx, want_dx.reshape(shape))


def test_pool_backward_repeatable_and_overwrites():
    """Buffers are reused across iterations: a second forward/backward gives the same result
    and the bottom diff is overwritten, not accumulated."""
    for method in ("MAX", "AVE"):
        shape, p = POOL_CASES["k3s2_pad1"]
        layer, tops = make_layer(pool_spec(pool=method, **p), [shape])
        x, dy = rand(shape, 13), rand(tops[0], 14)
        bottom, top = run_forward(layer, [x], tops)
        top[0].diff = dy
        layer.backward(top, [True], bottom)
        first = bottom[0].diff.copy()
        layer.forward(bottom, top)
        layer.backward(top, [True], bottom)
        np.testing.assert_array_equal(bottom[0].diff, first)


def test_pool_ave_matrix_for_small_planes_only():
    """CPU AVE pooling is one GEMM with the pooling matrix when the planes hold at most
    AVE_MATRIX_MAX_CELLS_PER_TAP cells per kernel tap (CIFAR-10 quick's pool2 and pool3),
    else tap by tap (a 32×32 plane, 3×3: 1024 > 288 cells); never MAX or global pooling.
    The matrix holds 1/pool_size at each window's image cells: a column sums to the share of
    its window's pool_size inside the image."""
    def matrix(shape, **p):
        return make_layer(pool_spec(**p), [shape], backend=F32)[0]._matrix
    ave = dict(pool="AVE", kernel_size=3, stride=2)
    pool2, pool3 = matrix((100, 32, 16, 16), **ave), matrix((100, 64, 8, 8), **ave)
    assert pool2.shape == (256, 64) and pool3.shape == (64, 16)
    assert pool2.dtype == np.float32
    assert matrix((1, 2, 32, 32), **ave) is None
    assert matrix((100, 32, 16, 16), pool="MAX", kernel_size=3, stride=2) is None
    assert matrix((2, 3, 5, 4), pool="AVE", global_pooling=True) is None
    # a window with no image cell (stride > kernel, ceil): Caffe's 0/0, NaN -- tap by tap
    assert matrix((1, 1, 4, 4), pool="AVE", kernel_size=1, stride=2) is None
    # the ceil overhang does not count in pool_size: every window of pool2 averages its cells
    np.testing.assert_allclose(pool2.sum(axis=0), 1.0, rtol=1e-6)
    # padding does: 7×7, 3×3/2, pad 1 -> 4×4 windows whose first/last rows and columns hold
    # 2 image rows/columns of 3
    cover = np.array([2 / 3, 1, 1, 2 / 3])
    padded = matrix((1, 1, 7, 7), pad=1, **ave)
    np.testing.assert_allclose(padded.sum(axis=0), np.outer(cover, cover).ravel(), rtol=1e-6)


@pytest.mark.parametrize("size, k, pad, stride, ceil, want", [
    (24, 2, 0, 2, True, 12),     # LeNet's pool1: 24x24, 2x2/2 -> 12x12
    (8, 2, 0, 2, True, 4),       # LeNet's pool2
    (8, 3, 0, 2, True, 4),       # ceil((8-3)/2)+1 = ceil(2.5)+1: the last window overhangs
    (8, 3, 0, 2, False, 3),      # FLOOR: floor(2.5)+1
    (7, 3, 1, 2, True, 4),       # ceil((7+2-3)/2)+1 = 4; (4-1)*2 = 6 < 7+1: kept
    (5, 2, 1, 2, True, 3),       # ceil((5+2-2)/2)+1 = 4, but (4-1)*2 = 6 >= 5+1: -> 3
    (6, 3, 1, 3, True, 3),       # ceil((6+2-3)/3)+1 = 3; (3-1)*3 = 6 < 7: kept
    (112, 3, 0, 2, True, 56),    # GoogLeNet pool1 (after conv1: 112 -> 56)
    (32, 3, 0, 2, True, 16),     # CIFAR-10 quick pool1
])
def test_pooled_size(size, k, pad, stride, ceil, want):
    assert pooled_size(size, k, pad, stride, ceil, any_pad=pad > 0) == want
    p = dict(pool="AVE", kernel_size=k, pad=pad, stride=stride,
             round_mode="CEIL" if ceil else "FLOOR")
    assert make_layer(pool_spec(**p), [(1, 2, size, size)])[1] == [(1, 2, want, want)]


def test_pool_rule_applies_to_both_dims_when_either_pads():
    """Caffe checks the 'last window starts inside' rule in both dims when pad_h or pad_w > 0:
    W = 5, k 1, s 3, pad_w 0 gives ceil(4/3)+1 = 3, and (3-1)*3 = 6 >= 5 drops one."""
    p = dict(pool="MAX", kernel_h=3, kernel_w=1, stride_h=1, stride_w=3, pad_h=1, pad_w=0)
    assert make_layer(pool_spec(**p), [(1, 1, 4, 5)])[1] == [(1, 1, 4, 2)]


@pytest.mark.parametrize("p, top, words", [
    (dict(pool="STOCHASTIC", kernel_size=2), None, "STOCHASTIC"),
    (dict(pool="AVE", kernel_size=2), ["y", "mask"], "second"),
    (dict(kernel_size=3, kernel_h=3, kernel_w=3), None, "not both"),
    (dict(stride=2), None, "required"),
    (dict(global_pooling=True, kernel_size=2), None, "global_pooling"),
    (dict(global_pooling=True, stride=2), None, "global_pooling"),
    (dict(kernel_size=2, pad=2), None, "smaller than the kernel"),
    (dict(kernel_size=2, pad_h=1), None, "together"),
])
def test_pool_spec_errors(p, top, words):
    with pytest.raises(SpecError, match=words):
        make_layer(pool_spec(top=top, **p), [(1, 1, 6, 6)])


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pool_in_sample_chunks(case, method, monkeypatch):
    """Chunks of 2 samples of a batch of 3 (the last chunk partial) give bit for bit the top,
    argmax mask and bottom diff of the whole batch at once (phase buffers, argmax slices and
    the MAX scatter per chunk; AVE tap by tap)."""
    monkeypatch.setattr(pool_module, "AVE_MATRIX_MAX_CELLS_PER_TAP", 0)
    shape, p = POOL_CASES[case]
    shape = (3,) + shape[1:]
    top = ["y", "mask"] if method == "MAX" else None
    layer, tops = make_layer(pool_spec(pool=method, top=top, **p), [shape])
    assert layer._chunk == 3
    x, dy = rand(shape, 15), rand(tops[0], 16)
    dys = [dy] + ([np.zeros(tops[1])] if top else [])
    whole_tops, (whole,), _ = forward_backward(layer, [x], tops, dys)
    monkeypatch.setattr(pool_module, "POOL_CHUNK_BYTES", 2 * 8 * int(np.prod(shape[1:])))
    layer, _ = make_layer(pool_spec(pool=method, top=top, **p), [shape])
    assert layer._chunk == 2 or case == "global"
    chunked_tops, (chunked,), _ = forward_backward(layer, [x], tops, dys)
    for got, want in zip(chunked_tops, whole_tops):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(chunked, whole)


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pool_float32_matches_float64(case, method):
    """Every layout in float32: same top and bottom diff as float64, float32 throughout."""
    shape, p = POOL_CASES[case]
    spec = pool_spec(pool=method, **p)
    layer32, tops = make_layer(spec, [shape], backend=F32)
    layer64, _ = make_layer(spec, [shape])
    x, dy = rand(shape, 13), rand(tops[0], 14)
    (y32,), (dx32,), _ = forward_backward(layer32, [x.astype(np.float32)], tops, [dy])
    (y64,), (dx64,), _ = forward_backward(layer64, [x.astype(np.float32)], tops, [dy])
    assert y32.dtype == dx32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx32, dx64, rtol=1e-6, atol=1e-6)


# -- Caffe parity (float32) -----------------------------------------------------------------
def _assert_close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * max(np.abs(want).max(), 1.0))


def test_caffe_conv_group_dilation():
    # layer { type: "Convolution" convolution_param { num_output: 6 kernel_size: 3 stride: 2
    #         pad: 2 dilation: 2 group: 2 } }, bottom x 2x4x9x9
    d = np.load(GOLDEN / "conv_group_dilation.npz")
    spec = conv_spec(num_output=6, kernel_size=3, stride=2, pad=2, dilation=2, group=2)
    layer, tops = make_layer(spec, [d["input/x"].shape], backend=F32)
    for i, blob in enumerate(layer.blobs):
        blob.data[...] = d[f"param/conv/{i}"]
    (y,), (dx,), (dw, db) = forward_backward(layer, [d["input/x"]], tops, [d["topdiff/y"]])
    _assert_close(y, d["top/y"])
    _assert_close(dx, d["bottomdiff/x"])
    _assert_close(dw, d["paramdiff/conv/0"])
    _assert_close(db, d["paramdiff/conv/1"])


CAFFE_POOL = {   # case -> pooling_param of its prototxt
    "pool_max_ceil": dict(pool="MAX", kernel_size=3, stride=2),
    "pool_max_ceil_pad": dict(pool="MAX", kernel_size=3, stride=2, pad=1),
    "pool_ave_ceil": dict(pool="AVE", kernel_size=3, stride=2),
    "pool_ave_ceil_pad": dict(pool="AVE", kernel_size=3, stride=2, pad=1),
    "pool_global_ave": dict(pool="AVE", global_pooling=True),
}


@pytest.mark.parametrize("case", list(CAFFE_POOL))
def test_caffe_pooling(case):
    d = np.load(GOLDEN / f"{case}.npz")
    layer, tops = make_layer(pool_spec(**CAFFE_POOL[case]), [d["input/x"].shape], backend=F32)
    assert tops == [d["top/y"].shape]
    (y,), (dx,), _ = forward_backward(layer, [d["input/x"]], tops, [d["topdiff/y"]])
    _assert_close(y, d["top/y"])
    _assert_close(dx, d["bottomdiff/x"])


# -- PyTorch parity (float64) ---------------------------------------------------------------
def test_torch_conv_group_dilation_pad_stride():
    torch = pytest.importorskip("torch")
    shape = (3, 4, 11, 10)
    spec = conv_spec(num_output=6, kernel_size=3, stride=2, pad=1, dilation=2, group=2)
    layer, tops = make_layer(spec, [shape], seed=21)
    x, dy = rand(shape, 22), rand(tops[0], 23)
    (y,), (dx,), (dw, db) = forward_backward(layer, [x], tops, [dy])
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(layer.blobs[0].data, requires_grad=True)
    tb = torch.tensor(layer.blobs[1].data, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride=2, padding=1, dilation=2, groups=2)
    ty.backward(torch.tensor(dy))
    for got, want in ((y, ty), (dx, tx.grad), (dw, tw.grad), (db, tb.grad)):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("k, s, pad, size", [(3, 2, 0, 8), (3, 2, 1, 7), (3, 2, 1, 8),
                                             (2, 2, 0, 7), (3, 1, 1, 6)])
def test_torch_pooling_ceil_mode(method, k, s, pad, size):
    """torch's ceil_mode rule equals Caffe's whenever stride <= kernel, and its AVE divisor
    with count_include_pad=True is Caffe's pool_size (padding counts, the overhang does not)."""
    torch = pytest.importorskip("torch")
    shape = (2, 3, size, size + 1)
    layer, tops = make_layer(pool_spec(pool=method, kernel_size=k, stride=s, pad=pad), [shape])
    x = rand(shape, 31)
    dy = rand(tops[0], 32)
    (y,), (dx,), _ = forward_backward(layer, [x], tops, [dy])
    tx = torch.tensor(x, requires_grad=True)
    F = torch.nn.functional
    if method == "MAX":
        ty = F.max_pool2d(tx, k, s, pad, ceil_mode=True)
    else:
        ty = F.avg_pool2d(tx, k, s, pad, ceil_mode=True, count_include_pad=True)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)


# -- GPU ------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("spec, shape", [
    (conv_spec(num_output=6, kernel_size=3, stride=2, pad=2, dilation=2, group=2), (4, 4, 9, 9)),
    (conv_spec(num_output=8, kernel_size=5), (8, 3, 28, 28)),
    (pool_spec(pool="MAX", kernel_size=3, stride=2, pad=1, top=["y", "mask"]), (2, 3, 7, 7)),
    (pool_spec(pool="MAX", kernel_size=2, stride=2), (2, 3, 8, 8)),
    (pool_spec(pool="AVE", kernel_size=3, stride=2), (2, 3, 8, 8)),
    (pool_spec(pool="MAX", global_pooling=True), (2, 3, 5, 5)),
])
def test_gpu_matches_cpu(spec, shape):
    if not cupy_available():
        pytest.skip("needs CuPy and a CUDA device")
    gpu = get_backend(gpu=True)
    cpu_layer, tops = make_layer(spec, [shape], backend=F32, seed=5)
    gpu_layer, _ = make_layer(spec, [shape], backend=gpu, seed=5)
    xs, dys = [rand(shape, 41)], [rand(s, 42 + i) for i, s in enumerate(tops)]
    want = forward_backward(cpu_layer, xs, tops, dys)
    got = forward_backward(gpu_layer, xs, tops, dys, xp=gpu.xp)
    for w_list, g_list in zip(want, got):
        for w, g in zip(w_list, g_list):
            _assert_close(g, w)


@pytest.mark.gpu
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_gpu_pooling_kernels_match_cpu(case, method):
    """The CUDA pooling kernels (float64) give the CPU path's top, mask and bottom diff."""
    if not cupy_available():
        pytest.skip("needs CuPy and a CUDA device")
    shape, p = POOL_CASES[case]
    top = ["y", "mask"] if method == "MAX" else None
    spec = pool_spec(pool=method, top=top, **p)
    gpu = get_backend(gpu=True, dtype="float64")
    cpu_layer, tops = make_layer(spec, [shape])
    gpu_layer, _ = make_layer(spec, [shape], backend=gpu)
    x = rand(shape, 21)
    # distinct values except for planted ties: the first maximum in scan order must win
    x[..., 0, 1] = x[..., 0, 0]
    dys = [rand(s, 22 + i) for i, s in enumerate(tops)]
    want = forward_backward(cpu_layer, [x], tops, dys)
    got = forward_backward(gpu_layer, [x], tops, dys, xp=gpu.xp)
    for w_list, g_list in zip(want, got):
        for w, g in zip(w_list, g_list):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("shape, p", [((8, 20, 12, 12), dict(num_output=10, kernel_size=5)),
                                      ((4, 6, 9, 9), dict(num_output=4, kernel_size=3,
                                                          stride=2, pad=1))])
def test_gpu_conv_backward_paths_match_cpu(shape, p):
    """On the GPU an unpadded stride-1 convolution takes the transposed-convolution bottom
    diff (the CPU takes per-tap products); strided ones take per-tap products on both."""
    if not cupy_available():
        pytest.skip("needs CuPy and a CUDA device")
    gpu = get_backend(gpu=True, dtype="float64")
    cpu_layer, tops = make_layer(conv_spec(**p), [shape], seed=3)
    gpu_layer, _ = make_layer(conv_spec(**p), [shape], backend=gpu, seed=3)
    assert gpu_layer.conv.transposed == (p.get("stride", 1) == 1)
    assert not cpu_layer.conv.transposed
    x, dy = rand(shape, 4), rand(tops[0], 5)
    want = forward_backward(cpu_layer, [x], tops, [dy])
    got = forward_backward(gpu_layer, [x], tops, [dy], xp=gpu.xp)
    for w_list, g_list in zip(want, got):
        for w, g in zip(w_list, g_list):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10)
