"""Porting real Caffe models: prototxt (current, V1, V0) and caffemodel in, and back out.

Fixtures in tests/golden/caffe/ are copies of ../shared: `zoo/` (public Caffe model files,
provenance in zoo/SOURCES.tsv), `upgraded/` (what real Caffe's upgrade_net_proto_text makes of
the legacy ones), `shapes/` (blob shapes real Caffe built for every zoo net, data layers replaced
by Input layers) and `lenet_trained/` (a LeNet trained by Caffe, with the same weights as .npz).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import re

import numpy as np
import pytest

from netspec.errors import NetspecError

pytest.importorskip("google.protobuf", reason="protobuf is not installed (pip install 'netspec[caffe]')")

from click.testing import CliRunner  # noqa: E402

from zoo_deploy import HEAVY_DEPLOY, deploy_names, deploy_yaml, substitute_inputs, zoo_nets  # noqa: E402

from netspec.backend import Backend  # noqa: E402
from netspec.caffe import ConvertError, pb2  # noqa: E402
from netspec.caffe import prototxt as ptx  # noqa: E402
from netspec.caffe.caffemodel import read_caffemodel_arrays  # noqa: E402
from netspec.caffe.export import export_net, net_message  # noqa: E402
from netspec.caffe.port import convert, convert_net, convert_solver, convert_weights, net_yaml  # noqa: E402
from netspec.caffe.upgrade import upgrade_net  # noqa: E402
from netspec.cli import main  # noqa: E402
from netspec.errors import SnapshotError  # noqa: E402
from netspec.layers import registry  # noqa: E402
from netspec.net import Net  # noqa: E402
from netspec.snapshot import load_weights  # noqa: E402
from netspec.spec import load_net, load_solver, loads_net  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
G = Path(__file__).parent / "golden" / "caffe"
ZOO, SHAPES, UPGRADED, TRAINED = G / "zoo", G / "shapes", G / "upgraded", G / "lenet_trained"
F32 = Backend(np, np.float32)
LENET_DEPLOY = "BVLC__caffe__examples__mnist__lenet.prototxt"
LENET_TRAIN_TEST = "BVLC__caffe__examples__mnist__lenet_train_test.prototxt"
LENET_V1 = "BVLC__caffe__at_11a4c16__examples__mnist__lenet_train_test.prototxt"


def same_bits(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


def npz(path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


# -- the schema ------------------------------------------------------------------------------------
def test_generated_module_is_what_the_pinned_protoc_makes(tmp_path):
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools is not installed (pip install 'grpcio-tools==1.62.3')")
    spec = importlib.util.spec_from_file_location("gen_caffe_proto", ROOT / "scripts" / "gen_caffe_proto.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    if gen.installed_version() != gen.GRPCIO_TOOLS_VERSION:
        pytest.skip(f"grpcio-tools {gen.installed_version()} is installed; the generator is pinned "
                    f"to {gen.GRPCIO_TOOLS_VERSION}")
    produced = gen.generate(tmp_path)
    assert produced.read_bytes() == (ROOT / "netspec" / "caffe" / "caffe_pb2.py").read_bytes(), \
        "netspec/caffe/caffe_pb2.py is stale: run python scripts/gen_caffe_proto.py"


def test_schema_uses_caffes_field_numbers():
    P = pb2()
    layer = P.LayerParameter.DESCRIPTOR.fields_by_name
    assert (layer["name"].number, layer["param"].number, layer["blobs"].number,
            layer["convolution_param"].number, layer["batch_norm_param"].number) == (1, 6, 7, 106, 139)
    assert P.NetParameter.DESCRIPTOR.fields_by_name["layer"].number == 100
    assert P.NetParameter.DESCRIPTOR.fields_by_name["layers"].number == 2
    assert P.BlobProto.DESCRIPTOR.fields_by_name["double_data"].number == 8
    assert P.V1LayerParameter.LayerType.Value("CONVOLUTION") == 4
    assert P.SolverParameter.DESCRIPTOR.fields_by_name["type"].number == 40
    assert P.ParamSpec().decay_mult == 1.0 and P.SolverParameter().regularization_type == "L2"


def test_fork_fields_use_the_forks_numbers():
    """The fork layers' blocks carry their forks' field numbers (SSD: permute 202, prior_box
    203, detection_output 204, norm 206; YOLO forks: upsample 149; ShuffleNet: shuffle_channel
    164; caffe-fast-rcnn: roi_pooling 8266711, smooth_l1_loss 8266712, dropout_param.scale_train
    2), so fork caffemodels read."""
    P = pb2()
    layer = P.LayerParameter.DESCRIPTOR.fields_by_name
    assert {k: layer[k].number for k in ("permute_param", "prior_box_param",
                                         "detection_output_param", "norm_param",
                                         "upsample_param", "shuffle_channel_param")} == {
        "permute_param": 202, "prior_box_param": 203, "detection_output_param": 204,
        "norm_param": 206, "upsample_param": 149, "shuffle_channel_param": 164}
    prior = P.PriorBoxParameter()
    assert (prior.flip, prior.clip, prior.offset) == (True, False, 0.5)
    det = P.DetectionOutputParameter()
    assert (det.share_location, det.keep_top_k, det.code_type, det.nms_param.nms_threshold,
            det.nms_param.eta) == (True, -1, P.PriorBoxParameter.CORNER, pytest.approx(0.3), 1.0)
    assert P.DetectionOutputParameter.DESCRIPTOR.fields_by_name["variance_encoded_in_target"].number == 8
    assert (layer["roi_pooling_param"].number, layer["smooth_l1_loss_param"].number,
            P.DropoutParameter.DESCRIPTOR.fields_by_name["scale_train"].number) == (8266711, 8266712, 2)
    roi = P.ROIPoolingParameter()
    assert (roi.pooled_h, roi.pooled_w, roi.spatial_scale, P.SmoothL1LossParameter().sigma,
            P.DropoutParameter().scale_train) == (0, 0, 1.0, 1.0, True)
    norm = P.NormalizeParameter()
    assert (norm.across_spatial, norm.channel_shared, round(norm.eps, 15)) == (True, True, 1e-10)
    assert P.PoolingParameter().ceil_mode is True


# -- weights -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lenet_yaml(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lenet") / "lenet.yaml"
    convert_net(TRAINED / "lenet.prototxt", out)
    return out


def test_caffemodel_converts_to_the_npz_bit_for_bit(lenet_yaml, tmp_path):
    out = tmp_path / "w.npz"
    result = convert_weights(TRAINED / "lenet_iter_10000.caffemodel", out, model=lenet_yaml)
    assert result.info["missing"] == [] and result.info["unused"] == []
    same_bits(npz(out), npz(TRAINED / "lenet_iter_10000_weights.npz"))
    same_bits(read_caffemodel_arrays(TRAINED / "lenet_iter_10000.caffemodel"),
              npz(TRAINED / "lenet_iter_10000_weights.npz"))


def test_converted_lenet_reproduces_caffes_probabilities(lenet_yaml, tmp_path):
    from netspec.data.mnist import load_mnist

    weights = tmp_path / "w.npz"
    convert_weights(TRAINED / "lenet_iter_10000.caffemodel", weights, model=lenet_yaml)
    net = Net(load_net(lenet_yaml), "TEST", F32)
    assert load_weights(net, weights) == ([], [])
    images, labels = load_mnist("test")
    gold = np.load(TRAINED / "first16.npz")
    batch = net.blobs["data"].shape[0]
    x = np.zeros(net.blobs["data"].shape, np.float32)
    x[:16] = images[:16].reshape(16, 1, 28, 28).astype(np.float32) * np.float32(0.00390625)
    net.blobs["data"].data[...] = x
    net.forward()
    assert batch >= 16
    np.testing.assert_allclose(net.blobs["prob"].data[:16], gold["prob"], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(labels[:16], gold["label"])
    # and straight from the .caffemodel through load_weights
    net2 = Net(load_net(lenet_yaml), "TEST", F32)
    load_weights(net2, TRAINED / "lenet_iter_10000.caffemodel")
    net2.blobs["data"].data[...] = x
    net2.forward()
    np.testing.assert_array_equal(net2.blobs["prob"].data, net.blobs["prob"].data)


def test_weights_round_trip_bit_for_bit(lenet_yaml, tmp_path):
    first = tmp_path / "first.npz"
    convert_weights(TRAINED / "lenet_iter_10000.caffemodel", first, model=lenet_yaml)
    export_net(lenet_yaml, tmp_path / "back.prototxt", weights=first,
               caffemodel=tmp_path / "back.caffemodel")
    second = tmp_path / "second.npz"
    convert_weights(tmp_path / "back.caffemodel", second, model=lenet_yaml)
    same_bits(npz(first), npz(second))
    # float64 blobs go out as double_data and come back as float64
    d = {"ip2/0": np.random.default_rng(0).normal(size=(10, 500)), "ip2/1": np.zeros(10)}
    np.savez(tmp_path / "d.npz", **d)
    export_net(lenet_yaml, tmp_path / "d.prototxt", weights=tmp_path / "d.npz",
               caffemodel=tmp_path / "d.caffemodel")
    same_bits(read_caffemodel_arrays(tmp_path / "d.caffemodel"), d)


def test_legacy_blob_shapes_and_v1_layers_are_read(lenet_yaml, tmp_path):
    """An old-style caffemodel: V1 `layers`, num/channels/height/width shapes, double_data."""
    P = pb2()
    gold = npz(TRAINED / "lenet_iter_10000_weights.npz")
    net = P.NetParameter(name="LeNet")
    for name in ("conv1", "conv2", "ip1", "ip2"):
        v1 = net.layers.add(name=name, type=P.V1LayerParameter.CONVOLUTION)
        for i in (0, 1):
            a = gold[f"{name}/{i}"]
            dims = (1,) * (4 - a.ndim) + a.shape if a.ndim < 4 else a.shape
            b = v1.blobs.add(num=dims[0], channels=dims[1], height=dims[2], width=dims[3])
            if name == "ip2":
                b.double_data.extend(a.astype(np.float64).ravel().tolist())
            else:
                b.data.extend(a.ravel().tolist())
    path = tmp_path / "old.caffemodel"
    path.write_bytes(net.SerializeToString())
    out = tmp_path / "old.npz"
    result = convert_weights(path, out, model=lenet_yaml)
    assert sorted(result.info["reshaped"]) == ["conv1/1", "conv2/1", "ip1/0", "ip1/1", "ip2/0", "ip2/1"]
    got = npz(out)
    for k, a in gold.items():
        assert got[k].shape == a.shape
        np.testing.assert_array_equal(got[k], a)
    assert got["ip2/0"].dtype == np.float64 and got["conv1/0"].dtype == np.float32


def test_missing_and_unused_blobs_are_reported(lenet_yaml, tmp_path):
    P = pb2()
    net = P.NetParameter()
    src = P.NetParameter.FromString((TRAINED / "lenet_iter_10000.caffemodel").read_bytes())
    for lp in src.layer:
        if lp.name != "ip2":
            net.layer.add().CopyFrom(lp)
    extra = net.layer.add(name="fc_extra", type="InnerProduct")
    extra.blobs.add().CopyFrom(src.layer[1].blobs[1])
    path = tmp_path / "partial.caffemodel"
    path.write_bytes(net.SerializeToString())
    result = convert_weights(path, tmp_path / "p.npz", model=lenet_yaml)
    assert result.info["missing"] == ["ip2/0", "ip2/1"]
    assert result.info["unused"] == ["fc_extra/0"]
    assert any("ip2/0" in w for w in result.warnings) and any("fc_extra/0" in w for w in result.warnings)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "text", "empty", "bad_count"])
def test_corrupt_caffemodel_is_a_clear_error(tmp_path, damage):
    raw = (TRAINED / "lenet_iter_10000.caffemodel").read_bytes()
    path = tmp_path / "broken.caffemodel"
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)))
    elif damage == "text":
        path.write_bytes((TRAINED / "lenet.prototxt").read_bytes())
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        P = pb2()
        net = P.NetParameter()
        b = net.layer.add(name="ip", type="InnerProduct").blobs.add()
        b.shape.dim.extend([2, 3])
        b.data.extend([1.0] * 5)
        path.write_bytes(net.SerializeToString())
    with pytest.raises(SnapshotError) as e:
        read_caffemodel_arrays(path)
    assert str(path) in str(e.value)
    expected = {"truncated": "truncated", "garbage": "not a Caffe model", "text": "text .prototxt",
                "empty": "no layers", "bad_count": "has 5 values but its shape (2, 3) needs 6"}
    assert expected[damage] in str(e.value)
    r = CliRunner().invoke(main, ["convert", str(path), "-o", str(tmp_path / "x.npz")])
    assert r.exit_code == 1 and str(path) in r.output and "Traceback" not in r.output


# -- nets: V1/V0 upgrades ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(p.name for p in UPGRADED.glob("*.prototxt")))
def test_legacy_upgrade_equals_caffes(name):
    legacy = ptx.parse_net((ZOO / name).read_text(), name)
    golden = ptx.parse_net((UPGRADED / name).read_text(), name)
    upgraded, log = upgrade_net(legacy, input_layer=True)
    assert log.format in ("V0", "V1")
    assert upgraded == golden
    # the YAML of the legacy file says what the YAML of Caffe's upgrade says
    if {l.type for l in golden.layer} <= set(registry.LAYERS):
        a = net_yaml(legacy, name, input_layer=True)[0].split("\n", 1)[1]
        b = net_yaml(golden, name)[0].split("\n", 1)[1]
        assert a == b
        net_yaml(legacy, name)  # the input header kept as netspec's own header also loads


def test_v1_blobs_lr_weight_decay_become_param_specs():
    text = """
    name: "t"
    input: "data" input_dim: 2 input_dim: 3 input_dim: 8 input_dim: 8
    layers { name: "c" type: CONVOLUTION bottom: "data" top: "c"
             blobs_lr: 1 blobs_lr: 2 weight_decay: 250 weight_decay: 0
             convolution_param { num_output: 4 kernel_size: 3 } }
    layers { name: "r" type: RELU bottom: "c" top: "c" }
    """
    data = net_yaml(ptx.parse_net(text), "t.prototxt")[1]
    assert data["input"] == ["data"] and data["input_dim"] == [2, 3, 8, 8]
    assert data["layer"][0]["type"] == "Convolution"
    assert data["layer"][0]["param"] == [{"lr_mult": 1.0, "decay_mult": 250.0},
                                         {"lr_mult": 2.0, "decay_mult": 0.0}]
    assert data["layer"][1]["type"] == "ReLU"


def test_v0_padding_layers_fold_into_convolutions():
    text = """
    name: "t"
    input: "data" input_dim: 1 input_dim: 1 input_dim: 8 input_dim: 8
    layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
    layers { layer { name: "conv1" type: "conv" num_output: 3 kernelsize: 5 biasterm: false
                     blobs_lr: 1 weight_decay: 1 }
             bottom: "pad1" top: "conv1" }
    layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.25 } bottom: "conv1" top: "conv1" }
    """
    data = net_yaml(ptx.parse_net(text), "t.prototxt")[1]
    conv = data["layer"][0]
    assert conv["name"] == "conv1" and conv["bottom"] == ["data"]
    assert conv["convolution_param"] == {"num_output": 3, "bias_term": False, "pad": [2],
                                         "kernel_size": [5]}
    assert conv["param"] == [{"lr_mult": 1.0, "decay_mult": 1.0}]
    assert data["layer"][1]["dropout_param"] == {"dropout_ratio": 0.25}
    net = Net(loads_net(net_yaml(ptx.parse_net(text), "t.prototxt")[0]), "TEST", F32)
    assert net.blobs["conv1"].shape == (1, 3, 8, 8)


# -- nets: the zoo -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", zoo_nets())
def test_zoo_net_converts_and_builds_with_caffes_shapes(name):
    """Every zoo net netspec has the layers for converts, builds, and has Caffe's blob and
    parameter shapes in every phase; any other is an error naming each missing type's layers."""
    net = ptx.parse_net((ZOO / name).read_text(), name)
    golden = json.loads((SHAPES / f"{name}.json").read_text())
    phases = golden.get("phases") or {}
    types = {l.type for l in substitute_inputs(net, {}).layer}
    missing = types - set(registry.LAYERS)
    if not missing and name in FASTER_RCNN:
        # BVLC Caffe cannot read py-faster-rcnn's fork fields, so there are no golden shapes:
        # test_faster_rcnn_net_builds_and_runs builds it with its Python layers' test doubles
        assert not phases
        net_yaml(net, name)
        return
    if not missing and not phases:
        # Caffe did not build it either: its Python layer's module (pyloss) is not here
        text = net_yaml(net, name)[0]
        with pytest.raises(NetspecError, match="cannot find Python module"):
            Net(loads_net(text, name), "TRAIN", F32)
        return
    if missing:
        with pytest.raises(ConvertError) as e:
            net_yaml(net, name)
        msg = str(e.value)
        assert name in msg
        for lp in upgrade_net(net)[0].layer:
            if lp.type not in registry.LAYERS:
                assert f"'{lp.type}'" in msg and f"'{lp.name}'" in msg, (lp.name, lp.type)
        assert missing, f"{name}: netspec implements every type but Caffe did not build it"
        return
    for phase_key, gp in phases.items():
        phase, _, stage = phase_key.partition("/")
        text = net_yaml(substitute_inputs(net, gp["blobs"]), name)[0]
        built = Net(loads_net(text, name), phase, F32, stages=[stage] if stage else ())
        assert {k: list(b.shape) for k, b in built.blobs.items()} == gp["blobs"], phase_key
        params: dict[str, list] = {}
        for key, p in built.named_params().items():
            params.setdefault(key.rsplit("/", 1)[0], []).append(list(p.shape))
        assert params == gp["params"], phase_key
        assert [l.name for l in built.layers] == [l for l, _ in gp["layers"]], phase_key


