"""Convolution layers: Convolution, Deconvolution's machinery through Convolution, Im2col.

* float64 gradient checks under every code path of ``netspec/layers/conv_columns.py``;
* forward against a literal loop implementation of Caffe's ``conv_layer.cpp``;
* output sizes worked out by hand; Caffe parity (tests/golden/layers/, float32); PyTorch
  parity (float64).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gradcheck import check_gradients, forward_backward, make_layer, rand, run_forward
from netspec.backend import Backend, cupy_available, get_backend
from netspec.errors import SpecError
from netspec.layers.conv_columns import ConvColumns, ConvTuning
from netspec.layers.conv_direct import CompiledDepthwiseConv, DepthwiseConv, PointwiseConv
from netspec.layers.conv_winograd import WinogradConv
from conv_pool_cases import CONV_CASES, conv_reference, conv_spec, pool_spec

F32 = Backend(np, np.float32)
GOLDEN = Path(__file__).parent / "golden" / "layers"


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
    if not isinstance(layer.conv, PointwiseConv):      # no columns, no chunks
        direct = isinstance(layer.conv, (DepthwiseConv, CompiledDepthwiseConv, WinogradConv))
        chunk = layer.conv.chunk if direct else layer.conv.fwd.chunk
        assert chunk == (1 if layout.startswith("chunk1") else shape[0])
    x = rand(shape)
    _, top = run_forward(layer, [x], tops)
    b = layer.blobs[1].data if p.get("bias_term", True) else None
    want = conv_reference(x, layer.blobs[0].data, b, _hw(p, "stride", 1), _hw(p, "pad", 0),
                          _hw(p, "dilation", 1), p.get("group", 1))
    assert top[0].shape == want.shape
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12, atol=1e-12)
    winograd = (layout.endswith("direct") and p.get("kernel_size") == 3 and "stride" not in p
                and "dilation" not in p and "group" not in p)
    assert isinstance(layer.conv, WinogradConv) == winograd


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
def test_conv_partial_last_chunk(path, conv_tuning):
    """A batch of 5 in chunks of 2 (2 + 2 + 1): same forward as the reference, and gradients,
    with each bottom-diff path (col2im in chunks of 2 as well)."""
    shape, p = (5, 3, 6, 6), dict(num_output=4, kernel_size=3, pad=1)
    per_sample = 6 * 6 * 3 * 3 * 3 * 8                       # Ho·Wo·C·kh·kw float64 columns
    # col2im's per sample: dcol and dy (Ho·Wo·(kh·kw·C + M)) and the padded bottom diff
    col2im_per_sample = (6 * 6 * (3 * 3 * 3 + 4) + 8 * 8 * 3) * 8
    assert (2 * col2im_per_sample) // per_sample == 2
    conv_tuning(col_chunk_bytes=2 * col2im_per_sample)
    conv_tuning(transposed_min_channels=1)
    conv_tuning(transposed_backward=path == "transposed")
    conv_tuning(col2im_backward=path == "col2im")
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
def test_conv_kernel_rows_partial_chunks(path, pair_transposed, conv_tuning):
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
    conv_tuning(col_chunk_bytes=2 * 2 * per_sample)   # half: 2 samples
    conv_tuning(transposed_backward=path == "transposed")
    conv_tuning(col2im_backward=path == "col2im")
    pair_min = 0 if pair_transposed else 10**9
    conv_tuning(pair_transposed_min_columns=pair_min, pair_transposed_min_aspect=pair_min)
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
    assert cifar2.fwd.chunk == (ConvTuning().col_chunk_bytes // 2) // (20 * 16 * 5 * 32 * 4)
    assert strided.fwd.chunk == min(2, ConvTuning().col_chunk_bytes // (5 * 5 * 16 * 9 * 4))
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


# -- the forks' depthwise convolutions -------------------------------------------------------------

def _dw_spec(type_, M, **extra):
    return {"type": type_, "convolution_param": {
        "num_output": M, "kernel_size": 3, "pad": 1, "stride": 2, **extra,
        "weight_filler": {"type": "gaussian", "std": 0.5},
        "bias_filler": {"type": "gaussian", "std": 0.5}}}


@pytest.mark.parametrize("type_,M", [("DepthwiseConvolution", 4), ("DepthwiseConvolution", 8),
                                     ("ConvolutionDepthwise", 4)])
def test_depthwise_gradients_and_equals_grouped_convolution(type_, M):
    x = rand((2, 4, 7, 7), seed=7)
    layer, shapes = make_layer(_dw_spec(type_, M), [x.shape])
    assert shapes == [(2, M, 4, 4)] and layer.blobs[0].shape == (M, 1, 3, 3)
    check_gradients(layer, [x], shapes)
    conv, cshapes = make_layer(_dw_spec("Convolution", M, group=4), [x.shape])
    for a, b in zip(conv.blobs, layer.blobs):
        a.data[...] = b.data
    _, (y,) = run_forward(layer, [x], shapes)
    _, (yc,) = run_forward(conv, [x], cshapes)
    np.testing.assert_array_equal(y.data, yc.data)


@pytest.mark.parametrize("type_,M,extra,match", [
    ("DepthwiseConvolution", 6, {}, r"num_output \(6\) must be a multiple of the bottom's channel count \(4\)"),
    ("ConvolutionDepthwise", 8, {}, r"num_output \(8\) must be equal to the bottom's channel count \(4\)"),
    ("DepthwiseConvolution", 4, {"group": 2}, r"group \(2\) must be the bottom's channel count \(4\)"),
])
def test_depthwise_refuses_other_groupings(type_, M, extra, match):
    with pytest.raises(SpecError, match=match):
        make_layer(_dw_spec(type_, M, **extra), [(1, 4, 7, 7)])


@pytest.mark.parametrize("taps, planes", [(True, False), (True, True), (False, False)])
def test_fork_golden_depthwise_conv(taps, planes, conv_tuning):
    """The fork's Caffe (float32) against the per-tap path (forward in NHWC or by blocks of
    planes; batch 2, stride 2) and the column path."""
    from layer_cases import fork_golden_net, run_golden
    conv_tuning(depthwise_taps=taps, depthwise_taps_max_forward_positions=0 if planes else 100,
                compiled=False,
                depthwise_planes_max_batch=2, depthwise_planes_max_stride=2,
                depthwise_planes_min_positions=0)
    net, g = fork_golden_net("depthwise_conv")
    assert isinstance(net.layers[-1].conv, DepthwiseConv) == taps
    assert (taps and net.layers[-1].conv.planes is not None) == planes
    assert sorted(run_golden(net, g)) == ["dw/0", "dw/1", "x"]


# -- conv_direct: 1x1 convolutions as GEMMs, depthwise ones by kernel taps -------------------------

@pytest.mark.parametrize("case, kind", [("pointwise", PointwiseConv), ("pointwise_group2", PointwiseConv),
                                        ("depthwise", DepthwiseConv),
                                        ("depthwise_dilation", DepthwiseConv)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_direct_paths_equal_column_path(case, kind, dtype, threads, conv_tuning, monkeypatch):
    """Forward, bottom diff and weight diff of the direct path = the column path's, float32
    and float64, one thread and the batch split over two (``SplitColumns`` around them)."""
    from netspec import parallel
    monkeypatch.setattr(parallel, "SPLIT_MIN_MACS", 0)
    shape, p = CONV_CASES[case]
    backend = Backend(np, dtype, threads)
    results = []
    for direct in (True, False):
        conv_tuning(pointwise_gemm=direct, depthwise_taps=direct, compiled=False)
        layer, tops = make_layer(conv_spec(**p), [shape], backend=backend, seed=21)
        assert hasattr(layer.conv, "parts") == (threads > 1)
        conv = layer.conv.parts[0] if threads > 1 else layer.conv
        assert isinstance(conv, kind) == direct
        results.append(forward_backward(layer, [rand(shape, 22)], tops, [rand(tops[0], 23)]))
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for a, b in zip((*results[0][0], *results[0][1], *results[0][2]),
                    (*results[1][0], *results[1][1], *results[1][2])):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, np.abs(b).max()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N, C, H, W, k, pad, stride, dilation, bias", [
    (1, 5, 11, 9, 3, 1, 1, 1, True), (1, 3, 8, 8, 3, 0, 1, 1, False),
    (1, 4, 9, 10, 3, 2, 1, 2, True), (2, 3, 7, 6, 3, 1, 2, 1, True),
    (1, 6, 10, 7, 5, 2, 1, 1, False)])
@pytest.mark.parametrize("block_bytes", [1, 2000, 1 << 30])
def test_depthwise_plane_taps_equal_column_path(N, C, H, W, k, pad, stride, dilation, bias,
                                                dtype, block_bytes, conv_tuning):
    """The forward by blocks of NCHW planes (one plane, a few with a partial last block, all)
    = the column path's, float32 and float64, with and without bias."""
    conv_tuning(depthwise_taps_max_forward_positions=0, depthwise_planes_max_batch=N,
                depthwise_planes_max_stride=stride, depthwise_planes_block_bytes=block_bytes,
                depthwise_planes_min_positions=0)
    backend = Backend(np, dtype)
    ext = dilation * (k - 1) + 1
    Ho, Wo = (H + 2 * pad - ext) // stride + 1, (W + 2 * pad - ext) // stride + 1
    conv = DepthwiseConv(backend, N, C, H, W, Ho, Wo, (k, k), (pad, pad), (stride, stride),
                         (dilation, dilation))
    assert conv.planes is not None and conv.columns is None
    cols = ConvColumns(backend, N, C, H, W, C, Ho, Wo, C, (k, k), (pad, pad), (stride, stride),
                       (dilation, dilation))
    x, w = rand((N, C, H, W), 31).astype(dtype), rand((C, 1, k, k), 32).astype(dtype)
    b = rand((C,), 33).astype(dtype) if bias else None
    want, got = np.full((N, C, Ho, Wo), np.nan, dtype), np.full((N, C, Ho, Wo), np.nan, dtype)
    cols.forward(x, w, want, b)
    for _ in range(2):
        conv.forward(x, w, got, b)
        tol = 1e-12 if dtype == np.float64 else 1e-5
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


