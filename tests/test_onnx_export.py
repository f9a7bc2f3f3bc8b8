"""ONNX export (``netspec/onnx_export/``) checked against ONNX Runtime.

Every case builds a net in netspec, exports it, runs the same input through ONNX Runtime and
compares the outputs (and the input of the last Softmax, where one saturates) to netspec's:
small random nets per layer type (Caffe's ceil-mode and clipped pooling windows, AVE padding
included), every deploy net of the Caffe zoo (random weights, sane BatchNorm statistics), the
LeNet real Caffe trained on the real MNIST test set, the fork nets ONNX can express; and the
refusal of nets it cannot express, ``onnx.checker`` (full check) and the command line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'netspec[onnx]')")
ort = pytest.importorskip("onnxruntime",
                          reason="onnxruntime is not installed (pip install 'netspec[onnx]')")
pytest.importorskip("google.protobuf", reason="protobuf is not installed (pip install 'netspec[caffe]')")

from zoo_deploy import fill_well_scaled, without_last_layer  # noqa: E402

import netspec  # noqa: E402
from netspec.caffe import prototxt as ptx  # noqa: E402
from netspec.cli import main  # noqa: E402
from netspec.model import read_net_param  # noqa: E402
from netspec.onnx_export.builder import OPSET  # noqa: E402
from netspec.onnx_export.convert import OnnxExportError, check_exportable  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "caffe"
ZOO, TRAINED = GOLDEN / "zoo", GOLDEN / "lenet_trained"
FORKS = Path(__file__).parent / "zoo_forks"
LENET_DEPLOY = ZOO / "BVLC__caffe__examples__mnist__lenet.prototxt"
#: relative deviation allowed between ONNX Runtime and netspec (float32 both)
RTOL = 1e-4


# -- helpers ---------------------------------------------------------------------------------
def fill_random(model, rng) -> None:
    """Well-scaled random weights (``zoo_deploy.fill_well_scaled``) in a Model's net."""
    fill_well_scaled(model.net, int(rng.integers(2**31)))


def softmax_inputs(model) -> list[str]:
    """The bottom of each Softmax (its output saturates under random weights)."""
    return [d.bottoms[0] for d in model.net.defs if d.lp.type == "Softmax"]


