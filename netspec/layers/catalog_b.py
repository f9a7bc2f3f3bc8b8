"""Caffe layer catalog, part b: neurons, MVN, Silence, more losses, data layers, Python layers.

Each class follows the BVLC Caffe layer of the same type name (``src/caffe/layers/*_layer.cpp``):
same shapes, defaults, formulas and gradient conventions. Parameters read from the net file are
``float`` fields in ``caffe.proto``; they are rounded to float32 first (``_f``), as Caffe reads
them, so float32 results agree with Caffe's to the last bits the formulas allow.

Element-wise layers may run in place (the net passes the same Blob as bottom and top). Those
whose gradient needs the input x keep a copy of x when running in place (as Caffe's PReLU
does), so backward is exact either way; AbsVal refuses in-place use, like Caffe.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
import traceback
import types
import warnings
from pathlib import Path
from typing import Any

import numpy

from ..backend import to_numpy
from ..errors import DataError, NetspecError, SpecError, suggest
from ..spec.params import FillerParameter, LossParameter
from .base import Layer, canonical_axis
from .registry import register

#: Caffe's kLOG_THRESHOLD: probabilities are clamped here before the log
LOG_THRESHOLD = 1e-20


def _f(v: float) -> float:
    """A ``float`` proto field as Caffe sees it (rounded to float32)."""
    return float(numpy.float32(v))


def _legacy(shape: tuple[int, ...], index: int) -> int:
    """Caffe's LegacyShape: num/channels/height/width, 1 for axes a blob lacks."""
    return shape[index] if index < len(shape) else 1


def _sigmoid(xp, x):
    """Caffe's CPU sigmoid: 0.5·tanh(0.5·x) + 0.5 (no overflow)."""
    s = xp.tanh(x * 0.5)
    s *= 0.5
    s += 0.5
    return s


def _in_place_names(lp) -> bool:
    return bool(lp.top) and bool(lp.bottom) and lp.top[0] == lp.bottom[0]


# -- element-wise neurons --------------------------------------------------------------------

class _Neuron(Layer):
    """One bottom, one top of the same shape (Caffe's NeuronLayer).

    ``reads_input``: backward needs x, so an in-place forward keeps a copy of it first.
    """

    exact_bottoms = 1
    exact_tops = 1
    reads_input = False

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


@register("Power")
class Power(_Neuron):
    """y = (shift + scale·x)^power (``power_param``; defaults power 1, scale 1, shift 0).

    Shapes: any, top = bottom. Backward, Caffe's special cases: with power·scale = 0 the top is
    the constant 1 (power 0) or shift^power and dx = 0; power 1: dx = dy·scale; power 2:
    dx = dy·2·scale·(shift + scale·x); otherwise dx = dy·power·scale·y / (shift + scale·x)
    (so a zero base gives inf/NaN exactly where Caffe's does).
    """

    param_block = "power_param"
    reads_input = True

    def configure(self):
        self.power, self.scale, self.shift = _f(self.p.power), _f(self.p.scale), _f(self.p.shift)
        self.diff_scale = _f(self.power * self.scale)

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
            g = x * _f(self.diff_scale * self.scale)
            if self.shift != 0.0:
                g += _f(self.diff_scale * self.shift)
        else:
            g = top[0].data / self._base(x)
            if self.diff_scale != 1.0:
                g *= self.diff_scale
        self.xp.multiply(dy, g, out=dx)


