"""Experiment 7's files (docs/experiments.md): decay on the fully connected layers only.

* `netspec validate` accepts solvers/exp_fc_decay.yaml and reports no decay on conv1 and the
  biases, and the solver builds with its two 1,000-image TEST nets;
* in small (batch 20, fc1 with 64 outputs): after one iteration the blobs with decay_mult 0
  (conv1, every bias) are bit for bit those of a run without decay while the FC weights are
  not; after 20 iterations the conv1 weight norm has moved far less than in a run whose conv1
  weights have decay_mult 1, and the FC weight norms shrink in both decayed runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from netspec.log import CaffeLog
from netspec.solvers import Solver
from netspec.spec import load_net, load_solver
from netspec.spec.overrides import split_sets

ROOT = Path(__file__).resolve().parents[1]
SOLVER = ROOT / "solvers" / "exp_fc_decay.yaml"
SMALL = ["layer.mnist.data_param.batch_size=20", "layer.fc1.inner_product_param.num_output=64",
         "base_lr=0.001", "test_interval=0", "display=0", "snapshot_after_train=false"]
CONV_DECAYED = ["layer.conv1.param.0.decay_mult=1"]


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(1):
        yield


def build(sets: list[str] = ()) -> Solver:
    solver_sets, net_sets = split_sets(list(sets))
    sp = load_solver(SOLVER, solver_sets)
    return Solver(sp, net_param=load_net(sp.net, net_sets), log=CaffeLog(quiet=True))


def weights_after(iterations: int, sets: list[str]) -> tuple[dict[str, np.ndarray], float]:
    solver = build(SMALL + [f"max_iter={iterations}"] + sets)
    solver.solve()
    params = {k: np.array(p.data, dtype=np.float64) for k, p in solver.net.named_params().items()}
    return params, float(solver.smoothed_loss)   # the loss of the last iteration


def test_experiment7_validates_and_builds():
    proc = subprocess.run([sys.executable, "-m", "netspec.cli", "validate", str(SOLVER)],
                          check=False, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    decay = {line.split()[0]: float(line.split("decay/step")[1].split()[0])
             for line in proc.stdout.splitlines() if "decay/step" in line}
    assert decay["fc1/0"] > 0 and decay["fc2/0"] > 0
    assert all(decay[k] == 0 for k in ("conv1/0", "conv1/1", "fc1/1", "fc2/1"))

    solver = build()
    assert solver.sp.type == "Adam" and solver.sp.regularization_type == "L2"
    assert solver.sp.weight_decay == pytest.approx(0.004)
    train_eval, test = solver.test_nets
    assert train_eval.layer_by_name("mnist_train_eval").n == 1000
    assert test.layer_by_name("mnist_test").n == 1000
    assert solver.net.blobs["pool1"].data.shape == (100, 32, 14, 14)   # SAME padding: 28x28 conv output


def test_experiment7_conv_weights_not_decayed():
    one_fc, _ = weights_after(1, [])
    one_none, _ = weights_after(1, ["weight_decay=0"])
    one_conv, _ = weights_after(1, CONV_DECAYED)
    for blob in ("conv1/0", "conv1/1", "fc1/1", "fc2/1"):
        assert np.array_equal(one_fc[blob], one_none[blob]), f"{blob} has decay_mult 0 but was decayed"
    for blob in ("fc1/0", "fc2/0"):
        assert not np.array_equal(one_fc[blob], one_none[blob]), f"{blob} was not decayed"
    assert not np.array_equal(one_conv["conv1/0"], one_none["conv1/0"])

    fc, loss_fc = weights_after(20, [])
    none, loss_none = weights_after(20, ["weight_decay=0"])
    conv, _ = weights_after(20, CONV_DECAYED)
    norm = {name: {k: float(np.linalg.norm(v)) for k, v in w.items()}
            for name, w in (("fc", fc), ("none", none), ("conv", conv))}
    moved_fc = abs(norm["fc"]["conv1/0"] - norm["none"]["conv1/0"])
    moved_conv = norm["none"]["conv1/0"] - norm["conv"]["conv1/0"]
    print(f"‖W_conv1‖: no decay {norm['none']['conv1/0']:.5f}, FC decay {norm['fc']['conv1/0']:.5f}, "
          f"conv decayed too {norm['conv']['conv1/0']:.5f}; losses {loss_none:.3f} / {loss_fc:.3f}")
    assert np.isfinite(loss_fc) and loss_fc < 2.0 and loss_none < 2.0, "20 iterations should learn something"
    assert moved_conv > 5 * moved_fc, "conv1 weights shrink only when their decay_mult is 1"
    for blob in ("fc1/0", "fc2/0"):
        assert norm["fc"][blob] < norm["none"][blob]
        assert norm["conv"][blob] < norm["none"][blob]
