"""Dense products: InnerProduct, Embed (a lookup table) and Parameter (a learnable blob as a top).
"""

from __future__ import annotations

import math

import numpy

from .. import parallel
from ..spec.params import FillerParameter
from .base import Layer, add_param_diff, canonical_axis, check_indices, scatter_add
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


@register("Embed")
class Embed(Layer):
    """A learned lookup table (Caffe's ``EmbedLayer``).

    Bottom: indices of any shape S (integer-valued floats in [0, ``input_dim``)); blobs:
    0 = weight (input_dim, num_output) from ``weight_filler``, 1 = bias (num_output,) from
    ``bias_filler`` when ``bias_term``. Top (S…, num_output): y[s] = W[x[s]] + b.
    Backward: ∂W[r] += Σ_{s : x[s] = r} ∂y[s]; ∂b += Σ_s ∂y[s]; no gradient to the indices.
    """

    param_block = "embed_param"
    exact_bottoms = 1
    exact_tops = 1
    no_grad_bottoms = (0,)

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        p = self.p
        if not p.num_output:
            raise self.spec_error("num_output must be positive", field="num_output")
        if not p.input_dim:
            raise self.spec_error("input_dim must be positive", field="input_dim")
        self.n_out, self.n_in = p.num_output, p.input_dim
        self.add_param((self.n_in, self.n_out), p.weight_filler, "weight")
        if p.bias_term:
            self.add_param((self.n_out,), p.bias_filler, "bias")
        self.M = math.prod(shape)
        return [shape + (self.n_out,)]

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(-1)
        check_indices(self, x, self.n_in, "embedding indices", integral=True)
        y = top[0].data.reshape(self.M, self.n_out)
        y[...] = self.xp.take(self.blobs[0].data, x.astype(numpy.int64), axis=0)
        if self.p.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.M, self.n_out)
        idx = bottom[0].data.reshape(-1).astype(numpy.int64)
        scatter_add(self.xp, self.blobs[0].diff, idx, dy)
        if self.p.bias_term:
            self.blobs[1].diff += dy.sum(axis=0)


# -- parameters as blobs: Parameter, Bias ---------------------------------------------------
@register("Parameter")
class Parameter(Layer):
    """A learned blob as a top (Caffe's ``ParameterLayer``): no bottoms, one top.

    Blob 0 of ``parameter_param.shape`` starts at 0 (Caffe runs no filler). Forward: y = blob;
    backward: ∂blob += ∂y.
    """

    param_block = "parameter_param"
    exact_bottoms = 0
    exact_tops = 1

    def setup(self, bottom_shapes):

        dims = tuple(int(d) for d in (self.p.shape.dim if self.p.shape is not None else []))
        if any(d < 0 for d in dims):
            raise self.spec_error(f"shape dims must be non-negative, got {list(dims)}",
                                  field="shape")
        self.add_param(dims, FillerParameter(type="constant", value=0.0), "parameter")
        return [dims]

    def forward(self, bottom, top):
        top[0].data[...] = self.blobs[0].data

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff += top[0].diff