def runtime(proto):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(proto.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def deviation(ours: np.ndarray, theirs: np.ndarray) -> float:
    """max |ours − theirs| / max |ours| (0 for two zero arrays)."""
    assert ours.shape == theirs.shape
    scale = float(np.abs(ours).max())
    diff = float(np.abs(ours.astype(np.float64) - theirs).max())
    return diff / scale if scale else diff


def compare(model, inputs: dict, blobs=()) -> dict[str, float]:
    """Export ``model`` (checked, full check), run ``inputs`` through netspec and ONNX
    Runtime; the relative deviation of each output and each of ``blobs``."""
    proto = model.to_onnx(blobs)
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == model.inputs
    ours = model.forward(blobs=blobs, **inputs)
    sess = runtime(proto)
    names = [o.name for o in sess.get_outputs()]
    assert names[:len(model.outputs)] == model.outputs
    theirs = dict(zip(names, sess.run(None, inputs)))
    return {k: deviation(ours[k], theirs[k]) for k in ours}


def random_inputs(model, rng) -> dict:
    return {n: rng.standard_normal(model.blobs[n].shape).astype(np.float32)
            for n in model.inputs}


# -- per layer type -------------------------------------------------------------------------
GAUSS = {"type": "gaussian", "std": 0.5}


def conv(name, bottom, M, **extra):
    return {"name": name, "type": "Convolution", "bottom": bottom, "top": name,
            "convolution_param": {"num_output": M, "kernel_size": 3, "weight_filler": GAUSS,
                                  "bias_filler": GAUSS, **extra}}


def pool(name, bottom, **p):
    return {"name": name, "type": "Pooling", "bottom": bottom, "top": name, "pooling_param": p}


def one(type_, block=None, bottom="data", name="y", **fields):
    layer = {"name": name, "type": type_, "bottom": bottom, "top": name, **fields}
    if block:
        layer[f"{_BLOCKS.get(type_, type_.lower())}_param"] = block
    return layer


_BLOCKS = {"InnerProduct": "inner_product", "BatchNorm": "batch_norm", "ReLU": "relu",
           "ArgMax": "argmax", "ShuffleChannel": "shuffle_channel", "Permute": "permute",
           "Normalize": "norm", "Upsample": "upsample", "Interp": "interp", "TanH": "tanh"}

#: case -> (input shapes {name: shape}, layers after the Input layers)
X = {"data": (2, 3, 7, 9)}
P = {"data": (2, 3, 8, 10)}
CASES = {
    "conv_group_dilation_stride": (X, [conv("c", "data", 6, group=3, dilation=2, stride=2, pad=2)]),
    "conv_rect_no_bias": (X, [{**conv("c", "data", 4), "convolution_param": {
        "num_output": 4, "kernel_h": 2, "kernel_w": 3, "pad_h": 1, "pad_w": 0, "stride_h": 2,
        "stride_w": 1, "bias_term": False, "weight_filler": GAUSS}}]),
    "deconv": (X, [{**conv("d", "data", 4, stride=2, pad=1, group=1), "type": "Deconvolution"}]),
    "deconv_group": (X, [{**conv("d", "data", 6, stride=3, group=3, dilation=2), "type": "Deconvolution"}]),
    "depthwise": (X, [{**conv("d", "data", 3, group=3, pad=1), "type": "DepthwiseConvolution"}]),
    # Caffe's ceil rule: 8x10, k3 s2 -> 4x5 windows (floor: 3x4), the last ones clipped to 2
    "max_ceil": (P, [pool("p", "data", pool="MAX", kernel_size=3, stride=2)]),
    "ave_ceil": (P, [pool("p", "data", pool="AVE", kernel_size=3, stride=2)]),
    # pad: AVE divides by the window clipped to the padded input, pad cells included
    "ave_pad": (P, [pool("p", "data", pool="AVE", kernel_size=3, stride=2, pad=1)]),
    "ave_pad_no_clipping": (X, [pool("p", "data", pool="AVE", kernel_size=3, stride=2, pad=1)]),
    "ave_pad_clipped_last": ({"data": (1, 2, 6, 6)}, [pool("p", "data", pool="AVE", kernel_size=3,
                                                            stride=2, pad=1)]),
    "max_pad_drop_last": ({"data": (1, 2, 5, 5)}, [pool("p", "data", pool="MAX", kernel_size=2,
                                                         stride=2, pad=1)]),
    "ave_rect_pads": (X, [pool("p", "data", pool="AVE", kernel_h=3, kernel_w=2, stride_h=2,
                                stride_w=3, pad_h=2, pad_w=1)]),
    "ave_floor": (X, [pool("p", "data", pool="AVE", kernel_size=3, stride=2, pad=1,
                           round_mode="FLOOR")]),
    "max_global": (X, [pool("p", "data", pool="MAX", global_pooling=True)]),
    "ave_global": (X, [pool("p", "data", pool="AVE", global_pooling=True)]),
    "inner_product": (X, [one("InnerProduct", {"num_output": 5, "weight_filler": GAUSS,
                                               "bias_filler": GAUSS})]),
    "inner_product_axis2_transpose": (X, [one("InnerProduct", {
        "num_output": 4, "axis": 2, "transpose": True, "weight_filler": GAUSS})]),
    "batch_norm": (X, [one("BatchNorm", {"eps": 1e-3})]),
    "batch_norm_batch_stats": (X, [one("BatchNorm", {"use_global_stats": False})]),
    "batch_norm_2d": ({"data": (4, 5)}, [one("BatchNorm")]),
    "bn_pspnet": (X, [one("BN", {"eps": 1e-4})]),
    "scale_bias": (X, [one("Scale", {"bias_term": True, "filler": GAUSS, "bias_filler": GAUSS})]),
    "scale_axis_num_axes": (X, [one("Scale", {"axis": 2, "num_axes": 2, "filler": GAUSS})]),
    "scale_second_bottom": ({"data": (2, 3, 4, 5), "s": (2, 3)},
                            [one("Scale", {"axis": 0}, bottom=["data", "s"])]),
    "bias_second_bottom": ({"data": (2, 3, 4, 5), "b": (3, 4)},
                           [one("Bias", {"axis": 1}, bottom=["data", "b"])]),
    "bias_learned": (X, [one("Bias", {"filler": GAUSS})]),
    "lrn_across": (X, [one("LRN", {"local_size": 3, "alpha": 0.5, "beta": 0.75, "k": 2})]),
    "lrn_within": (X, [one("LRN", {"local_size": 3, "alpha": 0.5, "beta": 0.75,
                                   "norm_region": "WITHIN_CHANNEL"})]),
    "mvn": (X, [one("MVN", {"across_channels": True})]),
    "mvn_mean_only": (X, [one("MVN", {"normalize_variance": False})]),
    "relu": (X, [one("ReLU")]),
    "leaky_relu_in_place": (X, [conv("c", "data", 4), one("ReLU", {"negative_slope": 0.1},
                                                           bottom="c", name="c")]),
    "prelu": (X, [one("PReLU", {"filler": GAUSS})]),
    "prelu_shared": (X, [one("PReLU", {"channel_shared": True, "filler": GAUSS})]),
    "sigmoid": (X, [one("Sigmoid")]), "tanh": (X, [one("TanH")]), "absval": (X, [one("AbsVal")]),
    "power": (X, [one("AbsVal", name="a"), one("Power", {"power": 1.5, "scale": 2, "shift": 0.5},
                                              bottom="a")]),
    "power_square": (X, [one("Power", {"power": 2, "scale": -1, "shift": 0.5})]),
    "power_constant": (X, [one("Power", {"power": 0})]),
    "exp": (X, [one("Exp", {"base": 2, "scale": 0.5, "shift": 1})]),
    "log": (X, [one("AbsVal", name="a"), one("Log", {"base": 10, "scale": 2, "shift": 1},
                                            bottom="a")]),
    "bnll": (X, [one("BNLL")]), "elu": (X, [one("ELU", {"alpha": 0.5})]),
    "threshold": (X, [one("Threshold", {"threshold": 0.2})]),
    "clip": (X, [one("Clip", {"min": -0.5, "max": 0.7})]), "relu6": (X, [one("ReLU6")]),
    "swish": (X, [one("Swish", {"beta": 1.5})]),
    "dropout": (X, [one("Dropout", {"dropout_ratio": 0.3})]),
    "softmax_axis": (X, [one("Softmax", {"axis": 2})]),
    "concat_slice_split": (X, [
        {"name": "s", "type": "Slice", "bottom": "data", "top": ["s0", "s1", "s2"],
         "slice_param": {"axis": 3, "slice_point": [2, 6]}},
        {"name": "c", "type": "Concat", "bottom": ["s2", "s0", "s2"], "top": "c",
         "concat_param": {"axis": 3}}]),
    "eltwise_sum_coeff": (X, [one("TanH", name="t"), one("Eltwise", {"coeff": [0.5, -2]},
                                                         bottom=["data", "t"])]),
    "eltwise_prod_max": (X, [one("TanH", name="t"),
                             one("Eltwise", {"operation": "PROD"}, bottom=["data", "t"], name="p"),
                             one("Eltwise", {"operation": "MAX"}, bottom=["data", "t", "p"])]),
    "flatten_reshape": (X, [one("Flatten", {"axis": 2}, name="f"),
                            one("Reshape", {"shape": {"dim": [0, -1, 3]}}, bottom="f")]),
    "crop": ({"data": (2, 3, 7, 9), "ref": (2, 3, 4, 5)},
             [one("Crop", {"axis": 2, "offset": [2, 1]}, bottom=["data", "ref"])]),
    "reduction": (X, [one("Reduction", {"operation": op, "axis": 2, "coeff": 0.5}, name=op)
                      for op in ("SUM", "ASUM", "SUMSQ", "MEAN")]),
    "reduction_all": (X, [one("Reduction", {"operation": "MEAN"})]),
    "argmax_flat": (X, [one("ArgMax", {"top_k": 3, "out_max_val": True})]),
    "argmax_axis": (X, [one("ArgMax", {"axis": 1, "top_k": 2}, name="i"),
                        one("ArgMax", {"axis": 3, "top_k": 2, "out_max_val": True}, name="v")]),
    # ties (ReLU's zeros): Caffe ranks the larger index first
    "argmax_ties": (X, [one("ReLU", {"negative_slope": 0}, name="r"),
                        one("ArgMax", {"top_k": 150}, bottom="r", name="flat"),
                        one("ArgMax", {"axis": 1, "top_k": 3}, bottom="r", name="channels")]),
    "tile": (X, [one("Tile", {"axis": 2, "tiles": 3})]),
    "permute": (X, [one("Permute", {"order": [0, 2, 3, 1]})]),
    "shuffle_channel": ({"data": (2, 6, 3, 4)}, [one("ShuffleChannel", {"group": 3})]),
    "upsample": (X, [one("Upsample", {"scale": 2})]),
    "interp_zoom": (X, [one("Interp", {"zoom_factor": 3})]),
    "interp_shrink_zoom": (X, [one("Interp", {"shrink_factor": 2, "zoom_factor": 3})]),
    "interp_second_bottom": ({"data": (2, 3, 7, 9), "ref": (1, 1, 10, 4)},
                             [one("Interp", bottom=["data", "ref"])]),
    "conv_two_bottoms": ({"a": (2, 3, 7, 9), "b": (2, 3, 7, 9)}, [
        {**conv("c", ["a", "b"], 4, pad=1), "top": ["ca", "cb"]}]),
    "dropout_no_scale_train": (X, [one("Dropout", {"dropout_ratio": 0.3, "scale_train": False})]),
    "interp_height_width_crop": (X, [one("Interp", {"height": 11, "width": 5, "pad_beg": -1,
                                                    "pad_end": -1})]),
    "normalize": (X, [one("Normalize", {"across_spatial": False, "channel_shared": False,
                                        "scale_filler": GAUSS})]),
    "normalize_spatial_shared": (X, [one("Normalize", {"scale_filler": GAUSS})]),
    "axpy": ({"a": (2, 3, 1, 1), "x": (2, 3, 4, 5), "y": (2, 3, 4, 5)},
             [{"name": "z", "type": "Axpy", "bottom": ["a", "x", "y"], "top": "z"}]),
    "legacy_input_header": (None, None),
}


def case_net(case: str, path: Path) -> Path:
    shapes, layers = CASES[case]
    if shapes is None:       # the old `input:` header instead of Input layers
        spec = {"name": case, "input": ["data"], "input_shape": [{"dim": [2, 3, 5, 5]}],
                "layer": [conv("c", "data", 2)]}
    else:
        spec = {"name": case, "layer": [
            *({"name": k, "type": "Input", "top": k, "input_param": {"shape": {"dim": list(s)}}}
              for k, s in shapes.items()), *layers]}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_matches_onnx_runtime(case, tmp_path):
    model = netspec.load(case_net(case, tmp_path / "net.yaml"))
    rng = np.random.default_rng(3)
    for layer in model.net.layers:
        if layer.type_name in ("BatchNorm", "BN"):
            fill_random(model, rng)
    inputs = random_inputs(model, rng)
    computed = [t for d in model.net.defs if d.lp.type not in ("Input", "Split") for t in d.tops]
    devs = compare(model, inputs, blobs=computed)
    assert max(devs.values()) <= RTOL, devs


def test_pooling_cases_reach_caffes_window_rules(tmp_path):
    """The pooling cases exercise what plain ONNX pooling would get wrong: the ceil rule adds a
    clipped last window, and the AVE of a window over the padding divides by the window
    clipped to the padded input (pad cells counted), neither by k² nor by the image cells."""
    model = netspec.load(case_net("ave_pad_clipped_last", tmp_path / "net.yaml"))
    x = np.ones((1, 2, 6, 6), np.float32)
    y = model.forward(data=x)["p"]
    assert y.shape == (1, 2, 4, 4)          # ceil((6 + 2 - 3) / 2) + 1 = 4; floor would give 3
    # corner window: 4 image cells of a 3x3 window in the padding -> 4/9; the last row's
    # window [5, 8) is clipped to [5, 7): 1 image row and 1 pad row x 3 image columns -> 3/6
    # (the image cells alone would give 1, the kernel area 1/3)
    assert y[0, 0, 0, 0] == pytest.approx(4 / 9) and y[0, 0, 3, 1] == pytest.approx(3 / 6)
    assert compare(model, {"data": x})["p"] <= RTOL


# -- the zoo ---------------------------------------------------------------------------------
#: the zoo's deploy nets: its nets whose TEST phase ONNX can express (a literal, so that
#: collecting the tests parses no net; test_every_zoo_deploy_net_is_exported recomputes it)
DEPLOY_NETS = [
    "BVLC__caffe__at_11a4c16__models__bvlc_googlenet__deploy.prototxt",
    "BVLC__caffe__examples__cifar10__cifar10_full.prototxt",
    "BVLC__caffe__examples__cifar10__cifar10_quick.prototxt",
    "BVLC__caffe__examples__mnist__lenet.prototxt",
    "BVLC__caffe__examples__net_surgery__bvlc_caffenet_full_conv.prototxt",
    "BVLC__caffe__examples__net_surgery__conv.prototxt",
    "BVLC__caffe__examples__siamese__mnist_siamese.prototxt",
    "BVLC__caffe__models__bvlc_alexnet__deploy.prototxt",
    "BVLC__caffe__models__bvlc_googlenet__deploy.prototxt",
    "BVLC__caffe__models__bvlc_reference_caffenet__deploy.prototxt",
    "BVLC__caffe__models__bvlc_reference_rcnn_ilsvrc13__deploy.prototxt",
    "BVLC__caffe__models__finetune_flickr_style__deploy.prototxt",
    "DeepScale__SqueezeNet__SqueezeNet_v1.0__deploy.prototxt",
    "DeepScale__SqueezeNet__SqueezeNet_v1.1__deploy.prototxt",
    "KaimingHe__deep-residual-networks__prototxt__ResNet-101-deploy.prototxt",
    "KaimingHe__deep-residual-networks__prototxt__ResNet-152-deploy.prototxt",
    "KaimingHe__deep-residual-networks__prototxt__ResNet-50-deploy.prototxt",
    "shelhamer__fcn.berkeleyvision.org__voc-fcn8s__deploy.prototxt",
]


def exportable_zoo_nets() -> list[str]:
    """The zoo nets whose TEST phase ONNX can express."""
    names = []
    for p in sorted(ZOO.glob("*.prototxt")):
        if ptx.kind_of(p.read_text()) != "net":
            continue
        try:
            check_exportable(read_net_param(p))
        except OnnxExportError:
            continue
        names.append(p.name)
    return names


def zoo_deviation(name: str) -> dict[str, float]:
    """Export a zoo deploy net (batch 1, random weights) and compare with ONNX Runtime."""
    model = netspec.load(ZOO / name, batch_size=1)
    rng = np.random.default_rng(0)
    fill_random(model, rng)
    return compare(model, random_inputs(model, rng), blobs=softmax_inputs(model))


#: zoo nets over ~20 s here (large fully connected layers, or 500x500 inputs)
SLOW_ZOO = {"BVLC__caffe__examples__net_surgery__bvlc_caffenet_full_conv.prototxt",
            "BVLC__caffe__models__bvlc_alexnet__deploy.prototxt",
            "BVLC__caffe__models__bvlc_reference_caffenet__deploy.prototxt",
            "BVLC__caffe__models__bvlc_reference_rcnn_ilsvrc13__deploy.prototxt",
            "BVLC__caffe__models__finetune_flickr_style__deploy.prototxt",
            "KaimingHe__deep-residual-networks__prototxt__ResNet-101-deploy.prototxt",
            "KaimingHe__deep-residual-networks__prototxt__ResNet-152-deploy.prototxt",
            "shelhamer__fcn.berkeleyvision.org__voc-fcn8s__deploy.prototxt"}


def test_every_zoo_deploy_net_is_exported():
    """The nets the zoo test below covers are all the zoo's nets ONNX can express, and every
    net the zoo calls a deploy net is one of them."""
    assert exportable_zoo_nets() == DEPLOY_NETS
    assert {p.name for p in ZOO.glob("*deploy*.prototxt")} <= set(DEPLOY_NETS)
    assert SLOW_ZOO <= set(DEPLOY_NETS)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_ZOO
                                  else n for n in DEPLOY_NETS])