FRCNN = "rbgirshick__py-faster-rcnn__models__pascal_voc__"
#: py-faster-rcnn's nets -> (phase, the blob shapes expected after a forward pass: C = 21 classes)
FASTER_RCNN = {
    FRCNN + "ZF__faster_rcnn_end2end__train.prototxt": ("TRAIN", {
        "data": [1, 3, 128, 192], "im_info": [1, 3], "gt_boxes": [4, 5],
        "rpn_cls_score": [1, 18, 9, 13], "rpn_labels": [1, 1, 81, 13],   # ZF's pooling rounds up
        "rpn_bbox_targets": [1, 36, 9, 13], "rpn_rois": [1053, 5], "rois": [128, 5],
        "labels": [128], "roi_pool_conv5": [128, 256, 6, 6], "cls_score": [128, 21],
        "bbox_pred": [128, 84], "rpn_loss_bbox": [], "bbox_loss": [], "cls_loss": [],
        "rpn_cls_loss": []}),
    FRCNN + "VGG16__faster_rcnn_end2end__train.prototxt": ("TRAIN", {
        "data": [1, 3, 128, 192], "conv5_3": [1, 512, 8, 12], "rpn_labels": [1, 1, 72, 12],
        "rpn_rois": [864, 5], "rois": [128, 5], "pool5": [128, 512, 7, 7],
        "cls_score": [128, 21], "bbox_pred": [128, 84], "rpn_loss_bbox": [], "loss_bbox": [],
        "loss_cls": [], "rpn_cls_loss": []}),
    FRCNN + "VGG16__faster_rcnn_end2end__test.prototxt": ("TEST", {
        "data": [1, 3, 128, 192], "im_info": [1, 3], "conv5_3": [1, 512, 8, 12],
        "rois": [300, 5], "pool5": [300, 512, 7, 7], "cls_prob": [300, 21],
        "bbox_pred": [300, 84]}),
    FRCNN + "VGG_CNN_M_1024__fast_rcnn__train.prototxt": ("TRAIN", {
        "data": [2, 3, 128, 192], "rois": [128, 5], "labels": [128], "pool5": [128, 512, 6, 6],
        "fc7": [128, 1024], "cls_score": [128, 21], "bbox_pred": [128, 84],
        "loss_cls": [], "loss_bbox": []}),
    FRCNN + "VGG_CNN_M_1024__fast_rcnn__test.prototxt": ("TEST", {
        "data": [1, 3, 128, 192], "rois": [20, 5], "pool5": [20, 512, 6, 6],
        "cls_prob": [20, 21], "bbox_pred": [20, 84]}),
}


