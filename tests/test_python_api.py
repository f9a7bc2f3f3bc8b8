"""netspec.load / Model and netspec.solver / Training, against closed forms, NumPy and the
command line's own functions (workflows.train) on the same files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import netspec
from netspec.data.mnist import load_mnist
from netspec.errors import NetspecError, ShapeError
from netspec.workflows import train

ROOT = Path(__file__).resolve().parents[1]
TRAINED = ROOT / "tests" / "golden" / "caffe" / "lenet_trained"

LINEAR = """
name: linear
force_backward: true
layer:
  - {name: x, type: Input, top: x, input_param: {shape: [{dim: [4, 3]}]}}
  - name: ip
    type: InnerProduct
    bottom: x
    top: y
    inner_product_param:
      num_output: 2
      weight_filler: {type: gaussian, std: 0.5}
      bias_filler: {type: gaussian, std: 0.5}
"""

# linear regression fed from Python: Input blobs written before each step
REGRESSION = """
name: regression
layer:
  - {name: x, type: Input, top: [x, t], input_param: {shape: [{dim: [8, 3]}, {dim: [8, 1]}]}}
  - name: ip
    type: InnerProduct
    bottom: x
    top: y
    inner_product_param:
      num_output: 1
      weight_filler: {type: gaussian, std: 0.5}
      bias_filler: {type: constant, value: 0.1}
  - {name: loss, type: EuclideanLoss, bottom: [y, t], top: loss}
"""

MEMORY = """
name: memory
layer:
  - name: mem
    type: MemoryData
    top: [x, t]
    memory_data_param: {batch_size: 8, channels: 3, height: 1, width: 1}
  - {name: flat, type: Reshape, bottom: t, top: t2, reshape_param: {shape: {dim: [8, 1]}}}
  - name: ip
    type: InnerProduct
    bottom: x
    top: y
    inner_product_param:
      num_output: 1
      weight_filler: {type: gaussian, std: 0.5}
      bias_filler: {type: constant, value: 0.1}
  - {name: loss, type: EuclideanLoss, bottom: [y, t2], top: loss}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def solver_file(folder: Path, net: str, extra: str = "") -> Path:
    return write(folder, "solver.yaml", f"net: {net}\nbase_lr: 0.1\nlr_policy: fixed\n"
                 f"max_iter: 100\nrandom_seed: 3\nsnapshot_after_train: false\n{extra}")


def test_load_prototxt_and_caffemodel_gives_caffe_probabilities():
    model = netspec.load(TRAINED / "lenet.prototxt", TRAINED / "lenet_iter_10000.caffemodel",
                         batch_size=16)
    assert model.inputs == ["data"] and model.outputs == ["prob"]
    assert model.blobs["data"].shape == (16, 1, 28, 28)
    images, labels = load_mnist("test")
    out = model.forward(data=images[:16].astype(np.float32) * np.float32(0.00390625))
    gold = np.load(TRAINED / "first16.npz")  # real Caffe's prob for these images
    np.testing.assert_allclose(out["prob"], gold["prob"], rtol=0, atol=1e-5)
    # the result is a copy: the next forward does not change it
    kept = out["prob"].copy()
    model.forward(data=np.zeros((16, 1, 28, 28), np.float32))
    np.testing.assert_array_equal(out["prob"], kept)


def test_forward_from_to_and_extra_blobs():
    model = netspec.load(TRAINED / "lenet.prototxt", TRAINED / "lenet_iter_10000.caffemodel",
                         batch_size=2)
    images, _ = load_mnist("test")
    full = model.forward(data=images[:2] / 256.0, blobs=["ip2"])
    assert set(full) == {"prob", "ip2"}
    assert set(model.forward(end="pool1")) == {"pool1"}
    # softmax of ip2 by NumPy: the tail of the net alone
    ip2 = full["ip2"].astype(np.float64)
    e = np.exp(ip2 - ip2.max(1, keepdims=True))
    np.testing.assert_allclose(model.forward(start="prob")["prob"], e / e.sum(1, keepdims=True),
                               rtol=1e-5, atol=1e-7)


