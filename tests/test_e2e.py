"""End to end through the CLI: a short LeNet run learns MNIST; a SIGKILLed run resumes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def netspec(*args, **kw):
    return subprocess.run([sys.executable, "-m", "netspec.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, **kw)


def test_short_lenet_run_beats_90_percent(tmp_path):
    r = netspec("train", "solvers/lenet.yaml", "--set", "max_iter=300", "--set", "test_interval=300",
                "--set", "test_initialization=false", "--set", "snapshot=0",
                "--set", f"snapshot_prefix={tmp_path}/lenet", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    acc = [float(m) for m in re.findall(r"Test net output #\d+: accuracy = ([\d.]+)", r.stderr)]
    assert acc and acc[-1] > 0.90, r.stderr[-2000:]
    # Caffe log conventions (tools/extra/parse_log.py)
    assert re.search(r"Iteration 100, loss = [\d.]+", r.stderr)
    assert re.search(r"Iteration 100, lr = [\d.]+", r.stderr)
    assert (tmp_path / "lenet_iter_300.weights.npz").exists()
    # netspec test scores the snapshot the same way
    t = netspec("test", "--model", "models/lenet.yaml", "--weights", str(tmp_path / "lenet_iter_300.weights.npz"),
                "--iterations", "100", timeout=300)
    assert t.returncode == 0, t.stderr
    tested = float(re.search(r"accuracy = ([\d.]+)", t.stderr).group(1))
    assert tested == pytest.approx(acc[-1], abs=1e-6)


def _mlp_args(tmp_path, *extra):
    return ["train", "solvers/mlp.yaml", "--set", "max_iter=1500", "--set", "test_interval=0",
            "--set", "display=50", "--set", "snapshot=40", "--set", f"snapshot_prefix={tmp_path}/mlp", *extra]


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    straight = tmp_path / "straight"
    r = netspec(*_mlp_args(straight), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "netspec.cli", *_mlp_args(killed)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(killed.glob("mlp_iter_120.solverstate.npz")):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    states = sorted(killed.glob("mlp_iter_*.solverstate.npz"),
                    key=lambda p: int(re.search(r"_iter_(\d+)", p.name).group(1)))
    assert states, "no snapshot was written before the kill"
    for p in killed.glob("*.npz"):  # every snapshot on disk is whole
        with np.load(p) as z:
            assert z.files
    r = netspec(*_mlp_args(killed, "--snapshot", str(states[-1])), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(re.search(r"_iter_(\d+)", states[-1].name).group(1)) < 1500, "killed after the end"
    a = np.load(straight / "mlp_iter_1500.weights.npz")
    b = np.load(killed / "mlp_iter_1500.weights.npz")
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_ctrl_c_snapshots_and_stops(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "netspec.cli",
                             *_mlp_args(tmp_path, "--set", "max_iter=100000", "--set", "snapshot=0")],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    line = ""
    while time.time() < deadline:
        line = proc.stderr.readline()
        if "Iteration 50, loss" in line:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]        # so that `netspec train ... && next` stops
    m = re.search(r"Interrupted at iteration (\d+)", err)
    assert m, err[-2000:]
    it = int(m.group(1))
    assert 50 < it < 100000
    assert (tmp_path / f"mlp_iter_{it}.solverstate.npz").exists()
    assert (tmp_path / f"mlp_iter_{it}.weights.npz").exists()
