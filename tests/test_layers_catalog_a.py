"""Layer catalog, part a: LRN, Deconvolution, Im2col, SPP, Crop, Slice, Reshape, Tile, Reduction,
ArgMax, Filter, BatchReindex, Embed, Parameter, Bias.

* Caffe parity: the golden cases in tests/golden/layers/ (recorded by BVLC Caffe, float32), each
  run as a whole net built from its own prototxt (Caffe's text format -> netspec's spec);
* float64 gradient checks for every layer with a backward;
* forward against literal loop implementations of the Caffe code written here, shape rules
  worked out by hand, PyTorch parity where installed (float64);
* parameter messages: Caffe's defaults, unknown keys refused; layer spec errors;
* float32 end to end, and the GPU against the CPU.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from gradcheck import check_gradients, forward_backward, make_layer, rand, run_forward

from netspec.backend import Backend, cupy_available, get_backend, to_numpy
from netspec.blob import Blob
from netspec.errors import NetspecError, SpecError
from netspec.spec.params import LAYER_PARAM_BLOCKS
from netspec.spec.params.inner_product import EmbedParameter
from netspec.spec.params.normalization import BiasParameter, LRNParameter
from netspec.spec.params.pool import SPPParameter
from netspec.spec.params.reduction import ArgMaxParameter, ReductionParameter
from netspec.spec.params.reshape import CropParameter, ReshapeParameter, TileParameter
from netspec.spec.params.structure import SliceParameter

F32 = Backend(np, np.float32)
GOLDEN = Path(__file__).parent / "golden" / "layers"
GAUSS = {"type": "gaussian", "std": 1.0}


def close(actual, expected):
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=1e-5,
                               atol=1e-6 * max(1.0, float(np.abs(expected).max(initial=0))))


# -- Caffe parity: each golden case as a net built from its prototxt --------------------------
def golden_net(case, backend=F32):
    """The golden case's prototxt as a netspec Net, and its arrays."""
    from netspec.caffe.prototxt import read
    from netspec.caffe.to_yaml import to_python
    from netspec.net import Net
    from netspec.spec import parse_net

    _, msg, _ = read(GOLDEN / f"{case}.prototxt")
    net = Net(parse_net(to_python(msg)), "TRAIN", backend)
    return net, dict(np.load(GOLDEN / f"{case}.npz"))


def run_golden(net, g):
    """Feed inputs and parameters, forward, compare tops; seed top diffs, backward, compare
    bottom and parameter diffs (as in the recording: parameter diffs zeroed first)."""
    def entries(kind):
        return [(k.split("/", 1)[1], v) for k, v in g.items() if k.split("/", 1)[0] == kind]

    def param(key):
        layer, i = key.rsplit("/", 1)
        return net.layer_by_name(layer).blobs[int(i)]

    for name, v in entries("input"):
        net.blobs[name].data[...] = v
    for key, v in entries("param"):
        param(key).data[...] = v
    net.forward()
    for name, v in entries("top"):
        assert net.blobs[name].shape == v.shape, name
        close(net.blobs[name].data, v)
    net.clear_param_diffs()
    for name, v in entries("topdiff"):
        net.blobs[name].diff = v.copy()
    net.backward()
    # bottoms the net back-propagates into (Caffe records zeros for the others)
    propagated = {b.name for blobs, prop in zip(net.bottoms, net.propagate)
                  for b, p in zip(blobs, prop) if p}
    compared = []
    for name, v in entries("bottomdiff"):
        if name in propagated:
            close(net.blobs[name].diff, v)
            compared.append(name)
    for key, v in entries("paramdiff"):
        close(param(key).diff, v)
        compared.append(key)
    return compared


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


def test_caffe_golden_embed_without_force_backward_runs_no_backward():
    """Caffe ran the embed case without force_backward and without a loss: its backward never
    ran, so the recorded parameter diffs are zero. netspec's backward plan agrees."""
    net, g = golden_net("embed")
    assert not any(net.layer_backward)
    assert not g["paramdiff/l/0"].any() and not g["paramdiff/l/1"].any()


def test_caffe_golden_im2col_prototxt():
    net, g = golden_net("im2col")
    run_golden(net, g)


