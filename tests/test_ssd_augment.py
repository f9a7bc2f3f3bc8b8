"""SSD's random transform (netspec/data/ssd_augment.py) and OpenCV's 8-bit HSV conversions
(netspec/data/colorspace.py).

References that are not the code under test: scalar transcriptions of weiliu89/caffe's
``bbox_util.cpp`` (ProjectBBox, MeetEmitConstraint, JaccardOverlap, BBoxCoverage),
``sampler.cpp`` (SampleBBox, SatisfySampleConstraint with its object loop),
``data_transformer.cpp`` (ExpandImage, CropImage) and ``im_transforms.cpp`` (ApplyDistort),
written here box by box and image by image in float32 from the same random draws; OpenCV's
own ``cv2.cvtColor`` for the colour conversions; a canvas built pixel by pixel and
``resize_linear`` (itself checked against cv2.resize) for the crops.
"""

from __future__ import annotations

import numpy as np
import pytest

from netspec.data import ssd_augment as A
from netspec.data.colorspace import bgr_to_hsv, hsv_to_bgr
from netspec.data.image_list import resize_linear
from netspec.spec.params.common import (DistortionParameter, EmitConstraint, ExpansionParameter,
                                        ResizeParameter)
from netspec.spec.params.data import BatchSampler, SampleConstraint, Sampler

F = np.float32


# -- scalar references from SSD's C++ ---------------------------------------------------------

def ref_size(b):
    return F(0) if b[2] < b[0] or b[3] < b[1] else F(b[2] - b[0]) * F(b[3] - b[1])


def ref_intersect(a, b):
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        return [F(0)] * 4
    return [max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])]


def ref_jaccard(a, b):
    i = ref_intersect(a, b)
    w, h = F(i[2] - i[0]), F(i[3] - i[1])
    if w > 0 and h > 0:
        inter = w * h
        return inter / (ref_size(a) + ref_size(b) - inter)
    return F(0)


def ref_coverage(a, b):
    inter = ref_size(ref_intersect(a, b))
    return inter / ref_size(a) if inter > 0 else F(0)


def ref_transform_annotation(box, crop, emit):
    """MeetEmitConstraint then ProjectBBox: the projected box or None."""
    box, crop = [F(v) for v in box], [F(v) for v in crop]
    if emit is not None:
        if emit.emit_type == "CENTER":
            cx, cy = (box[0] + box[2]) / F(2), (box[1] + box[3]) / F(2)
            if not (crop[0] <= cx <= crop[2] and crop[1] <= cy <= crop[3]):
                return None
        elif not ref_coverage(box, crop) > F(emit.emit_overlap or 0):
            return None
    if box[0] >= crop[2] or box[2] <= crop[0] or box[1] >= crop[3] or box[3] <= crop[1]:
        return None
    w, h = F(crop[2] - crop[0]), F(crop[3] - crop[1])
    p = [(box[0] - crop[0]) / w, (box[1] - crop[1]) / h, (box[2] - crop[0]) / w,
         (box[3] - crop[1]) / h]
    p = [min(max(v, F(0)), F(1)) for v in p]
    return p if ref_size(p) > 0 else None


def ref_satisfy(sample, objects, c):
    """SatisfySampleConstraint, its loop over the objects as SSD writes it."""
    has_j = c.min_jaccard_overlap is not None or c.max_jaccard_overlap is not None
    has_s = c.min_sample_coverage is not None or c.max_sample_coverage is not None
    has_o = c.min_object_coverage is not None or c.max_object_coverage is not None
    if not (has_j or has_s or has_o):
        return True
    found = False
    for o in objects:
        if has_j:
            j = ref_jaccard(sample, o)
            if c.min_jaccard_overlap is not None and j < F(c.min_jaccard_overlap):
                continue
            if c.max_jaccard_overlap is not None and j > F(c.max_jaccard_overlap):
                continue
            found = True
        if has_s:
            s = ref_coverage(sample, o)
            if c.min_sample_coverage is not None and s < F(c.min_sample_coverage):
                continue
            if c.max_sample_coverage is not None and s > F(c.max_sample_coverage):
                continue
            found = True
        if has_o:
            s = ref_coverage(o, sample)
            if c.min_object_coverage is not None and s < F(c.min_object_coverage):
                continue
            if c.max_object_coverage is not None and s > F(c.max_object_coverage):
                continue
            found = True
        if found:
            return True
    return found


