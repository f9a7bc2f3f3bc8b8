"""SSD's MultiBoxLoss (weiliu89/caffe, as carried by eric612/MobileNet-YOLO).

References that are not the code under test: the values a real fork recorded
(tests/golden/forks/layers/multibox_loss: forward and both bottom gradients), a literal
prior-by-prior reference written here from the fork's ``multibox_loss_layer.cpp`` and
``bbox_util.cpp`` (MatchBBox, MineHardExamples, EncodeBBox, the loss layers it delegates to), a
hand-worked bipartite matching, and float64 finite differences.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from gradcheck import check_gradients, make_layer, run_forward

from netspec.errors import NetspecError, SpecError
from netspec.layers.multibox import match_boxes


def test_fork_golden_multibox_loss():
    pytest.importorskip("google.protobuf", reason="protobuf is not installed")
    from layer_cases import fork_golden_net, run_golden
    net, g = fork_golden_net("multibox_loss")
    assert run_golden(net, g) == ["locs", "confs"]
    assert np.count_nonzero(g["bottomdiff/locs"]) > 0     # the case has matches


# -- a literal reference ---------------------------------------------------------------------------

def iou(a, b):
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        return 0.0
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    area = lambda r: max(r[2] - r[0], 0) * max(r[3] - r[1], 0)   # noqa: E731
    return w * h / (area(a) + area(b) - w * h)


def literal_match(gt, pred, match_type, thr, ignore_cross):
    P = len(pred)
    m, o = [-1] * P, [0.0] * P
    ov = {}
    for i in range(P):
        if ignore_cross and any(v < 0 or v > 1 for v in pred[i]):
            m[i] = -2
            continue
        for j in range(len(gt)):
            v = iou(pred[i], gt[j])
            if v > 1e-6:
                o[i] = max(o[i], v)
                ov[i, j] = v
    pool = list(range(len(gt)))
    while pool:
        best, bi, bj = -1, -1, -1
        for i in range(P):
            if m[i] != -1:
                continue
            for j in pool:
                if (i, j) in ov and ov[i, j] > best:
                    best, bi, bj = ov[i, j], i, j
        if bi == -1:
            break
        m[bi], o[bi] = bj, best
        pool.remove(bj)
    if match_type == "PER_PREDICTION":
        for i in range(P):
            if m[i] != -1:
                continue
            best, bj = -1, -1
            for j in range(len(gt)):
                if (i, j) in ov and ov[i, j] >= thr and ov[i, j] > best:
                    best, bj = ov[i, j], j
            if bj != -1:
                m[i], o[i] = bj, best
    return m, o


def encode(g, p, v, code, vit):
    v = [1.0] * 4 if vit else v
    if code == "CORNER":
        return [(g[k] - p[k]) / v[k] for k in range(4)]
    pw, ph = p[2] - p[0], p[3] - p[1]
    if code == "CORNER_SIZE":
        s = [pw, ph, pw, ph]
        return [(g[k] - p[k]) / s[k] / v[k] for k in range(4)]
    gw, gh = g[2] - g[0], g[3] - g[1]
    return [((g[0] + g[2]) / 2 - (p[0] + p[2]) / 2) / pw / v[0],
            ((g[1] + g[3]) / 2 - (p[1] + p[3]) / 2) / ph / v[1],
            math.log(gw / pw) / v[2], math.log(gh / ph) / v[3]]


def conf_loss(x, label, kind, hot=True):
    if kind == "SOFTMAX":
        mx = max(x)
        p = [math.exp(v - mx) for v in x]
        s = sum(p)
        p = [v / s for v in p]
        g = list(p)
        g[label] -= 1
        return -math.log(max(p[label], 1.1754944e-38)), g
    loss, g = 0.0, []
    for c, v in enumerate(x):
        t = 1.0 if hot and c == label else 0.0
        loss -= v * (t - (v >= 0)) - math.log(1 + math.exp(v - 2 * v * (v >= 0)))
        g.append(1 / (1 + math.exp(-v)) - t)
    return loss, g


def literal_multibox(loc, conf, prior, label, q):
    """The fork's forward and backward, prior by prior; share_location true."""
    N, C = loc.shape[0], q["num_classes"]
    P = prior.shape[-1] // 4
    loc = loc.reshape(N, P, 4)
    conf = conf.reshape(N, P, C)
    boxes, var = prior.reshape(2, P, 4)
    gts = {}
    for r in label.reshape(-1, 8):
        if int(r[0]) == -1 or (not q["use_difficult_gt"] and r[7]):
            continue
        gts.setdefault(int(r[0]), []).append((int(r[1]), list(r[3:7])))
    mining, bg = q["mining_type"], q["background_label_id"]
    loc_rows, conf_rows, dloc, dconf = [], [], np.zeros_like(loc), np.zeros_like(conf)
    for i in range(N):
        if i not in gts:
            if mining == "NONE":
                conf_rows += [(i, j, bg, False) for j in range(P)]
            continue
        gl = gts[i]
        m, o = literal_match([b for _, b in gl], boxes, q["match_type"], q["overlap_threshold"],
                             q["ignore_cross_boundary_bbox"])
        losses = []
        for j in range(P):
            lab = gl[m[j]][0] if m[j] > -1 else bg
            losses.append(conf_loss(conf[i, j], lab, q["conf_loss_type"])[0])
        sel = set()
        if mining == "MAX_NEGATIVE":
            elig = [j for j in range(P) if m[j] == -1 and o[j] < q["neg_overlap"]]
            n = min(int(sum(v > -1 for v in m) * q["neg_pos_ratio"]), len(elig))
            sel = set(sorted(elig, key=lambda j: -losses[j])[:n])
        elif mining == "HARD_EXAMPLE":
            tot = list(losses)
            for j in range(P):
                if m[j] > -1:
                    t = encode(gl[m[j]][1], boxes[j], var[j], q["code_type"], False)
                    d = [loc[i, j, k] - t[k] for k in range(4)]
                    tot[j] += sum(0.5 * v * v if abs(v) < 1 else abs(v) - 0.5 for v in d)
            sel = set(sorted(range(P), key=lambda j: -tot[j])[:q["sample_size"]])
            negs = [j for j in sorted(sel) if m[j] == -1]
            m = [v if v <= -1 or j in sel else -1 for j, v in enumerate(m)]
        for j in range(P):
            if m[j] > -1:
                loc_rows.append((i, j, encode(gl[m[j]][1], boxes[j], var[j], q["code_type"],
                                              q.get("encode_variance_in_target", False))))
                conf_rows.append((i, j, gl[m[j]][0], True))
            elif mining == "NONE":
                conf_rows.append((i, j, bg, False))
        if mining == "MAX_NEGATIVE":
            conf_rows += [(i, j, bg, True) for j in sorted(sel)]
        elif mining == "HARD_EXAMPLE":
            conf_rows += [(i, j, bg, True) for j in negs]
    n = {"VALID": len(loc_rows), "FULL": N * P, "BATCH_SIZE": N, "NONE": 1}[q["normalization"]]
    n = max(n, 1)
    total_loc = 0.0
    vit = q.get("encode_variance_in_target", False)
    for i, j, t in loc_rows:
        for k in range(4):
            pred = loc[i, j, k]
            if q.get("bp_inside") and not 0 <= boxes[j][k] <= 1:
                pred = t[k]                   # an outside corner: no loss, no gradient
            d = pred / var[j][k] - t[k] / var[j][k] if vit else pred - t[k]
            if q["loc_loss_type"] == "L2":
                total_loc, g = total_loc + 0.5 * d * d, d
            else:
                total_loc += 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5
                g = d if abs(d) < 1 else np.sign(d)
            dloc[i, j, k] = q["loc_weight"] * g / n
    total_conf = 0.0
    for i, j, lab, hot in conf_rows:
        if q["conf_loss_type"] == "LOGISTIC" and not hot:
            hot, lab = False, -1
        lo, g = conf_loss(conf[i, j], lab, q["conf_loss_type"], hot)
        total_conf += lo
        dconf[i, j] = np.array(g) / n
    return (q["loc_weight"] * total_loc + total_conf) / n, dloc.reshape(N, -1), dconf.reshape(N, -1)


