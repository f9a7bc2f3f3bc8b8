"""``netspec validate/summary --input-shape/--no-data``: a converted net whose LMDB, HDF5 or
image list is not on this machine is built with Input layers standing in for its data layers;
its shapes then equal those of Caffe's own deploy net of the same model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from netspec.cli import main
from netspec.spec import loads_net
from netspec.spec.inputs import stand_in_inputs

pytest.importorskip("google.protobuf", reason="converting .prototxt files needs protobuf")

ZOO = Path(__file__).resolve().parent / "golden" / "caffe" / "zoo"
TRAIN_VAL = ZOO / "BVLC__caffe__models__bvlc_reference_caffenet__train_val.prototxt"
DEPLOY = ZOO / "BVLC__caffe__models__bvlc_reference_caffenet__deploy.prototxt"
IMAGE_LIST = ZOO / "BVLC__caffe__examples__feature_extraction__imagenet_val.prototxt"
HDF5 = ZOO / "BVLC__caffe__examples__hdf5_classification__train_val.prototxt"


def cli(*args):
    r = CliRunner().invoke(main, [*map(str, args)])
    return r.exit_code, r.stdout, r.stderr


def converted(src: Path, folder: Path) -> Path:
    """``netspec convert`` of a zoo .prototxt into ``folder`` (where its data is absent)."""
    local = folder / src.name
    shutil.copy(src, local)
    code, _, err = cli("convert", local)
    assert code == 0, err
    return local.with_suffix(".yaml")


def top_shapes(info: dict) -> dict[str, list]:
    return {layer["name"]: [t["shape"] for t in layer["tops"]] for layer in info["layers"]}


@pytest.fixture(scope="module")
def caffenet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("caffenet")
    return converted(TRAIN_VAL, folder), converted(DEPLOY, folder)


def test_missing_lmdb_fails_without_a_stand_in(caffenet):
    train_val, _ = caffenet
    for command in ("validate", "summary"):
        code, _, err = cli(command, train_val)
        assert code == 1 and "LMDB not found" in err and "Traceback" not in err


def test_summary_with_the_deploy_input_shape_equals_the_deploy_net(caffenet):
    train_val, deploy = caffenet
    code, out, err = cli("summary", "--json", "--phase", "TEST", "--input-shape",
                         "data=10,3,227,227", train_val)
    assert code == 0, err
    stood = json.loads(out)
    code, out, err = cli("summary", "--json", "--phase", "TEST", deploy)
    assert code == 0, err
    want = json.loads(out)
    got, ref = top_shapes(stood), top_shapes(want)
    common = [n for n in ref if n in got and n != "data"]   # data: the stand-in adds label
    assert {"conv1", "pool5", "fc6", "fc8"} <= set(common) and len(common) >= 20
    for name in common:
        assert got[name] == ref[name], name
    assert stood["totals"]["params"] == want["totals"]["params"] == 60_965_224
    assert got["data"] == [[10, 3, 227, 227], [10]]
    assert "stands in as an Input layer" in stood["notes"][0]


def test_no_data_takes_the_declared_sizes_and_says_what_it_assumed(caffenet):
    train_val, deploy = caffenet
    code, out, err = cli("summary", "--json", "--phase", "TEST", "--no-data", train_val)
    assert code == 0, err
    info = json.loads(out)
    ref = top_shapes(json.loads(cli("summary", "--json", "--phase", "TEST", deploy)[1]))
    got = top_shapes(info)
    assert got["data"] == [[50, 3, 227, 227], [50]]       # TEST batch_size 50, crop_size 227
    for name in ("conv1", "norm2", "pool5", "fc7", "fc8"):
        assert [[50, *s[1:]] for s in ref[name]] == got[name], name
    assert any("3 channels assumed" in n for n in info["notes"])
    code, out, err = cli("validate", "--no-data", train_val)
    assert code == 0, err
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert len(notes) == 2                                   # the TRAIN and the TEST data layer
    assert "(256, 3, 227, 227)" in notes[0] and "(50, 3, 227, 227)" in notes[1]
    assert "is valid" in out


def test_image_list_and_hdf5_data_layers(tmp_path):
    code, out, err = cli("summary", "--json", "--phase", "TEST", "--no-data",
                         converted(IMAGE_LIST, tmp_path))
    assert code == 0, err
    info = json.loads(out)
    assert top_shapes(info)["data"] == [[50, 3, 227, 227], [50]]  # is_color, crop_size 227
    assert "assumed" not in info["notes"][0]
    hdf5 = converted(HDF5, tmp_path)
    code, _, err = cli("validate", "--no-data", hdf5)
    assert code == 1 and "--input-shape data=N,C,H,W" in err and "HDF5Data" in err
    assert f"{hdf5}:" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli("summary", "--json", "--input-shape", "data=10,4", hdf5)
    assert code == 0, err
    assert top_shapes(json.loads(out))["data"] == [[10, 4], [10]]


def test_bad_input_shapes(caffenet):
    train_val, _ = caffenet
    code, _, err = cli("summary", "--input-shape", "dta=1,3,227,227", train_val)
    assert code == 1 and "dta: not a top of a data or Input layer" in err and "data, label" in err
    code, _, err = cli("validate", "--input-shape", "data=1,3,x", train_val)
    assert code == 2 and "TOP=N,C,H,W" in err


NET = """
name: tiny
layer:
  - {name: mnist, type: Data, top: [data, label], include: {phase: TRAIN},
     data_param: {source: "builtin:mnist", batch_size: 64}}
  - {name: in, type: Input, top: extra, input_param: {shape: {dim: [2, 3]}}}
  - {name: ip, type: InnerProduct, bottom: data, top: ip, inner_product_param: {num_output: 10}}
