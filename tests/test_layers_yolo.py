"""The YOLO detection outputs of eric612/MobileNet-YOLO: YoloDetectionOutput, Yolov3DetectionOutput.

References that are not the code under test: literal loops written here from the fork's
``yolo_detection_output_layer.cpp``, ``yolov3_detection_output_layer.cpp`` and
``bbox_util.cpp``'s ``get_region_box`` (cell by cell, anchor by anchor, in float64, its
``ApplyNms`` pair by pair), a box worked out by hand, and OpenCV's ``cv2.dnn.NMSBoxes``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from gradcheck import make_layer, run_forward
from layer_cases import F32

from netspec.errors import NetspecError, SpecError
from netspec.layers.yolo import yolo_nms


def sig(v):
    return 1 / (1 + math.exp(-v))


def literal_iou(a, b):
    def ov(x1, w1, x2, w2):
        return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)
    w, h = ov(a[0], a[2], b[0], b[2]), ov(a[1], a[3], b[1], b[3])
    inter = 0 if w < 0 or h < 0 else w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def literal_nms_rows(preds, thr):
    """Sorted by score (stable), the fork's pairwise ApplyNms, rows [0, label, score, box]."""
    preds = sorted(preds, key=lambda p: -p[1])
    dropped = set()
    for i in range(len(preds)):
        if i in dropped:
            continue
        for j in range(i + 1, len(preds)):
            if j not in dropped and literal_iou(preds[i][2], preds[j][2]) >= thr:
                dropped.add(j)
    rows = []
    for k, (c, s, (x, y, w, h)) in enumerate(preds):
        if k not in dropped:
            rows.append([0, c + 1, s, x - w / 2, y - h / 2, x + w / 2, y + h / 2])
    return np.array(rows).reshape(-1, 7)


def literal_yolo2(x, C, B, biases, conf_thr, nms_thr):
    """One image: the fork's region decoding, cell (j, i), then anchor n."""
    S = x.shape[-1]
    per = 5 + C
    preds = []
    for j in range(S):
        for i in range(S):
            for n in range(B):
                v = x[0, n * per:(n + 1) * per, j, i]
                box = ((i + sig(v[0])) / S, (j + sig(v[1])) / S,
                       math.exp(v[2]) * biases[2 * n] / S, math.exp(v[3]) * biases[2 * n + 1] / S)
                e = [math.exp(c - max(v[5:])) for c in v[5:]]
                probs = [q / sum(e) for q in e]
                best = max(range(C), key=lambda c: (probs[c], -c))
                score = sig(v[4]) * probs[best]
                if score >= conf_thr:
                    preds.append((best, score, box))
    return literal_nms_rows(preds, nms_thr)


def literal_yolo3(xs, C, B, biases, mask, scales, conf_thr, nms_thr):
    """One image: the fork's YOLOv3 decoding, bottom t, cell s = j·W + i, anchor n, class c."""
    preds = []
    groups = len(mask) // len(xs)
    for t, x in enumerate(xs):
        _, _, H, W = x.shape
        per = 5 + C
        for j in range(H):
            for i in range(W):
                for n in range(B):
                    v = x[0, n * per:(n + 1) * per, j, i]
                    a = mask[n + t * groups]
                    box = ((i + sig(v[0])) / W, (j + sig(v[1])) / H,
                           math.exp(v[2]) * biases[2 * a] / (W * scales[t]),
                           math.exp(v[3]) * biases[2 * a + 1] / (H * scales[t]))
                    for c in range(C):
                        score = sig(v[5 + c]) * sig(v[4])
                        if score > conf_thr:
                            preds.append((c, score, box))
    return literal_nms_rows(preds, nms_thr)


def compare_rows(ours, ref):
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(ours[:, :2], ref[:, :2])
    np.testing.assert_allclose(ours[:, 2:], ref[:, 2:], rtol=1e-5, atol=1e-6)


def test_yolo_detection_output_matches_a_literal_loop():
    rng = np.random.default_rng(0)
    C, B, S = 4, 3, 5
    x = rng.normal(0, 1.5, (1, B * (5 + C), S, S)).astype(np.float32)
    biases = [1.1, 1.2, 3.4, 4.4, 6.6, 11.4]
    param = {"num_classes": C, "num_box": B, "biases": biases, "confidence_threshold": 0.2,
             "nms_threshold": 0.3}
    layer, ts = make_layer({"type": "YoloDetectionOutput", "yolo_detection_output_param": param},
                           [x.shape], backend=F32)
    _, (top,) = run_forward(layer, [x], ts)
    ref = literal_yolo2(x.astype(np.float64), C, B, biases, 0.2, 0.3)
    assert 3 < len(ref) < S * S * B                         # some kept, some suppressed
    compare_rows(top.data[0, 0], ref)


@pytest.mark.parametrize("shapes,scales", [([(7, 7), (14, 14)], [32, 16]),
                                           ([(4, 6), (8, 12), (16, 24)], [32, 16, 8])])
