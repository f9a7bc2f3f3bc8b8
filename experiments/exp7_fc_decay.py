"""Experiment 7: weight decay only on the fully connected layers (seed 003; TF's CIFAR-10 choice).

Seed 003's TensorFlow MNIST net: conv 5x5x32 (SAME) -> ReLU -> max-pool 2x2 -> FC 1024 -> ReLU
-> FC 10, weights truncated_normal(stddev=0.1), biases 0.1, Adam lr 1e-4 (beta 0.9, 0.999,
epsilon 1e-8), batch 100, 1,000 steps; wd 0.004 * tf.nn.l2_loss(W) on the two FC weights only
(= coupled L2 0.004 with decay_mult 1 on fc1/fc2 weights, 0 on conv1 and every bias); against
no decay and against Dropout 0.5 on FC1 without decay. Train / test accuracy on the first 1,000
training / test images every 100 iterations (test nets 0 and 1).

    python experiments/exp7_fc_decay.py              # 7 runs, ~4 min each on 2 shared cores

runs the trainings

    netspec train solvers/exp_fc_decay.yaml --set weight_decay=0 --log-dir runs/experiments/exp7/no_decay
    netspec train solvers/exp_fc_decay.yaml --log-dir runs/experiments/exp7/fc_l2_0.004
    netspec train solvers/exp_fc_decay.yaml --set weight_decay=0 \
        --set layer.drop1.dropout_param.dropout_ratio=0.5 --log-dir runs/experiments/exp7/dropout_0.5

and a control with the seed's input scale (its placeholder divides by 255 images that
TensorFlow's read_data_sets already scaled to [0, 1]: pixels x 1/255^2):

    netspec train solvers/exp_fc_decay.yaml --set weight_decay=0 \
        --set layer.mnist.transform_param.scale=1.5378700499807765e-05 (and mnist_train_eval,
        mnist_test) --log-dir runs/experiments/exp7/no_decay_seed_scale

and the three main runs again with --set random_seed=2 (other initial weights, batches and
Dropout masks), and writes docs/figures/exp7_fc_decay.png (random_seed 1) and Markdown tables
on stdout.
"""

from __future__ import annotations

import numpy as np

from common import RUNS, arg_parser, figure, pct, read_metrics, save, series, tests, train

SOLVER = "solvers/exp_fc_decay.yaml"
SEED_SCALE = 1.0 / 255.0 / 255.0
SEED_SCALE_SETS = [f"layer.{name}.transform_param.scale={SEED_SCALE!r}"
                   for name in ("mnist", "mnist_train_eval", "mnist_test")]

# Seed 003's printed accuracies (train = mnist.train.images[:1000], test = mnist.test.images[:1000]),
# printed after the update of steps i = 0, 100, ..., 900, i.e. after 1, 101, ..., 901 updates.
PUBLISHED_ITERS = np.arange(10) * 100 + 1
PUBLISHED = {
    "no decay": ([0.094, 0.892, 0.91, 0.925, 0.945, 0.954, 0.961, 0.965, 0.964, 0.962],
                 [0.089, 0.874, 0.893, 0.925, 0.935, 0.944, 0.951, 0.955, 0.959, 0.956]),
    "L2 0.004 on FC": ([0.107, 0.876, 0.91, 0.923, 0.931, 0.936, 0.956, 0.958, 0.947, 0.947],
                       [0.145, 0.861, 0.909, 0.919, 0.927, 0.939, 0.949, 0.954, 0.95, 0.953]),
    "Dropout 0.5": ([0.132, 0.869, 0.898, 0.917, 0.923, 0.928, 0.938, 0.94, 0.947, 0.944],
                    [0.104, 0.859, 0.889, 0.906, 0.917, 0.925, 0.94, 0.942, 0.941, 0.947]),
}
SHOWN_ITERS = (100, 500, 900, 1000)
EXTRA_SEEDS = (2,)  # the solver's random_seed is 1: one more, for the spread
COLORS = {"no decay": "#1f77b4", "L2 0.004 on FC": "#d62728", "Dropout 0.5": "#2ca02c"}


def norms(run_dir) -> dict[int, dict[str, float]]:
    """{iteration: weight norms} from the test events of net 0."""
    return {int(e["iteration"]): e["weight_norms"] for e in read_metrics(run_dir)
            if e.get("event") == "test" and int(e.get("net") or 0) == 0 and e.get("weight_norms")}


def ms_per_iter(run_dir) -> float:
    """Wall time of the whole run (test phases included) per iteration, in ms."""
    last = max((e for e in read_metrics(run_dir) if "wall_s" in e), key=lambda e: e["wall_s"])
    return 1000.0 * last["wall_s"] / max(int(last["iteration"]), 1)


def pts(x: float) -> str:
    return f"{100 * x:.1f} pts".replace("-", "−")