DEFAULTS = dict(num_classes=3, match_type="PER_PREDICTION", overlap_threshold=0.5,
                background_label_id=0, use_difficult_gt=True, mining_type="MAX_NEGATIVE",
                neg_pos_ratio=3.0, neg_overlap=0.5, code_type="CENTER_SIZE",
                ignore_cross_boundary_bbox=False, conf_loss_type="SOFTMAX", loc_loss_type="SMOOTH_L1",
                loc_weight=1.0, sample_size=64, normalization="VALID")


def detection_case(seed=0, N=2, side=4, C=3):
    """Priors on a side×side grid (two per cell, some across the border), ground truths near
    some priors, random predictions."""
    rng = np.random.default_rng(seed)
    c = (np.arange(side) + 0.5) / side
    cx, cy = np.meshgrid(c, c)
    boxes = []
    for s in (0.3, 0.55):
        boxes.append(np.stack([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], -1))
    boxes = np.stack(boxes, 2).reshape(-1, 4)
    P = len(boxes)
    prior = np.stack([boxes.reshape(-1), np.tile([0.1, 0.1, 0.2, 0.2], P)])[None]
    rows = []
    for i in range(N - 1):                   # the last image has no ground truth
        for g in range(3):
            x0, y0 = rng.uniform(0, 0.6, 2)
            w, h = rng.uniform(0.15, 0.4, 2)
            rows.append([i, rng.integers(1, C), g, x0, y0, x0 + w, y0 + h, g == 2])
    rows.append([-1, 0, 0, 0, 0, 0, 0, 0])
    label = np.array(rows, dtype=np.float64)[None, None]
    loc = rng.normal(0, 0.8, (N, P * 4))
    conf = rng.normal(0, 1.5, (N, P * C))
    return loc, conf, prior, label


