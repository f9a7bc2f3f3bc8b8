"""Real nets of Caffe's forks that need only the fork layers netspec implements (ReLU6, Permute,
Normalize, Axpy, Upsample, ShuffleChannel, the depthwise convolutions, Pooling ceil_mode, SSD's
PriorBox and DetectionOutput, PSPNet's Interp; SegNet's BN, un-pooling Upsample,
DenseImageData and class-weighted SoftmaxWithLoss).

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


def assert_round_trip(prototxt: Path, tmp_path: Path) -> str:
    """``netspec convert`` then ``netspec export`` give back the same net as the prototxt
    (upgraded as Caffe would); returns the converted YAML's text."""
    from click.testing import CliRunner

    from netspec.caffe.port import convert_net
    from netspec.caffe.upgrade import upgrade_net
    from netspec.cli import main

    convert_net(prototxt, tmp_path / "net.yaml")
    r = CliRunner().invoke(main, ["export", str(tmp_path / "net.yaml"), "-o",
                                  str(tmp_path / "back.prototxt")])
    assert r.exit_code == 0, r.output
    original = upgrade_net(ptx.parse_net(prototxt.read_text(), prototxt.name))[0]
    assert ptx.parse_net((tmp_path / "back.prototxt").read_text()) == original
    return (tmp_path / "net.yaml").read_text()


@pytest.mark.parametrize("name", sorted(NETS))
def test_fork_net_prototxt_yaml_prototxt_is_the_same_net(name, tmp_path):
    """netspec convert, then netspec export: the same net, fork types and fields included."""
    assert_round_trip(ZOO / name, tmp_path)


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


def ssd_step(net) -> None:
    """One forward and backward of an SSD training net: a finite, positive loss and finite,
    non-zero gradients into both heads (mbox_loc, mbox_conf)."""
    loss = float(net.forward())
    assert np.isfinite(loss) and loss > 0
    net.backward()
    for blob in ("mbox_loc", "mbox_conf"):
        diff = net.blobs[blob].diff
        assert np.isfinite(diff).all() and np.count_nonzero(diff) > 0, blob


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
    with pytest.raises(NetspecError, match="VOC0712_trainval_lmdb"):
        build(SSD_LITE_TRAIN, "TRAIN")       # as it is: only its LMDB is missing
    gold = json.loads((GOLDEN / "shapes" / f"{SSD_LITE_TRAIN}.json").read_text())
    (layer, shapes), = gold["substitutions"]
    assert layer == "data"
    net = build(SSD_LITE_TRAIN, "TRAIN", with_input_layer((ZOO / SSD_LITE_TRAIN).read_text(), shapes))
    same_shapes(net, gold["phases"]["TRAIN"], "TRAIN")
    rng = np.random.default_rng(0)
    net.blobs["data"].data[...] = rng.standard_normal(shapes["data"])
    net.blobs["label"].data[...] = [[[[0, 3, 0, 0.1, 0.2, 0.5, 0.7, 0], [0, 12, 1, 0.4, 0.3, 0.9, 0.6, 0],
                                      [0, 7, 2, 0.05, 0.6, 0.3, 0.95, 1], [-1, 0, 0, 0, 0, 0, 0, 0]]]]
    ssd_step(net)


def test_ssd_lite_train_net_prototxt_yaml_prototxt_is_the_same_net(tmp_path):
    """convert then export keeps MultiBoxLoss, its multibox_loss_param and propagate_down."""
    gold = json.loads((GOLDEN / "shapes" / f"{SSD_LITE_TRAIN}.json").read_text())
    text = with_input_layer((ZOO / SSD_LITE_TRAIN).read_text(), gold["substitutions"][0][1])
    (tmp_path / "train.prototxt").write_text(text)
    assert "multibox_loss_param" in assert_round_trip(tmp_path / "train.prototxt", tmp_path)


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


# -- SegNet (alexgkendall/SegNet-Tutorial on alexgkendall/caffe-segnet) ---------------------------
# Its DenseImageData, BN (two blobs), two-bottom un-pooling Upsample, Pooling's mask top and
# SoftmaxWithLoss class_weighting. No fork recorded their shapes: the expected ones below follow
# from the architecture (2×2/2 max pooling rounds up; each Upsample restores its pooling's input).

