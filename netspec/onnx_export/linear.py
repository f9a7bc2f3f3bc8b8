"""Convolution, Deconvolution (and the forks' depthwise convolutions), InnerProduct.

Caffe's weight layouts are ONNX's: Conv W (M, C/g, kh, kw), ConvTranspose W (C, M/g, kh, kw);
both compute Caffe's output size (floor rule; ``s·(H−1) + d·(k−1) + 1 − 2p`` for the
transposed one). InnerProduct flattens the axes from ``axis`` on: Reshape (outer, K) → Gemm
(W transposed unless ``transpose: true``) → Reshape to ``shape[:axis] + (N,)``.
"""

from __future__ import annotations

from .builder import Site, translates


def _conv_attrs(L) -> dict:
    return dict(kernel_shape=[L.kh, L.kw], pads=[L.pad_h, L.pad_w, L.pad_h, L.pad_w],
                strides=[L.stride_h, L.stride_w], dilations=[L.dil_h, L.dil_w],
                group=int(L.p.group))


@translates("Convolution", "DepthwiseConvolution", "ConvolutionDepthwise", "Deconvolution")
def convolution(g, s: Site) -> None:
    L = s.layer
    op = "ConvTranspose" if L.type_name == "Deconvolution" else "Conv"
    inputs = [g.const(s.blob(0), f"{s.name}/weight")]
    if L.p.bias_term:
        inputs.append(g.const(s.blob(1), f"{s.name}/bias"))
    for x, y in zip(s.bottoms, s.tops):     # N bottoms -> N tops with one set of weights
        g.node(op, [x, *inputs], y, **_conv_attrs(L))


@translates("InnerProduct")
def inner_product(g, s: Site) -> None:
    L = s.layer
    x, shape = s.bottoms[0], s.bottom_shapes[0]
    if shape != (L.M, L.K):
        x = g.reshape(x, (L.M, L.K), base=f"{s.name}/flat")
    inputs = [x, g.const(s.blob(0), f"{s.name}/weight")]
    if L.p.bias_term:
        inputs.append(g.const(s.blob(1), f"{s.name}/bias"))
    trans_b = 0 if L.p.transpose else 1
    if s.top_shapes[0] == (L.M, L.N):
        g.node("Gemm", inputs, s.tops[0], transB=trans_b)
    else:
        y = g.node("Gemm", inputs, base=f"{s.name}/gemm", transB=trans_b)
        g.reshape(y, s.top_shapes[0], s.tops[0], base=s.name)
