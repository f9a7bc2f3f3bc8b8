"""netspec vs PyTorch: one full training iteration of the same network, same weights, same data.

For each network the layers netspec builds for the TRAIN phase of its YAML are taken (netspec's
own include/exclude rules), the Data layers replaced by Input layers of the same top shapes
(both frameworks then see one fixed synthetic batch, and neither pays for data loading), and
the same net is built twice:

* netspec: ``Solver.step_once()`` (clear diffs, forward, backward, coupled-L2 SGD-momentum update,
  finiteness check);
* PyTorch: a ``torch.nn`` module translated from the same layer list (Convolution, Pooling with
  Caffe's ceil rule as ``ceil_mode=True``, InnerProduct, ReLU, SoftmaxWithLoss as mean
  cross-entropy; Accuracy only in the test pass), with netspec's initial weights copied in, and
  ``opt.zero_grad(); loss = net(x, y); loss.backward(); opt.step(); loss.item()``.

Both use lr 0.01 (× each blob's lr_mult), momentum 0.9, weight_decay 5e-4 (× decay_mult, coupled
L2 = ``torch.optim.SGD(weight_decay=...)``), fixed lr. Caffe's v ← μv + lr·(g + λW) and
torch's b ← μb + (g + λW), W ← W − lr·b are the same update (v = lr·b) at a fixed lr, so the two
follow the same trajectory; the first loss of both and their loss after the warm-up are printed
as a check of the translation. The MLP is also timed against a hand-written NumPy float32 loop
(forward, backward, SGD momentum).

Iterations alternate between the frameworks (netspec, torch[, numpy], then the next iteration in
the reverse order), so load from elsewhere on the machine hits all of them alike; each time is
the median of ``--iterations`` timed steps after ``--warmup`` steps. Threads: torch's
``set_num_threads``, threadpoolctl's ``threadpool_limits`` (NumPy's OpenBLAS, OpenMP: the hand
NumPy loop) and netspec's ``get_backend(threads=T)``, which netspec spends its own way
(``netspec/parallel.py``: LeNet and CIFAR split each layer's batch over T threads with BLAS at
one thread, the MLP lets BLAS run T threads).
At 2 threads each framework's idle worker threads keep spinning for a while after its step
(OpenBLAS for ~0.1 s after a GEMM) and slow the other one's next step; ``--block K`` alternates
in blocks of K timed steps instead, each after a ``--settle`` pause and one untimed step: the
steady state of a run of one framework (``bench/NOTES.md`` compares the two schedules).

FLOPs (``netspec.tools.flops``): forward multiply-adds of Convolution and InnerProduct layers,
× 2 (mul + add) × 3 (forward, weight gradient, input gradient; this counts the input gradient
of the first layer although no framework computes it). Peak: the median time of a
1024×1024 float32 matmul through NumPy at the same thread count (4096² with CuPy on --gpu).

Memory (CPU): each framework runs a few iterations in its own fresh subprocess (same threads).
The child imports only its own framework, then takes its resident set size (VmRSS) as the
baseline, resets the kernel's high-water mark (``echo 5 > /proc/self/clear_refs``), builds its
net (parameters, optimizer state, buffers), trains, and reports VmHWM − baseline: everything
the framework touches (arrays, tensors, BLAS/oneDNN scratch, Python objects), with import
costs left out on both sides. On --gpu: allocator high-water marks (CuPy's memory pool, torch's
max_memory_reserved), each allocator holding only its own framework's arrays.

    python bench/bench.py                          # all nets, 1 and 2 threads, 200 iterations
    python bench/bench.py --nets lenet --threads 1 --iterations 300 --out bench/results/x.md
    python bench/bench.py --profile                # per-layer ms (netspec time) + torch ops
    python bench/bench.py --gpu --threads 1        # CuPy vs torch CUDA
    python bench/bench.py --block 10               # alternate in blocks of 10 steps

Run it with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (``env -u OPENBLAS_CORETYPE -u
OPENBLAS_L2_SIZE python bench/bench.py``): they force an older OpenBLAS kernel. The kernel
threadpoolctl reports is printed. Which module does what: ``bench/__init__.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # run from a checkout: netspec and this package (bench.*) from here

from bench.layer_profile import profile  # noqa: E402
from bench.nets import NETS  # noqa: E402
from bench.report import caption, checks, environment, finish, lenet_run_lines, table  # noqa: E402
from bench.schedule import bench_one, lenet_run_estimate  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=200, help="timed iterations per framework")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--block", type=int, default=1,
                    help="timed steps per framework before switching (1: alternate every step)")
    ap.add_argument("--settle", type=float, default=0.2,
                    help="seconds of pause before each block when --block > 1")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--nets", default="lenet,cifar10_quick,mlp")
    ap.add_argument("--gpu", action="store_true", help="CuPy vs torch CUDA")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    ap.add_argument("--no-lenet-run", action="store_true", help="skip the full-LeNet-run estimate")
    ap.add_argument("--profile", action="store_true", help="print per-layer profiles instead")
    ap.add_argument("--out", help="also write the report to this Markdown file")
    a = ap.parse_args(argv)
    threads = [int(t) for t in a.threads.split(",")]
    names = [n.strip() for n in a.nets.split(",") if n.strip()]
    for n in names:
        if n not in NETS:
            ap.error(f"unknown net {n!r}; choose from {', '.join(NETS)}")
    if any(os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")):
        print("warning: OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE are set and pin an older OpenBLAS "
              "kernel; rerun with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`", file=sys.stderr)
    if a.gpu:
        # torch is optional (the `compare` extra): loaded when used, not when bench modules are imported
        import torch  # noqa: PLC0415

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
    report = ["# netspec vs PyTorch, one training iteration", "", environment(a.gpu), ""]
    print("\n".join(report), flush=True)
    if a.profile:
        text = profile(names, threads[0], a.iterations)
        print(text)
        report.append(text)
    else:
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for n in names:
                for t in threads:
                    r = bench_one(n, t, a.iterations, a.warmup, a.gpu, not a.no_memory, tmp,
                                  a.block, a.settle)
                    rows.append(r)
                    print(f"  {n} threads={t}: netspec {r['ms']['netspec']:.2f} ms, "
                          f"torch {r['ms']['torch']:.2f} ms"
                          + (f", numpy {r['ms']['numpy']:.2f} ms" if "numpy" in r["ms"] else ""),
                          file=sys.stderr, flush=True)
        tbl = table(rows, a.gpu)
        report += [caption(a.iterations, a.warmup, a.block, a.settle, a.gpu), "", tbl, "",
                   "Checks (same weights, same batch, same update):", "", checks(rows), ""]
        print(tbl + "\n\n" + checks(rows), flush=True)
        if "lenet" in names and not a.gpu and not a.no_lenet_run:
            t = threads[0]
            est = lenet_run_estimate(t, max(a.iterations // 2, 50), 5, a.block, a.settle)
            lines = lenet_run_lines(est, t)
            print("\n".join(lines), flush=True)
            report += lines + [""]
    finish(report, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
