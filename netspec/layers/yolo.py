"""The YOLO layers of the MobileNet-YOLO fork (eric612/MobileNet-YOLO): the detection outputs
``YoloDetectionOutput`` (YOLOv2's region layer) and ``Yolov3DetectionOutput``, and the
training losses ``Yolov3`` (YOLOv3's) and ``RegionLoss`` (YOLOv2's).

The outputs decode every anchor of every cell, keep the scores above a threshold, sort them
and run a greedy NMS over all classes at once (the fork's ``ApplyNms``); forward only. Rows are
SSD's [image, label, score, xmin, ymin, xmax, ymax], label = class + 1, boxes in [0, 1] units
of the image and not clipped. The losses assign the ground truths to cells and anchors. All
are small and branchy, so they run on the host and the results are copied to the backend.
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import to_numpy
from ..errors import DataError
from .base import Layer
from .multibox import logistic_loss_rows
from .neuron import sigmoid
from .registry import register

F32 = np.float32


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^−x), in float64 as the fork's ``1. / (1. + exp(-x))``, returned as float32."""
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(F32)


def center_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The fork's ``box_iou`` of boxes a (..., 4) and b (..., 4), broadcast against each other,
    both [x, y, w, h] (centre and size), rounded where the fork's locals are ``float``: the
    edges (computed in the boxes' type), the intersection (0 unless both overlaps are ≥ 0), the
    union and the IoU (float32)."""
    dt = np.result_type(a, b)
    half = dt.type(2)

    def edge(x, w, sign):
        return (x + sign * (w / half)).astype(F32)

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        left = np.maximum(edge(a[..., 0], a[..., 2], -1), edge(b[..., 0], b[..., 2], -1))
        right = np.minimum(edge(a[..., 0], a[..., 2], 1), edge(b[..., 0], b[..., 2], 1))
        top = np.maximum(edge(a[..., 1], a[..., 3], -1), edge(b[..., 1], b[..., 3], -1))
        bottom = np.minimum(edge(a[..., 1], a[..., 3], 1), edge(b[..., 1], b[..., 3], 1))
        w, h = right - left, bottom - top
        inter = np.where((w < 0) | (h < 0), F32(0), w * h)
        union = (a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter.astype(dt)).astype(F32)
        return (inter.astype(dt) / union.astype(dt)).astype(F32)


def cell_boxes(v: np.ndarray, anchor: np.ndarray, net_w, net_h) -> np.ndarray:
    """The boxes (N, H, W, B, 4) [x, y, w, h] that raw values v (N, H, W, B, ≥ 4) [t_x, t_y,
    t_w, t_h, …] of anchors (B, 2) [w, h] give, float32: x = (i + σ(t_x))/W,
    y = (j + σ(t_y))/H, w = e^t_w·anchor_w/net_w, h = e^t_h·anchor_h/net_h."""
    N, H, W, B = v.shape[:4]
    cols = np.arange(W, dtype=F32)[None, None, :, None]
    rows = np.arange(H, dtype=F32)[None, :, None, None]
    box = np.empty((N, H, W, B, 4), dtype=F32)
    with np.errstate(over="ignore"):
        box[..., 0] = (cols + _sigmoid(v[..., 0])) / F32(W)
        box[..., 1] = (rows + _sigmoid(v[..., 1])) / F32(H)
        box[..., 2] = np.exp(v[..., 2]) * anchor[:, 0] / net_w
        box[..., 3] = np.exp(v[..., 3]) * anchor[:, 1] / net_h
    return box


def yolo_nms(boxes: np.ndarray, threshold: float) -> np.ndarray:
    """The fork's ``ApplyNms`` over boxes (K, 4) [x, y, w, h] already sorted best first: the
    indices kept. Each box still kept removes every later box whose overlap with it is
    ≥ ``threshold``, whatever the classes."""
    K = len(boxes)
    alive = np.ones(K, dtype=bool)
    kept = []
    i = 0
    thr = F32(threshold)
    while i < K:
        kept.append(i)
        alive[i + 1:] &= ~(center_iou(boxes[i], boxes[i + 1:]) >= thr)
        later = np.flatnonzero(alive[i + 1:])
        if len(later) == 0:
            break
        i += 1 + int(later[0])
    return np.asarray(kept, dtype=np.intp)


def predicted_boxes(s: np.ndarray, v: np.ndarray, anchor: np.ndarray, unit) -> np.ndarray:
    """A loss's predicted boxes (N, A, H, W, 4) [x, y, w, h] from sigmoids s and raw values v
    (N, A, ≥ 4, H, W) of anchors (A, 2) [w, h], in v's dtype: x = (i + s_x)/W,
    y = (j + s_y)/H, w = e^t_w·anchor_w/unit, h = e^t_h·anchor_h/unit."""
    H, W = v.shape[-2:]
    dt = v.dtype
    cols = np.arange(W, dtype=dt)[None, None, None, :]
    rows = np.arange(H, dtype=dt)[None, None, :, None]
    with np.errstate(over="ignore"):
        return np.stack([(cols + s[:, :, 0]) / dt.type(W), (rows + s[:, :, 1]) / dt.type(H),
                         np.exp(v[:, :, 2]) * anchor[:, 0, None, None] / unit,
                         np.exp(v[:, :, 3]) * anchor[:, 1, None, None] / unit], -1)


def best_truth_iou(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Each predicted box's (N, …, 4) best ``center_iou`` with the ground truths of its image
    (N, T, 5) [class, x, y, w, h] listed before the first row of x = 0 (the fork's first
    loop); 0 without any, NaN counted as 0. Float32, shape (N, …)."""
    N = len(pred)
    listed = np.cumprod(truth[:, :, 1] != 0, axis=1).astype(bool)          # (N, T)
    T = int(listed.sum(axis=1).max(initial=0))
    if not T:
        return np.zeros(pred.shape[:-1], dtype=F32)
    extra = (1,) * (pred.ndim - 2)
    iou = center_iou(pred[..., None, :], truth[:, :T, 1:5].reshape(N, *extra, T, 4))
    iou = np.where(listed[:, :T].reshape(N, *extra, T), np.nan_to_num(iou), F32(0))
    return iou.max(axis=-1)


def ground_truths(layer: Layer, truth: np.ndarray, num_class: int):
    """The ground truths the fork assigns (N, T, 5): the rows before each image's first of
    w = 0, in the fork's order (by image, then row). Returns their images (E,), rows (E, 5)
    and classes (E,) (the class value truncated, as the fork's ``int``); a class outside
    0 … num_class − 1 is a DataError."""
    assigned = np.cumprod(truth[:, :, 3] != 0, axis=1).astype(bool)
    b, t = np.nonzero(assigned)
    g = truth[b, t]
    cls = g[:, 0].astype(np.int64)
    if len(cls) and (cls.min() < 0 or cls.max() >= num_class):
        bad = int(cls[(cls < 0) | (cls >= num_class)][0])
        raise layer.error(f"a ground truth of class {bad}, outside 0 … {num_class - 1} "
                          f"(num_class {num_class})", cls=DataError)
    return b, g, cls


def check_loss_bottoms(layer: Layer, bottom_shapes, channels: int, square: bool = False):
    """A YOLO loss's bottoms: the map (N, ``channels``, H, W) (H = W where ``square``) and
    labels holding, per image, rows of 5 values."""
    x, label = (tuple(s) for s in bottom_shapes)
    if len(x) != 4 or x[1] != channels or (square and x[2] != x[3]):
        raise layer.error(f"bottom 0 {x} must be (N, num·(5 + num_class) = {channels}, "
                          + ("S, S): a square map, as the fork reads it" if square else "H, W)"))
    if not label or label[0] != x[0] or math.prod(label[1:]) % 5 or not math.prod(label[1:]):
        raise layer.error(f"labels {label} must hold, for each of the {x[0]} images, rows of 5 "
                          "values [class, x, y, w, h]")


class _YoloOutput(Layer):
    """What both layers share: thresholded candidates in, rows out (``rows``)."""

    min_bottoms = 1
    exact_tops = 1
    has_backward = False

    def rows(self, cand: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
             N: int) -> np.ndarray:
        """The (K, 7) rows of candidates (image, class, score, box [x, y, w, h]), each group
        in the fork's push order: per image, sorted by descending score (ties: push order),
        then the NMS. No detection at all: one row [image, -1 …] per image."""
        image, label, score, box = (np.concatenate(part) for part in zip(*cand))
        keep = []
        for i in range(N):                      # the NMS is greedy, image by image
            at = np.flatnonzero(image == i)
            at = at[np.argsort(-score[at], kind="stable")]
            keep.append(at[yolo_nms(box[at], self.p.nms_threshold)])
        keep = np.concatenate(keep)
        if len(keep) == 0:
            rows = np.full((N, 7), -1, dtype=F32)
            rows[:, 0] = np.arange(N)
            return rows
        b = box[keep].astype(np.float64)
        half = b[:, 2:] / 2
        return np.column_stack([image[keep], label[keep] + 1, score[keep],
                                b[:, :2] - half, b[:, :2] + half]).astype(F32)

    def check_biases(self, needed: int):
        if len(self.p.biases) < 2 * needed:
            raise self.spec_error(f"needs {2 * needed} biases (a width and a height for each of "
                                  f"{needed} anchors), got {len(self.p.biases)}",
                                  field=f"{self.param_block}.biases")

    def check_maps(self, bottom_shapes, square: bool) -> None:
        """Each bottom is (N, num_box·(5 + num_classes), H, W) with bottom 0's N (and, where the
        fork reads a map as W × W, H = W)."""
        p = self.p
        channels = p.num_box * (5 + p.num_classes)
        for k, s in enumerate(bottom_shapes):
            s = tuple(s)
            if len(s) != 4 or s[1] != channels or (square and s[2] != s[3]):
                raise self.error(f"bottom {k} {s} must be (N, num_box·(5 + num_classes) = "
                                 f"{channels}, " + ("S, S): a square map, as the fork reads it"
                                                    if square else "H, W)"))
            if s[0] != bottom_shapes[0][0]:
                raise self.error(f"bottom {k} {s} has another number of images than bottom 0")

    def forward(self, bottom, top):
        rows = self.detect([to_numpy(b.data) for b in bottom])
        top[0].data = self.backend.asarray(rows.reshape(1, 1, -1, 7).astype(self.dtype))


@register("YoloDetectionOutput")
class YoloDetectionOutput(_YoloOutput):
    """YOLOv2's region output (the fork's ``YoloDetectionOutputLayer``).

    Bottoms: one or two square maps (N, num_box·(5 + C), S, S); channel n·(5 + C) + k of a
    cell holds anchor n's value k: tx, ty, tw, th, objectness, then C class scores. Box of
    anchor n at cell (i, j): x = (i + σ(tx))/S, y = (j + σ(ty))/S, w = e^tw·biases[2n]/S,
    h = e^th·biases[2n+1]/S; score = σ(objectness) · the largest softmax class probability
    (its class: the first largest), kept when ≥ ``confidence_threshold``. Then, per image,
    by descending score, greedy NMS over all classes (overlap ≥ ``nms_threshold``
    suppresses). Top (1, 1, K, 7).
    """

    param_block = "yolo_detection_output_param"
    max_bottoms = 2

    def setup(self, bottom_shapes):
        p = self.p
        if p.num_classes < 1 or p.num_box < 1:
            raise self.spec_error("needs num_classes and num_box of at least 1",
                                  field=f"{self.param_block}.num_classes")
        self.check_biases(p.num_box)
        self.check_maps(bottom_shapes, square=True)
        return [(1, 1, 1, 7)]

    def detect(self, maps: list[np.ndarray]) -> np.ndarray:
        p = self.p
        B, C = p.num_box, p.num_classes
        bias = np.asarray(p.biases, dtype=F32)
        cand = []
        for x in maps:
            N, _, S, _ = x.shape
            v = x.astype(F32).reshape(N, B, 5 + C, S, S).transpose(0, 3, 4, 1, 2)  # n, j, i, b, k
            box = cell_boxes(v, bias[:2 * B].reshape(B, 2), F32(S), F32(S))
            cls = v[..., 5:]
            e = np.exp(cls - cls.max(axis=-1, keepdims=True))
            prob = e / e.sum(axis=-1, keepdims=True)
            best = prob.argmax(axis=-1)
            score = _sigmoid(v[..., 4]) * np.take_along_axis(prob, best[..., None], -1)[..., 0]
            hit = score >= F32(p.confidence_threshold)
            image = np.broadcast_to(np.arange(N)[:, None, None, None], hit.shape)
            cand.append((image[hit], best[hit], score[hit], box[hit]))
        return self.rows(cand, maps[0].shape[0])


@register("Yolov3DetectionOutput")
class Yolov3DetectionOutput(_YoloOutput):
    """YOLOv3's output over several scales (the fork's ``Yolov3DetectionOutputLayer``).

    Bottoms: ``mask_group_num`` maps (N, num_box·(5 + C), H_t, W_t); anchor n of bottom t is
    anchor ``mask[t·G + n]`` (G = len(mask) / mask_group_num), of size biases[2a], biases[2a+1]
    in pixels of an input of (W_t, H_t)·``anchors_scale[t]``. Per cell (i, j): x = (i +
    σ(tx))/W_t, y = (j + σ(ty))/H_t, w = e^tw·bias_w/(W_t·scale), h = e^th·bias_h/(H_t·scale);
    each class c with σ(class_c)·σ(objectness) > ``confidence_threshold`` is a candidate.
    ``gaussian_box`` is refused (see ``setup``). Then per image, by descending
    score, greedy NMS over all classes. Top (1, 1, K, 7).
    """

    param_block = "yolov3_detection_output_param"

    def setup(self, bottom_shapes):
        p = self.p
        f = self.param_block + "."
        if p.num_classes < 1 or p.num_box < 1:
            raise self.spec_error("needs num_classes and num_box of at least 1",
                                  field=f + "num_classes")
        T = len(bottom_shapes)
        if p.mask_group_num != T:
            raise self.spec_error(f"mask_group_num {p.mask_group_num} must be the number of "
                                  f"bottoms, {T}", field=f + "mask_group_num")
        self.groups = len(p.mask) // T
        if (T - 1) * self.groups + p.num_box > len(p.mask):
            raise self.spec_error(f"mask has {len(p.mask)} anchors: {T} bottoms of {p.num_box} "
                                  f"anchors need {T * p.num_box}", field=f + "mask")
        self.check_biases(max(p.mask) + 1 if p.mask else 1)
        if len(p.anchors_scale) < T:
            raise self.spec_error(f"needs one anchors_scale per bottom ({T}), got "
                                  f"{len(p.anchors_scale)}", field=f + "anchors_scale")
        if p.gaussian_box:
            raise self.spec_error("gaussian_box is not implemented: the fork's Gaussian decoding "
                                  "reads an objectness channel it never computes (and one class "
                                  "score past its buffer), so there is no behaviour to follow",
                                  field=f + "gaussian_box")
        self.per_box = 5 + p.num_classes
        self.check_maps(bottom_shapes, square=False)
        return [(1, 1, 1, 7)]

    def detect(self, maps: list[np.ndarray]) -> np.ndarray:
        p = self.p
        B = p.num_box
        bias = np.asarray(p.biases, dtype=F32).reshape(-1, 2)
        cand = []
        for t, x in enumerate(maps):
            N, _, H, W = x.shape
            v = x.astype(F32).reshape(N, B, self.per_box, H, W).transpose(0, 3, 4, 1, 2)
            anchor = bias[np.asarray(p.mask[t * self.groups: t * self.groups + B])]   # (B, 2)
            net_w, net_h = F32(W * p.anchors_scale[t]), F32(H * p.anchors_scale[t])
            box = cell_boxes(v, anchor, net_w, net_h)
            score = _sigmoid(v[..., 5:]) * _sigmoid(v[..., 4:5])     # (N, H, W, B, C)
            n, j, i, b, c = np.nonzero(score > F32(p.confidence_threshold))
            cand.append((n, c, score[n, j, i, b, c], box[n, j, i, b]))
        return self.rows(cand, maps[0].shape[0])


class _YoloLoss(Layer):
    """What both losses share: forward leaves the gradient over N (``grad``, host, bottom 0's
    shape); backward scales it by the loss weight (top[0].diff)."""

    writes_bottom_diffs = True

    exact_bottoms = 2
    exact_tops = 1
    is_loss = True
    no_grad_bottoms = (1,)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            scale = float(to_numpy(top[0].diff))
            bottom[0].diff[...] = self.xp.asarray((self.grad * scale).astype(self.dtype))


@register("Yolov3")
class Yolov3(_YoloLoss):
    """YOLOv3's training loss at one output scale (the fork's ``Yolov3Layer``, ``iou_loss: MSE``).

    Bottoms: the map x (N, A·(5 + C), H, W), A = ``num``, C = ``num_class``, anchor a's
    channels [t_x, t_y, t_w, t_h, t_o, t_c…]; the labels, T rows of 5 per image (N, …, T, 5):
    [class, x, y, w, h], centre and size in [0, 1] of the image, a row with x = 0 (w = 0 for
    the assignment) ending the list (AnnotatedData's ``yolo_data_type: 1`` gives
    (N, 1, 300, 5)). Top: the scalar loss. Anchor a is anchor m = mask[a] of ``biases``, of
    size (b_w, b_h) in pixels of an input (W·s, H·s), s = ``anchors_scale``; its box at cell
    (i, j) is ((i + σ(t_x))/W, (j + σ(t_y))/H, e^t_w·b_w/(W·s), e^t_h·b_h/(H·s)).

    Targets, assigned as the fork assigns them:
      * objectness o* = 0, weight 0 where the box's best IoU with a ground truth of its image
        exceeds ``thresh``;
      * each ground truth, in label order, goes to its cell (⌊x·W⌋, ⌊y·H⌋) at the anchor (of
        all biases) of best shape IoU if the mask has it, and at every other mask anchor of
        shape IoU > ``iou_thresh``. There: o* = 1; box targets x* = x·W − i, y* = y·H − j,
        w* = log(w·W·s / b_w), h* = log(h·H·s / b_h) of weight λ = coord_scale·(2 − w·h) (the
        last ground truth of a place wins); class targets c* = ε/2 + (1 − ε)·[c is the class
        of a ground truth of that place], ε = ``label_smooth_eps``.

    The loss, summed over places, over N; B(p, t) = −t·log p − (1 − t)·log(1 − p):
      λ·(B(σ_x, x*) + B(σ_y, y*) + ½(t_w − w*)² + ½(t_h − h*)²) + B(σ_o, o*)
      + class_scale·Σ_c B(σ_c, c*); with ``use_logic_gradient``, squared errors of the
      sigmoids instead: λ/2·((σ_x − x*)² + (σ_y − y*)² + (t_w − w*)² + (t_h − h*)²)
      + object_scale/2·(σ_o − 1)² (o* = 1), ½σ_o² (o* = 0), class_scale/2·Σ_c (σ_c − c*)².
    Its gradient is the fork's backward (its deltas over N); the fork logs Σ delta² / N
    instead of this value. ``side`` (read from the bottom) and ``noobject_scale`` are unused,
    as in the fork.
    """

    param_block = "yolov3_param"

    def setup(self, bottom_shapes):
        p = self.p
        f = self.param_block + "."
        if p.iou_loss != "MSE":
            raise self.spec_error(f"iou_loss {p.iou_loss} is not implemented: the fork's IoU "
                                  "deltas are hand-derived steps, not the gradient of the loss "
                                  "it reports; netspec trains with MSE (the fork's default)",
                                  field=f + "iou_loss")
        if p.use_focal_loss:
            raise self.spec_error("use_focal_loss is not implemented: the fork scales its class "
                                  "deltas by a factor of the probability that is not the "
                                  "gradient of a loss; leave it false (the default)",
                                  field=f + "use_focal_loss")
        if p.num < 1 or p.num_class < 1:
            raise self.spec_error("needs num and num_class of at least 1", field=f + "num")
        if len(p.mask) != p.num:
            raise self.spec_error(f"mask must name the num = {p.num} anchors of this scale, got "
                                  f"{len(p.mask)}", field=f + "mask")
        if len(p.biases) % 2 or len(p.biases) < 2 * (max(p.mask) + 1):
            raise self.spec_error(f"needs biases as (w, h) pairs for anchors 0 … {max(p.mask)} "
                                  f"(mask), got {len(p.biases)} values", field=f + "biases")
        if min(p.biases) <= 0:
            raise self.spec_error("anchor sizes (biases) must be positive", field=f + "biases")
        if p.anchors_scale < 1:
            raise self.spec_error("anchors_scale must be at least 1", field=f + "anchors_scale")
        check_loss_bottoms(self, bottom_shapes, p.num * (5 + p.num_class))
        return [()]

    def anchors(self, H: int, W: int, dt) -> np.ndarray:
        """All anchors' (w, h) (B, 2) as fractions of the input (W·s, H·s)."""
        p = self.p
        bias = np.asarray(p.biases, dtype=dt).reshape(-1, 2)
        return bias / np.asarray([W * p.anchors_scale, H * p.anchors_scale], dtype=dt)

    def targets(self, s: np.ndarray, v: np.ndarray, truth: np.ndarray) -> dict:
        """The fork's assignment (see the class doc) for sigmoids s and raw values v
        (N, A, 5 + C, H, W) and ground truths (N, T, 5)."""
        p = self.p
        N, A, _, H, W = v.shape
        dt = v.dtype
        anchor = self.anchors(H, W, dt)
        mask = np.asarray(p.mask, dtype=np.intp)
        # predicted boxes (N, A, H, W, 4) against each image's ground truths: the ignore mask
        pred = predicted_boxes(s, v, anchor[mask], dt.type(1))
        best = best_truth_iou(pred, truth)
        obj_target = np.zeros((N, A, H, W), dtype=dt)
        obj_weight = np.where(best > F32(p.thresh), 0, 1).astype(dt)
        # the ground truths' places, in the fork's order: by image, label row, then anchor
        b, g, cls = ground_truths(self, truth, p.num_class)
        i = np.clip((g[:, 1] * dt.type(W)).astype(np.int64), 0, W - 1)
        j = np.clip((g[:, 2] * dt.type(H)).astype(np.int64), 0, H - 1)
        inter = np.minimum(g[:, 3:4], anchor[:, 0]) * np.minimum(g[:, 4:5], anchor[:, 1])
        shape_iou = inter / (g[:, 3:4] * g[:, 4:5] + anchor[:, 0] * anchor[:, 1] - inter)
        best_n = shape_iou.argmax(axis=1)
        fits = shape_iou[np.arange(len(g)), best_n] > 0
        slot_of = np.full(len(anchor), -1, dtype=np.intp)
        slot_of[mask[::-1]] = np.arange(A)[::-1]                   # the first slot naming it
        chosen = np.zeros(shape_iou.shape, dtype=bool)
        chosen[np.arange(len(g)), best_n] = fits
        if p.iou_thresh < 1:
            chosen |= shape_iou > dt.type(p.iou_thresh)
        chosen &= slot_of[None, :] >= 0
        e, n = np.nonzero(chosen)                                  # events, in the fork's order
        a = slot_of[n]
        place = ((b[e] * A + a) * H + j[e]) * W + i[e]
        _, last_rev = np.unique(place[::-1], return_index=True)
        last = len(place) - 1 - last_rev                           # the last event of a place
        pe, pb, pa, pj, pi = e[last], b[e][last], a[last], j[e][last], i[e][last]
        gl = g[pe]
        positive = np.zeros((N, A, H, W), dtype=bool)
        positive[pb, pa, pj, pi] = True
        box = np.zeros((N, A, 4, H, W), dtype=dt)
        box[pb, pa, 0, pj, pi] = gl[:, 1] * dt.type(W) - pi
        box[pb, pa, 1, pj, pi] = gl[:, 2] * dt.type(H) - pj
        box[pb, pa, 2, pj, pi] = np.log(gl[:, 3] / anchor[mask[pa], 0])
        box[pb, pa, 3, pj, pi] = np.log(gl[:, 4] / anchor[mask[pa], 1])
        weight = np.zeros((N, A, H, W), dtype=dt)
        weight[pb, pa, pj, pi] = p.coord_scale * (2 - gl[:, 3] * gl[:, 4])
        hot = np.zeros((N, A, p.num_class, H, W), dtype=bool)
        hot[b[e], a, cls[e], j[e], i[e]] = True
        eps = dt.type(p.label_smooth_eps)
        cls_target = hot * (1 - eps) + eps / 2
        obj_target[positive] = 1
        obj_weight[positive] = p.object_scale if p.use_logic_gradient else 1
        return dict(positive=positive, box=box, weight=weight, obj_target=obj_target,
                    obj_weight=obj_weight, cls_target=cls_target.astype(dt))

    def forward(self, bottom, top):
        p = self.p
        x = to_numpy(bottom[0].data)
        N, _, H, W = x.shape
        dt = x.dtype
        v = x.reshape(N, p.num, 5 + p.num_class, H, W)
        s = sigmoid(np, v)
        truth = to_numpy(bottom[1].data).reshape(N, -1, 5).astype(dt)
        q = self.targets(s, v, truth)
        pos = q["positive"].astype(dt)
        lam = q["weight"] * pos
        grad = np.zeros_like(v)
        loss = 0.0

        def cross_entropy(k, target, w):
            nonlocal loss
            e, d = logistic_loss_rows(v[:, :, k].reshape(-1, 1), target.reshape(-1, 1))
            loss += float((w.reshape(-1) * e).sum())
            grad[:, :, k] = w * d.reshape(w.shape)

        def squared(k, value, target, w, slope=None):
            nonlocal loss
            d = value - target
            loss += float((w * d * d).sum()) / 2
            grad[:, :, k] = w * d * (1 if slope is None else slope)

        for k in (2, 3):
            squared(k, v[:, :, k], q["box"][:, :, k], lam)
        C = slice(5, 5 + p.num_class)
        cls_weight = (p.class_scale * pos)[:, :, None]
        if p.use_logic_gradient:
            slope = s * (1 - s)
            for k in (0, 1):
                squared(k, s[:, :, k], q["box"][:, :, k], lam, slope[:, :, k])
            squared(4, s[:, :, 4], q["obj_target"], q["obj_weight"], slope[:, :, 4])
            squared(C, s[:, :, C], q["cls_target"], cls_weight, slope[:, :, C])
        else:
            for k in (0, 1):
                cross_entropy(k, q["box"][:, :, k], lam)
            cross_entropy(4, q["obj_target"], q["obj_weight"])
            cross_entropy(C, q["cls_target"], np.broadcast_to(cls_weight, v[:, :, C].shape))
        self.grad = (grad / dt.type(N)).reshape(x.shape)
        top[0].data[...] = loss / N


@register("RegionLoss")
class RegionLoss(_YoloLoss):
    """YOLOv2's training loss (the fork's ``RegionLossLayer``).

    Bottoms: a square map x (N, A·(5 + C), S, S), A = ``num``, C = ``num_class``, anchor a's
    channels [t_x, t_y, t_w, t_h, t_o, z_1 … z_C]; the labels, rows of 5 per image (N, …, T, 5)
    [class, x, y, w, h] as for ``Yolov3``. Top: the scalar loss. Anchor a has size
    (b_w, b_h) = biases[2a], biases[2a+1] in cells; its box at cell (i, j) is
    ((i + σ(t_x))/S, (j + σ(t_y))/S, e^t_w·b_w/S, e^t_h·b_h/S); p = softmax(z).

    Targets, assigned as the fork assigns them:
      * objectness: weight ``noobject_scale`` towards 0, or 0 where the box's best IoU with a
        ground truth of its image exceeds ``thresh``;
      * each ground truth, in label order, goes to its cell (⌊x·S⌋, ⌊y·S⌋) at the anchor of
        best IoU of sizes centred together: the anchor's size (``bias_match``) or the size
        that cell predicts (not); the last ground truth of a place wins. There: x* = x·S − i,
        y* = y·S − j, w* = log(w·S / b_w), h* = log(h·S / b_h) of weight λ = coord_scale
        (``rescore``) or coord_scale·(2 − w·h); objectness o* of weight ``object_scale``: the
        IoU of the predicted box with the ground truth, held constant (``rescore``), or 1;
        the class of the ground truth with weight ``class_scale``.

    The loss, summed over places, over N:
      λ/2·((σ_x − x*)² + (σ_y − y*)² + (t_w − w*)² + (t_h − h*)²) + object_scale/2·(σ_o − o*)²
      − class_scale·log p_class at the ground truths' places, noobject_scale/2·σ_o² at the
      others not ignored. Its gradient is the fork's backward (its deltas over N; with
      ``rescore``, o* does not vary); the fork logs Σ delta² / N instead of this value.
    Unused, as in the fork: ``side`` (read from the bottom), ``softmax`` (the classes are
    always a softmax), ``jitter``, ``absolute``, ``random``, ``softmax_tree``, ``class_map``.
    """

    param_block = "region_loss_param"

    def setup(self, bottom_shapes):
        p = self.p
        f = self.param_block + "."
        if p.num < 1 or p.num_class < 1:
            raise self.spec_error("needs num and num_class of at least 1", field=f + "num")
        if p.coords != 4:
            raise self.spec_error(f"coords {p.coords} is not implemented: the fork reads the "
                                  "objectness at channel 4 and the classes from channel 5 of "
                                  "each anchor whatever coords is; leave it 4", field=f + "coords")
        if len(p.biases) < max(10, 2 * p.num):
            raise self.spec_error(f"needs biases as (w, h) pairs in cells for the num = {p.num} "
                                  f"anchors, and at least 10 values (the fork replaces fewer "
                                  f"than 10 with zeros: anchors of size 0), got {len(p.biases)}",
                                  field=f + "biases")
        if min(p.biases[:2 * p.num]) <= 0:
            raise self.spec_error("anchor sizes (biases) must be positive", field=f + "biases")
        check_loss_bottoms(self, bottom_shapes, p.num * (5 + p.num_class), square=True)
        return [()]

    def targets(self, s: np.ndarray, v: np.ndarray, truth: np.ndarray) -> dict:
        """The fork's assignment (see the class doc) for sigmoids s and raw values v
        (N, A, 5 + C, S, S) and ground truths (N, T, 5)."""
        p = self.p
        N, A, _, S, _ = v.shape
        dt = v.dtype
        side = dt.type(S)
        bias = np.asarray(p.biases[:2 * A], dtype=dt).reshape(A, 2)
        pred = predicted_boxes(s, v, bias, side)
        obj_weight = np.where(best_truth_iou(pred, truth) > F32(p.thresh), 0,
                              p.noobject_scale).astype(dt)
        b, g, cls = ground_truths(self, truth, p.num_class)
        # the anchor of each ground truth: best IoU of sizes at one centre (none > 0: dropped)
        i = np.clip((g[:, 1] * side).astype(np.int64), 0, S - 1)
        j = np.clip((g[:, 2] * side).astype(np.int64), 0, S - 1)
        if p.bias_match:
            size = np.broadcast_to(bias / side, (len(g), A, 2))
        else:
            size = pred[b, :, j, i, 2:4]
        zero = np.zeros(size.shape[:-1] + (2,), dtype=dt)
        shape_iou = center_iou(np.concatenate([zero, size], -1),
                               np.concatenate([zero, g[:, None, 3:5] + zero], -1))
        shape_iou = np.where(shape_iou > 0, shape_iou, F32(0))
        n = shape_iou.argmax(axis=1)
        fits = shape_iou[np.arange(len(g)), n] > 0
        b, g, cls, i, j, n = b[fits], g[fits], cls[fits], i[fits], j[fits], n[fits]
        place = ((b * A + n) * S + j) * S + i
        _, last_rev = np.unique(place[::-1], return_index=True)
        last = len(place) - 1 - last_rev                           # the last ground truth of a place
        b, g, cls, i, j, n = b[last], g[last], cls[last], i[last], j[last], n[last]
        positive = np.zeros((N, A, S, S), dtype=bool)
        positive[b, n, j, i] = True
        box = np.zeros((N, A, 4, S, S), dtype=dt)
        box[b, n, 0, j, i] = g[:, 1] * side - i
        box[b, n, 1, j, i] = g[:, 2] * side - j
        box[b, n, 2, j, i] = np.log(g[:, 3] * side / bias[n, 0])
        box[b, n, 3, j, i] = np.log(g[:, 4] * side / bias[n, 1])
        weight = np.zeros((N, A, S, S), dtype=dt)
        weight[b, n, j, i] = p.coord_scale * (1 if p.rescore else 2 - g[:, 3] * g[:, 4])
        obj_target = np.zeros((N, A, S, S), dtype=dt)
        obj_target[b, n, j, i] = (center_iou(pred[b, n, j, i], g[:, 1:5]) if p.rescore else 1)
        obj_weight[b, n, j, i] = p.object_scale
        label = np.zeros((N, A, S, S), dtype=np.int64)
        label[b, n, j, i] = cls
        return dict(positive=positive, box=box, weight=weight, obj_target=obj_target,
                    obj_weight=obj_weight, label=label)

    def forward(self, bottom, top):
        p = self.p
        x = to_numpy(bottom[0].data)
        N, _, S, _ = x.shape
        dt = x.dtype
        v = x.reshape(N, p.num, 5 + p.num_class, S, S)
        s = sigmoid(np, v[:, :, :5])
        truth = to_numpy(bottom[1].data).reshape(N, -1, 5).astype(dt)
        q = self.targets(s, v, truth)
        lam = q["weight"][:, :, None]
        grad = np.zeros_like(v)
        slope = s * (1 - s)
        d = s[:, :, 0:2] - q["box"][:, :, 0:2]
        grad[:, :, 0:2] = lam * d * slope[:, :, 0:2]
        loss = float((lam * d * d).sum()) / 2
        d = v[:, :, 2:4] - q["box"][:, :, 2:4]
        grad[:, :, 2:4] = lam * d
        loss += float((lam * d * d).sum()) / 2
        d = s[:, :, 4] - q["obj_target"]
        grad[:, :, 4] = q["obj_weight"] * d * slope[:, :, 4]
        loss += float((q["obj_weight"] * d * d).sum()) / 2
        # softmax cross-entropy of the classes at the ground truths' places
        z = v[:, :, 5:]
        z = z - z.max(axis=2, keepdims=True)
        e = np.exp(z)
        total = e.sum(axis=2, keepdims=True)
        pos = q["positive"]
        scale = dt.type(p.class_scale)
        picked = np.take_along_axis(z, q["label"][:, :, None], 2)[:, :, 0]
        loss += float(scale * (np.log(total[:, :, 0]) - picked)[pos].sum())
        hot = np.zeros(z.shape, dtype=bool)
        np.put_along_axis(hot, q["label"][:, :, None], True, 2)
        grad[:, :, 5:] = scale * pos[:, :, None] * (e / total - hot)
        self.grad = (grad / dt.type(N)).reshape(x.shape)
        top[0].data[...] = loss / N
