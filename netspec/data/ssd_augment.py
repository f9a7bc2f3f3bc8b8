"""SSD's random transform of annotated images (weiliu89/caffe ``ssd`` branch), vectorised over
a batch: photometric distortion (``DistortImage``), expansion onto a mean-filled canvas
(``ExpandImage``), the batch-sampled crop (``GenerateBatchSamples`` + ``CropImage``), the WARP
resize, and the boxes carried through each step (``TransformAnnotation``).

Boxes are float32 [xmin, ymin, xmax, ymax] normalised to their image, computed with SSD's
float32 operations in SSD's order (``bbox_util.cpp``), so the box arithmetic is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .colorspace import bgr_to_hsv, hsv_to_bgr
from . import interpolation
from .image_list import linear_taps

F32 = np.float32
UNIT = np.array([0, 0, 1, 1], F32)


# -- SSD's box geometry (bbox_util.cpp) -------------------------------------------------------

def box_area(b: np.ndarray, normalized: bool = True) -> np.ndarray:
    """SSD's BBoxSize of boxes (..., 4), float32: w·h of normalised boxes, (w + 1)·(h + 1) of
    pixel boxes (``normalized`` false); 0 for an inverted box."""
    w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    area = w * h if normalized else (w + F32(1)) * (h + F32(1))
    return np.where((w < 0) | (h < 0), F32(0), area).astype(F32)


def intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IntersectBBox (broadcast over the leading axes): [0, 0, 0, 0] when apart."""
    apart = ((b[..., 0] > a[..., 2]) | (b[..., 2] < a[..., 0]) | (b[..., 1] > a[..., 3])
             | (b[..., 3] < a[..., 1]))
    inter = np.stack(np.broadcast_arrays(np.maximum(a[..., 0], b[..., 0]),
                                         np.maximum(a[..., 1], b[..., 1]),
                                         np.minimum(a[..., 2], b[..., 2]),
                                         np.minimum(a[..., 3], b[..., 3])), -1)
    return np.where(apart[..., None], F32(0), inter)


def jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """JaccardOverlap: |a ∩ b| / (|a| + |b| − |a ∩ b|), 0 unless the intersection has width
    and height > 0."""
    i = intersection(a, b)
    iw, ih = i[..., 2] - i[..., 0], i[..., 3] - i[..., 1]
    inter = iw * ih
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((iw > 0) & (ih > 0), inter / (box_area(a) + box_area(b) - inter), F32(0))


def coverage(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """BBoxCoverage: |a ∩ b| / |a| (0 when the intersection is empty)."""
    inter = box_area(intersection(a, b))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / box_area(a), F32(0))