def random_boxes(rng, m, lo=-0.3, hi=1.3):
    a, b = rng.uniform(lo, hi, (2, m, 2))
    return np.concatenate([np.minimum(a, b), np.maximum(a, b)], 1).astype(F)


# -- boxes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("emit", [None, EmitConstraint(emit_type="CENTER"),
                                  EmitConstraint(emit_type="MIN_OVERLAP", emit_overlap=0.4)])
def test_project_boxes_is_ssds_transform_annotation_exactly(emit):
    rng = np.random.default_rng(1)
    boxes = random_boxes(rng, 3000)
    boxes[:50, 2] = boxes[:50, 0]                           # empty boxes
    crops = random_boxes(rng, 3000, -0.5, 1.5)
    keep, out = A.project_boxes(boxes, crops, emit)
    for k in range(len(boxes)):
        want = ref_transform_annotation(boxes[k], crops[k], emit)
        assert keep[k] == (want is not None), k
        if want is not None:
            np.testing.assert_array_equal(out[k], np.array(want, F))
    assert 0.1 < keep.mean() < 0.9


def test_warp_boxes_follow_ssds_resize_policy():
    rng = np.random.default_rng(2)
    b = random_boxes(rng, 500)
    old = rng.integers(5, 700, (500, 2))
    out = A.resize_boxes(b, old, ResizeParameter(height=300, width=200))
    for k in range(500):
        oh, ow = F(old[k, 0]), F(old[k, 1])
        x0 = max(F(0), b[k, 0] * ow * F(200) / ow) / F(200)
        x1 = min(F(200), b[k, 2] * ow * F(200) / ow) / F(200)
        y0 = max(F(0), b[k, 1] * oh * F(300) / oh) / F(300)
        y1 = min(F(300), b[k, 3] * oh * F(300) / oh) / F(300)
        np.testing.assert_array_equal(out[k], np.array([x0, y0, x1, y1], F))


# -- batch_sampler ----------------------------------------------------------------------------

def test_sample_crop_boxes_is_ssds_sample_bbox_from_the_same_draws():
    s = Sampler(min_scale=0.3, max_scale=1.0, min_aspect_ratio=0.5, max_aspect_ratio=2.0)
    got = A.sample_crop_boxes(np.random.default_rng(7), s, 6, 40)
    u = np.random.default_rng(7).random((4, 6, 40))
    for i in range(6):
        for t in range(40):
            scale = F(0.3 + u[0, i, t] * 0.7)
            ar = F(0.5 + u[1, i, t] * 1.5)
            ar = min(max(ar, scale * scale), F(1) / (scale * scale))
            w, h = scale * np.sqrt(ar), scale / np.sqrt(ar)
            x0, y0 = F(u[2, i, t] * (F(1) - w)), F(u[3, i, t] * (F(1) - h))
            np.testing.assert_array_equal(got[i, t], np.array([x0, y0, x0 + w, y0 + h], F))
    assert (got >= -1e-6).all() and (got <= 1 + 1e-6).all()


CONSTRAINTS = [SampleConstraint(min_jaccard_overlap=0.5),
               SampleConstraint(max_jaccard_overlap=0.3),
               SampleConstraint(min_sample_coverage=0.6, max_sample_coverage=0.95),
               SampleConstraint(min_object_coverage=0.8),
               SampleConstraint(min_jaccard_overlap=0.3, min_object_coverage=0.9),
               SampleConstraint()]