def test_caffe_golden_im2col():
    """The im2col case with its layer spec as in the prototxt (plus the num_output that
    netspec's ConvolutionParameter requires and Im2col ignores)."""
    g = dict(np.load(GOLDEN / "im2col.npz"))
    spec = {"type": "Im2col", "convolution_param":
            {"num_output": 1, "kernel_size": 3, "stride": 2, "pad": 1}}
    layer, tops = make_layer(spec, [g["input/x"].shape], backend=F32)
    assert tops == [g["top/y"].shape]
    (y,), (dx,), _ = forward_backward(layer, [g["input/x"]], tops, [g["topdiff/y"]])
    np.testing.assert_array_equal(y, g["top/y"])
    close(dx, g["bottomdiff/x"])


def test_caffe_golden_argmax_exact():
    net, g = golden_net("argmax_top2_axis1")
    net.blobs["x"].data[...] = g["input/x"]
    net.forward()
    np.testing.assert_array_equal(net.blobs["y"].data, g["top/y"])


# -- literal references (Caffe's loops) ------------------------------------------------------
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


def deconv_reference(x, w, b, stride, pad, dilation, group):
    """Caffe's deconvolution: every input pixel scatters W-weighted copies into the output."""
    N, C, H, W = x.shape
    _, Mg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    M = Mg * group
    Ho = sh * (H - 1) + dh * (kh - 1) + 1 - 2 * ph
    Wo = sw * (W - 1) + dw * (kw - 1) + 1 - 2 * pw
    ypad = np.zeros((N, M, Ho + 2 * ph, Wo + 2 * pw))
    Cg = C // group
    for c in range(C):
        g = c // Cg
        for h in range(H):
            for ww in range(W):
                for i in range(kh):
                    for j in range(kw):
                        ypad[:, g * Mg:(g + 1) * Mg, h * sh + i * dh, ww * sw + j * dw] += \
                            x[:, c, h, ww][:, None] * w[c, :, i, j][None, :]
    y = ypad[:, :, ph:ph + Ho, pw:pw + Wo]
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1)
    return y


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


# -- LRN --------------------------------------------------------------------------------------
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


# -- Deconvolution ------------------------------------------------------------------------------
DECONV_CASES = {
    "k3s2": ((2, 3, 4, 5), dict(num_output=4, kernel_size=3, stride=2)),
    "k4s2p1": ((2, 2, 5, 4), dict(num_output=3, kernel_size=4, stride=2, pad=1)),
    "group_dilation": ((2, 4, 4, 4), dict(num_output=6, kernel_size=3, stride=2, pad=2,
                                          dilation=2, group=2)),
    "hw_fields": ((1, 2, 3, 4), dict(num_output=2, kernel_h=3, kernel_w=2, stride_h=2,
                                     stride_w=1, pad_h=1, pad_w=0)),
    "no_bias": ((2, 3, 3, 3), dict(num_output=2, kernel_size=2, stride=2, bias_term=False)),
}



def deconv_spec(**p):
    p.setdefault("weight_filler", GAUSS)
    p.setdefault("bias_filler", GAUSS)
    return {"type": "Deconvolution", "name": "deconv", "convolution_param": p}


def _hw(p, name, default):
    if f"{name}_h" in p:
        return p[f"{name}_h"], p[f"{name}_w"]
    v = p.get(name if name != "kernel" else "kernel_size", default)
    return (v, v)