@pytest.fixture(scope="module")
def faster_rcnn_modules(tmp_path_factory):
    """A folder holding test doubles of py-faster-rcnn's Python layer modules (imported from
    there: the net file's folder); they leave sys.modules afterwards."""
    import sys

    from faster_rcnn_layers import write_modules
    folder = tmp_path_factory.mktemp("faster_rcnn")
    write_modules(folder)
    yield folder
    for mod in [m for m in sys.modules if m.split(".")[0] in ("rpn", "roi_data_layer", "fake_cfg")]:
        del sys.modules[mod]


@pytest.mark.parametrize("name", sorted(FASTER_RCNN))
def test_faster_rcnn_net_builds_and_runs(name, faster_rcnn_modules):
    """py-faster-rcnn's nets (ROIPooling, SmoothL1Loss, dropout scale_train, four Python layers)
    convert, build with their Python layers' test doubles (tests/faster_rcnn_layers.py) and
    run forward with the shapes py-faster-rcnn's layers give, finite losses; the training nets
    run backward too. The test nets' inputs take a 128 × 192 image (and 20 RoIs)."""
    from faster_rcnn_layers import IMAGE
    phase, want = FASTER_RCNN[name]
    net = ptx.parse_net((ZOO / name).read_text(), name)
    for inp, shape in zip(net.input, net.input_shape):
        dims = {"data": [1, 3, *IMAGE], "im_info": [1, 3], "rois": [20, 5]}[inp]
        del shape.dim[:]
        shape.dim.extend(dims)
    path = faster_rcnn_modules / name.replace(".prototxt", ".yaml")
    path.write_text(net_yaml(net, name)[0])
    built = Net(load_net(path), phase, F32, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for p in built.named_params().values():   # as if trained: He-scaled weights (most layers
        if p.data.ndim >= 2:                   # of these nets have no filler: Caffe's zeros)
            p.data[...] = rng.normal(size=p.shape) * np.sqrt(2.0 / np.prod(p.shape[1:]))
    if "data" in net.input:
        built.blobs["data"].data[...] = rng.normal(size=built.blobs["data"].shape) * 50
    if "im_info" in net.input:
        built.blobs["im_info"].data[...] = [[IMAGE[0], IMAGE[1], 1.0]]
    if "rois" in net.input:
        rois = built.blobs["rois"].data
        rois[:, 0] = 0
        rois[:, 1:] = np.sort(rng.uniform(0, IMAGE[1] - 1, (20, 4)), axis=1)[:, [0, 2, 1, 3]] \
            * [1, IMAGE[0] / IMAGE[1], 1, IMAGE[0] / IMAGE[1]]
    loss = built.forward()
    shapes = {k: list(b.shape) for k, b in built.blobs.items()}
    assert {k: shapes[k] for k in want} == want
    for k in want:
        assert np.isfinite(built.blobs[k].data).all(), k
    if phase == "TRAIN":
        assert np.isfinite(loss) and loss > 0
        built.backward()
        i = next(i for i, l in enumerate(built.layers) if type(l).__name__ == "ROIPooling")
        assert built.propagate[i] == [True, False]
        # ROIPooling routed its gradient to the features (the split copy it reads)
        assert np.abs(built.bottoms[i][0].diff).sum() > 0
    else:
        np.testing.assert_allclose(built.blobs["cls_prob"].data.sum(axis=1), 1, rtol=1e-5)


PASCAL = "BVLC__caffe__examples__finetune_pascal_detection__pascal_finetune_trainval_test.prototxt"


def test_pascal_window_data_net_builds_with_its_own_data_layers(tmp_path):
    """R-CNN's fine-tuning net converts as it is (WindowData layers included) and, given a
    window file, images and a mean file at the paths it names, builds in both phases with
    Caffe's blob and parameter shapes, its WindowData layers reading real windows."""
    Image = pytest.importorskip("PIL.Image")
    net = ptx.parse_net((ZOO / PASCAL).read_text(), PASCAL)
    text, data, _, _ = net_yaml(net, PASCAL)
    assert [l["type"] for l in data["layer"][:2]] == ["WindowData", "WindowData"]
    (tmp_path / "net.yaml").write_text(text)
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(
            tmp_path / "img" / f"{i}.png")
    for split in ("trainval", "test"):
        path = tmp_path / "examples" / "finetune_pascal_detection" / f"window_file_2007_{split}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"# {i}\n{tmp_path}/img/{i}.png\n3\n60\n80\n2\n"
                                f"{i + 1} 0.800 10 5 49 44\n0 0.100 0 0 79 59\n" for i in range(2)))
    mean = pb2().BlobProto()
    mean.shape.dim.extend([1, 3, 256, 256])
    mean.data.extend([100.0] * (3 * 256 * 256))
    (tmp_path / "data" / "ilsvrc12").mkdir(parents=True)
    (tmp_path / "data" / "ilsvrc12" / "imagenet_mean.binaryproto").write_bytes(mean.SerializeToString())
    golden = json.loads((SHAPES / f"{PASCAL}.json").read_text())["phases"]
    for phase in ("TRAIN", "TEST"):
        built = Net(load_net(tmp_path / "net.yaml"), phase, F32)
        assert type(built.layers[0]).__name__ == "WindowData"
        assert {k: list(b.shape) for k, b in built.blobs.items()} == golden[phase]["blobs"]
        params: dict[str, list] = {}
        for key, p in built.named_params().items():
            params.setdefault(key.rsplit("/", 1)[0], []).append(list(p.shape))
        assert params == golden[phase]["params"]
        data_layer = built.layers[0]
        data_layer.forward([], [built.blobs["data"], built.blobs["label"]])
        labels = built.blobs["label"].data
        np.testing.assert_array_equal(labels[:96], 0)            # 128 · (1 − 0.25) background
        assert set(labels[96:].tolist()) <= {1.0, 2.0}           # then 32 foreground


