"""The YOLO detection outputs of the MobileNet-YOLO fork (eric612/MobileNet-YOLO):
``YoloDetectionOutput`` (YOLOv2's region layer) and ``Yolov3DetectionOutput``.

Both decode every anchor of every cell, keep the scores above a threshold, sort them and run a
greedy NMS over all classes at once (the fork's ``ApplyNms``); forward only. The work is small
and branchy, so it runs on the host in float32 and the rows are copied to the backend. Rows
are SSD's [image, label, score, xmin, ymin, xmax, ymax], label = class + 1, boxes in [0, 1]
units of the image and not clipped.
"""

from __future__ import annotations

import numpy as np

from .base import Layer
from .detection import _host
from .registry import register

F32 = np.float32


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^−x), in float64 as the fork's ``1. / (1. + exp(-x))``, returned as float32."""
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(F32)


def center_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The fork's ``box_iou`` of a box a (4,) with boxes b (K, 4), both [x, y, w, h] (centre
    and size), in float32: intersection 0 unless both overlaps are ≥ 0."""
    a, b = a.astype(F32), b.astype(F32)
    half = F32(2)
    left = np.maximum(a[0] - a[2] / half, b[:, 0] - b[:, 2] / half)
    right = np.minimum(a[0] + a[2] / half, b[:, 0] + b[:, 2] / half)
    top = np.maximum(a[1] - a[3] / half, b[:, 1] - b[:, 3] / half)
    bottom = np.minimum(a[1] + a[3] / half, b[:, 1] + b[:, 3] / half)
    w, h = right - left, bottom - top
    inter = np.where((w < 0) | (h < 0), F32(0), w * h)
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (a[2] * a[3] + b[:, 2] * b[:, 3] - inter)


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
        image = np.concatenate([c[0] for c in cand]) if cand else np.zeros(0, np.intp)
        label = np.concatenate([c[1] for c in cand]) if cand else np.zeros(0, np.intp)
        score = np.concatenate([c[2] for c in cand]) if cand else np.zeros(0, F32)
        box = np.concatenate([c[3] for c in cand]) if cand else np.zeros((0, 4), F32)
        out = []
        for i in range(N):
            at = np.flatnonzero(image == i)
            at = at[np.argsort(-score[at], kind="stable")]
            keep = at[yolo_nms(box[at], self.p.nms_threshold)] if len(at) else at
            b = box[keep].astype(np.float64)
            rows = np.empty((len(keep), 7), dtype=F32)
            rows[:, 0] = i
            rows[:, 1] = label[keep] + 1
            rows[:, 2] = score[keep]
            rows[:, 3] = b[:, 0] - b[:, 2] / 2
            rows[:, 4] = b[:, 1] - b[:, 3] / 2
            rows[:, 5] = b[:, 0] + b[:, 2] / 2
            rows[:, 6] = b[:, 1] + b[:, 3] / 2
            out.append(rows)
        rows = np.concatenate(out) if out else np.zeros((0, 7), F32)
        if len(rows) == 0:
            rows = np.full((N, 7), -1, dtype=F32)
            rows[:, 0] = np.arange(N)
        return rows

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
        rows = self.detect([_host(b.data) for b in bottom])
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
            cols = np.arange(S, dtype=F32)[None, None, :, None]
            rows = np.arange(S, dtype=F32)[None, :, None, None]
            box = np.empty((N, S, S, B, 4), dtype=F32)
            with np.errstate(over="ignore"):
                box[..., 0] = (cols + _sigmoid(v[..., 0])) / F32(S)
                box[..., 1] = (rows + _sigmoid(v[..., 1])) / F32(S)
                box[..., 2] = np.exp(v[..., 2]) * bias[0:2 * B:2] / F32(S)
                box[..., 3] = np.exp(v[..., 3]) * bias[1:2 * B:2] / F32(S)
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
            cols = np.arange(W, dtype=F32)[None, None, :, None]
            rows = np.arange(H, dtype=F32)[None, :, None, None]
            tx, ty, tw, th = v[..., 0], v[..., 1], v[..., 2], v[..., 3]
            obj = _sigmoid(v[..., 4])
            box = np.empty((N, H, W, B, 4), dtype=F32)
            with np.errstate(over="ignore"):
                box[..., 0] = (cols + _sigmoid(tx)) / F32(W)
                box[..., 1] = (rows + _sigmoid(ty)) / F32(H)
                box[..., 2] = np.exp(tw) * anchor[:, 0] / net_w
                box[..., 3] = np.exp(th) * anchor[:, 1] / net_h
            score = _sigmoid(v[..., 5:]) * obj[..., None]     # (N, H, W, B, C)
            n, j, i, b, c = np.nonzero(score > F32(p.confidence_threshold))
            cand.append((n, c, score[n, j, i, b, c], box[n, j, i, b]))
        return self.rows(cand, maps[0].shape[0])
