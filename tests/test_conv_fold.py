"""BatchNorm + Scale (+ ReLU) folded into the Convolution before them
(netspec/layers/conv_fold.py): the folded net's outputs equal the unfolded reference path's
(float32 and float64), also after the weights and statistics change in place; the compiled
one-pass epilogue gives NumPy's passes' floats exactly; nothing is folded where the layers must
run."""

from __future__ import annotations

import numpy as np
import pytest

from netspec.backend import Backend
from netspec.net import Net
from netspec.spec import parse_net

GAUSS = {"type": "gaussian", "std": 0.5}


def _conv(name, bottom, M, k=3, **extra):
    return {"name": name, "type": "Convolution", "bottom": bottom, "top": name,
            "convolution_param": {"num_output": M, "kernel_size": k, "pad": k // 2,
                                  "weight_filler": GAUSS, "bias_filler": GAUSS, **extra}}


def _bn(name, blob, **extra):
    return {"name": name, "type": "BatchNorm", "bottom": blob, "top": blob, **extra}


def _scale(name, blob, bias=True):
    return {"name": name, "type": "Scale", "bottom": blob, "top": blob,
            "scale_param": {"bias_term": bias, "filler": GAUSS, "bias_filler": GAUSS}}


def _net(extra_layers=(), force_backward=False):
    """Conv+BN+Scale(bias)+ReLU, depthwise Conv (no bias)+BN (no Scale), 1x1 Conv+BN+Scale
    (no bias), then ``extra_layers``."""
    layers = [
        {"name": "data", "type": "Input", "top": "data",
         "input_param": {"shape": {"dim": [2, 3, 7, 6]}}},
        _conv("c1", "data", 4), _bn("bn1", "c1"), _scale("sc1", "c1"),
        {"name": "r1", "type": "ReLU", "bottom": "c1", "top": "c1"},
        _conv("dw", "c1", 4, group=4, bias_term=False), _bn("bn2", "dw"),
        _conv("pw", "dw", 5, k=1), _bn("bn3", "pw"), _scale("sc3", "pw", bias=False),
        *extra_layers]
    return {"name": "fold", "force_backward": force_backward, "layer": layers}


def _build(spec, dtype, fold, conv_tuning, phase="TEST", threads=1):
    conv_tuning(fold_batch_norm=fold)
    return Net(parse_net(spec, "fold"), phase, Backend(np, dtype, threads),
               np.random.default_rng(3))


def _randomize(net, rng):
    """Random weights and statistics (bn2's scale factor 0: Caffe's zero statistics)."""
    for key, p in net.named_params().items():
        layer, i = key.split("/")
        v = rng.standard_normal(p.shape)
        if layer.startswith("bn") and i == "1":
            v = rng.uniform(0.2, 2.0, p.shape)
        if layer.startswith("bn") and i == "2":
            v = np.full(p.shape, 0.0 if layer == "bn2" else rng.uniform(0.5, 3.0))
        p.data[...] = v


def _outputs(net, x):
    net.blobs["data"].data[...] = x
    net.forward()
    return {k: net.blobs[k].data.copy() for k in ("c1", "dw", "pw")}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_folded_equals_reference_path(dtype, tol, threads, conv_tuning, monkeypatch):
    """Also with the batch split over two threads (``SplitColumns`` under the fold)."""
    from netspec import parallel
    monkeypatch.setattr(parallel, "SPLIT_MIN_MACS", 0)
    spec = _net()
    folded = _build(spec, dtype, True, conv_tuning, threads=threads)
    plain = _build(spec, dtype, False, conv_tuning, threads=threads)
    assert folded.folded == ["c1", "dw", "pw"] and plain.folded == []
    assert hasattr(folded.layers[1].conv, "parts") == (threads > 1)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 7, 6))
    for round_ in range(2):          # the second round: weights and statistics changed in place
        _randomize(plain, rng)
        for k, p in plain.named_params().items():
            folded.named_params()[k].data[...] = p.data
        got, want = _outputs(folded, x), _outputs(plain, x)
        for k in want:
            assert got[k].dtype == dtype
            np.testing.assert_allclose(got[k], want[k], rtol=tol,
                                       atol=tol * max(1.0, np.abs(want[k]).max()))