def test_yolov3_detection_output_matches_a_literal_loop(shapes, scales):
    rng = np.random.default_rng(1)
    C, B = 3, 3
    T = len(shapes)
    xs = [rng.normal(0, 1.5, (1, B * (5 + C), h, w)).astype(np.float32) for h, w in shapes]
    biases = [10, 14, 23, 27, 37, 58, 81, 82, 135, 169, 344, 319, 30, 61, 62, 45, 59, 119]
    mask = list(range(3 * T))[::-1]
    param = {"num_classes": C, "num_box": B, "biases": biases[:6 * T], "mask": mask,
             "anchors_scale": scales, "mask_group_num": T, "confidence_threshold": 0.4,
             "nms_threshold": 0.45}
    layer, ts = make_layer({"type": "Yolov3DetectionOutput",
                            "yolov3_detection_output_param": param}, [x.shape for x in xs],
                           backend=F32)
    _, (top,) = run_forward(layer, xs, ts)
    ref = literal_yolo3([x.astype(np.float64) for x in xs], C, B, biases, mask, scales, 0.4, 0.45)
    assert 3 < len(ref)
    compare_rows(top.data[0, 0], ref)


def test_yolov3_box_by_hand_and_the_empty_placeholder():
    """One anchor with zero offsets at cell (i, j) = (1, 0) of a 2×2 map scaled by 16:
    centre ((1 + ½)/2, (0 + ½)/2), size = the anchor over the 32-pixel input; score ½·½."""
    C, B = 1, 1
    x = np.full((2, B * 6, 2, 2), -30, np.float32)
    x[0, :4, 0, 1] = 0
    x[0, 4:, 0, 1] = 0
    param = {"num_classes": C, "num_box": B, "biases": [8, 16], "mask": [0],
             "anchors_scale": [16], "mask_group_num": 1, "confidence_threshold": 0.2}
    layer, ts = make_layer({"type": "Yolov3DetectionOutput",
                            "yolov3_detection_output_param": param}, [x.shape], backend=F32)
    _, (top,) = run_forward(layer, [x], ts)
    np.testing.assert_allclose(top.data[0, 0], [[0, 1, 0.25, 0.75 - 0.125, 0.25 - 0.25,
                                                 0.75 + 0.125, 0.25 + 0.25]], rtol=1e-6)
    x[0, 4, 0, 1] = -30
    _, (top,) = run_forward(layer, [x], ts)                 # nothing: one row per image
    np.testing.assert_array_equal(top.data[0, 0], [[0] + [-1] * 6, [1] + [-1] * 6])


def test_yolo_nms_agrees_with_opencv():
    cv2 = pytest.importorskip("cv2", reason="OpenCV (opencv-python-headless) is not installed")
    rng = np.random.default_rng(2)
    K = 300
    xy = rng.uniform(0, 1, (K, 2))
    wh = rng.uniform(0.05, 0.3, (K, 2))
    scores = rng.uniform(0, 1, K)
    order = np.argsort(-scores, kind="stable")
    boxes = np.concatenate([xy, wh], 1)[order].astype(np.float32)
    ours = yolo_nms(boxes, 0.4)
    corner = [[float(x - w / 2), float(y - h / 2), float(w), float(h)] for x, y, w, h in boxes]
    theirs = cv2.dnn.NMSBoxes(corner, [float(s) for s in scores[order]], 0.0, 0.4)
    assert 10 < len(ours) < K
    assert sorted(ours.tolist()) == sorted(np.asarray(theirs).reshape(-1).tolist())


@pytest.mark.parametrize("type_name,param,shapes,words", [
    ("Yolov3DetectionOutput", {"mask": [0, 1, 2], "biases": [1] * 6, "anchors_scale": [32]},
     [(1, 75, 4, 4)], "mask_group_num 2 must be the number of bottoms, 1"),
    ("Yolov3DetectionOutput", {"mask": [0, 1, 2], "biases": [1] * 4, "anchors_scale": [32],
                               "mask_group_num": 1}, [(1, 75, 4, 4)], "needs 6 biases"),
    ("Yolov3DetectionOutput", {"mask": [0, 1, 2], "biases": [1] * 6, "mask_group_num": 1},
     [(1, 75, 4, 4)], "one anchors_scale per bottom"),
    ("Yolov3DetectionOutput", {"mask": [0, 1, 2], "biases": [1] * 6, "anchors_scale": [32],
                               "mask_group_num": 1, "gaussian_box": True}, [(1, 75, 4, 4)],
     "gaussian_box is not implemented"),
    ("YoloDetectionOutput", {"biases": [1] * 8}, [(1, 125, 4, 4)], "needs 10 biases"),
])
def test_yolo_outputs_refuse_bad_parameters(type_name, param, shapes, words):
    block = "yolov3_detection_output_param" if "v3" in type_name else "yolo_detection_output_param"
    with pytest.raises(SpecError, match=words):
        make_layer({"type": type_name, block: param}, shapes)


@pytest.mark.parametrize("type_name,param,shapes,words", [
    ("Yolov3DetectionOutput", {"mask": [0, 1, 2], "biases": [1] * 6, "anchors_scale": [32],
                               "mask_group_num": 1}, [(1, 74, 4, 4)], r"must be \(N, num_box"),
    ("YoloDetectionOutput", {"biases": [1] * 10}, [(1, 125, 4, 5)], "a square map"),
])
def test_yolo_outputs_refuse_bad_shapes(type_name, param, shapes, words):
    block = "yolov3_detection_output_param" if "v3" in type_name else "yolo_detection_output_param"
    with pytest.raises(NetspecError, match=words):
        make_layer({"type": type_name, block: param}, shapes)