@pytest.mark.parametrize("constraint", CONSTRAINTS)
def test_satisfies_is_ssds_sample_constraint_over_many_draws(constraint):
    rng = np.random.default_rng(3)
    n, t = 40, 60
    counts = rng.integers(0, 4, n)
    item = np.repeat(np.arange(n), counts)
    objects, valid = A.padded_boxes(random_boxes(rng, len(item), 0, 1), item, n)
    crops = A.sample_crop_boxes(rng, Sampler(min_scale=0.2, max_scale=1, min_aspect_ratio=0.5,
                                             max_aspect_ratio=2), n, t)
    ok = A.satisfies(crops, objects, valid, constraint)
    for i in range(n):
        objs = objects[i][valid[i]]
        for k in range(t):
            assert ok[i, k] == ref_satisfy(crops[i, k], objs, constraint), (i, k)
    assert 0 < ok.mean() <= 1


def test_every_picked_crop_meets_its_samplers_constraint_and_count():
    """SSD's seven samplers on many images: the crops found are at most max_sample per
    sampler, each meets its constraint, and the picked one is one of them (or the image)."""
    rng = np.random.default_rng(4)
    shape = Sampler(min_scale=0.3, max_scale=1.0, min_aspect_ratio=0.5, max_aspect_ratio=2.0)
    samplers = [BatchSampler(max_sample=1, max_trials=1)] + [
        BatchSampler(sampler=shape, sample_constraint=SampleConstraint(min_jaccard_overlap=j),
                     max_sample=1, max_trials=50) for j in (0.1, 0.3, 0.5, 0.7, 0.9)] + [
        BatchSampler(sampler=shape, sample_constraint=SampleConstraint(max_jaccard_overlap=1.0),
                     max_sample=1, max_trials=50)]
    n = 200
    counts = rng.integers(0, 5, n)
    item = np.repeat(np.arange(n), counts)
    objects, valid = A.padded_boxes(random_boxes(rng, len(item), 0, 1), item, n)
    crops, found = A.generate_batch_samples(rng, samplers, objects, valid)
    assert crops.shape == (n, 1 + 6 * 50, 4)
    start = np.cumsum([0] + [s.max_trials for s in samplers])
    for k, s in enumerate(samplers):
        part = found[:, start[k]:start[k + 1]]
        assert (part.sum(1) <= 1).all()
        for i, t in zip(*np.nonzero(part)):
            c = s.sample_constraint or SampleConstraint()
            assert ref_satisfy(crops[i, start[k] + t], objects[i][valid[i]], c)
    assert found[:, 0].all()                                 # the whole-image sampler
    assert found[counts == 0, 1:-1].sum() == 0              # jaccard bounds need an object
    picked, has = A.pick_samples(rng, crops, found)
    assert has.all()
    for i in range(n):
        assert any(np.array_equal(picked[i], c) for c in crops[i][found[i]])


def test_pick_samples_is_uniform_over_the_found_crops():
    rng = np.random.default_rng(5)
    crops = np.arange(4 * 4, dtype=F).reshape(1, 4, 4).repeat(3000, 0)
    found = np.tile([True, False, True, True], (3000, 1))
    found[-1] = False
    picked, has = A.pick_samples(rng, crops, found)
    assert not has[-1] and (picked[-1] == A.UNIT).all()
    which = picked[:-1, 0] // 4
    assert set(np.unique(which)) == {0, 2, 3}
    assert np.abs(np.bincount(which.astype(int), minlength=4)[[0, 2, 3]] / 2999 - 1 / 3).max() < 0.04


