"""SSD's DetectionEvaluate layer (weiliu89/caffe): true and false positives of detections.

References that are not the code under test: a literal transcription of SSD's
``DetectionEvaluateLayer::Forward_cpu`` with its ``GetDetectionResults``, ``GetGroundTruth``,
``JaccardOverlap``, ``OutputBBox`` (map-ordered, box by box, in float32 scalars), and small
cases worked by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import make_layer, run_forward

from netspec.errors import NetspecError, SpecError

F = np.float32


def layer_for(det, gt, **param):
    param.setdefault("num_classes", 3)
    layer, shapes = make_layer({"type": "DetectionEvaluate", "bottom": ["det", "gt"],
                                "top": "eval", "detection_evaluate_param": param},
                               [(1, 1, max(len(det), 1), 7), (1, 1, max(len(gt), 1), 8)])
    return layer


def evaluate(det, gt, **param):
    layer = layer_for(det, gt, **param)
    det = np.asarray(det, np.float64).reshape(1, 1, -1, 7)
    gt = np.asarray(gt, np.float64).reshape(1, 1, -1, 8)
    _, top = run_forward(layer, [det, gt], [(1, 1, 1, 5)])
    return np.asarray(top[0].data).reshape(-1, 5)


# -- SSD's code, transcribed -------------------------------------------------------------------

def _size(b, normalized=True):
    xmin, ymin, xmax, ymax = b["box"]
    if xmax < xmin or ymax < ymin:
        return F(0)
    w, h = F(xmax - xmin), F(ymax - ymin)
    return F(w * h) if normalized else F((w + F(1)) * (h + F(1)))


def _jaccard(a, b, normalized):
    ax0, ay0, ax1, ay1 = a["box"]
    bx0, by0, bx1, by1 = b["box"]
    if bx0 > ax1 or bx1 < ax0 or by0 > ay1 or by1 < ay0:
        inter = [F(0)] * 4
    else:
        inter = [max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)]
    iw, ih = F(inter[2] - inter[0]), F(inter[3] - inter[1])
    if not normalized:
        iw, ih = F(iw + F(1)), F(ih + F(1))
    if iw > 0 and ih > 0:
        isz = F(iw * ih)
        return F(isz / F(F(a["size"] + b["size"]) - isz))
    return F(0)


def _scale(b, h, w):
    x0, y0, x1, y1 = b["box"]
    out = {"box": [F(x0 * F(w)), F(y0 * F(h)), F(x1 * F(w)), F(y1 * F(h))],
           "difficult": b.get("difficult", False), "score": b.get("score")}
    out["size"] = _size(out, normalized=not (w > 1 or h > 1))
    return out


def _clip(b, h=1.0, w=1.0):
    x0, y0, x1, y1 = b["box"]
    c = dict(b, box=[F(max(min(x0, F(w)), F(0))), F(max(min(y0, F(h)), F(0))),
                     F(max(min(x1, F(w)), F(0))), F(max(min(y1, F(h)), F(0)))])
    c["size"] = _size(c)
    return c


def _project(src, b):
    """ProjectBBox: ``b`` in the coordinates of ``src``, clipped; None when it falls outside."""
    sx0, sy0, sx1, sy1 = src
    x0, y0, x1, y1 = b["box"]
    if x0 >= sx1 or x1 <= sx0 or y0 >= sy1 or y1 <= sy0:
        return None
    sw, sh = F(sx1 - sx0), F(sy1 - sy0)
    p = _clip(dict(b, box=[F(F(x0 - sx0) / sw), F(F(y0 - sy0) / sh), F(F(x1 - sx0) / sw),
                           F(F(y1 - sy0) / sh)]))
    return p if p["size"] > 0 else None


def _output(b, h, w, resize):
    """OutputBBox, case by case."""
    if resize is None or resize["resize_mode"] == "WARP":
        return _scale(_clip(b), h, w)
    if resize["resize_mode"] == "FIT_SMALL_SIZE":
        if not (resize.get("height_scale") and resize.get("width_scale")):
            return _scale(_clip(b), h, w)
        return _clip(_scale(b, resize["height_scale"], resize["width_scale"]), F(h), F(w))
    rh, rw = F(resize["height"]), F(resize["width"])
    aspect = F(F(w) / F(h))
    if aspect > F(rw / rh):
        pad = F(F(rh - F(rw / aspect)) / F(2))
        src = [F(0), F(pad / rh), F(1), F(F(1) - F(pad / rh))]
    else:
        pad = F(F(rw - F(rh * aspect)) / F(2))
        src = [F(pad / rw), F(0), F(F(1) - F(pad / rw)), F(1)]
    p = _project(src, b)
    return _scale(_clip(p if p is not None else b), h, w)


def ssd_forward(det, gt, num_classes, background_label_id=0, overlap_threshold=0.5,
                evaluate_difficult_gt=True, sizes=(), count=0, resize=None):
    """DetectionEvaluateLayer<float>::Forward_cpu, line by line."""
    det = np.asarray(det, F).reshape(-1, 7)
    gt = np.asarray(gt, F).reshape(-1, 8)
    all_det = {}
    for r in det:
        if int(r[0]) == -1:
            continue
        b = {"score": r[2], "box": list(r[3:7])}
        b["size"] = _size(b)
        all_det.setdefault(int(r[0]), {}).setdefault(int(r[1]), []).append(b)
    all_gt = {}
    for r in gt:
        if int(r[0]) == -1:
            break
        b = {"box": list(r[3:7]), "difficult": bool(r[7])}
        b["size"] = _size(b)
        all_gt.setdefault(int(r[0]), {}).setdefault(int(r[1]), []).append(b)
    num_valid = sum(1 for r in det.reshape(-1, 7) if r[1] != -1)
    npc = num_classes - 1
    top = np.zeros((npc + num_valid, 5), F)
    n = 0
    num_pos = {}
    for item in sorted(all_gt):
        for label in sorted(all_gt[item]):
            bs = all_gt[item][label]
            cnt = len(bs) if evaluate_difficult_gt else sum(not b["difficult"] for b in bs)
            num_pos[label] = num_pos.get(label, 0) + cnt
    for c in range(num_classes):
        if c == background_label_id:
            continue
        top[n] = [-1, c, num_pos.get(c, 0), -1, -1]
        n += 1
    use_norm = len(sizes) == 0
    for item in sorted(all_det):
        dets = all_det[item]
        for label in sorted(dets):
            if label == -1:
                continue
            bboxes = dets[label]
            if item not in all_gt or label not in all_gt[item]:
                for b in bboxes:
                    top[n] = [item, label, b["score"], 0, 1]
                    n += 1
                continue
            gts = all_gt[item][label]
            if not use_norm:
                gts = [_output(g, *sizes[count], resize) for g in gts]
            visited = [False] * len(gts)
            bboxes = sorted(bboxes, key=lambda b: -b["score"])      # stable: ties in order
            for b in bboxes:
                top[n, :3] = [item, label, b["score"]]
                if not use_norm:
                    b = _output(b, *sizes[count], resize)
                omax, jmax = F(-1), -1
                for j, g in enumerate(gts):
                    o = _jaccard(b, g, use_norm)
                    if o > omax:
                        omax, jmax = o, j
                if omax >= F(overlap_threshold):
                    if evaluate_difficult_gt or not gts[jmax]["difficult"]:
                        if not visited[jmax]:
                            top[n, 3:] = [1, 0]
                            visited[jmax] = True
                        else:
                            top[n, 3:] = [0, 1]
                else:
                    top[n, 3:] = [0, 1]
                n += 1
        if sizes:
            count = (count + 1) % len(sizes)
    return top


def random_case(rng, images=3, num_classes=4, n_det=25, n_gt=8, pad=2):
    gt = []
    for _ in range(n_gt):
        x0, y0 = rng.uniform(0, 0.7, 2)
        w, h = rng.uniform(0.1, 0.3, 2)
        gt.append([rng.integers(images), rng.integers(1, num_classes), 0, x0, y0, x0 + w, y0 + h,
                   rng.random() < 0.25])
    gt.sort(key=lambda r: r[0])
    gt += [[-1] * 8] * pad
    det = []
    for _ in range(n_det):
        if rng.random() < 0.6:         # near a ground-truth box
            g = gt[rng.integers(n_gt)]
            box = np.asarray(g[3:7]) + rng.normal(0, 0.04, 4)
            item, label = g[0], g[1] if rng.random() < 0.8 else rng.integers(1, num_classes)
        else:
            x0, y0 = rng.uniform(0, 0.8, 2)
            box = [x0, y0, x0 + 0.2, y0 + 0.15]
            item, label = rng.integers(images + 1), rng.integers(1, num_classes)
        det.append([item, label, round(float(rng.random()), 2), *box])  # rounded: score ties
    det.append([images + 2, -1, -1, -1, -1, -1, -1])        # an image without detections
    return np.asarray(det, np.float64), np.asarray(gt, np.float64)


@pytest.mark.parametrize("difficult", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_matches_ssd_forward_transcribed(seed, difficult):
    det, gt = random_case(np.random.default_rng(seed))
    ours = evaluate(det, gt, num_classes=4, evaluate_difficult_gt=difficult)
    want = ssd_forward(det, gt, 4, evaluate_difficult_gt=difficult)
    np.testing.assert_array_equal(ours, want)


def test_pixel_mode_with_a_name_size_file_matches_ssd(tmp_path):
    det, gt = random_case(np.random.default_rng(7), images=3)
    sizes = [(300, 500), (375, 375), (480, 640)]
    f = tmp_path / "sizes.txt"
    f.write_text("".join(f"img{k} {h} {w}\n" for k, (h, w) in enumerate(sizes)))
    layer = layer_for(det, gt, num_classes=4, name_size_file=str(f))
    want_count = 0
    for _ in range(3):                      # the line counter runs on across forwards
        _, top = run_forward(layer, [det.reshape(1, 1, -1, 7), gt.reshape(1, 1, -1, 8)],
                             [(1, 1, 1, 5)])
        want = ssd_forward(det, gt, 4, sizes=sizes, count=want_count)
        np.testing.assert_array_equal(np.asarray(top[0].data).reshape(-1, 5), want)
        want_count = (want_count + len(np.unique(det[det[:, 0] != -1, 0]))) % 3
        assert layer.count == want_count


@pytest.mark.parametrize("resize", [
    {"resize_mode": "WARP", "height": 300, "width": 300},
    {"resize_mode": "FIT_SMALL_SIZE", "height": 300, "width": 300},
    {"resize_mode": "FIT_SMALL_SIZE", "height": 300, "width": 300, "height_scale": 400,
     "width_scale": 520},
    {"resize_mode": "FIT_LARGE_SIZE_AND_PAD", "height": 300, "width": 300},
    {"resize_mode": "FIT_LARGE_SIZE_AND_PAD", "height": 200, "width": 500}])
def test_pixel_mode_resize_modes_match_ssd(tmp_path, resize):
    det, gt = random_case(np.random.default_rng(11), images=3)
    det[:, 3:7] = np.where(det[:, 1:2] >= 0, det[:, 3:7] * 1.3 - 0.15, det[:, 3:7])  # some outside
    sizes = [(300, 500), (500, 375), (480, 640)]
    f = tmp_path / "sizes.txt"
    f.write_text("".join(f"img{k} {h} {w}\n" for k, (h, w) in enumerate(sizes)))
    ours = evaluate(det, gt, num_classes=4, name_size_file=str(f), resize_param=resize,
                    overlap_threshold=0.4)
    want = ssd_forward(det, gt, 4, sizes=sizes, resize=resize, overlap_threshold=0.4)
    np.testing.assert_array_equal(ours, want)
    assert (want[3:, 3] == 1).any() and (want[3:, 4] == 1).any()


@pytest.mark.parametrize("resize", [
    None, {"resize_mode": "WARP"}, {"resize_mode": "FIT_SMALL_SIZE"},
    {"resize_mode": "FIT_SMALL_SIZE", "height_scale": 400, "width_scale": 520},
    {"resize_mode": "FIT_LARGE_SIZE_AND_PAD", "height": 300, "width": 300},
    {"resize_mode": "FIT_LARGE_SIZE_AND_PAD", "height": 200, "width": 500}])
@pytest.mark.parametrize("h,w", [(300, 500), (500, 375)])
def test_output_boxes_match_ssds_output_bbox(resize, h, w):
    from netspec.layers.detection import output_boxes
    from netspec.spec.params.common import ResizeParameter
    rng = np.random.default_rng(3)
    xy = rng.uniform(-0.2, 1.0, (200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0.0, 0.5, (200, 2))], axis=1).astype(F)
    rp = None if resize is None else ResizeParameter.model_validate(resize)
    out, size = output_boxes(boxes, h, w, rp)
    for b, o, sz in zip(boxes, out, size):
        want = _output({"box": list(b), "size": F(0)}, h, w, resize)
        np.testing.assert_array_equal(o, want["box"])
        assert sz == want["size"]


def test_hand_worked_case():
    """Class 1: two boxes in image 0, three detections: the best-scoring hits box A (IoU 1),
    the second hits A again (a duplicate: false positive), the third misses (IoU 1/7 < 0.5).
    Class 2: no box in image 0 -> its detection is false. Image 1 has no ground truth at all."""
    gt = [[0, 1, 0, 0.0, 0.0, 0.5, 0.5, 0],
          [0, 1, 0, 0.5, 0.5, 1.0, 1.0, 0],
          [0, 2, 0, 0.1, 0.1, 0.2, 0.2, 1],     # difficult
          [-1, -1, -1, -1, -1, -1, -1, -1]]
    det = [[0, 1, 0.7, 0.0, 0.0, 0.5, 0.5],
           [0, 1, 0.9, 0.0, 0.0, 0.5, 0.5],
           [0, 1, 0.3, 0.5, 0.5, 0.75, 0.75],   # 1/4 of B: IoU 0.25
           [0, 3, 0.6, 0.1, 0.1, 0.2, 0.2],
           [1, 2, 0.8, 0.1, 0.1, 0.2, 0.2]]
    top = evaluate(det, gt, num_classes=4)
    np.testing.assert_allclose(top, [[-1, 1, 2, -1, -1], [-1, 2, 1, -1, -1], [-1, 3, 0, -1, -1],
                                     [0, 1, 0.9, 1, 0], [0, 1, 0.7, 0, 1], [0, 1, 0.3, 0, 1],
                                     [0, 3, 0.6, 0, 1], [1, 2, 0.8, 0, 1]], rtol=1e-6)
    # the difficult box is not counted; a detection matching it is neither tp nor fp
    det2 = [[0, 2, 0.5, 0.1, 0.1, 0.2, 0.2]]
    top = evaluate(det2, gt, num_classes=4, evaluate_difficult_gt=False)
    np.testing.assert_allclose(top, [[-1, 1, 2, -1, -1], [-1, 2, 0, -1, -1], [-1, 3, 0, -1, -1],
                                     [0, 2, 0.5, 0, 0]], rtol=1e-6)
    top = evaluate(det2, gt, num_classes=4, evaluate_difficult_gt=True)
    np.testing.assert_allclose(top[3], [0, 2, 0.5, 1, 0], rtol=1e-6)


def test_no_detection_placeholder_gives_only_class_rows():
    gt = [[0, 1, 0, 0.1, 0.1, 0.3, 0.3, 0]]
    det = [[0, -1, -1, -1, -1, -1, -1], [1, -1, -1, -1, -1, -1, -1]]   # DetectionOutput's
    np.testing.assert_array_equal(evaluate(det, gt, num_classes=3),
                                  [[-1, 1, 1, -1, -1], [-1, 2, 0, -1, -1]])


def test_overlap_threshold_is_inclusive_and_background_may_be_any_class():
    gt = [[0, 0, 0, 0.0, 0.0, 0.5, 1.0, 0]]
    det = [[0, 0, 0.5, 0.0, 0.0, 1.0, 1.0]]          # IoU exactly 0.5
    top = evaluate(det, gt, num_classes=2, background_label_id=1)
    np.testing.assert_array_equal(top, [[-1, 0, 1, -1, -1], [0, 0, 0.5, 1, 0]])
    top = evaluate(det, gt, num_classes=2, background_label_id=1, overlap_threshold=0.51)
    np.testing.assert_array_equal(top[1], [0, 0, 0.5, 0, 1])


def test_bad_inputs_name_the_field():
    with pytest.raises(SpecError, match="num_classes"):
        make_layer({"type": "DetectionEvaluate", "detection_evaluate_param": {}},
                   [(1, 1, 1, 7), (1, 1, 1, 8)])
    with pytest.raises(SpecError, match="background_label_id 3 must be below num_classes 3"):
        layer_for([], [], background_label_id=3)
    with pytest.raises(SpecError, match="overlap_threshold must be > 0"):
        layer_for([], [], overlap_threshold=0)
    with pytest.raises(SpecError, match="cannot read the name size file"):
        layer_for([], [], name_size_file="/nonexistent/sizes.txt")
    with pytest.raises(NetspecError, match=r"ground truth must have shape \(1, 1, rows, 8\)"):
        make_layer({"type": "DetectionEvaluate", "detection_evaluate_param": {"num_classes": 2}},
                   [(1, 1, 3, 7), (1, 1, 3, 7)])
    with pytest.raises(NetspecError, match="background label 0"):
        evaluate([[0, 0, 0.5, 0, 0, 1, 1]], [[0, 1, 0, 0, 0, 1, 1, 0]])
    with pytest.raises(NetspecError, match="background label 0"):
        evaluate([[0, 1, 0.5, 0, 0, 1, 1]], [[0, 0, 0, 0, 0, 1, 1, 0]])