def mbox_layer(q, shapes, backend=None):
    q = dict(q)
    norm = q.pop("normalization")
    spec = {"type": "MultiBoxLoss", "multibox_loss_param": q,
            "loss_param": {"normalization": norm}}
    kw = {"backend": backend} if backend else {}
    return make_layer(spec, shapes, **kw)


@pytest.mark.parametrize("change", [
    {}, {"match_type": "BIPARTITE"}, {"mining_type": "NONE"}, {"mining_type": "HARD_EXAMPLE",
                                                               "sample_size": 7},
    {"conf_loss_type": "LOGISTIC"}, {"conf_loss_type": "LOGISTIC", "mining_type": "NONE"},
    {"loc_loss_type": "L2", "loc_weight": 0.7}, {"code_type": "CORNER"},
    {"code_type": "CORNER_SIZE"}, {"ignore_cross_boundary_bbox": True},
    {"use_difficult_gt": False}, {"overlap_threshold": 0.3, "neg_overlap": 0.4},
    {"neg_pos_ratio": 1.5}, {"normalization": "FULL"}, {"normalization": "BATCH_SIZE"},
    {"normalization": "NONE"}, {"encode_variance_in_target": True},
    {"bp_inside": True, "code_type": "CORNER"},
])
def test_multibox_loss_matches_a_literal_reference(change):
    q = {**DEFAULTS, **change}
    loc, conf, prior, label = detection_case()
    shapes = [loc.shape, conf.shape, prior.shape, label.shape]
    layer, top_shapes = mbox_layer(q, shapes)
    bottom, top = run_forward(layer, [loc, conf, prior, label], top_shapes)
    ref, dloc, dconf = literal_multibox(loc, conf, prior, label, q)
    np.testing.assert_allclose(float(top[0].data), ref, rtol=1e-10)
    top[0].diff = np.array(2.0)
    layer.backward(top, [True, True, False, False], bottom)
    np.testing.assert_allclose(bottom[0].diff, 2 * dloc, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(bottom[1].diff, 2 * dconf, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("change,bottoms", [
    ({}, [0, 1]), ({"mining_type": "NONE", "conf_loss_type": "LOGISTIC"}, [0, 1]),
    ({"loc_loss_type": "L2", "code_type": "CORNER_SIZE"}, [0]),
    ({"mining_type": "HARD_EXAMPLE", "sample_size": 9}, [1]),
])
def test_multibox_loss_gradients(change, bottoms):
    """Matching uses the priors and mining the conf scores, so the matches stay fixed under
    the small steps of the check."""
    q = {**DEFAULTS, **change}
    loc, conf, prior, label = detection_case(seed=3)
    loc *= 0.3                        # away from smooth L1's kink at |d| = 1 where possible
    layer, top_shapes = mbox_layer(q, [loc.shape, conf.shape, prior.shape, label.shape])
    check_gradients(layer, [loc, conf, prior, label], top_shapes, check_bottoms=bottoms)


def test_bipartite_then_per_prediction_by_hand():
    gt = np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], np.float32)
    pred = np.array([[0.0, 0.0, 0.5, 0.4],      # iou 0.8 with gt 0
                     [0.0, 0.0, 0.5, 0.5],      # iou 1 with gt 0: bipartite takes it first
                     [0.5, 0.5, 1.0, 0.9],      # iou 0.8 with gt 1: its bipartite partner
                     [0.6, 0.6, 0.8, 0.8],      # iou 0.16 with gt 1: below 0.5
                     [1.2, 1.2, 1.5, 1.5]], np.float32)   # no overlap
    m, o = match_boxes(gt, pred, "BIPARTITE", 0.5, False)
    assert m.tolist() == [-1, 0, 1, -1, -1]
    np.testing.assert_allclose(o, [0.8, 1, 0.8, 0.16, 0], rtol=1e-6)
    m, o = match_boxes(gt, pred, "PER_PREDICTION", 0.5, False)
    assert m.tolist() == [0, 0, 1, -1, -1]
    m, _ = match_boxes(gt, pred, "PER_PREDICTION", 0.5, True)
    assert m.tolist() == [0, 0, 1, -1, -2]


