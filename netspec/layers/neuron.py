"""Element-wise layers (Caffe's NeuronLayer family): one bottom, one top of the same shape,
runnable in place. ReLU, Sigmoid, TanH, Dropout, Power, AbsVal, BNLL, ELU, PReLU, Exp, Log,
Threshold, Swish, Clip; the MobileNet forks' ReLU6.

In place (the net passes the same Blob as bottom and top) the forward pass overwrites x, so a
layer whose gradient needs x keeps a copy of it (``reads_input``, as Caffe's PReLU does); the
others write backward from y and dy only. AbsVal refuses in-place use, like Caffe. Float
parameters are rounded to float32 first (``proto_float``), as Caffe reads them.
"""

from __future__ import annotations

import math

import numpy

from .. import parallel
from ..spec.params import FillerParameter
from .base import Layer, proto_float
from .registry import register


def sigmoid(xp, x):
    """Caffe's CPU sigmoid: 0.5·tanh(0.5·x) + 0.5 (no overflow)."""
    s = xp.tanh(x * 0.5)
    s *= 0.5
    s += 0.5
    return s


class NeuronLayer(Layer):
    """One bottom, one top of the same shape (Caffe's NeuronLayer).

    ``reads_input``: backward needs x, so an in-place forward keeps a copy of it first.
    """

    exact_bottoms = 1
    exact_tops = 1
    reads_input = False
    allows_in_place = True

    def setup(self, bottom_shapes):
        self._x = None
        self.configure()
        return [tuple(bottom_shapes[0])]

    def configure(self) -> None:
        """Read the parameter block (subclasses)."""

    def _save_input(self, bottom, top):
        if self.reads_input and bottom[0] is top[0]:
            self._x = bottom[0].data.copy()

    def _input(self, bottom, top):
        return self._x if bottom[0] is top[0] else bottom[0].data


@register("ReLU")
class ReLU(NeuronLayer):
    """y = max(x, 0) + ν·min(x, 0), ν = ``relu_param.negative_slope`` (Caffe's leaky ReLU).

    Backward: ∂x = ∂y · (1 if x > 0 else ν). With ν ≥ 0, x > 0 ⟺ y > 0, so the mask is read
    from the top data, which is the bottom data when running in place (Caffe reads the bottom).
    With ν < 0 the sign of y does not tell, so an in-place forward keeps the mask x > 0.
    """

    fills_tops = True
    writes_bottom_diffs = True

    param_block = "relu_param"
    folded_into = None       # the Convolution computing this layer's output (conv_fold)

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
        if self.folded_into:     # computed by the Convolution before it (conv_fold)
            return
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
class Sigmoid(NeuronLayer):
    """y = 1 / (1 + e^(−x)), computed as Caffe does: 0.5·tanh(0.5·x) + 0.5 (no overflow).

    Backward from the output only: ∂x = ∂y · y · (1 − y).
    """

    writes_bottom_diffs = True

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
class TanH(NeuronLayer):
    """y = tanh(x). Backward from the output only: ∂x = ∂y · (1 − y²)."""

    writes_bottom_diffs = True

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
class Dropout(NeuronLayer):
    """Inverted dropout with ratio r = ``dropout_param.dropout_ratio`` (Caffe).

    TRAIN: mask m ~ Bernoulli(1 − r) per element, y = x · m / (1 − r), ∂x = ∂y · m / (1 − r).
    TEST: y = x, ∂x = ∂y. With ``dropout_param.scale_train: false`` (py-faster-rcnn's fork)
    TRAIN keeps y = x · m, ∂x = ∂y · m and TEST scales instead: y = x · (1 − r), ∂x = ∂y · (1 − r). The mask is drawn on the host from ``self.rng`` (float32 uniforms,
    kept where u < 1 − r), so a seed gives the same mask on CPU and GPU; it is moved to the
    device as booleans and stored pre-scaled (m / (1 − r), in the layer dtype) for backward.
    """

    fills_tops = True
    writes_bottom_diffs = True

    param_block = "dropout_param"

    def setup(self, bottom_shapes):
        self.ratio = float(self.p.dropout_ratio)
        scale = 1.0 / (1.0 - self.ratio)
        # scale_train false (caffe-fast-rcnn): the kept values are not scaled when training,
        # and testing multiplies by 1 / scale = 1 − r (the fork's float scale_, inverted)
        self.scale = scale if self.p.scale_train else 1.0
        self.test_scale = 1.0 if self.p.scale_train else 1.0 / float(numpy.float32(scale))
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
        elif self.test_scale != 1.0:
            self.xp.multiply(x, numpy.dtype(self.dtype).type(self.test_scale), out=y)
        elif bottom[0] is not top[0]:
            y[...] = x

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = top[0].diff, bottom[0].diff
        if self.phase == "TRAIN":
            self.xp.multiply(dy, self.mask, out=dx)
        elif self.test_scale != 1.0:
            self.xp.multiply(dy, numpy.dtype(self.dtype).type(self.test_scale), out=dx)
        elif dx is not dy:
            dx[...] = dy


