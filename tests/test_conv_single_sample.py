"""One sample on two threads with ``ConvTuning.single_sample_blas_threads`` off (the setting
for a shared machine):
BLAS runs one thread per call and each convolution path splits its own work over the engine's
threads -- 1×1 GEMMs (``PointwiseConv``), Winograd's 16 products, the columns' GEMMs (kernel
rows and NHWC rows), the compiled depthwise kernels' channels and the folded epilogue's rows.
The net's outputs equal the one-thread net's (float32 and float64), and the splits happen."""

from __future__ import annotations

import numpy as np
import pytest

from netspec import parallel
from netspec.backend import Backend
from netspec.layers.conv_columns import ConvColumns
from netspec.layers.conv_direct import PointwiseConv
from netspec.layers.conv_winograd import WinogradConv
from netspec.net import Net
from netspec.spec import parse_net

GAUSS = {"type": "gaussian", "std": 0.3}


def _conv(name, bottom, M, k, **extra):
    return {"name": name, "type": "Convolution", "bottom": bottom, "top": name,
            "convolution_param": {"num_output": M, "kernel_size": k, "weight_filler": GAUSS,
                                  "bias_filler": GAUSS, **extra}}


def _bn(name, blob):
    return {"name": name, "type": "BatchNorm", "bottom": blob, "top": blob}


SPEC = {"name": "single", "layer": [
    {"name": "data", "type": "Input", "top": "data",
     "input_param": {"shape": {"dim": [1, 3, 16, 16]}}},
    _conv("first", "data", 8, 3, pad=1, stride=2),                 # columns, few channels
    _conv("wide", "first", 64, 3, pad=1),                          # kernel rows
    _conv("wino", "wide", 64, 3, pad=1), _bn("bn_wino", "wino"),  # Winograd, folded
    {"name": "relu", "type": "ReLU", "bottom": "wino", "top": "wino"},
    _conv("down", "wino", 32, 3, pad=1, stride=2),                 # NHWC rows
    _conv("dw", "down", 32, 3, pad=1, group=32, bias_term=False),  # depthwise
    _bn("bn_dw", "dw"),
    _conv("pw", "dw", 48, 1)]}                                      # 1x1 GEMM


def _net(threads, dtype):
    return Net(parse_net(SPEC, "single"), "TEST", Backend(np, dtype, threads),
               np.random.default_rng(3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_sample_split_over_threads_equals_one_thread(dtype, conv_tuning, monkeypatch):
    monkeypatch.setattr(parallel, "SPLIT_MIN_MACS", 0)
    monkeypatch.setattr(parallel, "SPLIT_MIN_ELEMENTS", 0)
    conv_tuning(single_sample_blas_threads=False, winograd_min_channels=64,
                winograd_min_positions=0, winograd_min_batch_positions=0,
                winograd_min_chunk_tiles=0)
    one, two = _net(1, dtype), _net(2, dtype)
    assert two.pass_blas_threads() == 1
    conv = {layer.name: layer.conv for layer in two.layers if layer.type_name == "Convolution"}
    assert isinstance(conv["wino"], WinogradConv) and conv["wino"].threads == 2
    assert isinstance(conv["pw"], PointwiseConv) and conv["pw"].threads == 2
    assert isinstance(conv["wide"], ConvColumns) and conv["wide"].fwd.krows
    assert conv["wide"].fwd.threads == conv["down"].fwd.threads == 2
    assert not conv["down"].fwd.krows and conv["down"].fwd.rows
    rng = np.random.default_rng(5)
    for k, p in one.named_params().items():
        p.data[...] = (rng.uniform(0.5, 2.0, p.shape) if k.startswith("bn") else
                       rng.standard_normal(p.shape))
        two.named_params()[k].data[...] = p.data
    calls = []
    real_run = parallel.run
    monkeypatch.setattr(parallel, "run",
                        lambda fn, items: calls.append(len(items)) or real_run(fn, items))
    x = rng.standard_normal((1, 3, 16, 16))
    outs = []
    for net in (one, two):
        net.blobs["data"].data[...] = x
        net.forward()
        outs.append({k: net.blobs[k].data.copy() for k in ("first", "wide", "wino", "down",
                                                            "dw", "pw")})
    assert calls.count(2) >= 6          # the two-thread pass split its products and kernels
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for k, want in outs[0].items():
        np.testing.assert_allclose(outs[1][k], want, rtol=tol, atol=tol * np.abs(want).max())
