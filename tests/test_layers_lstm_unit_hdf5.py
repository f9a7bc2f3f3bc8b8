"""LSTMUnit (netspec/layers/recurrent.py) and HDF5Output (netspec/layers/hdf5_output.py).

* LSTMUnit: forward and backward against Caffe's per-element formulas written here
  (``lstm_unit_layer.cpp``, fractional cont included); float64 gradient checks; one step of
  the LSTM layer (T = 1, exposed state) equals LSTMUnit fed with that step's gate inputs; shape
  and in-place errors; the GPU against the CPU.
* HDF5Output: the datasets "data" and "label" read back with h5py equal the bottoms in Caffe's
  legacy 4-D shapes; a relative file_name is relative to the net file's folder; a second
  forward is a clear error (Caffe stops there); errors for a missing or empty file_name, a
  missing folder, mismatched rows, too many axes; no h5py; convert/export round trip.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import yaml
from gradcheck import check_gradients, make_layer, rand, run_forward

from netspec.backend import Backend, cupy_available, get_backend, to_numpy
from netspec.errors import DataError, NetspecError, ShapeError, SpecError

F32 = Backend(np, np.float32)
F64 = Backend(np, np.float64)


# -- LSTMUnit ----------------------------------------------------------------------------------
UNIT = {"name": "u", "type": "LSTMUnit", "bottom": ["c_prev", "x", "cont"], "top": ["c", "h"]}


def _sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def unit_reference(c_prev, x, cont, dc, dh):
    """Caffe's LSTMUnit Forward_cpu / Backward_cpu, one element at a time: c, h, ∂c_prev, ∂x."""
    _, N, H = c_prev.shape
    c, h, dc_prev, dx = (np.zeros((1, N, H)), np.zeros((1, N, H)), np.zeros((1, N, H)),
                         np.zeros((1, N, 4 * H)))
    for n in range(N):
        for d in range(H):
            X = x[0, n]
            i = _sig(X[d])
            f = 0.0 if cont[0, n] == 0 else cont[0, n] * _sig(X[H + d])
            o = _sig(X[2 * H + d])
            g = math.tanh(X[3 * H + d])
            c[0, n, d] = f * c_prev[0, n, d] + i * g
            tanh_c = math.tanh(c[0, n, d])
            h[0, n, d] = o * tanh_c
            c_term = dc[0, n, d] + dh[0, n, d] * o * (1 - tanh_c * tanh_c)
            dc_prev[0, n, d] = c_term * f
            dx[0, n, d] = c_term * g * i * (1 - i)
            dx[0, n, H + d] = c_term * c_prev[0, n, d] * f * (1 - f)
            dx[0, n, 2 * H + d] = dh[0, n, d] * tanh_c * o * (1 - o)
            dx[0, n, 3 * H + d] = c_term * i * (1 - g * g)
    return c, h, dc_prev, dx


def unit_bottoms(N, H, cont_values=(1.0, 0.0, 1.0, 0.5), seed=0):
    cont = np.array([[cont_values[n % len(cont_values)] for n in range(N)]])
    return [rand((1, N, H), seed), 2 * rand((1, N, 4 * H), seed + 1), cont]


def unit_forward_backward(bottoms, dc, dh, backend=F64, prop=(True, True, False)):
    xp = backend.xp
    layer, tops = make_layer(UNIT, [b.shape for b in bottoms], backend=backend)
    bottom, top = run_forward(layer, [xp.asarray(b, dtype=backend.dtype) for b in bottoms],
                              tops, xp)
    top[0].diff = xp.asarray(dc, dtype=backend.dtype)
    top[1].diff = xp.asarray(dh, dtype=backend.dtype)
    layer.backward(top, list(prop), bottom)
    return ([np.asarray(to_numpy(t.data)) for t in top],
            [np.asarray(to_numpy(b.diff)) for b in bottom])


