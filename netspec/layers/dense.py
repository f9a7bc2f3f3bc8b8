"""InnerProduct (fully connected) layer. On the CPU its GEMMs are split into blocks of the
output over the layer's threads (``parallel.matmul``)."""

from __future__ import annotations

import math

from .. import parallel
from .base import Layer, add_param_diff, canonical_axis
from .registry import register


@register("InnerProduct")
class InnerProduct(Layer):
    """y = x·Wᵀ + b over the axes from ``axis`` on, flattened to K = Π shape[axis:].

    W is (N, K) (Caffe's layout), or (K, N) with ``transpose: true``; b is (N,).
    Top shape: bottom.shape[:axis] + (N,).
    """

    param_block = "inner_product_param"
    exact_bottoms = 1
    exact_tops = 1
    writes_param_diffs = True

    def setup(self, bottom_shapes):
        shape = bottom_shapes[0]
        p = self.p
        self.axis = canonical_axis(p.axis, len(shape))
        self.M = math.prod(shape[:self.axis])
        self.K = math.prod(shape[self.axis:])
        self.N = p.num_output
        wshape = (self.K, self.N) if p.transpose else (self.N, self.K)
        self.add_param(wshape, p.weight_filler, "weight")
        if p.bias_term:
            self.add_param((self.N,), p.bias_filler, "bias")
        return [tuple(shape[:self.axis]) + (self.N,)]

    def _w(self):
        """The weight as a (K, N) matrix (a view: no copy)."""
        w = self.blobs[0].data
        return w if self.p.transpose else w.T

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.M, self.K)
        y = top[0].data.reshape(self.M, self.N)
        parallel.matmul(x, self._w(), y, self.threads)
        if self.p.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.M, self.N)
        x = bottom[0].data.reshape(self.M, self.K)
        w = self.blobs[0]
        # a gradient the solver has just zeroed is written, not added to (Param.diff_is_zero)
        if self.p.transpose:
            parallel.matmul(x.T, dy, w.diff, self.threads, accumulate=not w.diff_is_zero)
        else:
            parallel.matmul(dy.T, x, w.diff, self.threads, accumulate=not w.diff_is_zero)
        if self.p.bias_term:
            add_param_diff(self.blobs[1], dy.sum(axis=0))
        if propagate_down[0]:
            dx = bottom[0].diff.reshape(self.M, self.K)
            parallel.matmul(dy, self._w().T, dx, self.threads)