def test_fold_follows_shared_weights_of_a_training_net(conv_tuning):
    """A TEST net sharing its parameters with a TRAIN net (the solver's test net) sees every
    change the training makes: s and t are recomputed at each forward."""
    spec = _net()
    train = _build(spec, np.float64, True, conv_tuning, phase="TRAIN")
    test = _build(spec, np.float64, True, conv_tuning)
    test.share_with(train)
    plain = _build(spec, np.float64, False, conv_tuning)
    assert train.folded == [] and test.folded == ["c1", "dw", "pw"]
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 7, 6))
    for _ in range(2):
        _randomize(train, rng)
        for k, p in train.named_params().items():
            plain.named_params()[k].data[...] = p.data
        got, want = _outputs(test, x), _outputs(plain, x)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ["train_phase", "force_backward", "not_in_place", "batch_stats",
                                  "scale_of_two_bottoms"])
def test_nothing_folded_where_the_layers_must_run(case, conv_tuning):
    spec = _net(force_backward=case == "force_backward")
    phase = "TRAIN" if case == "train_phase" else "TEST"
    if case == "not_in_place":
        spec["layer"][2] = {**_bn("bn1", "c1"), "top": "c1n"}
        spec["layer"][3] = _scale("sc1", "c1n")
        spec["layer"][4] = {"name": "r1", "type": "ReLU", "bottom": "c1n", "top": "c1r"}
        spec["layer"][5]["bottom"] = "c1r"
    if case == "batch_stats":
        for i in (2, 6, 8):
            spec["layer"][i]["batch_norm_param"] = {"use_global_stats": False}
    net = _build(spec, np.float64, True, conv_tuning, phase)
    if case == "scale_of_two_bottoms":   # a Scale by a blob is not a per-channel parameter
        spec["layer"][3] = {"name": "sc1", "type": "Scale", "bottom": ["c1", "s"], "top": "c1",
                            "scale_param": {"axis": 0}}
        spec["layer"].insert(1, {"name": "s", "type": "Input", "top": "s",
                                 "input_param": {"shape": {"dim": [2, 4]}}})
        net = _build(spec, np.float64, True, conv_tuning, phase)
        assert net.folded == ["c1", "dw", "pw"]     # the BatchNorm alone is folded
        assert net.layers[4].folded_into is None and net.layers[3].folded_into == "c1"
        return
    want = {"train_phase": [], "force_backward": [], "not_in_place": ["dw", "pw"],
            "batch_stats": []}[case]
    assert net.folded == want


def test_netspec_time_names_the_folded_layers(conv_tuning):
    """``netspec time``'s table shows where a folded layer's work went."""
    from rich.console import Console

    from netspec.tools.timing import print_timing, time_net

    net = _build(_net(), np.float32, True, conv_tuning)
    console = Console(record=True, width=200)
    print_timing(net, time_net(net, 1, warmup=0), "fold", console)
    text = console.export_text()
    assert "BatchNorm (in c1)" in text and "Scale (in c1)" in text and "BatchNorm (in dw)" in text
    assert "ReLU (in c1)" in text and "Convolution (in" not in text


