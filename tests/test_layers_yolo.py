"""The YOLO layers of eric612/MobileNet-YOLO: YoloDetectionOutput, Yolov3DetectionOutput and
the losses Yolov3 and RegionLoss.

References that are not the code under test: literal loops written here from the fork's
``yolo_detection_output_layer.cpp``, ``yolov3_detection_output_layer.cpp``,
``bbox_util.cpp``'s ``get_region_box``, ``yolov3_layer.cpp`` and ``region_loss_layer.cpp``
(cell by cell, anchor by anchor, truth by truth, in float64, its ``ApplyNms`` pair by pair),
float64 finite differences, boxes and losses worked out by hand, and OpenCV's
``cv2.dnn.NMSBoxes``.
"""

from __future__ import annotations

import math
import re

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


# -- Yolov3: the loss -----------------------------------------------------------------------------

def literal_yolov3_deltas(x, label, q):
    """The fork's ``Yolov3Layer::Forward_cpu`` (iou_loss MSE) cell by cell, truth by truth:
    its ``diff_`` array, before the backward's ``use_logic_gradient`` factor and the 1/N."""
    N, _, H, W = x.shape
    A, C = q["num"], q["num_class"]
    K = 5 + C
    bias, mask, scale = q["biases"], q["mask"], q["anchors_scale"]
    eps = q.get("label_smooth_eps", 0.1)
    logic = q.get("use_logic_gradient", False)
    iou_thresh = q.get("iou_thresh", 0.5)
    at = x.reshape(N, A, K, H, W).astype(np.float64)
    sw = np.where(np.isin(np.arange(K), [2, 3])[None, None, :, None, None], at,
                  1 / (1 + np.exp(-at)))
    diff = np.zeros_like(at)
    rows = label.reshape(N, -1, 5)

    def region_box(n_anchor, b, a, i, j):
        return [(i + sw[b, a, 0, j, i]) / W, (j + sw[b, a, 1, j, i]) / H,
                math.exp(sw[b, a, 2, j, i]) * bias[2 * n_anchor] / (W * scale),
                math.exp(sw[b, a, 3, j, i]) * bias[2 * n_anchor + 1] / (H * scale)]

    def delta_box(truth, b, a, i, j, s):
        tx, ty = truth[0] * W - i, truth[1] * H - j
        tw = math.log(truth[2] * W * scale / bias[2 * mask[a]])
        th = math.log(truth[3] * H * scale / bias[2 * mask[a] + 1])
        for k, t in enumerate((tx, ty, tw, th)):
            diff[b, a, k, j, i] = -s * (t - sw[b, a, k, j, i])

    def delta_class(b, a, i, j, c):
        if diff[b, a, 5 + c, j, i]:
            y = 1 * (1 - eps) + 0.5 * eps if eps else 1
            diff[b, a, 5 + c, j, i] = -q.get("class_scale", 1) * (y - sw[b, a, 5 + c, j, i])
            return
        for n in range(C):
            y = 1.0 if n == c else 0.0
            if eps:
                y = y * (1 - eps) + 0.5 * eps
            diff[b, a, 5 + n, j, i] = -q.get("class_scale", 1) * (y - sw[b, a, 5 + n, j, i])

    for b in range(N):
        for s in range(H * W):
            for a in range(A):
                j, i = divmod(s, W)
                pred = region_box(mask[a], b, a, i, j)
                best = 0
                for t in range(len(rows[b])):
                    if not rows[b, t, 1]:
                        break
                    best = max(best, literal_iou(pred, rows[b, t, 1:5]))
                diff[b, a, 4, j, i] = sw[b, a, 4, j, i]
                if best > q.get("thresh", 0.2):
                    diff[b, a, 4, j, i] = 0
        for t in range(len(rows[b])):
            c, gx, gy, gw, gh = rows[b, t]
            if not gw:
                break
            i, j = int(gx * W), int(gy * H)
            shape = []
            for n in range(len(bias) // 2):
                aw, ah = bias[2 * n] / (W * scale), bias[2 * n + 1] / (H * scale)
                inter = min(aw, gw) * min(ah, gh)
                shape.append(inter / (aw * ah + gw * gh - inter))
            best_n = int(np.argmax(shape)) if max(shape) > 0 else -1
            places = [mask.index(best_n)] if best_n in mask else []
            places += [mask.index(n) for n in range(len(shape))
                       if n in mask and n != best_n and iou_thresh < 1 and shape[n] > iou_thresh]
            for a in places:
                s = q.get("coord_scale", 5) * (2 - gw * gh)
                delta_box((gx, gy, gw, gh), b, a, i, j, s)
                o = q.get("object_scale", 1) if logic else 1
                diff[b, a, 4, j, i] = -o * (1 - sw[b, a, 4, j, i])
                delta_class(b, a, i, j, int(c))
    if logic:
        slope = sw * (1 - sw)
        slope[:, :, 2:4] = 1
        diff *= slope
    return diff.reshape(x.shape)


YOLOV3 = {"num_class": 3, "num": 2, "object_scale": 5.0, "class_scale": 1.0, "coord_scale": 1.0,
          "thresh": 0.4, "anchors_scale": 8, "biases": [6, 9, 14, 12, 30, 26, 50, 60],
          "mask": [1, 2]}


def yolov3_case(seed=0, N=2, H=4, W=5, A=2, C=3, rows=6):
    """A map and labels where ground truths share cells, classes and anchors."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.8, (N, A * (5 + C), H, W))
    label = np.zeros((N, 1, rows, 5))
    boxes = [[0, 0.31, 0.42, 0.35, 0.30], [2, 0.33, 0.45, 0.30, 0.40],   # one cell, 2 classes
             [1, 0.72, 0.18, 0.12, 0.20], [1, 0.55, 0.81, 0.80, 0.70]]
    label[0, 0, :4] = boxes
    label[1, 0, :2] = [[2, 0.12, 0.88, 0.2, 0.15], [0, 0.9, 0.5, 0.5, 0.6]]
    return x, label


def yolov3_layer(q, shapes, dtype=np.float64):
    from netspec.backend import Backend
    return make_layer({"type": "Yolov3", "yolov3_param": q}, shapes, backend=Backend(np, dtype))


@pytest.mark.parametrize("change", [{}, {"use_logic_gradient": True}, {"label_smooth_eps": 0},
                                    {"iou_thresh": 0.2}, {"iou_thresh": 1.0, "thresh": 0.1},
                                    {"mask": [2, 0], "class_scale": 2.0}])
def test_yolov3_gradient_is_the_forks_delta(change):
    """Backward (top diff 1) = the fork's diff_ / N, written out loop by loop."""
    q = {**YOLOV3, **change}
    x, label = yolov3_case()
    layer, ts = yolov3_layer(q, [x.shape, label.shape])
    bottom, top = run_forward(layer, [x, label], ts)
    top[0].diff = np.ones(())
    layer.backward(top, [True, False], bottom)
    ref = literal_yolov3_deltas(x, label, q) / x.shape[0]
    assert np.abs(ref).max() > 0.05
    np.testing.assert_allclose(bottom[0].diff, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("change", [{}, {"use_logic_gradient": True}, {"iou_thresh": 0.2}])
def test_yolov3_gradients(change):
    """The value is the loss the fork's deltas are the gradient of."""
    from gradcheck import check_gradients
    q = {**YOLOV3, **change}
    x, label = yolov3_case(seed=1)
    layer, ts = yolov3_layer(q, [x.shape, label.shape])
    check_gradients(layer, [x, label], ts)


def test_yolov3_loss_by_hand():
    """One cell, one anchor, one class, all raw values 0 (every sigmoid ½), one ground truth
    at the cell's centre: B(½, t) = log 2 for any t, so the loss is
    λ·(2·log 2 + ½w*² + ½h*²) + log 2 + log 2 with λ = 2 − w·h (coord_scale 1)."""
    q = {"num_class": 1, "num": 1, "coord_scale": 1.0, "anchors_scale": 10, "biases": [5, 4],
         "mask": [0], "thresh": 0.9}
    x = np.zeros((1, 6, 1, 1))
    label = np.zeros((1, 1, 3, 5))
    label[0, 0, 0] = [0, 0.5, 0.5, 0.6, 0.3]
    layer, ts = yolov3_layer(q, [x.shape, label.shape])
    _, top = run_forward(layer, [x, label], ts)
    lam = 2 - 0.6 * 0.3
    wt, ht = math.log(0.6 / 0.5), math.log(0.3 / 0.4)
    expect = lam * (2 * math.log(2) + wt * wt / 2 + ht * ht / 2) + 2 * math.log(2)
    assert float(top[0].data) == pytest.approx(expect, rel=1e-12)


def test_yolov3_float32_matches_float64():
    q = dict(YOLOV3)
    x, label = yolov3_case(seed=2)
    out = {}
    for dt in (np.float32, np.float64):
        layer, ts = yolov3_layer(q, [x.shape, label.shape], dtype=dt)
        bottom, top = run_forward(layer, [x.astype(dt), label.astype(dt)], ts)
        top[0].diff = np.ones((), dt)
        layer.backward(top, [True, False], bottom)
        out[dt] = (float(top[0].data), bottom[0].diff)
    assert out[np.float32][0] == pytest.approx(out[np.float64][0], rel=1e-5)
    np.testing.assert_allclose(out[np.float32][1], out[np.float64][1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("param,words", [
    ({"iou_loss": "GIOU"}, "iou_loss GIOU is not implemented"),
    ({"use_focal_loss": True}, "use_focal_loss is not implemented"),
    ({"mask": [1]}, "mask must name the num = 2 anchors"),
    ({"mask": [1, 7]}, "biases as (w, h) pairs for anchors 0 … 7"),
    ({"anchors_scale": 0}, "anchors_scale must be at least 1"),
])
def test_yolov3_refuses_bad_parameters(param, words):
    x, label = yolov3_case()
    with pytest.raises(SpecError, match=re.escape(words)):
        yolov3_layer({**YOLOV3, **param}, [x.shape, label.shape])


def test_yolov3_refuses_bad_shapes_and_classes():
    x, label = yolov3_case()
    with pytest.raises(NetspecError, match=r"must be \(N, num·\(5 \+ num_class\) = 16"):
        yolov3_layer(YOLOV3, [(2, 15, 4, 5), label.shape])
    with pytest.raises(NetspecError, match="rows of 5 values"):
        yolov3_layer(YOLOV3, [x.shape, (2, 1, 6, 4)])
    label[1, 0, 0, 0] = 3
    layer, ts = yolov3_layer(YOLOV3, [x.shape, label.shape])
    with pytest.raises(NetspecError, match="class 3, outside 0 … 2"):
        run_forward(layer, [x, label], ts)


FORK_YOLOV3_TRAIN = """name: "tiny"
layer { name: "data" type: "AnnotatedData" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.007843 mirror: true mean_value: 127.5 mean_value: 127.5
    mean_value: 127.5
    resize_param { prob: 1.0 resize_mode: WARP height: 64 width: 64 interp_mode: LINEAR }
    %s }
  data_param { source: "absent_lmdb" batch_size: 4 backend: LMDB }
  annotated_data_param { yolo_data_type : 1 batch_sampler { max_sample: 1 max_trials: 1 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 4 } }
layer { name: "head" type: "Convolution" bottom: "conv" top: "head"
  convolution_param { num_output: 75 kernel_size: 1 } }
layer { name: "Yolov3Loss1" type: "Yolov3" bottom: "head" bottom: "label" top: "det_loss1"
  loss_weight: 1
  yolov3_param { side: 16 num_class: 20 num: 3 object_scale: 5.0 noobject_scale: 1.0
    class_scale: 1.0 coord_scale: 1.0 thresh: 0.6
	anchors_scale : 4
	use_logic_gradient : false
    biases: 10 biases: 14 biases: 23 biases: 27 biases: 37 biases: 58
	mask:0 mask:1 mask:2 } }
"""


def test_a_forks_yolov3_training_file_converts_and_builds_with_stand_in_data(tmp_path):
    """The fork's vocabulary (its spacing, `yolo_data_type : 1`) converts; `summary --no-data`
    stands YOLO's labels in as (N, 1, 300, 5) and builds the loss; several resize_param blocks
    (the fork's multi-scale training) convert to a list, and the stand-in takes the first's
    size, saying so."""
    import json

    from click.testing import CliRunner

    from netspec.cli import main
    src = tmp_path / "train.prototxt"
    src.write_text(FORK_YOLOV3_TRAIN % "")
    r = CliRunner().invoke(main, ["convert", str(src)])
    assert r.exit_code == 0, r.stderr
    r = CliRunner().invoke(main, ["summary", "--json", "--no-data", str(tmp_path / "train.yaml")])
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    tops = {x["name"]: [t["shape"] for t in x["tops"]] for x in info["layers"]}
    assert tops["data"] == [[4, 3, 64, 64], [4, 1, 300, 5]]
    assert tops["head"] == [[4, 75, 16, 16]] and tops["Yolov3Loss1"] == [[]]
    resize = "resize_param { prob: 0.0 resize_mode: WARP height: 32 width: 32 }"
    src.write_text(FORK_YOLOV3_TRAIN % resize)
    r = CliRunner().invoke(main, ["convert", "--force", str(src)])
    assert r.exit_code == 0, r.stderr
    from netspec.spec import load_net
    policies = load_net(tmp_path / "train.yaml").layer[0].transform_param.resize_param
    assert [(x.prob, x.height) for x in policies] == [(1.0, 64), (0.0, 32)]
    r = CliRunner().invoke(main, ["summary", "--json", "--no-data", str(tmp_path / "train.yaml")])
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["layers"][0]["tops"][0]["shape"] == [4, 3, 64, 64]
    assert "the first of 2 resize policies (64×64, 32×32)" in info["notes"][0]


# -- RegionLoss: YOLOv2's loss --------------------------------------------------------------------

def fork_iou(a, b):
    """The fork's ``box_iou`` in its types: edges, intersection and union rounded to float32
    (its ``float`` locals), the quotient rounded to float32 (``float iou = box_iou(…)``)."""
    f = np.float32

    def ov(x1, w1, x2, w2):
        return min(f(x1 + w1 / 2), f(x2 + w2 / 2)) - max(f(x1 - w1 / 2), f(x2 - w2 / 2))
    w, h = ov(a[0], a[2], b[0], b[2]), ov(a[1], a[3], b[1], b[3])
    inter = f(0) if w < 0 or h < 0 else w * h
    union = f(a[2] * a[3] + b[2] * b[3] - float(inter))
    return float(f(float(inter) / float(union)))


def literal_region_deltas(x, label, q):
    """The fork's ``RegionLossLayer::Forward_cpu`` cell by cell, truth by truth, in float64:
    its ``diff_`` array (the backward is diff_ · top diff / N)."""
    N, _, S, W = x.shape
    assert S == W
    A, C = q["num"], q["num_class"]
    K = 5 + C
    bias = q["biases"]
    rescore, bias_match = q.get("rescore", 1), q.get("bias_match", 1)
    at = x.reshape(N, A, K, S, S).astype(np.float64)
    swap = at.copy()                                  # channel 4 logistic, the classes softmax
    diff = np.zeros_like(at)
    rows = label.reshape(N, -1, 5)

    def region_box(a, b, i, j):
        return [(i + sig(swap[b, a, 0, j, i])) / S, (j + sig(swap[b, a, 1, j, i])) / S,
                math.exp(swap[b, a, 2, j, i]) * bias[2 * a] / S,
                math.exp(swap[b, a, 3, j, i]) * bias[2 * a + 1] / S]

    def delta_box(truth, a, b, i, j, scale):
        pred = region_box(a, b, i, j)
        iou = fork_iou(pred, truth)
        tx, ty = truth[0] * S - i, truth[1] * S - j
        tw, th = math.log(truth[2] * S / bias[2 * a]), math.log(truth[3] * S / bias[2 * a + 1])
        for k, t in ((0, tx), (1, ty)):
            s = sig(swap[b, a, k, j, i])
            diff[b, a, k, j, i] = -scale * (t - s) * s * (1 - s)
        for k, t in ((2, tw), (3, th)):
            diff[b, a, k, j, i] = -scale * (t - swap[b, a, k, j, i])
        return iou

    for b in range(N):
        for s in range(S * S):
            for a in range(A):
                j, i = divmod(s, S)
                swap[b, a, 4, j, i] = sig(at[b, a, 4, j, i])
                z = at[b, a, 5:, j, i]
                e = np.exp(z - z.max())
                swap[b, a, 5:, j, i] = e / e.sum()
                pred = region_box(a, b, i, j)
                best = 0
                for t in range(len(rows[b])):
                    if not rows[b, t, 1]:
                        break
                    iou = fork_iou(pred, rows[b, t, 1:5])
                    if iou > best:
                        best = iou
                o = swap[b, a, 4, j, i]
                diff[b, a, 4, j, i] = -q.get("noobject_scale", 0.5) * (0 - o) * (1 - o) * o
                if best > q.get("thresh", 0.2):
                    diff[b, a, 4, j, i] = 0
        for t in range(len(rows[b])):
            c, gx, gy, gw, gh = rows[b, t]
            if not gw:
                break
            i, j = int(gx * S), int(gy * S)
            best, best_n = 0, 0
            for a in range(A):
                pred = region_box(a, b, i, j)
                if bias_match:
                    pred[2], pred[3] = bias[2 * a] / S, bias[2 * a + 1] / S
                iou = fork_iou([0, 0, pred[2], pred[3]], [0, 0, gw, gh])
                if iou > best:
                    best, best_n = iou, a
            assert best > 0
            a = best_n
            scale = q.get("coord_scale", 5) * (1 if rescore else 2 - gw * gh)
            iou = delta_box((gx, gy, gw, gh), a, b, i, j, scale)
            o = swap[b, a, 4, j, i]
            target = iou if rescore else 1
            diff[b, a, 4, j, i] = -q.get("object_scale", 1) * (target - o) * (1 - o) * o
            for n in range(C):
                diff[b, a, 5 + n, j, i] = -q.get("class_scale", 1) * (
                    (1 if n == int(c) else 0) - swap[b, a, 5 + n, j, i])
    return diff.reshape(x.shape)


REGION = {"num_class": 3, "num": 3, "object_scale": 5.0, "noobject_scale": 1.0,
          "class_scale": 1.0, "coord_scale": 1.0, "thresh": 0.4, "rescore": 1, "bias_match": 1,
          "biases": [0.8, 1.2, 2.0, 1.5, 1.3, 2.6, 9, 9, 9, 9]}


def region_case(seed=0, N=2, S=5, A=3, C=3, rows=7):
    """A map and labels where ground truths share cells (one cell twice with the same anchor,
    once with another), classes and anchors."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.8, (N, A * (5 + C), S, S))
    label = np.zeros((N, 1, rows, 5))
    label[0, 0, :5] = [[0, 0.31, 0.42, 0.25, 0.22], [2, 0.33, 0.45, 0.20, 0.27],  # one place
                       [1, 0.35, 0.41, 0.40, 0.55],                                # the cell again
                       [1, 0.72, 0.18, 0.12, 0.20], [1, 0.55, 0.81, 0.80, 0.70]]
    label[1, 0, :2] = [[2, 0.12, 0.88, 0.2, 0.15], [0, 0.9, 0.5, 0.5, 0.6]]
    return x, label


def region_layer(q, shapes, dtype=np.float64):
    from netspec.backend import Backend
    return make_layer({"type": "RegionLoss", "region_loss_param": q}, shapes,
                      backend=Backend(np, dtype))


REGION_SETTINGS = [{}, {"rescore": 0}, {"bias_match": 0}, {"bias_match": 0, "rescore": 0},
                   {"thresh": 0.05, "class_scale": 2.0, "coord_scale": 3.0},
                   {"softmax": 0, "noobject_scale": 0.5, "object_scale": 1.0}]


@pytest.mark.parametrize("change", REGION_SETTINGS)
def test_region_loss_gradient_is_the_forks_delta(change):
    """Backward (top diff 2) = 2 · the fork's diff_ / N, written out loop by loop."""
    q = {**REGION, **change}
    x, label = region_case()
    layer, ts = region_layer(q, [x.shape, label.shape])
    bottom, top = run_forward(layer, [x, label], ts)
    top[0].diff = np.full((), 2.0)
    layer.backward(top, [True, False], bottom)
    ref = 2 * literal_region_deltas(x, label, q) / x.shape[0]
    assert np.abs(ref).max() > 0.05
    np.testing.assert_allclose(bottom[0].diff, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("change", [{"rescore": 0}, {"rescore": 0, "bias_match": 0},
                                    {"rescore": 0, "thresh": 0.05, "class_scale": 2.0}])
def test_region_loss_gradients(change):
    """Without rescore the value is the loss the fork's deltas are the gradient of."""
    from gradcheck import check_gradients
    q = {**REGION, **change}
    x, label = region_case(seed=1)
    layer, ts = region_layer(q, [x.shape, label.shape])
    check_gradients(layer, [x, label], ts)


@pytest.mark.parametrize("bias_match", [1, 0])
def test_region_loss_gradients_with_rescore_hold_the_iou_target(bias_match):
    """With rescore the objectness target is the predicted box's IoU, which the fork's delta
    holds constant: finite differences agree along every direction that leaves the box
    channels of the ground truths' places alone (the IoU's own change is not followed)."""
    q = {**REGION, "bias_match": bias_match}
    x, label = region_case(seed=1)
    layer, ts = region_layer(q, [x.shape, label.shape])
    bottom, top = run_forward(layer, [x, label], ts)
    top[0].diff = np.ones(())
    layer.backward(top, [True, False], bottom)
    N, A, C, S = 2, 3, 3, 5
    from netspec.layers.neuron import sigmoid
    v = x.reshape(N, A, 5 + C, S, S)
    pos = layer.targets(sigmoid(np, v[:, :, :5]), v, label.reshape(N, -1, 5))["positive"]
    free = np.ones(v.shape, dtype=bool)
    free[:, :, :4] &= ~pos[:, :, None]

    def loss(at):
        return float(run_forward(layer, [at, label], ts)[1][0].data)
    rng = np.random.default_rng(3)
    for _ in range(4):
        d = rng.standard_normal(x.shape) * free.reshape(x.shape)
        d /= np.linalg.norm(d)
        eps = 1e-5
        numeric = (loss(x + eps * d) - loss(x - eps * d)) / (2 * eps)
        assert numeric == pytest.approx(float((bottom[0].diff * d).sum()), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("rescore", [0, 1])
def test_region_loss_by_hand(rescore):
    """One cell, two anchors (0.5 × 0.4 and 9 × 9 cells), two classes, all raw values 0
    (every sigmoid ½, class probabilities ½), one ground truth of class 1 at the cell's centre,
    0.6 × 0.3: anchor 0 takes it (x* = y* = ½ = σ), anchor 1 (IoU with it 0.18/81 < thresh)
    only pays noobject_scale/2·¼. Without rescore λ = 2 − 0.18 and o* = 1; with it λ = 1 and
    o* = IoU((½, ½, 0.5, 0.4), (½, ½, 0.6, 0.3)) = 0.15/0.23."""
    q = {"num_class": 2, "num": 2, "coord_scale": 1.0, "object_scale": 5.0,
         "noobject_scale": 0.5, "class_scale": 1.0, "thresh": 0.6, "rescore": rescore,
         "biases": [0.5, 0.4, 9, 9, 1, 1, 1, 1, 1, 1]}
    x = np.zeros((1, 14, 1, 1))
    label = np.zeros((1, 1, 3, 5))
    label[0, 0, 0] = [1, 0.5, 0.5, 0.6, 0.3]
    layer, ts = region_layer(q, [x.shape, label.shape])
    _, top = run_forward(layer, [x, label], ts)
    lam, target = (1, 0.15 / 0.23) if rescore else (2 - 0.18, 1)
    wt, ht = math.log(0.6 / 0.5), math.log(0.3 / 0.4)
    expect = (lam * (wt * wt + ht * ht) / 2 + 5 / 2 * (0.5 - target) ** 2 + math.log(2)
              + 0.5 / 2 * 0.25)
    assert float(top[0].data) == pytest.approx(expect, rel=1e-7 if rescore else 1e-12)


def test_region_loss_float32_matches_float64():
    x, label = region_case(seed=2)
    out = {}
    for dt in (np.float32, np.float64):
        layer, ts = region_layer(REGION, [x.shape, label.shape], dtype=dt)
        bottom, top = run_forward(layer, [x.astype(dt), label.astype(dt)], ts)
        top[0].diff = np.ones((), dt)
        layer.backward(top, [True, False], bottom)
        out[dt] = (float(top[0].data), bottom[0].diff)
    assert out[np.float32][0] == pytest.approx(out[np.float64][0], rel=1e-5)
    np.testing.assert_allclose(out[np.float32][1], out[np.float64][1], rtol=1e-4, atol=1e-6)


def test_region_loss_edge_ground_truths():
    """A ground truth of height 0 fits no anchor and is left out (the fork would write it at
    the batch's first cell); one at x = 1 goes to the last column (the fork's ⌊x·S⌋ = S
    indexes past the row), with x* = 1."""
    q = {**REGION, "rescore": 0}
    x, label = region_case(seed=4)
    layer, ts = region_layer(q, [x.shape, label.shape])
    b0, t0 = run_forward(layer, [x, label], ts)
    flat = label.copy()
    flat[1, 0, 2] = [1, 0.4, 0.4, 0.3, 0]
    b1, t1 = run_forward(layer, [x, flat], ts)
    assert float(t1[0].data) == float(t0[0].data)
    edge = label.copy()
    edge[1, 0, 2] = [1, 1.0, 0.3, 0.2, 0.2]
    from netspec.layers.neuron import sigmoid
    v = x.reshape(2, 3, 8, 5, 5)
    q = layer.targets(sigmoid(np, v[:, :, :5]), v, edge.reshape(2, -1, 5))
    (a,) = np.flatnonzero(q["positive"][1, :, 1, 4])            # cell (i, j) = (4, 1)
    assert q["box"][1, a, 0, 1, 4] == pytest.approx(1)


@pytest.mark.parametrize("param,words", [
    ({"coords": 5}, "coords 5 is not implemented"),
    ({"biases": [1, 1, 2, 2, 3, 3]}, "at least 10 values"),
    ({"num": 6}, "for the num = 6 anchors"),
    ({"biases": [1, 0, 2, 2, 3, 3, 4, 4, 5, 5]}, "must be positive"),
    ({"num": 0}, "needs num and num_class of at least 1"),
])
def test_region_loss_refuses_bad_parameters(param, words):
    x, label = region_case()
    with pytest.raises(SpecError, match=re.escape(words)):
        region_layer({**REGION, **param}, [x.shape, label.shape])


def test_region_loss_refuses_bad_shapes_and_classes():
    x, label = region_case()
    with pytest.raises(NetspecError, match=r"a square map, as the fork reads it"):
        region_layer(REGION, [(2, 24, 5, 6), label.shape])
    with pytest.raises(NetspecError, match=r"must be \(N, num·\(5 \+ num_class\) = 24"):
        region_layer(REGION, [(2, 23, 5, 5), label.shape])
    with pytest.raises(NetspecError, match="rows of 5 values"):
        region_layer(REGION, [x.shape, (2, 1, 7, 4)])
    label[1, 0, 0, 0] = 3
    layer, ts = region_layer(REGION, [x.shape, label.shape])
    with pytest.raises(NetspecError, match="class 3, outside 0 … 2"):
        run_forward(layer, [x, label], ts)


FORK_REGION_TRAIN = """name: "tiny"
layer { name: "data" type: "AnnotatedData" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.007843 mirror: true mean_value: 127.5 mean_value: 127.5
    mean_value: 127.5
    resize_param { prob: 1.0 resize_mode: WARP height: 64 width: 64 interp_mode: LINEAR } }
  data_param { source: "absent_lmdb" batch_size: 4 backend: LMDB }
  annotated_data_param { yolo_data_type : 1 batch_sampler { max_sample: 1 max_trials: 1 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 4 } }
layer { name: "conv22" type: "Convolution" bottom: "conv" top: "conv22"
  convolution_param { num_output: 125 kernel_size: 1 } }
layer {
  name: "Region_Loss1"
  type: "RegionLoss"
  bottom: "conv22"
  bottom: "label"
  top: "det_loss1"
  loss_weight: 1
  region_loss_param {
    side: 13
    num_class: 20
    coords: 4
    num: 5
    softmax: 1
    jitter: 0.2
    rescore: 1

    object_scale: 5.0
    noobject_scale: 1.0
    class_scale: 1.0
    coord_scale: 1.0

    absolute: 1
    thresh: 0.6
    random: 0

    biases: 1.08
    biases: 1.19
    biases: 3.42
    biases: 4.41
    biases: 6.63
    biases: 11.38
    biases: 9.42
    biases: 5.11
    biases: 16.62
    biases: 10.52
  }
}
"""


def test_a_forks_region_loss_training_file_converts_and_builds_with_stand_in_data(tmp_path):
    """The fork's RegionLoss block as its mobilenet_yolo_train.prototxt writes it converts,
    keeps its fields, and builds the loss on YOLO's (N, 1, 300, 5) labels; a wrong coords is
    one message naming the field."""
    import json

    import yaml
    from click.testing import CliRunner

    from netspec.cli import main
    src = tmp_path / "train.prototxt"
    src.write_text(FORK_REGION_TRAIN)
    r = CliRunner().invoke(main, ["convert", str(src)])
    assert r.exit_code == 0, r.stderr
    net = yaml.safe_load((tmp_path / "train.yaml").read_text())
    block = net["layer"][-1]["region_loss_param"]
    assert block["thresh"] == 0.6 and block["biases"][-1] == 10.52 and block["random"] == 0
    r = CliRunner().invoke(main, ["summary", "--json", "--no-data", str(tmp_path / "train.yaml")])
    assert r.exit_code == 0, r.stderr
    tops = {x["name"]: [t["shape"] for t in x["tops"]] for x in json.loads(r.stdout)["layers"]}
    assert tops["data"] == [[4, 3, 64, 64], [4, 1, 300, 5]]
    assert tops["conv22"] == [[4, 125, 16, 16]] and tops["Region_Loss1"] == [[]]
    src.write_text(FORK_REGION_TRAIN.replace("coords: 4", "coords: 2"))
    r = CliRunner().invoke(main, ["convert", "--force", str(src)])
    assert r.exit_code == 0, r.stderr
    r = CliRunner().invoke(main, ["summary", "--no-data", str(tmp_path / "train.yaml")])
    assert r.exit_code != 0
    assert "region_loss_param.coords" in r.stderr and "coords 2 is not implemented" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
