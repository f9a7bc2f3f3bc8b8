"""Detection layers of SSD's fork (weiliu89/caffe): PriorBox and DetectionOutput.

Both are forward only, as in SSD. Their work is small and branchy (a greedy NMS per class), so
it runs on the host in NumPy, in float32 with SSD's order of operations, and the result is
copied to the backend's array. Boxes are normalised to the image: [xmin, ymin, xmax, ymax].
"""

from __future__ import annotations

import math

import numpy as np

from .base import Layer, legacy_dim
from .registry import register

F32 = np.float32


def _host(a) -> np.ndarray:
    """``a`` as a NumPy array (a CuPy array is copied to the host)."""
    return np.asarray(a.get() if hasattr(a, "get") else a)


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


def box_area(b: np.ndarray) -> np.ndarray:
    """Width × height of normalised boxes (..., 4); 0 for an inverted box (SSD's BBoxSize)."""
    w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    return np.where((w < 0) | (h < 0), F32(0), w * h).astype(F32)


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
        out = self.detect(_host(bottom[0].data), _host(bottom[1].data), _host(bottom[2].data))
        top[0].data = self.backend.asarray(out.reshape(1, 1, -1, 7).astype(self.dtype))