SEGNET = "alexgkendall__SegNet-Tutorial__Models__segnet_{}.prototxt"
CAMVID_CLASSES = 11


def write_dense_set(folder: Path, n: int, height: int, width: int, seed: int = 0) -> Path:
    """``n`` synthetic (image, label image) PNG pairs and their DenseImageData list: labels are
    4×4 blocks of random classes 0–10, each image its label's colour from a fixed palette plus
    noise. (No ignore label 11: the nets' Accuracy layer has no ignore_label, so netspec stops
    there with an error, where the fork reads past its per-class counts.)"""
    from PIL import Image
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (CAMVID_CLASSES, 3))
    lines = []
    for i in range(n):
        blocks = rng.integers(0, CAMVID_CLASSES, (4, 4))
        label = blocks.repeat(height // 4, axis=0).repeat(width // 4, axis=1)
        image = np.clip(palette[label] + rng.normal(0, 8, label.shape + (3,)), 0, 255)
        Image.fromarray(image.astype(np.uint8)).save(folder / f"im{i}.png")
        Image.fromarray(label.astype(np.uint8)).save(folder / f"lab{i}.png")
        lines.append(f"im{i}.png lab{i}.png")
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    return folder / "list.txt"


def segnet_text(which: str, listing: Path) -> str:
    text = (ZOO / SEGNET.format(which)).read_text()
    for source in ("/SegNet/CamVid/train.txt", "/SegNet/CamVid/test.txt"):
        text = text.replace(source, str(listing))
    return text


def _segnet_shapes(batch, sizes, pools, upsamples, channels):
    """Blob shapes of the pooling tops and masks and the upsampling tops: ``sizes`` are the
    spatial sizes from the input down, one per pooling."""
    want = {}
    for k, (name, c) in enumerate(zip(pools, channels)):
        want[name] = want[f"{name}_mask"] = (batch, c, *sizes[k + 1])
    for k, name in enumerate(upsamples):
        want[name] = (batch, channels[len(upsamples) - 1 - k], *sizes[len(upsamples) - 1 - k])
    return want


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_segnet_basic_train_builds_with_the_architectures_shapes(phase, tmp_path):
    """SegNet basic at CamVid's 360×480: four 7×7 conv + BN + ReLU + pool stages (64 channels),
    then four upsample + conv + BN stages and the 1×1 classifier; 45 is odd, so upsample4's
    pad_out_h gives 23·2 − 1 = 45 rows."""
    from PIL import Image  # noqa: F401 - skips below without Pillow
    listing = write_dense_set(tmp_path, 1, 360, 480)
    net = build(SEGNET.format("basic_train"), phase, segnet_text("basic_train", listing))
    sizes = [(360, 480), (180, 240), (90, 120), (45, 60), (23, 30)]
    want = {"data": (4, 3, 360, 480), "label": (4, 1, 360, 480),
            "conv_classifier": (4, CAMVID_CLASSES, 360, 480), "loss": (), "accuracy": (),
            "per_class_accuracy": (CAMVID_CLASSES,)}
    want |= _segnet_shapes(4, sizes, ["pool1", "pool2", "pool3", "pool4"],
                           ["upsample4", "upsample3", "upsample2", "upsample1"], [64] * 4)
    assert {k: net.blobs[k].shape for k in want} == want
    types = {layer.name: type(layer).__name__ for layer in net.layers}
    assert types["upsample4"] == "MaxUnpool" and types["conv1_bn"] == "SegNetBN"
    params = {k: tuple(p.shape) for k, p in net.named_params().items()}
    assert params["conv1/0"] == (64, 3, 7, 7) and params["conv_classifier/0"] == (11, 64, 1, 1)
    bn = sorted(k for k in params if k.split("/")[0].endswith("_bn"))
    assert len(bn) == 16 and all(params[k] == (1, 64, 1, 1) for k in bn)   # 8 BN × 2 blobs
    assert float(net.named_params()["conv1_bn/1"].data[0, 0, 0, 0]) == pytest.approx(0.001)


def test_segnet_inference_builds_with_the_architectures_shapes(tmp_path):
    """SegNet (VGG-16 encoder, bn_mode INFERENCE) at 360×480: five poolings down to 12×15;
    upsample5 and upsample4 (tops pool5_D, pool4_D) give their sizes as upsample_h/upsample_w
    (23×30, 45×60)."""
    listing = write_dense_set(tmp_path, 1, 360, 480)
    net = build(SEGNET.format("inference"), "TEST", segnet_text("inference", listing))
    sizes = [(360, 480), (180, 240), (90, 120), (45, 60), (23, 30), (12, 15)]
    channels = [64, 128, 256, 512, 512]
    want = {"data": (1, 3, 360, 480), "prob": (1, CAMVID_CLASSES, 360, 480)}
    want |= _segnet_shapes(1, sizes, [f"pool{i}" for i in range(1, 6)],
                           [f"pool{i}_D" for i in range(5, 0, -1)], channels)
    assert {k: net.blobs[k].shape for k in want} == want
    bns = [layer for layer in net.layers if layer.type_name == "BN"]
    assert len(bns) == 25 and all(layer.learn is False for layer in bns)
    assert all(len(layer.blobs) == 2 for layer in bns)


@pytest.mark.parametrize("which", ["basic_train", "inference"])
def test_segnet_prototxt_yaml_prototxt_is_the_same_net(which, tmp_path):
    """netspec convert, then netspec export: the same net, SegNet's types and fields included
    (dense_image_data_param, bn_param's bn_mode and fillers, upsample_param, class_weighting)."""
    assert_round_trip(ZOO / SEGNET.format(which), tmp_path)


def test_segnet_basic_trains_on_a_synthetic_dense_set(tmp_path):
    """SegNet basic as the tutorial ships it (solver and net converted from the prototxt files,
    only the data path, the iterations and the snapshot folder changed) on 8 synthetic 24×32
    pairs (24 = 8·3: after three poolings an odd 3 rows, which upsample4's pad_out_h restores):
    the class-weighted loss falls."""
    import netspec
    from netspec.caffe.port import convert_net

    listing = write_dense_set(tmp_path, 8, 24, 32, seed=1)
    (tmp_path / "train.prototxt").write_text(segnet_text("basic_train", listing))
    solver_text = (ZOO / SEGNET.format("basic_solver")).read_text().replace(
        "/SegNet/Models/segnet_basic_train.prototxt", str(tmp_path / "train.prototxt"))
    (tmp_path / "solver.prototxt").write_text(solver_text)
    convert_net(tmp_path / "train.prototxt", tmp_path / "train.yaml")
    t = netspec.solver(tmp_path / "solver.prototxt",
                       [f"snapshot_prefix={tmp_path / 'snap'}", "snapshot=0", "max_iter=30",
                        "base_lr=0.01", "random_seed=3", "solver_mode=CPU"])
    losses = [t.step(1) for _ in range(30)]
    assert np.isfinite(losses).all()
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.5 * first, losses


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes, length_delimited: bool = True) -> bytes:
    """One protobuf field on the wire: key, then (length +) payload."""
    key = _varint(number << 3 | (2 if length_delimited else 0))
    return key + (_varint(len(payload)) if length_delimited else b"") + payload