@pytest.mark.parametrize("N,H", [(1, 1), (4, 3), (5, 7)])
def test_lstm_unit_matches_caffes_formulas(N, H):
    bottoms = unit_bottoms(N, H)
    dc, dh = rand((1, N, H), 7), rand((1, N, H), 8)
    (c, h), (dc_prev, dx, dcont) = unit_forward_backward(bottoms, dc, dh)
    want = unit_reference(*bottoms, dc, dh)
    for got, expected in zip((c, h, dc_prev, dx), want):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    assert not dcont.any()  # never a gradient to cont


def test_lstm_unit_shapes_and_arity():
    layer, tops = make_layer(UNIT, [(1, 4, 3), (1, 4, 12), (1, 4)])
    assert tops == [(1, 4, 3), (1, 4, 3)] and layer.blobs == [] and layer.no_grad_bottoms == (2,)


@pytest.mark.parametrize("N,H,cont", [(3, 2, (1.0,)), (4, 3, (1.0, 0.0)), (6, 1, (0.0,))])
def test_lstm_unit_gradients(N, H, cont):
    bottoms = unit_bottoms(N, H, cont, seed=3)
    layer, tops = make_layer(UNIT, [b.shape for b in bottoms])
    check_gradients(layer, bottoms, tops)


def test_lstm_unit_propagates_to_each_bottom_alone():
    bottoms = unit_bottoms(3, 2)
    dc, dh = rand((1, 3, 2), 7), rand((1, 3, 2), 8)
    _, (full_c, full_x, _) = unit_forward_backward(bottoms, dc, dh)
    _, (only_c, x_diff, _) = unit_forward_backward(bottoms, dc, dh, prop=(True, False, False))
    np.testing.assert_array_equal(only_c, full_c)
    assert not x_diff.any()
    _, (c_diff, only_x, _) = unit_forward_backward(bottoms, dc, dh, prop=(False, True, False))
    np.testing.assert_array_equal(only_x, full_x)
    assert not c_diff.any()