def test_crop_rect_is_ssds_crop_image_rectangle():
    rng = np.random.default_rng(6)
    crop = A.sample_crop_boxes(rng, Sampler(min_scale=0.1, max_scale=1, min_aspect_ratio=0.5,
                                            max_aspect_ratio=2), 400, 1)[:, 0]
    h, w = rng.integers(10, 600, (2, 400))
    rect = A.crop_rect(crop, h, w)
    for k in range(400):
        c = [min(max(v, F(0)), F(1)) for v in crop[k]]
        sx0, sx1, sy0, sy1 = c[0] * F(w[k]), c[2] * F(w[k]), c[1] * F(h[k]), c[3] * F(h[k])
        assert list(rect[k]) == [int(sy0), int(sx0), int(sy1 - sy0), int(sx1 - sx0)]
        assert rect[k, 0] + rect[k, 2] <= h[k] and rect[k, 1] + rect[k, 3] <= w[k]
    # a crop SSD would leave empty (a sliver at the border) keeps one pixel inside
    edge = A.crop_rect(np.array([[0.999, 1.0, 1.0, 1.0]], F), np.array([20]), np.array([30]))
    assert edge.tolist() == [[19, 29, 1, 1]]


# -- expand_param -----------------------------------------------------------------------------

def test_expansion_is_ssds_expand_image_from_the_same_draws():
    p = ExpansionParameter(prob=0.5, max_expand_ratio=4.0)
    sizes = np.random.default_rng(0).integers(5, 500, (300, 2))
    e = A.draw_expansion(np.random.default_rng(8), p, sizes)
    u = np.random.default_rng(8).random((4, 300))
    for i in range(300):
        h, w = int(sizes[i, 0]), int(sizes[i, 1])
        if not u[0, i] <= F(0.5):
            assert not e.expanded[i] and tuple(e.canvas[i]) == (h, w)
            continue
        ratio = F(1 + u[1, i] * 3)
        H, W = int(F(h) * ratio), int(F(w) * ratio)
        ho, wo = np.floor(F(u[2, i] * (H - h))), np.floor(F(u[3, i] * (W - w)))
        assert e.expanded[i] and tuple(e.canvas[i]) == (H, W)
        assert tuple(e.offset[i]) == (int(ho), int(wo))
        want = [-F(wo) / F(w), -F(ho) / F(h), (F(W) - F(wo)) / F(w), (F(H) - F(ho)) / F(h)]
        np.testing.assert_array_equal(e.bbox[i], np.array(want, F))
    assert 0.4 < e.expanded.mean() < 0.6
    assert (e.canvas >= sizes).all() and (e.canvas <= 4 * sizes).all()
    none = A.draw_expansion(np.random.default_rng(8), ExpansionParameter(prob=1,
                                                                         max_expand_ratio=1.005),
                            sizes)
    assert not none.expanded.any()                           # SSD: ratio within 0.01 of 1


def test_boxes_follow_the_expanded_image():
    """An expanded image's boxes, projected onto expand_bbox, are where its pixels went."""
    sizes = np.array([[40, 60]])
    e = A.draw_expansion(np.random.default_rng(1), ExpansionParameter(prob=1,
                                                                      max_expand_ratio=3), sizes)
    box = np.array([[0.25, 0.5, 0.75, 1.0]], F)              # pixels x 15–45, y 20–40
    keep, out = A.project_boxes(box, e.bbox, None)
    H, W = e.canvas[0]
    ho, wo = e.offset[0]
    np.testing.assert_allclose(out[0] * [W, H, W, H], [wo + 15, ho + 20, wo + 45, ho + 40],
                               rtol=1e-5)


# -- pixels ------------------------------------------------------------------------------------

def test_render_is_the_crop_of_the_mean_filled_canvas_resized_as_opencv():
    rng = np.random.default_rng(9)
    n = 6
    sizes = rng.integers(8, 30, (n, 2))
    images = np.zeros((n, 3, 30, 30), np.uint8)
    for i in range(n):
        images[i, :, :sizes[i, 0], :sizes[i, 1]] = rng.integers(0, 256, (3, *sizes[i]))
    e = A.draw_expansion(rng, ExpansionParameter(prob=0.7, max_expand_ratio=3), sizes)
    crop = A.sample_crop_boxes(rng, Sampler(min_scale=0.3, max_scale=1), n, 1)[:, 0]
    rect = A.crop_rect(crop, e.canvas[:, 0], e.canvas[:, 1])
    fill = np.array([104, 117, 123])
    out = A.render(images, sizes, e.offset, rect, (17, 23), fill)
    for i in range(n):
        canvas = np.empty((3, *e.canvas[i]), np.uint8)
        for c in range(3):
            canvas[c] = fill[c]
        (ho, wo), (h, w) = e.offset[i], sizes[i]
        canvas[:, ho:ho + h, wo:wo + w] = images[i, :, :h, :w]
        y, x, hh, ww = rect[i]
        np.testing.assert_array_equal(out[i], resize_linear(canvas[:, y:y + hh, x:x + ww], 17, 23))