def test_zoo_deploy_net_matches_onnx_runtime(name):
    devs = zoo_deviation(name)
    assert max(devs.values()) <= RTOL, devs


def test_zoo_nets_with_training_or_detection_layers_are_refused_by_name():
    name = "rbgirshick__py-faster-rcnn__models__pascal_voc__VGG16__faster_rcnn_end2end__test.prototxt"
    with pytest.raises(OnnxExportError) as e:
        netspec.export_onnx(ZOO / name, path=Path("/nonexistent/never.onnx"))
    msg = str(e.value)
    assert "2 layers cannot be exported" in msg and "nothing was written" in msg
    assert "'proposal' (Python)" in msg and "'roi_pool5' (ROIPooling)" in msg
    with pytest.raises(OnnxExportError, match=r"'mnist' \(Data\): a data layer.*'loss' "
                                              r"\(SoftmaxWithLoss\): a training layer"):
        check_exportable(read_net_param(ZOO / "BVLC__caffe__examples__mnist__lenet_train_test.prototxt"))


# -- the LeNet real Caffe trained, on MNIST ---------------------------------------------------
def test_trained_lenet_on_mnist_matches_netspec_and_caffe(tmp_path):
    """Caffe's LeNet (10,000 iterations) on the whole MNIST test set: ONNX Runtime's
    probabilities equal netspec's to 1e-4, the first 16 equal Caffe's own, and the accuracy is
    the one Caffe recorded."""
    from netspec.data.mnist import load_mnist

    images, labels = load_mnist("test")
    x = images.reshape(-1, 1, 28, 28).astype(np.float32) * np.float32(0.00390625)
    model = netspec.load(LENET_DEPLOY, TRAINED / "lenet_iter_10000.caffemodel", batch_size=1000)
    path = tmp_path / "lenet.onnx"
    netspec.export_onnx(model, path=path)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    sess = runtime(proto)
    ours = np.concatenate([model.forward(data=x[i:i + 1000])["prob"] for i in range(0, 10000, 1000)])
    theirs = np.concatenate([sess.run(["prob"], {"data": x[i:i + 1000]})[0]
                             for i in range(0, 10000, 1000)])
    assert deviation(ours, theirs) <= RTOL
    np.testing.assert_allclose(theirs[:16], np.load(TRAINED / "first16.npz")["prob"], atol=1e-5)
    accuracy = float((theirs.argmax(1) == labels).mean())
    assert accuracy == pytest.approx(float((TRAINED / "accuracy.txt").read_text()), abs=5e-5)


