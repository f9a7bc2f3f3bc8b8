"""Real nets of Caffe's forks that need only the fork layers netspec implements (ReLU6, Permute,
Normalize, Axpy, Upsample, ShuffleChannel, the depthwise convolutions, Pooling ceil_mode, SSD's
PriorBox and DetectionOutput, PSPNet's Interp).

tests/zoo_forks/ holds the prototxt files verbatim (provenance in zoo_forks/SOURCES.tsv, taken
from the shared caffe-zoo-forks set) and the trained MobileNet-YOLO lane model. The shapes a
real fork (eric612/MobileNet-YOLO, commit 69b4441) built, and that model's output on a real
image, are in tests/golden/forks/ (shapes/, tusimple_lane_00002.npz).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("google.protobuf", reason="protobuf is not installed (pip install 'netspec[caffe]')")

from netspec.backend import Backend  # noqa: E402
from netspec.caffe import prototxt as ptx  # noqa: E402
from netspec.caffe.port import net_yaml  # noqa: E402
from netspec.errors import NetspecError  # noqa: E402
from netspec.net import Net  # noqa: E402
from netspec.snapshot import load_weights  # noqa: E402
from netspec.spec import loads_net  # noqa: E402

ZOO = Path(__file__).parent / "zoo_forks"
GOLDEN = Path(__file__).parent / "golden" / "forks"
F32 = Backend(np, np.float32)
LANE = "eric612__MobileNet-YOLO__models__tusimple__mobilenet_yolov3_lite_deploy"
SSD_LITE = "eric612__MobileNet-YOLO__models__mobilenetv2_voc__ssd_lite__deploy.prototxt"
YOLO3 = "eric612__MobileNet-YOLO__models__yolov3__mobilenet_yolov3_lite_deploy.prototxt"
YOLO2 = "eric612__MobileNet-YOLO__models__yolov2__mobilenet_yolo_lite_deploy.prototxt"
YOLO3_TINY = "eric612__MobileNet-YOLO__models__darknet_yolov3__yolov3-tiny.prototxt"
#: each net and the types it needs beyond BVLC Caffe
NETS = {
    f"{LANE}.prototxt": {"DepthwiseConvolution"},
    "farmingyard__ShuffleNet__shufflenet_1x_g3_deploy.prototxt": {"ConvolutionDepthwise",
                                                                 "ShuffleChannel"},
    "farmingyard__ShuffleNet__shufflenet_v2_1x_deploy.prototxt": {"ConvolutionDepthwise",
                                                                 "ShuffleChannel"},
    # SSD detectors: Permute, PriorBox, DetectionOutput
    SSD_LITE: {"DepthwiseConvolution", "Permute", "PriorBox", "DetectionOutput"},
    "eric612__MobileNet-YOLO__models__pelee__VOC0712__SSD_304x304__deploy.prototxt":
        {"Permute", "PriorBox", "DetectionOutput"},
    # the YOLO forks' detection outputs (MobileNet-YOLO v3's Upsample is a Deconvolution)
    YOLO3: {"DepthwiseConvolution", "Yolov3DetectionOutput"},
    YOLO2: {"DepthwiseConvolution", "ReLU6", "YoloDetectionOutput"},
    YOLO3_TINY: {"Yolov3DetectionOutput"},
    # PSPNet's fork: Interp (zoom, shrink, height/width)
    "hszhao__ICNet__evaluation__prototxt__icnet_cityscapes.prototxt": {"Interp"},
}

#: the output shapes of the nets no fork recorded, when not an ImageNet classifier's: ICNet's 19
#: Cityscapes classes at its 1025×2049 input (the last Interp zooms the 1/4-scale scores by 4)
UNRECORDED_OUTPUTS = {
    "hszhao__ICNet__evaluation__prototxt__icnet_cityscapes.prototxt": [(1, 19, 1025, 2049)],
}


def build(name: str, phase: str = "TEST", text: str | None = None) -> Net:
    text = (ZOO / name).read_text() if text is None else text
    yaml_text = net_yaml(ptx.parse_net(text, name), name)[0]
    return Net(loads_net(yaml_text, name), phase, F32, np.random.default_rng(0))


def same_shapes(built: Net, gp: dict, phase: str, leave_out: bool = False) -> None:
    """Blob and parameter shapes as the fork built them; ``leave_out``: less its detection
    layer (recorded as type DetectionOutput, absent from some phases) and that layer's top."""
    blobs, params = dict(gp["blobs"]), dict(gp["params"])
    if leave_out:
        for layer, type_name in gp["layers"]:
            if type_name.endswith("DetectionOutput"):
                params.pop(layer, None)
        blobs = {k: v for k, v in blobs.items() if k in built.blobs}
        assert len(gp["blobs"]) - len(blobs) <= 1, "only the detection layer's top is left out"
    assert {k: list(b.shape) for k, b in built.blobs.items()} == blobs, phase
    got: dict[str, list] = {}
    for key, p in built.named_params().items():
        got.setdefault(key.rsplit("/", 1)[0], []).append(list(p.shape))
    assert got == params, phase


