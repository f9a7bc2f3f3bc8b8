"""Detection layers of SSD's fork (weiliu89/caffe): PriorBox, DetectionOutput and
DetectionEvaluate.

All are forward only, as in SSD. Their work is small and branchy (a greedy NMS per class), so
it runs on the host in NumPy, in float32 with SSD's order of operations, and the result is
copied to the backend's array. Boxes are normalised to the image: [xmin, ymin, xmax, ymax].
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import to_numpy
from ..data.ssd_augment import box_area
from .base import Layer, legacy_dim
from .registry import register

F32 = np.float32


@register("PriorBox")
class PriorBox(Layer):
    """SSD's ``PriorBoxLayer``: the priors (default boxes) of one feature map.

    Bottoms: the feature map (H × W are read from axes 2, 3) and the image (its size, unless
    ``img_size`` or ``img_h``/``img_w`` give it). Top (1, 2, H·W·num_priors·4): channel 0 the
    boxes, channel 1 each box's four variances. At each cell (h, w), centre
    ((w + offset)·step_w, (h + offset)·step_h) in pixels, and for each ``min_size`` s in turn: a
    square of side s; with ``max_size`` m, a square of side √(s·m); then for each aspect ratio
    r ≠ 1 (the list starts with 1, duplicates within 1e-6 dropped, 1/r added after r when
    ``flip``), a box s·√r wide and s/√r high. Coordinates are divided by the image's width and
    height; ``clip`` clamps them to [0, 1]. ``variance``: none (0.1 for all four), one value,
    or four. The top depends only on shapes: it is computed at setup.
    """

    param_block = "prior_box_param"
    exact_bottoms = 2
    exact_tops = 1
    has_backward = False

    def _check_params(self):
        p = self.p
        if not p.min_size:
            raise self.spec_error("needs at least one min_size", field="prior_box_param.min_size")
        for s in p.min_size:
            if s <= 0:
                raise self.spec_error(f"min_size must be positive, got {s:g}",
                                      field="prior_box_param.min_size")
        if p.max_size:
            if len(p.max_size) != len(p.min_size):
                raise self.spec_error(f"{len(p.max_size)} max_size for {len(p.min_size)} "
                                      "min_size: give one per min_size or none",
                                      field="prior_box_param.max_size")
            for s, m in zip(p.min_size, p.max_size):
                if m <= s:
                    raise self.spec_error(f"max_size {m:g} must be greater than min_size {s:g}",
                                          field="prior_box_param.max_size")
        ratios = [1.0]
        for r in p.aspect_ratio:
            r = float(F32(r))
            if r <= 0:
                raise self.spec_error(f"aspect_ratio must be positive, got {r:g}",
                                      field="prior_box_param.aspect_ratio")
            if any(abs(r - q) < 1e-6 for q in ratios):
                continue
            ratios.append(r)
            if p.flip:
                ratios.append(float(F32(1.0) / F32(r)))
        self.ratios = ratios
        if len(p.variance) not in (0, 1, 4):
            raise self.spec_error(f"variance: give none, one or four values, not "
                                  f"{len(p.variance)}", field="prior_box_param.variance")
        for v in p.variance:
            if v <= 0:
                raise self.spec_error(f"variance must be positive, got {v:g}",
                                      field="prior_box_param.variance")
        self.variance = list(p.variance) if p.variance else [0.1]
        if p.img_size is not None and (p.img_h is not None or p.img_w is not None):
            raise self.spec_error("give img_size or img_h/img_w, not both",
                                  field="prior_box_param.img_size")
        if p.step is not None and (p.step_h is not None or p.step_w is not None):
            raise self.spec_error("give step or step_h/step_w, not both",
                                  field="prior_box_param.step")
        if (p.step_h is None) != (p.step_w is None):
            raise self.spec_error("give both step_h and step_w", field="prior_box_param.step_h")
        if (p.img_h is None) != (p.img_w is None):
            raise self.spec_error("give both img_h and img_w", field="prior_box_param.img_h")
        for name in ("step", "step_h", "step_w"):
            v = getattr(p, name)
            if v is not None and v <= 0:
                raise self.spec_error(f"{name} must be positive, got {v:g}",
                                      field=f"prior_box_param.{name}")
        for name in ("img_size", "img_h", "img_w"):
            v = getattr(p, name)
            if v is not None and v <= 0:
                raise self.spec_error(f"{name} must be positive", field=f"prior_box_param.{name}")

    @property
    def num_priors(self) -> int:
        return len(self.ratios) * len(self.p.min_size) + len(self.p.max_size)

    def setup(self, bottom_shapes):
        self._check_params()
        p = self.p
        fshape, ishape = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        layer_h, layer_w = legacy_dim(fshape, 2), legacy_dim(fshape, 3)
        if p.img_size is not None:
            img_h = img_w = p.img_size
        elif p.img_h is not None:
            img_h, img_w = p.img_h, p.img_w
        else:
            img_h, img_w = legacy_dim(ishape, 2), legacy_dim(ishape, 3)
        if p.step is not None:
            step_h = step_w = F32(p.step)
        elif p.step_h is not None:
            step_h, step_w = F32(p.step_h), F32(p.step_w)
        else:
            step_h, step_w = F32(img_h) / F32(layer_h), F32(img_w) / F32(layer_w)
        top = (1, 2, layer_h * layer_w * self.num_priors * 4)
        self.check_count(top, "its top")
        # box sizes (width, height) in SSD's order, float32 as SSD computes them
        sizes: list[tuple[np.float32, np.float32]] = []
        for k, s in enumerate(p.min_size):
            s = F32(s)
            sizes.append((s, s))
            if p.max_size:
                side = np.sqrt(s * F32(p.max_size[k]), dtype=F32)
                sizes.append((side, side))
            for r in self.ratios:
                if abs(r - 1.0) < 1e-6:
                    continue
                root = np.sqrt(F32(r), dtype=F32)
                sizes.append((s * root, s / root))
        wh = np.array(sizes, dtype=F32)                                    # (num_priors, 2)
        offset = F32(p.offset)
        cx = ((np.arange(layer_w, dtype=F32) + offset) * step_w).astype(np.float64)
        cy = ((np.arange(layer_h, dtype=F32) + offset) * step_h).astype(np.float64)
        half_w = wh[:, 0].astype(np.float64) / 2.0
        half_h = wh[:, 1].astype(np.float64) / 2.0
        boxes = np.empty((layer_h, layer_w, len(sizes), 4), dtype=np.float64)
        boxes[..., 0] = (cx[None, :, None] - half_w) / img_w
        boxes[..., 1] = (cy[:, None, None] - half_h) / img_h
        boxes[..., 2] = (cx[None, :, None] + half_w) / img_w
        boxes[..., 3] = (cy[:, None, None] + half_h) / img_h
        boxes = boxes.astype(F32)
        if p.clip:
            boxes = np.clip(boxes, F32(0), F32(1))
        out = np.empty(top, dtype=F32)
        out[0, 0] = boxes.reshape(-1)
        out[0, 1] = np.tile(np.asarray(self.variance, dtype=F32), out.shape[2] // len(self.variance))
        self.priors = self.backend.asarray(out.astype(self.dtype))
        return [top]

    def forward(self, bottom, top):
        top[0].data[...] = self.priors


def decode_boxes(loc: np.ndarray, prior: np.ndarray, var: np.ndarray, code_type: str,
                 variance_in_target: bool) -> np.ndarray:
    """Boxes from the offsets ``loc`` (..., 4) relative to the priors (P, 4) with their
    variances (P, 4), in float32 as SSD's ``DecodeBBox``."""
    with np.errstate(over="ignore", invalid="ignore"):   # as in C++: inf and NaN go on
        return _decode(loc.astype(F32), prior.astype(F32), var.astype(F32), code_type,
                       variance_in_target)