# -- the forks' nets ---------------------------------------------------------------------------
def fork_model(name: str, tmp_path: Path, without: str | None = None, batch_size=1):
    text = (FORKS / name).read_text()
    if without:
        text = without_last_layer(text, without)
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return netspec.load(path, batch_size=batch_size)


FORK_NETS = {   # net -> the detection layer left out (None: the whole net)
    "farmingyard__ShuffleNet__shufflenet_1x_g3_deploy.prototxt": None,
    "farmingyard__ShuffleNet__shufflenet_v2_1x_deploy.prototxt": None,
    "eric612__MobileNet-YOLO__models__yolov3__mobilenet_yolov3_lite_deploy.prototxt":
        "Yolov3DetectionOutput",
    "eric612__MobileNet-YOLO__models__yolov2__mobilenet_yolo_lite_deploy.prototxt":
        "YoloDetectionOutput",
    "eric612__MobileNet-YOLO__models__darknet_yolov3__yolov3-tiny.prototxt":
        "Yolov3DetectionOutput",
    "hszhao__ICNet__evaluation__prototxt__icnet_cityscapes.prototxt": None,
}
#: fork nets over ~20 s here: ICNet's 1025x2049 input
SLOW_FORKS = {"hszhao__ICNet__evaluation__prototxt__icnet_cityscapes.prototxt"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_FORKS
                                  else n for n in sorted(FORK_NETS)])
