"""Pooling with Caffe's output size and window rules.

Caffe's pooled length (``layers.pool.pooled_size``: ceil or floor, and a last window that would
start in the padding is dropped) is reached in ONNX with explicit, possibly asymmetric pads and
no ceil mode: begin pad p, end pad e = max((Ho − 1)·s + k − H − p, 0), so that the floor rule
gives Ho.

* MAX: ``MaxPool`` with those pads: padded cells never win, as Caffe's window clipped to the
  image.
* AVE: Caffe divides by the window clipped to the padded input [−p, H + p) (its ``pool_size``),
  not by k², and not by the cells inside the image. The input is zero-padded by ``Pad`` (p, e);
  ``AveragePool`` without pads then gives Σ/(kh·kw) for every window, and a constant (Ho, Wo)
  factor kh·kw / pool_size (omitted when 1 everywhere) makes it Caffe's Σ/pool_size.
"""

from __future__ import annotations

import numpy as np

from ..backend import to_numpy
from .builder import Site, Unsupported, translates


def end_pad(n_out: int, size: int, k: int, pad: int, stride: int) -> int:
    """The end pad that makes ONNX's floor rule give Caffe's ``n_out`` windows."""
    return max((n_out - 1) * stride + k - size - pad, 0)


@translates("Pooling")
def pooling(g, s: Site) -> None:
    L = s.layer
    if len(s.tops) == 2:
        raise Unsupported("its second top (the argmax mask) has no ONNX form: MaxPool's indices "
                          "count over the whole tensor, Caffe's within each plane")
    eh = end_pad(L.Ho, L.H, L.kh, L.pad_h, L.stride_h)
    ew = end_pad(L.Wo, L.W, L.kw, L.pad_w, L.stride_w)
    kernel, strides = [L.kh, L.kw], [L.stride_h, L.stride_w]
    x, y = s.bottoms[0], s.tops[0]
    if L.is_max:
        g.node("MaxPool", [x], y, kernel_shape=kernel, strides=strides,
               pads=[L.pad_h, L.pad_w, eh, ew])
        return
    caffe_ave(g, x, y, s.name, kernel, strides, (L.pad_h, L.pad_w), (eh, ew),
              np.asarray(to_numpy(L._ave_pool_size()), dtype=np.float64))


def caffe_ave(g, x: str, y: str, base: str, kernel, strides, pads, ends, pool_size) -> None:
    """y = Caffe's AVE pooling of x: zero ``Pad`` (pads before, ``ends`` after), AveragePool,
    then × kh·kw / ``pool_size`` (a number, or one per output cell)."""
    if any(pads) or any(ends):
        spec = g.shape_const([0, 0, pads[0], pads[1], 0, 0, ends[0], ends[1]], f"{base}/pads")
        x = g.node("Pad", [x, spec], base=f"{base}/padded", mode="constant")
    factor = kernel[0] * kernel[1] / pool_size
    if np.all(factor == 1):
        g.node("AveragePool", [x], y, kernel_shape=list(kernel), strides=list(strides))
        return
    mean = g.node("AveragePool", [x], base=f"{base}/mean", kernel_shape=list(kernel),
                  strides=list(strides))
    g.node("Mul", [mean, g.const(factor, f"{base}/window_factor")], y)