def main() -> None:
    args = arg_parser(__doc__).parse_args()
    base = args.runs or RUNS / "exp7"
    kw = {"plot_only": args.plot_only, "reuse": args.reuse}
    variants = [("no decay", "no_decay", ["weight_decay=0"]),
                ("L2 0.004 on FC", "fc_l2_0.004", []),
                ("Dropout 0.5", "dropout_0.5", ["weight_decay=0", "layer.drop1.dropout_param.dropout_ratio=0.5"])]
    runs = [(label, train(SOLVER, base / name, sets, **kw)) for label, name, sets in variants]
    control = ("no decay, seed's input scale",
               train(SOLVER, base / "no_decay_seed_scale", ["weight_decay=0"] + SEED_SCALE_SETS, **kw))
    spread = [(label, seed, train(SOLVER, base / f"{name}_seed{seed}", sets + [f"random_seed={seed}"], **kw))
              for seed in EXTRA_SEEDS for label, name, sets in variants]

    rows = ["| run | iteration | train acc | test acc | gap (train − test) |", "|---|---|---|---|---|"]
    for label, run_dir in runs + [control]:
        t = tests(run_dir)
        for it in SHOWN_ITERS:
            tr, te = t[0][it]["accuracy"], t[1][it]["accuracy"]
            rows.append(f"| {label} | {it} | {pct(tr)} | {pct(te)} | {pts(tr - te)} |")
        if label in PUBLISHED:
            ptr, pte = PUBLISHED[label]
            rows.append(f"| published (seed 003): {label} | 901 | {pct(ptr[-1])} | {pct(pte[-1])} "
                        f"| {pts(ptr[-1] - pte[-1])} |")
    print("\n".join(rows))

    rows = ["", "| run | ‖W_conv1‖ | ‖W_fc1‖ | ‖W_fc2‖ | ‖b_conv1‖ | ‖b_fc1‖ | ms / iteration |",
            "|---|---|---|---|---|---|---|"]
    first = norms(runs[0][1])[0]
    rows.append(f"| initial (iteration 0) | {first['conv1/0']:.3f} | {first['fc1/0']:.3f} | {first['fc2/0']:.3f} "
                f"| {first['conv1/1']:.3f} | {first['fc1/1']:.3f} | |")
    for label, run_dir in runs + [control]:
        n = norms(run_dir)
        w = n[max(n)]
        rows.append(f"| {label} | {w['conv1/0']:.3f} | {w['fc1/0']:.3f} | {w['fc2/0']:.3f} "
                    f"| {w['conv1/1']:.3f} | {w['fc1/1']:.3f} | {ms_per_iter(run_dir):.0f} |")
    print("\n".join(rows))

    rows = ["", "| run | random_seed | iteration 900: train / test / gap | iteration 1000: train / test / gap |",
            "|---|---|---|---|"]
    for label, seed, run_dir in [(label, 1, run_dir) for label, run_dir in runs] + spread:
        t = tests(run_dir)
        cells = [f"{100 * t[0][it]['accuracy']:.1f} / {100 * t[1][it]['accuracy']:.1f} / "
                 f"{100 * (t[0][it]['accuracy'] - t[1][it]['accuracy']):.1f}" for it in (900, 1000)]
        rows.append(f"| {label} | {seed} | {cells[0]} | {cells[1]} |")
    print("\n".join(rows))

    fig = figure(figsize=(11.0, 4.2))
    ax = fig.add_subplot(1, 2, 1)
    for label, run_dir in runs:
        its, tr = series(run_dir, 0)
        _, te = series(run_dir, 1)
        ax.plot(its, tr, color=COLORS[label], lw=1.4, marker="o", ms=3, label=f"{label}: train")
        ax.plot(its, te, color=COLORS[label], lw=1.4, ls="--", marker="o", ms=3, label=f"{label}: test")
    for label, (ptr, pte) in PUBLISHED.items():
        ax.plot(PUBLISHED_ITERS, pte, color=COLORS[label], lw=0, marker="x", ms=5, alpha=0.7)
    ax.plot([], [], color="k", lw=0, marker="x", label="published test acc. (seed 003)")
    ax.set_xlabel("iteration (Adam lr 1e-4, batch 100)")
    ax.set_ylabel("accuracy on 1,000 images")
    ax.set_ylim(0.75, 1.0)
    ax.set_xlim(0, 1020)
    ax.grid(alpha=0.3)
    ax.set_title("train (solid) / test (dashed); iteration 0 (≈10 %) off the scale", fontsize=9)
    ax.legend(loc="lower right", fontsize=7, ncol=2)

    ax = fig.add_subplot(1, 2, 2)
    for label, run_dir in runs:
        n = norms(run_dir)
        its = np.array(sorted(n))
        for blob, ls in (("fc1/0", "-"), ("conv1/0", "--")):
            v = np.array([n[i][blob] for i in its])
            ax.plot(its, v / v[0], color=COLORS[label], ls=ls, lw=1.4,
                    label=f"{label}: {blob.split('/')[0]} weights")
    ax.set_xlabel("iteration")
    ax.set_ylabel("‖W‖ / ‖W‖ at iteration 0")
    ax.grid(alpha=0.3)
    ax.set_title("weight norm: fc1 (solid, decayed) and conv1 (dashed, decay_mult 0)", fontsize=9)
    ax.legend(loc="best", fontsize=7)
    fig.suptitle("Exp. 7: MNIST conv 5×5×32 → FC 1024 → FC 10, Adam 1e-4, 1,000 iterations — "
                 "L2 0.004 on the FC weights only vs none vs Dropout 0.5", fontsize=10)
    save(fig, "exp7_fc_decay.png")


if __name__ == "__main__":
    main()