def test_fork_net_matches_onnx_runtime(name, tmp_path):
    model = fork_model(name, tmp_path, FORK_NETS[name])
    rng = np.random.default_rng(0)
    fill_random(model, rng)
    devs = compare(model, random_inputs(model, rng), blobs=softmax_inputs(model))
    assert max(devs.values()) <= RTOL, devs


def test_trained_lane_model_matches_onnx_runtime(tmp_path):
    """The fork's trained MobileNet-YOLO lane model (DepthwiseConvolution), its own weights."""
    from test_zoo_forks import LANE

    model = netspec.load(FORKS / f"{LANE}.prototxt", FORKS / f"{LANE}_iter_50000.caffemodel")
    x = np.random.default_rng(1).uniform(0, 1, model.blobs["data"].shape).astype(np.float32)
    devs = compare(model, {"data": x})
    assert max(devs.values()) <= RTOL, devs


def test_ssd_nets_are_refused_naming_their_detection_layers(tmp_path):
    from test_zoo_forks import SSD_LITE

    with pytest.raises(OnnxExportError) as e:
        check_exportable(read_net_param(FORKS / SSD_LITE))
    assert "(PriorBox): SSD's prior boxes" in str(e.value)
    assert "(DetectionOutput)" in str(e.value)


# -- refusals, the checker, the command line -----------------------------------------------------
UNSUPPORTED = {"name": "mixed", "layer": [
    {"name": "data", "type": "Input", "top": "data", "input_param": {"shape": {"dim": [2, 3, 6, 6]}}},
    {"name": "label", "type": "Input", "top": "label", "input_param": {"shape": {"dim": [2]}}},
    {"name": "pool", "type": "Pooling", "bottom": "data", "top": ["pool", "mask"],
     "pooling_param": {"pool": "MAX", "kernel_size": 2, "stride": 2}},
    {"name": "ip", "type": "InnerProduct", "bottom": "pool", "top": "ip",
     "inner_product_param": {"num_output": 3}},
    {"name": "spp", "type": "SPP", "bottom": "data", "top": "spp",
     "spp_param": {"pyramid_height": 2}},
    {"name": "acc", "type": "Accuracy", "bottom": ["ip", "label"], "top": "acc"}]}