def _decode(loc, prior, var, code_type, variance_in_target):
    if variance_in_target:
        var = np.ones_like(var)
    out = np.empty(np.broadcast_shapes(loc.shape, prior.shape), dtype=F32)
    if code_type == "CORNER":
        out[...] = prior + var * loc
        return out
    pw = prior[..., 2] - prior[..., 0]
    ph = prior[..., 3] - prior[..., 1]
    if code_type == "CORNER_SIZE":
        out[..., 0] = prior[..., 0] + var[..., 0] * loc[..., 0] * pw
        out[..., 1] = prior[..., 1] + var[..., 1] * loc[..., 1] * ph
        out[..., 2] = prior[..., 2] + var[..., 2] * loc[..., 2] * pw
        out[..., 3] = prior[..., 3] + var[..., 3] * loc[..., 3] * ph
        return out
    # CENTER_SIZE
    pcx = (prior[..., 0] + prior[..., 2]) / F32(2)
    pcy = (prior[..., 1] + prior[..., 3]) / F32(2)
    cx = var[..., 0] * loc[..., 0] * pw + pcx
    cy = var[..., 1] * loc[..., 1] * ph + pcy
    w = np.exp(var[..., 2] * loc[..., 2]) * pw
    h = np.exp(var[..., 3] * loc[..., 3]) * ph
    out[..., 0] = cx - w / F32(2)
    out[..., 1] = cy - h / F32(2)
    out[..., 2] = cx + w / F32(2)
    out[..., 3] = cy + h / F32(2)
    return out


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Jaccard overlap of every box of ``a`` (n, 4) with every box of ``b`` (m, 4), float32,
    as SSD's JaccardOverlap: 0 for disjoint boxes (touching edges are not disjoint)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _iou(a[:, None, :], b[None, :, :])