def test_faster_rcnn_layers_and_fields_convert():
    """py-faster-rcnn's ROIPooling, SmoothL1Loss and dropout_param.scale_train carry over."""
    name = "rbgirshick__py-faster-rcnn__models__pascal_voc__ZF__faster_rcnn_end2end__train.prototxt"
    data = net_yaml(ptx.parse_net((ZOO / name).read_text(), name), name)[1]
    by_name = {l["name"]: l for l in data["layer"]}
    assert by_name["roi_pool_conv5"]["roi_pooling_param"] == {
        "pooled_w": 6, "pooled_h": 6, "spatial_scale": 0.0625}
    assert by_name["rpn_loss_bbox"]["smooth_l1_loss_param"] == {"sigma": 3.0}
    assert len(by_name["rpn_loss_bbox"]["bottom"]) == 4
    assert by_name["drop6"]["dropout_param"] == {"dropout_ratio": 0.5, "scale_train": False}


def test_fork_layers_netspec_lacks_are_named(tmp_path):
    src = tmp_path / "n.prototxt"
    src.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 4 } } }\n'
                   'layer { name: "eval" type: "YoloSeg" bottom: "x" bottom: "x" top: "l" }\n')
    with pytest.raises(ConvertError) as e:
        convert_net(src, tmp_path / "n.yaml")
    msg = str(e.value)
    assert "'eval' has type 'YoloSeg'" in msg and "MobileNet-YOLO fork" in msg


