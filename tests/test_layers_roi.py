"""ROIPooling (py-faster-rcnn's fork of Caffe, rbgirshick/caffe-fast-rcnn) and PSROIPooling
(R-FCN, daijifeng001/caffe-rfcn: forward and backward against literal loops of its CUDA kernels,
float64 gradients, OpenCV's dnn PSROIPooling).

* forward against a literal loop written here from the fork's ``roi_pooling_layer.cpp``
  semantics (C's round of the scaled corners, floor/ceil bin edges in the blob's dtype, clipped
  to the map, empty bins 0, first maximum in row-major order);
* backward against the same loop's argmax routing, and a float64 finite-difference check;
* OpenCV's dnn ROIPooling (its Caffe importer reads ``roi_pooling_param``) on a net written by
  ``netspec export``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from gradcheck import check_gradients, make_layer, run_forward
from netspec.backend import Backend
from netspec.errors import NetspecError
from netspec.net import Net
from netspec.spec import load_net

F32 = Backend(np, np.float32)


def c_round(v: float) -> int:
    """C's round(): halves away from zero."""
    return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)


def roi_pool_loop(x, rois, ph_n, pw_n, scale, dt):
    """The fork's forward, one region, channel and bin at a time; returns (top, argmax)."""
    dt = np.dtype(dt).type
    N, C, H, W = x.shape
    R = rois.shape[0]
    top = np.zeros((R, C, ph_n, pw_n), x.dtype)
    arg = np.full((R, C, ph_n, pw_n), -1, np.int64)
    for n in range(R):
        b = int(rois[n, 0])
        x1, y1, x2, y2 = (c_round(float(dt(rois[n, i]) * dt(scale))) for i in range(1, 5))
        rh, rw = max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1)
        bh, bw = dt(rh) / dt(ph_n), dt(rw) / dt(pw_n)
        for c in range(C):
            for ph in range(ph_n):
                for pw in range(pw_n):
                    hs = min(max(int(math.floor(dt(ph) * bh)) + y1, 0), H)
                    he = min(max(int(math.ceil(dt(ph + 1) * bh)) + y1, 0), H)
                    ws = min(max(int(math.floor(dt(pw) * bw)) + x1, 0), W)
                    we = min(max(int(math.ceil(dt(pw + 1) * bw)) + x1, 0), W)
                    if he <= hs or we <= ws:
                        continue                      # empty: 0, no argmax
                    best, where = -np.inf, -1
                    for h in range(hs, he):
                        for w in range(ws, we):
                            if x[b, c, h, w] > best:
                                best, where = x[b, c, h, w], ((b * C + c) * H + h) * W + w
                    top[n, c, ph, pw], arg[n, c, ph, pw] = best, where
    return top, arg


def spec(ph=3, pw=4, scale=0.25):
    return {"type": "ROIPooling", "bottom": ["x", "rois"], "top": ["y"],
            "roi_pooling_param": {"pooled_h": ph, "pooled_w": pw, "spatial_scale": scale}}


#: [batch, x1, y1, x2, y2]: inside, the whole map and beyond, one cell, reversed (forced to
#: 1 × 1), negative corners, corners at x.5 after scaling (C's round goes up: 2·0.25 = 0.5 → 1),
#: a region smaller than the grid (empty and repeated bins)
ROIS = np.array([[0, 1, 2, 30, 40], [1, 0, 0, 47, 39], [0, 20, 20, 22, 21],
                 [1, -10, -5, 100, 100], [0, 40, 30, 10, 5], [1, 2, 6, 10, 14],
                 [0, -6, -2, 5, 3], [1, 44, 36, 47, 39]], float)


def scaled(rois, factor):
    """``rois`` with their corners (not the batch index) multiplied by ``factor``."""
    out = rois.copy()
    out[:, 1:] *= factor
    return out


def opencv_on_rois(cv2, path, x: np.ndarray, rois: np.ndarray, block: str) -> np.ndarray:
    """OpenCV dnn's top y of the net ``path`` (``run_on_rois``'s) exported as a prototxt that
    carries ``block``, on the same x and rois."""
    from netspec.caffe.export import export_net

    proto = path.with_suffix(".prototxt")
    export_net(path, proto, force=True)
    assert block in proto.read_text()
    cv_net = cv2.dnn.readNetFromCaffe(str(proto))
    cv_net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    cv_net.setInput(x, "x")
    cv_net.setInput(rois, "rois")
    return cv_net.forward("y")