# -- distort_param -----------------------------------------------------------------------------

def test_hsv_conversions_equal_opencvs():
    cv2 = pytest.importorskip("cv2", reason="OpenCV (the compare extra) is not installed")
    rng = np.random.default_rng(10)
    a = rng.integers(0, 256, (2048, 128, 3), dtype=np.uint8)
    a[0] = np.stack([np.arange(128) * 2] * 3, 1)             # greys, s = 0
    a[1, :6] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 0, 0], [255, 255, 255], [1, 2, 3]]
    mine = bgr_to_hsv(a.transpose(2, 0, 1)).transpose(1, 2, 0)
    np.testing.assert_array_equal(mine, cv2.cvtColor(a, cv2.COLOR_BGR2HSV))
    hsv = a.copy()                                           # H up to 255: past 179 it wraps
    mine = hsv_to_bgr(hsv.transpose(2, 0, 1)).transpose(1, 2, 0)
    np.testing.assert_array_equal(mine, cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR))


def test_brightness_and_contrast_are_opencvs_rounded_saturated_affine_maps():
    x = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16).repeat(2, 0)
    d = A.Distortion(contrast_first=np.array([True, False]),
                     brightness=(np.array([True, True]), np.array([-20.5, 40.25], F)),
                     contrast=(np.array([True, True]), np.array([0.5, 1.5], F)),
                     saturation=(np.zeros(2, bool), np.ones(2, F)),
                     hue=(np.zeros(2, bool), np.zeros(2, F)),
                     reorder=np.zeros(2, bool), order=np.tile(np.arange(3), (2, 1)))
    out = A.distort(x, d)
    v = np.arange(256, dtype=np.float64).reshape(16, 16)
    for i, (delta, alpha) in enumerate([(-20.5, 0.5), (40.25, 1.5)]):
        b = np.clip(np.rint(v + delta), 0, 255)              # round half to even, saturate
        np.testing.assert_array_equal(out[i, 0], np.clip(np.rint(b * alpha), 0, 255))


def ref_apply_distort(img, d, i, cv2):
    """ApplyDistort on one HWC BGR image with item i's draws, with OpenCV's conversions."""
    def affine(a, alpha, beta):
        return np.clip(np.rint(a.astype(F) * F(alpha) + F(beta)), 0, 255).astype(np.uint8)

    def hsv(a, k, alpha, beta):
        h = cv2.cvtColor(a, cv2.COLOR_BGR2HSV)
        h[..., k] = affine(h[..., k], alpha, beta)
        return cv2.cvtColor(h, cv2.COLOR_HSV2BGR)

    out = img
    if d.brightness[0][i]:
        out = affine(out, 1, d.brightness[1][i])
    steps = [("c",), ("s",), ("h",)] if d.contrast_first[i] else [("s",), ("h",), ("c",)]
    for (s,) in steps:
        if s == "c" and d.contrast[0][i]:
            out = affine(out, d.contrast[1][i], 0)
        if s == "s" and d.saturation[0][i]:
            out = hsv(out, 1, d.saturation[1][i], 0)
        if s == "h" and d.hue[0][i]:
            out = hsv(out, 0, 1, d.hue[1][i])
    if d.reorder[i]:
        out = out[..., d.order[i]]
    return out