def test_propagate_down_false_leaves_the_term_out_as_ssd_does():
    q = dict(DEFAULTS)
    loc, conf, prior, label = detection_case()
    shapes = [loc.shape, conf.shape, prior.shape, label.shape]
    spec = {"type": "MultiBoxLoss", "multibox_loss_param": {k: v for k, v in q.items()
                                                           if k != "normalization"},
            "propagate_down": [False, True, False, False]}
    layer, ts = make_layer(spec, shapes)
    _, top = run_forward(layer, [loc, conf, prior, label], ts)
    full, _ = mbox_layer(q, shapes)
    _, top_full = run_forward(full, [loc, conf, prior, label], ts)
    assert 0 < float(top[0].data) < float(top_full[0].data)


@pytest.mark.parametrize("param,words", [
    ({}, "needs num_classes"),
    ({"num_classes": 3, "share_location": False}, "negative mining needs share_location"),
    ({"num_classes": 3, "do_neg_mining": False}, "contradicts mining_type MAX_NEGATIVE"),
    ({"num_classes": 3, "background_label_id": 3}, "background_label_id 3 must be below"),
    ({"num_classes": 3, "mining_type": "HARD_EXAMPLE", "nms_param": {"nms_threshold": 0.5}},
     "not implemented in netspec"),
])
def test_multibox_loss_refuses_bad_parameters(param, words):
    loc, conf, prior, label = detection_case()
    with pytest.raises(SpecError, match=words):
        make_layer({"type": "MultiBoxLoss", "multibox_loss_param": param},
                   [loc.shape, conf.shape, prior.shape, label.shape])


def test_multibox_loss_refuses_bad_shapes_and_background_ground_truth():
    loc, conf, prior, label = detection_case()
    q = {"num_classes": 3}
    with pytest.raises(NetspecError, match=r"conf \(2, 95\) must hold 32 priors × 3"):
        make_layer({"type": "MultiBoxLoss", "multibox_loss_param": q},
                   [loc.shape, (2, 95), prior.shape, label.shape])
    with pytest.raises(NetspecError, match="takes exactly 4 bottom"):
        make_layer({"type": "MultiBoxLoss", "multibox_loss_param": q},
                   [loc.shape, conf.shape, prior.shape])
    label[0, 0, 0, 1] = 0
    layer, ts = make_layer({"type": "MultiBoxLoss", "multibox_loss_param": q},
                           [loc.shape, conf.shape, prior.shape, label.shape])
    with pytest.raises(NetspecError, match="background label 0"):
        run_forward(layer, [loc, conf, prior, label], ts)


def test_per_class_locations_use_the_matched_class_slot():
    """share_location false: the loss equals the shared one when every class slot holds the
    shared prediction; the gradient lands in the slot of the matched ground truth's class."""
    q = {**DEFAULTS, "mining_type": "NONE"}
    loc, conf, prior, label = detection_case()
    N, C = loc.shape[0], q["num_classes"]
    per_class = np.repeat(loc.reshape(N, -1, 1, 4), C, axis=2).reshape(N, -1)
    shared, ts = mbox_layer(q, [loc.shape, conf.shape, prior.shape, label.shape])
    b1, t1 = run_forward(shared, [loc, conf, prior, label], ts)
    split, _ = mbox_layer({**q, "share_location": False},
                          [per_class.shape, conf.shape, prior.shape, label.shape])
    b2, t2 = run_forward(split, [per_class, conf, prior, label], ts)
    np.testing.assert_allclose(float(t2[0].data), float(t1[0].data), rtol=1e-12)
    for layer, b, t in ((shared, b1, t1), (split, b2, t2)):
        t[0].diff = np.array(1.0)
        layer.backward(t, [True, True, False, False], b)
    d = b2[0].diff.reshape(N, -1, C, 4)
    np.testing.assert_allclose(d.sum(axis=2), b1[0].diff.reshape(N, -1, 4), rtol=1e-12)
    assert (np.abs(d[:, :, 0]) == 0).all()                    # the background slot: never
    assert ((np.abs(d) > 0).sum(axis=2) <= 4).all()           # one slot per prior


