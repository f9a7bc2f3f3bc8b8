"""Experiment 3: weight initialisation of a ReLU MLP: std 0.01 vs Xavier vs He.

"Deep Learning from Scratch" ch. 6 (weight_init_compare.py; seed 004): MLP
784-100-100-100-100-10, ReLU, biases 0, SGD lr 0.01, batch 128, 2,000 iterations on the
60,000 training images; the training loss (averaged over 10 iterations, every 10).

Four initialisations of every layer's weights (--set overrides of models/exp_init.yaml, whose
own filler is He):

* std 0.01   gaussian, std 0.01
* Xavier     gaussian, std sqrt(1/n_in) per layer (the book's "Xavier": 0.0357 for fc1, 0.1 after)
* xavier (U) netspec's / Caffe's `xavier` filler: uniform U(-a, a), a = sqrt(3/n_in) — the same
             variance 1/n_in, another distribution
* He         msra: gaussian, std sqrt(2/n_in) (the file as it is)

    python experiments/exp3_weight_init.py          # 4 runs, ~15-30 s each on 2 cores

e.g. the Xavier run is

    netspec train solvers/exp_init.yaml --set layer.fc1.inner_product_param.weight_filler.type=gaussian \
        --set layer.fc1.inner_product_param.weight_filler.std=0.0357 ... (fc2..fc5: std=0.1) \
        --log-dir runs/experiments/exp3/xavier_gaussian

Writes docs/figures/exp3_weight_init.png and a Markdown table on stdout.
"""

from __future__ import annotations

import math

import numpy as np

from common import RUNS, arg_parser, figure, save, train, train_events

SOLVER = "solvers/exp_init.yaml"
FAN_IN = {"fc1": 784, "fc2": 100, "fc3": 100, "fc4": 100, "fc5": 100}


def filler_sets(kind: str) -> list[str]:
    sets = []
    for layer, n in FAN_IN.items():
        key = f"layer.{layer}.inner_product_param.weight_filler"
        if kind == "std0.01":
            sets += [f"{key}.type=gaussian", f"{key}.std=0.01"]
        elif kind == "xavier_gaussian":
            sets += [f"{key}.type=gaussian", f"{key}.std={math.sqrt(1.0 / n):.6g}"]
        elif kind == "xavier_uniform":
            sets += [f"{key}.type=xavier"]
        elif kind != "he":
            raise ValueError(kind)
    return sets


RUNS_ = [("std 0.01", "std0.01", "#1f77b4"),
         ("Xavier (gaussian √(1/n), the book's)", "xavier_gaussian", "#ff7f0e"),
         ("xavier (netspec's uniform, same variance)", "xavier_uniform", "#bcbd22"),
         ("He (msra, gaussian √(2/n))", "he", "#2ca02c")]


def main() -> None:
    args = arg_parser(__doc__).parse_args()
    base = args.runs or RUNS / "exp3"
    fig = figure(figsize=(7.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    rows = []
    for label, kind, color in RUNS_:
        run = train(SOLVER, base / kind, filler_sets(kind), plot_only=args.plot_only, reuse=args.reuse)
        ev = train_events(run)
        its = np.array([e["iteration"] for e in ev])
        loss = np.array([e["loss"] for e in ev])
        ax.plot(its, loss, color=color, lw=1.4, label=label,
                ls="--" if kind == "xavier_uniform" else "-")
        at = {int(i): v for i, v in zip(its, loss)}
        below = its[loss < 1.0]
        rows.append(f"| {label} | " + " | ".join(f"{at[i]:.3f}" for i in (0, 100, 500, 1000, int(its[-1])))
                    + f" | {int(below[0]) if below.size else 'never'} |")
    ax.set_xlabel("iteration (batch 128)")
    ax.set_ylabel("training loss (mean of the last 10 iterations)")
    ax.set_ylim(0, 2.5)
    ax.grid(alpha=0.3)
    ax.set_title("Exp. 3: MLP 784-100×4-10, ReLU, SGD lr 0.01 — weight initialisation", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    save(fig, "exp3_weight_init.png")
    print(f"| initialisation | training loss at it. 0 | 100 | 500 | 1,000 | {int(its[-1]):,} | loss < 1 from it. |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
