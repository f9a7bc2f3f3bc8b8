"""The compiled depthwise kernels (netspec/layers/conv_compiled.py, numba: the fast extra)
against the NumPy reference paths: forward against Caffe's loop, forward and backward against
the column path (float32 and float64; stride, pad, dilation, kernel shapes, channel
multipliers), a float64 gradient check through the layer, the fused epilogue bit for bit
against NumPy's passes, the channel split over threads, the choice of path (and NumPy's when
numba is absent), and MobileNet whole against the NumPy path. Small shapes: the kernels compile
once per dtype and machine (cached on disk)."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

from conv_pool_cases import conv_reference, conv_spec
from gradcheck import check_gradients, make_layer, rand
from netspec import parallel
from netspec.backend import Backend
from netspec.layers import conv_direct
from netspec.layers.conv_columns import ConvColumns
from netspec.layers.conv_direct import CompiledDepthwiseConv, DepthwiseConv

pytest.importorskip("numba", reason="the compiled kernels need numba (pip install 'netspec[fast]')")

ROOT = Path(__file__).resolve().parents[1]

#: (N, C, H, W, mult, (kh, kw), pad, stride, dilation)
CASES = [
    (1, 3, 9, 8, 1, (3, 3), (1, 1), (1, 1), (1, 1)),      # MobileNet's stride 1
    (2, 4, 10, 9, 1, (3, 3), (1, 1), (2, 2), (1, 1)),     # MobileNet's stride 2, odd width
    (1, 2, 9, 11, 1, (3, 3), (2, 2), (1, 1), (2, 2)),     # dilated
    (2, 3, 8, 8, 2, (3, 3), (0, 0), (1, 1), (1, 1)),      # channel multiplier, no pad
    (1, 2, 12, 10, 3, (5, 5), (2, 1), (3, 2), (1, 1)),    # other kernel, strides and pads
    (2, 3, 7, 9, 1, (2, 3), (1, 0), (1, 2), (2, 1)),      # kh != kw, mixed dilation
    (1, 2, 9, 7, 2, (3, 3), (1, 1), (2, 1), (1, 2)),      # stride and dilation per axis
]


def _geometry(case):
    N, C, H, W, mult, (kh, kw), (ph, pw), (sh, sw), (dh, dw) = case
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return N, C, H, W, mult * C, Ho, Wo


def _compiled(case, dtype, threads=1):
    """The compiled kernels, the backward included (the layer's backward of one output per
    channel is NumPy's taps)."""
    N, C, H, W, M, Ho, Wo = _geometry(case)
    return CompiledDepthwiseConv(Backend(np, dtype), conv_direct.compiled_kernels(), N, C, H, W,
                                 M, Ho, Wo, *case[5:], threads=threads, numpy_backward=False)


def _columns(case, dtype):
    N, C, H, W, M, Ho, Wo = _geometry(case)
    return ConvColumns(Backend(np, dtype), N, C, H, W, M, Ho, Wo, C, *case[5:])


def _arrays(case, dtype, seed=40):
    N, C, H, W, M, Ho, Wo = _geometry(case)
    kh, kw = case[5]
    return (rand((N, C, H, W), seed).astype(dtype), rand((M, 1, kh, kw), seed + 1).astype(dtype),
            rand((M,), seed + 2).astype(dtype), rand((N, M, Ho, Wo), seed + 3).astype(dtype))


def _tol(dtype):
    return 1e-12 if dtype == np.float64 else 2e-5


def _close(got, want, dtype):
    tol = _tol(dtype)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_forward_equals_caffes_loop_and_the_column_path(case, dtype):
    x, w, b, _ = _arrays(case, dtype)
    conv = _compiled(case, dtype)
    N, C, H, W, M, Ho, Wo = _geometry(case)
    for bias in (None, b):
        got = np.full((N, M, Ho, Wo), np.nan, dtype)
        conv.forward(x, w, got, bias)
        want = conv_reference(x.astype(np.float64), w.astype(np.float64),
                              None if bias is None else bias.astype(np.float64),
                              case[7], case[6], case[8], C)
        _close(got, want, dtype)
        cols = np.full_like(got, np.nan)
        _columns(case, dtype).forward(x, w, cols, bias)
        _close(got, cols, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_backward_equals_the_column_path(case, dtype):
    x, w, _, dy = _arrays(case, dtype)
    conv, cols = _compiled(case, dtype), _columns(case, dtype)
    dx, dx_ref = np.full_like(x, np.nan), np.full_like(x, np.nan)
    dw = conv.backward(x, dy, w, dx)
    dw_ref = cols.backward(x, dy, w, dx_ref)
    _close(dx, dx_ref, dtype)
    _close(dw, dw_ref, dtype)
    # the two halves alone (Deconvolution's roles)
    dx2 = np.full_like(x, np.nan)
    conv.backward_data(dy, w, dx2)
    np.testing.assert_array_equal(dx2, dx)
    np.testing.assert_array_equal(conv.weight_grad(x, dy), dw)


@pytest.mark.parametrize("case", [CASES[1], CASES[3]])
def test_layer_gradients_float64(case, conv_tuning):
    """Finite differences through the Convolution layer on the compiled path (bias included)."""
    N, C, H, W, M, Ho, Wo = _geometry(case)
    (kh, kw), (ph, pw), (sh, sw), (dh, dw) = case[5:]
    conv_tuning(compiled=True)
    layer, shapes = make_layer(conv_spec(num_output=M, kernel_h=kh, kernel_w=kw, pad_h=ph,
                                         pad_w=pw, stride_h=sh, stride_w=sw,
                                         dilation=[dh, dw] if dh != dw else dh, group=C),
                               [(N, C, H, W)], seed=5)
    assert isinstance(layer.conv, CompiledDepthwiseConv)
    assert (layer.conv._taps_args is None) == (M > C)     # multipliers: the compiled backward
    check_gradients(layer, [rand((N, C, H, W), 6)], shapes)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_epilogue_is_numpys_passes_bit_for_bit(dtype):
    """forward_fused(scale, shift, relu) = forward, then NumPy's multiply, add and maximum."""
    case = CASES[1]
    x, w, b, _ = _arrays(case, dtype)
    s = rand(b.shape, 9).astype(dtype)
    conv = _compiled(case, dtype)
    N, C, H, W, M, Ho, Wo = _geometry(case)
    want = np.empty((N, M, Ho, Wo), dtype)
    conv.forward(x, w, want)
    for scale, shift, relu in [(s, b, True), (s, b, False), (None, b, True), (s, None, False)]:
        ref = want.copy()
        if scale is not None:
            np.multiply(ref, scale.reshape(1, -1, 1, 1), out=ref)
        if shift is not None:
            np.add(ref, shift.reshape(1, -1, 1, 1), out=ref)
        if relu:
            np.maximum(ref, 0, out=ref)
        got = np.full_like(ref, np.nan)
        conv.forward_fused(x, w, got, scale, shift, relu)
        np.testing.assert_array_equal(got, ref)
        assert not relu or (got == 0).any()


@pytest.mark.parametrize("case", [CASES[0], CASES[3]])
def test_channels_split_over_threads_equal_one_thread(case, monkeypatch):
    """A batch smaller than the threads: forward by output-channel ranges, backward by
    input-channel ranges, on two threads at once; the same floats as one thread."""
    monkeypatch.setattr(parallel, "SPLIT_MIN_ELEMENTS", 0)
    case = (1, *case[1:])
    x, w, b, dy = _arrays(case, np.float32)
    one, two = _compiled(case, np.float32), _compiled(case, np.float32, threads=2)
    assert len(two.out_parts) == 2 and len(two.in_parts) == 2 and len(one.out_parts) == 1
    outs = []
    for conv in (one, two):
        y, dx = np.empty((1, *dy.shape[1:]), np.float32), np.empty_like(x)
        conv.forward(x, w, y, b)
        outs.append((y, dx, conv.backward(x, dy, w, dx)))
    for a, c in zip(*outs):
        np.testing.assert_array_equal(a, c)


def test_path_choice(conv_tuning, monkeypatch):
    """Depthwise (group = C, num_output a multiple of C) -> compiled while numba imports and
    ``ConvTuning.compiled``; else NumPy's taps (num_output = C) or columns (a multiplier)."""
    def conv_of(M, **p):
        return make_layer(conv_spec(num_output=M, kernel_size=3, pad=1, group=4, **p),
                          [(1, 4, 9, 9)])[0].conv
    assert isinstance(conv_of(4), CompiledDepthwiseConv)
    assert isinstance(conv_of(8, stride=2), CompiledDepthwiseConv)
    assert isinstance(conv_of(12, dilation=2), CompiledDepthwiseConv)
    conv_tuning(compiled=False)
    assert isinstance(conv_of(4), DepthwiseConv)
    assert isinstance(conv_of(8), ConvColumns)
    conv_tuning(compiled=True)
    monkeypatch.setattr(conv_direct, "_kernels", [None])       # numba absent
    assert isinstance(conv_of(4), DepthwiseConv)
    assert isinstance(conv_of(8), ConvColumns)


def test_mobilenet_equals_the_numpy_path(conv_tuning):
    """MobileNet v1 (models/mobilenet_v1.yaml) at batch 1, float32, same weights and image:
    compiled depthwise layers and folded epilogues against the NumPy paths."""
    monkey = pytest.MonkeyPatch()
    monkey.syspath_prepend(str(ROOT))      # bench/ is a package at the checkout's root
    try:
        zoo = importlib.import_module("bench.zoo")
        nets = importlib.import_module("bench.nets")
    finally:
        monkey.undo()
    spec = zoo.zoo_spec("mobilenet", 1)
    x = zoo.zoo_inputs(spec)
    outs = []
    for compiled in (True, False):
        conv_tuning(compiled=compiled)
        net, weights = zoo.inference_net(spec, 1, None if not outs else outs[0][1])
        kinds = {type(layer.conv).__name__ for layer in net.layers if layer.name.endswith("_dw")}
        assert kinds == ({"CompiledDepthwiseConv"} if compiled else {"DepthwiseConv"})
        assert sum(layer.folded_relu for layer in net.layers if hasattr(layer, "folded_relu")) == 27
        nets.set_inputs(net, x)
        net.forward()
        outs.append(({k: net.blobs[k].data.copy() for k in ("fc7", "prob")}, weights))
    for k, want in outs[1][0].items():
        got = outs[0][0][k]
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


def test_nets_without_depthwise_or_fold_do_not_import_numba():
    """numba's import takes a second or more: a net that uses no compiled kernel (nothing
    depthwise, nothing folded: the ReLU is not in place) never pays it."""
    import subprocess
    import sys
    code = ("import sys, numpy as np\n"
            "from netspec.net import Net\n"
            "from netspec.spec import parse_net\n"
            "spec = {'name': 'n', 'layer': [\n"
            " {'name': 'd', 'type': 'Input', 'top': 'd', 'input_param': {'shape': {'dim': [1, 3, 8, 8]}}},\n"
            " {'name': 'c', 'type': 'Convolution', 'bottom': 'd', 'top': 'c',\n"
            "  'convolution_param': {'num_output': 4, 'kernel_size': 3}},\n"
            " {'name': 'r', 'type': 'ReLU', 'bottom': 'c', 'top': 'r'}]}\n"
            "net = Net(parse_net(spec, 'n'), 'TEST')\n"
            "net.forward()\n"
            "assert 'numba' not in sys.modules, 'numba imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
