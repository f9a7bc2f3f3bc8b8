"""The seed experiments' files (docs/experiments.md) build, and two of their claims in small.

* every experiment solver (solvers/exp_*.yaml, and solvers/mlp.yaml which experiment 5 uses)
  validates and builds a Solver (train net and every test net), and every models/exp_*.yaml is
  used by one of them;
* every script the docs run (`python experiments/....py`) exists and starts from a checkout:
  its imports resolve and `--help` prints its description;
* experiment 1 in small: 100 training images, 200 iterations: coupled L2 (λ = 0.1) narrows the
  train–test accuracy gap;
* experiment 5 in small: under plain SGD coupled L2 λ and decoupled λ·lr give the same weights
  (relative difference < 1e-2), far closer than the same pair under momentum 0.9.
"""

from __future__ import annotations

import os
import re
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
EXP_SOLVERS = sorted((ROOT / "solvers").glob("exp_*.yaml")) + [ROOT / "solvers" / "mlp.yaml"]
EXP_MODELS = sorted((ROOT / "models").glob("exp_*.yaml"))
EXP_SCRIPTS = sorted((ROOT / "experiments").glob("*.py"))
DOCS_NAMING_SCRIPTS = [ROOT / "docs" / "experiments.md", ROOT / "docs" / "solvers.md", ROOT / "README.md"]


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Train with one BLAS thread: on a small shared machine OpenBLAS's default of one thread
    per core made these small matmuls several times slower."""
    with threadpool_limits(1):
        yield


def build(solver_file: Path, sets: list[str] = (), dtype: str = "float32") -> Solver:
    solver_sets, net_sets = split_sets(list(sets))
    sp = load_solver(solver_file, solver_sets)
    return Solver(sp, net_param=load_net(sp.net, net_sets), log=CaffeLog(quiet=True), dtype=dtype)


def test_experiment_files_exist():
    names = {p.name for p in EXP_SOLVERS}
    for want in ("exp_overfit.yaml", "exp_overfit_dropout.yaml", "exp_init.yaml", "exp_batchnorm.yaml",
                 "exp_batchnorm_plain.yaml", "exp_l1l2.yaml"):
        assert want in names
    assert len(EXP_MODELS) >= 5


def test_documented_experiment_commands_name_the_scripts():
    documented = set()
    for doc in DOCS_NAMING_SCRIPTS:
        documented |= set(re.findall(r"python (experiments/\w+\.py)", doc.read_text(encoding="utf-8")))
    assert len(documented) == 8, sorted(documented)   # experiments 1-7 and decay_experiment.py
    for script in documented:
        assert (ROOT / script).is_file(), f"{script} is run by the docs but does not exist"
    assert {p.relative_to(ROOT).as_posix() for p in EXP_SCRIPTS} == documented | {"experiments/common.py"}


@pytest.mark.parametrize("script", [p for p in EXP_SCRIPTS if p.name != "common.py"], ids=lambda p: p.name)
def test_experiment_script_starts(script, tmp_path):
    """The documented command line, run from elsewhere: the script finds netspec and its helpers
    itself (no PYTHONPATH, no install needed)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first_line = script.read_text(encoding="utf-8").split('"""')[1].strip().splitlines()[0]
    assert " ".join(first_line.split()[:4]) in " ".join(proc.stdout.split())


@pytest.mark.parametrize("solver_file", EXP_SOLVERS, ids=lambda p: p.name)
def test_experiment_solver_builds(solver_file):
    solver = build(solver_file)
    sp = solver.sp
    assert len(solver.test_nets) == len(sp.test_iter)
    assert solver.params, "no learnable parameters"
    for net in solver.test_nets:
        assert net.output_names, "a test net without outputs reports nothing"


def test_every_experiment_model_is_used():
    used = {Path(load_solver(f).net).resolve() for f in EXP_SOLVERS}
    for model in EXP_MODELS:
        load_net(model)
        assert model.resolve() in used, f"{model.name} is not the net of any solvers/exp_*.yaml"


