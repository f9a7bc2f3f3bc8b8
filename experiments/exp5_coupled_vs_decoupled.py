"""Experiment 5: Caffe's weight decay vs "W <- W(1 - d)" (decoupled), under SGD, momentum, Adam.

Seeds 001/002: the seeds' MLP (models/mlp.yaml + solvers/mlp.yaml: 784-200-200-10, ReLU,
gaussian std 0.01, batch 100, lr 0.001, decay on the weights only, lambda = 0.001, random_seed 8),
20 epochs of the 60,000 training images = 12,000 iterations per run, every run from the same
initial weights on the same batches. Coupled L2 (lambda*W added to the gradient = 0.5*lambda*||W||^2 in
the loss, Caffe/TensorFlow's l2_loss) against decoupled decay at the matched strength
lambda_dec = lr*lambda = 1e-6 (W <- W*(1 - 1e-6) after each step), and no decay, for three update
rules: plain SGD, SGD with momentum 0.9, Adam (beta1 0.9, beta2 0.999, delta 1e-8). With momentum
one more decoupled run uses lr*lambda/(1 - mu) = 1e-5, the shrink L2 builds up through the velocity.

The seed's NumPy code back-propagates the *summed* cross-entropy (its softmax backward is
p - onehot, never divided by the batch size), so its plain-SGD steps are 100 times those of a
batch-mean loss at the same lr: netspec's SoftmaxWithLoss (VALID = batch mean, Caffe's
default) barely moves at lr 0.001 in 20 epochs. A fourth group therefore runs plain SGD with
--set layer.loss.loss_param.normalization=NONE (the summed loss: the seed's gradient).

    python experiments/exp5_coupled_vs_decoupled.py  # 13 runs, ~1 min each on 2 cores

e.g. netspec train solvers/mlp.yaml --set display=200 --set regularization_type=decoupled \
         --set weight_decay=1e-06 --log-dir runs/experiments/exp5/sgd_decoupled

Prints a Markdown table (final weight norms, the norm of the fc1 weights on the 67 pixels that
are 0 in every training image, test accuracy, relative weight distance to the coupled run) and
writes docs/figures/exp5_decay_norms.png (weight norm per layer over the iterations).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from common import ROOT, RUNS, arg_parser, figure, final_weights, rel_diff, save, series, train, train_events
from netspec.backend import to_numpy
from netspec.data.mnist import load_mnist
from netspec.log import CaffeLog
from netspec.solvers import Solver
from netspec.spec import load_net, load_solver
from netspec.spec.overrides import split_sets

SOLVER = "solvers/mlp.yaml"
LR, LAM, MU = 0.001, 0.001, 0.9
LAYERS = ("fc1", "fc2", "fc3")
COMMON = ["display=200"]
ADAM = ["type=Adam", "momentum=0.9", "momentum2=0.999", "delta=1e-08"]
DEC = lambda lam: ["regularization_type=decoupled", f"weight_decay={lam:g}"]  # noqa: E731

#: rule -> [(label, run name, --set, coupled partner)]
SUM = ["layer.loss.loss_param.normalization=NONE"]
RUNS_ = {
    "SGD, loss summed over the batch (the seed's gradient)": [
        ("no decay", "sgdsum_none", SUM + ["weight_decay=0"], None),
        ("L2 λ=1e-3", "sgdsum_l2", SUM, None),
        ("decoupled lr·λ=1e-6", "sgdsum_decoupled", SUM + DEC(LR * LAM), "sgdsum_l2")],
    "SGD (batch-mean loss: netspec's/Caffe's default)": [("no decay", "sgd_none", ["weight_decay=0"], None),
            ("L2 λ=1e-3", "sgd_l2", [], None),
            ("decoupled lr·λ=1e-6", "sgd_decoupled", DEC(LR * LAM), "sgd_l2")],
    "SGD momentum 0.9": [("no decay", "mom_none", ["momentum=0.9", "weight_decay=0"], None),
                         ("L2 λ=1e-3", "mom_l2", ["momentum=0.9"], None),
                         ("decoupled lr·λ=1e-6", "mom_decoupled", ["momentum=0.9"] + DEC(LR * LAM), "mom_l2"),
                         ("decoupled lr·λ/(1−μ)=1e-5", "mom_decoupled_1e-5",
                          ["momentum=0.9"] + DEC(LR * LAM / (1 - MU)), "mom_l2")],
    "Adam": [("no decay", "adam_none", ADAM + ["weight_decay=0"], None),
             ("L2 λ=1e-3", "adam_l2", ADAM, None),
             ("AdamW, decoupled lr·λ=1e-6", "adamw", ["type=AdamW"] + ADAM[1:] + DEC(LR * LAM), "adam_l2")],
}
STYLE = {"no decay": ":", "L2 λ=1e-3": "-"}
COLORS = {"fc1": "#1f77b4", "fc2": "#ff7f0e", "fc3": "#2ca02c"}


#: float64 controls, in-process (`netspec train` has no dtype option): how far float32 rounding
#: alone moves a run (float32 vs float64, same settings), and the ordering term alone (both float64)
CONTROLS = [("sgdsum_l2", "sgdsum_l2_f64"), ("sgdsum_decoupled", "sgdsum_decoupled_f64")]


def train_float64(sets: list[str], out: Path, reuse: bool, plot_only: bool) -> dict[str, np.ndarray]:
    """Train solvers/mlp.yaml with these --set overrides in float64 (Python API, one process)."""
    if (reuse or plot_only) and out.exists():
        with np.load(out) as z:
            return {k: z[k] for k in z.files}
    if plot_only:
        raise SystemExit(f"--plot-only: {out} does not exist")
    print(f"$ (float64, Python API) netspec train {SOLVER} " + " ".join(f"--set {x}" for x in sets),
          file=sys.stderr, flush=True)
    threadpool_limits(1)
    solver_sets, net_sets = split_sets(sets + ["test_interval=0", "display=0", "snapshot_after_train=false"])
    sp = load_solver(ROOT / SOLVER, solver_sets)
    solver = Solver(sp, net_param=load_net(sp.net, net_sets), log=CaffeLog(quiet=True), dtype="float64")
    t0 = time.perf_counter()
    solver.solve()
    print(f"  {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    w = {f"{l}/0": to_numpy(solver.net.layer_by_name(l).blobs[0].data).astype(np.float64) for l in LAYERS}
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **w)
    return w


def blank_pixels() -> np.ndarray:
    images, _ = load_mnist("train")
    return images.reshape(len(images), -1).max(axis=0) == 0


def main() -> None:
    args = arg_parser(__doc__).parse_args()
    base = args.runs or RUNS / "exp5"
    blank = blank_pixels()
    fig = figure(figsize=(10.0, 8.0))
    rows = [f"| rule | decay | ‖W_fc1‖ | ‖W_fc2‖ | ‖W_fc3‖ | ‖W_fc1‖ on the {blank.sum()} blank pixels "
            "| test acc (epoch 20) | ‖W − W_L2‖/‖W_L2‖ fc1, fc2, fc3 | ‖W − W_none‖/‖W_none‖ fc1 |",
            "|---|---|---|---|---|---|---|---|---|"]
    init = None
    for col, (rule, runs) in enumerate(RUNS_.items()):
        ax = fig.add_subplot(2, 2, col + 1)
        weights = {}
        for label, name, sets, partner in runs:
            run = train(SOLVER, base / name, COMMON + sets, keep_weights=True, plot_only=args.plot_only, reuse=args.reuse)
            w = {l: final_weights(run)[f"{l}/0"] for l in LAYERS}
            weights[name] = w
            ev = train_events(run)
            if init is None:
                init = {l: ev[0]["weight_norms"][f"{l}/0"] for l in LAYERS}
            its = [e["iteration"] for e in ev]
            for l in LAYERS:
                ax.plot(its, [e["weight_norms"][f"{l}/0"] for e in ev], color=COLORS[l], lw=1.2,
                        ls=STYLE.get(label, "--" if "1e-6" in label else "-."),
                        label=f"{l}, {label}" if l == "fc1" else None)
            _, acc = series(run, 0)
            none = weights[runs[0][1]]
            cmp = ", ".join(f"{rel_diff(w[l], weights[partner][l]):.1e}" for l in LAYERS) if partner else ""
            eff = f"{rel_diff(w['fc1'], none['fc1']):.1e}" if name != runs[0][1] else ""
            rows.append(f"| {rule} | {label} | " + " | ".join(f"{np.linalg.norm(w[l]):.3f}" for l in LAYERS)
                        + f" | {np.linalg.norm(w['fc1'][:, blank]):.4f} | {100 * acc[-1]:.2f} % | {cmp} | {eff} |")
        ax.set_title(rule, fontsize=10)
        if col >= 2:
            ax.set_xlabel("iteration")
        if col % 2 == 0:
            ax.set_ylabel("‖W‖₂ of the layer's weights")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", title="fc1 blue, fc2 orange, fc3 green",
                  title_fontsize=7)
    fig.suptitle("Exp. 5: seeds' MLP 784-200-200-10, lr 0.001, 12,000 iterations — coupled L2 "
                 "vs decoupled decay", fontsize=11)
    fig.subplots_adjust(hspace=0.25, top=0.93)
    save(fig, "exp5_decay_norms.png")
    sets_of = {name: sets for runs in RUNS_.values() for _, name, sets, _ in runs}
    controls = ["", "| control (seed's summed loss, plain SGD) | ‖W − W_ref‖/‖W_ref‖ fc1, fc2, fc3 |",
                "|---|---|"]
    f64 = {}
    for ref, name in CONTROLS:
        f64[name] = train_float64(COMMON + sets_of[ref], base / f"{name}.npz", args.reuse, args.plot_only)
        w32 = {l: final_weights(base / ref)[f"{l}/0"] for l in LAYERS}
        controls.append(f"| {ref}: float32 vs float64 | "
                        + ", ".join(f"{rel_diff(w32[l], f64[name][l + '/0']):.1e}" for l in LAYERS) + " |")
    a, b = f64["sgdsum_decoupled_f64"], f64["sgdsum_l2_f64"]
    controls.append("| decoupled vs L2, both float64 | "
                    + ", ".join(f"{rel_diff(a[l + '/0'], b[l + '/0']):.1e}" for l in LAYERS) + " |")
    print("initial weights: " + ", ".join(f"‖W_{l}‖ = {init[l]:.3f}" for l in LAYERS))
    print("\n".join(rows + controls))


if __name__ == "__main__":
    main()