def test_unread_block_is_a_named_warning(tmp_path):
    src = tmp_path / "n.prototxt"
    src.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 4 } } }\n'
                   'layer { name: "d" type: "Dropout" bottom: "x" top: "x" '
                   'dropout_param { dropout_ratio: 0.3 scale_train: false } }\n'
                   'layer { name: "r" type: "ReLU" bottom: "x" top: "x" convolution_param { num_output: 2 } }\n')
    result = convert_net(src, tmp_path / "n.yaml")
    assert not any("scale_train" in w for w in result.warnings)
    assert any("'r'" in w and "convolution_param" in w for w in result.warnings)
    lp = load_net(tmp_path / "n.yaml").layer
    assert lp[1].dropout_param.dropout_ratio == pytest.approx(0.3)
    assert lp[1].dropout_param.scale_train is False
    assert lp[2].model_dump(exclude_unset=True).get("convolution_param") is None


def test_prototxt_syntax_errors_name_the_line_and_layer(tmp_path):
    src = tmp_path / "bad.prototxt"
    src.write_text('name: "x"\nlayer {\n  name: "conv1"\n  type: "Convolution"\n'
                   '  convolution_param { num_ouput: 3 }\n}\n')
    r = CliRunner().invoke(main, ["convert", str(src)])
    assert r.exit_code == 1
    assert f"{src}:5" in r.output and "layer 'conv1'" in r.output and "num_output" in r.output


