"""SSD's detection layers (weiliu89/caffe): PriorBox and DetectionOutput, forward only.

References that are not the code under test: values recorded by a real fork
(eric612/MobileNet-YOLO, tests/golden/forks/layers/: priorbox_basic, priorbox_step_clip,
detection_output, compared row for row), literal loops written here from SSD's definitions,
and OpenCV's ``cv2.dnn.NMSBoxes`` for the NMS. (OpenCV's PriorBox and DetectionOutput layers
are compared in tests/test_opencv_parity.py.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from gradcheck import make_layer, run_forward
from layer_cases import F32

from netspec.errors import NetspecError, SpecError
from netspec.layers.detection import decode_boxes, iou_matrix, nms


def _golden(case):
    pytest.importorskip("google.protobuf", reason="protobuf is not installed")
    from layer_cases import fork_golden_net
    net, g = fork_golden_net(case)
    for key, value in g.items():
        if key.startswith("input/"):
            net.blobs[key.split("/", 1)[1]].data[...] = value
    net.forward()
    return net, g


# -- PriorBox ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["priorbox_basic", "priorbox_step_clip"])
def test_fork_golden_prior_box(case):
    net, g = _golden(case)
    ours, theirs = net.blobs["p"].data, g["top/p"]
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-7)   # recorded: equal


def literal_priors(H, W, img_h, img_w, min_sizes, max_sizes, ratios, flip, clip, variance,
                   step_h=None, step_w=None, offset=0.5):
    """SSD's PriorBox written out loop by loop, in float64."""
    ars = [1.0]
    for r in ratios:
        if any(abs(r - a) < 1e-6 for a in ars):
            continue
        ars.append(r)
        if flip:
            ars.append(1 / r)
    sh = step_h if step_h is not None else img_h / H
    sw = step_w if step_w is not None else img_w / W
    boxes = []
    for h in range(H):
        for w in range(W):
            cx, cy = (w + offset) * sw, (h + offset) * sh
            for k, s in enumerate(min_sizes):
                shapes = [(s, s)]
                if max_sizes:
                    shapes.append((math.sqrt(s * max_sizes[k]),) * 2)
                shapes += [(s * math.sqrt(a), s / math.sqrt(a)) for a in ars if abs(a - 1) >= 1e-6]
                for bw, bh in shapes:
                    boxes.append([(cx - bw / 2) / img_w, (cy - bh / 2) / img_h,
                                  (cx + bw / 2) / img_w, (cy + bh / 2) / img_h])
    boxes = np.array(boxes)
    if clip:
        boxes = boxes.clip(0, 1)
    var = np.tile(variance if len(variance) == 4 else [variance[0]] * 4, len(boxes))
    return np.stack([boxes.reshape(-1), var])[None]


@pytest.mark.parametrize("param,img,expect", [
    ({"min_size": [30], "aspect_ratio": [2, 0.5, 3], "flip": False},   # 0.5 is kept: no flip
     None, dict(min_sizes=[30], max_sizes=[], ratios=[2, 0.5, 3], flip=False, clip=False,
                variance=[0.1])),
    ({"min_size": [30], "max_size": [60], "aspect_ratio": [2, 2.0000001], "clip": True,
      "variance": [0.2]},                                               # duplicate ratio dropped
     None, dict(min_sizes=[30], max_sizes=[60], ratios=[2], flip=True, clip=True, variance=[0.2])),
    ({"min_size": [16], "img_size": 100, "step_h": 12, "step_w": 9, "offset": 0.25},
     (100, 100), dict(min_sizes=[16], max_sizes=[], ratios=[], flip=True, clip=False,
                      variance=[0.1], step_h=12, step_w=9, offset=0.25)),
    ({"min_size": [16], "img_h": 50, "img_w": 70, "variance": [0.1, 0.1, 0.2, 0.2]},
     (50, 70), dict(min_sizes=[16], max_sizes=[], ratios=[], flip=True, clip=False,
                    variance=[0.1, 0.1, 0.2, 0.2])),
])
def test_prior_box_matches_a_literal_loop(param, img, expect):
    fmap, image = (1, 8, 3, 5), (1, 3, 64, 80)
    layer, shapes = make_layer({"type": "PriorBox", "prior_box_param": param}, [fmap, image],
                               backend=F32)
    _, (top,) = run_forward(layer, [np.zeros(fmap), np.zeros(image)], shapes)
    img_h, img_w = img or image[2:]
    ref = literal_priors(3, 5, img_h, img_w, **expect)
    assert top.shape == ref.shape == (1, 2, 3 * 5 * layer.num_priors * 4)
    np.testing.assert_allclose(top.data, ref, rtol=0, atol=2e-7)


