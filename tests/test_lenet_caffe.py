"""LeNet against real Caffe: forward/backward blobs (golden/nets) and the first 200 training
iterations of Caffe's own LeNet example (golden/lenet_run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from netspec.backend import Backend
from netspec.log import CaffeLog
from netspec.net import Net
from netspec.solvers import Solver
from netspec.spec import load_solver, parse_net
from netspec.spec.yaml_lines import load_yaml

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"
F32 = Backend(np, np.float32)


def deploy_lenet(batch: int) -> dict:
    """Caffe's examples/mnist/lenet.prototxt: the train net's layers on an Input, plus Softmax."""
    data, _ = load_yaml(ROOT / "models" / "lenet.yaml")
    layers = [l for l in data["layer"] if l["type"] not in ("Data", "Accuracy", "SoftmaxWithLoss")]
    layers.insert(0, {"name": "data", "type": "Input", "top": "data",
                      "input_param": {"shape": {"dim": [batch, 1, 28, 28]}}})
    layers.append({"name": "prob", "type": "Softmax", "bottom": "ip2", "top": "prob"})
    return {"name": "LeNet", "force_backward": True, "layer": layers}


def test_lenet_forward_backward_matches_caffe():
    g = np.load(GOLDEN / "nets" / "lenet.npz")
    net = Net(parse_net(deploy_lenet(2)), "TEST", F32)
    for key, p in net.named_params().items():
        p.data[...] = g[f"param/{key}"]
    net.blobs["data"].data[...] = g["input/data"]
    net.forward()
    for name in ("conv1", "pool1", "conv2", "pool2", "ip1", "ip2", "prob"):
        np.testing.assert_allclose(net.blobs[name].data, g[f"top/{name}"], rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    net.clear_param_diffs()
    net.blobs["prob"].diff[...] = g["topdiff/prob"]
    for i in range(len(net.layers) - 1, -1, -1):
        net.layers[i].backward(net.tops[i], net.propagate[i], net.bottoms[i])
    np.testing.assert_allclose(net.blobs["data"].diff, g["bottomdiff/data"], rtol=1e-5, atol=1e-7)
    for key, p in net.named_params().items():
        scale = np.abs(g[f"paramdiff/{key}"]).max()
        np.testing.assert_allclose(p.diff, g[f"paramdiff/{key}"], rtol=1e-5, atol=1e-6 * scale,
                                   err_msg=key)


def test_lenet_first_200_iterations_match_caffe():
    traj = np.load(GOLDEN / "lenet_run" / "trajectory.npz")
    init = np.load(GOLDEN / "lenet_run" / "init.npz")
    sp = load_solver(ROOT / "solvers" / "lenet.yaml")
    # golden/lenet_run/lenet_solver.prototxt: display 0, no snapshots, no test during training
    sp = sp.model_copy(update={"display": 0, "snapshot": 0, "snapshot_after_train": False,
                               "test_interval": 0, "test_initialization": False})
    solver = Solver(sp, backend=F32, log=CaffeLog(quiet=True))
    for key, p in solver.net.named_params().items():
        p.data[...] = init[key]
    losses = []
    for it in range(1, 201):
        losses.append(solver.step_once())
        if it in (1, 10):
            for key, p in solver.net.named_params().items():
                gold = traj[f"iter{it}/{key}"]
                np.testing.assert_allclose(p.data, gold, rtol=2e-5, atol=2e-5 * np.abs(gold).max(),
                                           err_msg=f"{key} after iteration {it}")
    losses = np.array(losses)
    np.testing.assert_allclose(losses[:16], traj["loss"][:16], rtol=1e-5)
    np.testing.assert_allclose(losses[:20], traj["loss"][:20], rtol=3e-5)  # float32 drift grows
    assert np.max(np.abs(losses - traj["loss"])) < 0.02
    acc = solver.test(0)["accuracy"]
    assert abs(acc - float(traj["test_accuracy_iter200"])) < 0.01
