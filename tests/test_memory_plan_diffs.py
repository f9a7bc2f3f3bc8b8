"""Blob diffs sharing arrays in training nets (netspec/memory_plan.py, ``Net(reuse_diffs=True)``,
the solver of ``netspec train``): every layer that declares ``writes_bottom_diffs`` overwrites
its bottom diffs on each of its code paths (diffs filled with NaN before its backward give the
same gradients as zeros); a solver whose net shares diffs trains to bit-identical weights
(float32 and float64, iter_size 1 and 2; LeNet, a ResNet-like block net with BatchNorm +
Scale + Eltwise + Split, a GoogLeNet-like net with Concat and LRN, an SSD-like net with
Normalize, Permute, Flatten, PriorBox and MultiBoxLoss, a YOLOv3-like one with Upsample, Slice
and Yolov3); diffs whose lives overlap never share; inputs, outputs, loss tops and
``force_backward`` nets keep their own diffs. Every registered type is flagged with cases here
or listed in ``UNFLAGGED`` with its reason."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CONV_LAYOUTS
from gradcheck import labels, make_layer, rand, run_forward
from test_layers_multibox import DEFAULTS as MULTIBOX
from test_layers_multibox import detection_case
from test_layers_roi import ROIS
from test_layers_yolo import REGION, YOLOV3, region_case, yolov3_case

from netspec.backend import Backend
from netspec.layers import registry
from netspec.log import CaffeLog
from netspec.memory_plan import plan_diffs
from netspec.net import Net
from netspec.solvers.solver import Solver
from netspec.spec import parse_net
from netspec.spec.solver import SolverParameter

GAUSS = {"type": "gaussian", "std": 0.3}
CONV = {"weight_filler": GAUSS, "bias_filler": GAUSS}


def _conv(M, k, pad=0, stride=1, **extra):
    return {"convolution_param": {"num_output": M, "kernel_size": k, "pad": pad,
                                  "stride": stride, **CONV, **extra}}


def _positive(shape, seed=0, low=0.2):
    return np.abs(rand(shape, seed)) + low


def _unpool_mask(N, C, H, W, s=2):
    """A max-pooling mask for (N, C, H, W) values unpooled s-fold: one position per window."""
    rng = np.random.default_rng(5)
    dh, dw = rng.integers(0, s, (2, N, C, H, W))
    h, w = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    return ((h * s + dh) * (W * s) + w * s + dw).astype(np.float64)


def _recurrent(kind, static=False, exposed=0):
    """A recurrent layer's case: x (T=3, N=2, 4), cont (3, 2) with a new stream at t = 0 and
    t = 2, optionally x_static (2, 5) and ``exposed`` initial states (1, 2, H = 3)."""
    tops = {"LSTM": ["h", "h_T", "c_T"], "RNN": ["o", "h_T"]}[kind]
    p = {"num_output": 3, "weight_filler": GAUSS, "bias_filler": GAUSS}
    if exposed:
        p["expose_hidden"] = True
    cont = np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    bottoms = [(3, 2, 4), cont] + [(2, 5)] * static + [(1, 2, 3)] * exposed
    names = ["x", "cont"] + ["x_static"] * static + ["h_0", "c_0"][:exposed]
    return ({"bottom": names, "top": tops if exposed else tops[:1], "recurrent_param": p},
            bottoms)


def _multibox(**change):
    q = {**MULTIBOX, **change}
    norm = q.pop("normalization")
    return ({"multibox_loss_param": q, "loss_param": {"normalization": norm}},
            list(detection_case(seed=2)))


#: (layer spec, bottoms) for each layer type that declares writes_bottom_diffs, covering its
#: code paths (the Convolution ones under every conv layout below); a bottom is a shape (seeded
#: normal values), "labels" (class labels for bottom 0's (N, C, ...) scores) or an array
CASES = {
    "Convolution": [(_conv(5, 3, 1), [(2, 4, 7, 6)]), (_conv(5, 3, 1, 2), [(2, 4, 7, 6)]),
                    (_conv(6, 1), [(2, 4, 5, 5)]), (_conv(6, 1, 0, 2), [(2, 4, 5, 5)]),
                    (_conv(3, 7, 3, 2), [(1, 3, 9, 9)]), (_conv(4, 3, 0, 4), [(2, 3, 11, 11)]),
                    (_conv(4, 3, 1, 1, group=2), [(2, 4, 6, 6)])],
    "DepthwiseConvolution": [(_conv(4, 3, 1), [(2, 4, 6, 6)]), (_conv(8, 3, 1, 2), [(2, 4, 6, 6)])],
    "ConvolutionDepthwise": [(_conv(4, 3, 1), [(2, 4, 6, 6)]), (_conv(4, 5, 2, 2), [(2, 4, 9, 9)])],
    "Deconvolution": [(_conv(3, 3, 1, 2), [(2, 4, 4, 4)])],
    "Im2col": [({"convolution_param": {"kernel_size": 3, "pad": 1, "stride": 2}}, [(2, 3, 5, 5)])],
    "Pooling": [({"pooling_param": {"pool": p, "kernel_size": k, "stride": s, "pad": pad}},
                 [(2, 3, 9, 8)]) for p in ("MAX", "AVE") for k, s, pad in
                ((3, 2, 0), (2, 2, 0), (3, 1, 1), (3, 3, 1))]
               + [({"pooling_param": {"pool": p, "global_pooling": True}}, [(2, 3, 5, 4)])
                  for p in ("MAX", "AVE")],
    "ReLU": [({}, [(2, 3, 4, 5)]), ({"relu_param": {"negative_slope": 0.1}}, [(2, 3, 4, 5)])],
    "Dropout": [({}, [(2, 3, 4, 5)])],
    "BatchNorm": [({}, [(4, 3, 4, 5)]), ({}, [(6, 3)]),
                  ({"batch_norm_param": {"use_global_stats": True}}, [(4, 3, 4, 5)])],
    "Scale": [({"scale_param": {"bias_term": True}}, [(2, 3, 4, 5)]),
              ({"scale_param": {"axis": 0}}, [(2, 3, 4, 5), (2, 3)])],
    "LRN": [({}, [(2, 7, 4, 5)]),
            ({"lrn_param": {"norm_region": "WITHIN_CHANNEL", "local_size": 3}}, [(2, 3, 5, 5)])],
    "InnerProduct": [({"inner_product_param": {"num_output": 4, "weight_filler": GAUSS}},
                      [(3, 2, 3, 2)])],
    "SoftmaxWithLoss": [({}, [(4, 5), "labels"]),
                        ({"loss_param": {"ignore_label": 1, "normalization": "VALID"}},
                         [(3, 4, 2, 2), "labels"])],
    "Split": [({"top": ["a"]}, [(2, 3, 4, 5)]), ({"top": ["a", "b", "c"]}, [(2, 3, 4, 5)])],
    "Concat": [({}, [(2, 3, 4, 5), (2, 2, 4, 5)]),
               ({"concat_param": {"axis": 0}}, [(2, 3, 4, 5), (1, 3, 4, 5)])],
    "Eltwise": [({"eltwise_param": {"operation": op, **extra}}, [(2, 3, 4, 5)] * 3)
                for op, extra in (("SUM", {"coeff": [1, -2, 0.5]}), ("PROD", {}),
                                  ("PROD", {"stable_prod_grad": False}), ("MAX", {}))],
    # neuron layers
    "Sigmoid": [({}, [(2, 3, 4, 5)])],
    "TanH": [({}, [(2, 3, 4, 5)])],
    "ELU": [({}, [(2, 3, 4, 5)]), ({"elu_param": {"alpha": 0.5}}, [(2, 3, 4, 5)])],
    "PReLU": [({}, [(2, 3, 4, 5)]), ({"prelu_param": {"channel_shared": True}}, [(2, 3, 4, 5)])],
    "Power": [({"power_param": {"power": p, "scale": sc, "shift": sh}}, [_positive((2, 3, 4))])
              for p, sc, sh in ((1, 2, 0.5), (2, -0.5, 1), (0.5, 1.5, 0.1), (0, 1, 2),
                                (3, 0, 1))],
    "Exp": [({}, [(2, 3, 4)]), ({"exp_param": {"base": 2, "scale": 0.5, "shift": 1}}, [(2, 3, 4)])],
    "Log": [({}, [_positive((2, 3, 4))]),
            ({"log_param": {"base": 10, "scale": 2, "shift": 0.5}}, [_positive((2, 3, 4))])],
    "AbsVal": [({}, [(2, 3, 4, 5)])],
    "BNLL": [({}, [(2, 3, 4, 5)])],
    "Clip": [({"clip_param": {"min": -0.5, "max": 0.7}}, [(2, 3, 4, 5)])],
    "Swish": [({}, [(2, 3, 4, 5)]), ({"swish_param": {"beta": 1.7}}, [(2, 3, 4, 5)])],
    "ReLU6": [({}, [rand((2, 3, 4, 5)) * 5])],
    # shapes and routing
    "Flatten": [({}, [(2, 3, 4, 5)]), ({"flatten_param": {"axis": 2}}, [(2, 3, 4, 5)])],
    "Reshape": [({"reshape_param": {"shape": {"dim": [0, -1, 2]}}}, [(2, 3, 4, 5)])],
    "Slice": [({"top": ["a", "b", "c"], "slice_param": {"slice_point": [1, 3]}}, [(2, 5, 3)]),
              ({"top": ["a", "b"], "slice_param": {"axis": 0}}, [(4, 3, 2)])],
    "Crop": [({"crop_param": {"offset": [1, 2]}}, [(2, 3, 6, 7), (2, 3, 4, 4)]),
             ({"crop_param": {"axis": 1}}, [(2, 3, 6, 7), (2, 2, 5, 7)])],
    "Tile": [({"tile_param": {"axis": 1, "tiles": 3}}, [(2, 3, 4)])],
    "Permute": [({"permute_param": {"order": [0, 2, 3, 1]}}, [(2, 3, 4, 5)])],
    "Upsample": [({"upsample_param": {"scale": 2}}, [(2, 3, 3, 4)]),           # the YOLO forks'
                 ({"bottom": ["x", "mask"], "upsample_param": {"scale": 2}},  # SegNet's unpool
                  [(2, 3, 3, 4), _unpool_mask(2, 3, 3, 4)])],
    "ShuffleChannel": [({"shuffle_channel_param": {"group": 3}}, [(2, 6, 2, 3)])],
    "Interp": [({"interp_param": {"zoom_factor": 2}}, [(2, 3, 4, 5)]),
               ({"interp_param": {"height": 3, "width": 7, "pad_beg": -1, "pad_end": -1}},
                [(2, 3, 6, 6)])],
    "Silence": [({}, [(2, 3), (4,)])],
    "Filter": [({"top": ["a", "b"]}, [(4, 3), (4, 2, 2), np.array([1.0, 0, 1, 1])])],
    "BatchReindex": [({}, [(4, 3, 2), np.array([0.0, 2, 2, 3, 0])])],
    "Axpy": [({}, [(2, 3, 1, 1), (2, 3, 4, 5), (2, 3, 4, 5)])],
    # normalisation and affine
    "Bias": [({}, [(2, 3, 4, 5)]), ({"bias_param": {"axis": 1}}, [(2, 3, 4, 5), (3, 4)])],
    "MVN": [({}, [(2, 3, 4, 5)]), ({"mvn_param": {"normalize_variance": False}}, [(2, 3, 4, 5)]),
            ({"mvn_param": {"across_channels": True}}, [(2, 3, 4, 5)])],
    "Normalize": [({}, [(2, 3, 4, 5)]),
                  ({"norm_param": {"across_spatial": False, "channel_shared": False}},
                   [(2, 3, 4, 5)])],
    "BN": [({}, [(4, 3, 2, 2)]), ({"bn_param": {"frozen": True}}, [(4, 3, 2, 2)]),
           ({"bn_param": {"bn_mode": "LEARN"}}, [(4, 3, 2, 2)]),
           ({"bn_param": {"bn_mode": "INFERENCE"}}, [(4, 3, 2, 2)])],
    "Softmax": [({}, [(2, 3, 4, 5)]), ({"softmax_param": {"axis": 2}}, [(2, 3, 4, 5)])],
    "Reduction": [({"reduction_param": {"operation": op, "axis": 1, "coeff": 1.5}},
                   [(2, 3, 4)]) for op in ("SUM", "ASUM", "SUMSQ", "MEAN")],
    "SPP": [({"spp_param": {"pyramid_height": 3, "pool": p}}, [(2, 3, 7, 6)])
            for p in ("MAX", "AVE")],
    "ROIPooling": [({"roi_pooling_param": {"pooled_h": 3, "pooled_w": 2,
                                           "spatial_scale": 0.125}}, [(2, 3, 6, 6), ROIS])],
    "PSROIPooling": [({"psroi_pooling_param": {"spatial_scale": 0.125, "output_dim": 2,
                                               "group_size": 3}}, [(2, 18, 6, 6), ROIS])],
    "Embed": [({"embed_param": {"num_output": 3, "input_dim": 5, "weight_filler": GAUSS,
                                "bias_filler": GAUSS}}, [labels((2, 3), 5)])],
    "MarginInnerProduct": [({"top": ["y", "lambda"], "margin_inner_product_param": {
        "num_output": 4, "type": t, "weight_filler": GAUSS}}, [(6, 5), labels(6, 4)])
        for t in ("SINGLE", "QUADRUPLE")],
    "LSTM": [_recurrent("LSTM"), _recurrent("LSTM", static=True, exposed=2)],
    "RNN": [_recurrent("RNN"), _recurrent("RNN", static=True, exposed=1)],
    "LSTMUnit": [({"top": ["c", "h"]}, [(1, 3, 2), (1, 3, 8), np.array([[1.0, 0, 1]])])],
    # losses
    "SoftmaxWithLossOHEM": [({"top": ["loss", "prob", "per_roi"]}, [(4, 5, 2, 2), "labels"])],
    "EuclideanLoss": [({}, [(4, 3, 2), (4, 6)])],
    "CenterLoss": [({"center_loss_param": {"num_output": 3, "center_filler": GAUSS}},
                    [(4, 5), labels(4, 3)])],
    "SmoothL1Loss": [({}, [(4, 3), (4, 3)]),
                     ({"smooth_l1_loss_param": {"sigma": 2}}, [(4, 3), (4, 3), (4, 3)]),
                     ({}, [(4, 3), (4, 3), (4, 3), (4, 3)])],
    "SmoothL1LossOHEM": [({"top": ["loss", "per_roi"]}, [(4, 3, 2, 2), (4, 3, 2, 2)]),
                         ({}, [(4, 3), (4, 3), labels((4, 3), 2)])],
    "SigmoidCrossEntropyLoss": [({}, [(4, 3), np.random.default_rng(2).random((4, 3))]),
                                ({"loss_param": {"ignore_label": 1}},
                                 [(4, 3), labels((4, 3), 3)])],
    "HingeLoss": [({}, [(4, 5), "labels"]), ({"hinge_loss_param": {"norm": "L2"}},
                                             [(4, 5), "labels"])],
    "InfogainLoss": [({}, [(4, 3, 2), "labels", _positive((1, 1, 3, 3))]),
                     ({"loss_param": {"ignore_label": 0}}, [(4, 3), "labels",
                                                            _positive((3, 3))])],
    "ContrastiveLoss": [({}, [(4, 3), (4, 3), np.array([1.0, 0, 0, 1])]),
                        ({"contrastive_loss_param": {"legacy_version": True, "margin": 4}},
                         [(4, 3, 1, 1), (4, 3, 1, 1), np.array([0.0, 0, 1, 1])])],
    "MultinomialLogisticLoss": [({}, [_positive((4, 5)), "labels"])],
    "MultiBoxLoss": [_multibox(), _multibox(conf_loss_type="LOGISTIC", mining_type="NONE"),
                     _multibox(loc_loss_type="L2", mining_type="HARD_EXAMPLE", sample_size=9)],
    "Yolov3": [({"yolov3_param": YOLOV3}, list(yolov3_case()))],
    "RegionLoss": [({"region_loss_param": REGION}, list(region_case())),
                   ({"region_loss_param": {**REGION, "softmax": 0, "rescore": 0}},
                    list(region_case(seed=1)))],
}

CONVOLUTIONS = ("Convolution", "DepthwiseConvolution", "ConvolutionDepthwise", "Deconvolution",
                "Im2col")


#: the registered types left unflagged, and why (every other type has CASES)
UNFLAGGED = {
    **dict.fromkeys(("Accuracy", "ArgMax", "Threshold", "PriorBox", "DetectionOutput",
                     "DetectionEvaluate", "YoloDetectionOutput", "Yolov3DetectionOutput",
                     "BoxAnnotatorOHEM", "HDF5Output", "SegAccuracy", "MatWrite"),
                    "no backward: its bottoms' diffs are never written, so never shared"),
    **dict.fromkeys(("Input", "Data", "DummyData", "MemoryData", "ImageData", "DenseImageData",
                     "WindowData", "HDF5Data", "AnnotatedData", "ImageSegData", "MatRead",
                     "VideoData", "Parameter"),
                    "no bottoms: its tops are inputs, whose diffs are never shared"),
    "Python": "user code: pycaffe layers may add to their bottom diffs",
}


def test_every_layer_that_writes_bottom_diffs_has_cases():
    flagged = {name for name, cls in registry.LAYERS.items() if cls.writes_bottom_diffs}
    assert flagged == set(CASES)
    assert set(registry.LAYERS) - flagged == set(UNFLAGGED)


def _bottom_array(type_, shapes, k):
    s = shapes[k]
    if isinstance(s, np.ndarray):
        return s
    if s == "labels":
        lead = np.shape(shapes[0]) if isinstance(shapes[0], np.ndarray) else shapes[0]
        return labels((lead[0],) + tuple(lead[2:]), lead[1], seed=3).astype(np.float64)
    return rand(s, seed=k) + (1.5 if type_ == "Eltwise" else 0.0)


def _bottom_diffs(type_, extra, shapes, fill):
    """The layer's bottom diffs after forward + backward with every bottom diff filled with
    ``fill`` first (float64, seeded inputs and top diffs)."""
    spec = {"type": type_, **extra}
    arrays = [_bottom_array(type_, shapes, k) for k in range(len(shapes))]
    layer, top_shapes = make_layer(spec, [a.shape for a in arrays])
    bottom, top = run_forward(layer, arrays, top_shapes)
    for k, t in enumerate(top):
        t.diff = rand(t.shape, seed=10 + k)
    propagate = [k not in layer.no_grad_bottoms for k in range(len(bottom))]
    for b in bottom:
        b.diff = np.full(b.shape, fill)
    layer.backward(top, propagate, bottom)
    return [b.diff.copy() for b, p in zip(bottom, propagate) if p]


def _check(type_, extra, shapes):
    want = _bottom_diffs(type_, extra, shapes, 0.0)
    got = _bottom_diffs(type_, extra, shapes, np.nan)
    assert got or type_ == "Embed", (type_, extra)      # Embed's bottom is its indices
    for w, g in zip(want, got):
        assert np.isfinite(g).all(), (type_, extra)
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("layout", list(CONV_LAYOUTS))
def test_convolutions_overwrite_bottom_diffs(layout, conv_tuning):
    spec = dict(CONV_LAYOUTS[layout])
    spec["pair_transposed_min_aspect"] = spec["pair_transposed_min_columns"]
    conv_tuning(transposed_max_growth=10.0**9, transposed_min_channels=1, **spec)
    for type_ in CONVOLUTIONS:
        for extra, shapes in CASES[type_]:
            _check(type_, extra, shapes)


@pytest.mark.parametrize("chunk_bytes", [1, 1 << 20])
def test_pooling_overwrites_bottom_diffs(chunk_bytes, pool_tuning):
    pool_tuning(chunk_bytes=chunk_bytes)
    for extra, shapes in CASES["Pooling"]:
        _check("Pooling", extra, shapes)


@pytest.mark.parametrize("type_", sorted(set(CASES) - set(CONVOLUTIONS) - {"Pooling"}))
def test_layers_overwrite_bottom_diffs(type_):
    for extra, shapes in CASES[type_]:
        _check(type_, extra, shapes)


# -- whole nets: training with shared diffs gives the same weights ---------------------------

def _input(shape, label_shape=None):
    return {"name": "data", "type": "Input", "top": ["data", "label"],
            "input_param": {"shape": [{"dim": list(shape)},
                                      {"dim": list(label_shape or [shape[0]])}]}}


def _layer(name, type_, bottom, top=None, **params):
    return {"name": name, "type": type_, "bottom": bottom, "top": top or name, **params}


def _lenet():
    return {"name": "lenet", "layer": [
        _input((4, 1, 28, 28)),
        _layer("conv1", "Convolution", "data", **_conv(6, 5)),
        _layer("pool1", "Pooling", "conv1", pooling_param={"pool": "MAX", "kernel_size": 2,
                                                           "stride": 2}),
        _layer("conv2", "Convolution", "pool1", **_conv(8, 5)),
        _layer("pool2", "Pooling", "conv2", pooling_param={"pool": "MAX", "kernel_size": 2,
                                                           "stride": 2}),
        _layer("ip1", "InnerProduct", "pool2", inner_product_param={
            "num_output": 20, "weight_filler": GAUSS, "bias_filler": GAUSS}),
        _layer("relu1", "ReLU", "ip1", "ip1"),
        _layer("ip2", "InnerProduct", "ip1", inner_product_param={
            "num_output": 10, "weight_filler": GAUSS, "bias_filler": GAUSS}),
        _layer("accuracy", "Accuracy", ["ip2", "label"]),
        _layer("loss", "SoftmaxWithLoss", ["ip2", "label"])]}


def _bn_block(name, bottom, M, k, stride=1, relu=True):
    """Convolution → BatchNorm → Scale (→ ReLU), all but the convolution in place."""
    layers = [_layer(name, "Convolution", bottom, **_conv(M, k, k // 2, stride, bias_term=False)),
              _layer(f"{name}_bn", "BatchNorm", name, name),
              _layer(f"{name}_scale", "Scale", name, name, scale_param={"bias_term": True})]
    if relu:
        layers.append(_layer(f"{name}_relu", "ReLU", name, name))
    return layers


def _resnet_like():
    """Two residual blocks (projection, then identity shortcut: Split + Eltwise)."""
    layers = [_input((4, 3, 12, 12)), *_bn_block("conv1", "data", 8, 3),
              _layer("pool1", "Pooling", "conv1", pooling_param={"pool": "MAX", "kernel_size": 3,
                                                                 "stride": 2})]
    bottom = "pool1"
    for b, project in (("a", True), ("b", False)):
        short = bottom
        if project:
            layers += _bn_block(f"{b}_proj", bottom, 16, 1, relu=False)
            short = f"{b}_proj"
        layers += _bn_block(f"{b}_1", bottom, 4, 1) + _bn_block(f"{b}_2", f"{b}_1", 4, 3)
        layers += _bn_block(f"{b}_3", f"{b}_2", 16, 1, relu=False)
        layers += [_layer(f"{b}_sum", "Eltwise", [short, f"{b}_3"]),
                   _layer(f"{b}_relu", "ReLU", f"{b}_sum", f"{b}_sum")]
        bottom = f"{b}_sum"
    layers += [_layer("gap", "Pooling", bottom, pooling_param={"pool": "AVE",
                                                               "global_pooling": True}),
               _layer("fc", "InnerProduct", "gap", inner_product_param={
                   "num_output": 5, "weight_filler": GAUSS, "bias_filler": GAUSS}),
               _layer("loss", "SoftmaxWithLoss", ["fc", "label"])]
    return {"name": "resnet_like", "layer": layers}


def _googlenet_like():
    """LRN, then an inception module (four branches into a Concat), Dropout, two losses."""
    relu = [("ReLU", {})]
    layers = [_input((4, 3, 12, 12)),
              _layer("conv1", "Convolution", "data", **_conv(8, 3, 1, 2)),
              _layer("relu1", "ReLU", "conv1", "conv1"),
              _layer("norm1", "LRN", "conv1", lrn_param={"local_size": 5, "alpha": 1e-4,
                                                         "beta": 0.75})]
    branches = []
    for name, k, M, pre in (("b1", 1, 4, None), ("b3", 3, 6, 3), ("b5", 5, 2, 2)):
        src = "norm1"
        if pre:
            layers += [_layer(f"{name}_red", "Convolution", "norm1", **_conv(pre, 1))]
            layers += [_layer(f"{name}_red_relu", t, f"{name}_red", f"{name}_red", **p)
                       for t, p in relu]
            src = f"{name}_red"
        layers += [_layer(name, "Convolution", src, **_conv(M, k, k // 2)),
                   _layer(f"{name}_relu", "ReLU", name, name)]
        branches.append(name)
    layers += [_layer("bp_pool", "Pooling", "norm1", pooling_param={
                   "pool": "MAX", "kernel_size": 3, "stride": 1, "pad": 1}),
               _layer("bp", "Convolution", "bp_pool", **_conv(3, 1)),
               _layer("cat", "Concat", branches + ["bp"]),
               _layer("aux", "InnerProduct", "cat", inner_product_param={
                   "num_output": 6, "weight_filler": GAUSS, "bias_filler": GAUSS}),
               _layer("aux_loss", "SoftmaxWithLoss", ["aux", "label"], loss_weight=[0.3]),
               _layer("gap", "Pooling", "cat", pooling_param={"pool": "AVE",
                                                              "global_pooling": True}),
               _layer("drop", "Dropout", "gap", "gap", dropout_param={"dropout_ratio": 0.4}),
               _layer("fc", "InnerProduct", "gap", inner_product_param={
                   "num_output": 6, "weight_filler": GAUSS, "bias_filler": GAUSS}),
               _layer("loss", "SoftmaxWithLoss", ["fc", "label"])]
    return {"name": "googlenet_like", "layer": layers}


def _ssd_head(fmap, classes, min_size, max_size):
    """SSD's head on ``fmap``: loc and conf convolutions, each permuted and flattened, and the
    priors (4 per cell)."""
    layers = []
    for kind, n in (("loc", 4 * 4), ("conf", 4 * classes)):
        name = f"{fmap}_{kind}"
        layers += [_layer(name, "Convolution", fmap, **_conv(n, 3, 1)),
                   _layer(f"{name}_perm", "Permute", name, permute_param={"order": [0, 2, 3, 1]}),
                   _layer(f"{name}_flat", "Flatten", f"{name}_perm")]
    layers.append(_layer(f"{fmap}_prior", "PriorBox", [fmap, "data"], prior_box_param={
        "min_size": min_size, "max_size": max_size, "aspect_ratio": 2, "flip": True,
        "variance": [0.1, 0.1, 0.2, 0.2]}))
    return layers


def _ssd_like():
    """SSD: a Normalize'd 8×8 map and a 4×4 one (ReLU6, PReLU), each with a head (Permute,
    Flatten, PriorBox), the heads' Concats and MultiBoxLoss; labels are 4 rows
    [item, class, instance, xmin, ymin, xmax, ymax, difficult]."""
    layers = [_input((4, 3, 16, 16), (1, 1, 4, 8)),
              _layer("conv1", "Convolution", "data", **_conv(8, 3, 1, 2)),
              _layer("conv1_relu", "ReLU6", "conv1", "conv1"),
              _layer("conv1_norm", "Normalize", "conv1", norm_param={"channel_shared": False}),
              _layer("conv2", "Convolution", "conv1", **_conv(8, 3, 1, 2)),
              _layer("conv2_relu", "PReLU", "conv2", "conv2"),
              *_ssd_head("conv1_norm", 3, 4, 8), *_ssd_head("conv2", 3, 8, 14)]
    for kind, axis in (("loc", 1), ("conf", 1), ("prior", 2)):
        suffix = "" if kind == "prior" else "_flat"
        layers.append(_layer(f"mbox_{kind}", "Concat", [f"conv1_norm_{kind}{suffix}",
                                                        f"conv2_{kind}{suffix}"],
                             concat_param={"axis": axis}))
    layers.append(_layer("mbox_loss", "MultiBoxLoss", ["mbox_loc", "mbox_conf", "mbox_prior",
                                                      "label"],
                         propagate_down=[True, True, False, False],
                         multibox_loss_param={"num_classes": 3, "overlap_threshold": 0.5,
                                              "neg_pos_ratio": 3.0, "neg_overlap": 0.5}))
    return {"name": "ssd_like", "layer": layers}


def _ssd_labels(rng, shape):
    """4 ground truths over the batch: rows [item, class 1–2, instance, box, not difficult]."""
    rows = []
    for g in range(shape[2]):
        x0, y0 = rng.uniform(0, 0.6, 2)
        w, h = rng.uniform(0.2, 0.4, 2)
        rows.append([g % 4, 1 + g % 2, g // 4, x0, y0, x0 + w, y0 + h, 0])
    return np.asarray(rows).reshape(shape)


def _yolo_like():
    """YOLOv3: a stride-4 map upsampled (Upsample) and joined (Concat) with a stride-2 map,
    Sigmoid and Swish activations, a Slice, and the Yolov3 loss; labels (N, 1, 3, 5)."""
    layers = [_input((4, 3, 16, 16), (4, 1, 3, 5)),
              _layer("conv1", "Convolution", "data", **_conv(8, 3, 1, 2)),
              _layer("conv1_act", "Swish", "conv1", "conv1"),
              _layer("conv2", "Convolution", "conv1", **_conv(8, 3, 1, 2)),
              _layer("conv2_act", "ReLU", "conv2", "conv2", relu_param={"negative_slope": 0.1}),
              _layer("up", "Upsample", "conv2", upsample_param={"scale": 2}),
              _layer("cat", "Concat", ["up", "conv1"]),
              _layer("halves", "Slice", "cat", ["half_a", "half_b"]),
              _layer("gate", "Sigmoid", "half_a"),
              _layer("mixed", "Eltwise", ["gate", "half_b"], eltwise_param={"operation": "PROD"}),
              _layer("head", "Convolution", "mixed", **_conv(2 * 8, 1)),
              _layer("yolo_loss", "Yolov3", ["head", "label"], yolov3_param={
                  "num_class": 3, "num": 2, "thresh": 0.5, "anchors_scale": 2,
                  "biases": [3, 4, 6, 5, 8, 9, 12, 10], "mask": [1, 2]})]
    return {"name": "yolo_like", "layer": layers}


def _yolo_labels(rng, shape):
    """Per image 2 boxes [class, cx, cy, w, h] and an empty row."""
    label = np.zeros(shape)
    label[:, 0, :2, 0] = rng.integers(0, 3, (shape[0], 2))
    label[:, 0, :2, 1:3] = rng.uniform(0.2, 0.8, (shape[0], 2, 2))
    label[:, 0, :2, 3:] = rng.uniform(0.2, 0.5, (shape[0], 2, 2))
    return label


def _classes(n):
    return lambda rng, shape: rng.integers(0, n, shape)


#: net -> (spec, labels(rng, shape)); the detection nets use the newly flagged layers
NETS = {"lenet": (_lenet, _classes(10)), "resnet_like": (_resnet_like, _classes(5)),
        "googlenet_like": (_googlenet_like, _classes(6)), "ssd_like": (_ssd_like, _ssd_labels),
        "yolo_like": (_yolo_like, _yolo_labels)}
#: blobs of the detection nets that must share (their layers are all flagged)
PLANNED = {"ssd_like": {"conv1_norm", "conv1_norm_loc_perm", "conv1_norm_loc_flat",
                        "conv2_conf_flat", "mbox_loc", "mbox_conf", "conv2"},
           "yolo_like": {"up", "cat", "half_a", "gate", "mixed", "head", "conv1"}}


def _solver(name, dtype, reuse_diffs, iter_size=1):
    make, draw_labels = NETS[name]
    spec = make()
    sp = SolverParameter.model_validate({
        "net": "t", "base_lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
        "regularization_type": "L2", "lr_policy": "fixed", "max_iter": 10, "display": 0,
        "random_seed": 4, "iter_size": iter_size})
    s = Solver(sp, backend=Backend(np, dtype), net_param=parse_net(spec, name),
               reuse_diffs=reuse_diffs, log=CaffeLog(quiet=True))
    return s, draw_labels


@pytest.mark.parametrize("dtype,iter_size", [(np.float64, 1), (np.float32, 1), (np.float32, 2)])
@pytest.mark.parametrize("name", list(NETS))
def test_training_with_shared_diffs_gives_the_same_weights(name, dtype, iter_size):
    plain, draw_labels = _solver(name, dtype, False, iter_size)
    shared, _ = _solver(name, dtype, True, iter_size)
    assert shared.net.diffs_shared and not plain.net.diffs_shared
    assert 0 < shared.net.shared_diff_bytes
    rng = np.random.default_rng(6)
    for _ in range(4):                                 # arrays reused between iterations
        x = rng.standard_normal(plain.net.blobs["data"].shape)
        y = draw_labels(rng, plain.net.blobs["label"].shape)
        losses = []
        for s in (plain, shared):
            s.net.blobs["data"].data[...] = x
            s.net.blobs["label"].data[...] = y
            losses.append(s.step_once())
        assert losses[0] == losses[1]
    for (k, p), q in zip(plain.net.named_params().items(), shared.net.named_params().values()):
        np.testing.assert_array_equal(q.data, p.data, err_msg=k)
        np.testing.assert_array_equal(q.diff, p.diff, err_msg=k)
    losses = [b.name for b, _ in shared.net.loss_terms]
    for blob in ["data"] + losses:                     # an input and a loss top keep theirs
        np.testing.assert_array_equal(shared.net.blobs[blob].diff, plain.net.blobs[blob].diff)
    net = shared.net
    spans = plan_diffs(net.layers, net.bottoms, net.tops, net.layer_backward, net.propagate,
                       set(net.output_names) | set(losses))
    assert PLANNED.get(name, set()) <= {blob.name for _, _, (blob,) in spans}
    scales = [layer for layer in shared.net.layers if layer.type_name == "Scale"]
    assert all(np.shares_memory(s.x_cache, s.input_from.x_norm) for s in scales)
    assert len(scales) == (8 if name == "resnet_like" else 0)
    assert not any(layer.input_from for layer in plain.net.layers if layer.type_name == "Scale")


def test_diffs_that_live_together_never_share():
    """Every pair of planned blobs whose layer spans overlap has distinct diff arrays, some
    do share; inputs, outputs and loss tops are not planned."""
    s, _ = _solver("resnet_like", np.float64, True)
    net = s.net
    keep = set(net.output_names) | {"loss"}
    spans = plan_diffs(net.layers, net.bottoms, net.tops, net.layer_backward, net.propagate, keep)
    names = {blob.name for _, _, (blob,) in spans}
    assert {"conv1", "pool1", "a_1", "a_sum", "gap"} <= names
    assert not names & {"data", "label", "loss"}
    shared_any = False
    for i, (f1, l1, (b1,)) in enumerate(spans):
        for f2, l2, (b2,) in spans[i + 1:]:
            same = np.shares_memory(b1.diff, b2.diff)
            assert not (same and f1 <= l2 and f2 <= l1), (b1.name, b2.name)
            shared_any |= same
    assert shared_any
    total = sum(b.diff.nbytes for _, _, (b,) in spans)
    assert net.shared_diff_bytes < total


def test_force_backward_and_plain_nets_keep_their_diffs():
    spec = _resnet_like()
    assert not Net(parse_net(spec, "n"), "TRAIN", Backend(np, np.float64)).diffs_shared
    spec["force_backward"] = True
    net = Net(parse_net(spec, "n"), "TRAIN", Backend(np, np.float64), reuse_diffs=True)
    assert not net.diffs_shared and net.shared_diff_bytes == 0


def test_python_solver_shares_diffs_when_asked(tmp_path):
    """``netspec.solver(..., reuse_diffs=True)`` trains like the default, which keeps diffs."""
    import yaml

    import netspec
    (tmp_path / "net.yaml").write_text(yaml.safe_dump(_resnet_like()))
    (tmp_path / "solver.yaml").write_text(yaml.safe_dump({
        "net": "net.yaml", "base_lr": 0.05, "momentum": 0.9, "lr_policy": "fixed",
        "max_iter": 3, "display": 0, "snapshot": 0, "random_seed": 4}))
    runs = [netspec.solver(tmp_path / "solver.yaml", reuse_diffs=r) for r in (False, True)]
    assert [t.solver.net.diffs_shared for t in runs] == [False, True]
    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((4, 3, 12, 12)), rng.integers(0, 5, 4)
    for t in runs:
        t.solver.net.blobs["data"].data[...] = x
        t.solver.net.blobs["label"].data[...] = y
        t.solver.step_once()
    for p, q in zip(runs[0].solver.net.params, runs[1].solver.net.params):
        np.testing.assert_array_equal(q.data, p.data)
