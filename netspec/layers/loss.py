"""The loss layers (but SoftmaxWithLoss, in ``softmax.py``), Accuracy and DeepLab v2's
SegAccuracy.

Losses follow Caffe's normalization modes (``loss_param.normalization``: FULL, VALID, BATCH_SIZE,
NONE) and ``ignore_label``; probabilities are clamped at Caffe's ``kLOG_THRESHOLD`` (or
FLT_MIN for SoftmaxWithLoss) before the log.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy

from ..caffe import pb2
from ..caffe.caffemodel import blob_to_array
from ..errors import DataError, NetspecError
from ..spec.params import FillerParameter, LossParameter
from .base import (Layer, add_param_diff, canonical_axis, check_indices, checked_axis, legacy_dim,
                   proto_float, scatter_add)
from .neuron import sigmoid
from .registry import register

#: Caffe's kLOG_THRESHOLD: probabilities are clamped here before the log
LOG_THRESHOLD = 1e-20


def label_view(layer: Layer, bottom_shapes, axis: int) -> tuple[int, int, int]:
    """(outer, C, inner) of the score bottom; checks the label count is outer·inner."""
    shape = bottom_shapes[0]
    outer, channels, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
    if math.prod(bottom_shapes[1]) != outer * inner:
        raise layer.error(
            f"number of labels ({math.prod(bottom_shapes[1])}) must match number of predictions "
            f"({outer * inner}): with axis {axis} and predictions {tuple(shape)}, the label "
            f"count must be the product of the other axes, values in {{0, ..., {channels - 1}}}")
    return outer, channels, inner


def check_same_num(layer: Layer, bottom_shapes) -> None:
    """Caffe's LossLayer check: both bottoms have the same first dimension."""
    a, b = bottom_shapes[0], bottom_shapes[1]
    if not a or not b or a[0] != b[0]:
        raise layer.error(f"the data {tuple(a)} and label {tuple(b)} bottoms must have the same "
                          "first dimension")


def loss_param_of(layer: Layer) -> LossParameter:
    return layer.lp.loss_param or LossParameter()


class Normalizer:
    """Caffe's get_normalizer: FULL outer·inner, VALID the valid count, BATCH_SIZE outer,
    NONE 1, R-FCN's PRE_FIXED ``pre_fixed``; at least 1. The VALID count stays a 0-d device
    array (no host sync)."""

    def __init__(self, xp, dtype, mode: str, outer: int, inner: int, pre_fixed: float = 1.0):
        self.xp, self.dtype, self.mode = xp, dtype, mode
        self.fixed = float(max({"FULL": outer * inner, "VALID": outer * inner,
                                "BATCH_SIZE": outer, "NONE": 1, "PRE_FIXED": pre_fixed}[mode], 1))

    def __call__(self, valid_count=None):
        if self.mode == "VALID" and valid_count is not None:
            return self.xp.maximum(valid_count, 1).astype(self.dtype)
        return self.fixed


def check_unweighted_extra_tops(layer: Layer) -> None:
    """R-FCN's OHEM losses pass gradient from their loss (top 0) only, as in the fork: a loss
    weight on another top (the per-RoI loss, the probabilities) would be ignored, so it is
    refused."""
    for i, w in enumerate(layer.lp.loss_weight[1:], 1):
        if w:
            raise layer.spec_error(
                f"top {i} ('{layer.lp.top[i]}') passes no gradient back (as in R-FCN's fork): "
                f"its loss_weight must be 0, not {w}", field="loss_weight")


def normalization_of(layer: Layer, default: str = "VALID") -> str:
    """``loss_param.normalization``, or the legacy ``normalize`` (true VALID, false BATCH_SIZE)
    when it alone is set, or ``default``. R-FCN's PRE_FIXED only for the layers that read it
    (``reads_pre_fixed``)."""
    lossp = loss_param_of(layer)
    if "normalization" in lossp.model_fields_set:
        mode = lossp.normalization
    elif lossp.normalize is not None:
        mode = "VALID" if lossp.normalize else "BATCH_SIZE"
    else:
        mode = default
    if mode == "PRE_FIXED" and not getattr(layer, "reads_pre_fixed", False):
        raise layer.spec_error(
            f"normalization PRE_FIXED is R-FCN's (daijifeng001/caffe-rfcn), read only by its "
            f"SmoothL1LossOHEM and SoftmaxWithLossOHEM layers, not by {layer.type_name}",
            field="loss_param.normalization")
    return mode


@register("EuclideanLoss")
class EuclideanLoss(Layer):
    """loss = Σ (a − b)² / (2N), N = a.shape[0]; a and b have equal counts per item.

    Backward: da = w·(a − b)/N, db = −w·(a − b)/N, w = top[0].diff (the loss weight).
    """

    writes_bottom_diffs = True

    exact_bottoms = 2
    exact_tops = 1
    is_loss = True

    def setup(self, bottom_shapes):
        check_same_num(self, bottom_shapes)
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


