"""More public nets of Caffe's forks, as users porting them would try them: DenseNet, ResNeXt,
DPN (``ceil_mode``, grouped convolution), SENet (Axpy), PSPNet (Interp, BN), R-FCN
(PSROIPooling), SphereFace (MarginInnerProduct), center loss (CenterLoss), MobileNet-SSD,
MobileNet v1/v2 (depthwise forks), PeleeNet and DeepLab v2 (ImageSegData, SegAccuracy,
MatWrite). The files are in tests/zoo_forks/ verbatim
(provenance in zoo_forks/SOURCES.tsv).

Every file converts, builds with the architecture's output shapes, and survives prototxt -> YAML
-> prototxt; every deploy net OpenCV reads runs a forward equal to OpenCV dnn's on random,
well-scaled weights (tests/test_opencv_zoo.py's comparison); the training nets run a training
step on stand-in inputs (py-R-FCN's with test doubles of its Python layers,
tests/faster_rcnn_layers.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("google.protobuf", reason="protobuf is not installed (pip install 'netspec[caffe]')")

from test_zoo_forks import assert_round_trip, ssd_step  # noqa: E402

from netspec.backend import Backend  # noqa: E402
from netspec.caffe import prototxt as ptx  # noqa: E402
from netspec.caffe.port import net_yaml  # noqa: E402
from netspec.net import Net  # noqa: E402
from netspec.spec import loads_net  # noqa: E402
from netspec.spec.inputs import stand_in_inputs  # noqa: E402

ZOO = Path(__file__).parent / "zoo_forks"
F32 = Backend(np, np.float32)
SSD_VOC = "chuanqi305__MobileNet-SSD__voc__MobileNetSSD_deploy.prototxt"
SSD_COCO = "chuanqi305__MobileNet-SSD__deploy.prototxt"
SSDLITE = "chuanqi305__MobileNetv2-SSDLite__ssdlite__voc__"
PSP_ADE = "hszhao__PSPNet__evaluation__prototxt__pspnet50_ADE20K_473.prototxt"
PSP_VOC = "hszhao__PSPNet__evaluation__prototxt__pspnet101_VOC2012_473.prototxt"
RFCN = "YuwenXiong__py-R-FCN__models__pascal_voc__ResNet-50__rfcn_end2end__"
SPHERE = "wy1iu__sphereface__train__code__"
CENTER = "ydwen__caffe-face__"
IMAGENET = [(1, 1000)]

#: deploy nets: the types they need beyond BVLC Caffe and field-wise forks, and their output
#: shapes (ImageNet's 1000 classes, ADE20K's 150 and VOC's 21 at the 473 × 473 input,
#: the 512-d face features, one detection row when random weights find nothing)
DEPLOY = {
    "shicai__DenseNet-Caffe__DenseNet_121.prototxt": (set(), [(1, 1000, 1, 1)]),
    "soeaver__caffe-model__cls__resnext__deploy_resnext50-32x4d.prototxt": (set(), IMAGENET),
    "soeaver__caffe-model__cls__dpn__deploy_dpn92.prototxt": (set(), IMAGENET),
    "soeaver__caffe-model__cls__dpn__deploy_dpn68-extra.prototxt": (set(), IMAGENET),
    "hujie-frank__SENet__models__SE-ResNet-50.prototxt": ({"Axpy"}, IMAGENET),
    "hujie-frank__SENet__models__SE-ResNeXt-50.prototxt": ({"Axpy"}, IMAGENET),
    "hujie-frank__SENet__models__SE-BN-Inception.prototxt": (set(), IMAGENET),
    "Robert-JunWang__PeleeNet__caffe__peleenet.prototxt": (set(), IMAGENET),
    "shicai__MobileNet-Caffe__mobilenet_deploy.prototxt": (set(), [(1, 1000, 1, 1)]),
    "shicai__MobileNet-Caffe__mobilenet_v2_deploy.prototxt": (set(), [(1, 1000, 1, 1)]),
    "yonghenglh6__DepthwiseConvolution__example__depthwised_mobilenet_deploy.prototxt":
        ({"DepthwiseConvolution"}, [(1, 1000, 1, 1)]),
    SSD_VOC: ({"Permute", "PriorBox", "DetectionOutput"}, [(1, 1, 1, 7)]),
    SSD_COCO: ({"Permute", "PriorBox", "DetectionOutput"}, [(1, 1, 1, 7)]),
    f"{SSDLITE}deploy.prototxt": ({"Permute", "PriorBox", "DetectionOutput"}, [(1, 1, 1, 7)]),
    PSP_ADE: ({"Interp", "BN"}, [(1, 150, 473, 473)]),
    PSP_VOC: ({"Interp", "BN"}, [(1, 21, 473, 473)]),
    f"{SPHERE}sphereface_deploy.prototxt": (set(), [(1, 512)]),
    f"{CENTER}face_example__face_deploy.prototxt": (set(), [(1, 512)]),
}
#: deploy nets whose OpenCV comparison takes seconds here (run with ``-m slow``); the default run
#: keeps one of the SSD, MobileNet and SENet (Axpy) families
SLOW_OPENCV = {"soeaver__caffe-model__cls__dpn__deploy_dpn92.prototxt",
               "soeaver__caffe-model__cls__dpn__deploy_dpn68-extra.prototxt",
               "hujie-frank__SENet__models__SE-ResNeXt-50.prototxt",
               "hujie-frank__SENet__models__SE-BN-Inception.prototxt",
               "Robert-JunWang__PeleeNet__caffe__peleenet.prototxt",
               "shicai__MobileNet-Caffe__mobilenet_v2_deploy.prototxt",
               "shicai__DenseNet-Caffe__DenseNet_121.prototxt",
               f"{CENTER}face_example__face_deploy.prototxt", SSD_COCO, f"{SSDLITE}deploy.prototxt",
               "soeaver__caffe-model__cls__resnext__deploy_resnext50-32x4d.prototxt",
               f"{SPHERE}sphereface_deploy.prototxt"}
#: deploy nets whose build takes seconds (the other PSPNet file stays in the default run)
SLOW_BUILD = {PSP_VOC}
#: what OpenCV 4.x cannot run, found by running these nets with it
OPENCV_LACKS = {
    PSP_ADE: "OpenCV's Caffe importer does not read PSPNet's BN layer (bn_param)",
    PSP_VOC: "OpenCV's Caffe importer does not read PSPNet's BN layer (bn_param)",
}
#: the fork layers of the training nets
TRAIN_TYPES = {f"{SPHERE}sphereface_model.prototxt": "MarginInnerProduct",
               f"{CENTER}face_example__face_train_test.prototxt": "CenterLoss",
               f"{CENTER}mnist_example__mnist_train_test.prototxt": "CenterLoss",
               "chuanqi305__MobileNet-SSD__voc__MobileNetSSD_train.prototxt": "MultiBoxLoss",
               f"{SSDLITE}train.prototxt": "MultiBoxLoss"}
#: nets compared with OpenCV at another input size (old, new in the converted YAML), and why:
#: OpenCV 4.x's depthwise 3 × 3 convolution with pad 1 on a 1 × 1 map reads outside its
#: input (garbage out; a direct convolution and netspec agree to 1e-7), and SSDLite's last
#: head is such a map at 300 × 300; at 600 × 600 it is 2 × 2
OPENCV_INPUT = {f"{SSDLITE}deploy.prototxt": ("dim: [1, 3, 300, 300]", "dim: [1, 3, 600, 600]")}
#: training nets: phase -> the stand-in shapes of their data tops (the batch made small)
TRAIN = {
    f"{SPHERE}sphereface_model.prototxt": {"TRAIN": {"data": (2, 3, 112, 96)}},
    f"{CENTER}face_example__face_train_test.prototxt": {"TRAIN": {"data": (2, 3, 112, 96)},
                                                       "TEST": {"data": (2, 3, 112, 96)}},
    f"{CENTER}mnist_example__mnist_train_test.prototxt": {"TRAIN": {"data": (4, 1, 28, 28)},
                                                          "TEST": {"data": (4, 1, 28, 28)}},
    "chuanqi305__MobileNet-SSD__voc__MobileNetSSD_train.prototxt": {"TRAIN": {"data": (2, 3, 300, 300)}},
    f"{SSDLITE}train.prototxt": {"TRAIN": {"data": (2, 3, 300, 300)}},
}
#: py-R-FCN's training nets and the fork layers they need
RFCN_TRAIN = {f"{RFCN}train_agnostic.prototxt": {"PSROIPooling", "SmoothL1LossOHEM"},
              f"{RFCN}class-aware__train_ohem.prototxt":
                  {"PSROIPooling", "SmoothL1LossOHEM", "SoftmaxWithLossOHEM", "BoxAnnotatorOHEM"}}
#: DeepLab v2's files: the LargeFOV training net (a template of DeepLab's run script, whose
#: ${NUM_LABELS} is PASCAL-Context's 60 classes here, as the script's sed would write it) and
#: the ASPP test net writing score maps (MatWrite); their fork types
DEEPLAB_TRAIN = "xmojiao__deeplab_v2__pascal-context__config__deeplab_largeFOV__train.prototxt"
DEEPLAB_TEST = "zbxzc35__deeplab_v2_python__voc12__deeplab_v2_large_scoremap__config__test_val.prototxt"
DEEPLAB = {DEEPLAB_TRAIN: {"ImageSegData", "Interp", "SegAccuracy"},
           DEEPLAB_TEST: {"ImageSegData", "Interp", "MatWrite"}}
EVERY = sorted({*DEPLOY, *TRAIN, *RFCN_TRAIN, f"{RFCN}test_agnostic.prototxt",
                f"{SSDLITE}test.prototxt"})


def text_of(name: str) -> str:
    return (ZOO / name).read_text()


def converted(name: str) -> str:
    """The YAML text ``netspec convert`` makes of ``name``."""
    return net_yaml(ptx.parse_net(text_of(name), name), name)[0]


def build(name: str, phase: str = "TEST", shapes: dict | None = None,
          no_data: bool = False) -> Net:
    """The net of ``name`` as netspec builds it; ``shapes``: its data layers stood in by Input
    layers of those shapes (``netspec summary --input-shape``); ``no_data``: of the shapes
    their fields declare (``--no-data``)."""
    param = loads_net(converted(name), name)
    if shapes is not None or no_data:
        param = stand_in_inputs(param, shapes, declared=no_data)[0]
    return Net(param, phase, F32, np.random.default_rng(0))


def random_inputs(net: Net, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    for i, layer in enumerate(net.layers):
        if layer.type_name == "Input":
            for blob in net.tops[i]:
                blob.data[...] = rng.random(blob.shape)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_BUILD
                                  else n for n in sorted(DEPLOY)])
def test_fork_deploy_net_converts_and_builds_with_the_architectures_outputs(name):
    types, outputs = DEPLOY[name]
    net = build(name)
    assert types <= {layer.type_name for layer in net.layers}
    assert [net.blobs[o].shape for o in net.output_names] == outputs


@pytest.mark.parametrize("name", EVERY)
def test_fork_file_prototxt_yaml_prototxt_is_the_same_net(name, tmp_path):
    assert_round_trip(ZOO / name, tmp_path)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_OPENCV
                                  else n for n in sorted(DEPLOY)])
def test_fork_deploy_net_equals_opencv(name, tmp_path):
    """The net's outputs (and the logits under its last Softmax; SSD's detections row for row
    and their location and confidence inputs) equal OpenCV's to 1e-4 of their largest
    magnitude, on well-scaled random weights and a uniform [0, 1) input."""
    pytest.importorskip("cv2", reason="OpenCV is not installed (pip install 'netspec[compare]')")
    from test_opencv_zoo import _check

    from zoo_deploy import fill_well_scaled
    if name in OPENCV_LACKS:
        pytest.skip(OPENCV_LACKS[name])
    text = converted(name)
    if name in OPENCV_INPUT:
        old, new = OPENCV_INPUT[name]
        assert old in text
        text = text.replace(old, new)
    net = Net(loads_net(text, name), "TEST", F32, np.random.default_rng(0))
    fill_well_scaled(net, 0, gain=1.0)   # SSD decodes exp(offsets): keep them small
    for layer in net.layers:   # SSD: confident classes, so that DetectionOutput keeps rows
        if layer.type_name == "Convolution" and layer.name.endswith("mbox_conf"):
            layer.blobs[0].data[...] *= 15
    random_inputs(net)
    _check(net, text, tmp_path)


@pytest.mark.parametrize("name, phase", [(n, p) for n in sorted(TRAIN) for p in TRAIN[n]])
def test_fork_training_net_builds_and_steps_on_stand_in_inputs(name, phase):
    """The training nets, their data layers stood in by Input layers: a finite, positive loss
    and finite gradients reaching the first convolution's weights (TRAIN), or a forward (TEST)."""
    net = build(name, phase, TRAIN[name][phase])
    if phase == "TRAIN":
        assert TRAIN_TYPES[name] in {layer.type_name for layer in net.layers}
    rng = np.random.default_rng(1)
    for layer in net.layers:   # BatchNorm statistics: mean 0, variance 1
        if layer.type_name == "BatchNorm":
            layer.blobs[0].data[...], layer.blobs[1].data[...], layer.blobs[2].data[...] = 0, 1, 1
    net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].shape)
    label = net.blobs["label"]
    if "SSD" in name:
        label.data[...] = [[[[0, 3, 0, 0.1, 0.2, 0.5, 0.7, 0], [1, 12, 0, 0.4, 0.3, 0.9, 0.6, 0]]]]
        ssd_step(net)
        return
    classes = 10 if "mnist" in name else 10572   # MNIST's digits, CASIA-WebFace's identities
    label.data[...] = rng.integers(0, classes, label.shape)
    loss = float(net.forward())
    assert np.isfinite(loss) and loss > 0
    if phase == "TEST":
        return
    net.backward()
    first = next(l for l in net.layers if l.type_name == "Convolution")
    grad = first.blobs[0].diff
    assert np.isfinite(grad).all() and np.count_nonzero(grad) > 0


