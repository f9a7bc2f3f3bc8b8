"""Winograd F(2x2, 3x3) forwards (netspec/layers/conv_winograd.py) against the column path and
Caffe's literal convolution loop (``conv_pool_cases.conv_reference``), float64 to 1e-10 and
float32 to 1e-4 relative: odd output sizes, unequal pads, batches split into chunks, bias or
none, the batch split over two threads, BatchNorm folded on top; which convolutions take it.
(No real-Caffe golden of a 3x3 stride-1 one-group convolution is stored; the ResNet/VGG
layers it serves are checked against PyTorch and OpenCV by ``tests/test_opencv_parity.py``.)"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import WINOGRAD_ALWAYS
from conv_pool_cases import conv_reference, conv_spec
from gradcheck import forward_backward, make_layer, rand
from netspec.backend import Backend
from netspec.layers.conv_columns import ConvColumns, ConvTuning
from netspec.layers.conv_winograd import WinogradConv

TOL = {np.float64: 1e-10, np.float32: 1e-4}

#: (N, C, H, W, M, (pad_h, pad_w)): even and odd outputs, pad 0-2, output 1x1, tall/wide
GEOMETRIES = [(1, 3, 7, 5, 4, (1, 1)), (3, 5, 6, 9, 2, (0, 0)), (2, 4, 5, 5, 3, (2, 2)),
              (2, 6, 8, 8, 8, (1, 1)), (1, 2, 3, 3, 3, (0, 0)), (2, 3, 4, 11, 5, (2, 0)),
              (4, 7, 9, 6, 6, (0, 1))]


def _close(got, want, dtype):
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL[dtype] * scale)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chunk_bytes", [1, 1 << 40])
def test_forward_equals_columns_and_caffe_loop(geometry, dtype, bias, chunk_bytes,
                                               conv_tuning):
    N, C, H, W, M, pad = geometry
    conv_tuning(col_chunk_bytes=chunk_bytes, winograd_min_chunk_tiles=0)
    Ho, Wo = H + 2 * pad[0] - 2, W + 2 * pad[1] - 2
    backend = Backend(np, dtype)
    x, w = rand((N, C, H, W), 1).astype(dtype), rand((M, C, 3, 3), 2).astype(dtype)
    b = rand((M,), 3).astype(dtype) if bias else None
    want = np.full((N, M, Ho, Wo), np.nan, dtype)
    ConvColumns(backend, N, C, H, W, M, Ho, Wo, 1, (3, 3), pad, (1, 1), (1, 1)).forward(
        x, w, want, b)
    wino = WinogradConv(backend, N, C, H, W, M, Ho, Wo, pad)
    assert wino.chunk == (1 if chunk_bytes == 1 else N)
    for _ in range(2):                      # buffers reused: the second forward is the same
        got = np.full_like(want, np.nan)
        wino.forward(x, w, got, b)
        assert got.dtype == dtype
        _close(got, want, dtype)
    loop = conv_reference(x.astype(np.float64), w.astype(np.float64),
                          np.zeros(M) if b is None else b.astype(np.float64),
                          (1, 1), pad, (1, 1), 1)
    _close(got, loop, dtype)


def test_chunks_hold_enough_tiles(conv_tuning):
    """At least ``winograd_min_chunk_tiles`` tiles per chunk (at most the batch), whatever
    ``col_chunk_bytes`` says."""
    conv_tuning(col_chunk_bytes=1, winograd_min_chunk_tiles=20)
    backend = Backend(np, np.float32)
    assert WinogradConv(backend, 16, 2, 7, 7, 2, 7, 7, (1, 1)).chunk == 2      # 16 tiles each
    assert WinogradConv(backend, 16, 2, 12, 12, 2, 12, 12, (1, 1)).chunk == 1  # 36
    assert WinogradConv(backend, 1, 2, 3, 3, 2, 3, 3, (1, 1)).chunk == 1


def test_partial_last_chunk_and_smaller_batch(conv_tuning):
    """A chunk of 2 over 3 samples (2 + 1, ``sample_chunks``), then a batch of 1 through the
    same buffers: the flat per-chunk views stay contiguous."""
    N, C, H, W, M, pad = 3, 4, 6, 7, 5, (1, 1)
    backend = Backend(np, np.float64)
    wino = WinogradConv(backend, N, C, H, W, M, H, W, pad)
    wino.chunk = 2
    x, w, b = rand((N, C, H, W), 4), rand((M, C, 3, 3), 5), rand((M,), 6)
    want = conv_reference(x, w, b, (1, 1), pad, (1, 1), 1)
    got = np.empty_like(want)
    wino.forward(x, w, got, b)
    _close(got, want, np.float64)
    wino.forward(x[1:2], w, got[:1], b)
    _close(got[:1], want[1:2], np.float64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("threads", [1, 2])
def test_layer_forward_and_gradients_equal_column_path(dtype, threads, conv_tuning,
                                                       monkeypatch):
    """Through the Convolution layer: top equal within tolerance, and the gradients (by
    columns in both) equal; one thread and the batch split over two."""
    from netspec import parallel
    monkeypatch.setattr(parallel, "SPLIT_MIN_MACS", 0)
    shape, p = (3, 4, 7, 6), dict(num_output=5, kernel_size=3, pad=1)
    backend = Backend(np, dtype, threads)
    results = []
    for on in (True, False):
        conv_tuning(**WINOGRAD_ALWAYS) if on else conv_tuning(winograd=False)
        layer, tops = make_layer(conv_spec(**p), [shape], backend=backend, seed=21)
        conv = layer.conv.parts[0] if threads > 1 else layer.conv
        assert isinstance(conv, WinogradConv) == on
        results.append(forward_backward(layer, [rand(shape, 22)], tops, [rand(tops[0], 23)]))
    for a, b in zip((*results[0][0], *results[0][1], *results[0][2]),
                    (*results[1][0], *results[1][1], *results[1][2])):
        assert a.dtype == dtype
        _close(a, b, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_folded_batch_norm_on_winograd(dtype, conv_tuning):
    """A deploy-style Conv(3x3) -> BatchNorm -> Scale run folded over a Winograd forward equals
    the unfolded column path."""
    from netspec.net import Net
    from netspec.spec import parse_net
    gauss = {"type": "gaussian", "std": 0.5}
    spec = {"name": "w", "layer": [
        {"name": "data", "type": "Input", "top": "data",
         "input_param": {"shape": {"dim": [2, 3, 9, 7]}}},
        {"name": "c", "type": "Convolution", "bottom": "data", "top": "c",
         "convolution_param": {"num_output": 4, "kernel_size": 3, "pad": 1,
                               "weight_filler": gauss, "bias_filler": gauss}},
        {"name": "bn", "type": "BatchNorm", "bottom": "c", "top": "c"},
        {"name": "sc", "type": "Scale", "bottom": "c", "top": "c",
         "scale_param": {"bias_term": True, "filler": gauss, "bias_filler": gauss}}]}
    x = rand((2, 3, 9, 7), 7)
    outs = []
    for on in (True, False):
        conv_tuning(fold_batch_norm=on, **WINOGRAD_ALWAYS) if on else conv_tuning(
            fold_batch_norm=False, winograd=False)
        net = Net(parse_net(spec, "w"), "TEST", Backend(np, dtype), np.random.default_rng(3))
        assert isinstance(net.layers[1].conv, WinogradConv) == on
        rng = np.random.default_rng(8)
        for key, p in net.named_params().items():
            p.data[...] = rng.uniform(0.5, 2.0, p.shape)
        net.blobs["data"].data[...] = x
        net.forward()
        outs.append(net.blobs["c"].data.copy())
    _close(outs[0], outs[1], dtype)


def test_path_choice():
    """The default thresholds: ResNet's 3x3 stride-1 layers from 28x28 at batch 1 (14x14 from
    batch 4, 7x7 from batch 16), C and M ≥ 64; never strided, dilated, grouped, 5x5, few
    channels, or in a Deconvolution."""
    t = ConvTuning()
    assert t.winograd and t.winograd_min_channels == 64

    def conv_of(shape, type_="Convolution", **p):
        spec = dict(conv_spec(**p), type=type_)
        return make_layer(spec, [shape], backend=Backend(np, np.float32))[0].conv
    assert isinstance(conv_of((1, 64, 56, 56), num_output=64, kernel_size=3, pad=1), WinogradConv)
    assert isinstance(conv_of((1, 128, 28, 28), num_output=128, kernel_size=3, pad=1),
                      WinogradConv)
    assert isinstance(conv_of((1, 256, 14, 14), num_output=256, kernel_size=3, pad=1),
                      ConvColumns)
    assert isinstance(conv_of((4, 256, 14, 14), num_output=256, kernel_size=3, pad=1),
                      WinogradConv)
    assert isinstance(conv_of((8, 512, 7, 7), num_output=512, kernel_size=3, pad=1),
                      ConvColumns)
    assert isinstance(conv_of((16, 512, 7, 7), num_output=512, kernel_size=3, pad=1),
                      WinogradConv)
    assert isinstance(conv_of((16, 512, 6, 6), num_output=512, kernel_size=3, pad=1),
                      ConvColumns)
    for p in (dict(stride=2), dict(dilation=2), dict(group=2), dict(kernel_size=5, pad=2)):
        q = {**dict(num_output=64, kernel_size=3, pad=1), **p}
        assert isinstance(conv_of((1, 64, 32, 32), **q), ConvColumns), p
    assert isinstance(conv_of((1, 32, 56, 56), num_output=64, kernel_size=3, pad=1), ConvColumns)
    assert not isinstance(conv_of((1, 64, 30, 30), "Deconvolution", num_output=64,
                                  kernel_size=3, pad=1), WinogradConv)