def test_matching_decoded_predictions():
    """use_prior_for_matching false matches the decoded predictions: zero offsets decode to
    the priors (CENTER_SIZE), so the matches and the loss are the prior-matched ones."""
    loc, conf, prior, label = detection_case()
    shapes = [loc.shape, conf.shape, prior.shape, label.shape]
    zero = np.zeros_like(loc)
    a, ts = mbox_layer(DEFAULTS, shapes)
    b, _ = mbox_layer({**DEFAULTS, "use_prior_for_matching": False}, shapes)
    _, ta = run_forward(a, [zero, conf, prior, label], ts)
    _, tb = run_forward(b, [zero, conf, prior, label], ts)
    np.testing.assert_allclose(float(tb[0].data), float(ta[0].data), rtol=1e-6)
    far = loc * 8                                             # other predictions: other matches
    _, tc = run_forward(b, [far, conf, prior, label], ts)
    _, td = run_forward(a, [far, conf, prior, label], ts)
    assert float(tc[0].data) != pytest.approx(float(td[0].data))


TINY_SSD = """
layer { name: "in" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 3 dim: 16 dim: 16 } shape { dim: 1 dim: 1 dim: 3 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "loc" type: "Convolution" bottom: "conv" top: "loc"
        convolution_param { num_output: 12 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "loc_perm" type: "Permute" bottom: "loc" top: "loc_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "loc_flat" type: "Flatten" bottom: "loc_perm" top: "loc_flat" }
layer { name: "conf" type: "Convolution" bottom: "conv" top: "conf"
        convolution_param { num_output: 9 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "conf_perm" type: "Permute" bottom: "conf" top: "conf_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "conf_flat" type: "Flatten" bottom: "conf_perm" top: "conf_flat" }
layer { name: "prior" type: "PriorBox" bottom: "conv" bottom: "data" top: "prior"
        prior_box_param { min_size: 5 max_size: 9 aspect_ratio: 2 flip: false variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } }
layer { name: "loss" type: "MultiBoxLoss" bottom: "loc_flat" bottom: "conf_flat" bottom: "prior" bottom: "label"
        top: "loss" multibox_loss_param { num_classes: 3 code_type: CENTER_SIZE overlap_threshold: 0.5 }
        propagate_down: true propagate_down: true propagate_down: false propagate_down: false }
"""


def test_a_tiny_ssd_learns_its_boxes():
    """Conv heads, Permute, Flatten, PriorBox and MultiBoxLoss in one net: plain gradient
    descent on a fixed batch lowers the loss a lot (the gradients lead downhill)."""
    pytest.importorskip("google.protobuf", reason="protobuf is not installed")
    from netspec.backend import Backend
    from netspec.caffe import prototxt as ptx
    from netspec.caffe.port import net_yaml
    from netspec.net import Net
    from netspec.spec import loads_net

    yaml_text = net_yaml(ptx.parse_net(TINY_SSD, "tiny"), "tiny")[0]
    net = Net(loads_net(yaml_text, "tiny"), "TRAIN", Backend(np, np.float32),
              np.random.default_rng(0))
    rng = np.random.default_rng(0)
    net.blobs["data"].data[...] = rng.standard_normal((2, 3, 16, 16))
    net.blobs["label"].data[...] = [[[[0, 1, 0, 0.1, 0.1, 0.45, 0.4, 0],
                                      [0, 2, 1, 0.5, 0.55, 0.9, 0.95, 0],
                                      [1, 1, 0, 0.3, 0.2, 0.7, 0.6, 0]]]]
    params = list(net.named_params().values())
    losses = []
    for _ in range(150):
        net.clear_param_diffs()
        losses.append(float(net.forward()))
        net.backward()
        for p in params:
            p.data -= 0.05 * p.diff
    assert losses[-1] < 0.3 * losses[0], (losses[0], losses[-1])


@pytest.mark.parametrize("field,words", [
    ("mining_type: MAXNEG", 'MiningType" has no value named MAXNEG'),
    ("num_classes: -3", "Value out of range: -3"),
    ("neg_pos_ratio: \"three\"", "Couldn't parse float")])
def test_a_bad_multibox_loss_field_is_one_clear_convert_error(tmp_path, field, words):
    pytest.importorskip("google.protobuf", reason="protobuf is not installed")
    from netspec.caffe import ConvertError
    from netspec.caffe.port import convert_net

    src = tmp_path / "n.prototxt"
    src.write_text(TINY_SSD.replace("num_classes: 3 code_type", field + " code_type"))
    with pytest.raises(ConvertError) as e:
        convert_net(src, tmp_path / "n.yaml")
    msg = str(e.value)
    assert "n.prototxt:18" in msg and "in layer 'loss'" in msg and words in msg, msg
    assert "\n" not in msg
