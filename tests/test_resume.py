"""Snapshots: resume gives bit-identical weights for every update rule; files are atomic."""

from __future__ import annotations

import numpy as np
import pytest

from netspec.backend import Backend
from netspec.log import CaffeLog
from netspec.snapshot import load_npz
from netspec.solvers import RULES, Solver
from netspec.spec import parse_net
from netspec.spec.solver import SolverParameter

F32 = Backend(np, np.float32)


def data_net(tmp_path):
    """A net fed by a shuffling Data layer with Dropout, so RNG and cursor state matter."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", data=rng.standard_normal((30, 6)).astype(np.float32),
             label=rng.integers(0, 3, 30))
    return {"name": "r", "layer": [
        {"name": "d", "type": "Data", "top": ["x", "y"],
         "data_param": {"source": str(tmp_path / "d.npz"), "batch_size": 8, "shuffle": True}},
        {"name": "ip1", "type": "InnerProduct", "bottom": "x", "top": "h",
         "inner_product_param": {"num_output": 7, "weight_filler": {"type": "xavier"}}},
        {"name": "drop", "type": "Dropout", "bottom": "h", "top": "h"},
        {"name": "ip2", "type": "InnerProduct", "bottom": "h", "top": "z",
         "inner_product_param": {"num_output": 3, "weight_filler": {"type": "xavier"}}},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["z", "y"], "top": "loss"}]}


def make(tmp_path, rule, **extra):
    settings = {"net": "x", "type": rule, "base_lr": 0.05, "momentum": 0.9 if rule != "AdaDelta" else 0.95,
                "weight_decay": 1e-3, "regularization_type": "decoupled" if rule == "AdamW" else "L2",
                "lr_policy": "step", "gamma": 0.5, "stepsize": 3, "random_seed": 7,
                "snapshot_prefix": str(tmp_path / "snap"), "max_iter": 8, **extra}
    sp = SolverParameter.model_validate(settings)
    return Solver(sp, backend=F32, net_param=parse_net(data_net(tmp_path)), log=CaffeLog(quiet=True))


def weights(s):
    return {k: p.data.copy() for k, p in s.net.named_params().items()}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_resume_is_bit_identical(tmp_path, rule):
    straight = make(tmp_path, rule)
    straight.solve(max_iter=8)
    expected = weights(straight)

    first = make(tmp_path, rule)
    first.solve(max_iter=4)
    state = first.snapshot()
    resumed = make(tmp_path, rule)
    resumed.restore(state)
    assert resumed.iter == 4
    resumed.solve(max_iter=8)
    for key, value in weights(resumed).items():
        np.testing.assert_array_equal(value, expected[key], err_msg=f"{rule}: {key}")


def test_snapshot_files_and_final_snapshot(tmp_path):
    s = make(tmp_path, "SGD", snapshot=3)
    s.solve()
    names = sorted(p.name for p in tmp_path.glob("snap_iter_*"))
    assert names == ["snap_iter_3.solverstate.npz", "snap_iter_3.weights.npz",
                     "snap_iter_6.solverstate.npz", "snap_iter_6.weights.npz",
                     "snap_iter_8.solverstate.npz", "snap_iter_8.weights.npz"]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*tmp"))
    w = load_npz(tmp_path / "snap_iter_8.weights.npz")
    np.testing.assert_array_equal(w["ip1/0"], s.net.layer_by_name("ip1").blobs[0].data)


def test_corrupt_state_is_a_clear_error(tmp_path):
    from netspec.errors import SnapshotError

    bad = tmp_path / "bad.solverstate.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    s = make(tmp_path, "SGD")
    with pytest.raises(SnapshotError, match="bad.solverstate.npz"):
        s.restore(bad)


def test_nan_stops_with_iteration_and_blob(tmp_path):
    from netspec.errors import DivergenceError

    s = make(tmp_path, "SGD", base_lr=1e30, regularization_type="L2")
    with pytest.raises(DivergenceError, match=r"iteration \d+"):
        s.solve(max_iter=50)


def conv_data_net(tmp_path):
    """test_parallel's small conv net (layers that split their batch over CPU threads), fed by
    a shuffling Data layer."""
    from test_parallel import NET

    rng = np.random.default_rng(1)
    np.savez(tmp_path / "c.npz", data=rng.standard_normal((30, 2, 9, 9)).astype(np.float32),
             label=rng.integers(0, 3, 30))
    data = {"name": "d", "type": "Data", "top": ["data", "label"],
            "data_param": {"source": str(tmp_path / "c.npz"), "batch_size": 8, "shuffle": True}}
    return {"name": "c", "layer": [data] + NET["layer"][1:]}


@pytest.mark.parametrize("rule", ["SGD", "Adam"])
def test_resume_is_bit_identical_with_threads(tmp_path, rule, monkeypatch):
    from netspec import parallel

    monkeypatch.setattr(parallel, "SPLIT_MIN_MACS", 0)        # split even this small net
    monkeypatch.setattr(parallel, "SPLIT_MIN_ELEMENTS", 0)

    def solver():
        sp = SolverParameter.model_validate({
            "net": "c", "type": rule, "base_lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3,
            "regularization_type": "L2", "lr_policy": "fixed", "random_seed": 3,
            "snapshot_prefix": str(tmp_path / "t"), "max_iter": 6})
        return Solver(sp, backend=Backend(np, np.float32, 2), log=CaffeLog(quiet=True),
                      net_param=parse_net(conv_data_net(tmp_path)))
    straight = solver()
    assert straight.net.backend.threads == 2 and straight.net.blas_threads == 1
    straight.solve(max_iter=6)
    first = solver()
    first.solve(max_iter=3)
    resumed = solver()
    resumed.restore(first.snapshot())
    resumed.solve(max_iter=6)
    for key, value in weights(resumed).items():
        np.testing.assert_array_equal(value, weights(straight)[key], err_msg=key)


def literal_plateau_rates(losses, base_lr, gamma, winsize):
    """Intel Caffe's SGDSolver::GetLearningRate for lr_policy "plateau", iteration by
    iteration, from the smoothed losses."""
    minimum, last, step, rates = 3.4028234663852886e38, 0, 0, []
    for it, loss in enumerate(losses):
        if loss < minimum:
            minimum, last = loss, it
        if step < len(winsize) and it >= last + winsize[step]:
            step += 1
            last = it
        rates.append(base_lr * gamma ** step)
    return rates


def plateau_solver(tmp_path, **extra):
    return make(tmp_path, "SGD", lr_policy="plateau", gamma=0.5, plateau_winsize=[2, 3, 4],
                base_lr=0.3, average_loss=3, max_iter=30, **extra)


def test_plateau_rate_follows_the_smoothed_loss_and_resumes(tmp_path):
    """The rate of every iteration = a transcription of Intel Caffe's from the same smoothed
    losses (the noisy loss of a shuffled, dropped-out net steps the rate down); a resume from
    iteration 12 (after steps) ends bit-identical."""
    s = plateau_solver(tmp_path)
    losses, rates = [], []
    for _ in range(30):
        s.step_once()
        losses.append(s.smoothed_loss)
        rates.append(s.learning_rate())
    assert rates == literal_plateau_rates(losses, 0.3, 0.5, [2, 3, 4])
    assert 0.3 * 0.5 ** 3 <= rates[-1] < 0.3 and s.plateau.current_step >= 1
    expected = weights(s)
    first = plateau_solver(tmp_path)
    first.solve(max_iter=12)
    assert first.plateau.current_step >= 1
    state = first.snapshot()
    resumed = plateau_solver(tmp_path)
    resumed.restore(state)
    assert resumed.plateau == first.plateau
    resumed.solve(max_iter=30)
    for key, value in weights(resumed).items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)


@pytest.mark.parametrize("extra,words", [
    ({"plateau_winsize": []}, "lr_policy 'plateau' needs 'plateau_winsize'"),
    ({"plateau_winsize": [2, 0]}, "entry 1 is 0"),
    ({"gamma": 0.0, "plateau_winsize": [2]}, "must be > 0 for lr_policy 'plateau'"),
])
def test_plateau_fields_are_checked(extra, words):
    settings = {"net": "x", "base_lr": 0.1, "lr_policy": "plateau", "gamma": 0.5, **extra}
    with pytest.raises(Exception, match=words):
        SolverParameter.model_validate(settings)