# -- round trips -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [LENET_DEPLOY, LENET_TRAIN_TEST, LENET_V1])
def test_prototxt_yaml_prototxt_is_the_same_net(name, tmp_path):
    """(The V0 LeNet is left out: its loss layer has no top, and the YAML names Caffe's
    automatic one, so the exported prototxt says `top: "(automatic)"`.)"""
    convert_net(ZOO / name, tmp_path / "net.yaml")
    r = CliRunner().invoke(main, ["export", str(tmp_path / "net.yaml"), "-o", str(tmp_path / "back.prototxt")])
    assert r.exit_code == 0, r.output
    original = upgrade_net(ptx.parse_net((ZOO / name).read_text(), name))[0]
    back = ptx.parse_net((tmp_path / "back.prototxt").read_text())
    assert back == original
    # and once more through YAML: a fixed point
    convert_net(tmp_path / "back.prototxt", tmp_path / "again.yaml")
    assert (tmp_path / "again.yaml").read_text().split("\n", 1)[1] == \
        (tmp_path / "net.yaml").read_text().split("\n", 1)[1]


def test_export_names_what_caffe_cannot_read():
    msg, warnings = net_message(load_net(ROOT / "models" / "lenet.yaml"))
    assert msg.layer[0].data_param.source == "builtin:mnist"
    assert any("'mnist'" in w and "data_param.split" in w for w in warnings)
    assert any("builtin:mnist" in w for w in warnings)


