"""Reductions over trailing axes: Reduction (SUM, ASUM, SUMSQ, MEAN) and ArgMax.
"""

from __future__ import annotations

import math

from .base import Layer, checked_axis
from .registry import register


# -- reductions -----------------------------------------------------------------------------
@register("Reduction")
class Reduction(Layer):
    """Reduce all axes from ``axis`` on (Caffe's ``ReductionLayer``), times ``coeff``.

    Top shape: shape[:axis] (axis 0, the default: a scalar). With x viewed as (num, dim):
    SUM y = c·Σ x;  ASUM y = c·Σ |x|;  SUMSQ y = c·Σ x²;  MEAN y = c/dim·Σ x.
    ∂x = c·∂y (SUM), c·sign(x)·∂y (ASUM, sign(0) = 0), 2c·x·∂y (SUMSQ), c/dim·∂y (MEAN).
    """

    writes_bottom_diffs = True

    param_block = "reduction_param"
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        axis = checked_axis(self, self.p.axis, len(shape), "axis") if shape else 0
        self.op = self.p.operation
        self.num, self.dim = math.prod(shape[:axis]), math.prod(shape[axis:])
        self.coeff = float(self.p.coeff)
        if self.op == "MEAN":
            self.coeff /= self.dim
        return [shape[:axis]]

    def forward(self, bottom, top):
        xp = self.xp
        x = bottom[0].data.reshape(self.num, self.dim)
        if self.op == "ASUM":
            x = xp.abs(x)
        elif self.op == "SUMSQ":
            x = x * x
        y = top[0].data.reshape(self.num)
        x.sum(axis=1, out=y)
        y *= self.coeff

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        g = top[0].diff.reshape(self.num, 1) * self.coeff
        dx = bottom[0].diff.reshape(self.num, self.dim)
        if self.op == "ASUM":
            xp.multiply(xp.sign(bottom[0].data.reshape(self.num, self.dim)), g, out=dx)
        elif self.op == "SUMSQ":
            xp.multiply(bottom[0].data.reshape(self.num, self.dim), 2 * g, out=dx)
        else:
            dx[...] = g


@register("ArgMax")
class ArgMax(Layer):
    """Indices (and/or values) of the ``top_k`` largest entries (Caffe's ``ArgMaxLayer``).

    With ``axis``: along that axis; top shape = bottom shape with shape[axis] = top_k, holding
    the indices, or the values when ``out_max_val``. Without: over each item's flattened
    Π shape[1:] entries; top (N, 1, top_k) (padded with 1s to the bottom's axes, at least 3),
    or (N, 2, top_k) holding indices then values when ``out_max_val``. Order: descending value,
    ties by the larger index first (Caffe's ``std::greater`` on (value, index) pairs).
    Indices are written as floats. Forward only.
    """

    param_block = "argmax_param"
    exact_bottoms = 1
    exact_tops = 1
    has_backward = False

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        p = self.p
        self.k = p.top_k
        if self.k < 1:
            raise self.spec_error("top_k must not be less than 1", field="top_k")
        self.has_axis = p.axis is not None
        if self.has_axis:
            self.axis = checked_axis(self, p.axis, len(shape), "axis")
            if self.k > shape[self.axis]:
                raise self.spec_error(f"top_k ({self.k}) must be <= the size of axis "
                                      f"{self.axis} ({shape[self.axis]})", field="top_k")
            out = list(shape)
            out[self.axis] = self.k
        else:
            dim = math.prod(shape[1:])
            if self.k > dim:
                raise self.spec_error(f"top_k ({self.k}) must be <= the item size ({dim})",
                                      field="top_k")
            out = [1] * max(len(shape), 3)
            out[0], out[2] = shape[0], self.k
            if p.out_max_val:
                out[1] = 2
        self.shape = shape
        return [tuple(out)]

    def _top_k(self, a):
        """(indices, values) of the k largest along the last axis of ``a``, Caffe's order."""
        xp = self.xp
        order = xp.flip(xp.argsort(a, axis=-1, kind="stable"), axis=-1)[..., :self.k]
        return order, xp.take_along_axis(a, order, axis=-1)

    def forward(self, bottom, top):
        xp, x, y = self.xp, bottom[0].data, top[0].data
        if self.has_axis:
            idx, val = self._top_k(xp.moveaxis(x, self.axis, -1))
            out = val if self.p.out_max_val else idx
            y[...] = xp.moveaxis(out, -1, self.axis)
            return
        idx, val = self._top_k(x.reshape(x.shape[0], -1))
        y2 = y.reshape(x.shape[0], -1, self.k)
        y2[:, 0] = idx
        if self.p.out_max_val:
            y2[:, 1] = val