@register("CenterLoss")
class CenterLoss(Layer):
    """The center loss of ydwen/caffe-face (Wen et al., "A Discriminative Feature Learning
    Approach for Deep Face Recognition"): loss = Σ_i ‖x_i − c_{y_i}‖² / (2M).

    Bottoms: features, flattened from ``center_loss_param.axis`` into M vectors of K values,
    and M labels in [0, num_output). Blob: the centers c (num_output, K), ``center_filler``
    (default constant 0). Backward: ∂x_i = w·(x_i − c_{y_i}) / M (w = top[0].diff, the loss
    weight). The centers' diff is the fork's update rule, not a gradient of the loss:
    Δc_j = Σ_{y_i = j} (c_j − x_i) / (1 + n_j), n_j the number of samples of class j in the
    batch, independent of the loss weight; the solver then moves c_j by −lr·lr_mult·Δc_j.
    No gradient to the labels.
    """

    writes_bottom_diffs = True

    param_block = "center_loss_param"
    exact_bottoms = 2
    exact_tops = 1
    is_loss = True
    no_grad_bottoms = (1,)

    def setup(self, bottom_shapes):
        p = self.p
        feats, labels = (tuple(s) for s in bottom_shapes)
        axis = checked_axis(self, p.axis, len(feats), "center_loss_param.axis")
        M, K = math.prod(feats[:axis]), math.prod(feats[axis:])
        if math.prod(labels) != M:
            raise self.error(f"the labels bottom {labels} must hold one label per feature vector "
                             f"({M} = the product of {feats[:axis]})", field="bottom")
        self.M, self.K, self.N = M, K, int(p.num_output)
        self.add_param((self.N, K), p.center_filler or FillerParameter(), "centers")
        return [()]

    def forward(self, bottom, top):
        xp = self.xp
        x = bottom[0].data.reshape(self.M, self.K)
        labels = bottom[1].data.reshape(self.M)
        check_indices(self, labels, self.N, "the labels", integral=True)
        self.labels = labels.astype(xp.int64)
        self.distance = x - self.blobs[0].data[self.labels]
        top[0].data[...] = (self.distance * self.distance).sum() / self.M / 2

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        sums = xp.zeros((self.N, self.K), dtype=self.dtype)
        scatter_add(xp, sums, self.labels, self.distance)
        counts = xp.bincount(self.labels, minlength=self.N).astype(self.dtype)
        add_param_diff(self.blobs[0], -sums / (1 + counts)[:, None])
        if propagate_down[0]:
            bottom[0].diff[...] = (top[0].diff / self.M * self.distance).reshape(bottom[0].shape)


@register("SmoothL1Loss")
class SmoothL1Loss(Layer):
    """The detection forks' smooth L1 loss: loss = Σ w_out · f(w_in · (x − y)) / N, N the
    first dimension of x, f(d) = 0.5·σ²d² where |d| < 1/σ², else |d| − 0.5/σ²
    (``smooth_l1_loss_param.sigma``, default 1).

    Bottoms, by count: x, y (both forks); x, y, w (SSD: w_in = w, no w_out); x, y, w_in, w_out
    (py-faster-rcnn), all with x's count per item. Backward, to x and (sign reversed) to y:
    dy_top · f'(d) / N, times w_in · w_out with four bottoms (py-faster-rcnn's gradient) and
    not multiplied by w with three (SSD's backward leaves it out: exact for 0/1 weights). No
    gradient to the weights.
    """

    writes_bottom_diffs = True

    param_block = "smooth_l1_loss_param"
    min_bottoms = 2
    max_bottoms = 4
    exact_tops = 1
    is_loss = True
    no_grad_bottoms = (2, 3)

    def setup(self, bottom_shapes):
        check_same_num(self, bottom_shapes)
        first = tuple(bottom_shapes[0])
        names = ("x", "y", "inside weights" if len(bottom_shapes) == 4 else "weights",
                 "outside weights")
        for i, s in enumerate(bottom_shapes[1:], 1):
            if math.prod(s[1:]) != math.prod(first[1:]) or legacy_dim(s, 0) != legacy_dim(first, 0):
                raise self.error(f"bottom {i} ({names[i]}) {tuple(s)} must have the shape of "
                                 f"bottom 0 {first}")
        sigma = numpy.float32(self.p.sigma)
        self.sigma2 = float(sigma * sigma)
        self.num = max(legacy_dim(first, 0), 1)
        return [()]

    def forward(self, bottom, top):
        xp = self.xp
        x = bottom[0].data
        d = x - bottom[1].data.reshape(x.shape)
        if len(bottom) >= 3:
            d *= bottom[2].data.reshape(x.shape)
        self.d = d
        a = xp.abs(d)
        small = a < 1.0 / self.sigma2
        err = xp.where(small, (0.5 * self.sigma2) * d * d, a - 0.5 / self.sigma2)
        if len(bottom) == 4:
            err *= bottom[3].data.reshape(x.shape)
        top[0].data[...] = err.sum() / self.num

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        d = self.d
        g = xp.where(xp.abs(d) < 1.0 / self.sigma2, self.sigma2 * d, xp.sign(d))
        if len(bottom) == 4:
            g = g * bottom[2].data.reshape(d.shape) * bottom[3].data.reshape(d.shape)
        for i, sign in ((0, 1), (1, -1)):
            if propagate_down[i]:
                alpha = sign * top[0].diff / self.num
                bottom[i].diff[...] = (alpha * g).reshape(bottom[i].shape)