@pytest.mark.parametrize("param,words", [
    ({}, "needs at least one min_size"),
    ({"min_size": [30], "max_size": [20]}, "max_size 20 must be greater than min_size 30"),
    ({"min_size": [30, 40], "max_size": [50]}, "1 max_size for 2 min_size"),
    ({"min_size": [30], "variance": [0.1, 0.2]}, "give none, one or four values, not 2"),
    ({"min_size": [30], "img_size": 30, "img_h": 30}, "img_size or img_h/img_w, not both"),
    ({"min_size": [30], "step": 8, "step_w": 8}, "step or step_h/step_w, not both"),
    ({"min_size": [30], "step_h": 8}, "give both step_h and step_w"),
    ({"min_size": [30], "aspect_ratio": [0]}, "aspect_ratio must be positive"),
])
def test_prior_box_refuses_bad_parameters(param, words):
    with pytest.raises(SpecError, match=words):
        make_layer({"type": "PriorBox", "prior_box_param": param}, [(1, 2, 3, 3), (1, 3, 9, 9)])


# -- decoding ----------------------------------------------------------------------------------------

def test_decode_each_code_type_by_its_formula():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 0.6, (6, 2))
    prior = np.concatenate([xy, xy + rng.uniform(0.1, 0.4, (6, 2))], 1).astype(np.float32)
    var = np.tile(np.float32([0.1, 0.1, 0.2, 0.2]), (6, 1))
    loc = rng.standard_normal((6, 4)).astype(np.float32)
    p, v, t = prior.astype(np.float64), var.astype(np.float64), loc.astype(np.float64)
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    corner = p + v * t
    corner_size = p + v * t * np.stack([pw, ph, pw, ph], 1)
    cx = (p[:, 0] + p[:, 2]) / 2 + v[:, 0] * t[:, 0] * pw
    cy = (p[:, 1] + p[:, 3]) / 2 + v[:, 1] * t[:, 1] * ph
    w, h = pw * np.exp(v[:, 2] * t[:, 2]), ph * np.exp(v[:, 3] * t[:, 3])
    center = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    for code, ref in [("CORNER", corner), ("CORNER_SIZE", corner_size), ("CENTER_SIZE", center)]:
        np.testing.assert_allclose(decode_boxes(loc, prior, var, code, False), ref, atol=1e-6)
        # variance_encoded_in_target: the offsets already carry the variances
        np.testing.assert_allclose(decode_boxes(loc * var, prior, var * 0 + 7, code, True), ref,
                                   atol=1e-6)


# -- NMS ---------------------------------------------------------------------------------------------

def literal_nms(boxes, scores, score_threshold, nms_threshold, eta=1.0, top_k=-1):
    """Greedy NMS written out with plain floats."""
    order = sorted((i for i in range(len(scores)) if scores[i] > score_threshold),
                   key=lambda i: (-scores[i], i))
    if top_k > -1:
        order = order[:top_k]

    def iou(a, b):
        if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
            return 0.0
        iw = min(a[2], b[2]) - max(a[0], b[0])
        ih = min(a[3], b[3]) - max(a[1], b[1])
        area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
        return iw * ih / (area_a + area_b - iw * ih)

    kept, threshold = [], nms_threshold
    for i in order:
        if all(iou(boxes[i], boxes[k]) <= threshold for k in kept):
            kept.append(i)
            if eta < 1 and threshold > 0.5:
                threshold *= eta
    return kept


def random_boxes(n, seed):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 0.8, (n, 2))
    wh = rng.uniform(0.05, 0.3, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32), \
        rng.uniform(0, 1, n).astype(np.float32)