def _iou(a, b):
    disjoint = ((b[..., 0] > a[..., 2]) | (b[..., 2] < a[..., 0])
                | (b[..., 1] > a[..., 3]) | (b[..., 3] < a[..., 1]))
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = (iw * ih).astype(F32)
    iou = inter / (box_area(a) + box_area(b) - inter)
    return np.where(disjoint, F32(0), iou).astype(F32)


def nms(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, nms_threshold: float,
        eta: float = 1.0, top_k: int = -1) -> list[int]:
    """SSD's ApplyNMSFast: the indices of the boxes kept, best score first.

    Candidates score above ``score_threshold``, sorted by descending score (ties: lower index
    first), at most ``top_k`` (-1: all). A candidate is kept when its overlap with every box
    kept so far is at most the threshold; after each kept box the threshold is multiplied by
    ``eta`` while it is above 0.5."""
    scores = scores.astype(F32)
    cand = np.flatnonzero(scores > F32(score_threshold))
    cand = cand[np.argsort(-scores[cand], kind="stable")]
    if -1 < top_k < len(cand):
        cand = cand[:top_k]
    if len(cand) == 0:
        return []
    overlap = iou_matrix(boxes[cand].astype(F32), boxes[cand].astype(F32))
    threshold, eta = F32(nms_threshold), F32(eta)
    kept = np.empty(len(cand), dtype=np.intp)
    n = 0
    for j in range(len(cand)):
        if (overlap[j, kept[:n]] <= threshold).all():   # NaN overlap: not kept, as in C++
            kept[n] = j
            n += 1
            if eta < 1 and threshold > 0.5:
                threshold = F32(threshold * eta)
    return [int(i) for i in cand[kept[:n]]]