@pytest.fixture
def rfcn_modules(tmp_path):
    """A folder holding test doubles of py-R-FCN's Python layer modules (py-faster-rcnn's, with
    py-R-FCN's 4-D proposal targets); they leave sys.modules afterwards."""
    import sys

    from faster_rcnn_layers import write_modules
    write_modules(tmp_path, four_d=True)
    yield tmp_path
    for mod in [m for m in sys.modules if m.split(".")[0] in ("rpn", "roi_data_layer", "fake_cfg")]:
        del sys.modules[mod]


def build_rfcn(name: str, phase: str, folder: Path, inputs: dict | None = None) -> Net:
    """py-R-FCN's net ``name`` converted into ``folder`` (where its Python modules are), built
    with well-scaled random weights; ``inputs`` reshape its ``input:`` blobs."""
    from netspec.spec import load_net
    from zoo_deploy import fill_well_scaled
    net = ptx.parse_net(text_of(name), name)
    for inp, shape in zip(net.input, net.input_shape):
        del shape.dim[:]
        shape.dim.extend((inputs or {})[inp])
    path = folder / name.replace(".prototxt", ".yaml")
    path.write_text(net_yaml(net, name)[0])
    built = Net(load_net(path), phase, F32, np.random.default_rng(0))
    fill_well_scaled(built, 0, gain=1.0)
    return built


