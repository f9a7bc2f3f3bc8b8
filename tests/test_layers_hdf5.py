"""HDF5 layers (netspec/layers/hdf5.py): HDF5Data, HDF5Output. The tests need h5py (skipped
without it), except the ones checking the error without it.

* HDF5Data: files read in list order and wrapped, shuffling, resuming from a state dict,
  errors; a solver run equal to Caffe's SGD_iter_size2_hdf5 (tests/golden/solvers/).
* HDF5Output: the datasets "data" and "label" read back with h5py equal the bottoms in Caffe's
  legacy 4-D shapes; a relative file_name is relative to the net file's folder; a second
  forward is a clear error (Caffe stops there); errors for a missing or empty file_name, a
  missing folder, mismatched rows, too many axes; no h5py; convert/export round trip.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from gradcheck import F64, make_layer, rand, run_forward
from layer_cases import F32, GOLDEN

from netspec.errors import DataError, NetspecError, ShapeError, SpecError
from netspec.net import Net
from netspec.spec import load_net, parse_net

SOLVERS = Path(__file__).parent / "golden" / "solvers"


# -- HDF5Data -------------------------------------------------------------------------------------

def _write_h5(path, **arrays):
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f[k] = v


def _hdf5_net(folder: Path, source: str, batch: int, shuffle=False, tops=("data", "label")):
    spec = {"name": "h", "layer": [
        {"name": "h5", "type": "HDF5Data", "top": list(tops),
         "hdf5_data_param": {"source": source, "batch_size": batch, "shuffle": shuffle}},
        {"name": "sil", "type": "Silence", "bottom": list(tops)},
    ]}
    path = folder / "net.yaml"
    path.write_text(yaml.safe_dump(spec))
    return Net(load_net(path), "TRAIN", F32, np.random.default_rng(0))


def test_hdf5_reads_files_in_order_and_wraps(tmp_path):
    a = np.arange(5 * 2, dtype=np.float64).reshape(5, 2)
    b = 100 + np.arange(3 * 2, dtype=np.int32).reshape(3, 2)
    _write_h5(tmp_path / "a.h5", data=a, label=np.arange(5))
    (tmp_path / "sub").mkdir()
    _write_h5(tmp_path / "sub" / "b.h5", data=b, label=np.arange(3) + 5)
    (tmp_path / "list.txt").write_text("a.h5\n  sub/b.h5 \n")
    net = _hdf5_net(tmp_path, "list.txt", 3)
    assert net.blobs["data"].shape == (3, 2) and net.blobs["label"].shape == (3,)
    labels_seen = []
    for _ in range(4):
        net.forward()
        labels_seen.append(net.blobs["label"].data.copy())
    np.testing.assert_array_equal(np.concatenate(labels_seen), [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3])
    np.testing.assert_array_equal(net.blobs["data"].data, np.vstack([a[1:4]]))


def test_hdf5_shuffle_visits_every_row_each_pass(tmp_path):
    _write_h5(tmp_path / "a.h5", data=np.arange(6.0)[:, None], label=np.arange(6))
    _write_h5(tmp_path / "b.h5", data=np.arange(6.0, 10)[:, None], label=np.arange(6, 10))
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'a.h5'}\n{tmp_path / 'b.h5'}\n")
    net = _hdf5_net(tmp_path, "list.txt", 5, shuffle=True)
    seen = []
    for _ in range(4):
        net.forward()
        seen.extend(net.blobs["label"].data.tolist())
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert seen[:10] != list(range(10))
    np.testing.assert_array_equal(net.blobs["data"].data[:, 0], net.blobs["label"].data)


def test_hdf5_state_dict_resumes(tmp_path):
    _write_h5(tmp_path / "a.h5", data=np.arange(7.0)[:, None], label=np.arange(7))
    _write_h5(tmp_path / "b.h5", data=np.arange(7.0, 11)[:, None], label=np.arange(7, 11))
    (tmp_path / "list.txt").write_text("a.h5 b.h5")
    net = _hdf5_net(tmp_path, "list.txt", 3, shuffle=True)
    for _ in range(3):
        net.forward()
    state = {k: np.asarray(v) for k, v in net.layer_by_name("h5").state_dict().items()}
    rng_state = net.rng.bit_generator.state      # the solver snapshots its generator too
    expect = []
    for _ in range(3):
        net.forward()
        expect.append(net.blobs["label"].data.copy())
    other = _hdf5_net(tmp_path, "list.txt", 3, shuffle=True)
    other.layer_by_name("h5").load_state_dict(state)
    other.rng.bit_generator.state = rng_state
    for e in expect:
        other.forward()
        np.testing.assert_array_equal(other.blobs["label"].data, e)


def test_hdf5_errors(tmp_path):
    _write_h5(tmp_path / "a.h5", data=np.zeros((4, 2)), label=np.zeros(3))
    (tmp_path / "list.txt").write_text("a.h5")
    with pytest.raises(DataError, match="differ in rows"):
        _hdf5_net(tmp_path, "list.txt", 2)
    _write_h5(tmp_path / "b.h5", data=np.zeros((4, 2)))
    (tmp_path / "list.txt").write_text("b.h5")
    with pytest.raises(DataError, match="no dataset 'label'"):
        _hdf5_net(tmp_path, "list.txt", 2)
    _write_h5(tmp_path / "c.h5", data=np.zeros((4, 3)))
    (tmp_path / "list.txt").write_text("b.h5 c.h5")
    with pytest.raises(DataError, match="fixed shapes"):
        _hdf5_net(tmp_path, "list.txt", 2, tops=("data",))
    with pytest.raises(DataError, match="failed to open source"):
        _hdf5_net(tmp_path, "missing.txt", 2)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(DataError, match="at least 1"):
        _hdf5_net(tmp_path, "empty.txt", 2)
    (tmp_path / "list.txt").write_text("nope.h5")
    with pytest.raises(DataError, match="cannot open"):
        _hdf5_net(tmp_path, "list.txt", 2)
    with pytest.raises(SpecError, match="transform"):
        make_layer({"type": "HDF5Data", "top": "data", "transform_param": {"scale": 2},
                    "hdf5_data_param": {"source": "list.txt", "batch_size": 2}}, [])


def test_hdf5_without_h5py_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(DataError, match="pip install h5py"):
        make_layer({"type": "HDF5Data", "top": "data",
                    "hdf5_data_param": {"source": "x.txt", "batch_size": 2}}, [])


def test_hdf5_solver_matches_caffe_iter_size_2():
    """Caffe's SGD_iter_size2_hdf5 run: iter_size 2 over HDF5Data rows in file order."""
    pytest.importorskip("h5py")
    from netspec.log import CaffeLog
    from netspec.solvers import Solver
    from netspec.spec.solver import SolverParameter

    def ip(name, bottom, n):
        return {"name": name, "type": "InnerProduct", "bottom": bottom, "top": name,
                "param": [{"lr_mult": 1, "decay_mult": 1}, {"lr_mult": 2, "decay_mult": 0}],
                "inner_product_param": {"num_output": n}}

    net_param = parse_net({"name": "tiny", "layer": [
        {"name": "data", "type": "HDF5Data", "top": ["data", "target"],
         "hdf5_data_param": {"source": str(GOLDEN / "hdf5_iter_size_h5.txt"), "batch_size": 4}},
        ip("ip1", "data", 5), {"name": "relu1", "type": "ReLU", "bottom": "ip1", "top": "ip1"},
        ip("ip2", "ip1", 3),
        {"name": "loss", "type": "EuclideanLoss", "bottom": ["ip2", "target"], "top": "loss"},
    ]})
    sp = SolverParameter.model_validate({
        "net": "unused.yaml", "type": "SGD", "base_lr": 0.1, "momentum": 0.9,
        "weight_decay": 0.01, "regularization_type": "L2", "lr_policy": "fixed", "iter_size": 2,
        "max_iter": 4, "random_seed": 1})
    solver = Solver(sp, backend=F32, net_param=net_param, log=CaffeLog(quiet=True))
    init = np.load(SOLVERS / "init_plain.npz")
    for key, p in solver.net.named_params().items():
        p.data[...] = init[key]
    expected = np.load(SOLVERS / "SGD_iter_size2_hdf5.npz")
    for k in range(1, 5):
        solver.step_once()
        for key, p in solver.net.named_params().items():
            np.testing.assert_allclose(p.data, expected[f"step{k}/{key}"], rtol=1e-5, atol=1e-7,
                                       err_msg=f"{key} after step {k}")
        # the last sub-batch's loss, as Caffe recorded it
        assert float(solver.net.blobs["loss"].data) == pytest.approx(float(expected["loss"][k - 1]),
                                                                       rel=1e-5)


