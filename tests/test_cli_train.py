"""`netspec train` from the command line: progress bar only on a terminal, fine-tuning, overrides;
the same work from Python (netspec.workflows), and the command list."""

from __future__ import annotations

import os
import pkgutil
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from netspec import commands, workflows
from netspec.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _tiny_files(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", data=rng.standard_normal((40, 5)).astype(np.float32),
             label=rng.integers(0, 2, 40))
    (tmp_path / "net.yaml").write_text("""\
name: tiny
layer:
  - {name: d, type: Data, top: [x, y], data_param: {source: d.npz, batch_size: 8}}
  - {name: fc, type: InnerProduct, bottom: x, top: z, inner_product_param: {num_output: 2, weight_filler: {type: xavier}}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [z, y], top: loss}
""")
    (tmp_path / "solver.yaml").write_text(
        "net: net.yaml\nbase_lr: 0.1\nmax_iter: 30\ndisplay: 10\nsnapshot_prefix: snap/tiny\nrandom_seed: 1\n")
    return tmp_path / "solver.yaml"


def test_progress_bar_on_a_terminal_only(tmp_path):
    solver = _tiny_files(tmp_path)
    piped = subprocess.run([sys.executable, "-m", "netspec.cli", "train", str(solver)],
                           capture_output=True, text=True, cwd=tmp_path)
    assert piped.returncode == 0, piped.stderr
    assert "Iteration 10, loss" in piped.stderr and "it/s" not in piped.stderr

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "netspec.cli", "train", str(solver)],
                            stdin=slave, stdout=slave, stderr=slave, cwd=tmp_path,
                            env={**os.environ, "COLUMNS": "120", "TERM": "xterm"})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait()
    os.close(master)
    out = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, out
    assert "it/s" in out and "train" in out


def test_weights_fine_tune_and_log_dir(tmp_path):
    solver = _tiny_files(tmp_path)
    r = subprocess.run([sys.executable, "-m", "netspec.cli", "train", str(solver), "--log-dir", "logs"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    weights = tmp_path / "snap" / "tiny_iter_30.weights.npz"
    assert weights.exists() and (tmp_path / "logs" / "metrics.jsonl").exists()
    r = subprocess.run([sys.executable, "-m", "netspec.cli", "train", str(solver), "--weights", str(weights),
                        "--set", "max_iter=1", "--set", "snapshot_prefix=ft/tiny", "--set", "display=1"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Fine-tuning from" in r.stderr
    first = np.load(weights)
    after = np.load(tmp_path / "ft" / "tiny_iter_1.weights.npz")
    # one step away from the loaded weights, not from fresh fillers
    assert np.abs(after["fc/0"] - first["fc/0"]).max() < 0.5 * np.abs(first["fc/0"]).max()
    r = subprocess.run([sys.executable, "-m", "netspec.cli", "train", str(solver), "--weights", "missing.npz"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1 and "missing.npz" in r.stderr and "Traceback" not in r.stderr


def test_threads_option_and_environment(tmp_path):
    solver = _tiny_files(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "NETSPEC_NUM_THREADS"}
    r = subprocess.run([sys.executable, "-m", "netspec.cli", "train", str(solver), "--threads", "3",
                        "--max-iter", "2"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "CPU (3 threads)" in r.stderr
    r = subprocess.run([sys.executable, "-m", "netspec.cli", "train", str(solver), "--max-iter", "2"],
                       capture_output=True, text=True, cwd=tmp_path,
                       env={**env, "NETSPEC_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stderr
    assert "CPU (2 threads)" in r.stderr
    bad = subprocess.run([sys.executable, "-m", "netspec.cli", "train", str(solver)],
                         capture_output=True, text=True, cwd=tmp_path,
                         env={**env, "NETSPEC_NUM_THREADS": "many"})
    assert bad.returncode == 1
    assert "NETSPEC_NUM_THREADS='many'" in bad.stderr and "Traceback" not in bad.stderr
    zero = subprocess.run([sys.executable, "-m", "netspec.cli", "train", str(solver), "--threads", "0"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert zero.returncode == 2 and "--threads" in zero.stderr


def test_train_and_score_from_python(tmp_path, monkeypatch):
    """What `netspec train` and `netspec test` do, without the command line."""
    monkeypatch.chdir(tmp_path)
    solver = _tiny_files(tmp_path)
    run = workflows.train(solver, ["display=2"], max_iter=4, log_dir="logs", quiet=True)
    assert run.result["iterations"] == 4 and run.solver.iter == 4
    assert (tmp_path / "logs" / "metrics.jsonl").exists()
    assert "Iteration 2" in (tmp_path / "logs" / "train.log").read_text()
    scores = workflows.score(tmp_path / "net.yaml", tmp_path / "snap" / "tiny_iter_4.weights.npz",
                             iterations=5)
    assert scores.missing == [] and list(scores.outputs) == ["loss"]
    assert np.isfinite(scores.outputs["loss"]) and scores.outputs["loss"].dtype == np.float64


def test_help_lists_every_command_module():
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0, r.output
    listed = r.output.split("Commands:")[1].split()
    modules = {m.name.replace("_", "-") for m in pkgutil.iter_modules(commands.__path__)
               if m.name not in commands.NOT_COMMANDS}
    assert modules >= {"train", "test", "validate", "summary", "search"}
    assert modules <= set(listed) and "options" not in listed
    assert CliRunner().invoke(main, ["options"]).exit_code == 2   # not a command


def test_training_ends_with_one_summary_line(tmp_path):
    """The last log line says how long, what the last test gave and where the weights are."""
    solver = _tiny_files(tmp_path)
    solver.write_text(solver.read_text() + "test_iter: 2\ntest_interval: 15\n")
    r = subprocess.run([sys.executable, "-m", "netspec.cli", "train", str(solver)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "Trained 30 iterations in " in last and " ms/iter)" in last, last
    assert "; test at iteration 30: loss = " in last, last
    assert last.endswith(f"; weights: {tmp_path / 'snap' / 'tiny_iter_30.weights.npz'}"), last
    assert (tmp_path / "snap" / "tiny_iter_30.weights.npz").exists()