"""


def test_python_stand_ins_keep_the_rest_of_the_net():
    param = loads_net(NET)
    out, notes = stand_in_inputs(param, {"extra": (5, 3)}, declared=True)
    mnist = out.layer[0]
    assert mnist.type == "Input" and mnist.data_param is None
    assert [list(s.dim) for s in mnist.input_param.shape] == [[64, 1, 28, 28], [64]]
    assert mnist.include == param.layer[0].include and mnist.top == ["data", "label"]
    assert [list(s.dim) for s in out.layer[1].input_param.shape] == [[5, 3]]
    assert out.layer[2] == param.layer[2]
    assert param.layer[0].type == "Data"                 # the original is unchanged
    assert len(notes) == 1 and "assumed" not in notes[0]
    same, none = stand_in_inputs(param)
    assert same.layer[0].type == "Data" and none == []


def test_deeplab_image_seg_data_stands_in_with_its_label_image_and_data_dim():
    """DeepLab v2's ImageSegData: --no-data gives data (N, C, crop), label (N, 1, crop) and
    data_dim (N, 1, 1, 2) from batch_size, is_color and crop_height × crop_width; with
    --input-shape for data only, label and data_dim follow its size."""
    param = loads_net("""
layer:
  - name: data
    type: ImageSegData
    top: [data, label, data_dim]
    transform_param: {crop_height: 33, crop_width: 41, mean_value: [104, 117, 123]}
    image_data_param: {source: missing.txt, batch_size: 4, is_color: false, label_type: PIXEL}
  - {name: silence, type: Silence, bottom: [data, label, data_dim]}
""", "<deeplab>")
    out, notes = stand_in_inputs(param, declared=True)
    shapes = [list(s.dim) for s in out.layer[0].input_param.shape]
    assert out.layer[0].type == "Input" and shapes == [[4, 1, 33, 41], [4, 1, 33, 41], [4, 1, 1, 2]]
    assert "ImageSegData" in notes[0] and "assumed" not in notes[0]
    out, _ = stand_in_inputs(param, {"data": (2, 3, 9, 7)})
    shapes = [list(s.dim) for s in out.layer[0].input_param.shape]
    assert shapes == [[2, 3, 9, 7], [2, 1, 9, 7], [2, 1, 1, 2]]