# -- solvers ---------------------------------------------------------------------------------------
def test_solver_converts_with_its_net(tmp_path):
    (tmp_path / "lenet_solver.prototxt").write_text((ZOO / "BVLC__caffe__examples__mnist__lenet_solver.prototxt").read_text())
    (tmp_path / "lenet_train_test.prototxt").write_text((ZOO / LENET_TRAIN_TEST).read_text())
    r = CliRunner().invoke(main, ["convert", str(tmp_path / "lenet_solver.prototxt"),
                                  "-o", str(tmp_path / "out" / "solver.yaml")])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "out" / "solver.yaml").read_text()
    assert "regularization_type: L2" in text and "net: ../lenet_train_test.yaml" in text
    sp = load_solver(tmp_path / "out" / "solver.yaml")
    assert sp.regularization_type == "L2" and sp.weight_decay == pytest.approx(0.0005)
    assert sp.base_lr == pytest.approx(0.01) and sp.lr_policy == "inv" and sp.solver_mode == "GPU"
    assert Path(sp.net) == (tmp_path / "lenet_train_test.yaml").resolve()
    assert load_net(sp.net).layer[2].name == "conv1"


def test_the_converted_graph_is_checked_in_each_phase(tmp_path):
    """What Caffe's Net::Init refuses is refused before anything is written, naming the line of
    the layer; a net that builds in one phase only (a train_net file) converts."""
    data = ('layer { name: "d" type: "Input" top: "x" top: "y" include { phase: TRAIN }\n'
            '  input_param { shape { dim: 2 dim: 4 } shape { dim: 2 } } }\n')
    tail = ('layer { name: "ip" type: "InnerProduct" bottom: "x" top: "z" '
            'inner_product_param { num_output: 3 } }\n'
            'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "z" bottom: "y" top: "loss" }\n')
    src = tmp_path / "n.prototxt"
    src.write_text(data + tail)
    convert_net(src, tmp_path / "train_only.yaml")
    for extra, words in [
            ('layer { name: "r" type: "ReLU" bottom: "x" top: "z" }\n',
             "n.prototxt:5: the net does not build (TRAIN phase): top 'z' of layer 'r' is already "
             "produced by layer 'ip'"),
            ('layer { name: "r" type: "ReLU" bottom: "nothere" top: "r" }\n',
             "n.prototxt:5: the net does not build (TRAIN phase): layer 'r' reads bottom 'nothere'")]:
        src.write_text(data + tail + extra)
        with pytest.raises(ConvertError) as e:
            convert_net(src, tmp_path / "n.yaml")
        assert words in str(e.value)
        assert not (tmp_path / "n.yaml").exists()


def test_a_solver_that_does_not_convert_writes_nothing(tmp_path):
    """The nets a solver names or holds are written only once the solver and every net have
    converted: a bad solver field, or a bad test net after a good train net, leaves no file."""
    (tmp_path / "train.prototxt").write_text((ZOO / LENET_TRAIN_TEST).read_text())
    (tmp_path / "bad.prototxt").write_text('layer { name: "p" type: "YoloSeg" }\n')
    files = {p.name for p in tmp_path.iterdir()}
    for solver, words in [
            ('net: "train.prototxt"\nbase_lr: 0.01\nweight_decay: 0.1\nregularization_type: "L3"\n',
             "s.prototxt:4: cannot convert this Caffe solver"),
            ('train_net: "train.prototxt"\ntest_net: "bad.prototxt"\nbase_lr: 0.01\n',
             "bad.prototxt:1: test_net of s.prototxt: cannot convert this Caffe net"),
            ('base_lr: 0.01\nregularization_type: "L3"\nweight_decay: 0.1\nnet_param { '
             'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 } } } }\n',
             "s.prototxt:2: cannot convert this Caffe solver")]:
        (tmp_path / "s.prototxt").write_text(solver)
        with pytest.raises(ConvertError) as e:
            convert(tmp_path / "s.prototxt", tmp_path / "out" / "s.yaml")
        assert words in str(e.value)
        assert {p.name for p in tmp_path.iterdir()} == files | {"s.prototxt"}


def test_solver_type_enum_and_inline_nets(tmp_path):
    src = tmp_path / "s.prototxt"
    src.write_text("solver_type: NESTEROV\nbase_lr: 0.1\nweight_decay: 0.004\nmomentum: 0.9\n"
                   "lr_policy: \"step\"\ngamma: 0.1\nstepsize: 100\nlayer_wise_reduce: false\n"
                   "net_param { name: \"n\" layers { name: \"x\" type: DATA top: \"data\" top: \"label\" "
                   "data_param { source: \"builtin:mnist\" batch_size: 4 scale: 0.5 } } "
                   # a solver's net must compute a loss
                   "layers { name: \"ip\" type: INNER_PRODUCT bottom: \"data\" top: \"ip\" "
                   "inner_product_param { num_output: 10 } } "
                   "layers { name: \"loss\" type: SOFTMAX_LOSS bottom: \"ip\" bottom: \"label\" } }\n")
    result = convert_solver(src, tmp_path / "s.yaml")
    sp = load_solver(tmp_path / "s.yaml")
    assert sp.type == "Nesterov" and sp.solver_type is None and sp.regularization_type == "L2"
    assert any("layer_wise_reduce" in w for w in result.warnings)
    net = load_net(sp.net)
    assert net.layer[0].transform_param.scale == 0.5  # V1 data upgrade moved it
    assert Path(sp.net).name == "s.net.yaml"