@register("Power")
class Power(NeuronLayer):
    """y = (shift + scale·x)^power (``power_param``; defaults power 1, scale 1, shift 0).

    Shapes: any, top = bottom. Backward, Caffe's special cases: with power·scale = 0 the top is
    the constant 1 (power 0) or shift^power and dx = 0; power 1: dx = dy·scale; power 2:
    dx = dy·2·scale·(shift + scale·x); otherwise dx = dy·power·scale·y / (shift + scale·x)
    (so a zero base gives inf/NaN exactly where Caffe's does).
    """

    writes_bottom_diffs = True

    param_block = "power_param"
    reads_input = True

    def configure(self):
        self.power, self.scale, self.shift = proto_float(self.p.power), proto_float(self.p.scale), proto_float(self.p.shift)
        self.diff_scale = proto_float(self.power * self.scale)

    def _base(self, x):
        base = x * self.scale if self.scale != 1.0 else x.copy()
        if self.shift != 0.0:
            base += self.shift
        return base

    def forward(self, bottom, top):
        y = top[0].data
        if self.diff_scale == 0.0:
            with numpy.errstate(all="ignore"):
                value = 1.0 if self.power == 0.0 else float(
                    numpy.power(numpy.float32(self.shift), numpy.float32(self.power)))
            y[...] = value
            return
        self._save_input(bottom, top)
        base = self._base(bottom[0].data)
        if self.power == 1.0:
            y[...] = base
        else:
            self.xp.power(base, self.power, out=y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx, dy = bottom[0].diff, top[0].diff
        if self.diff_scale == 0.0:
            dx[...] = 0
            return
        if self.power == 1.0:
            self.xp.multiply(dy, self.diff_scale, out=dx)
            return
        x = self._input(bottom, top)
        if self.power == 2.0:
            g = x * proto_float(self.diff_scale * self.scale)
            if self.shift != 0.0:
                g += proto_float(self.diff_scale * self.shift)
        else:
            g = top[0].data / self._base(x)
            if self.diff_scale != 1.0:
                g *= self.diff_scale
        self.xp.multiply(dy, g, out=dx)


@register("AbsVal")
class AbsVal(NeuronLayer):
    """y = |x|; dx = dy·sign(x) (sign(0) = 0). Shapes: any, top = bottom.

    Like Caffe, refuses to run in place (backward needs the sign of x).
    """

    writes_bottom_diffs = True

    allows_in_place = False     # backward needs x, which an in-place forward overwrites

    def forward(self, bottom, top):
        self.xp.abs(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.xp.multiply(top[0].diff, self.xp.sign(bottom[0].data), out=bottom[0].diff)


@register("BNLL")
class BNLL(NeuronLayer):
    """Binomial normal log likelihood: y = log(1 + e^x), computed as x + log(1 + e^−x) for x > 0.

    Shapes: any, top = bottom. Backward (Caffe): e = exp(min(x, 50)), dx = dy·e / (e + 1).
    """

    writes_bottom_diffs = True

    reads_input = True
    THRESHOLD = 50.0

    def forward(self, bottom, top):
        xp = self.xp
        self._save_input(bottom, top)
        x = bottom[0].data
        y = xp.log1p(xp.exp(-xp.abs(x)))
        y += xp.maximum(x, 0)
        top[0].data[...] = y

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        e = xp.exp(xp.minimum(self._input(bottom, top), self.THRESHOLD))
        g = e / (e + 1)
        xp.multiply(top[0].diff, g, out=bottom[0].diff)


@register("ELU")
class ELU(NeuronLayer):
    """y = x if x > 0 else α·(exp(x) − 1), α = ``elu_param.alpha`` (default 1).

    Shapes: any, top = bottom. Backward: dx = dy·(1 if x > 0 else α + y).
    """

    writes_bottom_diffs = True

    param_block = "elu_param"
    reads_input = True

    def configure(self):
        self.alpha = proto_float(self.p.alpha)

    def forward(self, bottom, top):
        xp = self.xp
        self._save_input(bottom, top)
        x = bottom[0].data
        neg = xp.exp(xp.minimum(x, 0))
        neg -= 1
        neg *= self.alpha
        neg += xp.maximum(x, 0)
        top[0].data[...] = neg

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        pos = self._input(bottom, top) > 0
        g = xp.where(pos, xp.asarray(1, dtype=self.dtype), top[0].data + self.alpha)
        xp.multiply(top[0].diff, g, out=bottom[0].diff)


@register("PReLU")
class PReLU(NeuronLayer):
    """y = max(x, 0) + a_c·min(x, 0), with learnable slopes a (one blob).

    Shapes: bottom (N, C, ...) with at least 2 axes, top = bottom. The slope blob is (C,), or
    () with ``prelu_param.channel_shared`` (one slope for all channels); filled by
    ``prelu_param.filler`` (default constant 0.25). Backward: dx = dy·(1 if x > 0 else a_c),
    da_c += Σ_{n, spatial} dy·x·[x ≤ 0].
    """

    writes_bottom_diffs = True

    param_block = "prelu_param"
    reads_input = True

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if len(shape) < 2:
            raise self.error(f"the bottom must have at least 2 axes, got {shape}")
        self.channel_shared = bool(self.p.channel_shared)
        filler = self.p.filler or FillerParameter(type="constant", value=0.25)
        self.add_param(() if self.channel_shared else (shape[1],), filler, "slope")
        self.view = (shape[0], shape[1], math.prod(shape[2:]))
        self._x = None
        return [shape]

    def _slope(self):
        a = self.blobs[0].data
        return a if self.channel_shared else a.reshape(1, -1, 1)

    def forward(self, bottom, top):
        xp = self.xp
        self._save_input(bottom, top)
        x = bottom[0].data.reshape(self.view)
        y = xp.minimum(x, 0) * self._slope()
        y += xp.maximum(x, 0)
        top[0].data[...] = y.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        x = self._input(bottom, top).reshape(self.view)
        dy = top[0].diff.reshape(self.view)
        pos = x > 0
        # the slope gradient first: in place, bottom diff and top diff are one array
        g = xp.where(pos, xp.asarray(0, dtype=self.dtype), dy * x)
        if self.channel_shared:
            self.blobs[0].diff += g.sum()
        else:
            self.blobs[0].diff += g.sum(axis=(0, 2))
        if propagate_down[0]:
            dx = dy * xp.where(pos, xp.asarray(1, dtype=self.dtype), self._slope())
            bottom[0].diff[...] = dx.reshape(bottom[0].shape)


@register("Exp")
class Exp(NeuronLayer):
    """y = base^(shift + scale·x) (``exp_param``; base −1 means e, the default).

    Computed as Caffe does: y = outer·exp(inner·x), inner = ln(base)·scale,
    outer = base^shift. Shapes: any, top = bottom. Backward from the output: dx = dy·y·inner.
    """

    writes_bottom_diffs = True

    param_block = "exp_param"

    def configure(self):
        dt = numpy.dtype(self.dtype).type
        base, scale, shift = proto_float(self.p.base), proto_float(self.p.scale), proto_float(self.p.shift)
        if base != -1.0 and not base > 0:
            raise self.spec_error(f"base must be strictly positive (or -1 for e), got {base}",
                                  field="exp_param.base")
        log_base = dt(1) if base == -1.0 else dt(math.log(base))
        if not math.isfinite(float(log_base)):
            raise self.spec_error(f"log(base) = log({base}) is not finite", field="exp_param.base")
        self.inner = float(dt(log_base * dt(scale)))
        if shift == 0.0:
            self.outer = 1.0
        else:
            self.outer = float(dt(base ** shift if base != -1.0 else math.exp(shift)))

    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        if self.inner == 1.0:
            self.xp.exp(x, out=y)
        else:
            self.xp.multiply(x, self.inner, out=y)
            self.xp.exp(y, out=y)
        if self.outer != 1.0:
            y *= self.outer

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx = bottom[0].diff
        self.xp.multiply(top[0].data, top[0].diff, out=dx)
        if self.inner != 1.0:
            dx *= self.inner


@register("Log")
class Log(NeuronLayer):
    """y = log_base(shift + scale·x) (``log_param``; base −1 means e, the default).

    Computed as Caffe does: y = ln(scale·x + shift)·(1 / ln(base)). Shapes: any, top = bottom.
    Backward: dx = dy·scale / (ln(base)·(scale·x + shift)).
    """

    writes_bottom_diffs = True

    param_block = "log_param"
    reads_input = True

    def configure(self):
        dt = numpy.dtype(self.dtype).type
        base = proto_float(self.p.base)
        if base == -1.0:
            self.base_scale = 1.0
        elif base > 0 and base != 1.0:
            self.base_scale = float(dt(1) / dt(math.log(base)))
        else:
            raise self.spec_error(f"base must be positive and not 1 (or -1 for e), got {base}",
                                  field="log_param.base")
        self.scale, self.shift = proto_float(self.p.scale), proto_float(self.p.shift)
        self.num_scale = float(dt(dt(self.scale) * dt(self.base_scale)))

    def _arg(self, x):
        a = x * self.scale if self.scale != 1.0 else x.copy()
        if self.shift != 0.0:
            a += self.shift
        return a

    def forward(self, bottom, top):
        self._save_input(bottom, top)
        y = top[0].data
        self.xp.log(self._arg(bottom[0].data), out=y)
        if self.base_scale != 1.0:
            y *= self.base_scale

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        g = self.xp.reciprocal(self._arg(self._input(bottom, top)))
        if self.num_scale != 1.0:
            g *= self.num_scale
        self.xp.multiply(top[0].diff, g, out=bottom[0].diff)


@register("Threshold")
class Threshold(NeuronLayer):
    """y = 1 if x > t else 0, t = ``threshold_param.threshold`` (default 0). Shapes: any.

    No gradient (Caffe's backward is not implemented): gradients stop here.
    """

    param_block = "threshold_param"
    has_backward = False

    def configure(self):
        self.threshold = proto_float(self.p.threshold)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data > self.threshold


@register("Swish")
class Swish(NeuronLayer):
    """y = x·s, s = sigmoid(β·x), β = ``swish_param.beta`` (default 1). Shapes: any.

    Backward (Caffe): dx = dy·(β·y + s·(1 − β·y)), from y and the stored s (in place is exact).
    """

    writes_bottom_diffs = True

    param_block = "swish_param"

    def configure(self):
        self.beta = proto_float(self.p.beta)
        self.sig = None

    def forward(self, bottom, top):
        x = bottom[0].data
        self.sig = sigmoid(self.xp, x * self.beta)
        self.xp.multiply(x, self.sig, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        by = top[0].data * self.beta
        g = (1 - by) * self.sig
        g += by
        self.xp.multiply(top[0].diff, g, out=bottom[0].diff)


@register("Clip")
class Clip(NeuronLayer):
    """y = max(min, min(x, max)) (``clip_param`` min and max, both required). Shapes: any.

    Backward: dx = dy where min ≤ x ≤ max, else 0.
    """

    writes_bottom_diffs = True

    param_block = "clip_param"
    reads_input = True

    def configure(self):
        self.lo, self.hi = proto_float(self.p.min), proto_float(self.p.max)

    def forward(self, bottom, top):
        self._save_input(bottom, top)
        y = top[0].data
        self.xp.minimum(bottom[0].data, self.hi, out=y)
        self.xp.maximum(y, self.lo, out=y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = self._input(bottom, top)
        inside = (x >= self.lo) & (x <= self.hi)
        self.xp.multiply(top[0].diff, inside, out=bottom[0].diff)


@register("ReLU6")
class ReLU6(NeuronLayer):
    """y = min(max(x, 0), 6) (the MobileNet forks' ReLU6; no parameter block). Shapes: any.

    Backward: dx = dy where 0 < x < 6, else 0. The mask 0 < y < 6 is the same set, so it is read
    from the top data and running in place is exact.
    """

    writes_bottom_diffs = True

    def forward(self, bottom, top):
        y = top[0].data
        self.xp.maximum(bottom[0].data, 0, out=y)
        self.xp.minimum(y, 6, out=y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y = top[0].data
        inside = (y > 0) & (y < 6)
        self.xp.multiply(top[0].diff, inside, out=bottom[0].diff)