def test_unsupported_layers_are_one_error_and_nothing_is_written(tmp_path):
    net = tmp_path / "net.yaml"
    net.write_text(yaml.safe_dump(UNSUPPORTED, sort_keys=False))
    out = tmp_path / "net.onnx"
    with pytest.raises(OnnxExportError) as e:
        netspec.export_onnx(net, path=out)
    msg = str(e.value)
    assert msg.count("cannot be exported") == 1 and "2 layers" in msg
    assert "'spp' (SPP)" in msg and "'acc' (Accuracy): a training layer" in msg
    assert not out.exists()
    # the mask top of MAX pooling is refused once the net is built (the types alone pass)
    spec = dict(UNSUPPORTED, layer=UNSUPPORTED["layer"][:4])
    net.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(OnnxExportError, match=r"1 layer cannot .*'pool' \(Pooling\): its "
                                              r"second top \(the argmax mask\)"):
        netspec.export_onnx(net, path=out)
    assert not out.exists()
    # a built net lists both kinds together (netspec builds SPP; the types are not checked first)
    spec = dict(UNSUPPORTED, layer=UNSUPPORTED["layer"][:5])
    net.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(OnnxExportError, match=r"2 layers .*'pool' \(Pooling\).*'spp' \(SPP\)"):
        netspec.load(net).to_onnx()