def test_consolidated_solver_with_stages(tmp_path):
    name = "BVLC__caffe__examples__mnist__lenet_consolidated_solver.prototxt"
    result = convert(ZOO / name, tmp_path / "solver.yaml")
    sp = load_solver(tmp_path / "solver.yaml")
    assert [s.stage for s in sp.test_state] == [["test-on-test-set"], ["test-on-train-set"]]
    assert sp.test_iter == [100, 600] and sp.random_seed == 1701
    assert len(result.outputs) == 2


# -- the commands ----------------------------------------------------------------------------------
def test_cli_convert_and_export(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["convert", str(TRAINED / "lenet.prototxt"), "-o", str(tmp_path / "l.yaml")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["convert", str(TRAINED / "lenet_iter_10000.caffemodel"),
                             "--model", str(tmp_path / "l.yaml"), "-o", str(tmp_path / "w.npz")])
    assert r.exit_code == 0, r.output
    same_bits(npz(tmp_path / "w.npz"), npz(TRAINED / "lenet_iter_10000_weights.npz"))
    r = runner.invoke(main, ["export", str(tmp_path / "l.yaml"), "--weights", str(tmp_path / "w.npz"),
                             "-o", str(tmp_path / "l.prototxt")])
    assert r.exit_code == 0, r.output
    same_bits(read_caffemodel_arrays(tmp_path / "l.caffemodel"), npz(tmp_path / "w.npz"))
    fork = tmp_path / "fork.prototxt"
    fork.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 4 } } }\n'
                    'layer { name: "eval" type: "YoloSeg" bottom: "x" bottom: "x" top: "l" }\n')
    r = runner.invoke(main, ["convert", str(fork), "-o", str(tmp_path / "a.yaml")])
    assert r.exit_code == 1 and "'eval' has type 'YoloSeg'" in r.output
    assert not (tmp_path / "a.yaml").exists()


# -- deploy nets run forward ----------------------------------------------------------------------
DEPLOY_NETS = deploy_names()


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if any(h in n for h in HEAVY_DEPLOY) else n
    for n in DEPLOY_NETS])
def test_deploy_net_runs_forward_on_random_input(name):
    """Each deploy net of the zoo runs one forward pass (batch 1) and gives finite outputs."""
    text, phase = deploy_yaml(name)
    net = Net(loads_net(text, name), phase, F32, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for layer in net.layers:
        if layer.type_name == "Input":
            for blob in net.tops[net.layers.index(layer)]:
                blob.data[...] = rng.random(blob.shape)
    net.forward()
    for out in net.output_names:
        assert np.isfinite(net.blobs[out].data).all(), out


def test_caffemodel_whose_fork_layer_blobs_do_not_fit_is_one_clear_error(tmp_path):
    """A depthwise convolution's and an SSD Normalize's blobs of the wrong shape: `netspec
    convert`, `netspec test` and `netspec.load` each stop with the blob, both shapes and the
    file."""
    import netspec
    (tmp_path / "net.yaml").write_text(
        "name: f\nlayer:\n"
        "  - {name: data, type: Input, top: data, input_param: {shape: {dim: [1, 4, 8, 8]}}}\n"
        "  - {name: dw, type: DepthwiseConvolution, bottom: data, top: dw, convolution_param: "
        "{num_output: 4, kernel_size: 3, pad: 1, group: 4, weight_filler: {type: xavier}}}\n"
        "  - {name: norm, type: Normalize, bottom: dw, top: norm, norm_param: {across_spatial: "
        "false, channel_shared: false, scale_filler: {type: constant, value: 20}}}\n")
    netspec.load(tmp_path / "net.yaml").save(tmp_path / "w.npz")
    r = CliRunner().invoke(main, ["export", str(tmp_path / "net.yaml"), "--weights",
                                  str(tmp_path / "w.npz"), "-o", str(tmp_path / "net.prototxt")])
    assert r.exit_code == 0, r.output
    P = pb2()
    good = P.NetParameter.FromString((tmp_path / "net.caffemodel").read_bytes())
    for layer, shape, want in (("norm", [3], "(4,)"), ("dw", [4, 4, 3, 3], "(4, 1, 3, 3)")):
        net = P.NetParameter()
        net.CopyFrom(good)
        blob = next(lp for lp in net.layer if lp.name == layer).blobs[0]
        del blob.data[:]
        blob.shape.dim[:] = shape
        blob.data.extend([0.5] * int(np.prod(shape)))
        bad = tmp_path / f"bad_{layer}.caffemodel"
        bad.write_bytes(net.SerializeToString())
        words = f"blob '{layer}/0' has shape {tuple(shape)} in the file but the net expects {want}"
        for args in (["convert", str(bad), "--model", str(tmp_path / "net.yaml"), "-o",
                      str(tmp_path / "x.npz")],
                     ["test", "--model", str(tmp_path / "net.yaml"), "--weights", str(bad),
                      "--iterations", "1"]):
            r = CliRunner().invoke(main, args)
            assert r.exit_code == 1 and words in r.stderr and str(bad) in r.stderr, r.output
            assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output
        with pytest.raises(SnapshotError, match=re.escape(words)):
            netspec.load(tmp_path / "net.yaml", bad)
