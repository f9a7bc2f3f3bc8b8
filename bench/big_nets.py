"""netspec vs PyTorch and OpenCV dnn on the nets people port from Caffe (``bench/zoo.py``).

Inference (TEST phase, deploy net, batch 1 and 16): netspec's ``Net.forward()``, the PyTorch
translation (``bench/torch_model.py``, eval mode, ``torch.no_grad()``) and OpenCV's dnn reading
netspec's exported prototxt + .caffemodel (``netspec.caffe.opencv``). Training (batch 16 by
default): netspec's ``Solver.step_once()`` against ``zero_grad, forward, backward, SGD step``
in PyTorch, BatchNorm on batch statistics, the same solver settings as ``bench/bench.py``.

Before timing, each net's outputs are checked: the last blob before the Softmax and the Softmax
output of PyTorch and OpenCV against netspec's, same weights (seeded random: the deploy files
have none) and same input; a mismatch over 1e-3 (relative to the largest value) stops the run.
Frameworks alternate step by step in one process (netspec, torch, opencv, then the reverse
order), each time the median of ``--iterations`` steps after ``--warmup``; ratios are
netspec ÷ other. Threads: threadpoolctl's limit (NumPy's BLAS), ``torch.set_num_threads``,
``cv2.setNumThreads`` and netspec's ``get_backend(threads=T)``. Memory (``--memory``): each
framework in a fresh process (``bench/memory.py``'s ``zoo`` child), peak RSS growth over the
imports, for the same step.

    python -m bench.big_nets --nets resnet50,mobilenet --batch 1
    python -m bench.big_nets --train --nets resnet50 --batch 16 --threads 1,2
    python -m bench.big_nets --quick            # batch 1 inference, 5 iterations, training at batch 4
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # run from a checkout: netspec and this package (bench.*) from here

from netspec.layers.conv_columns import tuning, use_tuning  # noqa: E402

from bench.nets import make_solver, set_inputs, weights_of  # noqa: E402
from bench.report import finish, load_average  # noqa: E402
from bench.zoo import ZOO, inference_net, random_weights, set_weights, zoo_inputs, zoo_spec  # noqa: E402

#: nets timed by default: inference and training
INFER_NETS = "resnet50,resnet101,googlenet,alexnet,caffenet,squeezenet10,squeezenet11,mobilenet"
TRAIN_NETS = "resnet50,googlenet,caffenet"
#: training steps' learning rate: random deep nets without BatchNorm (GoogLeNet) diverge at
#: the small bench's 0.01 within a few steps, and netspec's solver stops on a non-finite loss
TRAIN_LR = 1e-4
#: largest accepted |other − netspec| / max |netspec| on the compared blobs
TOLERANCE = 1e-3


def _softmax_bottom(spec: dict) -> tuple[str, str]:
    """(bottom, top) of the deploy net's last Softmax."""
    sm = [lay for lay in spec["layer"] if lay["type"] == "Softmax"][-1]
    bottom = sm["bottom"] if isinstance(sm["bottom"], str) else sm["bottom"][0]
    top = sm["top"] if isinstance(sm["top"], str) else sm["top"][0]
    return bottom, top


def rel_err(ours: np.ndarray, theirs: np.ndarray) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64).reshape(ours.shape)
    return float(np.abs(ours - theirs).max() / max(np.abs(ours).max(), 1e-30))


def build_inference(name: str, batch: int, threads: int, work: str, opencv: bool = True,
                    baseline: dict | None = None, reuse_blobs: bool = False):
    """The inference runners of net ``name`` and their output check: ({framework:
    zero-argument step}, {framework: relative error of its outputs}); with ``baseline``
    (ConvTuning fields) also netspec under that tuning, as "base"."""
    # torch is optional (the `compare` extra): loaded when used, not when bench modules are imported
    import torch  # noqa: PLC0415

    from bench.torch_model import torch_inputs, torch_model  # noqa: PLC0415

    spec = zoo_spec(name, batch)
    inputs = zoo_inputs(spec)
    logits, prob = _softmax_bottom(spec)
    keep = (logits,) if reuse_blobs else None
    net, weights = inference_net(spec, threads, keep_blobs=keep)
    set_inputs(net, inputs)
    net.forward()
    ours = {b: net.blobs[b].data.copy() for b in (logits, prob)}
    model = torch_model(spec, weights)
    tin = torch_inputs(inputs)
    with torch.no_grad():
        _, tb = model(tin, train=False)
    errors = {"torch": max(rel_err(ours[b], tb[b].numpy()) for b in ours)}
    steps = {"netspec": net.forward}
    if baseline:
        with conv_tuning(baseline):
            base, _ = inference_net(spec, threads, weights, keep_blobs=keep)
        set_inputs(base, inputs)
        base.forward()
        errors["base"] = max(rel_err(ours[b], base.blobs[b].data) for b in ours)
        steps["base"] = base.forward

    def torch_step():
        with torch.no_grad():
            model(tin, train=False)
    steps["torch"] = torch_step
    if opencv:
        cv_net = opencv_runner(spec, weights, work, threads)
        for k, x in inputs.items():
            cv_net.setInput(x, k)
        theirs = cv_net.forward([logits, prob])
        errors["opencv"] = max(rel_err(ours[b], t) for b, t in zip((logits, prob), theirs))
        steps["opencv"] = lambda: cv_net.forward(prob)
    return steps, errors


