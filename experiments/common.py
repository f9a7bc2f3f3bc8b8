"""Shared helpers of the seed experiments (docs/experiments.md).

Every run is a real `netspec train SOLVER --set ... --log-dir DIR` in a subprocess, one at a
time; the scripts then read DIR/metrics.jsonl (and, where the final weights matter, the
snapshot written at the end of training) and draw the figures with matplotlib.

Runs go to runs/experiments/<experiment>/<run>/ (git-ignored); figures to docs/figures/.
OpenBLAS is limited to one thread in the training subprocesses: on a 2-core machine shared
with other jobs its default (one thread per core) made a 100x784x200 matmul 10-50 times
slower than one thread does (24 ms instead of 0.5 ms while the load was ~4).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netspec.metrics import read_metrics  # noqa: E402

RUNS = ROOT / "runs" / "experiments"
FIGURES = ROOT / "docs" / "figures"
THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def arg_parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plot-only", action="store_true",
                    help="do not train: redraw the figure and the table from the existing runs")
    ap.add_argument("--runs", type=Path, default=None, help="where the runs go (default runs/experiments/<exp>)")
    ap.add_argument("--reuse", action="store_true",
                    help="skip a run whose directory holds a finished run of the very same command")
    return ap


def train(solver: str, run_dir: Path, sets: list[str] = (), *, keep_weights: bool = False,
          plot_only: bool = False, allow_divergence: bool = False, reuse: bool = False) -> Path:
    """`netspec train solver --set ... --log-dir run_dir`; returns run_dir.

    keep_weights: write the final weights to run_dir/final_iter_N.weights.npz (otherwise no
    snapshot is written). With plot_only the run is not trained (its metrics must exist).
    reuse: skip the training when run_dir/command.txt (written when a run finishes) holds this
    very command.
    allow_divergence: a run that netspec stops because the loss or a weight became NaN/Inf
    is not an error; netspec's message is kept in run_dir/diverged.txt (see ``diverged``).
    """
    run_dir = Path(run_dir)
    sets = list(sets)
    extra = ([f"snapshot_prefix={run_dir.resolve()}/final"] if keep_weights
             else ["snapshot_after_train=false"])
    shown = " ".join(["netspec train", solver] + [f"--set {shlex.quote(s)}" for s in sets]
                     + [f"--log-dir {_rel(run_dir)}"])
    done = run_dir / "command.txt"
    if reuse and done.exists() and done.read_text(encoding="utf-8").strip() == shown:
        print(f"reusing {_rel(run_dir)}", file=sys.stderr)
        return run_dir
    if plot_only:
        if not (run_dir / "metrics.jsonl").exists():
            sys.exit(f"--plot-only: {run_dir}/metrics.jsonl does not exist; run without --plot-only first")
        return run_dir
    print(f"$ {shown}", file=sys.stderr, flush=True)
    cmd = [sys.executable, "-m", "netspec.cli", "train", solver, "--quiet", "--log-dir", str(run_dir)]
    for s in sets + extra:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    marker = run_dir / "diverged.txt"
    marker.unlink(missing_ok=True)
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **THREAD_ENV}, stderr=subprocess.PIPE,
                          text=True)
    if proc.returncode != 0:
        message = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
        if not (allow_divergence and "diverged" in message):
            sys.stderr.write(proc.stderr)
            sys.exit(f"netspec train failed (exit {proc.returncode})")
        marker.write_text(message + "\n", encoding="utf-8")
        print(f"  {message}", file=sys.stderr)
    print(f"  {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    done.write_text(shown + "\n", encoding="utf-8")
    return run_dir


def diverged(run_dir: Path) -> int | None:
    """The iteration at which netspec stopped a run as diverged (None: it did not)."""
    marker = Path(run_dir) / "diverged.txt"
    if not marker.exists():
        return None
    text = marker.read_text(encoding="utf-8")
    return int(text.split("diverged at iteration ")[1].split(":")[0])


def _rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def tests(run_dir: Path) -> dict[int, dict[int, dict[str, float]]]:
    """{test net: {iteration: outputs}} (the last event of an iteration wins)."""
    out: dict[int, dict[int, dict[str, float]]] = {}
    for e in read_metrics(run_dir):
        if e.get("event") == "test":
            out.setdefault(int(e.get("net") or 0), {})[int(e["iteration"])] = e["outputs"]
    return out


def train_events(run_dir: Path) -> list[dict]:
    """The display events, one per iteration (the last one wins), in iteration order."""
    by_iter = {int(e["iteration"]): e for e in read_metrics(run_dir) if e.get("event") == "train"}
    return [by_iter[k] for k in sorted(by_iter)]


def series(run_dir: Path, net: int, output: str = "accuracy") -> tuple[np.ndarray, np.ndarray]:
    """(iterations, values) of one output of test net ``net``."""
    t = tests(run_dir)[net]
    its = np.array(sorted(t))
    return its, np.array([t[i][output] for i in its])


def final_weights(run_dir: Path) -> dict[str, np.ndarray]:
    """The weights written at the end of a run trained with keep_weights=True."""
    files = sorted(Path(run_dir).glob("final_iter_*.weights.npz"),
                   key=lambda p: int(p.name.split("_iter_")[1].split(".")[0]))
    if not files:
        sys.exit(f"no final weights in {run_dir}: train it with keep_weights=True")
    with np.load(files[-1]) as z:
        return {k: z[k].astype(np.float64) for k in z.files}


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / ‖b‖."""
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def figure(**kw):
    """A headless matplotlib Figure (Agg canvas, no pyplot state)."""
    # matplotlib is optional (the `plot` extra) and only the figures need it
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def save(fig, name: str, dpi: int = 100) -> Path:
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / name
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    size = path.stat().st_size
    print(f"wrote {_rel(path)} ({size / 1024:.0f} KB)", file=sys.stderr)
    if size > 200 * 1024:
        print(f"warning: {path.name} is over 200 KB", file=sys.stderr)
    return path


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def overfit_table_and_figure(runs: list[tuple[str, Path]], iters_per_epoch: int, title: str,
                             fig_name: str, epochs_shown=(50, 100, 200, 300)) -> str:
    """Experiments 1 and 2: train (test net 0) and test (test net 1) accuracy per epoch.

    Returns a Markdown table (accuracies at a few epochs and at the end, and the gap) and
    draws train solid / test dashed, one colour per run."""
    fig = figure(figsize=(7.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    rows = ["| run | epoch | train acc | test acc | gap (train − test) |", "|---|---|---|---|---|"]
    for (label, run_dir), color in zip(runs, colors):
        its, tr = series(run_dir, 0)
        _, te = series(run_dir, 1)
        ep = its / iters_per_epoch
        ax.plot(ep, tr, color=color, lw=1.4, label=f"{label}: train")
        ax.plot(ep, te, color=color, lw=1.4, ls="--", label=f"{label}: test")
        last = int(ep[-1])
        for e in [e for e in epochs_shown if e < last] + [last]:
            k = int(np.searchsorted(ep, e))
            rows.append(f"| {label} | {e} | {pct(tr[k])} | {pct(te[k])} | {100 * (tr[k] - te[k]):.1f} pts |")
    ax.set_xlabel("epoch (3 iterations of batch 100 over the 300 images)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    save(fig, fig_name)
    return "\n".join(rows)