def run_on_rois(layer: dict, x: np.ndarray, rois: np.ndarray, tmp_path):
    """(a float32 TEST net of Input x, Input rois and ``layer`` (top y), run forward on them;
    its YAML file)."""
    net_spec = {"name": "rois", "layer": [
        {"name": "x", "type": "Input", "top": "x", "input_param": {"shape": {"dim": list(x.shape)}}},
        {"name": "rois", "type": "Input", "top": "rois",
         "input_param": {"shape": {"dim": list(rois.shape)}}},
        {"name": "y", **layer}]}
    path = tmp_path / "net.yaml"
    path.write_text(yaml.safe_dump(net_spec, sort_keys=False))
    net = Net(load_net(path), "TEST", F32)
    net.blobs["x"].data[...] = x
    net.blobs["rois"].data[...] = rois
    net.forward()
    return net, path


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("geometry", [(3, 4, 0.25), (7, 7, 0.0625), (2, 2, 1.0)])
def test_roi_pooling_forward_and_backward_match_the_forks_loop(dtype, geometry):
    ph, pw, scale = geometry
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 10, 12)).astype(dtype)
    x[0, 1, :4, :4] = 0.5                                  # ties: the first one wins
    rois = scaled(ROIS, 0.25 / scale)
    backend = Backend(np, dtype)
    layer, tops = make_layer(spec(ph, pw, scale), [x.shape, rois.shape], backend=backend)
    assert tops == [(len(rois), 3, ph, pw)]
    bottom, top = run_forward(layer, [x, rois], tops)
    want, arg = roi_pool_loop(x, rois, ph, pw, scale, dtype)
    np.testing.assert_array_equal(top[0].data, want)
    np.testing.assert_array_equal(layer.argmax, arg)
    assert (arg == -1).any() or geometry != (7, 7, 0.0625)  # the small region has empty bins
    dy = rng.normal(size=tops[0]).astype(dtype)
    top[0].diff[...] = dy
    layer.backward(top, [True, False], bottom)
    dx = np.zeros(x.size, dtype)
    for a, g in zip(arg.ravel(), dy.ravel()):              # each cell's gradient to its argmax
        if a >= 0:
            dx[a] += g
    np.testing.assert_allclose(bottom[0].diff.ravel(), dx, rtol=1e-6 if dtype == np.float32 else 1e-12)


def test_roi_pooling_rounds_halves_away_from_zero():
    """2 · 0.25 = 0.5 rounds to 1 (C's round), not 0 (NumPy's round to even)."""
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    rois = np.array([[0, 2, 2, 2, 2]], float)               # scaled corners (0.5, 0.5) → cell (1, 1)
    layer, tops = make_layer(spec(1, 1, 0.25), [x.shape, rois.shape])
    _, top = run_forward(layer, [x, rois], tops)
    assert top[0].data.ravel().tolist() == [5.0]


def test_roi_pooling_gradients():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 3, 10, 12))                    # no ties: the max is a smooth choice
    layer, tops = make_layer(spec(), [x.shape, ROIS.shape])
    check_gradients(layer, [x, ROIS], tops, check_bottoms=[0])


def test_roi_pooling_errors():
    with pytest.raises(NetspecError, match="pooled_h must be > 0"):
        make_layer({"type": "ROIPooling", "bottom": ["x", "r"],
                    "roi_pooling_param": {"pooled_w": 6}}, [(1, 2, 4, 4), (3, 5)])
    with pytest.raises(NetspecError, match="5 values per region"):
        make_layer(spec(), [(1, 2, 4, 4), (3, 4)])
    layer, tops = make_layer(spec(), [(1, 2, 4, 4), (1, 5)])
    with pytest.raises(NetspecError, match="batch index 1, outside the features' batch of 1"):
        run_forward(layer, [np.zeros((1, 2, 4, 4)), np.array([[1, 0, 0, 3, 3]], float)], tops)