def test_distort_is_ssds_apply_distort_with_opencv():
    cv2 = pytest.importorskip("cv2", reason="OpenCV (the compare extra) is not installed")
    rng = np.random.default_rng(11)
    p = DistortionParameter(brightness_prob=0.5, brightness_delta=32, contrast_prob=0.5,
                            contrast_lower=0.5, contrast_upper=1.5, hue_prob=0.5, hue_delta=18,
                            saturation_prob=0.5, saturation_lower=0.5, saturation_upper=1.5,
                            random_order_prob=0.5)
    n = 48
    # rows of 128 pixels: OpenCV converts whole rows on its vectorised path (a row's last
    # width mod 4·lanes pixels take a scalar path that rounds where the vector one truncates)
    x = rng.integers(0, 256, (n, 3, 8, 128), dtype=np.uint8)
    d = A.draw_distortion(rng, p, n)
    for name in ("brightness", "contrast", "saturation", "hue"):
        assert 0.2 < getattr(d, name)[0].mean() < 0.8, name
    assert 0.2 < d.contrast_first.mean() < 0.8 and 0.2 < d.reorder.mean() < 0.8
    out = A.distort(x, d)
    for i in range(n):
        want = ref_apply_distort(x[i].transpose(1, 2, 0), d, i, cv2)
        np.testing.assert_array_equal(out[i].transpose(1, 2, 0), want, err_msg=str(i))
    assert (np.abs(d.brightness[1]) <= 32).all() and (np.abs(d.hue[1]) <= 18).all()
    assert ((d.contrast[1] >= 0.5) & (d.contrast[1] <= 1.5)).all()


# -- resize_param.interp_mode ------------------------------------------------------------------

SIZES = [((40, 50), (17, 23)), ((40, 50), (80, 90)), ((100, 120), (33, 33)), ((64, 64), (32, 32)),
         ((30, 90), (60, 30)), ((128, 96), (37, 41)), ((99, 99), (33, 33))]


@pytest.mark.parametrize("mode", ["NEAREST", "CUBIC", "LANCZOS4", "AREA", "LINEAR"])
def test_interpolation_modes_equal_opencvs_resize(mode):
    """Each interp_mode against cv2.resize, shrinking and enlarging (measured: NEAREST, AREA,
    LANCZOS4 equal; CUBIC and LINEAR within 1 on a few enlarged pixels)."""
    cv2 = pytest.importorskip("cv2", reason="OpenCV (the compare extra) is not installed")
    rng = np.random.default_rng(12)
    worst, frac = 0, 0.0
    for (h, w), (H, W) in SIZES:
        a = rng.integers(0, 256, (1, 3, h, w), dtype=np.uint8)
        out = A.render(a, np.array([[h, w]]), np.zeros((1, 2), int), np.array([[0, 0, h, w]]),
                       (H, W), np.zeros(3), np.array([mode]))
        ref = cv2.resize(a[0].transpose(1, 2, 0), (W, H),
                         interpolation=getattr(cv2, f"INTER_{mode}")).transpose(2, 0, 1)
        d = np.abs(out[0].astype(int) - ref)
        worst, frac = max(worst, int(d.max())), max(frac, float((d > 0).mean()))
    if mode in ("NEAREST", "AREA", "LANCZOS4"):
        assert worst == 0
    else:
        assert worst <= 1 and frac < 0.01


def test_each_item_takes_its_own_interpolation_mode():
    cv2 = pytest.importorskip("cv2", reason="OpenCV (the compare extra) is not installed")
    rng = np.random.default_rng(13)
    a = rng.integers(0, 256, (4, 3, 40, 50), dtype=np.uint8)
    modes = np.array(["NEAREST", "LANCZOS4", "AREA", "NEAREST"])
    out = A.render(a, np.tile([40, 50], (4, 1)), np.zeros((4, 2), int),
                   np.tile([0, 0, 40, 50], (4, 1)), (17, 23), np.zeros(3), modes)
    for i, m in enumerate(modes):
        ref = cv2.resize(a[i].transpose(1, 2, 0), (23, 17), interpolation=getattr(cv2, f"INTER_{m}"))
        np.testing.assert_array_equal(out[i], ref.transpose(2, 0, 1))
