"""Coupled L2 vs decoupled weight decay on the seeds' MLP, under SGD, momentum and Adam.

Trains models/mlp.yaml (784-200-200-10, ReLU, gaussian std 0.01 init, decay on the weights
only) with solvers/mlp.yaml's seed, batch and λ_L2 = 0.001, for a short budget, once per row of
RUNS, one run at a time. Every run starts from the same initial weights and sees the same
batches (same random_seed), so the rows differ only in the update rule and the decay.

Matched strength: a decoupled run uses λ_dec = lr·λ_L2, the per-step shrink that coupled L2
gives under plain SGD (netspec's decoupled shrink is W ← W·(1 − λ_dec·lr_t/base_lr)).

    python experiments/decay_experiment.py               # 1 epoch (600 iterations) per run
    python experiments/decay_experiment.py --iters 1200  # 2 epochs

Prints a Markdown table: final L2 norm of each layer's weight blob and of the fc1 weights that
read always-blank pixels (no data gradient there: only the decay moves them), test accuracy and
loss on the 10,000 test images, and for each decoupled row (and each float64 control) the
relative distance of its weights from the row it is matched with.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netspec.backend import to_numpy  # noqa: E402
from netspec.data.mnist import load_mnist  # noqa: E402
from netspec.log import CaffeLog  # noqa: E402
from netspec.solvers import Solver  # noqa: E402
from netspec.spec import load_net, load_solver  # noqa: E402
from netspec.spec.overrides import split_sets  # noqa: E402

SOLVER = ROOT / "solvers" / "mlp.yaml"
LAYERS = ("fc1", "fc2", "fc3")
LAM = 0.001  # the seeds' λ_L2 (solvers/mlp.yaml)
SGD_LR, MOM_LR, ADAM_LR, MU = 0.1, 0.01, 0.001, 0.9
ADAM = {"momentum": 0.9, "momentum2": 0.999, "delta": 1e-8}  # mlp.yaml has momentum 0 (plain SGD)


def _run(name, rule, lr, decay, lam, compare_to=None, dtype="float32", **extra):
    sets = [f"type={rule}", f"base_lr={lr:g}", f"weight_decay={lam:g}"]
    if lam:
        sets.append(f"regularization_type={decay}")
    sets += [f"{k}={v}" for k, v in extra.items()]
    return {"name": name, "sets": sets, "compare_to": compare_to, "dtype": dtype}


#: (row label, --set overrides); decoupled rows name the coupled row they are matched with
RUNS = [
    _run("SGD, no decay", "SGD", SGD_LR, None, 0),
    _run("SGD, L2 λ=1e-3", "SGD", SGD_LR, "L2", LAM),
    _run("SGD, decoupled λ=lr·λ₂=1e-4", "SGD", SGD_LR, "decoupled", SGD_LR * LAM, "SGD, L2 λ=1e-3"),
    # controls: how far float32 rounding alone moves a run in 600 steps, and the ordering term
    # alone (both runs float64)
    _run("SGD, L2 λ=1e-3, float64", "SGD", SGD_LR, "L2", LAM, "SGD, L2 λ=1e-3", dtype="float64"),
    _run("SGD, decoupled λ=1e-4, float64", "SGD", SGD_LR, "decoupled", SGD_LR * LAM,
         "SGD, L2 λ=1e-3, float64", dtype="float64"),
    _run("SGD μ=0.9, no decay", "SGD", MOM_LR, None, 0, momentum=MU),
    _run("SGD μ=0.9, L2 λ=1e-3", "SGD", MOM_LR, "L2", LAM, momentum=MU),
    _run("SGD μ=0.9, decoupled λ=lr·λ₂=1e-5", "SGD", MOM_LR, "decoupled", MOM_LR * LAM,
         "SGD μ=0.9, L2 λ=1e-3", momentum=MU),
    _run("SGD μ=0.9, decoupled λ=lr·λ₂/(1−μ)=1e-4", "SGD", MOM_LR, "decoupled",
         MOM_LR * LAM / (1 - MU), "SGD μ=0.9, L2 λ=1e-3", momentum=MU),
    _run("Adam, no decay", "Adam", ADAM_LR, None, 0, **ADAM),
    _run("Adam, L2 λ=1e-3", "Adam", ADAM_LR, "L2", LAM, **ADAM),
    _run("AdamW, decoupled λ=lr·λ₂=1e-6", "AdamW", ADAM_LR, "decoupled", ADAM_LR * LAM,
         "Adam, L2 λ=1e-3", **ADAM),
]


def train(sets: list[str], iters: int, dtype: str) -> tuple[dict[str, np.ndarray], dict[str, float], float]:
    """Train one configuration; return (final weights per layer, test outputs, seconds)."""
    common = [f"max_iter={iters}", "test_interval=0", "display=0", "snapshot=0",
              "snapshot_after_train=false"]
    solver_sets, net_sets = split_sets(sets + common)
    sp = load_solver(SOLVER, solver_sets)
    solver = Solver(sp, net_param=load_net(sp.net, net_sets), log=CaffeLog(quiet=True), dtype=dtype)
    t0 = time.perf_counter()
    solver.solve()
    seconds = time.perf_counter() - t0
    weights = {name: to_numpy(solver.net.layer_by_name(name).blobs[0].data).astype(np.float64)
               for name in LAYERS}
    return weights, solver.test(0), seconds


def initial_weights() -> dict[str, np.ndarray]:
    solver_sets, net_sets = split_sets(["max_iter=1"])
    sp = load_solver(SOLVER, solver_sets)
    solver = Solver(sp, net_param=load_net(sp.net, net_sets), log=CaffeLog(quiet=True))
    return {name: to_numpy(solver.net.layer_by_name(name).blobs[0].data).astype(np.float64)
            for name in LAYERS}


def blank_pixels() -> np.ndarray:
    """Pixels that are 0 in every training image: fc1 weights reading them get no data
    gradient, only the decay."""
    images, _ = load_mnist("train")
    return images.reshape(len(images), -1).max(axis=0) == 0


def cells(w: dict[str, np.ndarray], blank: np.ndarray) -> str:
    return " | ".join([f"{np.linalg.norm(w[n]):.4f}" for n in LAYERS]
                      + [f"{np.linalg.norm(w['fc1'][:, blank]):.4f}"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=600, help="iterations per run (600 = 1 epoch)")
    ap.add_argument("--only", nargs="*", help="run only rows whose label contains one of these")
    args = ap.parse_args()

    runs = [r for r in RUNS if not args.only or any(o in r["name"] for o in args.only)]
    init, blank = initial_weights(), blank_pixels()
    header = ("| run | " + " | ".join(f"‖W_{n}‖" for n in LAYERS) + f" | ‖W_fc1‖ on the {blank.sum()} "
              "blank pixels | test acc | test loss | ‖W − W_ref‖/‖W_ref‖ (fc1, fc2, fc3) |")
    rows = [header, "|" + "---|" * (len(LAYERS) + 5), f"| initial weights | {cells(init, blank)} | | | |"]
    results = {}
    for run in runs:
        weights, test, seconds = train(run["sets"], args.iters, run["dtype"])
        results[run["name"]] = weights
        print(f"# {run['name']}: {seconds:.1f} s  (--set {' --set '.join(run['sets'])})",
              file=sys.stderr, flush=True)
        gap = ""
        ref = results.get(run["compare_to"])
        if ref is not None:
            gap = ", ".join(f"{np.linalg.norm(weights[n] - ref[n]) / np.linalg.norm(ref[n]):.1e}"
                            for n in LAYERS) + f" (ref: {run['compare_to']})"
        rows.append(f"| {run['name']} | {cells(weights, blank)} | {100 * test['accuracy']:.2f} % "
                    f"| {test['loss']:.4f} | {gap} |")
    print(f"seeds' MLP, batch 100, {args.iters} iterations, random_seed 8, float32 unless marked; "
          f"SGD lr {SGD_LR}, momentum lr {MOM_LR}, Adam lr {ADAM_LR}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