def project_boxes(boxes: np.ndarray, crop: np.ndarray, emit=None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """TransformAnnotation of ``boxes`` (M, 4) onto ``crop`` (M, 4 or 4; each box's crop,
    normalised to its image): the emit constraint (``emit``: an EmitConstraint or None; CENTER:
    the box's centre inside the crop; MIN_OVERLAP: the crop covers more than ``emit_overlap`` of
    the box), then ProjectBBox: boxes apart from the crop dropped, the others in the crop's
    coordinates clipped to [0, 1], empty ones dropped. Returns (kept (M,) bool, boxes (M, 4))."""
    b, c = boxes.astype(F32), np.broadcast_to(np.asarray(crop, F32), boxes.shape)
    keep = ~((b[:, 0] >= c[:, 2]) | (b[:, 2] <= c[:, 0]) | (b[:, 1] >= c[:, 3])
             | (b[:, 3] <= c[:, 1]))
    if emit is not None and emit.emit_type == "CENTER":
        cx, cy = (b[:, 0] + b[:, 2]) / F32(2), (b[:, 1] + b[:, 3]) / F32(2)
        keep &= (cx >= c[:, 0]) & (cx <= c[:, 2]) & (cy >= c[:, 1]) & (cy <= c[:, 3])
    elif emit is not None:
        keep &= coverage(b, c) > F32(emit.emit_overlap or 0)
    wh = np.stack([c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]] * 2, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.clip((b - c[:, [0, 1, 0, 1]]) / wh, F32(0), F32(1))
    keep &= box_area(p) > 0
    return keep, p


# -- batch_sampler (sampler.cpp) ---------------------------------------------------------------

def within_groups(counts: np.ndarray) -> np.ndarray:
    """For rows grouped in order, ``counts`` (n,) rows per group: each row's index within its
    group, (Σ counts,)."""
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def padded_boxes(boxes: np.ndarray, item: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (M, 4) of items ``item`` (M,) sorted, as (n, G, 4) per item and a (n, G) mask."""
    counts = np.bincount(item, minlength=n)
    g = max(int(counts.max(initial=0)), 1)
    within = within_groups(counts)
    out = np.zeros((n, g, 4), F32)
    valid = np.zeros((n, g), bool)
    out[item, within], valid[item, within] = boxes, True
    return out, valid


def satisfies(crops: np.ndarray, objects: np.ndarray, valid: np.ndarray, constraint
              ) -> np.ndarray:
    """SatisfySampleConstraint of crops (n, T, 4) against each item's objects (n, G, 4).

    SSD tests each object in turn and accepts the crop once one object passes the first kind
    of bound that is set, in the order jaccard overlap, sample coverage, object coverage (the
    later kinds only decide when the earlier are unset). No bound set: every crop passes."""
    if constraint is None:
        return np.ones(crops.shape[:2], bool)
    a, b = crops[:, :, None, :], objects[:, None, :, :]
    for lo, hi, metric in (("min_jaccard_overlap", "max_jaccard_overlap", jaccard),
                           ("min_sample_coverage", "max_sample_coverage", coverage),
                           ("min_object_coverage", "max_object_coverage",
                            lambda s, o: coverage(o, s))):
        lo, hi = getattr(constraint, lo), getattr(constraint, hi)
        if lo is None and hi is None:
            continue
        m = metric(a, b)
        ok = np.broadcast_to(valid[:, None, :], m.shape).copy()
        if lo is not None:
            ok &= ~(m < F32(lo))
        if hi is not None:
            ok &= ~(m > F32(hi))
        return ok.any(-1)
    return np.ones(crops.shape[:2], bool)


def sample_crop_boxes(rng: np.random.Generator, sampler, n: int, trials: int) -> np.ndarray:
    """SampleBBox ``trials`` times for n items: (n, trials, 4) crops. scale ~ U(min, max),
    aspect ratio ~ U(min, max) clamped to [scale², 1/scale²], width = scale·√ar, height =
    scale/√ar, the top-left corner uniform over the positions inside the image."""
    lo, hi, alo, ahi = ((1.0, 1.0, 1.0, 1.0) if sampler is None else
                        (sampler.min_scale, sampler.max_scale, sampler.min_aspect_ratio,
                         sampler.max_aspect_ratio))
    u = rng.random((4, n, trials))
    scale = (lo + u[0] * (hi - lo)).astype(F32)
    ar = (alo + u[1] * (ahi - alo)).astype(F32)
    ar = np.minimum(np.maximum(ar, scale * scale), F32(1) / (scale * scale))
    w, h = scale * np.sqrt(ar), scale / np.sqrt(ar)
    x0 = (u[2] * (F32(1) - w)).astype(F32)
    y0 = (u[3] * (F32(1) - h)).astype(F32)
    return np.stack([x0, y0, x0 + w, y0 + h], -1)


def jitter_crops(rng: np.random.Generator, jitter: float, n: int, keep_aspect: bool = False
                 ) -> np.ndarray:
    """The MobileNet-YOLO fork's ``GenerateJitterSamples`` for n items: (n, 4) crops. With
    probability 0.2 the whole image; else a crop of width and height each ~ U(1 − j, 1)
    (j = ``jitter``, halved with probability 0.2 of all; ``keep_aspect``, the fork's choice
    under FIT_LARGE_SIZE_AND_PAD: height = width), its corner uniform over the positions
    inside the image."""
    u = rng.random((6, n))
    j = np.where(u[0] < 0.4, jitter / 2, jitter)          # die: 0.2 whole, 0.2 half, 0.6 full
    w = (1 - j + u[1] * j).astype(F32)
    h = w if keep_aspect else (1 - j + u[2] * j).astype(F32)
    x0 = (u[3] * (F32(1) - w)).astype(F32)
    y0 = (u[4] * (F32(1) - h)).astype(F32)
    crops = np.stack([x0, y0, x0 + w, y0 + h], -1)
    return np.where((u[0] < 0.2)[:, None], UNIT, crops).astype(F32)


def generate_batch_samples(rng, samplers, objects, valid) -> tuple[np.ndarray, np.ndarray]:
    """GenerateBatchSamples for n items: every sampler's crops (its ``max_trials`` tries, the
    ones meeting its constraint, at most ``max_sample``), concatenated: (n, K, 4) crops and
    (n, K) which are found. Samplers with ``use_original_image: false`` give none (as SSD)."""
    n = objects.shape[0]
    crops, found = [np.zeros((n, 0, 4), F32)], [np.zeros((n, 0), bool)]
    for s in samplers:
        if not s.use_original_image or s.max_trials == 0:
            continue
        c = sample_crop_boxes(rng, s.sampler, n, s.max_trials)
        ok = satisfies(c, objects, valid, s.sample_constraint)
        if s.max_sample is not None:
            ok &= np.cumsum(ok, axis=1) <= s.max_sample
        crops.append(c)
        found.append(ok)
    return np.concatenate(crops, 1), np.concatenate(found, 1)


def pick_samples(rng, crops: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One of each item's found crops, uniformly (SSD: ``rand() % count``): (n, 4) crops and
    (n,) whether the item had one (else its crop is the whole image)."""
    count = found.sum(1)
    r = np.minimum((rng.random(len(count)) * count).astype(np.int64), np.maximum(count - 1, 0))
    hit = found & (np.cumsum(found, 1) == (r + 1)[:, None])
    k = hit.argmax(1)
    chosen = np.where((count > 0)[:, None], crops[np.arange(len(count)), k], UNIT)
    return chosen.astype(F32), count > 0


def draw_modes(rng, modes: np.ndarray, n: int) -> np.ndarray:
    """One of ``modes`` (the resize policy's ``interp_mode``) per item for n items, uniformly
    (SSD: ``rand() % count``)."""
    modes = np.asarray(modes)
    return modes[np.minimum((rng.random(n) * len(modes)).astype(np.int64), len(modes) - 1)]


def crop_rect(crop: np.ndarray, height: np.ndarray, width: np.ndarray) -> np.ndarray:
    """CropImage's pixel rectangle (n, 4) [y, x, h, w] of normalised crops (n, 4) on images of
    height × width (n,): the clipped crop scaled to pixels, offsets and sizes truncated (a
    crop SSD would leave empty keeps one pixel)."""
    c = np.clip(crop, F32(0), F32(1))
    sx0, sx1 = c[:, 0] * width.astype(F32), c[:, 2] * width.astype(F32)
    sy0, sy1 = c[:, 1] * height.astype(F32), c[:, 3] * height.astype(F32)
    x, y = np.minimum(sx0.astype(np.int64), width - 1), np.minimum(sy0.astype(np.int64), height - 1)
    w = np.clip((sx1 - sx0).astype(np.int64), 1, width - x)
    h = np.clip((sy1 - sy0).astype(np.int64), 1, height - y)
    return np.stack([y, x, h, w], 1)


# -- expand_param (data_transformer.cpp ExpandImage) ------------------------------------------

@dataclass
class Expansion:
    """Per item: whether it is expanded, its canvas size (n, 2) [H', W'], the image's offset
    in it (n, 2) [h_off, w_off] and the image's box in the canvas's coordinates (n, 4)
    (ExpandImage's ``expand_bbox``: [−w_off/w, −h_off/h, (W' − w_off)/w, (H' − h_off)/h])."""

    expanded: np.ndarray
    canvas: np.ndarray
    offset: np.ndarray
    bbox: np.ndarray


def draw_expansion(rng, param, sizes: np.ndarray) -> Expansion:
    """ExpandImage's draws for images of ``sizes`` (n, 2) [h, w]: with probability ``prob``
    (and max_expand_ratio not within 0.01 of 1) a ratio ~ U(1, max_expand_ratio), the canvas
    int(h·ratio) × int(w·ratio), the offsets floor(U(0, H' − h)), floor(U(0, W' − w))."""
    n = len(sizes)
    u = rng.random((4, n))
    on = u[0] <= F32(param.prob)
    if abs(param.max_expand_ratio - 1.0) < 1e-2:
        on[:] = False
    ratio = (1 + u[1] * (param.max_expand_ratio - 1)).astype(F32)
    h, w = sizes[:, 0], sizes[:, 1]
    ch = np.where(on, (h.astype(F32) * ratio).astype(np.int64), h)
    cw = np.where(on, (w.astype(F32) * ratio).astype(np.int64), w)
    ho = np.floor((u[2] * (ch - h)).astype(F32)).astype(np.int64)
    wo = np.floor((u[3] * (cw - w)).astype(F32)).astype(np.int64)
    hf, wf, hof, wof = h.astype(F32), w.astype(F32), ho.astype(F32), wo.astype(F32)
    bbox = np.stack([-wof / wf, -hof / hf, (cw.astype(F32) - wof) / wf,
                     (ch.astype(F32) - hof) / hf], 1)
    return Expansion(on, np.stack([ch, cw], 1), np.stack([ho, wo], 1), bbox.astype(F32))


# -- pixels: crop of the canvas, WARP-resized -------------------------------------------------

def render(images: np.ndarray, sizes: np.ndarray, offset: np.ndarray, rect: np.ndarray,
           out_hw: tuple[int, int], fill: np.ndarray, modes: np.ndarray | None = None
           ) -> np.ndarray:
    """The crops ``rect`` (n, 4) [y, x, h, w] of each item's canvas, resized to ``out_hw``:
    LINEAR as OpenCV's 8-bit INTER_LINEAR (``image_list.resize_linear``'s fixed-point
    arithmetic), the other ``interpolation.MODES`` by their tap tables; ``modes`` (n,) the
    mode of each item (default LINEAR).

    images (n, C, Hm, Wm) uint8, each holding an h × w image (``sizes`` (n, 2)) at its top
    left; the canvas holds it at ``offset`` (n, 2) [h_off, w_off] and ``fill`` (C,) (the mean
    values) elsewhere. Returns uint8 (n, C, H, W)."""
    n, c = images.shape[:2]
    modes = np.full(n, "LINEAR") if modes is None else np.asarray(modes)
    out = np.empty((n, c) + tuple(out_hw), np.uint8)
    for mode in np.unique(modes):
        sel = modes == mode
        canvas = _Canvas(images[sel], sizes[sel], offset[sel], rect[sel],
                         np.asarray(fill, np.int32))
        out[sel] = (canvas.linear(out_hw) if mode == "LINEAR" else canvas.taps(mode, out_hw))
    return out


class _Canvas:
    """Pixels of crops of mean-filled canvases, gathered by crop row and column indices."""

    def __init__(self, images, sizes, offset, rect, fill):
        self.x = images.transpose(0, 2, 3, 1)                 # (n, Hm, Wm, C)
        self.sizes, self.offset, self.rect, self.fill = sizes, offset, rect, fill
        self.item = np.arange(len(images))[:, None, None]

    def gather(self, ry: np.ndarray, cx: np.ndarray) -> np.ndarray:
        """int32 (n, H, W, C) pixels at crop rows ``ry`` (n, H) and columns ``cx`` (n, W)."""
        r = self.rect[:, 0:1] + ry - self.offset[:, 0:1]       # rows of the image
        c = self.rect[:, 1:2] + cx - self.offset[:, 1:2]
        inside = (((r >= 0) & (r < self.sizes[:, 0:1]))[:, :, None]
                  & ((c >= 0) & (c < self.sizes[:, 1:2]))[:, None, :])
        px = self.x[self.item, np.clip(r, 0, self.x.shape[1] - 1)[:, :, None],
                    np.clip(c, 0, self.x.shape[2] - 1)[:, None, :]].astype(np.int32)
        return np.where(inside[..., None], px, self.fill)

    def linear(self, out_hw) -> np.ndarray:
        H, W = out_hw
        y0, y1, b0, b1 = linear_taps(self.rect[:, 2:3], H)      # (n, H)
        x0, x1, a0, a1 = linear_taps(self.rect[:, 3:4], W)      # (n, W)
        wa0, wa1 = a0[:, None, :, None].astype(np.int32), a1[:, None, :, None].astype(np.int32)
        out = 0
        for yi, wb in ((y0, b0), (y1, b1)):
            line = self.gather(yi, x0) * wa0 + self.gather(yi, x1) * wa1   # exact 11-bit sums
            out = out + ((wb[:, :, None, None].astype(np.int32) * (line >> 4)) >> 16)
        return np.clip((out + 2) >> 2, 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)

    def taps(self, mode: str, out_hw) -> np.ndarray:
        H, W = out_hw
        shrink = ((self.rect[:, 2] >= H) & (self.rect[:, 3] >= W))[:, None]
        iy, wy = interpolation.taps(mode, self.rect[:, 2:3], H, shrink)
        ix, wx = interpolation.taps(mode, self.rect[:, 3:4], W, shrink)
        n, c = len(self.x), self.x.shape[3]
        fixed = mode == "LANCZOS4"
        if fixed:   # OpenCV's 8-bit path: 11-bit integer weights, rows then columns
            wx, wy = (np.rint(w * F32(2048)).astype(np.int64) for w in (wx, wy))
        acc = np.zeros((n, H, W, c), np.int64 if fixed else F32)
        for i in range(iy.shape[2]):                            # one pass per kernel tap
            row = np.zeros_like(acc)
            for j in range(ix.shape[2]):
                row += wx[:, None, :, j, None] * self.gather(iy[:, :, i], ix[:, :, j])
            acc += wy[:, :, i, None, None] * row
        if fixed:
            out = (acc + (1 << 21)) >> 22                       # >> 22, rounded
        else:
            out = np.rint(acc)
            if mode == "AREA":          # OpenCV's halving path rounds (a + b + c + d + 2) >> 2
                half = (self.rect[:, 2] == 2 * H) & (self.rect[:, 3] == 2 * W)
                out[half] = np.floor(acc[half] + F32(0.5))
        return np.clip(out, 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)


# -- distort_param (im_transforms.cpp ApplyDistort) -------------------------------------------

@dataclass
class Distortion:
    """Per item (n,) draws of ApplyDistort: ``contrast_first`` (its coin > 0.5: contrast before
    saturation and hue, else after), and for brightness, contrast, saturation, hue whether the
    step runs and its value (delta, factor, factor, delta); ``order`` (n, 3) the channel
    permutation, or None per item where ``reorder`` is False."""

    contrast_first: np.ndarray
    brightness: tuple[np.ndarray, np.ndarray]
    contrast: tuple[np.ndarray, np.ndarray]
    saturation: tuple[np.ndarray, np.ndarray]
    hue: tuple[np.ndarray, np.ndarray]
    reorder: np.ndarray
    order: np.ndarray


def draw_distortion(rng, p, n: int) -> Distortion:
    """The draws of ApplyDistort for n images: each step runs when its U(0, 1) < its prob;
    brightness delta ~ U(−brightness_delta, brightness_delta), contrast ~ U(lower, upper),
    saturation ~ U(lower, upper), hue delta ~ U(−hue_delta, hue_delta). As SSD, brightness and
    hue do nothing at delta 0 and contrast within 1e-3 of 1; saturation always converts."""
    u = rng.random((10, n))
    bd = (-p.brightness_delta + u[2] * 2 * p.brightness_delta).astype(F32)
    cf = (p.contrast_lower + u[4] * (p.contrast_upper - p.contrast_lower)).astype(F32)
    sf = (p.saturation_lower + u[6] * (p.saturation_upper - p.saturation_lower)).astype(F32)
    hd = (-p.hue_delta + u[8] * 2 * p.hue_delta).astype(F32)
    return Distortion(
        contrast_first=rng.random(n) > 0.5,
        brightness=((u[1] < p.brightness_prob) & (bd != 0), bd),
        contrast=((u[3] < p.contrast_prob) & (np.abs(cf - 1) > F32(1e-3)), cf),
        saturation=(u[5] < p.saturation_prob, sf),
        hue=((u[7] < p.hue_prob) & (hd != 0), hd),
        reorder=u[9] < p.random_order_prob,
        order=np.argsort(rng.random((n, 3)), 1))


def _affine_u8(x: np.ndarray, alpha, beta) -> np.ndarray:
    """OpenCV's 8-bit convertTo(alpha, beta): saturate(round-half-even(x·α + β)) in float32."""
    y = x.astype(F32) * np.asarray(alpha, F32) + np.asarray(beta, F32)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def _per_item(v: np.ndarray) -> np.ndarray:
    return v[:, None, None, None]


def distort(images: np.ndarray, d: Distortion) -> np.ndarray:
    """ApplyDistort on uint8 BGR images (n, C, H, W) with the draws ``d``: brightness
    (x + δ), then contrast (x·α), saturation (S·α in HSV), hue (H + δ in HSV, saturated to
    0…255 and wrapping at 180 on the way back) in that order for ``contrast_first`` items,
    saturation, hue, contrast for the others, then the channel permutation. Each step rounds
    and saturates to uint8 as OpenCV does (``colorspace`` for HSV)."""
    x = images.copy()

    def step(mask, fn):
        if mask.any():
            x[mask] = fn(x[mask], mask)

    on, bd = d.brightness
    step(on, lambda a, m: _affine_u8(a, 1, _per_item(bd[m])))
    on, cf = d.contrast
    contrast = (lambda a, m: _affine_u8(a, _per_item(cf[m]), 0))
    step(on & d.contrast_first, contrast)

    def hsv_channel(k, scale, shift):
        def fn(a, m):
            hsv = bgr_to_hsv(a)
            hsv[:, k] = _affine_u8(hsv[:, k], scale(m), shift(m))
            return hsv_to_bgr(hsv)
        return fn

    on, sf = d.saturation
    step(on, hsv_channel(1, lambda m: sf[m][:, None, None], lambda m: 0))
    on, hd = d.hue
    step(on, hsv_channel(0, lambda m: 1, lambda m: hd[m][:, None, None]))
    step(d.contrast[0] & ~d.contrast_first, contrast)
    if d.reorder.any():
        k = np.where(d.reorder[:, None], d.order, np.arange(3))
        x = np.take_along_axis(x, k[:, :, None, None], 1)
    return x


def fit_hw(mode: str, old_hw: np.ndarray, new_hw: tuple[int, int]) -> np.ndarray:
    """The size (n, 2) [h, w] images of ``old_hw`` (n, 2) are resized to before any padding
    (``AspectKeepingResizeAndPad`` / ``AspectKeepingResizeBySmall``), a = w / h in float32:
    WARP: new_hw; FIT_LARGE_SIZE_AND_PAD: [⌊W / a⌋, W] when a > W / H, else [H, ⌊a·H⌋]
    (inside H × W); FIT_SMALL_SIZE: [⌊W / a⌋, W] when a < W / H, else [H, ⌊a·H⌋] (covering
    H × W). At least one pixel per side."""
    a = old_hw[:, 1].astype(F32) / old_hw[:, 0].astype(F32)
    nh, nw = int(new_hw[0]), int(new_hw[1])
    out = np.tile(np.array([nh, nw], np.int64), (len(a), 1))
    if mode == "WARP":
        return out
    target = F32(nw) / F32(nh)
    full_width = a > target if mode == "FIT_LARGE_SIZE_AND_PAD" else a < target
    out[:, 0] = np.where(full_width, np.floor(F32(nw) / a), nh)
    out[:, 1] = np.where(full_width, nw, np.floor(a * F32(nh)))
    return np.maximum(out, 1)


def resize_policy(images: np.ndarray, sizes: np.ndarray, offset: np.ndarray, rect: np.ndarray,
                  r, fill: np.ndarray, modes: np.ndarray | None = None) -> np.ndarray:
    """SSD's ApplyResize of the crops ``rect`` (``render``'s arguments) by the resize policy
    ``r`` (a ResizeParameter): WARP to height × width; FIT_SMALL_SIZE to ``fit_hw`` (all
    items must come to one size); FIT_LARGE_SIZE_AND_PAD to ``fit_hw`` then padded to
    height × width, ⌊(H − h) / 2⌋ rows above (columns left), the rest below (right), by
    ``pad_mode``: CONSTANT (``pad_value``, one or one per channel, rounded to 8 bits; default
    0), MIRRORED (OpenCV's BORDER_REFLECT_101), REPEAT_NEAREST (BORDER_REPLICATE). Items of
    one inner size are resized together. Returns uint8 (n, C, H', W')."""
    new_hw = (int(r.height), int(r.width))
    if r.resize_mode == "WARP":
        return render(images, sizes, offset, rect, new_hw, fill, modes)
    n, c = images.shape[:2]
    inner = fit_hw(r.resize_mode, rect[:, 2:4], new_hw)
    if r.resize_mode == "FIT_SMALL_SIZE":
        if (inner != inner[0]).any():
            raise ValueError("FIT_SMALL_SIZE resizes these images to different sizes")
        new_hw = tuple(int(v) for v in inner[0])
    modes = np.full(n, "LINEAR") if modes is None else np.asarray(modes)
    value = np.broadcast_to(np.asarray(r.pad_value or [0.0], np.float64), (c,))
    out = np.empty((n, c) + new_hw, np.uint8)
    out[:] = np.clip(np.rint(value), 0, 255).astype(np.uint8)[:, None, None]
    for h, w in np.unique(inner, axis=0):
        sel = (inner == (h, w)).all(1)
        x = render(images[sel], sizes[sel], offset[sel], rect[sel], (int(h), int(w)), fill,
                   modes[sel])
        top, left = (new_hw[0] - h) // 2, (new_hw[1] - w) // 2
        if r.pad_mode == "CONSTANT":
            out[sel, :, top:top + h, left:left + w] = x
        else:
            pads = ((0, 0), (0, 0), (top, new_hw[0] - h - top), (left, new_hw[1] - w - left))
            out[sel] = np.pad(x, pads, mode="reflect" if r.pad_mode == "MIRRORED" else "edge")
    return out


def _covering_hw(a: np.ndarray, h, w) -> tuple[np.ndarray, np.ndarray]:
    """FIT_SMALL_SIZE's covering size (H', W') of h × w for aspect ratios ``a`` = width /
    height, float32, unrounded: [w / a, w] when a < w / h, else [h, a·h]."""
    tall = a < w / h
    return np.where(tall, w / a, h), np.where(tall, w, a * h)


def resize_boxes(b: np.ndarray, old_hw: np.ndarray, r) -> np.ndarray:
    """UpdateBBoxByResizePolicy: boxes (M, 4) of images old_hw (M, 2) resized by the policy
    ``r`` (resize_mode, height, width), through pixels in float32 as SSD. WARP: scaled, xmin
    and ymin raised to 0, xmax and ymax cut to the size; FIT_LARGE_SIZE_AND_PAD: the same
    along the fitting side, the other scaled into the size less twice the padding p =
    (H − W / a) / 2 (or (W − a·H) / 2) and shifted by p (p unrounded, as SSD); FIT_SMALL_SIZE:
    WARP to the covering size (H = W / a or W = a·H, unrounded)."""
    oh, ow = old_hw[:, 0].astype(F32), old_hw[:, 1].astype(F32)
    nh = np.full(len(b), F32(r.height), F32)
    nw = np.full(len(b), F32(r.width), F32)
    a = ow / oh
    x0, y0, x1, y1 = b[:, 0] * ow, b[:, 1] * oh, b[:, 2] * ow, b[:, 3] * oh

    def warp(v0, v1, old, new):
        return np.maximum(F32(0), v0 * new / old), np.minimum(new, v1 * new / old)

    def padded(v0, v1, old, new, pad):
        inner = new - F32(2) * pad
        return pad + np.maximum(F32(0), v0 * inner / old), pad + np.minimum(new, v1 * inner / old)

    if r.resize_mode == "FIT_SMALL_SIZE":
        nh, nw = _covering_hw(a, nh, nw)
    if r.resize_mode == "FIT_LARGE_SIZE_AND_PAD":
        wide = a > nw / nh
        px, py = (nw - a * nh) / F32(2), (nh - nw / a) / F32(2)
        X, Y = warp(x0, x1, ow, nw), warp(y0, y1, oh, nh)
        PX, PY = padded(x0, x1, ow, nw, px), padded(y0, y1, oh, nh, py)
        x0, x1 = (np.where(wide, X[i], PX[i]) for i in (0, 1))
        y0, y1 = (np.where(wide, PY[i], Y[i]) for i in (0, 1))
    else:
        (x0, x1), (y0, y1) = warp(x0, x1, ow, nw), warp(y0, y1, oh, nh)
    return np.stack([x0 / nw, y0 / nh, x1 / nw, y1 / nh], 1).astype(F32)


def extrapolate_boxes(b: np.ndarray, old_hw: np.ndarray, r) -> np.ndarray:
    """ExtrapolateBBox (after the mirror): with FIT_SMALL_SIZE and both ``height_scale`` and
    ``width_scale`` set, boxes (M, 4) of images old_hw (M, 2) rescaled to a window of
    width_scale × height_scale pixels of the covering size: x · W' / width_scale,
    y · H' / height_scale (W', H' unrounded as ``resize_boxes``). Others unchanged."""
    if not (r.resize_mode == "FIT_SMALL_SIZE" and r.height_scale > 0 and r.width_scale > 0):
        return b
    oh, ow = old_hw[:, 0].astype(F32), old_hw[:, 1].astype(F32)
    a = ow / oh
    rh, rw = _covering_hw(a, F32(r.height), F32(r.width))
    size = np.stack([rw, rh] * 2, 1)
    scale = np.array([r.width_scale, r.height_scale] * 2, F32)
    return (b * size / scale).astype(F32)
