"""Dense products: InnerProduct, Embed (a lookup table) and Parameter (a learnable blob as a top);
SphereFace's MarginInnerProduct (A-Softmax's angular margin).
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

    fills_tops = True
    writes_bottom_diffs = True

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

    writes_bottom_diffs = True

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


#: SphereFace's margin types: the multiple m of the angle
MARGINS = {"SINGLE": 1, "DOUBLE": 2, "TRIPLE": 3, "QUADRUPLE": 4}


def margin_psi(c, m: int, xp):
    """SphereFace's ψ(θ) = (−1)^k·cos(mθ) − 2k for θ in [kπ/m, (k+1)π/m], from c = cos θ
    as the fork computes it (Chebyshev polynomials and signs), and its coefficients
    (c_w, c_x·‖x‖) of ∂(‖x‖ψ)/∂x = c_w·W_y + c_x·x: c_w = ψ'(c), c_x·‖x‖ = ψ − c·ψ'(c)."""
    s0 = xp.sign(c)
    if m == 1:
        return c, xp.ones_like(c), xp.zeros_like(c)
    if m == 2:
        c2 = c * c
        return 2 * s0 * c2 - 1, 4 * s0 * c, -(2 * s0 * c2 + 1)
    if m == 3:
        c2, c3 = c * c, c * c * c
        s1 = xp.sign(xp.abs(c) - 0.5)
        s2 = (s1 + 1) * s0 - 2
        return s1 * (4 * c3 - 3 * c) + s2, s1 * (12 * c2 - 3), -(8 * s1 * c3 - s2)
    c2 = c * c
    c3, c4 = c2 * c, c2 * c2
    s3 = s0 * xp.sign(2 * c2 - 1)
    s4 = 2 * s0 + s3 - 3
    return (s3 * (8 * c4 - 8 * c2 + 1) + s4, s3 * (32 * c3 - 16 * c),
            -(s3 * (24 * c4 - 8 * c2 - 1) - s4))


@register("MarginInnerProduct")
class MarginInnerProduct(Layer):
    """SphereFace's A-Softmax inner product (wy1iu/sphereface ``MarginInnerProductLayer``).

    Bottoms: x (M, ...) flattened from ``axis`` to (M, K), and M labels. Blob: W (num_output, K),
    its rows normalised to length 1 at every forward (in place, as the fork does: saved weights
    are normalised). Tops: y (M, num_output), optionally λ (1,).

    y = x·Wᵀ, except at each sample's label column, where, with c = cos θ = x·W_y / ‖x‖ and
    m the ``type``'s multiple: y = (‖x‖·ψ(θ) + λ·x·W_y) / (1 + λ), ψ(θ) = (−1)^k cos(mθ) − 2k
    on [kπ/m, (k+1)π/m] (``margin_psi``); SINGLE leaves y = x·Wᵀ. λ = max(base·(1 +
    gamma·iter)^(−power), lambda_min), iter counted from ``iteration`` + 1 at each forward
    (kept in snapshots).

    Backward, the fork's (not the exact gradient where it says so): ∂W = ∂yᵀ·x, the plain
    inner product's, for the normalised W; ∂x = ∂y·W off the label column (the exact gradient);
    at the label column the exact ∂y/∂x = (c_w·W_y + c_x·x + λ·W_y)/(1 + λ) with (c_w, c_x)
    rescaled to length 1 (SphereFace's choice). No gradient to the labels.
    """

    writes_bottom_diffs = True

    param_block = "margin_inner_product_param"
    exact_bottoms = 2
    min_tops = 1
    max_tops = 2
    no_grad_bottoms = (1,)

    def setup(self, bottom_shapes):
        p = self.p
        shape, labels = (tuple(s) for s in bottom_shapes)
        self.axis = canonical_axis(p.axis, len(shape))
        self.M = math.prod(shape[:self.axis])
        self.K = math.prod(shape[self.axis:])
        self.N = p.num_output
        if math.prod(labels) != self.M:
            raise self.error(f"the labels bottom {labels} must hold one label per row of x "
                             f"({self.M})", field="bottom")
        if p.weight_filler is None:
            raise self.spec_error("give a weight_filler: the weight rows are normalised to "
                                  "length 1, and the default filler (constant 0) has none",
                                  field="margin_inner_product_param.weight_filler")
        self.m = MARGINS[p.type]
        self.iter = int(p.iteration)
        self.add_param((self.N, self.K), p.weight_filler, "weight")
        tops = [tuple(shape[:self.axis]) + (self.N,)]
        return tops + [(1,)] * (max(len(self.lp.top), 1) - 1)

    def state_dict(self):
        return {"iteration": numpy.asarray(self.iter)}

    def load_state_dict(self, state):
        if "iteration" in state:
            self.iter = int(state["iteration"])

    def lambda_now(self) -> float:
        """λ of the current iteration, in float32 as the fork's ``Dtype``."""
        p, f = self.p, numpy.float32
        lam = f(p.base) * f(1 + f(p.gamma) * f(self.iter)) ** -f(p.power)
        return float(max(lam, f(p.lambda_min)))

    def forward(self, bottom, top):
        xp = self.xp
        self.iter += 1
        lam = self.lambda_now()
        if len(top) > 1:
            top[1].data[...] = lam
        w = self.blobs[0].data
        w /= xp.sqrt((w * w).sum(axis=1, keepdims=True))
        x = bottom[0].data.reshape(self.M, self.K)
        labels = bottom[1].data.reshape(self.M)
        check_indices(self, labels, self.N, "the labels", integral=True)
        y = top[0].data.reshape(self.M, self.N)
        plain = x @ w.T
        y[...] = plain
        self.lam = lam
        if self.m == 1:
            return
        rows = xp.arange(self.M)
        self.labels = labels.astype(xp.int64)
        self.x_norm = xp.sqrt((x * x).sum(axis=1))
        self.cos = plain[rows, self.labels] / self.x_norm
        psi, self.coeff_w, coeff_x = margin_psi(self.cos, self.m, xp)
        self.coeff_x = coeff_x / self.x_norm
        y[rows, self.labels] = self.x_norm * psi
        y += lam * plain
        y /= 1 + lam

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.M, self.N)
        x = bottom[0].data.reshape(self.M, self.K)
        w = self.blobs[0].data
        add_param_diff(self.blobs[0], dy.T @ x)
        if not propagate_down[0]:
            return
        dx = bottom[0].diff.reshape(self.M, self.K)
        if self.m == 1:
            dx[...] = dy @ w
            return
        xp, lam = self.xp, self.lam
        rows = xp.arange(self.M)
        d_label = dy[rows, self.labels]
        off = dy.copy()
        off[rows, self.labels] = 0
        norm = xp.sqrt(self.coeff_w ** 2 + self.coeff_x ** 2)
        cw, cx = self.coeff_w / norm, self.coeff_x / norm
        dx[...] = (off @ w + lam * (dy @ w)
                   + (d_label * cw)[:, None] * w[self.labels]
                   + (d_label * cx)[:, None] * x) / (1 + lam)