def test_direct_path_choice(conv_tuning):
    """1x1 stride-1 unpadded -> PointwiseConv; group = C = num_output -> DepthwiseConv; a 1x1
    with stride 2 or pad, a channel multiplier, or a grouped (not depthwise) one -> columns."""
    def conv_of(shape, **p):
        return make_layer(conv_spec(**p), [shape])[0].conv
    conv_tuning(compiled=False)       # the compiled kernels' choice: tests/test_conv_compiled.py
    assert isinstance(conv_of((1, 4, 5, 5), num_output=3, kernel_size=1), PointwiseConv)
    assert isinstance(conv_of((1, 4, 5, 5), num_output=4, kernel_size=3, group=4), DepthwiseConv)
    # MobileNet's first depthwise layer: by planes at batch 1 and stride 1, else by columns
    dw = conv_of((1, 32, 112, 112), num_output=32, kernel_size=3, pad=1, group=32)
    assert dw.planes is not None and dw.columns is None
    dw = conv_of((2, 32, 112, 112), num_output=32, kernel_size=3, pad=1, group=32)
    assert dw.planes is None and dw.columns is not None
    dw = conv_of((1, 64, 112, 112), num_output=64, kernel_size=3, pad=1, stride=2, group=64)
    assert dw.planes is None and dw.columns is not None
    dw = conv_of((1, 1024, 7, 7), num_output=1024, kernel_size=3, pad=1, group=1024)
    assert dw.planes is None and dw.columns is None
    dw = conv_of((1, 256, 28, 28), num_output=256, kernel_size=3, pad=1, group=256)
    assert dw.planes is None and dw.columns is not None
    assert isinstance(conv_of((1, 4, 5, 5), num_output=3, kernel_size=1, stride=2), ConvColumns)
    assert isinstance(conv_of((1, 4, 5, 5), num_output=3, kernel_size=1, pad=1), ConvColumns)
    assert isinstance(conv_of((1, 4, 5, 5), num_output=8, kernel_size=3, group=4), ConvColumns)
    assert isinstance(conv_of((1, 4, 5, 5), num_output=4, kernel_size=3, group=2), ConvColumns)
    conv_tuning(pointwise_gemm=False, depthwise_taps=False)
    assert isinstance(conv_of((1, 4, 5, 5), num_output=3, kernel_size=1), ConvColumns)
    assert isinstance(conv_of((1, 4, 5, 5), num_output=4, kernel_size=3, group=4), ConvColumns)
