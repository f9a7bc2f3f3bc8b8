"""Element-wise activations: ReLU (leaky), Sigmoid, TanH, Dropout.

All four take exactly one bottom and one top of the same shape and may run **in place**
(the net passes the very same Blob as ``bottom[0]`` and ``top[0]``). In place, the input is
overwritten by the forward pass, so backward reads only what survives: the top data (the
output y) and the top diff, and writes the bottom diff (possibly the same array as the top
diff). Every formula below is written so that this is exact.
"""

from __future__ import annotations

import numpy

from .. import parallel
from .base import Layer
from .registry import register


class _ElementWise(Layer):
    """One bottom, one top, same shape."""

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes):
        return [tuple(bottom_shapes[0])]


@register("ReLU")
class ReLU(_ElementWise):
    """y = max(x, 0) + ν·min(x, 0), ν = ``relu_param.negative_slope`` (Caffe's leaky ReLU).

    Backward: ∂x = ∂y · (1 if x > 0 else ν). With ν ≥ 0, x > 0 ⟺ y > 0, so the mask is read
    from the top data, which is the bottom data when running in place (Caffe reads the bottom).
    With ν < 0 the sign of y does not tell, so an in-place forward keeps the mask x > 0.
    """

    param_block = "relu_param"

    def setup(self, bottom_shapes):
        self.slope = float(self.p.negative_slope)
        # 0-d arrays in the layer dtype: where(mask, 1, ν) stays in that dtype
        self._one = self.xp.asarray(1, dtype=self.dtype)
        self._nu = self.xp.asarray(self.slope, dtype=self.dtype)
        self._pos = None
        return super().setup(bottom_shapes)

    def _factor(self, pos):
        """1 where ``pos``, ν elsewhere (the derivative, also the forward multiplier)."""
        return self.xp.where(pos, self._one, self._nu)

    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        if self.slope == 0.0:
            xf, yf = x.reshape(-1), y.reshape(-1)          # blobs are contiguous: views

            def part(s):
                self.xp.maximum(xf[s], 0, out=yf[s])
            parallel.over_slices(part, xf.size, self.threads)
            return
        pos = x > 0
        if self.slope < 0 and bottom[0] is top[0]:
            self._pos = pos
        self.xp.multiply(x, self._factor(pos), out=y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        in_place = bottom[0] is top[0]
        dy, dx = top[0].diff, bottom[0].diff
        if self.slope == 0.0:        # x > 0 (Caffe's rule, immune to later in-place layers), or
            ref = (top[0] if in_place else bottom[0]).data.reshape(-1)     # y > 0 in place
            dyf, dxf = dy.reshape(-1), dx.reshape(-1)

            def part(s):
                self.xp.multiply(dyf[s], ref[s] > 0, out=dxf[s])
            parallel.over_slices(part, dyf.size, self.threads)
            return
        if not in_place:
            pos = bottom[0].data > 0
        elif self.slope > 0:
            pos = top[0].data > 0
        else:
            pos = self._pos
        self.xp.multiply(dy, self._factor(pos), out=dx)


@register("Sigmoid")
class Sigmoid(_ElementWise):
    """y = 1 / (1 + e^(−x)), computed as Caffe does: 0.5·tanh(0.5·x) + 0.5 (no overflow).

    Backward from the output only: ∂x = ∂y · y · (1 − y).
    """

    param_block = "sigmoid_param"

    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        self.xp.multiply(x, 0.5, out=y)
        self.xp.tanh(y, out=y)
        y *= 0.5
        y += 0.5

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y, dy, dx = top[0].data, top[0].diff, bottom[0].diff
        one_minus_y = 1 - y
        self.xp.multiply(dy, y, out=dx)
        dx *= one_minus_y


@register("TanH")
class TanH(_ElementWise):
    """y = tanh(x). Backward from the output only: ∂x = ∂y · (1 − y²)."""

    param_block = "tanh_param"

    def forward(self, bottom, top):
        self.xp.tanh(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y, dy, dx = top[0].data, top[0].diff, bottom[0].diff
        g = y * y
        self.xp.subtract(1, g, out=g)
        self.xp.multiply(dy, g, out=dx)


@register("Dropout")
class Dropout(_ElementWise):
    """Inverted dropout with ratio r = ``dropout_param.dropout_ratio`` (Caffe).

    TRAIN: mask m ~ Bernoulli(1 − r) per element, y = x · m / (1 − r), ∂x = ∂y · m / (1 − r).
    TEST: y = x, ∂x = ∂y. The mask is drawn on the host from ``self.rng`` (float32 uniforms,
    kept where u < 1 − r), so a seed gives the same mask on CPU and GPU; it is moved to the
    device as booleans and stored pre-scaled (m / (1 − r), in the layer dtype) for backward.
    """

    param_block = "dropout_param"

    def setup(self, bottom_shapes):
        self.ratio = float(self.p.dropout_ratio)
        self.scale = 1.0 / (1.0 - self.ratio)
        self.mask = None
        return super().setup(bottom_shapes)

    def _draw_mask(self, shape):
        keep = self.rng.random(shape, dtype=numpy.float32) < numpy.float32(1.0 - self.ratio)
        if self.mask is None or self.mask.shape != tuple(shape):
            self.mask = self.backend.empty(shape)
        self.mask[...] = self.backend.asarray(keep, dtype=bool)
        self.mask *= self.scale
        return self.mask

    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        if self.phase == "TRAIN":
            self.xp.multiply(x, self._draw_mask(x.shape), out=y)
        elif bottom[0] is not top[0]:
            y[...] = x

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = top[0].diff, bottom[0].diff
        if self.phase == "TRAIN":
            self.xp.multiply(dy, self.mask, out=dx)
        elif dx is not dy:
            dx[...] = dy