def test_backward_is_the_closed_form_of_inner_product(tmp_path):
    model = netspec.load(write(tmp_path, "linear.yaml", LINEAR))
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    y = model.forward(x=x)["y"]
    w, b = model.params["ip"][0].data, model.params["ip"][1].data
    np.testing.assert_allclose(y, x @ w.T + b, rtol=1e-5, atol=1e-6)
    dy = np.random.default_rng(1).normal(size=(4, 2)).astype(np.float32)
    grads = model.backward(y=dy)
    np.testing.assert_allclose(grads["x"], dy @ w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.params["ip"][0].diff, dy.T @ x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.params["ip"][1].diff, dy.sum(0), rtol=1e-5, atol=1e-6)
    model.backward(y=dy)                     # parameter gradients add up, as in Caffe
    np.testing.assert_allclose(model.params["ip"][1].diff, 2 * dy.sum(0), rtol=1e-5, atol=1e-6)
    model.clear_param_diffs()
    assert not model.params["ip"][0].diff.any()
    deploy = netspec.load(TRAINED / "lenet.prototxt")
    with pytest.raises(NetspecError, match="force_backward"):
        deploy.backward(prob=np.ones((64, 10)))


def test_writes_into_blobs_and_params_reach_the_net(tmp_path):
    model = netspec.load(write(tmp_path, "linear.yaml", LINEAR))
    model.params["ip"][0].data[...] = np.arange(6, dtype=np.float32).reshape(2, 3)
    model.params["ip"][1].data[...] = 0
    model.blobs["x"].data[...] = 1
    assert model.forward()["y"].tolist() == [[3.0, 12.0]] * 4


def test_reshape_keeps_weights_and_refuses_what_changes_parameters(tmp_path):
    model = netspec.load(TRAINED / "lenet.prototxt", TRAINED / "lenet_iter_10000.caffemodel")
    before = model.params["ip1"][0].data.copy()
    model.reshape(data=(3, 1, 28, 28))
    assert model.blobs["prob"].shape == (3, 10)
    np.testing.assert_array_equal(model.params["ip1"][0].data, before)
    with pytest.raises(ShapeError, match="parameters would change shape"):
        model.reshape(data=(3, 1, 32, 32))
    with pytest.raises(ShapeError, match="not an input"):
        model.reshape(conv1=(1, 1))


def test_save_and_load_round_trip(tmp_path):
    model = netspec.load(write(tmp_path, "linear.yaml", LINEAR))
    model.save(tmp_path / "w.npz")
    again = netspec.load(tmp_path / "linear.yaml", tmp_path / "w.npz")
    x = np.ones((4, 3), np.float32)
    np.testing.assert_array_equal(again.forward(x=x)["y"], model.forward(x=x)["y"])
    with pytest.raises(KeyError, match="not an input"):
        model.forward(y=x)


def sgd_reference(w, b, batches, lr):
    """Plain SGD on EuclideanLoss (1/2N Σ (xw+b-t)²) in float64 NumPy."""
    w, b = w.astype(np.float64).copy(), b.astype(np.float64).copy()
    for x, t in batches:
        d = (x @ w.T + b - t) / len(x)
        w -= lr * d.T @ x
        b -= lr * d.sum(0)
    return w, b


def regression_batches(n):
    rng = np.random.default_rng(7)
    out = []
    for _ in range(n):
        x = rng.normal(size=(8, 3)).astype(np.float32)
        out.append((x, (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3).astype(np.float32)))
    return out


def test_training_fed_through_input_blobs_is_plain_sgd(tmp_path):
    write(tmp_path, "net.yaml", REGRESSION)
    t = netspec.solver(solver_file(tmp_path, "net.yaml"))
    w0, b0 = t.net.params["ip"][0].data.copy(), t.net.params["ip"][1].data.copy()
    batches = regression_batches(5)
    for x, target in batches:
        t.net.blobs["x"].data[...] = x
        t.net.blobs["t"].data[...] = target
        loss = t.step(1)
        assert loss == pytest.approx(float(t.net.blobs["loss"].data), rel=1e-6)
    w, b = sgd_reference(w0, b0, batches, 0.1)
    np.testing.assert_allclose(t.net.params["ip"][0].data, w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t.net.params["ip"][1].data, b, rtol=1e-5, atol=1e-6)
    assert t.iter == 5