def test_roi_pooling_matches_opencv(tmp_path):
    """OpenCV's dnn ROIPooling reads netspec's exported prototxt and gives the same top (rois
    with non-negative corners: OpenCV rounds with floor(v + 0.5), which differs from C's round
    only below zero)."""
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (pip install 'netspec[compare]')")
    pytest.importorskip("google.protobuf", reason="protobuf is not installed")

    rois = ROIS[(ROIS[:, 1:] >= 0).all(axis=1)]
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 3, 10, 12)).astype(np.float32)
    for ph, pw, scale in [(3, 4, 0.25), (7, 7, 0.0625)]:
        r = scaled(rois, 0.25 / scale).astype(np.float32)
        net, path = run_on_rois(spec(ph, pw, scale), x, r, tmp_path)
        theirs = opencv_on_rois(cv2, path, x, r, "roi_pooling_param")
        assert theirs.shape == net.blobs["y"].shape
        np.testing.assert_array_equal(theirs, net.blobs["y"].data)


def test_roi_pooling_gpu_matches_cpu():
    """On CuPy (float64) the top, argmax and bottom diff are the CPU path's."""
    from netspec.backend import cupy_available, get_backend
    if not cupy_available():
        pytest.skip("needs CuPy and a CUDA device")
    gpu = get_backend(gpu=True, dtype="float64")
    x = np.random.default_rng(7).normal(size=(2, 3, 10, 12))
    x[0, 1, :4, :4] = 0.5
    dy = np.random.default_rng(8).normal(size=(len(ROIS), 3, 3, 4))
    out = []
    for backend in (Backend(np, np.float64), gpu):
        layer, tops = make_layer(spec(), [x.shape, ROIS.shape], backend=backend)
        bottom, top = run_forward(layer, [x, ROIS], tops, xp=backend.xp)
        top[0].diff[...] = backend.xp.asarray(dy)
        layer.backward(top, [True, False], bottom)
        out.append([np.asarray(backend.xp.asnumpy(a) if backend.is_gpu else a)
                    for a in (top[0].data, layer.argmax, bottom[0].diff)])
    for cpu, gpu_value in zip(*out):
        np.testing.assert_allclose(gpu_value, cpu, rtol=1e-12, atol=1e-12)


# -- PSROIPooling (R-FCN, daijifeng001/caffe-rfcn) -------------------------------------------------

def psroi_loop(x, rois, output_dim, group, scale, dt):
    """The fork's PSROIPoolingForward kernel, one top cell at a time (its Dtype arithmetic);
    returns the top and each cell's bin (hstart, hend, wstart, wend)."""
    dt = np.dtype(dt).type
    N, C, H, W = x.shape
    R = rois.shape[0]
    top = np.zeros((R, output_dim, group, group), x.dtype)
    bins = np.zeros(top.shape + (4,), np.int64)       # hstart, hend, wstart, wend
    for n in range(R):
        b = int(rois[n, 0])
        sw = dt(c_round(float(dt(rois[n, 1])))) * dt(scale)
        sh = dt(c_round(float(dt(rois[n, 2])))) * dt(scale)
        ew = dt(c_round(float(dt(rois[n, 3]))) + 1) * dt(scale)
        eh = dt(c_round(float(dt(rois[n, 4]))) + 1) * dt(scale)
        rw, rh = max(ew - sw, dt(0.1)), max(eh - sh, dt(0.1))
        bh, bw = rh / dt(group), rw / dt(group)
        for k in range(output_dim):
            for ph in range(group):
                for pw in range(group):
                    hs = min(max(int(math.floor(dt(ph) * bh + sh)), 0), H)
                    he = min(max(int(math.ceil(dt(ph + 1) * bh + sh)), 0), H)
                    ws = min(max(int(math.floor(dt(pw) * bw + sw)), 0), W)
                    we = min(max(int(math.ceil(dt(pw + 1) * bw + sw)), 0), W)
                    c = (k * group + ph) * group + pw
                    total = 0.0
                    for h in range(hs, he):
                        for w in range(ws, we):
                            total += float(x[b, c, h, w])
                    cells = (he - hs) * (we - ws) if he > hs and we > ws else 0
                    top[n, k, ph, pw] = total / cells if cells else 0
                    bins[n, k, ph, pw] = hs, he, ws, we
    return top, bins