@pytest.mark.parametrize("case", list(DECONV_CASES))
def test_deconv_forward_matches_reference(case, layout):
    shape, p = DECONV_CASES[case]
    layer, tops = make_layer(deconv_spec(**p), [shape], seed=3)
    x = rand(shape, 4)
    _, (y,) = run_forward(layer, [x], tops)
    b = layer.blobs[1].data if p.get("bias_term", True) else None
    want = deconv_reference(x, layer.blobs[0].data, b, _hw(p, "stride", 1), _hw(p, "pad", 0),
                            (p.get("dilation", 1),) * 2, p.get("group", 1))
    assert y.shape == want.shape
    np.testing.assert_allclose(y.data, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", list(DECONV_CASES))
def test_deconv_gradients(case, layout):
    shape, p = DECONV_CASES[case]
    layer, tops = make_layer(deconv_spec(**p), [shape], seed=5)
    check_gradients(layer, [rand(shape, 6)], tops)


def test_deconv_is_the_adjoint_of_convolution():
    """<conv_W(x), y> = <x, deconv_W(y)> for the same weights (no bias)."""
    p = dict(num_output=3, kernel_size=3, stride=2, pad=1, dilation=1, group=1, bias_term=False,
             weight_filler=GAUSS)
    conv, (cshape,) = make_layer({"type": "Convolution", "convolution_param":
                                  dict(p, num_output=2)}, [(2, 3, 7, 7)], seed=1)
    deconv, (dshape,) = make_layer(deconv_spec(**p), [cshape], seed=2)
    assert dshape == (2, 3, 7, 7)
    deconv.blobs[0].data[...] = conv.blobs[0].data          # (2, 3, 3, 3) in both layouts
    x, y = rand((2, 3, 7, 7), 1), rand(cshape, 2)
    _, (cx,) = run_forward(conv, [x], [cshape])
    _, (dy,) = run_forward(deconv, [y], [dshape])
    assert np.sum(cx.data * y) == pytest.approx(np.sum(x * dy.data), rel=1e-12)


def test_deconv_output_sizes():
    def top(shape, **p):
        return make_layer(deconv_spec(**p), [shape])[1]
    # FCN-style 2x upsampling: k 4, s 2, p 1: 2·(H−1) + 4 − 2 = 2H
    assert top((1, 3, 8, 5), num_output=3, kernel_size=4, stride=2, pad=1) == [(1, 3, 16, 10)]
    # 32x: k 64, s 32 (FCN-32s): 32·(H−1) + 64
    assert top((1, 2, 3, 3), num_output=2, kernel_size=64, stride=32) == [(1, 2, 128, 128)]
    assert top((2, 4, 3, 3), num_output=6, kernel_size=3, stride=2, pad=2, dilation=2,
               group=2) == [(2, 6, 5, 5)]
    assert top((1, 1, 4, 4), num_output=1, kernel_size=1) == [(1, 1, 4, 4)]


def test_deconv_bilinear_upsampling():
    """FCN's fixed upsampling: a bilinear-filled, group = C deconvolution doubles a constant
    image into a constant interior, and linear ramps stay linear."""
    C = 2
    spec = deconv_spec(num_output=C, kernel_size=4, stride=2, pad=1, group=C, bias_term=False,
                       weight_filler={"type": "bilinear"})
    layer, tops = make_layer(spec, [(1, C, 5, 5)])
    assert layer.blobs[0].shape == (C, 1, 4, 4)
    _, (y,) = run_forward(layer, [np.ones((1, C, 5, 5))], tops)
    np.testing.assert_allclose(y.data[:, :, 1:-1, 1:-1], 1.0, rtol=1e-12)
    ramp = np.broadcast_to(np.arange(5.0), (1, C, 5, 5))
    _, (y,) = run_forward(layer, [ramp], tops)
    row = y.data[0, 0, 3, 1:-1]
    np.testing.assert_allclose(np.diff(row), 0.5, rtol=1e-12)


def test_deconv_several_bottoms_share_weights():
    p = DECONV_CASES["k3s2"][1]
    shape = DECONV_CASES["k3s2"][0]
    spec = dict(deconv_spec(**p), bottom=["a", "b"], top=["ya", "yb"])
    layer, tops = make_layer(spec, [shape, shape], seed=7)
    assert len(tops) == 2
    check_gradients(layer, [rand(shape, 8), rand(shape, 9)], tops)


def test_torch_conv_transpose():
    torch = pytest.importorskip("torch")
    shape, p = DECONV_CASES["group_dilation"]
    layer, tops = make_layer(deconv_spec(**p), [shape], seed=11)
    x, dy = rand(shape, 12), rand(tops[0], 13)
    (y,), (dx,), (dw, db) = forward_backward(layer, [x], tops, [dy])
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(layer.blobs[0].data, requires_grad=True)
    tb = torch.tensor(layer.blobs[1].data, requires_grad=True)
    ty = torch.nn.functional.conv_transpose2d(tx, tw, tb, stride=2, padding=2, groups=2,
                                              dilation=2)
    ty.backward(torch.tensor(dy))
    for got, want in ((y, ty), (dx, tx.grad), (dw, tw.grad), (db, tb.grad)):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("p, shape, words", [
    (dict(num_output=3, kernel_size=3, group=2), (1, 4, 3, 3), "divisible"),
    (dict(num_output=2), (1, 1, 3, 3), "required"),
    (dict(num_output=2, kernel_size=2, pad=3), (1, 1, 2, 2), "not positive"),
])
def test_deconv_errors(p, shape, words):
    with pytest.raises(NetspecError, match=words):
        make_layer(deconv_spec(**p), [shape])


# -- Im2col -----------------------------------------------------------------------------------
IM2COL_CASES = [
    ((2, 3, 6, 6), dict(kernel_size=3, stride=2, pad=1)),
    ((1, 2, 5, 7), dict(kernel_h=2, kernel_w=3, stride_h=1, stride_w=2, pad_h=0, pad_w=1)),
    ((2, 2, 7, 7), dict(kernel_size=3, dilation=2, pad=1)),
]


def im2col_spec(**p):
    return {"type": "Im2col", "convolution_param": dict(num_output=1, **p)}


@pytest.mark.parametrize("shape, p", IM2COL_CASES)
def test_im2col_matches_torch_unfold_and_gradients(shape, p, layout):
    layer, tops = make_layer(im2col_spec(**p), [shape])
    check_gradients(layer, [rand(shape, 1)], tops)
    torch = pytest.importorskip("torch")
    x = rand(shape, 2)
    _, (y,) = run_forward(layer, [x], tops)
    k, s, pad = _hw(p, "kernel", None), _hw(p, "stride", 1), _hw(p, "pad", 0)
    d = p.get("dilation", 1)
    want = torch.nn.functional.unfold(torch.tensor(x), k, dilation=d, padding=pad, stride=s)
    np.testing.assert_array_equal(y.data.reshape(want.shape), want.numpy())


# -- SPP --------------------------------------------------------------------------------------
@pytest.mark.parametrize("pool", ["MAX", "AVE"])
@pytest.mark.parametrize("height, shape", [(1, (2, 3, 5, 4)), (2, (2, 2, 7, 9)),
                                           (3, (2, 2, 7, 9)), (3, (1, 2, 8, 8)),
                                           (4, (1, 1, 15, 16))])
def test_spp_gradients(pool, height, shape):
    layer, tops = make_layer({"type": "SPP", "spp_param": {"pyramid_height": height,
                                                           "pool": pool}}, [shape])
    check_gradients(layer, [rand(shape, 3)], tops)


def test_spp_shapes_and_levels_are_caffe_pooling():
    """7×9 input, 3 levels: kernels 7×9, 4×5 (pad 1×1), 2×3 (pad 1×2), each level's output is
    Caffe's Pooling with those settings (b×b bins), flattened and concatenated."""
    shape = (2, 3, 7, 9)
    layer, tops = make_layer({"type": "SPP", "spp_param": {"pyramid_height": 3}}, [shape])
    assert tops == [(2, 3 * (1 + 4 + 16))]
    x = rand(shape, 4)
    _, (y,) = run_forward(layer, [x], tops)
    parts = []
    for kh, kw, ph, pw in [(7, 9, 0, 0), (4, 5, 1, 1), (2, 3, 1, 2)]:
        pool, (out,) = make_layer({"type": "Pooling", "pooling_param": dict(
            pool="MAX", kernel_h=kh, kernel_w=kw, stride_h=kh, stride_w=kw, pad_h=ph,
            pad_w=pw)}, [shape])
        _, (t,) = run_forward(pool, [x], [out])
        parts.append(t.data.reshape(2, -1))
    np.testing.assert_array_equal(y.data, np.concatenate(parts, axis=1))
    one, tops1 = make_layer({"type": "SPP", "spp_param": {"pyramid_height": 1}}, [shape])
    assert tops1 == [(2, 3, 1, 1)]                   # height 1: Caffe's pooling top itself


def test_spp_level_pad_not_below_kernel_is_an_error():
    """13 rows in 8 bins: kernel 2, pad (2·8 − 13 + 1) // 2 = 2, which Caffe's Pooling refuses
    (CHECK_LT(pad_h, kernel_h)); so does netspec's."""
    with pytest.raises(SpecError, match="smaller than the kernel"):
        make_layer({"type": "SPP", "spp_param": {"pyramid_height": 4}}, [(1, 1, 13, 16)])


@pytest.mark.parametrize("p, words", [({}, "pyramid_height"),
                                      ({"pyramid_height": 2, "pool": "STOCHASTIC"},
                                       "STOCHASTIC")])
def test_spp_errors(p, words):
    with pytest.raises(SpecError, match=words):
        make_layer({"type": "SPP", "spp_param": p}, [(1, 1, 4, 4)])


# -- Crop, Slice, Reshape, Tile ---------------------------------------------------------------
@pytest.mark.parametrize("p, shapes, want_index", [
    ({}, [(2, 3, 8, 9), (1, 1, 5, 4)], np.s_[:, :, 0:5, 0:4]),
    ({"offset": 2}, [(2, 3, 8, 9), (1, 1, 5, 4)], np.s_[:, :, 2:7, 2:6]),
    ({"axis": 1, "offset": [1, 3, 4]}, [(2, 3, 8, 9), (5, 2, 5, 4)], np.s_[:, 1:3, 3:8, 4:8]),
    ({"axis": -1, "offset": 1}, [(2, 3, 4), (9, 9, 2)], np.s_[:, :, 1:3]),
    ({"axis": 0}, [(3, 4), (2, 2)], np.s_[0:2, 0:2]),
])
def test_crop(p, shapes, want_index):
    layer, tops = make_layer({"type": "Crop", "crop_param": p}, shapes)
    x = rand(shapes[0])
    _, (y,) = run_forward(layer, [x, np.zeros(shapes[1])], tops)
    np.testing.assert_array_equal(y.data, x[want_index])
    check_gradients(layer, [x, rand(shapes[1])], tops)
    (_,), (dx, none), _ = forward_backward(layer, [x, np.zeros(shapes[1])], tops,
                                           [np.ones(tops[0])])
    assert none is None and dx.sum() == math.prod(tops[0])


@pytest.mark.parametrize("p, shapes, words", [
    ({"offset": 4}, [(1, 1, 8, 8), (1, 1, 5, 5)], "out of bounds"),
    ({"offset": [1, 2, 3]}, [(1, 1, 8, 8), (1, 1, 5, 5)], "offsets"),
    ({"axis": 4}, [(1, 1, 8, 8), (1, 1, 5, 5)], "out of range"),
])
def test_crop_errors(p, shapes, words):
    with pytest.raises(NetspecError, match=words):
        make_layer({"type": "Crop", "crop_param": p}, shapes)


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


@pytest.mark.parametrize("p, shape, want", [
    ({"shape": {"dim": [0, -1]}}, (2, 3, 4, 5), (2, 60)),
    ({"shape": {"dim": [0, 0, -1, 1]}}, (2, 3, 4), (2, 3, 4, 1)),
    ({"shape": {"dim": [2, 2]}, "axis": 1, "num_axes": 1}, (3, 4, 5), (3, 2, 2, 5)),
    ({"shape": {"dim": [-1]}, "axis": 1}, (3, 4, 5), (3, 20)),
    ({"shape": {"dim": [1, 1]}, "axis": -1, "num_axes": 0}, (3, 4), (3, 4, 1, 1)),
    ({"shape": {"dim": [1]}, "axis": 0, "num_axes": 0}, (3, 4), (1, 3, 4)),
    ({"shape": {"dim": [0, 6, -1]}, "axis": 1}, (2, 3, 12), (2, 3, 6, 2)),  # 0: axis 1
    ({"shape": {"dim": [-1, 0]}, "axis": 0}, (4, 6), (4, 6)),
])
def test_reshape_shapes(p, shape, want):
    layer, tops = make_layer({"type": "Reshape", "reshape_param": p}, [shape])
    assert tops == [want]
    x = rand(shape)
    bottom, (y,) = run_forward(layer, [x], tops)
    assert np.shares_memory(y.data, bottom[0].data)          # Caffe's ShareData
    np.testing.assert_array_equal(y.data, x.reshape(want))
    check_gradients(layer, [x], tops)


@pytest.mark.parametrize("p, words", [
    ({"shape": {"dim": [-1, -1]}}, "multiple -1"),
    ({"shape": {"dim": [5, -1]}}, "divisible"),
    ({"shape": {"dim": [7]}}, "cannot reshape"),
    ({"shape": {"dim": [0, 0, 0, 0]}}, "no corresponding"),
    ({"shape": {"dim": [2]}, "axis": 4}, "out of range"),
    ({"shape": {"dim": [2]}, "axis": 1, "num_axes": 3}, "out of range"),
    ({"shape": {"dim": [-2, 3]}}, ">= -1"),
])
def test_reshape_errors(p, words):
    with pytest.raises(NetspecError, match=words):
        make_layer({"type": "Reshape", "reshape_param": p}, [(2, 3, 4)])


def test_reshape_refuses_in_place():
    with pytest.raises(SpecError, match="in place"):
        make_layer({"type": "Reshape", "bottom": "x", "top": "x",
                    "reshape_param": {"shape": {"dim": [0, -1]}}}, [(2, 3, 4)])


@pytest.mark.parametrize("axis, tiles, shape", [(1, 3, (2, 3, 4)), (0, 2, (2, 3)),
                                                (-1, 4, (2, 3, 2)), (2, 1, (2, 2, 3))])
def test_tile(axis, tiles, shape):
    layer, tops = make_layer({"type": "Tile", "tile_param": {"axis": axis, "tiles": tiles}},
                             [shape])
    x = rand(shape)
    _, (y,) = run_forward(layer, [x], tops)
    reps = [1] * len(shape)
    reps[axis] = tiles
    np.testing.assert_array_equal(y.data, np.tile(x, reps))
    check_gradients(layer, [x], tops)


@pytest.mark.parametrize("p, words", [({"axis": 1}, "must be specified"),
                                      ({"tiles": 0}, "positive"),
                                      ({"tiles": 2, "axis": 3}, "out of range")])
def test_tile_errors(p, words):
    with pytest.raises(SpecError, match=words):
        make_layer({"type": "Tile", "tile_param": p}, [(2, 3, 4)])


# -- Reduction, ArgMax ------------------------------------------------------------------------
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


# -- Filter, BatchReindex, Embed ---------------------------------------------------------------
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


def embed_spec(**p):
    p.setdefault("weight_filler", GAUSS)
    p.setdefault("bias_filler", GAUSS)
    return {"type": "Embed", "embed_param": p}


@pytest.mark.parametrize("bias", [True, False])
def test_embed(bias):
    idx = np.array([[0.0, 5.0, 2.0], [3.0, 3.0, 1.0]])
    layer, tops = make_layer(embed_spec(num_output=4, input_dim=6, bias_term=bias), [idx.shape])
    assert tops == [(2, 3, 4)]
    assert [b.shape for b in layer.blobs] == [(6, 4), (4,)][:1 + bias]
    dy = rand((2, 3, 4), 1)
    (y,), (none,), pdiffs = forward_backward(layer, [idx], tops, [dy])
    assert none is None
    w = layer.blobs[0].data
    want = w[idx.astype(int)] + (layer.blobs[1].data if bias else 0)
    np.testing.assert_allclose(y, want, rtol=1e-15)
    dw = np.zeros_like(w)
    for n, r in enumerate(idx.astype(int).ravel()):
        dw[r] += dy.reshape(-1, 4)[n]
    np.testing.assert_allclose(pdiffs[0], dw, rtol=1e-15)
    if bias:
        np.testing.assert_allclose(pdiffs[1], dy.reshape(-1, 4).sum(0), rtol=1e-14)
    check_gradients(layer, [idx], tops)


def test_embed_errors():
    with pytest.raises(SpecError, match="num_output"):
        make_layer({"type": "Embed", "embed_param": {"input_dim": 3}}, [(2,)])
    with pytest.raises(SpecError, match="input_dim"):
        make_layer({"type": "Embed", "embed_param": {"num_output": 3}}, [(2,)])
    layer, tops = make_layer(embed_spec(num_output=2, input_dim=3), [(2,)])
    for bad in ([0.0, 3.0], [-1.0, 0.0], [0.5, 1.0]):
        with pytest.raises(NetspecError, match="embedding indices"):
            run_forward(layer, [np.array(bad)], tops)


# -- Parameter, Bias ----------------------------------------------------------------------------
def test_parameter_layer():
    layer, tops = make_layer({"type": "Parameter", "parameter_param": {"shape": {"dim": [2, 3]}}},
                             [])
    assert tops == [(2, 3)] and layer.blobs[0].shape == (2, 3)
    assert not layer.blobs[0].data.any()                # Caffe runs no filler: zeros
    layer.blobs[0].data[...] = rand((2, 3))
    dy = rand((2, 3), 1)
    (y,), _, (dp,) = forward_backward(layer, [], tops, [dy])
    np.testing.assert_array_equal(y, layer.blobs[0].data)
    np.testing.assert_array_equal(dp, dy)
    check_gradients(layer, [], tops)


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


# -- parameter messages -----------------------------------------------------------------------
def test_messages_have_caffe_defaults():
    lrn = LRNParameter()
    assert (lrn.local_size, lrn.alpha, lrn.beta, lrn.k, lrn.norm_region) == \
        (5, 1.0, 0.75, 1.0, "ACROSS_CHANNELS")
    assert (CropParameter().axis, CropParameter().offset) == (2, [])
    assert (SliceParameter().axis, SliceParameter().slice_point) == (1, [])
    r = ReshapeParameter()
    assert (r.shape, r.axis, r.num_axes) == (None, 0, -1)
    assert (TileParameter().axis, TileParameter().tiles) == (1, None)
    red = ReductionParameter()
    assert (red.operation, red.axis, red.coeff) == ("SUM", 0, 1.0)
    am = ArgMaxParameter()
    assert (am.out_max_val, am.top_k, am.axis) == (False, 1, None)
    assert (SPPParameter().pool, SPPParameter().pyramid_height) == ("MAX", None)
    e = EmbedParameter()
    assert (e.bias_term, e.weight_filler.type, e.bias_filler.type) == (True, "constant",
                                                                        "constant")
    b = BiasParameter()
    assert (b.axis, b.num_axes, b.filler) == (1, 1, None)
    assert {"lrn_param", "crop_param", "slice_param", "reshape_param", "tile_param",
            "reduction_param", "argmax_param", "spp_param", "embed_param", "parameter_param",
            "bias_param", "recurrent_param"} <= set(LAYER_PARAM_BLOCKS)


@pytest.mark.parametrize("spec", [
    {"type": "LRN", "lrn_param": {"local_sise": 5}},
    {"type": "LRN", "lrn_param": {"norm_region": "ACROSS"}},
    {"type": "Crop", "crop_param": {"offset": [-1]}},
    {"type": "Slice", "slice_param": {"slice_points": [1]}},
    {"type": "Reshape", "reshape_param": {"shape": {"dims": [1]}}},
    {"type": "Reduction", "reduction_param": {"operation": "MAX"}},
    {"type": "ArgMax", "argmax_param": {"top_k": -1}},
    {"type": "SPP", "spp_param": {"pyramid_height": 2, "method": "MAX"}},
    {"type": "Embed", "embed_param": {"num_output": 2, "input_dim": 2, "filler": GAUSS}},
    {"type": "Bias", "bias_param": {"bias_term": True}},
    {"type": "Tile", "tile_param": {"tile": 2}},
    {"type": "Parameter", "parameter_param": {"dim": [1]}},
])
def test_unknown_or_invalid_fields_refused(spec):
    from pydantic import ValidationError
    with pytest.raises(ValidationError):
        make_layer(spec, [(2, 3, 4, 5)])


def test_lrn_refuses_in_place():
    with pytest.raises(SpecError, match="in place"):
        make_layer({"type": "LRN", "bottom": "x", "top": "x"}, [(1, 2, 3, 3)])


def test_lrn_even_local_size_refused():
    with pytest.raises(SpecError, match="odd"):
        make_layer({"type": "LRN", "lrn_param": {"local_size": 4}}, [(1, 2, 3, 3)])
    with pytest.raises(NetspecError, match="4 axes"):
        make_layer({"type": "LRN"}, [(1, 2, 3)])


# -- float32 end to end ---------------------------------------------------------------------
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


# -- GPU --------------------------------------------------------------------------------------
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
