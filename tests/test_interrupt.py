"""Ctrl-C during `netspec train`: acknowledged at once, the run stops after the current batch
(a test pass is abandoned, never reported half done), snapshots, exits 130 (so `netspec train
… && next-step` stops too) and resumes bit for bit from that snapshot."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
NET = """\
name: tiny
layer:
  - {name: d, type: Data, top: [x, y], include: {phase: TRAIN}, data_param: {source: d.npz, batch_size: 8}}
  - {name: t, type: Data, top: [x, y], include: {phase: TEST}, data_param: {source: d.npz, batch_size: 8}}
  - {name: fc, type: InnerProduct, bottom: x, top: z, inner_product_param: {num_output: 2, weight_filler: {type: xavier}}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [z, y], top: loss}
"""


def _files(tmp_path, **solver):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", data=rng.standard_normal((40, 5)).astype(np.float32),
             label=rng.integers(0, 2, 40))
    (tmp_path / "net.yaml").write_text(NET)
    fields = {"net": "net.yaml", "base_lr": 0.1, "momentum": 0.9, "max_iter": 10**7,
              "display": 0, "snapshot_prefix": "snap/tiny", "random_seed": 1, **solver}
    (tmp_path / "solver.yaml").write_text("".join(f"{k}: {v}\n" for k, v in fields.items()))
    return tmp_path / "solver.yaml"


def _interrupt_when(tmp_path, solver, marker: str, timeout: float = 60.0):
    """Start `netspec train`, send SIGINT once ``marker`` shows on stderr; (rc, stderr, s from
    the signal to the exit)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "netspec.cli", "train", str(solver)],
                            cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + timeout
    for line in proc.stderr:
        lines.append(line)
        if marker in line:
            break
        assert time.monotonic() < deadline, "".join(lines)
    time.sleep(0.3)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    proc.wait(timeout=timeout)
    return proc.returncode, "".join(lines) + rest, time.monotonic() - sent


@pytest.mark.timeout(120)
def test_ctrl_c_during_training_snapshots_exits_130_and_resumes(tmp_path):
    solver = _files(tmp_path, display=1)
    rc, err, took = _interrupt_when(tmp_path, solver, "Iteration 20, loss")
    assert rc == 130, err
    assert "interrupt received at iteration" in err
    assert "Traceback" not in err and "internal error" not in err
    state = err.rsplit("resume with --snapshot ", 1)[1].split()[0]
    it = int(state.rsplit("_iter_", 1)[1].split(".")[0])
    assert it >= 20 and (tmp_path / state).exists() and took < 30
    # the snapshot resumes: 5 more iterations
    r = subprocess.run([sys.executable, "-m", "netspec.cli", "train", str(solver), "--snapshot",
                        state, "--max-iter", str(it + 5)], cwd=tmp_path, capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / f"snap/tiny_iter_{it + 5}.solverstate.npz").exists()


@pytest.mark.timeout(120)
def test_ctrl_c_during_a_test_pass_is_acknowledged_at_once_and_the_pass_abandoned(tmp_path):
    solver = _files(tmp_path, test_iter=[10**8], test_interval=1000, test_initialization="true")
    rc, err, took = _interrupt_when(tmp_path, solver, "Testing net")
    assert rc == 130, err
    assert "interrupt received at iteration 0" in err
    assert "Test pass interrupted after" in err and "not reported" in err
    assert "Test net output" not in err                 # no half-pass averages
    assert (tmp_path / "snap/tiny_iter_0.solverstate.npz").exists()
    assert took < 30