@register("AbsVal")
class AbsVal(_Neuron):
    """y = |x|; dx = dy·sign(x) (sign(0) = 0). Shapes: any, top = bottom.

    Like Caffe, refuses to run in place (backward needs the sign of x).
    """

    def configure(self):
        if _in_place_names(self.lp):
            raise self.spec_error("AbsVal does not allow in-place computation: give the top "
                                  "its own name", field="top")

    def forward(self, bottom, top):
        self.xp.abs(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.xp.multiply(top[0].diff, self.xp.sign(bottom[0].data), out=bottom[0].diff)


@register("BNLL")
class BNLL(_Neuron):
    """Binomial normal log likelihood: y = log(1 + e^x), computed as x + log(1 + e^−x) for x > 0.

    Shapes: any, top = bottom. Backward (Caffe): e = exp(min(x, 50)), dx = dy·e / (e + 1).
    """

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
class ELU(_Neuron):
    """y = x if x > 0 else α·(exp(x) − 1), α = ``elu_param.alpha`` (default 1).

    Shapes: any, top = bottom. Backward: dx = dy·(1 if x > 0 else α + y).
    """

    param_block = "elu_param"
    reads_input = True

    def configure(self):
        self.alpha = _f(self.p.alpha)

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
class PReLU(_Neuron):
    """y = max(x, 0) + a_c·min(x, 0), with learnable slopes a (one blob).

    Shapes: bottom (N, C, ...) with at least 2 axes, top = bottom. The slope blob is (C,), or
    () with ``prelu_param.channel_shared`` (one slope for all channels); filled by
    ``prelu_param.filler`` (default constant 0.25). Backward: dx = dy·(1 if x > 0 else a_c),
    da_c += Σ_{n, spatial} dy·x·[x ≤ 0].
    """

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
class Exp(_Neuron):
    """y = base^(shift + scale·x) (``exp_param``; base −1 means e, the default).

    Computed as Caffe does: y = outer·exp(inner·x), inner = ln(base)·scale,
    outer = base^shift. Shapes: any, top = bottom. Backward from the output: dx = dy·y·inner.
    """

    param_block = "exp_param"

    def configure(self):
        dt = numpy.dtype(self.dtype).type
        base, scale, shift = _f(self.p.base), _f(self.p.scale), _f(self.p.shift)
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
class Log(_Neuron):
    """y = log_base(shift + scale·x) (``log_param``; base −1 means e, the default).

    Computed as Caffe does: y = ln(scale·x + shift)·(1 / ln(base)). Shapes: any, top = bottom.
    Backward: dx = dy·scale / (ln(base)·(scale·x + shift)).
    """

    param_block = "log_param"
    reads_input = True

    def configure(self):
        dt = numpy.dtype(self.dtype).type
        base = _f(self.p.base)
        if base == -1.0:
            self.base_scale = 1.0
        elif base > 0 and base != 1.0:
            self.base_scale = float(dt(1) / dt(math.log(base)))
        else:
            raise self.spec_error(f"base must be positive and not 1 (or -1 for e), got {base}",
                                  field="log_param.base")
        self.scale, self.shift = _f(self.p.scale), _f(self.p.shift)
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
class Threshold(_Neuron):
    """y = 1 if x > t else 0, t = ``threshold_param.threshold`` (default 0). Shapes: any.

    No gradient (Caffe's backward is not implemented): gradients stop here.
    """

    param_block = "threshold_param"
    has_backward = False

    def configure(self):
        self.threshold = _f(self.p.threshold)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data > self.threshold


@register("Swish")
class Swish(_Neuron):
    """y = x·s, s = sigmoid(β·x), β = ``swish_param.beta`` (default 1). Shapes: any.

    Backward (Caffe): dx = dy·(β·y + s·(1 − β·y)), from y and the stored s (in place is exact).
    """

    param_block = "swish_param"

    def configure(self):
        self.beta = _f(self.p.beta)
        self.sig = None

    def forward(self, bottom, top):
        x = bottom[0].data
        self.sig = _sigmoid(self.xp, x * self.beta)
        self.xp.multiply(x, self.sig, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        by = top[0].data * self.beta
        g = (1 - by) * self.sig
        g += by
        self.xp.multiply(top[0].diff, g, out=bottom[0].diff)


@register("Clip")
class Clip(_Neuron):
    """y = max(min, min(x, max)) (``clip_param`` min and max, both required). Shapes: any.

    Backward: dx = dy where min ≤ x ≤ max, else 0.
    """

    param_block = "clip_param"
    reads_input = True

    def configure(self):
        self.lo, self.hi = _f(self.p.min), _f(self.p.max)

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


# -- MVN and Silence -------------------------------------------------------------------------

@register("MVN")
class MVN(Layer):
    """Mean-variance normalisation over each image (``across_channels``) or each channel.

    Bottom (N, C, H, W) (at most 4 axes; missing ones count as 1, Caffe's legacy accessors).
    Top: (N, C, H, W) as Caffe's Reshape makes it (a 2-D bottom (N, D) gives (N, D, 1, 1);
    in place the bottom's shape is kept). With groups g = one image (or one channel of one image)
    of D values: y = (x − mean_g) / (std_g + eps) where std_g = sqrt(mean_g((x − mean_g)²))
    (``normalize_variance``, default), else y = x − mean_g. eps = ``mvn_param.eps`` (1e-9).

    Backward (Caffe's formula, from y): dx = (dy − mean_g(dy) − y·mean_g(dy·y)) / (std_g + eps);
    mean only: dx = dy − mean_g(dy). (The exact derivative scales the y·mean(dy·y) term by
    (std + eps)/std; with eps = 1e-9 the two agree to that relative order.)
    """

    param_block = "mvn_param"
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if len(shape) > 4:
            raise self.error(f"takes blobs of at most 4 axes (N, C, H, W), got {shape}")
        legacy = tuple(_legacy(shape, i) for i in range(4))
        groups = legacy[0] if self.p.across_channels else legacy[0] * legacy[1]
        self.view = (groups, math.prod(legacy) // max(groups, 1))
        self.normalize_variance = bool(self.p.normalize_variance)
        self.eps = _f(self.p.eps)
        self.std = None
        return [shape if _in_place_names(self.lp) else legacy]

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.view)
        y = x - x.mean(axis=1, keepdims=True)
        if self.normalize_variance:
            std = self.xp.sqrt((y * y).mean(axis=1, keepdims=True))
            std += self.eps
            y /= std
            self.std = std
        top[0].data[...] = y.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self.view)
        dx = dy - dy.mean(axis=1, keepdims=True)
        if self.normalize_variance:
            y = top[0].data.reshape(self.view)
            dx -= y * (dy * y).mean(axis=1, keepdims=True)
            dx /= self.std
        bottom[0].diff[...] = dx.reshape(bottom[0].shape)


@register("Silence")
class Silence(Layer):
    """Consumes any number of bottoms (at least one) and produces no tops.

    Keeps otherwise-unused blobs from being net outputs. Backward writes zero gradients.
    """

    min_bottoms = 1
    exact_tops = 0

    def setup(self, bottom_shapes):
        return []

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for b, p in zip(bottom, propagate_down):
            if p:
                b.diff[...] = 0


# -- losses -------------------------------------------------------------------------------

def _check_num(layer: Layer, bottom_shapes) -> None:
    """Caffe's LossLayer::Reshape check: data and label share the first dimension."""
    a, b = bottom_shapes[0], bottom_shapes[1]
    if not a or not b or a[0] != b[0]:
        raise layer.error(f"the data {tuple(a)} and label {tuple(b)} bottoms must have the same "
                          "first dimension")


def _loss_param(layer: Layer) -> LossParameter:
    return layer.lp.loss_param or LossParameter()


class _Normalizer:
    """Caffe's get_normalizer: FULL outer·inner, VALID the valid count, BATCH_SIZE outer,
    NONE 1; at least 1. The VALID count stays a 0-d device array (no host sync)."""

    def __init__(self, xp, dtype, mode: str, outer: int, inner: int):
        self.xp, self.dtype, self.mode = xp, dtype, mode
        self.fixed = float(max({"FULL": outer * inner, "VALID": outer * inner,
                                "BATCH_SIZE": outer, "NONE": 1}[mode], 1))

    def __call__(self, valid_count=None):
        if self.mode == "VALID" and valid_count is not None:
            return self.xp.maximum(valid_count, 1).astype(self.dtype)
        return self.fixed


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLoss(Layer):
    """Cross-entropy of sigmoid(x) against targets t in [0, 1], element-wise.

    Bottoms: x (N, ...) and t (same count). Top: the loss, shape ().
    loss = −Σ_valid [x·(t − [x ≥ 0]) − log(1 + exp(x − 2x·[x ≥ 0]))] / normaliser
    (Caffe's overflow-free form), where elements whose target, truncated to int, equals
    ``loss_param.ignore_label`` are not valid. Normaliser (at least 1): ``loss_param.
    normalization`` when set (FULL: count, VALID: valid count, BATCH_SIZE: N, NONE: 1); else
    the legacy ``normalize`` (true → VALID, false → BATCH_SIZE); with neither, BATCH_SIZE —
    Caffe's legacy default for this layer, *not* the VALID default of the message.

    Backward (x only): dx = (sigmoid(x) − t)·valid·loss_weight / normaliser.
    """

    exact_bottoms = 2
    exact_tops = 1
    is_loss = True
    no_grad_bottoms = (1,)

    def setup(self, bottom_shapes):
        _check_num(self, bottom_shapes)
        a, b = bottom_shapes
        if math.prod(a) != math.prod(b):
            raise self.error(f"inputs must have the same count: {tuple(a)} and {tuple(b)}")
        lossp = _loss_param(self)
        if "normalization" in lossp.model_fields_set:
            mode = lossp.normalization
        elif lossp.normalize is not None:
            mode = "VALID" if lossp.normalize else "BATCH_SIZE"
        else:
            mode = "BATCH_SIZE"
        self.ignore_label = lossp.ignore_label
        self.norm = _Normalizer(self.xp, self.dtype, mode, a[0], math.prod(a[1:]))
        return [()]

    def forward(self, bottom, top):
        xp = self.xp
        x = bottom[0].data
        t = bottom[1].data.reshape(x.shape)
        pos = (x >= 0).astype(self.dtype)
        term = x * (t - pos) - xp.log1p(xp.exp(x - 2 * x * pos))
        if self.ignore_label is not None:
            self.valid = t.astype(xp.int64) != self.ignore_label
            term = xp.where(self.valid, term, 0)
            self.normalizer = self.norm(self.valid.sum())
        else:
            self.valid = None
            self.normalizer = self.norm()
        top[0].data[...] = -term.sum() / self.normalizer

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = bottom[0].data
        dx = _sigmoid(self.xp, x) - bottom[1].data.reshape(x.shape)
        if self.valid is not None:
            dx *= self.valid
        dx *= top[0].diff / self.normalizer
        bottom[0].diff[...] = dx


@register("HingeLoss")
class HingeLoss(Layer):
    """One-vs-all hinge loss. Bottoms: scores x (N, ...) read as (N, D), labels (N) in 0…D−1.

    With s_nk = −1 for the true class k = label_n and +1 otherwise, t = max(0, 1 + s·x):
    L1 (default): loss = Σ t / N; L2: loss = Σ t² / N (``hinge_loss_param.norm``).
    Top: the loss, shape (). Backward (x only), w = loss weight: L1: dx = w·s·[t > 0] / N;
    L2: dx = 2w·s·t / N.
    """

    param_block = "hinge_loss_param"
    exact_bottoms = 2
    exact_tops = 1
    is_loss = True
    no_grad_bottoms = (1,)

    def setup(self, bottom_shapes):
        _check_num(self, bottom_shapes)
        shape = tuple(bottom_shapes[0])
        self.view = (shape[0], math.prod(shape) // shape[0])
        self.norm = self.p.norm
        return [()]

    def forward(self, bottom, top):
        xp = self.xp
        n, d = self.view
        x = bottom[0].data.reshape(self.view)
        label = bottom[1].data.reshape(n, -1)[:, :1].astype(xp.int64)
        sign = 1 - 2 * (xp.arange(d).reshape(1, d) == label).astype(self.dtype)
        t = xp.maximum(1 + sign * x, 0)
        self.sign, self.t = sign, t
        if self.norm == "L1":
            top[0].data[...] = t.sum() / n
        else:
            top[0].data[...] = (t * t).sum() / n

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n = self.view[0]
        w = top[0].diff
        if self.norm == "L1":
            dx = self.sign * (self.t > 0) * (w / n)
        else:
            dx = self.sign * self.t * (w * 2 / n)
        bottom[0].diff[...] = dx.reshape(bottom[0].shape)


@register("InfogainLoss")
class InfogainLoss(Layer):
    """Infogain loss: a softmax over ``infogain_loss_param.axis`` (default 1), then
    loss = −Σ_valid Σ_c H[label, c]·log(max(p_c, 1e-20)) / normaliser (current BVLC Caffe).

    Bottoms: scores x (outer, C, inner...), labels (outer·inner values in 0…C−1), and optionally
    H (C·C values, e.g. (1, 1, C, C)); without a third bottom H is read from
    ``infogain_loss_param.source``, a binary BlobProto file (needs ``protobuf``). H = identity
    gives SoftmaxWithLoss. Tops: the loss (shape ()), optionally the probabilities (x's shape).
    ``loss_param``: ``ignore_label``; ``normalization`` (default VALID; ``normalize`` is refused,
    as in Caffe).

    Backward (x only): dx_c = (p_c·Σ_k H[label, k] − H[label, c])·valid·loss_weight / normaliser.
    """

    param_block = "infogain_loss_param"
    min_bottoms = 2
    max_bottoms = 3
    min_tops = 1
    max_tops = 2
    is_loss = True
    no_grad_bottoms = (1, 2)

    def setup(self, bottom_shapes):
        _check_num(self, bottom_shapes)
        shape = tuple(bottom_shapes[0])
        try:
            axis = canonical_axis(self.p.axis, len(shape))
        except ValueError as e:
            raise self.spec_error(str(e), field="infogain_loss_param.axis") from None
        outer, c, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
        if math.prod(bottom_shapes[1]) != outer * inner:
            raise self.error(
                f"number of labels ({math.prod(bottom_shapes[1])}) must match number of "
                f"predictions ({outer * inner}): with axis {axis} and predictions {shape}, the "
                f"label count must be the product of the other axes, values in 0…{c - 1}")
        self.view = (outer, c, inner)
        lossp = _loss_param(self)
        if lossp.normalize is not None:
            raise self.spec_error("normalize is deprecated for InfogainLoss; use normalization",
                                  field="loss_param.normalize")
        self.ignore_label = lossp.ignore_label
        self.norm = _Normalizer(self.xp, self.dtype, lossp.normalization, outer, inner)
        self.H = None
        if len(bottom_shapes) == 3:
            count = math.prod(bottom_shapes[2])
        else:
            h = self._read_source()
            count = h.size
            self.H = self.backend.asarray(h.reshape(-1))
        if count != c * c:
            raise self.error(f"the infogain matrix H has {count} values; {c} labels need "
                             f"{c}x{c} = {c * c}")
        n_tops = max(len(self.lp.top), 1)
        return [()] + [shape] * (n_tops - 1)

    def _read_source(self):
        src = self.p.source
        if not src:
            raise self.spec_error("needs the infogain matrix: a third bottom H or "
                                  "infogain_loss_param.source (a BlobProto file)",
                                  field="infogain_loss_param.source")
        from ..caffe import pb2  # noqa: PLC0415
        from ..caffe.caffemodel import blob_to_array  # noqa: PLC0415

        path = _resolve(src, self.where)
        try:
            raw = Path(path).read_bytes()
        except OSError as e:
            raise self.error(f"cannot read infogain matrix '{src}': {e.strerror}",
                             field="infogain_loss_param.source", cls=DataError) from None
        proto = pb2().BlobProto()
        try:
            proto.ParseFromString(raw)
            return numpy.asarray(blob_to_array(proto, "infogain matrix", str(path)))
        except NetspecError:
            raise
        except Exception as e:  # noqa: BLE001 - protobuf decode errors
            raise self.error(f"'{src}' is not a binary BlobProto: {e}",
                             field="infogain_loss_param.source", cls=DataError) from None

    def _h(self, bottom):
        c = self.view[1]
        h = self.H if len(bottom) < 3 else bottom[2].data
        return h.reshape(c, c)

    def forward(self, bottom, top):
        xp = self.xp
        outer, c, inner = self.view
        x = bottom[0].data.reshape(self.view)
        e = xp.exp(x - x.max(axis=1, keepdims=True))
        prob = e / e.sum(axis=1, keepdims=True)
        label = bottom[1].data.reshape(outer, inner).astype(xp.int64)
        valid = (label != self.ignore_label) if self.ignore_label is not None else None
        if valid is not None:
            label = xp.where(valid, label, 0)
        rows = self._h(bottom)[label].transpose(0, 2, 1)        # (outer, C, inner): H[label, c]
        terms = (rows * xp.log(xp.maximum(prob, LOG_THRESHOLD))).sum(axis=1)  # (outer, inner)
        if valid is not None:
            terms = xp.where(valid, terms, 0)
        self.prob, self.label, self.valid = prob, label, valid
        self.normalizer = self.norm(valid.sum() if valid is not None else None)
        top[0].data[...] = -terms.sum() / self.normalizer
        if len(top) > 1:
            top[1].data[...] = prob.reshape(top[1].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        h = self._h(bottom)
        rows = h[self.label].transpose(0, 2, 1)                 # (outer, C, inner)
        row_sums = h.sum(axis=1)[self.label][:, None, :]        # (outer, 1, inner)
        dx = self.prob * row_sums - rows
        if self.valid is not None:
            dx *= self.valid[:, None, :]
        dx *= top[0].diff / self.normalizer
        bottom[0].diff[...] = dx.reshape(bottom[0].shape)


@register("ContrastiveLoss")
class ContrastiveLoss(Layer):
    """Contrastive loss of feature pairs (Hadsell et al.) with similarity labels.

    Bottoms: a and b (N, C) (or (N, C, 1, 1)), y (N) with 1 = similar, 0 = dissimilar
    (truncated to int). With d² = ‖a − b‖², m = ``contrastive_loss_param.margin`` (default 1):
    loss = Σ_n [y·d² + (1 − y)·max(m − d, 0)²] / 2N; ``legacy_version``: max(m − d², 0) instead.
    Top: the loss, shape (). Backward (a and b; ±), w = loss weight, α = ±w/N: similar:
    α·(a − b); dissimilar with m − d > 0: −α·(m − d)/(d + 1e-4)·(a − b) (Caffe's regularised
    form; legacy: −α·(a − b) when m − d² > 0), else 0.
    """

    param_block = "contrastive_loss_param"
    exact_bottoms = 3
    exact_tops = 1
    is_loss = True
    no_grad_bottoms = (2,)

    def setup(self, bottom_shapes):
        a, b, y = (tuple(s) for s in bottom_shapes)
        for name, s in (("a", a), ("b", b)):
            if len(s) < 2 or len(s) > 4 or any(d != 1 for d in s[2:]):
                raise self.error(f"bottom {name} must be (N, C) or (N, C, 1, 1), got {s}")
        if a[:2] != b[:2]:
            raise self.error(f"bottoms a {a} and b {b} must have the same shape")
        if len(y) == 0 or y[0] != a[0] or math.prod(y) != a[0]:
            raise self.error(f"the similarity bottom must hold one value per pair ({a[0]}), "
                             f"got shape {y}")
        self.view = (a[0], a[1])
        self.margin = _f(self.p.margin)
        self.legacy = bool(self.p.legacy_version)
        return [()]

    def forward(self, bottom, top):
        xp = self.xp
        diff = bottom[0].data.reshape(self.view) - bottom[1].data.reshape(self.view)
        dist_sq = (diff * diff).sum(axis=1)
        similar = bottom[2].data.reshape(-1).astype(xp.int64) != 0
        if self.legacy:
            far = xp.maximum(self.margin - dist_sq, 0)
        else:
            far = xp.maximum(self.margin - xp.sqrt(dist_sq), 0)
            far = far * far
        loss = xp.where(similar, dist_sq, far).sum()
        self.diff, self.dist_sq, self.similar = diff, dist_sq, similar
        top[0].data[...] = loss / self.view[0] / 2

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        n = self.view[0]
        if self.legacy:
            mdist = self.margin - self.dist_sq
            beta_per = -xp.ones_like(mdist)
        else:
            dist = xp.sqrt(self.dist_sq)
            mdist = self.margin - dist
            beta_per = -mdist / (dist + 1e-4)
        factor = xp.where(self.similar, xp.asarray(1, dtype=self.dtype),
                          xp.where(mdist > 0, beta_per, xp.asarray(0, dtype=self.dtype)))
        for i, sign in ((0, 1), (1, -1)):
            if propagate_down[i]:
                alpha = sign * top[0].diff / n
                g = (alpha * factor)[:, None] * self.diff
                bottom[i].diff[...] = g.reshape(bottom[i].shape)


@register("MultinomialLogisticLoss")
class MultinomialLogisticLoss(Layer):
    """loss = −Σ_n log(max(p[n, label_n], 1e-20)) / N, for probabilities p (N, ...) read as
    (N, D) and labels (N) (one per item: (N), (N, 1) or (N, 1, 1, 1)).

    Top: the loss, shape (). Backward (p only): dp[n, label_n] = −w / (N·max(p, 1e-20)), 0
    elsewhere (w = loss weight).
    """

    exact_bottoms = 2
    exact_tops = 1
    is_loss = True
    no_grad_bottoms = (1,)

    def setup(self, bottom_shapes):
        _check_num(self, bottom_shapes)
        lab = tuple(bottom_shapes[1])
        if len(lab) > 4 or any(d != 1 for d in lab[1:]):
            raise self.error(f"the label bottom must hold one label per item (N, 1, 1, 1), "
                             f"got {lab}")
        shape = tuple(bottom_shapes[0])
        self.view = (shape[0], math.prod(shape) // shape[0])
        return [()]

    def forward(self, bottom, top):
        xp = self.xp
        p = bottom[0].data.reshape(self.view)
        self.label = bottom[1].data.reshape(-1, 1).astype(xp.int64)
        self.p_label = xp.maximum(xp.take_along_axis(p, self.label, axis=1), LOG_THRESHOLD)
        top[0].data[...] = -xp.log(self.p_label).sum() / self.view[0]

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        onehot = xp.arange(self.view[1]).reshape(1, -1) == self.label
        dx = onehot * ((-top[0].diff / self.view[0]) / self.p_label)
        bottom[0].diff[...] = dx.reshape(bottom[0].shape)


# -- data layers --------------------------------------------------------------------------

def _net_dir(where: dict) -> Path | None:
    f = where.get("file") if where else None
    if not f or str(f).startswith("<"):
        return None
    return Path(f).expanduser().resolve().parent


def _resolve(path: str, where: dict, *extra: Path | None) -> Path:
    """An existing file for ``path``: as given if absolute; else relative to the net file's
    folder, then to each of ``extra``, then to the working directory. When none exists, the
    first candidate (for the error message)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    candidates = [d / p for d in (_net_dir(where), *extra) if d is not None] + [Path.cwd() / p]
    for c in candidates:
        if c.is_file():
            return c
    return candidates[0]


@register("DummyData")
class DummyData(Layer):
    """Tops of fixed shapes filled by fillers (Caffe's DummyData); no bottoms, no gradient.

    Shapes: ``dummy_data_param.shape`` (one for all tops or one per top), or the legacy
    ``num``/``channels``/``height``/``width`` (each once or once per top) giving (N, C, H, W).
    ``data_filler``: none (constant 0), one for all tops, or one per top. Like Caffe, tops with
    a ``constant`` filler are filled once; the others are refilled on every forward (from the
    net's random generator).
    """

    param_block = "dummy_data_param"
    exact_bottoms = 0
    min_tops = 1
    has_backward = False

    def setup(self, bottom_shapes):
        p = self.p
        n_top = max(len(self.lp.top), 1)
        nf = len(p.data_filler)
        if nf not in (0, 1, n_top):
            raise self.spec_error(f"number of data fillers must be 0, 1 or equal to the number "
                                  f"of tops ({n_top}); got {nf}", field="dummy_data_param.data_filler")
        legacy = {k: list(getattr(p, k)) for k in ("num", "channels", "height", "width")}
        shapes = []
        if any(legacy.values()):
            if p.shape:
                raise self.spec_error("both shape and legacy fields (num, channels, height, "
                                      "width) were specified", field="dummy_data_param.shape")
            for k, v in legacy.items():
                if len(v) not in (1, n_top):
                    raise self.spec_error(f"must specify '{k}' once, or once per top blob "
                                          f"({n_top}); got {len(v)}", field=f"dummy_data_param.{k}")
            for i in range(n_top):
                shapes.append(tuple(int(v[0] if len(v) == 1 else v[i]) for v in legacy.values()))
        else:
            if len(p.shape) not in (1, n_top):
                raise self.spec_error(f"must specify 'shape' once, or once per top blob "
                                      f"({n_top}); got {len(p.shape)}", field="dummy_data_param.shape")
            for i in range(n_top):
                shapes.append(tuple(int(d) for d in p.shape[0 if len(p.shape) == 1 else i].dim))
        for s in shapes:
            if any(d < 0 for d in s):
                raise self.spec_error(f"negative dimension in shape {s}", field="dummy_data_param")
        self.fillers = list(p.data_filler) or [FillerParameter(type="constant", value=0.0)]
        self.refill = [f.type != "constant" for f in self.fillers]
        self.filled_once = False
        return shapes

    def forward(self, bottom, top):
        from ..fillers import fill  # noqa: PLC0415

        for i, t in enumerate(top):
            k = i if len(self.fillers) > 1 else 0
            if self.refill[k] or not self.filled_once:
                t.data[...] = self.backend.asarray(fill(self.fillers[k], t.shape, self.rng))
        self.filled_once = True


@register("MemoryData")
class MemoryData(Layer):
    """Batches of (data, label) from arrays handed over in Python (pycaffe's set_input_arrays).

    Tops: data (batch_size, channels, height, width) and labels (batch_size,)
    (``memory_data_param``, all positive). Call ``layer.reset(data, labels)`` — e.g.
    ``net.layer_by_name("mem").reset(x, y)`` — with n items (n a multiple of batch_size); each
    forward then takes the next batch, cycling through the n items in order. No transform is
    applied (Caffe's Reset does not transform either). No gradient.
    """

    param_block = "memory_data_param"
    exact_bottoms = 0
    exact_tops = 2
    has_backward = False

    def setup(self, bottom_shapes):
        p = self.p
        self.batch = int(p.batch_size)
        self.item = (int(p.channels), int(p.height), int(p.width))
        if self.batch * math.prod(self.item) <= 0:
            raise self.spec_error("batch_size, channels, height, and width must be specified "
                                  "and positive in memory_data_param", field="memory_data_param")
        self.data = self.labels = None
        self.n = self.pos = 0
        return [(self.batch, *self.item), (self.batch,)]

    def reset(self, data, labels) -> None:
        """Use ``data`` (n items of channels·height·width values) and ``labels`` (n values)."""
        host = numpy.asarray(to_numpy(data))
        lab = numpy.asarray(to_numpy(labels)).reshape(-1)
        n = lab.size
        size = math.prod(self.item)
        if n == 0 or host.size != n * size:
            raise self.error(f"reset() got {host.size} data values for {n} labels; each item "
                             f"needs {size} values {self.item}", cls=DataError)
        if n % self.batch:
            raise self.error(f"reset(): the number of items ({n}) must be a multiple of the "
                             f"batch size ({self.batch})", cls=DataError)
        if self.lp.transform_param is not None:
            warnings.warn(f"layer '{self.name}' (MemoryData) does not transform array data on "
                          "reset()", stacklevel=2)
        self.data = self.backend.asarray(host.reshape((n, *self.item)))
        self.labels = self.backend.asarray(lab)
        self.n, self.pos = n, 0

    def forward(self, bottom, top):
        if self.data is None:
            raise self.error(f"needs data: call net.layer_by_name('{self.name}').reset(data, "
                             "labels) before the first forward", cls=DataError)
        s = slice(self.pos, self.pos + self.batch)
        top[0].data[...] = self.data[s]
        top[1].data[...] = self.labels[s]
        self.pos = (self.pos + self.batch) % self.n


def _h5py(layer: Layer):
    try:
        import h5py  # noqa: PLC0415
    except ImportError:
        raise layer.error("reading HDF5 files needs the 'h5py' package: pip install h5py",
                          field="hdf5_data_param.source", cls=DataError) from None
    return h5py


@register("HDF5Data")
class HDF5Data(Layer):
    """Rows of HDF5 datasets, one dataset per top, named like the top (Caffe's HDF5Data).

    ``hdf5_data_param.source``: a text file listing .h5 files (whitespace separated), relative
    to the net file's folder or the working directory; relative .h5 paths resolve against the
    list file's folder, then the working directory. Each file holds a dataset per top name with
    the same number of rows (axis 0). Top i: (batch_size, *dataset_i.shape[1:]). Rows are read
    in order, file after file, wrapping around; ``shuffle`` permutes the files and the rows
    within each file (a new order on every pass). Values become floats. No gradient; needs
    ``h5py``. ``transform_param`` is refused (Caffe: HDF5 data is not transformed).
    """

    param_block = "hdf5_data_param"
    exact_bottoms = 0
    min_tops = 1
    has_backward = False

    def setup(self, bottom_shapes):
        if self.lp.transform_param is not None:
            raise self.spec_error("HDF5Data does not transform data: remove transform_param",
                                  field="transform_param")
        h5py = _h5py(self)
        p = self.p
        listing = _resolve(p.source, self.where)
        try:
            names = listing.read_text().split()
        except OSError:
            raise self.error(f"failed to open source file '{p.source}' (looked for {listing})",
                             field="hdf5_data_param.source", cls=DataError) from None
        if not names:
            raise self.error(f"must have at least 1 HDF5 filename listed in {listing}",
                             field="hdf5_data_param.source", cls=DataError)
        self.files = [str(_resolve_listed(n, listing.parent)) for n in names]
        self.tops = list(self.lp.top)
        trailing = None
        for f in self.files:
            shapes = self._dataset_shapes(h5py, f)
            if trailing is None:
                trailing = [s[1:] for s in shapes]
            elif [s[1:] for s in shapes] != trailing:
                raise self.error(f"'{f}' has datasets of shapes {shapes}; the first file's rows "
                                 f"are {trailing} (netspec tops have fixed shapes)", cls=DataError)
        self.file_order = numpy.arange(len(self.files))
        if p.shuffle:
            self.file_order = self.rng.permutation(len(self.files))
        self.current_file = 0
        self._load(self.file_order[0])
        self.current_row = 0
        return [(int(p.batch_size), *t) for t in trailing]

    def _dataset_shapes(self, h5py, f):
        try:
            with h5py.File(f, "r") as h:
                shapes = []
                for name in self.tops:
                    if name not in h:
                        raise self.error(f"'{f}' has no dataset '{name}' (a top's name); it has "
                                         f"{sorted(h.keys())}", cls=DataError)
                    shapes.append(tuple(int(d) for d in h[name].shape))
        except NetspecError:
            raise
        except OSError as e:
            raise self.error(f"cannot open HDF5 file '{f}': {e}", cls=DataError) from None
        if any(len(s) < 1 for s in shapes):
            raise self.error(f"'{f}': datasets must have at least 1 axis, got {shapes}",
                             cls=DataError)
        if len({s[0] for s in shapes}) != 1:
            raise self.error(f"'{f}': datasets {self.tops} differ in rows: {shapes}",
                             cls=DataError)
        return shapes

    def _load(self, index: int) -> None:
        h5py = _h5py(self)
        with h5py.File(self.files[index], "r") as h:
            self.arrays = [numpy.asarray(h[name][...]) for name in self.tops]
        self.rows = self.arrays[0].shape[0]
        self.row_order = numpy.arange(self.rows)
        if self.p.shuffle:
            self.row_order = self.rng.permutation(self.rows)
        self.loaded = int(index)

    def _next_file(self) -> None:
        """Caffe's Next() at the end of a file's rows."""
        if len(self.files) > 1:
            self.current_file += 1
            if self.current_file == len(self.files):
                self.current_file = 0
                if self.p.shuffle:
                    self.file_order = self.rng.permutation(len(self.files))
            self._load(self.file_order[self.current_file])
        self.current_row = 0
        if self.p.shuffle:
            self.row_order = self.rng.permutation(self.rows)

    def forward(self, bottom, top):
        batch = int(self.p.batch_size)
        out = [numpy.empty(t.shape, dtype=numpy.float64) for t in top]
        filled = 0
        while filled < batch:
            take = min(batch - filled, self.rows - self.current_row)
            idx = self.row_order[self.current_row:self.current_row + take]
            for o, a in zip(out, self.arrays):
                o[filled:filled + take] = a[idx]
            filled += take
            self.current_row += take
            if self.current_row == self.rows:
                self._next_file()
        for t, o in zip(top, out):
            t.data[...] = self.backend.asarray(o)

    def state_dict(self):
        return {"current_file": self.current_file, "current_row": self.current_row,
                "file_order": self.file_order, "row_order": self.row_order}

    def load_state_dict(self, state):
        self.file_order = numpy.asarray(state["file_order"], dtype=numpy.int64)
        self.current_file = int(state["current_file"])
        if int(self.file_order[self.current_file]) != self.loaded:
            self._load(self.file_order[self.current_file])
        self.row_order = numpy.asarray(state["row_order"], dtype=numpy.int64)
        self.current_row = int(state["current_row"])


def _resolve_listed(name: str, folder: Path) -> Path:
    p = Path(name).expanduser()
    if p.is_absolute():
        return p
    for c in (folder / p, Path.cwd() / p):
        if c.is_file():
            return c
    return folder / p


# -- Python layers ---------------------------------------------------------------------------

TRAIN, TEST = 0, 1  # pycaffe's caffe.TRAIN / caffe.TEST (a layer's ``self.phase``)


class PythonLayerError(NetspecError):
    """A Python layer's own code failed (the message names the layer, method and line)."""


class PythonLayerBase:
    """Base class of user Python layers: pycaffe's ``caffe.Layer`` for netspec.

    Public as ``netspec.python_layer.Layer``, and as ``caffe.Layer`` where netspec stands in for
    pycaffe. Subclasses define ``setup(bottom, top)``, ``reshape(bottom, top)``,
    ``forward(bottom, top)`` and ``backward(top, propagate_down, bottom)``. Before ``setup``
    netspec sets ``self.param_str`` (``python_param.param_str``), ``self.phase`` (TRAIN = 0,
    TEST = 1) and ``self.blobs`` (learnable parameters: ``self.blobs.add_blob(*shape)`` in
    setup). ``self.layer_param`` is the layer's spec (netspec's LayerParameter).
    """

    type = "Python"

    def __init__(self, layer_param: Any = None):
        self.layer_param = layer_param

    def setup(self, bottom, top):
        """Check the bottoms, read ``self.param_str``, add parameter blobs."""

    def reshape(self, bottom, top):
        """Give every top its shape: ``top[i].reshape(*shape)``."""

    def forward(self, bottom, top):
        raise SpecError(f"Python layer class {type(self).__name__} defines no forward(bottom, top); "
                        "a Python layer must override it, as in pycaffe")

    def backward(self, top, propagate_down, bottom):
        raise SpecError(f"Python layer class {type(self).__name__} defines no backward(top, "
                        "propagate_down, bottom); override it, or set propagate_down: false")


def caffe_shim() -> types.ModuleType:
    """A module standing in for ``caffe`` (pycaffe) inside Python layer files: Layer, TRAIN, TEST."""
    mod = types.ModuleType("caffe", "netspec's stand-in for pycaffe inside Python layers")
    mod.Layer = PythonLayerBase
    mod.TRAIN, mod.TEST = TRAIN, TEST
    mod.__netspec_shim__ = True
    return mod


def _install_caffe_shim() -> None:
    """``import caffe`` works in layer files: the real pycaffe when importable, else the shim."""
    if "caffe" in sys.modules:
        return
    try:
        found = importlib.util.find_spec("caffe") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        sys.modules["caffe"] = caffe_shim()


class PyBlob:
    """pycaffe's Blob as a Python layer sees it: ``data``, ``diff`` (NumPy arrays, written in
    place), ``shape``, ``count``, ``num``/``channels``/``height``/``width``, ``reshape(*shape)``.

    On a GPU net ``data``/``diff`` are host copies, written back when the method returns.
    """

    __slots__ = ("_blob", "_data", "_diff", "_shape", "_fixed", "_host", "_label")

    def __init__(self, blob=None, *, shape=None, host: bool = False, label: str = "blob",
                 dtype=numpy.float32):
        self._blob, self._host, self._label = blob, host, label
        self._fixed = blob is not None
        self._data = self._diff = None
        self._shape = None
        if blob is None:
            self._dtype_init(shape, dtype)

    def _dtype_init(self, shape, dtype):
        self._shape = None if shape is None else tuple(int(s) for s in shape)
        self._data = numpy.zeros(self._shape or (0,), dtype=dtype)
        self._diff = numpy.zeros_like(self._data)

    @property
    def shape(self) -> tuple[int, ...]:
        if self._blob is not None:
            return tuple(self._blob.shape)
        return self._shape if self._shape is not None else (0,)

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    num = property(lambda self: _legacy(self.shape, 0))
    channels = property(lambda self: _legacy(self.shape, 1))
    height = property(lambda self: _legacy(self.shape, 2))
    width = property(lambda self: _legacy(self.shape, 3))

    def _view(self, kind: str):
        """``data``/``diff``: the blob's array, or (GPU) a host copy made on first access."""
        if self._blob is None or self._host:
            cached = getattr(self, f"_{kind}")
            if self._blob is None or cached is not None:
                return cached
            setattr(self, f"_{kind}", to_numpy(getattr(self._blob, kind)).copy())
            return getattr(self, f"_{kind}")
        return getattr(self._blob, kind)

    data = property(lambda self: self._view("data"))
    diff = property(lambda self: self._view("diff"))

    def reshape(self, *shape) -> None:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = tuple(int(s) for s in shape)
        if self._fixed:
            if shape != self.shape:
                raise ValueError(f"{self._label} has the fixed shape {self.shape} (netspec nets "
                                 f"fix shapes at setup); reshape{shape} cannot change it")
            return
        self._dtype_init(shape, self._data.dtype)

    def sync(self) -> None:
        """Write host copies back to the device (GPU nets) and drop them."""
        if self._blob is None or not self._host:
            return
        xp = self._blob._xp
        if self._data is not None:
            self._blob.data[...] = xp.asarray(self._data)
        if self._diff is not None:
            self._blob.diff[...] = xp.asarray(self._diff)
        self._data = self._diff = None

    def __repr__(self) -> str:
        return f"<Blob {self._label} {self.shape}>"


class _ParamVec(list):
    """``self.blobs`` of a Python layer: its learnable parameter blobs (pycaffe's BlobVec)."""

    def __init__(self, owner: "Python"):
        super().__init__()
        self._owner = owner
        self._open = True

    def add_blob(self, *shape) -> None:
        """Append a zero-filled parameter blob of ``shape`` (only in setup)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if not self._open:
            raise ValueError("parameter blobs can only be added in setup()")
        o = self._owner
        o.add_param(tuple(int(s) for s in shape), FillerParameter(type="constant", value=0.0),
                    "python")
        self.append(PyBlob(o.blobs[-1], host=o.backend.is_gpu, label=f"param {len(self)}"))


@register("Python")
class Python(Layer):
    """A layer written in Python with pycaffe's interface (``python_param``).

    ``module`` is imported (search path: the net file's folder, the working directory, then
    ``sys.path``, which includes PYTHONPATH) and ``layer`` names a class in it, instantiated with
    the layer's spec. The class derives from ``netspec.python_layer.Layer`` (or ``caffe.Layer``:
    when pycaffe is not installed, ``import caffe`` in the layer file gets netspec's stand-in).
    netspec sets ``param_str``, ``phase`` and ``blobs``, calls ``setup`` then ``reshape`` once
    to learn the top shapes (which stay fixed), and before every ``forward`` calls ``reshape``
    again as Caffe does. Bottoms and tops are PyBlob objects; backward receives
    ``propagate_down``. ``share_in_parallel`` is accepted and ignored (one process).
    """

    param_block = "python_param"

    def setup(self, bottom_shapes):
        p = self.p
        cls = self._load_class()
        try:
            obj = cls(self.lp)
        except Exception as e:  # noqa: BLE001
            raise self.spec_error(f"cannot create {p.module}.{p.layer}({type(e).__name__}: {e}); "
                                  "Python layer classes take the layer's spec as their one "
                                  "argument (derive from netspec.python_layer.Layer)",
                                  field="python_param.layer") from e
        for method in ("setup", "reshape", "forward", "backward"):
            if not callable(getattr(obj, method, None)):
                raise self.spec_error(f"class {p.module}.{p.layer} has no {method}() method",
                                      field="python_param.layer")
        obj.param_str = p.param_str
        obj.phase = TRAIN if self.phase == "TRAIN" else TEST
        obj.blobs = _ParamVec(self)
        self.obj = obj
        dt = numpy.dtype(self.dtype)
        bottoms = [PyBlob(shape=s, label=f"bottom {i}", dtype=dt)
                   for i, s in enumerate(bottom_shapes)]
        tops = [PyBlob(label=f"top {i} '{name}'", dtype=dt) for i, name in enumerate(self.lp.top)]
        self._call("setup", bottoms, tops)
        self._call("reshape", bottoms, tops)
        obj.blobs._open = False
        missing = [self.lp.top[i] for i, t in enumerate(tops) if t._shape is None]
        if missing:
            raise self.error(f"{p.module}.{p.layer} gave no shape to top(s) {missing}: call "
                             "top[i].reshape(*shape) in setup() or reshape()")
        return [t.shape for t in tops]

    def _load_class(self):
        p = self.p
        dirs = [d for d in (_net_dir(self.where), Path.cwd()) if d is not None]
        added = []
        for d in reversed(dirs):
            sys.path.insert(0, str(d))
            added.append(str(d))
        field = "python_param.module"
        try:
            _install_caffe_shim()
            module = importlib.import_module(p.module)
        except ModuleNotFoundError as e:
            if e.name and (p.module == e.name or p.module.startswith(e.name + ".")):
                raise self.spec_error(
                    f"cannot find Python module '{p.module}': looked in "
                    f"{', '.join(str(d) for d in dirs)} and sys.path (PYTHONPATH)",
                    field=field) from None
            raise self.spec_error(f"importing module '{p.module}' failed: {e}", field=field) from e
        except Exception as e:  # noqa: BLE001 - the module's own code failed
            raise self.spec_error(f"importing module '{p.module}' failed: {type(e).__name__}: "
                                  f"{e}{_user_line(e)}", field=field) from e
        finally:
            for d in added:
                try:
                    sys.path.remove(d)
                except ValueError:
                    pass
        cls = getattr(module, p.layer, None)
        if cls is None:
            names = [n for n, v in vars(module).items() if isinstance(v, type)]
            raise self.spec_error(f"module '{p.module}' ({getattr(module, '__file__', '?')}) has "
                                  f"no class '{p.layer}'.{suggest(p.layer, names)}",
                                  field="python_param.layer")
        return cls

    def _call(self, method: str, *args) -> None:
        obj = self.obj
        for pb, param in zip(obj.blobs, self.blobs):
            pb._blob = param          # the net may have replaced a blob by a shared one
        try:
            getattr(obj, method)(*args)
        except NetspecError:
            raise
        except Exception as e:  # noqa: BLE001 - the user's code failed
            raise self.error(f"{self.p.module}.{self.p.layer}.{method}() raised "
                             f"{type(e).__name__}: {e}{_user_line(e)}",
                             cls=PythonLayerError) from e
        finally:
            for group in args:
                if isinstance(group, list):
                    for b in group:
                        if isinstance(b, PyBlob):
                            b.sync()
            for pb in obj.blobs:
                pb.sync()

    def _wrap(self, blobs, kind: str, seen: dict) -> list[PyBlob]:
        out = []
        for i, b in enumerate(blobs):
            if id(b) not in seen:     # in place: bottom and top share one PyBlob
                seen[id(b)] = PyBlob(b, host=self.backend.is_gpu, label=f"{kind} {i} '{b.name}'")
            out.append(seen[id(b)])
        return out

    def forward(self, bottom, top):
        seen: dict = {}
        b, t = self._wrap(bottom, "bottom", seen), self._wrap(top, "top", seen)
        self._call("reshape", b, t)
        self._call("forward", b, t)

    def backward(self, top, propagate_down, bottom):
        seen: dict = {}
        b, t = self._wrap(bottom, "bottom", seen), self._wrap(top, "top", seen)
        self._call("backward", t, [bool(x) for x in propagate_down], b)


def _user_line(e: BaseException) -> str:
    """' (at file:line)' for the innermost frame outside netspec, or ''."""
    here = str(Path(__file__).resolve().parents[1])
    for frame in reversed(traceback.extract_tb(e.__traceback__)):
        if not os.path.abspath(frame.filename).startswith(here):
            return f" (at {frame.filename}:{frame.lineno})"
    return ""
