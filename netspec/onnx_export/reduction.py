"""Softmax, Reduction and ArgMax."""

from __future__ import annotations

import math

import numpy as np

from .builder import Site, translates


@translates("Softmax")
def softmax(g, s: Site) -> None:
    g.node("Softmax", s.bottoms, s.tops, axis=s.layer.p.axis)


#: Caffe's Reduction operation -> the ONNX reduction of the flattened tail
_REDUCE = {"SUM": "ReduceSum", "ASUM": "ReduceL1", "SUMSQ": "ReduceSumSquare",
           "MEAN": "ReduceSum"}   # MEAN: the layer's coeff holds 1/dim


@translates("Reduction")
def reduction(g, s: Site) -> None:
    """The axes from ``axis`` on flattened to one (num, dim), reduced, times ``coeff``."""
    L = s.layer
    x = g.reshape(s.bottoms[0], (L.num, L.dim), base=f"{s.name}/flat")
    op = _REDUCE[L.op]
    if op == "ReduceSum":      # axes are an input from opset 13 on, an attribute for the others
        r = g.node(op, [x, g.shape_const([1], f"{s.name}/axes")], base=f"{s.name}/reduced",
                   keepdims=0)
    else:
        r = g.node(op, [x], base=f"{s.name}/reduced", axes=[1], keepdims=0)
    if L.coeff != 1.0:
        r = g.node("Mul", [r, g.const(L.coeff, f"{s.name}/coeff")], base=f"{s.name}/scaled")
    g.reshape(r, s.top_shapes[0], s.tops[0], base=s.name)


@translates("ArgMax")
def argmax(g, s: Site) -> None:
    """``TopK`` (largest, sorted) along ``axis``, or over each item's flattened values; the
    indices cast to float; without an axis and with ``out_max_val``: indices, then values.

    Caffe ranks equal values by the larger index first, ONNX's TopK by the smaller: TopK runs
    on the axis reversed (``Slice`` with step −1) and index i becomes n − 1 − i."""
    L = s.layer
    shape = s.bottom_shapes[0]
    x, axis = s.bottoms[0], L.axis if L.has_axis else 1
    if not L.has_axis:
        x = g.reshape(x, (shape[0], -1), base=f"{s.name}/flat")
    n = shape[axis] if L.has_axis else math.prod(shape[1:])
    x = g.node("Slice", [x, g.shape_const([-1], f"{s.name}/start"),
                         g.shape_const([np.iinfo(np.int64).min], f"{s.name}/end"),
                         g.shape_const([axis], f"{s.name}/axis"),
                         g.shape_const([-1], f"{s.name}/step")], base=f"{s.name}/reversed")
    values, reversed_indices = g.fresh(f"{s.name}/values"), g.fresh(f"{s.name}/rindices")
    g.node("TopK", [x, g.shape_const([L.k], f"{s.name}/k")], [values, reversed_indices],
           axis=axis, largest=1, sorted=1)
    if L.has_axis and L.p.out_max_val:
        g.identity(values, s.tops[0])
        return
    indices = g.node("Sub", [g.const(n - 1, f"{s.name}/last", np.int64), reversed_indices],
                     base=f"{s.name}/indices")
    idx = g.node("Cast", [indices], base=f"{s.name}/float_indices", to=1)
    if L.has_axis:
        g.identity(idx, s.tops[0])
        return
    out = idx
    if L.p.out_max_val:
        out = g.node("Concat", [g.reshape(idx, (shape[0], 1, L.k), base=f"{s.name}/i"),
                                g.reshape(values, (shape[0], 1, L.k), base=f"{s.name}/v")],
                     base=f"{s.name}/pairs", axis=1)
    g.reshape(out, s.top_shapes[0], s.tops[0], base=s.name)