def test_overfit_test_nets_see_train_and_test_images():
    """Experiment 1's two TEST nets: stage train_eval reads the training images the train net
    learns from, stage test the test split."""
    solver = build(ROOT / "solvers" / "exp_overfit.yaml")
    train_data = solver.net.layer_by_name("mnist")
    eval_net, test_net = solver.test_nets
    eval_data = eval_net.layer_by_name("mnist_train_eval")
    test_data = test_net.layer_by_name("mnist_test")
    assert train_data.n == eval_data.n == 300
    assert np.array_equal(np.sort(train_data.order), np.arange(300))
    assert np.array_equal(train_data.images, eval_data.images)
    assert test_data.n == 10000


def _gap(weight_decay: float) -> tuple[float, float, float]:
    """Experiment 1 in small: (train acc, test acc, gap) after 200 iterations on 100 images
    (batch 100: one iteration = one epoch), test accuracy on the first 1,000 test images."""
    sets = ["layer.mnist.data_param.limit=100", "layer.mnist_train_eval.data_param.limit=100",
            "layer.mnist_test.data_param.limit=1000", "test_iter=[1, 10]", "max_iter=200",
            "test_interval=200", "test_initialization=false", "display=0", "snapshot_after_train=false",
            f"weight_decay={weight_decay}"]
    solver = build(ROOT / "solvers" / "exp_overfit.yaml", sets)
    solver.solve()
    train_acc, test_acc = (solver.test_history[-2][1]["accuracy"], solver.test_history[-1][1]["accuracy"])
    return train_acc, test_acc, train_acc - test_acc


def test_weight_decay_narrows_the_gap_small():
    tr0, te0, gap0 = _gap(0.0)
    tr1, te1, gap1 = _gap(0.1)
    print(f"no decay: train {tr0:.3f} test {te0:.3f} gap {gap0:.3f}; "
          f"L2 0.1: train {tr1:.3f} test {te1:.3f} gap {gap1:.3f}")
    assert tr0 >= 0.95, "without decay the 100 images should be (nearly) memorised"
    assert gap1 < gap0 - 0.05
    assert tr1 < tr0


def _final_weights(sets: list[str]) -> dict[str, np.ndarray]:
    small = ["layer.fc1.inner_product_param.num_output=64", "layer.fc2.inner_product_param.num_output=64",
             "layer.loss.loss_param.normalization=VALID",  # batch mean, so lr 0.1 is stable
             "max_iter=300", "test_interval=0", "display=0", "snapshot_after_train=false"]
    solver = build(ROOT / "solvers" / "mlp.yaml", small + sets, dtype="float64")
    solver.solve()
    return {k: np.array(p.data, dtype=np.float64) for k, p in solver.net.named_params().items()
            if k.endswith("/0")}


def _rel(a: dict, b: dict) -> float:
    return max(float(np.linalg.norm(a[k] - b[k]) / np.linalg.norm(b[k])) for k in b)


def test_coupled_equals_matched_decoupled_under_plain_sgd_only():
    """Experiment 5 in small (784-64-64-10, 300 iterations, float64): L2 λ = 1e-3 vs decoupled
    λ_dec = lr·λ under plain SGD (lr 0.1) and under momentum 0.9 (lr 0.01)."""
    lam = 1e-3
    sgd_l2 = _final_weights(["base_lr=0.1", f"weight_decay={lam}"])
    sgd_dec = _final_weights(["base_lr=0.1", "regularization_type=decoupled", f"weight_decay={0.1 * lam}"])
    sgd_none = _final_weights(["base_lr=0.1", "weight_decay=0"])
    mom_l2 = _final_weights(["base_lr=0.01", "momentum=0.9", f"weight_decay={lam}"])
    mom_dec = _final_weights(["base_lr=0.01", "momentum=0.9", "regularization_type=decoupled",
                              f"weight_decay={0.01 * lam}"])
    d_sgd, d_mom, effect = _rel(sgd_dec, sgd_l2), _rel(mom_dec, mom_l2), _rel(sgd_l2, sgd_none)
    print(f"relative weight difference: SGD {d_sgd:.2e}, momentum {d_mom:.2e}; decay effect {effect:.2e}")
    assert d_sgd < 1e-2
    assert d_sgd < d_mom / 5
    assert d_sgd < effect / 5, "the two runs must agree far better than either differs from no decay"
