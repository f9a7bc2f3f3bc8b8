"""Experiment 1: overfitting 300 MNIST images, and coupled L2 weight decay against it.

"Deep Learning from Scratch" ch. 6 (overfit_weight_decay.py; seed 004): MLP
784-100x6-10 (ReLU, He init), the first 300 training images, SGD lr 0.01, batch 100,
201 epochs = 603 iterations, lambda = 0.1 (0.5*lambda*||W||^2 in the loss = coupled L2 on the
weights). Train accuracy = test net 0 (the same 300 images), test accuracy = test net 1 (the
10,000 test images), once per epoch.

    python experiments/exp1_weight_decay.py          # 2 runs, ~1 min each on 2 cores

runs the two trainings

    netspec train solvers/exp_overfit.yaml --set weight_decay=0 --log-dir runs/experiments/exp1/no_decay
    netspec train solvers/exp_overfit.yaml --log-dir runs/experiments/exp1/l2_0.1

and writes docs/figures/exp1_weight_decay.png and a Markdown table on stdout.
"""

from __future__ import annotations

from common import RUNS, arg_parser, overfit_table_and_figure, train

SOLVER = "solvers/exp_overfit.yaml"


def main() -> None:
    args = arg_parser(__doc__).parse_args()
    base = args.runs or RUNS / "exp1"
    runs = [("no decay", train(SOLVER, base / "no_decay", ["weight_decay=0"], plot_only=args.plot_only, reuse=args.reuse)),
            ("L2 λ=0.1", train(SOLVER, base / "l2_0.1", [], plot_only=args.plot_only, reuse=args.reuse))]
    print(overfit_table_and_figure(
        runs, 3, "Exp. 1: 300 training images, MLP 784-100×6-10, SGD lr 0.01 — weight decay",
        "exp1_weight_decay.png", epochs_shown=(25, 50, 100, 150)))


if __name__ == "__main__":
    main()