def test_training_fed_through_memory_data_is_plain_sgd(tmp_path):
    write(tmp_path, "net.yaml", MEMORY)
    t = netspec.solver(solver_file(tmp_path, "net.yaml"))
    w0, b0 = t.net.params["ip"][0].data.copy(), t.net.params["ip"][1].data.copy()
    batches = regression_batches(3)
    x = np.concatenate([bx for bx, _ in batches]).reshape(24, 3, 1, 1)
    target = np.concatenate([bt for _, bt in batches]).reshape(24)
    t.net.set_input_arrays(x, target)
    t.step(3)
    w, b = sgd_reference(w0, b0, batches, 0.1)
    np.testing.assert_allclose(t.net.params["ip"][0].data, w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t.net.params["ip"][1].data, b, rtol=1e-5, atol=1e-6)


def test_step_matches_the_command_lines_training(tmp_path):
    """netspec.solver(...).step(n) trains exactly as `netspec train` (workflows.train) does."""
    solver = ROOT / "solvers" / "lenet.yaml"
    sets = ["max_iter=6", "test_interval=0", "snapshot=0", "snapshot_after_train=false",
            "display=0", f"snapshot_prefix={tmp_path}/x"]
    cli = train(solver, sets, quiet=True).solver.net.named_params()
    t = netspec.solver(solver, sets)
    t.step(6)
    ours = t.solver.net.named_params()
    assert list(ours) == list(cli)
    for key in cli:
        np.testing.assert_array_equal(ours[key].data, cli[key].data, err_msg=key)


def test_callbacks_snapshot_and_restore(tmp_path):
    write(tmp_path, "net.yaml", REGRESSION)
    extra = f"display: 2\nsnapshot: 4\nsnapshot_prefix: {tmp_path}/snap/r\n"
    batches = regression_batches(7)

    def run(t, n):
        for _ in range(n):
            x, target = batches[t.iter]
            t.net.blobs["x"].data[...] = x
            t.net.blobs["t"].data[...] = target
            t.step(1)

    t = netspec.solver(solver_file(tmp_path, "net.yaml", extra))
    seen = {"display": [], "snapshot": []}
    t.on("display", lambda e: seen["display"].append(e["iteration"]))
    t.on("snapshot", lambda e: seen["snapshot"].append(e["state"]))
    run(t, 4)
    assert seen["display"] == [0, 2]
    assert len(seen["snapshot"]) == 1 and Path(seen["snapshot"][0]).exists()
    run(t, 3)
    resumed = netspec.solver(tmp_path / "solver.yaml", snapshot=seen["snapshot"][0])
    assert resumed.iter == 4
    run(resumed, 3)
    np.testing.assert_array_equal(resumed.net.params["ip"][0].data, t.net.params["ip"][0].data)
    with pytest.raises(NetspecError, match="no event"):
        t.on("epoch", print)
    with pytest.raises(ShapeError, match="solver"):
        t.net.reshape(x=(1, 3))
    with pytest.raises(NetspecError, match="MemoryData"):
        t.net.set_input_arrays(np.zeros((8, 3)), np.zeros(8))


REGRESSION_PROTOTXT = """
name: "regression"
layer { name: "x" type: "Input" top: "x" top: "t"
        input_param { shape { dim: 8 dim: 3 } shape { dim: 8 dim: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 1 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "constant" value: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
"""


def test_a_caffe_solver_prototxt_trains_as_its_yaml_conversion(tmp_path, monkeypatch):
    pytest.importorskip("google.protobuf", reason=".prototxt files need protobuf")
    from netspec.caffe.port import convert_solver

    caffe_dir = tmp_path / "caffe"
    (caffe_dir / "models").mkdir(parents=True)
    write(caffe_dir / "models", "regression.prototxt", REGRESSION_PROTOTXT)
    # Caffe resolves net and snapshot_prefix from the working directory
    write(caffe_dir / "models", "solver.prototxt",
          'net: "models/regression.prototxt"\nbase_lr: 0.1\nmomentum: 0.9\nlr_policy: "step"\n'
          'gamma: 0.5\nstepsize: 2\nmax_iter: 10\nrandom_seed: 3\nsnapshot_prefix: "snaps/r"\n'
          'test_iter: 1\ntest_interval: 100\n')
    monkeypatch.chdir(caffe_dir)
    t = netspec.solver("models/solver.prototxt")
    assert t.param.snapshot_prefix == str(caffe_dir / "snaps" / "r")
    assert len(t.test_nets) == 1
    converted = tmp_path / "yaml" / "solver.yaml"
    converted.parent.mkdir()
    convert_solver(caffe_dir / "models" / "solver.prototxt", converted)
    reference = netspec.solver(converted)
    for x, target in regression_batches(5):
        for run in (t, reference):
            run.net.blobs["x"].data[...] = x
            run.net.blobs["t"].data[...] = target
            run.step(1)
    np.testing.assert_array_equal(t.net.params["ip"][0].data, reference.net.params["ip"][0].data)
    np.testing.assert_array_equal(t.net.params["ip"][1].data, reference.net.params["ip"][1].data)