def test_an_input_changed_in_place_keeps_its_name_for_the_graph_input(tmp_path):
    net = tmp_path / "net.yaml"
    net.write_text(yaml.safe_dump({"name": "in_place", "layer": [
        {"name": "data", "type": "Input", "top": "data",
         "input_param": {"shape": {"dim": [2, 3]}}},
        {"name": "relu", "type": "ReLU", "bottom": "data", "top": "data"},
        {"name": "tanh", "type": "TanH", "bottom": "data", "top": "t"}]}))
    model = netspec.load(net)
    proto = model.to_onnx(["data"])
    assert [i.name for i in proto.graph.input] == ["data"]
    assert [o.name for o in proto.graph.output] == ["t", "data/relu"]
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    t, relu = runtime(proto).run(None, {"data": x})
    np.testing.assert_array_equal(relu, np.maximum(x, 0))
    np.testing.assert_allclose(t, np.tanh(np.maximum(x, 0)), rtol=1e-6)


def test_model_in_the_train_phase_is_refused(tmp_path):
    model = netspec.load(case_net("relu", tmp_path / "net.yaml"), phase="TRAIN")
    with pytest.raises(OnnxExportError, match="TEST phase"):
        model.to_onnx()


def test_the_model_declares_opset_and_blob_names(tmp_path):
    model = netspec.load(LENET_DEPLOY, batch_size=2)
    proto = model.to_onnx(["ip1"])
    assert [o.domain for o in proto.opset_import] == [""]
    assert proto.opset_import[0].version == OPSET and proto.ir_version == 8
    assert [i.name for i in proto.graph.input] == ["data"]
    assert [o.name for o in proto.graph.output] == ["prob", "ip1"]
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [2, 1, 28, 28]
    onnx.checker.check_model(proto, full_check=True)
    with pytest.raises(OnnxExportError, match="no blob named nope"):
        model.to_onnx(["nope"])