@pytest.mark.parametrize("name", sorted(NETS))
def test_fork_net_converts_and_builds(name):
    net = build(name)
    assert NETS[name] <= {layer.type_name for layer in net.layers}
    shapes = GOLDEN / "shapes" / f"{name}.json"
    if not shapes.exists():     # no fork recorded them: ImageNet classifiers, ICNet
        want = UNRECORDED_OUTPUTS.get(name, [(1, 1000, 1, 1)])
        assert [net.blobs[o].shape for o in net.output_names] == want
        return
    for phase, gp in json.loads(shapes.read_text())["phases"].items():
        same_shapes(build(name, phase), gp, phase)


def test_trained_lane_model_reproduces_the_forks_output():
    """The trained MobileNet-YOLO lane model (DepthwiseConvolution, Deconvolution, BatchNorm)
    on a real image: the fork's conv16 and sigmoid outputs, float32."""
    net = build(f"{LANE}.prototxt")
    assert load_weights(net, ZOO / f"{LANE}_iter_50000.caffemodel") == ([], [])
    g = np.load(GOLDEN / "tusimple_lane_00002.npz")
    net.blobs["data"].data[...] = g["input"]
    net.forward()
    for blob in ("conv16", "sigmoid"):
        want = g[f"top/{blob}"]
        np.testing.assert_allclose(net.blobs[blob].data, want, rtol=1e-4,
                                   atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.parametrize("name", sorted(NETS))
def test_fork_net_prototxt_yaml_prototxt_is_the_same_net(name, tmp_path):
    """netspec convert, then netspec export: the same net, fork types and fields included."""
    from click.testing import CliRunner

    from netspec.caffe.port import convert_net
    from netspec.caffe.upgrade import upgrade_net
    from netspec.cli import main

    convert_net(ZOO / name, tmp_path / "net.yaml")
    r = CliRunner().invoke(main, ["export", str(tmp_path / "net.yaml"), "-o",
                                  str(tmp_path / "back.prototxt")])
    assert r.exit_code == 0, r.output
    original = upgrade_net(ptx.parse_net((ZOO / name).read_text(), name))[0]
    assert ptx.parse_net((tmp_path / "back.prototxt").read_text()) == original


def test_ssd_lite_detects_on_random_weights():
    """MobileNet-v2 SSD-lite (random weights, a random 336×336 image) runs end to end: the
    priors have the fork's shape, and DetectionOutput gives at most keep_top_k (200) rows of valid detections."""
    net = build(SSD_LITE)
    for layer in net.layers:            # BatchNorm statistics: mean 0, variance 1
        if layer.type_name == "BatchNorm":
            layer.blobs[0].data[...], layer.blobs[1].data[...], layer.blobs[2].data[...] = 0, 1, 1
    net.blobs["data"].data[...] = np.random.default_rng(0).standard_normal((1, 3, 336, 336))
    net.forward()
    priors = net.blobs["mbox_priorbox"].data
    assert priors.shape == (1, 2, 14688) and (priors[0, 1] > 0).all()
    det = net.blobs["detection_out"].data
    assert det.shape[:2] == (1, 1) and 0 < det.shape[2] <= 200 and det.shape[3] == 7
    rows = det[0, 0]
    assert (rows[:, 0] == 0).all() and set(rows[:, 1]) <= set(range(1, 21))
    assert (rows[:, 2] > 0.01).all() and (rows[:, 2] <= 1).all()
    assert (np.diff(rows[:, 1]) >= 0).all()           # by label, then by descending score
    for label in set(rows[:, 1]):
        assert (np.diff(rows[rows[:, 1] == label, 2]) <= 0).all()


SSD_LITE_TRAIN = "eric612__MobileNet-YOLO__models__mobilenetv2_voc__ssd_lite__train.prototxt"


def with_input_layer(text: str, shapes: dict[str, list[int]]) -> str:
    """The prototxt text with its first layer (a data layer) replaced by an Input layer giving
    ``shapes`` (top name -> shape), as the fork's recording substituted it."""
    first = text.index("layer {")
    second = text.index("\nlayer {", first + 1)
    tops = "".join(f' top: "{t}"' for t in shapes)
    dims = "".join(" shape {" + "".join(f" dim: {d}" for d in s) + " }" for s in shapes.values())
    return (text[:first] + f'layer {{ name: "data" type: "Input"{tops} input_param {{{dims} }} }}'
            + text[second:])


def test_ssd_lite_train_net_builds_with_the_forks_shapes_and_trains():
    """MobileNet-v2 SSD-lite's training net (MultiBoxLoss, LOGISTIC confidences) with its
    AnnotatedData layer replaced by Input as the fork's recording did: the fork's blob and
    parameter shapes, a finite loss and gradients into the heads."""
    with pytest.raises(NetspecError, match="'resize_param' is not a field"):
        build(SSD_LITE_TRAIN, "TRAIN")       # AnnotatedData and its transform: not implemented
    gold = json.loads((GOLDEN / "shapes" / f"{SSD_LITE_TRAIN}.json").read_text())
    (layer, shapes), = gold["substitutions"]
    assert layer == "data"
    net = build(SSD_LITE_TRAIN, "TRAIN", with_input_layer((ZOO / SSD_LITE_TRAIN).read_text(), shapes))
    same_shapes(net, gold["phases"]["TRAIN"], "TRAIN")
    rng = np.random.default_rng(0)
    net.blobs["data"].data[...] = rng.standard_normal(shapes["data"])
    net.blobs["label"].data[...] = [[[[0, 3, 0, 0.1, 0.2, 0.5, 0.7, 0], [0, 12, 1, 0.4, 0.3, 0.9, 0.6, 0],
                                      [0, 7, 2, 0.05, 0.6, 0.3, 0.95, 1], [-1, 0, 0, 0, 0, 0, 0, 0]]]]
    loss = float(net.forward())
    assert np.isfinite(loss) and loss > 0
    net.backward()
    for blob in ("mbox_loc", "mbox_conf"):
        diff = net.blobs[blob].diff
        assert np.isfinite(diff).all() and np.count_nonzero(diff) > 0, blob


def test_ssd_lite_train_net_prototxt_yaml_prototxt_is_the_same_net(tmp_path):
    """convert then export keeps MultiBoxLoss, its multibox_loss_param and propagate_down."""
    from click.testing import CliRunner

    from netspec.caffe.port import convert_net
    from netspec.caffe.upgrade import upgrade_net
    from netspec.cli import main

    gold = json.loads((GOLDEN / "shapes" / f"{SSD_LITE_TRAIN}.json").read_text())
    text = with_input_layer((ZOO / SSD_LITE_TRAIN).read_text(), gold["substitutions"][0][1])
    (tmp_path / "train.prototxt").write_text(text)
    convert_net(tmp_path / "train.prototxt", tmp_path / "net.yaml")
    assert "multibox_loss_param" in (tmp_path / "net.yaml").read_text()
    r = CliRunner().invoke(main, ["export", str(tmp_path / "net.yaml"), "-o",
                                  str(tmp_path / "back.prototxt")])
    assert r.exit_code == 0, r.output
    original = upgrade_net(ptx.parse_net(text, "train"))[0]
    assert ptx.parse_net((tmp_path / "back.prototxt").read_text()) == original


@pytest.mark.parametrize("name,output,classes,threshold", [
    (YOLO3, "detection_out", 20, 0.01), (YOLO2, "detection_out", 20, 0.3),
    (YOLO3_TINY, "layer24-yolo", 80, 0.01)])
def test_yolo_nets_detect_on_random_weights(name, output, classes, threshold):
    """The YOLO deploy nets run end to end (random weights, a random image): rows of valid
    detections, best score first, no two kept boxes overlapping at the NMS threshold (0.45)."""
    from netspec.layers.yolo import center_iou

    net = build(name)
    for layer in net.layers:            # BatchNorm statistics: mean 0, variance 1
        if layer.type_name == "BatchNorm":
            layer.blobs[0].data[...], layer.blobs[1].data[...], layer.blobs[2].data[...] = 0, 1, 1
    if name == YOLO2:       # its 0.3 threshold: make the first class and objectness likely
        bias = net.layer_by_name("conv22_indoor").blobs[1].data.reshape(5, 25)
        bias[:, 4] += 4
        bias[:, 5] += 6
    net.blobs["data"].data[...] = np.random.default_rng(0).standard_normal(net.blobs["data"].shape)
    net.forward()
    det = net.blobs[output].data
    assert det.shape[:2] == (1, 1) and det.shape[2] >= 1 and det.shape[3] == 7
    rows = det[0, 0]
    assert (rows[:, 0] == 0).all() and set(rows[:, 1]) <= set(range(1, classes + 1))
    assert (rows[:, 2] >= threshold).all() and (rows[:, 2] <= 1).all()
    assert (np.diff(rows[:, 2]) <= 0).all()
    xywh = np.stack([(rows[:, 3] + rows[:, 5]) / 2, (rows[:, 4] + rows[:, 6]) / 2,
                     rows[:, 5] - rows[:, 3], rows[:, 6] - rows[:, 4]], 1)
    for k in range(len(rows) - 1):
        assert (center_iou(xywh[k], xywh[k + 1:]) < 0.45 + 1e-5).all()