@pytest.mark.parametrize("seed,thr,eta,top_k", [(0, 0.45, 1.0, -1), (1, 0.3, 1.0, 40),
                                                (2, 0.7, 0.9, -1), (3, 0.6, 0.8, 100)])
def test_nms_matches_a_literal_loop_and_opencv(seed, thr, eta, top_k):
    boxes, scores = random_boxes(300, seed)
    ours = nms(boxes, scores, 0.1, thr, eta, top_k)
    assert ours == literal_nms(boxes.tolist(), scores.tolist(), 0.1, thr, eta, top_k)
    assert 5 < len(ours) < len(boxes)
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed")
    rects = [(float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])) for b in boxes]
    theirs = cv2.dnn.NMSBoxes(rects, scores.tolist(), 0.1, thr, eta=eta,
                              top_k=max(top_k, 0))
    assert list(np.asarray(theirs).reshape(-1)) == ours


def test_overlap_of_disjoint_touching_and_degenerate_boxes():
    a = np.float32([[0, 0, 1, 1], [0, 0, 0, 0]])
    b = np.float32([[1, 0, 2, 1], [0.5, 0.5, 1.5, 1.5], [0, 0, 0, 0], [2, 2, 3, 3]])
    iou = iou_matrix(a, b)
    assert iou[0].tolist() == pytest.approx([0, 0.25 / 1.75, 0, 0])
    assert math.isnan(iou[1, 2])          # SSD's 0/0: a degenerate box suppresses its twin
    assert nms(np.float32([[0, 0, 0, 0]] * 2), np.float32([0.9, 0.8]), 0, 0.5) == [0]


# -- DetectionOutput ----------------------------------------------------------------------------------

def test_fork_golden_detection_output_row_for_row():
    net, g = _golden("detection_output")
    ours, theirs = net.blobs["out"].data, g["top/out"]
    assert ours.shape == theirs.shape == (1, 1, 40, 7)          # keep_top_k 20, two images
    np.testing.assert_array_equal(ours[..., :3], theirs[..., :3])   # image, label, score
    np.testing.assert_allclose(ours[..., 3:], theirs[..., 3:], rtol=0, atol=2e-7)


def _detection_layer(param, P, C, L=1, N=2):
    shapes = [(N, P * L * 4), (N, P * C), (1, 2, P * 4)]
    return make_layer({"type": "DetectionOutput", "detection_output_param": param}, shapes,
                      backend=F32)


def _inputs(P, C, L=1, N=2, seed=0):
    rng = np.random.default_rng(seed)
    loc = rng.standard_normal((N, P * L * 4)).astype(np.float32) * 0.5
    logits = rng.standard_normal((N, P, C)) * 2
    conf = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    xy = rng.uniform(0, 0.7, (P, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0.1, 0.3, (P, 2))], 1)
    var = np.tile([0.1, 0.1, 0.2, 0.2], (P, 1))
    prior = np.stack([boxes.reshape(-1), var.reshape(-1)])[None].astype(np.float32)
    return loc, conf.reshape(N, -1), prior


def literal_detection_output(loc, conf, prior, C, share, bg, thr, nms_thr, top_k, keep_top_k,
                             code):
    N, P = conf.shape[0], prior.shape[2] // 4
    L = 1 if share else C
    rows = []
    for i in range(N):
        per_class = {}
        for c in range(C):
            if c == bg:
                continue
            lc = 0 if share else c
            b = decode_boxes(loc[i].reshape(P, L, 4)[:, lc], prior[0, 0].reshape(P, 4),
                             prior[0, 1].reshape(P, 4), code, False)
            s = conf[i].reshape(P, C)[:, c]
            per_class[c] = [(float(s[j]), j, b[j]) for j in
                            literal_nms(b.tolist(), s.tolist(), thr, nms_thr, 1.0, top_k)]
        dets = [(c, *d) for c in per_class for d in per_class[c]]
        if -1 < keep_top_k < len(dets):
            dets = sorted(dets, key=lambda d: -d[1])[:keep_top_k]
        dets.sort(key=lambda d: (d[0], -d[1]))
        rows += [[i, c, s, *b] for c, s, _, b in dets]
    return np.array(rows, dtype=np.float32).reshape(-1, 7)