def psroi_spec(output_dim=2, group=3, scale=0.25):
    return {"type": "PSROIPooling", "bottom": ["x", "rois"], "top": ["y"],
            "psroi_pooling_param": {"spatial_scale": scale, "output_dim": output_dim,
                                    "group_size": group}}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("geometry", [(2, 3, 0.25), (3, 7, 0.0625), (1, 1, 1.0)])
def test_psroi_pooling_forward_and_backward_match_the_forks_loop(dtype, geometry):
    """Forward: the loop above. Backward: the fork's atomic scatter of ∂y/area over each bin,
    written as the same loop."""
    output_dim, group, scale = geometry
    rng = np.random.default_rng(9)
    C = output_dim * group * group
    x = rng.normal(size=(2, C, 10, 12)).astype(dtype)
    rois = scaled(ROIS, 0.25 / scale)
    layer, tops = make_layer(psroi_spec(output_dim, group, scale), [x.shape, rois.shape],
                             backend=Backend(np, dtype))
    assert tops == [(len(rois), output_dim, group, group)]
    bottom, top = run_forward(layer, [x, rois], tops)
    want, bins = psroi_loop(x, rois, output_dim, group, scale, dtype)
    area = (bins[..., 1] - bins[..., 0]).clip(0) * (bins[..., 3] - bins[..., 2]).clip(0)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(top[0].data, want, **tol)
    assert top[0].data.dtype == dtype
    assert (area == 0).any() or group == 1         # the small regions have empty bins
    dy = rng.normal(size=tops[0]).astype(dtype)
    top[0].diff[...] = dy
    layer.backward(top, [True, False], bottom)
    dx = np.zeros(x.shape)
    # the fork's backward kernel: ∂y/area added to every cell of the bin
    for (n, k, ph, pw), (hs, he, ws, we) in zip(np.ndindex(*tops[0]), bins.reshape(-1, 4)):
        if he > hs and we > ws:
            c = (k * group + ph) * group + pw
            dx[int(rois[n, 0]), c, hs:he, ws:we] += dy[n, k, ph, pw] / ((he - hs) * (we - ws))
    np.testing.assert_allclose(bottom[0].diff, dx, **tol)


def test_psroi_pooling_gradients():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(2, 18, 10, 12))
    layer, tops = make_layer(psroi_spec(), [x.shape, ROIS.shape])
    check_gradients(layer, [x, ROIS], tops, check_bottoms=[0])


def test_psroi_pooling_errors():
    from netspec.errors import SpecError
    from netspec.spec import parse_net
    with pytest.raises(SpecError, match="output_dim"):
        parse_net({"name": "n", "layer": [{"name": "p", "type": "PSROIPooling",
                                           "bottom": ["x", "r"], "top": "y",
                                           "psroi_pooling_param": {"spatial_scale": 1,
                                                                   "group_size": 3}}]})
    with pytest.raises(SpecError, match="group_size"):
        parse_net({"name": "n", "layer": [{"name": "p", "type": "PSROIPooling",
                                           "bottom": ["x", "r"], "top": "y",
                                           "psroi_pooling_param": {"spatial_scale": 1,
                                                                   "output_dim": 2,
                                                                   "group_size": "three"}}]})
    with pytest.raises(NetspecError, match="group_size must be > 0"):
        make_layer(psroi_spec(2, 0), [(1, 18, 4, 4), (3, 5)])
    with pytest.raises(NetspecError, match=r"17 channels; output_dim 2 × group_size² 9 = 18"):
        make_layer(psroi_spec(), [(1, 17, 4, 4), (3, 5)])
    with pytest.raises(NetspecError, match="5 values per region"):
        make_layer(psroi_spec(), [(1, 18, 4, 4), (3, 4)])
    with pytest.raises(NetspecError, match="takes exactly 2 bottom"):
        make_layer(psroi_spec(), [(1, 18, 4, 4)])
    layer, tops = make_layer(psroi_spec(), [(1, 18, 4, 4), (1, 5)])
    with pytest.raises(NetspecError, match="batch index 1, outside the score maps' batch of 1"):
        run_forward(layer, [np.zeros((1, 18, 4, 4)), np.array([[1, 0, 0, 3, 3]], float)], tops)