def run_cli(args, capsys=None):
    """(exit code, stdout, stderr) of ``netspec ARGS``."""
    r = CliRunner().invoke(main, args)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.stdout, r.stderr


def test_cli_writes_onnx_and_keeps_the_overwrite_rules(tmp_path, capsys, monkeypatch):
    from netspec.caffe.port import convert_net

    monkeypatch.chdir(tmp_path)
    weights = TRAINED / "lenet_iter_10000.caffemodel"
    code, out, err = run_cli(["export", str(LENET_DEPLOY), "--weights", str(weights),
                              "--onnx", "lenet.onnx", "--batch", "4"], capsys)
    assert code == 0, err
    assert "wrote lenet.onnx" in out and not (tmp_path / "lenet.prototxt").exists()
    proto = onnx.load(tmp_path / "lenet.onnx")
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [4, 1, 28, 28]
    before = (tmp_path / "lenet.onnx").read_bytes()
    # an existing .onnx is a binary output: kept without --force, and nothing else written
    convert_net(LENET_DEPLOY, tmp_path / "lenet.yaml")
    code, out, err = run_cli(["export", "lenet.yaml", "--weights", str(weights),
                              "--onnx", "lenet.onnx", "-o", "lenet.prototxt"], capsys)
    assert code == 1 and "not overwritten" in err and "Traceback" not in err
    assert not (tmp_path / "lenet.prototxt").exists()
    assert (tmp_path / "lenet.onnx").read_bytes() == before
    code, out, err = run_cli(["export", "lenet.yaml", "--weights", str(weights),
                              "--onnx", "lenet.onnx", "-o", "lenet.prototxt", "--force"], capsys)
    assert code == 0, err
    assert (tmp_path / "lenet.prototxt").exists() and "wrote lenet.onnx" in out


def test_cli_refusal_is_one_message_without_traceback(tmp_path, capsys):
    net = tmp_path / "net.yaml"
    net.write_text(yaml.safe_dump(UNSUPPORTED, sort_keys=False))
    code, out, err = run_cli(["export", str(net), "--onnx", str(tmp_path / "x.onnx")], capsys)
    assert code == 1 and "Traceback" not in err
    assert err.count("\n") == 1 and "'spp' (SPP)" in err and "'acc' (Accuracy)" in err
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "net.prototxt").exists()


def test_npz_weights_and_the_option_rules(tmp_path):
    """Weights from an .npz (netspec's snapshot format) give the model the .caffemodel gives;
    no --weights warns; --batch without --onnx is a usage error."""
    model = netspec.load(LENET_DEPLOY, TRAINED / "lenet_iter_10000.caffemodel")
    model.save(tmp_path / "w.npz")
    a = netspec.export_onnx(LENET_DEPLOY, tmp_path / "w.npz", tmp_path / "a.onnx")
    b = netspec.export_onnx(LENET_DEPLOY, TRAINED / "lenet_iter_10000.caffemodel",
                            tmp_path / "b.onnx")
    assert a.graph.initializer == b.graph.initializer
    code, out, err = run_cli(["export", str(LENET_DEPLOY), "--onnx", str(tmp_path / "c.onnx")])
    assert code == 0 and "no --weights" in err
    code, out, err = run_cli(["export", str(LENET_DEPLOY), "--batch", "2"])
    assert code == 2 and "--batch applies to --onnx" in err


def test_without_the_onnx_package_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    code, out, err = run_cli(["export", str(LENET_DEPLOY), "--onnx", str(tmp_path / "x.onnx")])
    assert code == 1 and "pip install 'netspec[onnx]'" in err and "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists()