def test_rfcn_test_net_runs_with_its_proposal_layers_double(rfcn_modules):
    """py-R-FCN's ResNet-50 test net (PSROIPooling, class-agnostic boxes) with a test double of
    its Python proposal layer (tests/faster_rcnn_layers.py) on a 128 × 192 image: 300 RoIs,
    21 VOC class probabilities summing to 1, 8 box deltas (background and object) each."""
    from faster_rcnn_layers import IMAGE
    built = build_rfcn(f"{RFCN}test_agnostic.prototxt", "TEST", rfcn_modules,
                       {"data": [1, 3, *IMAGE], "im_info": [1, 3]})
    built.blobs["data"].data[...] = np.random.default_rng(1).random(built.blobs["data"].shape)
    built.blobs["im_info"].data[...] = [[IMAGE[0], IMAGE[1], 1.0]]
    built.forward()
    assert "PSROIPooling" in {l.type_name for l in built.layers}
    assert built.blobs["rois"].shape == (300, 5)
    assert built.blobs["cls_prob"].shape == (300, 21)
    assert built.blobs["bbox_pred"].shape == (300, 8)
    np.testing.assert_allclose(built.blobs["cls_prob"].data.sum(axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(RFCN_TRAIN))
def test_rfcn_training_net_takes_a_step_with_its_python_layers_doubles(name, rfcn_modules):
    """py-R-FCN's training nets (SmoothL1LossOHEM with PRE_FIXED normalization; the OHEM net's
    SoftmaxWithLossOHEM and BoxAnnotatorOHEM) with test doubles of its data and RPN layers:
    finite, positive R-FCN losses and gradients into the position-sensitive score maps."""
    built = build_rfcn(name, "TRAIN", rfcn_modules)
    assert RFCN_TRAIN[name] <= {layer.type_name for layer in built.layers}
    for layer in built.layers:   # BatchNorm statistics (use_global_stats): mean 0, variance 1
        if layer.type_name == "BatchNorm":
            layer.blobs[0].data[...], layer.blobs[1].data[...], layer.blobs[2].data[...] = 0, 1, 1
    loss = float(built.forward())
    for blob in ("loss_cls", "loss_bbox"):
        value = float(built.blobs[blob].data)
        assert np.isfinite(value) and value > 0, blob
    assert np.isfinite(loss)
    if "labels_ohem" in built.blobs:   # OHEM kept at most 128 RoIs of the image
        assert 0 < int((built.blobs["labels_ohem"].data != -1).sum()) <= 128
    built.backward()
    for layer in built.layers:
        if layer.name in ("rfcn_cls", "rfcn_bbox"):
            grad = layer.blobs[0].diff
            assert np.isfinite(grad).all() and np.count_nonzero(grad) > 0, layer.name


def test_ssdlite_test_net_builds_with_its_detection_evaluate_layer():
    """MobileNet-v2 SSDLite's test net (AnnotatedData stood in by ``--no-data``'s Input of its
    declared 8 × 3 × 300 × 300): DetectionOutput then DetectionEvaluate, 21 VOC classes."""
    net = build(f"{SSDLITE}test.prototxt", "TEST", no_data=True)
    assert {"DetectionOutput", "DetectionEvaluate"} <= {layer.type_name for layer in net.layers}
    assert net.blobs["data"].shape == (8, 3, 300, 300)
    assert net.blobs["mbox_conf"].shape[1] % 21 == 0


def deeplab_text(name: str) -> str:
    """The DeepLab file as its run script would fill it in (``${NUM_LABELS}`` → 60)."""
    return text_of(name).replace("${NUM_LABELS}", "60")


def deeplab_yaml(name: str) -> str:
    return net_yaml(ptx.parse_net(deeplab_text(name), name), name)[0]


@pytest.mark.parametrize("name", sorted(DEEPLAB))
def test_deeplab_v2_files_convert_and_round_trip(name, tmp_path):
    """Both files convert with their fork layers (ImageSegData with label_type, SegAccuracy,
    MatWrite), and prototxt -> YAML -> prototxt gives the same net (LargeFOV's loss, which
    names no top, then names Caffe's automatic one, as test_caffe_port's V0 LeNet)."""
    from click.testing import CliRunner

    from netspec.caffe.port import convert_net
    from netspec.caffe.to_yaml import AUTO_TOP
    from netspec.caffe.upgrade import upgrade_net
    from netspec.cli import main
    local = tmp_path / name
    local.write_text(deeplab_text(name))
    convert_net(local, tmp_path / "net.yaml")
    r = CliRunner().invoke(main, ["export", str(tmp_path / "net.yaml"), "-o",
                                  str(tmp_path / "back.prototxt")])
    assert r.exit_code == 0, r.output
    original = upgrade_net(ptx.parse_net(local.read_text(), name))[0]
    for lp in original.layer:
        if lp.type == "SoftmaxWithLoss" and not lp.top:
            lp.top.append(AUTO_TOP)
    assert ptx.parse_net((tmp_path / "back.prototxt").read_text()) == original
    param = loads_net((tmp_path / "net.yaml").read_text(), name)
    assert DEEPLAB[name] <= {lp.type for lp in param.layer}


@pytest.mark.parametrize("name, phase, shapes, outputs", [
    (DEEPLAB_TRAIN, "TRAIN", {"data": (1, 3, 321, 321)},
     {"fc8_${EXP}": (1, 60, 41, 41), "label_shrink": (1, 1, 41, 41), "accuracy": (1, 1, 1, 3)}),
    (DEEPLAB_TEST, "TEST", None, {"fc8_interp": (1, 21, 513, 513)}),
])
def test_deeplab_v2_nets_build_with_deeplabs_shapes(name, phase, shapes, outputs):
    """Built with ImageSegData stood in (``--input-shape`` at batch 1; ``--no-data``: the
    declared crop 513, batch 1): LargeFOV's 321 → 41 score map of 60 classes, the label
    shrunk alike; ASPP's 513 → 65 map interpolated ×8 back to 513, 21 VOC classes."""
    param = loads_net(deeplab_yaml(name), name)
    param = stand_in_inputs(param, shapes, declared=shapes is None)[0]
    net = Net(param, phase, F32, np.random.default_rng(0))
    for blob, shape in outputs.items():
        assert net.blobs[blob].shape == shape, blob


def test_deeplab_v2_largefov_trains_a_step_on_a_synthetic_list(tmp_path):
    """The LargeFOV training net as converted, its list, folders and crop substituted (crop
    65 = 32·3 − 31, batch 2): ImageSegData reads PNG pairs, the loss is finite and positive,
    gradients reach conv1_1 and fc8 (on well-scaled random weights), SegAccuracy gives three
    measures in [0, 1]."""
    from PIL import Image
    rng = np.random.default_rng(0)
    lines = []
    for k, (h, w) in enumerate([(70, 90), (50, 60), (80, 66)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"i{k}.png")
        seg = rng.integers(0, 60, (h, w), dtype=np.uint8)
        seg[:5] = 255
        Image.fromarray(seg).save(tmp_path / f"s{k}.png")
        lines.append(f"/i{k}.png /s{k}.png")
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    text = deeplab_yaml(DEEPLAB_TRAIN)
    for old, new in (("crop_size: 321", "crop_size: 65"), ("batch_size: 10", "batch_size: 2"),
                     ("${EXP}/list/${TRAIN_SET}.txt", str(tmp_path / "train.txt")),
                     ("${DATA_ROOT}", str(tmp_path))):
        assert old in text, old
        text = text.replace(old, new)
    from zoo_deploy import fill_well_scaled
    net = Net(loads_net(text, DEEPLAB_TRAIN), "TRAIN", F32, np.random.default_rng(0))
    fill_well_scaled(net, 0, gain=1.0)   # the file has no fillers: DeepLab starts from weights
    assert net.blobs["data"].shape == (2, 3, 65, 65) and net.blobs["data_dim"].shape == (2, 1, 1, 2)
    loss = float(net.forward())
    assert np.isfinite(loss) and loss > 0
    assert set(np.unique(net.blobs["label"].data)) <= set(range(60)) | {255}
    acc = net.blobs["accuracy"].data.reshape(3)
    assert ((acc >= 0) & (acc <= 1)).all()
    net.backward()
    for name in ("conv1_1", "fc8_${EXP}_1"):
        grad = next(layer for layer in net.layers if layer.name == name).blobs[0].diff
        assert np.isfinite(grad).all() and np.count_nonzero(grad) > 0, name


def test_depthwise_convolution_on_a_one_by_one_map_is_its_centre_tap():
    """SSDLite's last head: a depthwise 3 × 3 convolution with pad 1 on a 1 × 1 map sees only
    its centre tap, y = w[:, 0, 1, 1] · x (the case OpenCV 4.x gets wrong, OPENCV_INPUT)."""
    from gradcheck import make_layer, run_forward
    spec = {"type": "ConvolutionDepthwise", "convolution_param": {
        "num_output": 128, "kernel_size": 3, "pad": 1, "bias_term": False}}
    layer, tops = make_layer(spec, [(2, 128, 1, 1)], backend=F32)
    rng = np.random.default_rng(0)
    layer.blobs[0].data[...] = rng.standard_normal(layer.blobs[0].shape)
    x = rng.standard_normal((2, 128, 1, 1)).astype(np.float32)
    _, top = run_forward(layer, [x], tops)
    np.testing.assert_allclose(top[0].data, x * layer.blobs[0].data[:, 0, 1, 1][None, :, None, None],
                               rtol=1e-6)