def test_lstm_unit_is_one_step_of_lstm():
    """LSTM with T = 1 and exposed h_0, c_0: its h_T, c_T are LSTMUnit's h, c for the gate
    inputs W_xc x + b_c + W_hc (cont·h_0); its gate gradient (read from ∂b_c, ∂W_xc) is
    LSTMUnit's ∂x."""
    N, H, I = 4, 3, 5
    x = rand((1, N, I), 1)
    cont = np.array([[1.0, 0.0, 1.0, 1.0]])
    h0, c0 = rand((1, N, H), 2), rand((1, N, H), 3)
    spec = {"name": "l", "type": "LSTM", "bottom": ["x", "cont", "h_0", "c_0"],
            "top": ["y", "h_T", "c_T"],
            "recurrent_param": {"num_output": H, "expose_hidden": True,
                                "weight_filler": {"type": "gaussian", "std": 0.6},
                                "bias_filler": {"type": "gaussian", "std": 0.6}}}
    lstm, tops = make_layer(spec, [x.shape, cont.shape, h0.shape, c0.shape], seed=4)
    bottom, top = run_forward(lstm, [x, cont, h0, c0], tops)
    dh = rand((1, N, H), 9)
    top[0].diff = dh.copy()
    lstm.backward(top, [True, False, False, False], bottom)
    W_xc, b_c, W_hc = (p.data for p in lstm.blobs)
    gate_in = (x[0] @ W_xc.T + b_c + (cont[0][:, None] * h0[0]) @ W_hc.T)[None]
    (c, h), (_, dx, _) = unit_forward_backward([c0, gate_in, cont], np.zeros((1, N, H)), dh)
    np.testing.assert_allclose(top[0].data, h, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(top[1].data, h, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(top[2].data, c, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(lstm.blobs[1].diff, dx[0].sum(axis=0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(lstm.blobs[0].diff, dx[0].T @ x[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("shapes,match", [
    ([(2, 4, 3), (1, 4, 12), (1, 4)], "c_prev"),
    ([(1, 4, 3, 1), (1, 4, 12), (1, 4)], "c_prev"),
    ([(1, 4, 3), (1, 4, 9), (1, 4)], "4H"),
    ([(1, 4, 3), (1, 3, 12), (1, 4)], "4H"),
    ([(1, 4, 3), (1, 4, 12), (1, 4, 1)], "cont"),
    ([(1, 4, 3), (1, 4, 12), (4,)], "cont"),
])
def test_lstm_unit_shape_errors(shapes, match):
    with pytest.raises(ShapeError, match=match):
        make_layer(UNIT, shapes)


def test_lstm_unit_arity_and_in_place_errors():
    with pytest.raises(SpecError, match="in place"):
        make_layer({**UNIT, "top": ["c_prev", "h"]}, [(1, 4, 3), (1, 4, 12), (1, 4)])
    with pytest.raises(SpecError, match="exactly 3"):
        make_layer({**UNIT, "bottom": ["c_prev", "x"]}, [(1, 4, 3), (1, 4, 12)])
    with pytest.raises(SpecError, match="exactly 2"):
        make_layer({**UNIT, "top": ["c"]}, [(1, 4, 3), (1, 4, 12), (1, 4)])
    with pytest.raises(SpecError, match="does not read"):
        from netspec.net import Net
        from netspec.spec import parse_net
        Net(parse_net({"name": "n", "layer": [
            {"name": "in", "type": "Input", "top": ["a", "b", "k"],
             "input_param": {"shape": [{"dim": [1, 2, 3]}, {"dim": [1, 2, 12]}, {"dim": [1, 2]}]}},
            {**UNIT, "bottom": ["a", "b", "k"], "recurrent_param": {"num_output": 3}}]}),
            "TRAIN", F64)


def test_lstm_unit_in_a_net_float32():
    """Built from YAML, float32 agrees with the float64 reference; cont gets no gradient."""
    from netspec.net import Net
    from netspec.spec import parse_net

    N, H = 3, 4
    net = Net(parse_net({"name": "n", "force_backward": True, "layer": [
        {"name": "in", "type": "Input", "top": ["c_prev", "x", "cont"],
         "input_param": {"shape": [{"dim": [1, N, H]}, {"dim": [1, N, 4 * H]}, {"dim": [1, N]}]}},
        UNIT,
        {"name": "loss", "type": "EuclideanLoss", "bottom": ["h", "c"], "top": "loss"}]}),
        "TRAIN", F32)
    bottoms = unit_bottoms(N, H, (1.0, 0.0, 1.0))
    for name, b in zip(("c_prev", "x", "cont"), bottoms):
        net.blobs[name].data[...] = b
    net.forward_backward()
    c, h, _, _ = unit_reference(*bottoms, np.zeros((1, N, H)), np.zeros((1, N, H)))
    np.testing.assert_allclose(net.blobs["c"].data, c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.blobs["h"].data, h, rtol=1e-5, atol=1e-6)
    assert net.blobs["x"].diff.any() and not net.blobs["cont"].diff.any()


@pytest.mark.gpu
def test_lstm_unit_gpu_matches_cpu():
    if not cupy_available():
        pytest.skip("needs CuPy and a CUDA device")
    gpu = get_backend(gpu=True)
    N, H = 6, 5
    bottoms = [b.astype(np.float32) for b in unit_bottoms(N, H)]
    dc, dh = rand((1, N, H), 7), rand((1, N, H), 8)
    want = unit_forward_backward(bottoms, dc, dh, backend=F32)
    got = unit_forward_backward(bottoms, dc, dh, backend=gpu)
    for w_list, g_list in zip(want, got):
        for w, g in zip(w_list, g_list):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


# -- HDF5Output --------------------------------------------------------------------------------
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