#: SegNet's own layer fields as its fork writes them in a binary NetParameter: bn_param 45
#: {bn_mode 3, scale_filler 1 {type, value}}, upsample_param 137 {scale 1, pad_out_h 4},
#: dense_image_data_param 138 {source 1, batch_size 2}, loss_param 101 {ignore_label 1,
#: weight_by_label_freqs 3, class_weighting 4}: numbers BVLC and netspec give to other fields
SEGNET_WIRE = {
    "BN": _field(45, _field(3, _varint(0), False)
                 + _field(1, _field(1, b"constant") + _field(2, b"\x00\x00\x80\x3f", False)
                          .replace(_varint(2 << 3 | 0), _varint(2 << 3 | 5)))),
    "Upsample": _field(137, _field(1, _varint(2), False) + _field(4, _varint(1), False)),
    "DenseImageData": _field(138, _field(1, b"/SegNet/CamVid/train.txt")
                             + _field(2, _varint(4), False)),
    "SoftmaxWithLoss": _field(101, _field(1, _varint(11), False) + _field(3, _varint(1), False)
                              + _field(4, b"\x00\x00\x80\x3f", False).replace(
                                  _varint(4 << 3 | 0), _varint(4 << 3 | 5))),
}


def test_segnet_caffemodel_with_the_forks_field_numbers_loads(tmp_path):
    """A .caffemodel written by SegNet's fork numbers its layer fields against BVLC's and
    netspec's (bn_param 45, upsample_param 137 = embed_param, dense_image_data_param 138 =
    tile_param, loss_param's weight_by_label_freqs 3 = normalization): netspec reads only layer
    names and blobs from it, so every blob loads; and into PSPNet's BN (no SegNet field in the
    prototxt) the 2-blob layers are an error that says which BN the file holds."""
    pytest.importorskip("PIL")
    from netspec.caffe import caffe_pb2
    from netspec.caffe.export import export_net
    from netspec.caffe.port import convert_net
    from netspec.spec import load_net

    listing = write_dense_set(tmp_path, 1, 24, 32)
    (tmp_path / "net.prototxt").write_text(segnet_text("basic_train", listing))
    convert_net(tmp_path / "net.prototxt", tmp_path / "net.yaml")
    net = Net(load_net(tmp_path / "net.yaml"), "TEST", F32, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    weights = {k: rng.standard_normal(p.shape).astype(np.float32)
               for k, p in net.named_params().items()}
    np.savez(tmp_path / "w.npz", **weights)
    export_net(tmp_path / "net.yaml", tmp_path / "out.prototxt", weights=tmp_path / "w.npz",
               caffemodel=tmp_path / "ours.caffemodel")
    ours = caffe_pb2.NetParameter.FromString((tmp_path / "ours.caffemodel").read_bytes())
    body = b""
    for layer in ours.layer:
        for block in ("bn_param", "upsample_param", "dense_image_data_param", "loss_param"):
            layer.ClearField(block)
        body += _field(100, layer.SerializeToString() + SEGNET_WIRE.get(layer.type, b""))
    forked = tmp_path / "segnet.caffemodel"
    forked.write_bytes(_field(1, b"segnet") + body)
    back = Net(load_net(tmp_path / "net.yaml"), "TEST", F32, np.random.default_rng(2))
    assert load_weights(back, forked, strict=True) == ([], [])
    for k, p in back.named_params().items():
        np.testing.assert_array_equal(p.data, weights[k])

    psp = (tmp_path / "net.prototxt").read_text().replace("shift_filler", "bias_filler") \
        .replace("scale_filler", "slope_filler")
    (tmp_path / "psp.prototxt").write_text(psp)
    convert_net(tmp_path / "psp.prototxt", tmp_path / "psp.yaml")
    psp_net = Net(load_net(tmp_path / "psp.yaml"), "TEST", F32, np.random.default_rng(0))
    with pytest.raises(NetspecError, match=r"conv1_bn/2, conv1_bn/3, .*--allow-partial\)\. "
                                           r"Layers 'conv1_bn', 'conv2_bn', .* \(4 more\): BN "
                                           r"with 4 blobs here, as PSPNet's BN; the file has 2, "
                                           r"as SegNet's BN") as e:
        load_weights(psp_net, forked)
    assert str(e.value).count("SegNet's BN") == 2          # said once for the 8 layers


def voc_like_lmdb(tmp_path: Path, first: tuple[int, int], second: tuple[int, int]) -> str:
    """An LMDB of two AnnotatedDatum records of random pixels, H×W ``first`` and ``second``,
    with three boxes in classes 3, 12 (difficult) and 7, as SSD-lite's VOC data would hold."""
    from detection_data import annotated_lmdb

    rng = np.random.default_rng(0)
    return annotated_lmdb(tmp_path / "voc_lmdb", [
        (rng.integers(0, 256, (3, *first), dtype=np.uint8),
         [(3, [(0, (0.1, 0.2, 0.5, 0.7), False)]), (12, [(1, (0.4, 0.3, 0.9, 0.6), True)])]),
        (rng.integers(0, 256, (3, *second), dtype=np.uint8),
         [(7, [(0, (0.05, 0.6, 0.3, 0.95), False)])])])


def test_ssd_lite_train_net_converts_and_runs_with_its_annotated_data_layer(tmp_path):
    """SSD-lite's own training net, AnnotatedData included: it converts as it is; with the
    random parts of its transform taken out (distortion, expansion, four of its five
    interpolation modes) and its LMDB replaced by a small one of SSD's AnnotatedDatum
    records, it builds (data resized to the file's 336×336) and its forward pass gives a
    finite loss."""
    import re

    from netspec.caffe.port import convert_net
    text = (ZOO / SSD_LITE_TRAIN).read_text()
    (tmp_path / "train.prototxt").write_text(text)
    convert_net(tmp_path / "train.prototxt", tmp_path / "net.yaml")
    src = voc_like_lmdb(tmp_path, (40, 50), (30, 30))
    text = re.sub(r"\n    distort_param \{.*?\n    \}\n    expand_param \{.*?\n    \}", "", text,
                  flags=re.S)
    text = re.sub(r"\n      interp_mode: (AREA|NEAREST|CUBIC|LANCZOS4)", "", text)
    text = text.replace('source: "examples/VOC0712/VOC0712_trainval_lmdb"', f'source: "{src}"')
    text = text.replace("batch_size: 8", "batch_size: 2")
    assert "distort_param" not in text and src in text
    net = build(SSD_LITE_TRAIN, "TRAIN", text)
    assert net.blobs["data"].shape == (2, 3, 336, 336)
    loss = float(net.forward())
    assert np.isfinite(loss) and loss > 0
    np.testing.assert_allclose(net.blobs["label"].data.reshape(-1, 8)[:, :3],
                               [[0, 3, 0], [0, 12, 1], [1, 7, 0]])


def test_ssd_lite_train_net_trains_with_its_whole_random_transform(tmp_path):
    """SSD-lite's training net exactly as the fork wrote it (distortion, expansion, five
    interpolation modes drawn per image, CENTER emit constraint, mirror) on a small LMDB of
    AnnotatedDatum records of different sizes: it builds, and two forward and backward passes
    on freshly augmented batches give finite losses and gradients into the heads."""
    src = voc_like_lmdb(tmp_path, (60, 80), (50, 50))
    text = (ZOO / SSD_LITE_TRAIN).read_text()
    text = text.replace('source: "examples/VOC0712/VOC0712_trainval_lmdb"', f'source: "{src}"')
    text = text.replace("batch_size: 8", "batch_size: 2")
    assert "distort_param" in text and "expand_param" in text and "LANCZOS4" in text
    net = build(SSD_LITE_TRAIN, "TRAIN", text)
    assert net.blobs["data"].shape == (2, 3, 336, 336)
    data = net.layer_by_name("data")
    assert data.augment and data.distort_p is not None and data.expand_p is not None
    assert list(data.interp) == ["LINEAR", "AREA", "NEAREST", "CUBIC", "LANCZOS4"]
    seen = []
    for _ in range(2):
        ssd_step(net)
        seen.append(net.blobs["data"].data.copy())
    assert not np.array_equal(seen[0], seen[1])
    x = seen[0] / np.float32(0.007843) + np.float32(127.5)  # back to pixels
    assert x.min() > -0.5 and x.max() < 255.5


SSD_LITE_SOLVER = "eric612__MobileNet-YOLO__models__mobilenetv2_voc__ssd_lite__solver.prototxt"


def test_ssd_lite_solver_converts_with_the_forks_fields(tmp_path):
    """SSD-lite's solver: RMSProp with multistep, the detection test phase (eval_type,
    ap_version, show_per_class_result) and MobileNet-YOLO's stagelr/stageiter (read by its
    lr_policy multifixed, unused by multistep) convert and validate; the nets it names are
    converted separately."""
    from netspec.caffe.port import convert_solver
    from netspec.spec import load_solver

    result = convert_solver(ZOO / SSD_LITE_SOLVER, tmp_path / "solver.yaml")
    assert any("train_net" in w for w in result.warnings)   # its nets are not beside it
    sp = load_solver(tmp_path / "solver.yaml")
    assert (sp.type, sp.lr_policy, sp.stepvalue, sp.iter_size) == ("RMSProp", "multistep",
                                                                  [80000, 100000], 4)
    assert (sp.eval_type, sp.ap_version, sp.show_per_class_result) == ("detection", "11point", True)
    assert sp.stagelr == pytest.approx([1e-6, 1e-5, 1e-4, 1e-3, 1e-4, 1e-5])
    assert sp.stageiter == [50, 100, 200, 80000, 100000, 120000]
