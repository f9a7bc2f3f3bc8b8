"""The report: the environment header, the timing table, the checks table, the caption under
which they stand and the estimated LeNet run, as Markdown."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

from bench.shared import LENET_RUN


def kernel_line() -> str:
    parts = []
    for d in threadpool_info():
        if d.get("user_api") == "blas":
            parts.append(f"{d.get('internal_api')} {d.get('version')} kernel {d.get('architecture')}"
                         f" ({d.get('threading_layer')})")
    return "; ".join(parts) or "no BLAS seen by threadpoolctl"


def _fmt_mem(v):
    return "—" if v is None else f"{v:.1f}"


def table(rows: list[dict], gpu: bool) -> str:
    head = ("| network | batch | threads | netspec ms | PyTorch ms | ratio | netspec GFLOP/s "
            "(% peak) | PyTorch GFLOP/s (% peak) | GEMM peak GFLOP/s | netspec MiB | PyTorch MiB |")
    out = [head, "|" + "---|" * 2 + "---:|" * 9]
    for r in rows:
        ms = r["ms"]
        g = {k: r["flop"] / (v / 1e3) / 1e9 for k, v in ms.items()}
        pk = r["peak_gflops"]
        out.append(f"| {r['net']} | {r['batch']} | {r['threads']} | {ms['netspec']:.2f} | "
                   f"{ms['torch']:.2f} | {ms['netspec'] / ms['torch']:.2f} | "
                   f"{g['netspec']:.1f} ({100 * g['netspec'] / pk:.0f} %) | "
                   f"{g['torch']:.1f} ({100 * g['torch'] / pk:.0f} %) | {pk:.0f} | "
                   f"{_fmt_mem(r['mem'].get('netspec'))} | {_fmt_mem(r['mem'].get('torch'))} |")
        if "numpy" in ms:
            out.append(f"| {r['net']} vs hand NumPy | {r['batch']} | {r['threads']} | "
                       f"{ms['netspec']:.2f} | NumPy {ms['numpy']:.2f} | "
                       f"{ms['netspec'] / ms['numpy']:.2f} | | NumPy {g['numpy']:.1f} "
                       f"({100 * g['numpy'] / pk:.0f} %) | | | NumPy {_fmt_mem(r['mem'].get('numpy'))} |")
    return "\n".join(out)


def cpu_col(r: dict) -> str:
    """Median CPU time of the calling thread per iteration: at 1 thread all the work runs on
    it, so this is the iteration's cost without the time other processes took the core."""
    if r["threads"] != 1:
        return "— (work on other threads)"
    c = r["cpu_ms"]
    extra = f"; NumPy {c['numpy']:.2f}" if "numpy" in c else ""
    return f"{c['netspec']:.2f} / {c['torch']:.2f} ({c['netspec'] / c['torch']:.2f}){extra}"


def checks(rows: list[dict]) -> str:
    out = ["| network | threads | first loss netspec / torch | loss after warm-up netspec / torch "
           "| IQR ms netspec | IQR ms torch | thread CPU ms netspec / torch (ratio) "
           "| 1-min load after timing |",
           "|---|---:|---|---|---|---|---|---:|"]
    for r in rows:
        f, la, q = r["first_loss"], r["loss_after_warmup"], r["iqr"]
        out.append(f"| {r['net']} | {r['threads']} | {f['netspec']:.6f} / {f['torch']:.6f} | "
                   f"{la['netspec']:.6f} / {la['torch']:.6f} | "
                   f"{q['netspec'][0]:.2f}–{q['netspec'][1]:.2f} | {q['torch'][0]:.2f}–{q['torch'][1]:.2f} | {cpu_col(r)} | {r['load']:.2f} |")
    return "\n".join(out)


def load_average() -> str:
    """The 1, 5 and 15-minute load averages as '0.12/0.34/0.56'."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def finish(lines: list[str], out: str | None) -> None:
    """Close a report with the load average at its end and write it to ``out`` (if given)."""
    lines.append(f"Load average at end: {load_average()}")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text("\n".join(lines) + "\n")


def environment(gpu: bool) -> str:
    # torch is optional (the `compare` extra): loaded when used, not when bench modules are imported
    import torch  # noqa: PLC0415

    load = os.getloadavg()
    env = {k: os.environ.get(k, "unset") for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                   "OMP_NUM_THREADS")}
    lines = [f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
             f"load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}",
             f"- Python {platform.python_version()}, NumPy {np.__version__}, torch {torch.__version__}",
             f"- NumPy BLAS: {kernel_line()}",
             "- env: " + ", ".join(f"{k}={v}" for k, v in env.items())]
    if gpu:
        # CuPy: the optional `gpu` extra, needed on --gpu only
        import cupy as cp  # noqa: PLC0415

        lines.append(f"- GPU: {torch.cuda.get_device_name()}, CuPy {cp.__version__}, "
                     "TF32 off in torch (cuDNN and matmul) to match CuPy's float32")
    return "\n".join(lines)


def caption(iterations: int, warmup: int, block: int, settle: float, gpu: bool) -> str:
    """What the timing table's numbers are: the schedule, the FLOP and peak rules, the memory."""
    sched = ("the frameworks alternating every iteration" if block <= 1 else
             f"the frameworks alternating in blocks of {block} (each after a {settle:g} s "
             "pause and one untimed iteration)")
    return (f"Median ms per training iteration of {iterations} (after {warmup} warm-up), "
            f"{sched}, "
            f"{'GPU' if gpu else 'CPU'}, float32. GFLOP/s = 6 × forward multiply-adds of "
            "conv/IP layers / time; peak = NumPy 1024² float32 matmul at the same threads"
            + (" (CuPy 4096² on GPU)" if gpu else "") + ". MiB = peak memory of a "
            + ("CuPy pool / torch reserved (GPU)" if gpu else
               "fresh subprocess beyond its imports (VmHWM − VmRSS − growth of "
               "file-backed pages)") + ".")


def lenet_run_lines(est: dict, threads: int) -> list[str]:
    """The estimated full LeNet solver run (``schedule.lenet_run_estimate``) as a table."""
    its = LENET_RUN["iterations"]
    lines = [f"Full LeNet solver run ({its:,} iterations, a test pass of {LENET_RUN['test_iter']} × batch "
             f"{LENET_RUN['test_batch']} every {LENET_RUN['test_interval']} and at 0 and {its:,} = "
             f"{est['torch']['n_tests']} passes), **estimated** from "
             f"measured medians at {threads} thread(s), not run; Input layers (no data loading):", "",
             "| framework | ms / iteration | ms / test pass | estimated run s |",
             "|---|---:|---:|---:|"]
    for k in ("netspec", "torch"):
        e = est[k]
        lines.append(f"| {k} | {e['iter_ms']:.2f} | {e['test_pass_ms']:.0f} | {e['total_s']:.0f} |")
    return lines