@register("DetectionOutput")
class DetectionOutput(Layer):
    """SSD's ``DetectionOutputLayer``: decode, NMS per class, the best ``keep_top_k`` per image.

    Bottoms: ``loc`` (N, P·L·4; L = 1 when ``share_location``, else num_classes), ``conf``
    (N, P·C, probabilities), ``prior`` (1, 2, P·4: PriorBox's boxes and variances). Per image
    and class c ≠ ``background_label_id``: boxes decoded by ``code_type`` (CORNER,
    CENTER_SIZE, CORNER_SIZE; variances applied unless ``variance_encoded_in_target``), the
    scores above ``confidence_threshold``, the best ``nms_param.top_k`` of them, greedy NMS
    (``nms_threshold``, adaptive ``eta``); then, when ``keep_top_k`` > -1 and more survive,
    the ``keep_top_k`` best over all classes. Top (1, 1, K, 7): rows [image, label, score,
    xmin, ymin, xmax, ymax] ordered by image, then label, then descending score (SSD's order),
    boxes not clipped. When no image has a detection, SSD's placeholder: one row per image,
    [image, -1, -1, -1, -1, -1, -1]. The top's number of rows changes at every forward (at
    setup: 1). ``save_output_param``, ``visualize`` and ``save_file`` are accepted and
    ignored: netspec writes no files and draws nothing.
    """

    param_block = "detection_output_param"
    exact_bottoms = 3
    exact_tops = 1
    has_backward = False

    def setup(self, bottom_shapes):
        p = self.p
        if p.num_classes is None or p.num_classes < 1:
            raise self.spec_error("needs num_classes (at least 1)",
                                  field="detection_output_param.num_classes")
        nms = p.nms_param
        self.nms_threshold = nms.nms_threshold if nms else 0.3
        self.top_k = nms.top_k if nms and nms.top_k is not None else -1
        self.eta = nms.eta if nms else 1.0
        if self.nms_threshold < 0:
            raise self.spec_error("nms_threshold must be non-negative",
                                  field="detection_output_param.nms_param.nms_threshold")
        if not 0 < self.eta <= 1:
            raise self.spec_error(f"eta must be in (0, 1], got {self.eta:g}",
                                  field="detection_output_param.nms_param.eta")
        self.threshold = (p.confidence_threshold if p.confidence_threshold is not None
                          else -float(np.finfo(F32).max))
        C = p.num_classes
        self.loc_classes = 1 if p.share_location else C
        loc, conf, prior = (tuple(s) for s in bottom_shapes)
        if len(prior) < 3 or prior[-2] != 2 or prior[-1] % 4:
            raise self.error(f"prior must have shape (1, 2, P·4) as PriorBox gives, got {prior}")
        self.P = prior[-1] // 4
        if loc[0] != conf[0]:
            raise self.error(f"loc and conf have {loc[0]} and {conf[0]} images")
        if math.prod(loc[1:]) != self.P * self.loc_classes * 4:
            raise self.error(f"loc {loc} must hold {self.P} priors × {self.loc_classes} × 4 "
                             "values per image")
        if math.prod(conf[1:]) != self.P * C:
            raise self.error(f"conf {conf} must hold {self.P} priors × {C} classes per image")
        return [(1, 1, 1, 7)]

    def detect(self, loc: np.ndarray, conf: np.ndarray, prior: np.ndarray) -> np.ndarray:
        """The (K, 7) detections of host arrays ``loc``, ``conf``, ``prior``."""
        p, P, C, L = self.p, self.P, self.p.num_classes, self.loc_classes
        N = loc.shape[0]
        loc = loc.reshape(N, P, L, 4)
        conf = conf.reshape(N, P, C).astype(F32)
        prior = prior.reshape(2, P, 4)
        rows: list[list[float]] = []
        for i in range(N):
            boxes = decode_boxes(loc[i], prior[0][:, None, :], prior[1][:, None, :],
                                 p.code_type, p.variance_encoded_in_target)   # (P, L, 4)
            kept: dict[int, list[int]] = {}
            for c in range(C):
                if c == p.background_label_id:
                    continue
                b = boxes[:, 0 if p.share_location else c]
                kept[c] = nms(b, conf[i, :, c], self.threshold, self.nms_threshold, self.eta,
                              self.top_k)
            total = sum(len(v) for v in kept.values())
            if -1 < p.keep_top_k < total:
                pairs = [(c, j) for c in kept for j in kept[c]]
                scores = np.array([conf[i, j, c] for c, j in pairs], dtype=F32)
                best = np.argsort(-scores, kind="stable")[:p.keep_top_k]
                kept = {c: [] for c in kept}
                for k in best:
                    c, j = pairs[k]
                    kept[c].append(j)
            for c in sorted(kept):
                b = boxes[:, 0 if p.share_location else c]
                for j in kept[c]:
                    rows.append([i, c, conf[i, j, c], *b[j]])
        if not rows:
            return np.array([[i, -1, -1, -1, -1, -1, -1] for i in range(N)], dtype=F32)
        return np.array(rows, dtype=F32)

    def forward(self, bottom, top):
        out = self.detect(to_numpy(bottom[0].data), to_numpy(bottom[1].data), to_numpy(bottom[2].data))
        top[0].data = self.backend.asarray(out.reshape(1, 1, -1, 7).astype(self.dtype))