@pytest.mark.gpu
def test_on_a_gpu_blob_writes_reach_the_net_and_results_equal_the_cpu(tmp_path):
    """On a GPU .data is a NumPy copy: writes into it go to the device before forward."""
    cpu = netspec.load(TRAINED / "lenet.prototxt", TRAINED / "lenet_iter_10000.caffemodel",
                       batch_size=4)
    gpu = netspec.load(TRAINED / "lenet.prototxt", TRAINED / "lenet_iter_10000.caffemodel",
                       batch_size=4, gpu=True)
    x = load_mnist("test")[0][:4] / 256.0
    gpu.blobs["data"].data[...] = x
    out = gpu.forward()["prob"]
    assert isinstance(gpu.blobs["prob"].data, np.ndarray)
    np.testing.assert_allclose(out, cpu.forward(data=x)["prob"], rtol=1e-4, atol=1e-6)
    gpu.params["ip2"][1].data[...] = 0
    cpu.params["ip2"][1].data[...] = 0
    np.testing.assert_allclose(gpu.forward()["prob"], cpu.forward()["prob"], rtol=1e-4, atol=1e-6)
    write(tmp_path, "net.yaml", REGRESSION)
    t = netspec.solver(solver_file(tmp_path, "net.yaml"), gpu=True)
    for bx, target in regression_batches(3):
        t.net.blobs["x"].data[...] = bx
        t.net.blobs["t"].data[...] = target
        t.step(1)
    assert float(t.net.blobs["loss"].data) < 10


def test_netspec_test_scores_a_prototxt_as_its_yaml_conversion(tmp_path):
    pytest.importorskip("google.protobuf", reason=".prototxt files need protobuf")
    from netspec.caffe.port import convert_net
    from netspec.workflows import score

    convert_net(TRAINED / "lenet.prototxt", tmp_path / "lenet.yaml")
    a = score(TRAINED / "lenet.prototxt", TRAINED / "lenet_iter_10000.caffemodel", iterations=1)
    b = score(tmp_path / "lenet.yaml", TRAINED / "lenet_iter_10000.caffemodel", iterations=1)
    np.testing.assert_array_equal(a.outputs["prob"], b.outputs["prob"])
    assert a.missing == a.unused == []


def test_netspec_train_reads_a_caffe_solver_prototxt_as_netspec_solver_does(tmp_path, monkeypatch):
    """``netspec train solver.prototxt`` and ``netspec.solver(...).solve()`` read the solver
    through the same function (netspec.solver_files.read_solver): the same weights."""
    pytest.importorskip("google.protobuf", reason=".prototxt files need protobuf")
    from click.testing import CliRunner

    from netspec.cli import main
    from netspec.snapshot import load_npz

    for where in ("cli", "python"):
        (tmp_path / where / "models").mkdir(parents=True)
        write(tmp_path / where / "models", "regression.prototxt", REGRESSION_PROTOTXT)
        write(tmp_path / where / "models", "solver.prototxt",
              'net: "models/regression.prototxt"\nbase_lr: 0.1\nmomentum: 0.9\nmax_iter: 6\n'
              'random_seed: 3\nsnapshot_prefix: "snaps/r"\ntest_iter: 1\ntest_interval: 4\n'
              'weight_decay: 0.01\n')
    monkeypatch.chdir(tmp_path / "python")
    t = netspec.solver("models/solver.prototxt")
    t.solve()
    monkeypatch.chdir(tmp_path / "cli")
    r = CliRunner().invoke(main, ["train", "models/solver.prototxt"])
    assert r.exit_code == 0, r.output
    written = load_npz(tmp_path / "cli" / "snaps" / "r_iter_6.weights.npz")
    assert sorted(written) == ["ip/0", "ip/1"]
    np.testing.assert_array_equal(written["ip/0"], t.net.params["ip"][0].data)
    np.testing.assert_array_equal(written["ip/1"], t.net.params["ip"][1].data)
