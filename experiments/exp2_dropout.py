"""Experiment 2: Dropout (ratio 0.2 after every hidden ReLU) on experiment 1's set-up.

"Deep Learning from Scratch" ch. 6 (overfit_dropout.py; seed 004): the same MLP and 300
images, SGD lr 0.01, batch 100, no weight decay, 301 epochs = 903 iterations, with and
without Dropout.

    python experiments/exp2_dropout.py               # 6 runs, ~1 min each on 2 cores

runs the two trainings

    netspec train solvers/exp_overfit_dropout.yaml --log-dir runs/experiments/exp2/dropout_0.2
    netspec train solvers/exp_overfit.yaml --set weight_decay=0 --set max_iter=903 --log-dir runs/experiments/exp2/no_dropout

(and both again with --set random_seed=2 and 3) and writes docs/figures/exp2_dropout.png
(seed 1) and Markdown tables on stdout.
"""

from __future__ import annotations

import numpy as np

from common import RUNS, arg_parser, overfit_table_and_figure, series, train

EXTRA_SEEDS = (2, 3)  # the solvers' random_seed is 1: two more seeds, for the spread


def main() -> None:
    args = arg_parser(__doc__).parse_args()
    base = args.runs or RUNS / "exp2"
    runs = [("no dropout", train("solvers/exp_overfit.yaml", base / "no_dropout",
                                 ["weight_decay=0", "max_iter=903"], plot_only=args.plot_only, reuse=args.reuse)),
            ("dropout 0.2", train("solvers/exp_overfit_dropout.yaml", base / "dropout_0.2", [],
                                  plot_only=args.plot_only, reuse=args.reuse))]
    print(overfit_table_and_figure(
        runs, 3, "Exp. 2: 300 training images, MLP 784-100×6-10, SGD lr 0.01 — Dropout",
        "exp2_dropout.png", epochs_shown=(25, 50, 100, 150, 200, 250)))
    rows = ["", "| run | random_seed | epoch 100: train / test / gap | epoch 301: train / test / gap |",
            "|---|---|---|---|"]
    for seed in (1,) + EXTRA_SEEDS:
        for label, solver, sets, name in (
                ("no dropout", "solvers/exp_overfit.yaml", ["weight_decay=0", "max_iter=903"], "no_dropout"),
                ("dropout 0.2", "solvers/exp_overfit_dropout.yaml", [], "dropout_0.2")):
            run = base / (name if seed == 1 else f"{name}_seed{seed}")
            if seed != 1:
                train(solver, run, sets + [f"random_seed={seed}"], plot_only=args.plot_only, reuse=args.reuse)
            its, tr = series(run, 0)
            _, te = series(run, 1)
            cells = []
            for epoch in (100, 301):
                k = int(np.searchsorted(its, 3 * epoch))
                cells.append(f"{100 * tr[k]:.1f} / {100 * te[k]:.1f} / {100 * (tr[k] - te[k]):.1f}")
            rows.append(f"| {label} | {seed} | {cells[0]} | {cells[1]} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