@pytest.mark.parametrize("fold_relu", [True, False])
def test_relu_folded_only_in_place_after_the_fold(fold_relu, conv_tuning):
    conv_tuning(fold_relu=fold_relu)
    net = _build(_net(), np.float64, True, conv_tuning)
    r1 = next(layer for layer in net.layers if layer.name == "r1")
    assert net.layers[1].folded_relu == fold_relu and (r1.folded_into == "c1") == fold_relu
    assert not net.layers[5].folded_relu              # dw: BatchNorm, then a Convolution
    spec = _net()
    spec["layer"][4]["relu_param"] = {"negative_slope": 0.1}    # leaky: not folded
    net = _build(spec, np.float64, True, conv_tuning)
    assert not net.layers[1].folded_relu and net.layers[4].folded_into is None


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_epilogue_gives_numpys_floats(dtype, threads, conv_tuning):
    """The folded c1 and pw (column and GEMM machinery, the same in both nets) with scale,
    shift and ReLU in one compiled pass are bit for bit the NumPy passes' values; the depthwise
    dw, computed by a different kernel, to rounding."""
    pytest.importorskip("numba", reason="the compiled kernels need numba (the fast extra)")
    spec = _net()
    conv_tuning(compiled=True)
    fast = _build(spec, dtype, True, conv_tuning, threads=threads)
    conv_tuning(compiled=False)
    ref = _build(spec, dtype, True, conv_tuning, threads=threads)
    assert fast.layers[1]._compiled and not ref.layers[1]._compiled
    rng = np.random.default_rng(11)
    _randomize(ref, rng)
    for k, p in ref.named_params().items():
        fast.named_params()[k].data[...] = p.data
    x = rng.standard_normal((2, 3, 7, 6))
    got, want = _outputs(fast, x), _outputs(ref, x)
    assert (want["c1"] == 0).any() and (want["c1"] > 0).any()      # the ReLU did something
    np.testing.assert_array_equal(got["c1"], want["c1"])
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for k in ("dw", "pw"):
        np.testing.assert_allclose(got[k], want[k], rtol=tol, atol=tol * np.abs(want[k]).max())


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_folded_into_a_convolution_without_batch_norm(dtype, compiled, conv_tuning):
    """Convolution (bias) → ReLU in place, as GoogLeNet and SqueezeNet write it: the ReLU and
    the bias are the convolution's epilogue; the same values as the layers unfolded."""
    if compiled:
        pytest.importorskip("numba", reason="the compiled kernels need numba (the fast extra)")
    spec = {"name": "fold", "layer": [
        {"name": "data", "type": "Input", "top": "data",
         "input_param": {"shape": {"dim": [2, 3, 7, 6]}}},
        _conv("c1", "data", 4), {"name": "r1", "type": "ReLU", "bottom": "c1", "top": "c1"},
        _conv("pw", "c1", 5, k=1), {"name": "r2", "type": "ReLU", "bottom": "pw", "top": "pw"},
        _conv("dw", "pw", 5, group=5), {"name": "r3", "type": "ReLU", "bottom": "dw",
                                        "top": "dw"}]}
    conv_tuning(compiled=compiled, fold_relu=True)
    fused = _build(spec, dtype, True, conv_tuning)
    conv_tuning(fold_relu=False)
    plain = _build(spec, dtype, True, conv_tuning)
    assert fused.folded == ["c1", "pw", "dw"] and plain.folded == []
    assert fused.layers[1].folded == [] and fused.layers[1].folded_relu
    rng = np.random.default_rng(12)
    _randomize(plain, rng)
    for k, p in plain.named_params().items():
        fused.named_params()[k].data[...] = p.data
    x = rng.standard_normal((2, 3, 7, 6))
    got, want = _outputs(fused, x), _outputs(plain, x)
    assert (want["pw"] == 0).any() and (want["pw"] > 0).any()
    # the 1x1 GEMM and its bias add are the same operations either way (c1's few-channel
    # columns add the bias inside their GEMM, so it and dw after it differ by rounding)
    np.testing.assert_array_equal(got["pw"] == 0, want["pw"] == 0)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for k in ("c1", "pw", "dw"):
        np.testing.assert_allclose(got[k], want[k], rtol=tol, atol=tol * np.abs(want[k]).max())


def test_partial_forwards_run_the_folded_layers_themselves(conv_tuning):
    """forward(end=k) stopping after a folded convolution leaves its top before the in-place
    BatchNorm, Scale and ReLU, as Caffe does; a forward from the BatchNorm on completes it; the
    fold is back for the next whole pass."""
    spec = _net()
    folded = _build(spec, np.float64, True, conv_tuning)
    conv_tuning(fold_relu=False)
    plain = _build(spec, np.float64, False, conv_tuning)
    rng = np.random.default_rng(13)
    _randomize(plain, rng)
    for k, p in plain.named_params().items():
        folded.named_params()[k].data[...] = p.data
    x = rng.standard_normal((2, 3, 7, 6))
    for net in (folded, plain):
        net.blobs["data"].data[...] = x
    names = [layer.name for layer in plain.layers]
    c1 = names.index("c1") + 1
    folded.forward(end=c1)
    plain.forward(end=c1)
    np.testing.assert_allclose(folded.blobs["c1"].data, plain.blobs["c1"].data, rtol=1e-12)
    folded.forward(start=c1)
    plain.forward(start=c1)
    for k in ("c1", "dw", "pw"):
        np.testing.assert_allclose(folded.blobs[k].data, plain.blobs[k].data, rtol=1e-12,
                                   atol=1e-12)
    assert folded.layers[1].folded and folded.layers[1].folded_relu
    assert folded.layers[4].folded_into == "c1"