def opencv_runner(spec, weights, work, threads):
    from netspec.caffe.opencv import opencv_net  # noqa: PLC0415  (OpenCV: the compare extra)

    return opencv_net(spec, weights, Path(work) / spec["name"], threads)


def build_training(name: str, batch: int, threads: int, baseline: dict | None = None):
    """({framework: one training step}, {framework: its first loss}). Without Dropout the two
    first losses are the same forward of the same weights and batch and must agree."""
    # torch is optional (the `compare` extra): loaded when used, not when bench modules are imported
    from bench.torch_model import torch_inputs, torch_model, torch_optimizer, torch_train_step  # noqa: PLC0415

    spec = zoo_spec(name, batch, train=True)
    inputs = zoo_inputs(spec)
    solvers = {}
    for key, fields in [("netspec", None)] + ([("base", baseline)] if baseline else []):
        with conv_tuning(fields):
            s = solvers[key] = make_solver(spec, threads=threads, base_lr=TRAIN_LR)
        set_weights(s.net, random_weights(s.net))
        set_inputs(s.net, inputs)
    model = torch_model(spec, weights_of(solvers["netspec"].net))
    torch_step = torch_train_step(model, torch_optimizer(model, TRAIN_LR), torch_inputs(inputs))
    first = {k: s.step_once() for k, s in solvers.items()}
    first["torch"] = torch_step()
    steps = {k: s.step_once for k, s in solvers.items()}
    steps["torch"] = torch_step
    return steps, first


@contextlib.contextmanager
def conv_tuning(fields: dict | None):
    """Convolutions set up inside use ``ConvTuning`` with ``fields`` replaced (None: as is)."""
    old = use_tuning(dataclasses.replace(tuning(), **(fields or {})))
    try:
        yield
    finally:
        use_tuning(old)


def parse_baseline(text: str | None) -> dict | None:
    """``field=value,...`` of ConvTuning (values as Python literals: 0/1, True/False, ints)."""
    if not text:
        return None
    out = {}
    for item in text.split(","):
        k, v = item.split("=")
        out[k.strip()] = ast.literal_eval(v.strip())
    dataclasses.replace(tuning(), **out)        # unknown fields fail here
    return out


