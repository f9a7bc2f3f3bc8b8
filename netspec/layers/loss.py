"""Softmax, the loss layers (SoftmaxWithLoss, EuclideanLoss) and Accuracy.

A loss layer's first top is a 0-d array; before backward the net sets that top's diff to the
layer's loss weight, which scales every bottom gradient (Caffe's convention).
"""

from __future__ import annotations

import math

import numpy

from ..spec.params import LossParameter, SoftmaxParameter
from . import loss_cuda
from .base import Layer, canonical_axis
from .registry import register

#: Caffe clamps probabilities at FLT_MIN before the log, in float and double alike
FLT_MIN = float(numpy.finfo(numpy.float32).tiny)


def _axis(layer: Layer, axis: int, ndim: int, field: str) -> int:
    try:
        return canonical_axis(axis, ndim)
    except ValueError as e:
        raise layer.spec_error(str(e), field=field) from None


def _softmax(xp, x):
    """Softmax over axis 1 of (outer, C, inner), stabilised by subtracting the max."""
    e = xp.exp(x - x.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e


def _labels(layer: Layer, bottom_shapes, axis: int) -> tuple[int, int, int]:
    """(outer, C, inner) of the score bottom; checks the label count is outer·inner."""
    shape = bottom_shapes[0]
    outer, channels, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
    if math.prod(bottom_shapes[1]) != outer * inner:
        raise layer.error(
            f"number of labels ({math.prod(bottom_shapes[1])}) must match number of predictions "
            f"({outer * inner}): with axis {axis} and predictions {tuple(shape)}, the label "
            f"count must be the product of the other axes, values in {{0, ..., {channels - 1}}}")
    return outer, channels, inner


def _check_num(layer: Layer, bottom_shapes) -> None:
    """Caffe's LossLayer check: both bottoms have the same first dimension."""
    a, b = bottom_shapes[0], bottom_shapes[1]
    if not a or not b or a[0] != b[0]:
        raise layer.error(f"the data {tuple(a)} and label {tuple(b)} bottoms must have the same "
                          "first dimension")


@register("Softmax")
class Softmax(Layer):
    """y = exp(x) / Σ_c exp(x) along ``softmax_param.axis`` (default 1).

    Backward: dx = (dy − Σ_c dy·y) ⊙ y. Works in place (backward reads the top data).
    """

    param_block = "softmax_param"
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        axis = _axis(self, self.p.axis, len(shape), "softmax_param.axis")
        self.view = (math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:]))
        return [shape]

    def forward(self, bottom, top):
        y = _softmax(self.xp, bottom[0].data.reshape(self.view))
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

    Backward (bottom 0 only): dx = (p − onehot(label)) · valid · loss_weight / normaliser,
    loss_weight = top[0].diff. On a GPU both passes run as fused CUDA kernels (``loss_cuda.py``).
    """

    extra_blocks = ("softmax_param",)  # read directly, with loss_param; no param_block
    exact_bottoms = 2
    min_tops = 1
    max_tops = 2
    is_loss = True
    no_grad_bottoms = (1,)

    def setup(self, bottom_shapes):
        _check_num(self, bottom_shapes)
        sp = self.lp.softmax_param or SoftmaxParameter()
        lossp = self.lp.loss_param or LossParameter()
        shape = tuple(bottom_shapes[0])
        axis = _axis(self, sp.axis, len(shape), "softmax_param.axis")
        self.view = _labels(self, bottom_shapes, axis)
        self.ignore_label = lossp.ignore_label
        self.normalization = lossp.normalization
        if "normalization" not in lossp.model_fields_set and lossp.normalize is not None:
            self.normalization = "VALID" if lossp.normalize else "BATCH_SIZE"
        n_tops = max(len(self.lp.top), 1)
        outer, channels, inner = self.view
        if self.backend.is_gpu:           # fused CUDA kernels (loss_cuda.py): their buffers
            self._prob = self.backend.empty(self.view)
            self._logp = self.backend.empty((outer, inner))
            self._valid = self.backend.empty((outer, inner))
        else:
            # flat index of (o, class 0, i) in the (outer, C, inner) scores: + label·inner
            # picks each position's label entry with one take
            rows = numpy.arange(outer, dtype=numpy.int64).reshape(-1, 1) * (channels * inner)
            self._flat_base = rows + numpy.arange(inner, dtype=numpy.int64).reshape(1, -1)
        return [()] + [shape] * (n_tops - 1)

    def _normalizer(self, valid_count):
        """Caffe's get_normalizer, at least 1; a 0-d array in VALID mode (no host sync)."""
        outer, _, inner = self.view
        mode = self.normalization
        if mode == "VALID" and self.ignore_label is not None:
            return self.xp.maximum(valid_count, 1).astype(self.dtype)
        n = {"FULL": outer * inner, "VALID": outer * inner, "BATCH_SIZE": outer, "NONE": 1}[mode]
        return float(max(n, 1))

    def forward(self, bottom, top):
        xp = self.xp
        outer, _, inner = self.view
        if self.backend.is_gpu:
            return self._forward_gpu(bottom, top)
        prob = _softmax(xp, bottom[0].data.reshape(self.view))
        label = bottom[1].data.reshape(outer, inner).astype(xp.int64)
        valid = (label != self.ignore_label) if self.ignore_label is not None else None
        if valid is not None:
            label = xp.where(valid, label, 0)
        picked = self._flat_base + label * inner               # (outer, inner) flat indices
        p_label = prob.reshape(-1).take(picked)
        logp = xp.log(xp.maximum(p_label, FLT_MIN))
        if valid is not None:
            logp = xp.where(valid, logp, 0)
        self.prob, self.picked, self.valid = prob, picked, valid
        self.norm = self._normalizer(valid.sum() if valid is not None else None)
        top[0].data[...] = -logp.sum() / self.norm
        if len(top) > 1:
            top[1].data[...] = prob.reshape(top[1].shape)

    def _forward_gpu(self, bottom, top):
        outer, channels, inner = self.view
        self._label = bottom[1].data.reshape(outer, inner)
        loss_cuda.softmax_loss_forward(bottom[0].data.reshape(self.view), self._label,
                                       self._prob, self._logp, self._valid, channels, inner,
                                       self.ignore_label)
        self.prob = self._prob
        self.norm = self._normalizer(self._valid.sum() if self.ignore_label is not None else None)
        top[0].data[...] = -self._logp.sum() / self.norm
        if len(top) > 1:
            top[1].data[...] = self._prob.reshape(top[1].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        outer, _, inner = self.view
        if self.backend.is_gpu:
            loss_cuda.softmax_loss_backward(self._prob, self._label, top[0].diff / self.norm,
                                            bottom[0].diff.reshape(self.view), self.view[1],
                                            inner, self.ignore_label)
            return
        dx = bottom[0].diff.reshape(self.view)
        dx[...] = self.prob
        flat = dx.reshape(-1)
        flat[self.picked] -= 1                                 # p − onehot(label)
        if self.valid is not None:
            dx *= self.valid.reshape(outer, 1, inner)
        dx *= top[0].diff / self.norm


@register("EuclideanLoss")
class EuclideanLoss(Layer):
    """loss = Σ (a − b)² / (2N), N = a.shape[0]; a and b have equal counts per item.

    Backward: da = w·(a − b)/N, db = −w·(a − b)/N, w = top[0].diff (the loss weight).
    """

    exact_bottoms = 2
    exact_tops = 1
    is_loss = True

    def setup(self, bottom_shapes):
        _check_num(self, bottom_shapes)
        a, b = bottom_shapes
        if math.prod(a[1:]) != math.prod(b[1:]):
            raise self.error(f"bottoms {tuple(a)} and {tuple(b)} differ in size per item")
        self.num = a[0]
        return [()]

    def forward(self, bottom, top):
        a = bottom[0].data
        self.diff = a - bottom[1].data.reshape(a.shape)
        top[0].data[...] = (self.diff * self.diff).sum() / self.num / 2

    def backward(self, top, propagate_down, bottom):
        for i, sign in ((0, 1), (1, -1)):
            if propagate_down[i]:
                alpha = sign * top[0].diff / self.num
                bottom[i].diff[...] = (alpha * self.diff).reshape(bottom[i].shape)


@register("Accuracy")
class Accuracy(Layer):
    """Top-k classification accuracy along ``accuracy_param.axis`` (default 1); no backward.

    A position counts as correct when at most ``top_k`` scores are ≥ the true class's score
    (Caffe's rule: ties count against). Positions labelled ``ignore_label`` are skipped.
    Top 0: correct / counted (0 when nothing is counted), shape (). Optional top 1: the
    accuracy per class, shape (C,), 0 for classes absent from the labels.
    """

    param_block = "accuracy_param"
    exact_bottoms = 2
    min_tops = 1
    max_tops = 2
    has_backward = False
    no_grad_bottoms = (1,)

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        axis = _axis(self, self.p.axis, len(shape), "accuracy_param.axis")
        if self.p.top_k > math.prod(shape) // max(math.prod(bottom_shapes[1]), 1):
            raise self.spec_error("top_k must be less than or equal to the number of classes",
                                  field="accuracy_param.top_k")
        self.view = _labels(self, bottom_shapes, axis)
        n_tops = max(len(self.lp.top), 1)
        return [()] + [(shape[axis],)] * (n_tops - 1)

    def forward(self, bottom, top):
        xp = self.xp
        outer, channels, inner = self.view
        scores = bottom[0].data.reshape(self.view)
        label = bottom[1].data.reshape(outer, 1, inner).astype(xp.int64)
        ignore = self.p.ignore_label
        valid = (label != ignore) if ignore is not None else xp.ones(label.shape, dtype=bool)
        label = xp.where(valid, label, 0)
        true_score = xp.take_along_axis(scores, label, axis=1)
        correct = ((scores >= true_score).sum(axis=1, keepdims=True) <= self.p.top_k) & valid
        dt = self.dtype
        count = valid.sum()
        accuracy = correct.sum().astype(dt) / xp.maximum(count, 1).astype(dt)
        top[0].data[...] = xp.where(count > 0, accuracy, 0)
        if len(top) > 1:
            onehot = (xp.arange(channels).reshape(1, channels, 1) == label) & valid
            per_class = (onehot & correct).sum(axis=(0, 2)).astype(dt)
            seen = onehot.sum(axis=(0, 2))
            top[1].data[...] = xp.where(seen > 0, per_class / xp.maximum(seen, 1).astype(dt), 0)