@pytest.mark.parametrize("share,code,keep", [(True, "CENTER_SIZE", 7), (False, "CORNER", -1),
                                             (False, "CORNER_SIZE", 30), (True, "CORNER", 0)])
def test_detection_output_matches_a_literal_version(share, code, keep):
    P, C = 40, 4
    L = 1 if share else C
    param = {"num_classes": C, "share_location": share, "background_label_id": 1,
             "nms_param": {"nms_threshold": 0.4, "top_k": 15}, "code_type": code,
             "keep_top_k": keep, "confidence_threshold": 0.2}
    layer, shapes = _detection_layer(param, P, C, L)
    assert shapes == [(1, 1, 1, 7)]
    loc, conf, prior = _inputs(P, C, L)
    _, (top,) = run_forward(layer, [loc, conf, prior], shapes)
    ref = literal_detection_output(loc, conf, prior, C, share, 1, 0.2, 0.4, 15, keep, code)
    if keep == 0:       # nothing kept: SSD's placeholder row per image
        ref = np.float32([[0, -1, -1, -1, -1, -1, -1], [1, -1, -1, -1, -1, -1, -1]])
    assert top.shape == (1, 1, len(ref), 7)
    np.testing.assert_allclose(top.data[0, 0], ref, rtol=0, atol=1e-7)


def test_no_detection_gives_one_placeholder_row_per_image():
    layer, shapes = _detection_layer({"num_classes": 3, "confidence_threshold": 0.99}, 5, 3, N=3)
    loc, conf, prior = _inputs(5, 3, N=3)
    _, (top,) = run_forward(layer, [loc, conf, prior], shapes)
    assert top.data.tolist() == [[[[i, -1, -1, -1, -1, -1, -1] for i in range(3)]]]


def test_detection_output_in_a_net_changes_its_rows_per_forward():
    from netspec.net import Net
    from netspec.spec import parse_net
    P, C = 30, 3
    loc, conf, prior = _inputs(P, C)
    layers = [{"name": n, "type": "Input", "top": n, "input_param": {"shape": {"dim": list(a.shape)}}}
              for n, a in [("loc", loc), ("conf", conf), ("prior", prior)]]
    layers.append({"name": "det", "type": "DetectionOutput", "bottom": ["loc", "conf", "prior"],
                   "top": "out", "detection_output_param": {"num_classes": C,
                                                            "confidence_threshold": 0.3,
                                                            "save_output_param": {
                                                                "output_directory": "x"}}})
    net = Net(parse_net({"name": "n", "layer": layers}), "TEST", F32)
    counts = []
    for thr_conf in (conf, conf * 0):
        for n, a in [("loc", loc), ("conf", thr_conf), ("prior", prior)]:
            net.blobs[n].data[...] = a
        net.forward()
        counts.append(net.blobs["out"].shape[2])
    assert counts[0] > 2 and counts[1] == 2


@pytest.mark.parametrize("param,shapes,words", [
    ({}, None, "needs num_classes"),
    ({"num_classes": 3, "nms_param": {"eta": 1.5}}, None, r"eta must be in \(0, 1\]"),
    ({"num_classes": 3}, [(2, 36), (2, 30), (1, 2, 40)], r"loc \(2, 36\) must hold 10 priors"),
    ({"num_classes": 3}, [(2, 40), (2, 33), (1, 2, 40)], r"conf \(2, 33\) must hold 10 priors"),
    ({"num_classes": 3}, [(2, 40), (1, 30), (1, 2, 40)], "loc and conf have 2 and 1 images"),
    ({"num_classes": 3, "share_location": False}, [(2, 40), (2, 30), (1, 2, 40)],
     r"10 priors × 3 × 4"),
])
def test_detection_output_refuses_bad_inputs(param, shapes, words):
    shapes = shapes or [(2, 40), (2, 30), (1, 2, 40)]
    with pytest.raises(NetspecError, match=words):
        make_layer({"type": "DetectionOutput", "detection_output_param": param}, shapes)
