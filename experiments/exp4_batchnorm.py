"""Experiment 4: BatchNorm makes training insensitive to the initial weight scale.

"Deep Learning from Scratch" ch. 6 (batch_norm_test.py; seed 004): MLP 784-100x5-10, ReLU,
the first 1,000 training images, SGD lr 0.01, batch 100, 20 epochs (200 iterations), with and
without BatchNorm + Scale (bias_term) after every hidden InnerProduct, for 16 initial weight
scales (gaussian std of every layer's weights, np.logspace(0, -4, 16): 1 ... 1e-4); train
accuracy on the 1,000 images once per epoch. BatchNorm's eps is the book's 1e-6 (10e-7); a
third run per scale uses Caffe's default 1e-5 (--set layer.bnK.batch_norm_param.eps=1e-05).
48 runs, each

    netspec train solvers/exp_batchnorm.yaml        --set layer.fc1.inner_product_param.weight_filler.std=S ... (fc1..fc6) --log-dir runs/experiments/exp4/bn_K
    netspec train solvers/exp_batchnorm_plain.yaml  --set layer.fc1.inner_product_param.weight_filler.std=S ... (fc1..fc6) --log-dir runs/experiments/exp4/plain_K

    python experiments/exp4_batchnorm.py             # 48 runs, ~2-5 s each on 2 cores

Writes docs/figures/exp4_batchnorm.png (4x4 grid: BN solid, BN with eps 1e-5 dotted,
without dashed) and a Markdown
table on stdout.
"""

from __future__ import annotations

import numpy as np

from common import RUNS, arg_parser, diverged, figure, save, series, train

SCALES = np.logspace(0, -4, num=16)
LAYERS = [f"fc{k}" for k in range(1, 7)]


CAFFE_EPS = [f"layer.bn{k}.batch_norm_param.eps=1e-05" for k in range(1, 6)]


def std_sets(std: float) -> list[str]:
    return [f"layer.{l}.inner_product_param.weight_filler.std={std:.6g}" for l in LAYERS]


def main() -> None:
    args = arg_parser(__doc__).parse_args()
    base = args.runs or RUNS / "exp4"
    fig = figure(figsize=(9.0, 8.0))
    rows = ["| # | weight std | train acc with BN, epoch 20 | BN with Caffe's eps 1e-5 | without BN |",
            "|---|---|---|---|---|"]
    for k, std in enumerate(SCALES):
        runs = {kind: train(f"solvers/exp_batchnorm{suffix}.yaml", base / f"{kind}_{k:02d}",
                            std_sets(std) + extra, plot_only=args.plot_only, reuse=args.reuse, allow_divergence=True)
                for kind, suffix, extra in (("bn", "", []), ("bn_eps1e-5", "", CAFFE_EPS),
                                            ("plain", "_plain", []))}
        ax = fig.add_subplot(4, 4, k + 1)
        final = {}
        for kind, color, ls, label in (("bn", "#1f77b4", "-", "BatchNorm (eps 1e-6, the book's)"),
                                       ("bn_eps1e-5", "#2ca02c", ":", "BatchNorm, Caffe's eps 1e-5"),
                                       ("plain", "#ff7f0e", "--", "without BatchNorm")):
            its, acc = series(runs[kind], 0)
            ax.plot(its / 10, acc, color=color, lw=1.3, ls=ls, label=label)
            nan_at = diverged(runs[kind])
            if nan_at is not None:
                ax.plot([nan_at / 10], [0.05], marker="x", color=color, ms=7)
                ax.text(nan_at / 10 + 0.6, 0.04, f"NaN at it. {nan_at}", color=color, fontsize=7)
                final[kind] = f"diverged (NaN at it. {nan_at})"
            else:
                final[kind] = f"{100 * acc[-1]:.1f} %"
        ax.set_title(f"W std {std:.3g}", fontsize=9)
        ax.set_ylim(0, 1.0)
        ax.set_xlim(0, 20)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        if k % 4:
            ax.set_yticklabels([])
        else:
            ax.set_ylabel("train accuracy", fontsize=8)
        if k < 12:
            ax.set_xticklabels([])
        else:
            ax.set_xlabel("epoch", fontsize=8)
        if k == 15:
            fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8,
                       bbox_to_anchor=(0.5, 0.0))
        rows.append(f"| {k + 1} | {std:.3g} | {final['bn']} | {final['bn_eps1e-5']} | {final['plain']} |")
    fig.suptitle("Exp. 4: MLP 784-100×5-10, 1,000 images, SGD lr 0.01, batch 100 — "
                 "train accuracy per epoch,\nwith BatchNorm (solid; dotted: Caffe's eps 1e-5) and without (dashed)", fontsize=10)
    fig.subplots_adjust(hspace=0.3, wspace=0.08, bottom=0.1)
    save(fig, "exp4_batchnorm.png", dpi=80)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
