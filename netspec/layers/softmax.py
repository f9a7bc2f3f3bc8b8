"""Softmax (Caffe's ``SoftmaxLayer``) and SoftmaxWithLoss (``SoftmaxWithLossLayer``): the
softmax along an axis, and its multinomial logistic loss computed in one pass.

SoftmaxWithLoss follows Caffe's normalization modes and ``ignore_label`` (``loss.py``'s
helpers) and clamps probabilities at FLT_MIN before the log; on a GPU both passes are fused
CUDA kernels (``softmax_cuda.py``).
"""

from __future__ import annotations

import math

import numpy

from ..spec.params import LossParameter
from ..spec.params.softmax import SoftmaxParameter
from . import softmax_cuda
from .base import Layer, checked_axis
from .loss import (Normalizer, check_same_num, check_unweighted_extra_tops, label_view,
                   normalization_of)
from .registry import register

#: Caffe clamps probabilities at FLT_MIN before the log, in float and double alike
FLT_MIN = float(numpy.finfo(numpy.float32).tiny)


def softmax(xp, x):
    """Softmax over axis 1 of (outer, C, inner), stabilised by subtracting the max."""
    e = xp.exp(x - x.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e


@register("Softmax")
class Softmax(Layer):
    """y = exp(x) / Σ_c exp(x) along ``softmax_param.axis`` (default 1).

    Backward: dx = (dy − Σ_c dy·y) ⊙ y. Works in place (backward reads the top data).
    """

    fills_tops = True
    writes_bottom_diffs = True

    param_block = "softmax_param"
    exact_bottoms = 1
    exact_tops = 1
    allows_in_place = True      # backward reads the top data only

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        axis = checked_axis(self, self.p.axis, len(shape), "softmax_param.axis")
        self.view = (math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:]))
        return [shape]

    def forward(self, bottom, top):
        y = softmax(self.xp, bottom[0].data.reshape(self.view))
        top[0].data[...] = y.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y = top[0].data.reshape(self.view)
        dy = top[0].diff.reshape(self.view)
        dx = (dy - (dy * y).sum(axis=1, keepdims=True)) * y
        bottom[0].diff[...] = dx.reshape(bottom[0].shape)


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(Layer):
    """Softmax over ``softmax_param.axis`` then multinomial logistic loss (cross-entropy).

    Bottoms: scores (outer, C, inner...) and labels (outer·inner values, integers stored as
    floats, truncated like Caffe's static_cast<int>). Tops: the loss (shape ()), and optionally
    the probabilities (bottom 0's shape).

    loss = −Σ_valid log(max(p[label], FLT_MIN)) / normaliser, where positions whose label is
    ``loss_param.ignore_label`` are not valid, and the normaliser (at least 1) is by
    ``loss_param.normalization``: FULL outer·inner, VALID the valid count, BATCH_SIZE outer,
    NONE 1. The legacy ``normalize`` (true → VALID, false → BATCH_SIZE) applies when
    ``normalization`` is not set, as in Caffe.

    SegNet's class weighting (``loss_param.weight_by_label_freqs`` with one
    ``class_weighting`` value w_c per class; alexgkendall/caffe-segnet): each position's term is
    multiplied by w[label], the normaliser stays the count above (not Σ w), and so is its
    gradient. ``class_weighting`` without ``weight_by_label_freqs`` is ignored, as in the fork.

    Backward (bottom 0 only): dx = (p − onehot(label)) · valid · w[label] · loss_weight /
    normaliser, loss_weight = top[0].diff. On a GPU both passes run as fused CUDA kernels
    (``softmax_cuda.py``), except with class weights (then as on the CPU, in CuPy).
    """

    writes_bottom_diffs = True

    extra_blocks = ("softmax_param",)  # read directly, with loss_param; no param_block
    exact_bottoms = 2
    min_tops = 1
    max_tops = 2
    is_loss = True
    no_grad_bottoms = (1,)
    #: a third top, each position's loss (SoftmaxWithLossOHEM)
    per_instance = False

    def setup(self, bottom_shapes):
        check_same_num(self, bottom_shapes)
        sp = self.lp.softmax_param or SoftmaxParameter()
        lossp = self.lp.loss_param or LossParameter()
        shape = tuple(bottom_shapes[0])
        axis = checked_axis(self, sp.axis, len(shape), "softmax_param.axis")
        self.view = label_view(self, bottom_shapes, axis)
        self.ignore_label = lossp.ignore_label
        self.normalization = normalization_of(self)
        n_tops = max(len(self.lp.top), 1)
        outer, channels, inner = self.view
        self.normalizer = Normalizer(self.xp, self.dtype, self.normalization, outer, inner,
                                     lossp.pre_fixed_normalizer)
        self.class_weights = None
        if lossp.weight_by_label_freqs:
            if len(lossp.class_weighting) != channels:
                raise self.spec_error(
                    f"weight_by_label_freqs needs one class_weighting value per class: "
                    f"{channels} classes, {len(lossp.class_weighting)} values",
                    field="loss_param.class_weighting")
            self.class_weights = self.backend.asarray(
                numpy.asarray(lossp.class_weighting, dtype=numpy.float32))
        self.fused = self.backend.is_gpu and self.class_weights is None and not self.per_instance
        if self.fused:                    # fused CUDA kernels (softmax_cuda.py): their buffers
            self._prob = self.backend.empty(self.view)
            self._logp = self.backend.empty((outer, inner))
            self._valid = self.backend.empty((outer, inner))
        else:
            # flat index of (o, class 0, i) in the (outer, C, inner) scores: + label·inner
            # picks each position's label entry with one take
            rows = numpy.arange(outer, dtype=numpy.int64).reshape(-1, 1) * (channels * inner)
            self._flat_base = self.backend.asarray(
                rows + numpy.arange(inner, dtype=numpy.int64).reshape(1, -1), dtype=numpy.int64)
        tops = [(), shape, tuple(bottom_shapes[1])]
        return tops[:n_tops]

    def forward(self, bottom, top):
        xp = self.xp
        outer, _, inner = self.view
        if self.fused:
            return self._forward_gpu(bottom, top)
        prob = softmax(xp, bottom[0].data.reshape(self.view))
        label = bottom[1].data.reshape(outer, inner).astype(xp.int64)
        valid = (label != self.ignore_label) if self.ignore_label is not None else None
        if valid is not None:
            label = xp.where(valid, label, 0)
        picked = self._flat_base + label * inner               # (outer, inner) flat indices
        p_label = prob.reshape(-1).take(picked)
        logp = xp.log(xp.maximum(p_label, FLT_MIN))
        if valid is not None:
            logp = xp.where(valid, logp, 0)
        self.label_weight = None
        if self.class_weights is not None:
            self.label_weight = self.class_weights.take(label)
            logp = logp * self.label_weight
        self.prob, self.picked, self.valid = prob, picked, valid
        self.norm = self.normalizer(valid.sum() if valid is not None else None)
        top[0].data[...] = -logp.sum() / self.norm
        if len(top) > 1:
            top[1].data[...] = prob.reshape(top[1].shape)
        if len(top) > 2:
            top[2].data[...] = (-logp).reshape(top[2].shape)

    def _forward_gpu(self, bottom, top):
        outer, channels, inner = self.view
        self._label = bottom[1].data.reshape(outer, inner)
        softmax_cuda.softmax_loss_forward(bottom[0].data.reshape(self.view), self._label,
                                       self._prob, self._logp, self._valid, channels, inner,
                                       self.ignore_label)
        self.prob = self._prob
        self.norm = self.normalizer(self._valid.sum() if self.ignore_label is not None else None)
        top[0].data[...] = -self._logp.sum() / self.norm
        if len(top) > 1:
            top[1].data[...] = self._prob.reshape(top[1].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        outer, _, inner = self.view
        if self.fused:
            softmax_cuda.softmax_loss_backward(self._prob, self._label, top[0].diff / self.norm,
                                            bottom[0].diff.reshape(self.view), self.view[1],
                                            inner, self.ignore_label)
            return
        dx = bottom[0].diff.reshape(self.view)
        dx[...] = self.prob
        flat = dx.reshape(-1)
        flat[self.picked] -= 1                                 # p − onehot(label)
        if self.valid is not None:
            dx *= self.valid.reshape(outer, 1, inner)
        if self.label_weight is not None:
            dx *= self.label_weight.reshape(outer, 1, inner)
        dx *= top[0].diff / self.norm


@register("SoftmaxWithLossOHEM")
class SoftmaxWithLossOHEM(SoftmaxWithLoss):
    """R-FCN's SoftmaxWithLoss with a per-RoI loss top (py-R-FCN's Caffe, Microsoft/caffe):
    SoftmaxWithLoss's loss, gradient and normalisation (also R-FCN's PRE_FIXED:
    ``loss_param.pre_fixed_normalizer``); tops the loss, optionally the probabilities and
    each position's −log(max(p[label], FLT_MIN)) (0 where the label is ignored), shaped as the
    labels, not normalised (BoxAnnotatorOHEM ranks RoIs by it). Gradient from the loss only, as
    in the fork (the other tops' loss_weight must be 0).
    """

    max_tops = 3
    per_instance = True
    reads_pre_fixed = True

    def setup(self, bottom_shapes):
        check_unweighted_extra_tops(self)
        return super().setup(bottom_shapes)