@register("SmoothL1LossOHEM")
class SmoothL1LossOHEM(Layer):
    """R-FCN's smooth L1 loss with a per-RoI loss top (py-R-FCN's Caffe, Microsoft/caffe):
    loss = Σ f(w · (x − y)) / normaliser, f(d) = 0.5·d² where |d| < 1, else |d| − 0.5 (σ = 1).

    Bottoms x, y [, w] of one shape (N, C[, H, W]; trailing 1s aside). The normaliser (at least 1) by
    ``loss_param.normalization``: FULL and VALID N·H·W, BATCH_SIZE N, PRE_FIXED
    ``pre_fixed_normalizer``, NONE 1. Optional top 1 (N, 1, H, W): each position's f summed over
    C, not normalised (BoxAnnotatorOHEM ranks RoIs by it). Backward, to x and (sign reversed) to
    y: dy_top · f'(d) / normaliser, not multiplied by w, as in the fork (the gradient for the
    0/1 weights R-FCN gives it). No gradient to w, none from top 1 (its loss_weight must be 0).
    """

    writes_bottom_diffs = True

    min_bottoms = 2
    max_bottoms = 3
    min_tops = 1
    max_tops = 2
    is_loss = True
    no_grad_bottoms = (2,)
    reads_pre_fixed = True

    def setup(self, bottom_shapes):
        first = tuple(bottom_shapes[0])
        legacy = [legacy_dim(first, k) for k in range(4)]
        for i, s in enumerate(bottom_shapes[1:], 1):      # the fork compares N, C, H, W
            if [legacy_dim(s, k) for k in range(4)] != legacy or math.prod(s) != math.prod(first):
                raise self.error(f"bottom {i} {tuple(s)} must have the shape of bottom 0 {first}")
        n, c = legacy[0], legacy[1]
        self.inner = legacy_dim(first, 2) * legacy_dim(first, 3)
        self.view = (n, c, self.inner)
        check_unweighted_extra_tops(self)
        self.norm = Normalizer(self.xp, self.dtype, normalization_of(self), n, self.inner,
                               loss_param_of(self).pre_fixed_normalizer)
        return [()] + [(n, 1, legacy_dim(first, 2), legacy_dim(first, 3))] * (len(self.lp.top) - 1)

    def forward(self, bottom, top):
        xp = self.xp
        d = bottom[0].data.reshape(self.view) - bottom[1].data.reshape(self.view)
        if len(bottom) == 3:
            d = d * bottom[2].data.reshape(self.view)
        self.d = d
        a = xp.abs(d)
        err = xp.where(a < 1, 0.5 * d * d, a - 0.5)
        top[0].data[...] = err.sum() / self.norm()
        if len(top) > 1:
            top[1].data[...] = err.sum(axis=1).reshape(top[1].shape)

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        g = xp.clip(self.d, -1, 1) * (top[0].diff / self.norm())   # f'(d) = d or sign(d)
        for i, sign in ((0, 1), (1, -1)):
            if propagate_down[i]:
                bottom[i].diff[...] = (sign * g).reshape(bottom[i].shape)


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
        axis = checked_axis(self, self.p.axis, len(shape), "accuracy_param.axis")
        if self.p.top_k > math.prod(shape) // max(math.prod(bottom_shapes[1]), 1):
            raise self.spec_error("top_k must be less than or equal to the number of classes",
                                  field="accuracy_param.top_k")
        self.view = label_view(self, bottom_shapes, axis)
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
        check_indices(self, label, channels, "the labels (but ignore_label)", integral=False)
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