def test_psroi_pooling_matches_opencv(tmp_path):
    """OpenCV's dnn PSROIPooling reads netspec's exported prototxt (psroi_pooling_param) and
    gives the same top (single image: OpenCV's layer reads the batch index too)."""
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (pip install 'netspec[compare]')")
    pytest.importorskip("google.protobuf", reason="protobuf is not installed")

    rng = np.random.default_rng(11)
    for output_dim, group, scale in [(2, 3, 0.25), (3, 7, 0.0625)]:
        x = rng.normal(size=(1, output_dim * group * group, 10, 12)).astype(np.float32)
        r = scaled(ROIS, 0.25 / scale).astype(np.float32)
        r[:, 0] = 0
        net, path = run_on_rois(psroi_spec(output_dim, group, scale), x, r, tmp_path)
        theirs = opencv_on_rois(cv2, path, x, r, "psroi_pooling_param")
        assert theirs.shape == net.blobs["y"].shape
        np.testing.assert_allclose(theirs, net.blobs["y"].data, rtol=1e-5, atol=1e-6)


def test_psroi_pooling_gpu_matches_cpu():
    """On CuPy (float64) the top and bottom diff are the CPU path's."""
    from netspec.backend import cupy_available, get_backend
    if not cupy_available():
        pytest.skip("needs CuPy and a CUDA device")
    gpu = get_backend(gpu=True, dtype="float64")
    rng = np.random.default_rng(12)
    x = rng.normal(size=(2, 18, 10, 12))
    dy = rng.normal(size=(len(ROIS), 2, 3, 3))
    out = []
    for backend in (Backend(np, np.float64), gpu):
        layer, tops = make_layer(psroi_spec(), [x.shape, ROIS.shape], backend=backend)
        bottom, top = run_forward(layer, [x, ROIS], tops, xp=backend.xp)
        top[0].diff[...] = backend.xp.asarray(dy)
        layer.backward(top, [True, False], bottom)
        out.append([np.asarray(backend.xp.asnumpy(a) if backend.is_gpu else a)
                    for a in (top[0].data, bottom[0].diff)])
    for a, b in zip(*out):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


#: an R-FCN head in Caffe's text format, as R-FCN's test nets end: 1×1 convolutions to
#: position-sensitive score maps (3 classes × 3², 2·4 box values × 3²), PSROIPooling over the
#: regions, a 3×3 average pooling voting over the bins, Softmax, Reshape
RFCN_HEAD = """
name: "rfcn_head"
input: "features" input_shape { dim: 1 dim: 8 dim: 12 dim: 16 }
input: "rois" input_shape { dim: 6 dim: 5 }
layer { name: "rfcn_cls" type: "Convolution" bottom: "features" top: "rfcn_cls"
  convolution_param { num_output: 27 kernel_size: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "rfcn_bbox" type: "Convolution" bottom: "features" top: "rfcn_bbox"
  convolution_param { num_output: 72 kernel_size: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "psroi_cls" type: "PSROIPooling" bottom: "rfcn_cls" bottom: "rois" top: "psroi_cls"
  psroi_pooling_param { spatial_scale: 0.0625 output_dim: 3 group_size: 3 } }
layer { name: "cls_score" type: "Pooling" bottom: "psroi_cls" top: "cls_score"
  pooling_param { pool: AVE kernel_size: 3 stride: 3 } }
layer { name: "psroi_loc" type: "PSROIPooling" bottom: "rfcn_bbox" bottom: "rois" top: "psroi_loc"
  psroi_pooling_param { spatial_scale: 0.0625 output_dim: 8 group_size: 3 } }
layer { name: "bbox_pred_pre" type: "Pooling" bottom: "psroi_loc" top: "bbox_pred_pre"
  pooling_param { pool: AVE kernel_size: 3 stride: 3 } }
layer { name: "cls_prob_pre" type: "Softmax" bottom: "cls_score" top: "cls_prob_pre" }
layer { name: "cls_prob" type: "Reshape" bottom: "cls_prob_pre" top: "cls_prob"
  reshape_param { shape { dim: -1 dim: 3 } } }
layer { name: "bbox_pred" type: "Reshape" bottom: "bbox_pred_pre" top: "bbox_pred"
  reshape_param { shape { dim: -1 dim: 8 } } }
"""
#: regions in image coordinates (the map is 1/16 of a 192×256 image), one image
RFCN_ROIS = np.array([[0, 0, 0, 191, 255], [0, 16, 32, 100, 120], [0, 150, 40, 250, 180],
                      [0, 60, 60, 64, 70], [0, -20, -30, 40, 50], [0, 200, 100, 300, 400]], float)