def alternate(steps: dict, iterations: int, warmup: int) -> dict[str, float]:
    """Median ms of each step, frameworks alternating (reversed every other round)."""
    names = list(steps)
    for _ in range(warmup):
        for n in names:
            steps[n]()
    times = {n: [] for n in names}
    for i in range(iterations):
        for n in (names if i % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            steps[n]()
            times[n].append(time.perf_counter() - t0)
    return {n: statistics.median(v) * 1e3 for n, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", help=f"comma-separated, from {', '.join(ZOO)} "
                                   f"(default: {INFER_NETS}; with --train: {TRAIN_NETS})")
    ap.add_argument("--batch", default=None, help="comma-separated batch sizes (default 1,16; "
                                                  "training 16)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--train", action="store_true", help="training steps instead of inference")
    ap.add_argument("--no-opencv", action="store_true")
    ap.add_argument("--memory", action="store_true", help="peak memory in fresh processes")
    ap.add_argument("--memory-only", action="store_true", help="only the memory table")
    ap.add_argument("--quick", action="store_true",
                    help="batch 1 (training: 4), 5 iterations, 1 warm-up, 1 thread")
    ap.add_argument("--baseline", help="also time netspec with these ConvTuning fields as 'base' "
                                       "(e.g. pointwise_gemm=0,depthwise_taps=0): before/after "
                                       "in one process")
    ap.add_argument("--reuse-blobs", action="store_true",
                    help="inference: netspec's blobs share memory (Net(reuse_blobs=True))")
    ap.add_argument("--out", help="also write the report to this Markdown file")
    a = ap.parse_args(argv)
    baseline = parse_baseline(a.baseline)
    if a.quick:
        a.iterations, a.warmup = 5, 1
        a.batch = a.batch or ("4" if a.train else "1")
        a.threads = "1"
    names = [n for n in (a.nets or (TRAIN_NETS if a.train else INFER_NETS)).split(",") if n]
    for n in names:
        if n not in ZOO:
            ap.error(f"unknown net {n!r}; choose from {', '.join(ZOO)}")
    batches = [int(b) for b in (a.batch or ("16" if a.train else "1,16")).split(",")]
    threads = [int(t) for t in a.threads.split(",")]
    import torch  # noqa: PLC0415  (the compare extra)

    kind = "training step" if a.train else "inference (forward)"
    lines = [f"# Big nets: netspec vs PyTorch{'' if a.train or a.no_opencv else ' and OpenCV dnn'}, "
             f"{kind}", "",
             f"median of {a.iterations} alternating steps after {a.warmup} warm-up; "
             f"torch {torch.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs; "
             f"load average at start {load_average()}", ""]
    frameworks = ["torch"] if a.train or a.no_opencv else ["torch", "opencv"]
    others = frameworks + (["base"] if baseline else [])
    base_cols = [f"base ÷ {f}" for f in frameworks] if baseline else []
    head = ("| net | batch | threads | netspec ms | " + " | ".join(f"{f} ms" for f in others)
            + " | " + " | ".join(f"÷ {f}" for f in others)
            + "".join(f" | {c}" for c in base_cols) + " | check |")
    if baseline:
        lines.insert(-1, f"base: netspec with ConvTuning {baseline}")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    print("\n".join(lines), flush=True)
    mem_rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in names:
            for b in batches:
                for t in ([] if a.memory_only else threads):
                    with threadpool_limits(t):
                        torch.set_num_threads(t)
                        if a.train:
                            steps, first = build_training(name, b, t, baseline)
                            dropout = any(lay["type"] == "Dropout"
                                          for lay in zoo_spec(name)["layer"])
                            if not dropout and not all(
                                    rel_err(np.float64(first["netspec"]), np.float64(v)) <= TOLERANCE
                                    for v in first.values()):
                                print(f"{name}: first losses differ: {first}", file=sys.stderr)
                                return 1
                            note = ("first loss " + " / ".join(f"{v:.4f}" for v in first.values())
                                    + (" (Dropout: random masks differ)" if dropout else ""))
                        else:
                            steps, errs = build_inference(name, b, t, work, not a.no_opencv,
                                                          baseline, a.reuse_blobs)
                            bad = {k: e for k, e in errs.items() if not e <= TOLERANCE}
                            if bad:
                                print(f"{name}: outputs differ from netspec's: {bad}",
                                      file=sys.stderr)
                                return 1
                            note = "max rel err " + ", ".join(f"{k} {e:.1e}" for k, e in errs.items())
                        ms = alternate(steps, a.iterations, a.warmup)
                    row = (f"| {name} | {b} | {t} | {ms['netspec']:.1f} | "
                           + " | ".join(f"{ms[f]:.1f}" for f in others) + " | "
                           + " | ".join(f"**{ms['netspec'] / ms[f]:.2f}**" for f in others)
                           + "".join(f" | {ms['base'] / ms[f]:.2f}" for f in frameworks if baseline)
                           + f" | {note} |")
                    lines.append(row)
                    print(row, flush=True)
                if a.memory or a.memory_only:
                    from bench.memory import zoo_memory_mib  # noqa: PLC0415

                    mode = "train" if a.train else "infer"
                    mem_rows.append((name, b, {f: zoo_memory_mib(f, name, b, threads[0], mode,
                                                                 a.reuse_blobs)
                                               for f in ["netspec", *frameworks]}))
    if mem_rows:
        fw = ["netspec", *frameworks]
        lines += ["", f"Peak memory, MiB over the imports, fresh process each, {threads[0]} thread(s):",
                  "", "| net | batch | " + " | ".join(fw) + " |", "|---|---|" + "---|" * len(fw)]
        for name, b, m in mem_rows:
            lines.append(f"| {name} | {b} | " + " | ".join(
                "failed" if m[f] is None else f"{m[f]:.0f}" for f in fw) + " |")
        print("\n".join(lines[-len(mem_rows) - 4:]), flush=True)
    finish(lines + [""], a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
