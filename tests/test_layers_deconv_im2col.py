"""Deconvolution and Im2col (netspec/layers/conv.py), under each code path of the convolution
machinery (the ``layout`` fixture of conftest.py).

Deconvolution against a literal implementation of Caffe's scatter, the adjoint of Convolution,
FCN's output sizes and bilinear upsampling, float64 gradient checks, PyTorch's conv_transpose2d;
Im2col against torch's unfold; Caffe's golden im2col case (tests/golden/layers/, float32).
"""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import check_gradients, forward_backward, make_layer, rand, run_forward
from layer_cases import F32, GAUSS, GOLDEN, close, deconv_spec, golden_net, im2col_spec, run_golden

from netspec.errors import NetspecError

# -- Deconvolution --------------------------------------------------------------------------------

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


DECONV_CASES = {
    "k3s2": ((2, 3, 4, 5), dict(num_output=4, kernel_size=3, stride=2)),
    "k4s2p1": ((2, 2, 5, 4), dict(num_output=3, kernel_size=4, stride=2, pad=1)),
    "group_dilation": ((2, 4, 4, 4), dict(num_output=6, kernel_size=3, stride=2, pad=2,
                                          dilation=2, group=2)),
    "hw_fields": ((1, 2, 3, 4), dict(num_output=2, kernel_h=3, kernel_w=2, stride_h=2,
                                     stride_w=1, pad_h=1, pad_w=0)),
    "no_bias": ((2, 3, 3, 3), dict(num_output=2, kernel_size=2, stride=2, bias_term=False)),
}


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


# -- Im2col ---------------------------------------------------------------------------------------

IM2COL_CASES = [
    ((2, 3, 6, 6), dict(kernel_size=3, stride=2, pad=1)),
    ((1, 2, 5, 7), dict(kernel_h=2, kernel_w=3, stride_h=1, stride_w=2, pad_h=0, pad_w=1)),
    ((2, 2, 7, 7), dict(kernel_size=3, dilation=2, pad=1)),
]


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


# -- Caffe parity (tests/golden/layers/im2col, float32) -------------------------------------------

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