# -- HDF5Output -----------------------------------------------------------------------------------

def h5py_or_skip():
    return pytest.importorskip("h5py", reason="h5py is not installed (pip install h5py)")


def out_spec(file_name, **extra):
    return {"name": "out", "type": "HDF5Output", "bottom": ["data", "label"],
            "hdf5_output_param": {"file_name": str(file_name)}, **extra}


def read_h5(path):
    h5py = h5py_or_skip()
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}


@pytest.mark.parametrize("backend", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("data_shape,label_shape,data4,label4", [
    ((5, 8, 5, 5), (5,), (5, 8, 5, 5), (5, 1, 1, 1)),     # Caffe's test: sample_data.h5 shapes
    ((3, 4), (3, 2), (3, 4, 1, 1), (3, 2, 1, 1)),
    ((2, 3, 4), (2, 1), (2, 3, 4, 1), (2, 1, 1, 1)),
])
def test_hdf5_output_writes_the_bottoms(tmp_path, backend, data_shape, label_shape, data4, label4):
    h5py_or_skip()
    path = tmp_path / "out.h5"
    layer, tops = make_layer(out_spec(path), [data_shape, label_shape], backend=backend)
    assert tops == [] and not layer.has_backward
    assert not path.exists()  # created at the first forward
    data, label = rand(data_shape, 1), np.arange(label_shape[0] * int(np.prod(label_shape[1:])))
    label = label.reshape(label_shape)
    bottom, _ = run_forward(layer, [data.astype(backend.dtype), label.astype(backend.dtype)], [])
    got = read_h5(path)
    assert set(got) == {"data", "label"}
    assert got["data"].shape == data4 and got["label"].shape == label4
    assert got["data"].dtype == backend.dtype and got["label"].dtype == backend.dtype
    np.testing.assert_array_equal(got["data"].ravel(), data.astype(backend.dtype).ravel())
    np.testing.assert_array_equal(got["label"].ravel(), label.astype(backend.dtype).ravel())
    layer.backward([], [True, True], bottom)  # Caffe's Backward does nothing
    assert not bottom[0].diff.any() and not bottom[1].diff.any()


def _net_file(folder, file_name, n=4):
    spec = {"name": "h", "layer": [
        {"name": "in", "type": "Input", "top": ["data", "label"],
         "input_param": {"shape": [{"dim": [n, 3]}, {"dim": [n]}]}},
        out_spec(file_name)]}
    path = folder / "net.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_hdf5_output_in_a_net_relative_name_and_second_forward(tmp_path, monkeypatch):
    """file_name is relative to the net file's folder; the file holds one batch, as in Caffe,
    and a second forward is an error naming the layer and the file."""
    from netspec.net import Net
    from netspec.spec import load_net

    h5py_or_skip()
    (tmp_path / "nets").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    net = Net(load_net(_net_file(tmp_path / "nets", "o.h5")), "TEST", F32)
    net.blobs["data"].data[...] = rand((4, 3), 2)
    net.blobs["label"].data[...] = np.arange(4)
    first = net.blobs["data"].data.copy()
    net.forward()
    path = tmp_path / "nets" / "o.h5"
    got = read_h5(path)
    np.testing.assert_array_equal(got["data"][:, :, 0, 0], first)
    np.testing.assert_array_equal(got["label"].ravel(), np.arange(4))
    net.blobs["data"].data[...] = 7
    with pytest.raises(DataError, match="one batch per file") as e:
        net.forward()
    assert "'out'" in str(e.value) and str(path) in str(e.value)
    np.testing.assert_array_equal(read_h5(path)["data"][:, :, 0, 0], first)  # the first batch


def test_hdf5_output_truncates_an_existing_file(tmp_path):
    h5py = h5py_or_skip()
    path = tmp_path / "out.h5"
    with h5py.File(path, "w") as f:
        f["old"] = np.ones(3)
    layer, _ = make_layer(out_spec(path), [(2, 1), (2, 1)])
    run_forward(layer, [np.zeros((2, 1)), np.ones((2, 1))], [])
    assert set(read_h5(path)) == {"data", "label"}


def test_hdf5_output_errors(tmp_path):
    from netspec.spec import loads_net

    h5py_or_skip()
    with pytest.raises(NetspecError, match="needs a 'hdf5_output_param' block"):
        make_layer({"type": "HDF5Output", "bottom": ["data", "label"]}, [(2, 3), (2,)])
    with pytest.raises(SpecError, match="file_name is empty"):
        make_layer(out_spec(""), [(2, 3), (2,)])
    with pytest.raises(NetspecError, match="file_name"):
        loads_net("name: n\nlayer:\n  - {name: o, type: HDF5Output, bottom: [a, b],\n"
                  "     hdf5_output_param: {}}\n")
    with pytest.raises(NetspecError, match="file_nam"):
        loads_net("name: n\nlayer:\n  - {name: o, type: HDF5Output, bottom: [a, b],\n"
                  "     hdf5_output_param: {file_nam: x.h5}}\n")
    with pytest.raises(DataError, match="folder does not exist"):
        make_layer(out_spec(tmp_path / "no" / "out.h5"), [(2, 3), (2,)])
    with pytest.raises(ShapeError, match="same batch size"):
        make_layer(out_spec(tmp_path / "o.h5"), [(2, 3), (3,)])
    with pytest.raises(ShapeError, match="at most 4 axes"):
        make_layer(out_spec(tmp_path / "o.h5"), [(2, 3, 1, 1, 1), (2,)])
    with pytest.raises(SpecError, match="exactly 2"):
        make_layer({**out_spec(tmp_path / "o.h5"), "bottom": ["data"]}, [(2, 3)])
    with pytest.raises(SpecError, match="exactly 0"):
        make_layer({**out_spec(tmp_path / "o.h5"), "top": ["t"]}, [(2, 3), (2,)])


def test_hdf5_output_without_h5py_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(DataError, match="pip install h5py"):
        make_layer(out_spec(tmp_path / "o.h5"), [(2, 3), (2,)])


PROTOTXT = """name: "h5out"
layer { name: "in" type: "Input" top: "c0" top: "x" top: "cont" top: "label"
  input_param { shape { dim: 1 dim: 2 dim: 3 } shape { dim: 1 dim: 2 dim: 12 }
                shape { dim: 1 dim: 2 } shape { dim: 1 dim: 2 } } }
layer { name: "unit" type: "LSTMUnit" bottom: "c0" bottom: "x" bottom: "cont"
  top: "c1" top: "h1" }
layer { name: "out" type: "HDF5Output" bottom: "h1" bottom: "label"
  hdf5_output_param { file_name: "out.h5" } }
layer { name: "sil" type: "Silence" bottom: "c1" }
"""


V1_PROTOTXT = """name: "v1"
input: "data" input_dim: 2 input_dim: 3 input_dim: 1 input_dim: 1
input: "label" input_dim: 2 input_dim: 1 input_dim: 1 input_dim: 1
layers { name: "out" type: HDF5_OUTPUT bottom: "data" bottom: "label"
  hdf5_output_param { file_name: "v1.h5" } }
"""


def test_convert_and_export_round_trip(tmp_path):
    """prototxt -> YAML (builds, runs, writes the file) -> prototxt: the same NetParameter;
    a V1 HDF5_OUTPUT layer converts too."""
    pytest.importorskip("google.protobuf", reason="protobuf is not installed")
    h5py_or_skip()
    from click.testing import CliRunner

    from netspec.caffe.prototxt import read
    from netspec.cli import main
    from netspec.net import Net
    from netspec.spec import load_net

    src = tmp_path / "net.prototxt"
    src.write_text(PROTOTXT)
    out = tmp_path / "net.yaml"
    r = CliRunner().invoke(main, ["convert", str(src), "-o", str(out)])
    assert r.exit_code == 0, r.output
    layers = load_net(out).layer
    assert [lp.type for lp in layers] == ["Input", "LSTMUnit", "HDF5Output", "Silence"]
    assert layers[2].hdf5_output_param.file_name == "out.h5"
    net = Net(load_net(out), "TEST", F32)
    assert net.blobs["h1"].shape == (1, 2, 3)
    net.forward()
    assert read_h5(tmp_path / "out.h5")["data"].shape == (1, 2, 3, 1)
    r = CliRunner().invoke(main, ["export", str(out), "-o", str(tmp_path / "back.prototxt")])
    assert r.exit_code == 0, r.output
    assert read(tmp_path / "back.prototxt")[1] == read(src)[1]

    v1 = tmp_path / "v1.prototxt"
    v1.write_text(V1_PROTOTXT)
    r = CliRunner().invoke(main, ["convert", str(v1), "-o", str(tmp_path / "v1.yaml")])
    assert r.exit_code == 0, r.output
    lp = load_net(tmp_path / "v1.yaml").layer[-1]
    assert (lp.type, lp.hdf5_output_param.file_name) == ("HDF5Output", "v1.h5")