def _clip(b: np.ndarray, height=F32(1), width=F32(1)) -> np.ndarray:
    """SSD's ClipBBox: coordinates clamped to [0, width] × [0, height]."""
    out = b.copy()
    out[:, 0::2] = np.clip(b[:, 0::2], F32(0), F32(width))
    out[:, 1::2] = np.clip(b[:, 1::2], F32(0), F32(height))
    return out


def _scale(b: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """SSD's ScaleBBox: normalised boxes times the size, with their size (pixel areas unless
    the size is 1 × 1)."""
    out = (b * np.array([width, height, width, height], dtype=F32)).astype(F32)
    return out, box_area(out, normalized=not (width > 1 or height > 1))


def output_boxes(b: np.ndarray, height: int, width: int, resize) -> tuple[np.ndarray, np.ndarray]:
    """SSD's OutputBBox: normalised boxes (n, 4) of the resized image mapped to pixels of the
    original ``height`` × ``width`` image, with their sizes. ``resize``: the
    ``resize_param`` the image was resized with, or None (clip, then scale)."""
    if resize is None or resize.resize_mode == "WARP" or (
            resize.resize_mode == "FIT_SMALL_SIZE" and not (resize.height_scale
                                                            and resize.width_scale)):
        return _scale(_clip(b), height, width)
    if resize.resize_mode == "FIT_SMALL_SIZE":
        out, _ = _scale(b, resize.height_scale, resize.width_scale)
        out = _clip(out, F32(height), F32(width))
        return out, box_area(out, normalized=True)      # SSD's ClipBBox: w·h, no +1
    # FIT_LARGE_SIZE_AND_PAD: the image sits in the resized one with padding on two sides
    rh, rw = F32(resize.height), F32(resize.width)
    aspect, resize_aspect = F32(width) / F32(height), rw / rh
    if aspect > resize_aspect:
        pad = (rh - rw / aspect) / F32(2)
        src = np.array([0, pad / rh, 1, F32(1) - pad / rh], dtype=F32)
    else:
        pad = (rw - rh * aspect) / F32(2)
        src = np.array([pad / rw, 0, F32(1) - pad / rw, 1], dtype=F32)
    sw, sh = src[2] - src[0], src[3] - src[1]
    proj = ((b - src[[0, 1, 0, 1]]) / np.array([sw, sh, sw, sh], dtype=F32)).astype(F32)
    proj = _clip(proj)
    outside = ((b[:, 0] >= src[2]) | (b[:, 2] <= src[0]) | (b[:, 1] >= src[3])
               | (b[:, 3] <= src[1]))
    # SSD's ProjectBBox leaves a box outside the image (or projected empty) as it was
    keep = outside | (box_area(proj) <= 0)
    proj = np.where(keep[:, None], b, proj)
    return _scale(_clip(proj), height, width)


def ssd_overlap(a: np.ndarray, sa: np.ndarray, b: np.ndarray, sb: np.ndarray,
                normalized: bool) -> np.ndarray:
    """SSD's JaccardOverlap of each box of ``a`` (n, 4) with each of ``b`` (m, 4), given their
    sizes ``sa``, ``sb``; float32. Pixel boxes (``normalized`` false) count the end pixels
    (+1), and two disjoint pixel boxes overlap by one pixel, as in SSD."""
    a, b = a[:, None, :], b[None, :, :]
    disjoint = ((b[..., 0] > a[..., 2]) | (b[..., 2] < a[..., 0])
                | (b[..., 1] > a[..., 3]) | (b[..., 3] < a[..., 1]))
    lo = np.where(disjoint[..., None], F32(0), np.maximum(a[..., :2], b[..., :2]))
    hi = np.where(disjoint[..., None], F32(0), np.minimum(a[..., 2:], b[..., 2:]))
    extent = (hi - lo).astype(F32) + (F32(0) if normalized else F32(1))
    inter = (extent[..., 0] * extent[..., 1]).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (sa[:, None] + sb[None, :] - inter)
    return np.where((extent[..., 0] > 0) & (extent[..., 1] > 0), iou, F32(0)).astype(F32)


@register("DetectionEvaluate")
class DetectionEvaluate(Layer):
    """SSD's ``DetectionEvaluateLayer``: each detection a true or a false positive.

    Bottoms: detections (1, 1, K, 7) rows [image, label, score, xmin, ymin, xmax, ymax] as
    DetectionOutput gives them, ground truth (1, 1, G, 8) rows [image, label, instance, xmin,
    ymin, xmax, ymax, difficult] (read up to the first row of image −1). Top (1, 1, C′ + K′, 5),
    C′ the classes other than ``background_label_id``, K′ the detection rows whose label is not
    −1: first per class c the row [−1, c, number of ground-truth boxes of c (without difficult
    ones unless ``evaluate_difficult_gt``), −1, −1]; then per image (ascending) and label
    (ascending) the detections [image, label, score, tp, fp]. Where the image has boxes of
    that label, the detections are taken by descending score and each is a true positive when
    its best-overlapping box of the label (SSD's Jaccard overlap) overlaps at least
    ``overlap_threshold`` and no earlier detection took it, [.., 0, 0] when that box is
    difficult and difficult boxes are not evaluated, else a false positive; elsewhere every
    detection is a false positive. With ``name_size_file`` the boxes are first mapped to pixels
    of the original images (``resize_param``), the n-th image with detections taking the n-th
    size of the file, cycling as SSD does. The solver's detection test phase turns the rows
    into average precisions (``netspec/solvers/detection_test.py``). Forward only, on the host.
    """

    param_block = "detection_evaluate_param"
    exact_bottoms = 2
    exact_tops = 1
    has_backward = False

    def setup(self, bottom_shapes):
        p = self.p
        f = "detection_evaluate_param."
        if p.num_classes is None or p.num_classes < 1:
            raise self.spec_error("needs num_classes (at least 1)", field=f + "num_classes")
        if p.background_label_id >= p.num_classes:
            raise self.spec_error(f"background_label_id {p.background_label_id} must be below "
                                  f"num_classes {p.num_classes}", field=f + "background_label_id")
        if not (math.isfinite(p.overlap_threshold) and p.overlap_threshold > 0):
            raise self.spec_error(f"overlap_threshold must be > 0, got {p.overlap_threshold:g}",
                                  field=f + "overlap_threshold")
        rp = p.resize_param
        if rp is not None and rp.resize_mode == "FIT_LARGE_SIZE_AND_PAD" and not (
                rp.height and rp.width):
            raise self.spec_error("resize_mode FIT_LARGE_SIZE_AND_PAD needs height and width",
                                  field=f + "resize_param")
        self.sizes = self._read_sizes() if p.name_size_file else []
        #: the next line of ``sizes`` (SSD's count_): advances per image with detections
        self.count = 0
        det, gt = (tuple(s) for s in bottom_shapes)
        for name, shape, width in (("detections", det, 7), ("ground truth", gt, 8)):
            if len(shape) != 4 or shape[:2] != (1, 1) or shape[3] != width:
                raise self.error(f"{name} must have shape (1, 1, rows, {width}), got {shape}")
        return [(1, 1, p.num_classes - 1, 5)]

    def _read_sizes(self) -> list[tuple[int, int]]:
        path = self.resolve_path(self.p.name_size_file)
        field = "detection_evaluate_param.name_size_file"
        try:
            words = path.read_text().split()
        except OSError as e:
            raise self.spec_error(f"cannot read the name size file {path}: {e.strerror}",
                                  field=field) from None
        sizes = []
        for k in range(0, len(words) - len(words) % 3, 3):
            try:
                sizes.append((int(words[k + 1]), int(words[k + 2])))
            except ValueError:
                break                         # SSD's `infile >> name >> height >> width` stops
        if not sizes:
            raise self.spec_error(f"the name size file {path} has no 'name height width' line",
                                  field=field)
        return sizes

    def evaluate(self, det: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """The (rows, 5) top of host arrays ``det`` (K, 7) and ``gt`` (G, 8)."""
        p, bg = self.p, self.p.background_label_id
        det, gt = det.reshape(-1, 7).astype(F32), gt.reshape(-1, 8).astype(F32)
        classes = [c for c in range(p.num_classes) if c != bg]
        # the top's rows: the class rows and every detection row whose label is not -1, also
        # those of image -1, which stay zero (SSD's Reshape counts them, its Forward skips them)
        num_rows = len(classes) + int(np.count_nonzero(det[:, 1].astype(np.int64) != -1))
        ends = np.flatnonzero(gt[:, 0].astype(np.int64) == -1)
        gt = gt[:ends[0]] if len(ends) else gt
        gt_item, gt_label = gt[:, 0].astype(np.int64), gt[:, 1].astype(np.int64)
        difficult = gt[:, 7] != 0
        det = det[det[:, 0].astype(np.int64) != -1]
        det_item, det_label = det[:, 0].astype(np.int64), det[:, 1].astype(np.int64)
        for what, labels in (("a ground-truth", gt_label), ("a detection", det_label)):
            if (labels == bg).any():
                raise self.error(f"{what} row has the background label {bg} (SSD: 'Found "
                                 "background label')")
        counted = np.ones(len(gt), bool) if p.evaluate_difficult_gt else ~difficult
        num_pos = {c: int(np.count_nonzero(counted & (gt_label == c))) for c in classes}
        rows = [[-1, c, num_pos[c], -1, -1] for c in classes]
        normalized = not self.sizes
        gt_size = box_area(gt[:, 3:7])
        det_size = box_area(det[:, 3:7])
        for item in np.unique(det_item):
            on_item = det_item == item
            for label in np.unique(det_label[on_item]):
                if label == -1:
                    continue
                pick = np.flatnonzero(on_item & (det_label == label))
                mine = np.flatnonzero((gt_item == item) & (gt_label == label))
                if len(mine) == 0:
                    rows += [[item, label, det[j, 2], 0, 1] for j in pick]
                    continue
                pick = pick[np.argsort(-det[pick, 2], kind="stable")]
                boxes, sizes = det[pick, 3:7], det_size[pick]
                gboxes, gsizes = gt[mine, 3:7], gt_size[mine]
                if not normalized:
                    if self.count >= len(self.sizes):
                        raise self.error(f"image {self.count} of the name size file is past its "
                                         f"{len(self.sizes)} lines")
                    h, w = self.sizes[self.count]
                    boxes, sizes = output_boxes(boxes, h, w, p.resize_param)
                    gboxes, gsizes = output_boxes(gboxes, h, w, p.resize_param)
                overlap = ssd_overlap(boxes, sizes, gboxes, gsizes, normalized)
                best = np.argmax(overlap, axis=1)
                best_overlap = overlap[np.arange(len(pick)), best]
                taken = np.zeros(len(mine), bool)
                for k, j in enumerate(pick):
                    tp_fp = [0, 1]
                    if best_overlap[k] >= F32(p.overlap_threshold):
                        if p.evaluate_difficult_gt or not difficult[mine[best[k]]]:
                            tp_fp = [0, 1] if taken[best[k]] else [1, 0]
                            taken[best[k]] = True
                        else:
                            tp_fp = [0, 0]            # matched a difficult box: not counted
                    rows.append([item, label, det[j, 2], *tp_fp])
            if self.sizes:
                self.count = (self.count + 1) % len(self.sizes)
        out = np.zeros((num_rows, 5), dtype=F32)
        out[:len(rows)] = np.asarray(rows, dtype=F32).reshape(-1, 5)
        return out

    def forward(self, bottom, top):
        out = self.evaluate(to_numpy(bottom[0].data), to_numpy(bottom[1].data))
        top[0].data = self.backend.asarray(out.reshape(1, 1, -1, 5).astype(self.dtype))