@register("SegAccuracy")
class SegAccuracy(Layer):
    """DeepLab v2's ``SegAccuracyLayer`` (deeplab-public-ver2, as carried by hszhao/PSPNet):
    segmentation measures from a confusion matrix M (C × C, M[true, predicted] pixel counts).

    Bottoms: scores (N, C, H, W), labels (N, 1, H, W). The prediction is the class of the
    highest score (ties: the highest index, as the fork's sort on (score, class) pairs gives);
    pixels whose label is one of ``ignore_label`` are not counted; any other label outside
    [0, C) is an error. M starts at zero at every forward (``reset``, the default) or
    accumulates over forwards. Top (1, 1, 1, 3): [Σ diag M / Σ M (pixel accuracy, 0 when
    nothing is counted); the mean over classes present in the labels of M[c, c] / Σ_j M[c, j]
    (mean recall); the mean over all C classes of M[c, c] / (row_c + col_c − M[c, c]) (mean
    IoU, a class absent from labels and predictions counting 1)]. Forward only.
    """

    param_block = "seg_accuracy_param"
    exact_bottoms = 2
    exact_tops = 1
    has_backward = False
    no_grad_bottoms = (1,)

    def setup(self, bottom_shapes):
        n, c, h, w = self.nchw(bottom_shapes[0])
        if tuple(bottom_shapes[1]) != (n, 1, h, w):
            raise self.error(f"the labels must be (N, 1, H, W) = {(n, 1, h, w)} for scores "
                             f"{tuple(bottom_shapes[0])}, got {tuple(bottom_shapes[1])}")
        self.confusion = self.xp.zeros((c, c), dtype=self.xp.int64)
        return [(1, 1, 1, 3)]

    def forward(self, bottom, top):
        xp = self.xp
        c = bottom[0].data.shape[1]
        scores = bottom[0].data
        predicted = (c - 1) - xp.argmax(scores[:, ::-1], axis=1)
        label = bottom[1].data[:, 0].astype(xp.int64)
        counted = xp.ones(label.shape, dtype=bool)
        for v in self.p.ignore_label:
            counted &= label != v
        check_indices(self, xp.where(counted, label, 0), c, "the labels (but ignore_label)",
                      integral=False)
        pairs = label[counted] * c + predicted[counted]
        if self.p.reset:
            self.confusion[...] = 0
        self.confusion += xp.bincount(pairs, minlength=c * c).reshape(c, c)
        m = self.confusion.astype(xp.float64)
        diag, rows, cols = xp.diagonal(m), m.sum(axis=1), m.sum(axis=0)
        total = m.sum()
        accuracy = xp.where(total > 0, diag.sum() / xp.maximum(total, 1), 0.0)
        present = rows > 0
        recall = xp.where(present.any(), (diag / xp.maximum(rows, 1))[present].sum()
                          / xp.maximum(present.sum(), 1), 0.0)
        union = rows + cols - diag
        iou = xp.where(union == diag, 1.0, diag / xp.maximum(union, 1)).mean()
        top[0].data[...] = xp.stack([accuracy, recall, iou]).astype(self.dtype).reshape(1, 1, 1, 3)


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

    writes_bottom_diffs = True

    exact_bottoms = 2
    exact_tops = 1
    is_loss = True
    no_grad_bottoms = (1,)

    def setup(self, bottom_shapes):
        check_same_num(self, bottom_shapes)
        a, b = bottom_shapes
        if math.prod(a) != math.prod(b):
            raise self.error(f"inputs must have the same count: {tuple(a)} and {tuple(b)}")
        lossp = loss_param_of(self)
        mode = normalization_of(self, "BATCH_SIZE")
        self.ignore_label = lossp.ignore_label
        self.norm = Normalizer(self.xp, self.dtype, mode, a[0], math.prod(a[1:]))
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
        dx = sigmoid(self.xp, x) - bottom[1].data.reshape(x.shape)
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

    writes_bottom_diffs = True

    param_block = "hinge_loss_param"
    exact_bottoms = 2
    exact_tops = 1
    is_loss = True
    no_grad_bottoms = (1,)

    def setup(self, bottom_shapes):
        check_same_num(self, bottom_shapes)
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

    writes_bottom_diffs = True

    param_block = "infogain_loss_param"
    min_bottoms = 2
    max_bottoms = 3
    min_tops = 1
    max_tops = 2
    is_loss = True
    no_grad_bottoms = (1, 2)

    def setup(self, bottom_shapes):
        check_same_num(self, bottom_shapes)
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
        lossp = loss_param_of(self)
        if lossp.normalize is not None:
            raise self.spec_error("normalize is deprecated for InfogainLoss; use normalization",
                                  field="loss_param.normalize")
        self.ignore_label = lossp.ignore_label
        self.norm = Normalizer(self.xp, self.dtype, normalization_of(self), outer, inner)
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

        path = self.resolve_path(src)
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

    writes_bottom_diffs = True

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
        self.margin = proto_float(self.p.margin)
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

    writes_bottom_diffs = True

    exact_bottoms = 2
    exact_tops = 1
    is_loss = True
    no_grad_bottoms = (1,)

    def setup(self, bottom_shapes):
        check_same_num(self, bottom_shapes)
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