def test_rfcn_head_converts_runs_and_matches_opencv(tmp_path):
    """The head converts to YAML, builds with R-FCN's shapes (regions × classes, regions × 8),
    exports back (prototxt + caffemodel) and OpenCV's dnn gives the same outputs."""
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (pip install 'netspec[compare]')")
    pytest.importorskip("google.protobuf", reason="protobuf is not installed")
    from netspec.caffe.export import export_net
    from netspec.caffe.port import convert_net

    (tmp_path / "head.prototxt").write_text(RFCN_HEAD)
    convert_net(tmp_path / "head.prototxt", tmp_path / "head.yaml")
    net = Net(load_net(tmp_path / "head.yaml"), "TEST", F32, np.random.default_rng(0))
    assert net.blobs["psroi_cls"].shape == (6, 3, 3, 3)
    assert net.blobs["cls_prob"].shape == (6, 3) and net.blobs["bbox_pred"].shape == (6, 8)
    x = np.random.default_rng(13).normal(size=(1, 8, 12, 16)).astype(np.float32)
    net.blobs["features"].data[...] = x
    net.blobs["rois"].data[...] = RFCN_ROIS
    net.forward()
    np.savez(tmp_path / "w.npz", **{k: p.data for k, p in net.named_params().items()})
    export_net(tmp_path / "head.yaml", tmp_path / "back.prototxt", weights=tmp_path / "w.npz",
               caffemodel=tmp_path / "back.caffemodel")
    cv_net = cv2.dnn.readNetFromCaffe(str(tmp_path / "back.prototxt"),
                                      str(tmp_path / "back.caffemodel"))
    cv_net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    cv_net.setInput(x, "features")
    cv_net.setInput(RFCN_ROIS.astype(np.float32), "rois")
    for name, theirs in zip(("cls_prob", "bbox_pred"), cv_net.forward(["cls_prob", "bbox_pred"])):
        ours = net.blobs[name].data
        np.testing.assert_allclose(theirs.reshape(ours.shape), ours, rtol=1e-5,
                                   atol=1e-5 * float(np.abs(ours).max()))


def test_rfcn_head_learns_through_psroi_pooling(tmp_path):
    """With a SoftmaxWithLoss on the head's class scores, SGD on the 1×1 convolution before
    PSROIPooling drives the loss down: the gradient reaches the score maps through the bins."""
    from netspec.net import Net
    from netspec.spec import loads_net
    from netspec.caffe import prototxt as ptx
    from netspec.caffe.port import net_yaml

    text = RFCN_HEAD.replace('input: "rois"', 'input: "labels" input_shape { dim: 6 }\ninput: "rois"')
    text += ('layer { name: "loss" type: "SoftmaxWithLoss" bottom: "cls_score" bottom: "labels" '
             'top: "loss" }\n')
    net = Net(loads_net(net_yaml(ptx.parse_net(text, "head"), "head")[0], "head.yaml"), "TRAIN",
              Backend(np, np.float64), np.random.default_rng(0))
    net.blobs["features"].data[...] = np.random.default_rng(14).normal(size=(1, 8, 12, 16))
    net.blobs["rois"].data[...] = RFCN_ROIS
    net.blobs["labels"].data[...] = [0, 1, 2, 1, 0, 2]
    weights = net.layer_by_name("rfcn_cls").blobs
    losses = []
    for _ in range(40):
        for p in net.params:
            p.diff[...] = 0
        losses.append(float(net.forward()))
        net.backward()
        for p in weights:
            p.data -= 5.0 * p.diff
    assert losses[-1] < 0.3 * losses[0], [round(v, 3) for v in losses]
