"""Experiment 6: L1 vs L2 regularisation: L1 gives sparse weights.

Seed 003 (L1 "得到稀疏解": L1 drives some weights to exactly 0, L2 shrinks all of them a little).
The seeds' MLP (models/mlp.yaml) with solvers/exp_l1l2.yaml: plain SGD lr 0.1, batch 100,
10 epochs (6,000 iterations), no decay, coupled L2 at three strengths and coupled L1 at four;
for each run the fraction of weights with |w| < 1e-3 per layer (at initialisation, std 0.01:
8 %) and the test accuracy on the 10,000 test images.

    python experiments/exp6_l1_vs_l2.py              # 8 runs, ~30-60 s each on 2 cores

e.g. netspec train solvers/exp_l1l2.yaml --set regularization_type=L2 --set weight_decay=0.001 \
         --log-dir runs/experiments/exp6/l2_1e-3

Prints a Markdown table and marks, for each kind, the strongest setting whose test accuracy is
within 1 point of the run without decay; writes docs/figures/exp6_l1_vs_l2.png (histograms of
log10|w| per layer for those two runs and the run without decay).
"""

from __future__ import annotations

import numpy as np

from common import RUNS, arg_parser, figure, final_weights, save, series, train

SOLVER = "solvers/exp_l1l2.yaml"
LAYERS = ("fc1", "fc2", "fc3")
THRESHOLD = 1e-3
RUNS_ = ([("none", 0.0)] + [("L2", lam) for lam in (1e-4, 1e-3, 3e-3)]
         + [("L1", lam) for lam in (1e-5, 3e-5, 1e-4, 3e-4)])


def name(kind: str, lam: float) -> str:
    return "none" if kind == "none" else f"{kind.lower()}_{lam:g}"


def main() -> None:
    args = arg_parser(__doc__).parse_args()
    base = args.runs or RUNS / "exp6"
    results = {}
    for kind, lam in RUNS_:
        sets = (["weight_decay=0"] if kind == "none"
                else [f"regularization_type={kind}", f"weight_decay={lam:g}"])
        run = train(SOLVER, base / name(kind, lam), sets, keep_weights=True, plot_only=args.plot_only, reuse=args.reuse)
        w = final_weights(run)
        _, acc = series(run, 0)
        results[(kind, lam)] = ({l: w[f"{l}/0"] for l in LAYERS}, acc[-1])
    ref_acc = results[("none", 0.0)][1]
    chosen = {}
    for kind in ("L2", "L1"):
        ok = [lam for k, lam in RUNS_ if k == kind and results[(kind, lam)][1] >= ref_acc - 0.01]
        if ok:
            chosen[kind] = max(ok)
    rows = ["| decay | test acc | " + " | ".join(f"\\|w\\| < 1e-3 in {l}" for l in LAYERS)
            + " | all weights | ‖W_fc1‖ |", "|---|---|---|---|---|---|---|"]
    for kind, lam in RUNS_:
        w, acc = results[(kind, lam)]
        fr = [np.mean(np.abs(w[l]) < THRESHOLD) for l in LAYERS]
        total = np.mean(np.abs(np.concatenate([w[l].ravel() for l in LAYERS])) < THRESHOLD)
        label = "none" if kind == "none" else f"{kind} λ={lam:g}"
        if chosen.get(kind) == lam:
            label = f"**{label}**"
        rows.append(f"| {label} | {100 * acc:.2f} % | " + " | ".join(f"{100 * f:.1f} %" for f in fr)
                    + f" | {100 * total:.1f} % | {np.linalg.norm(w['fc1']):.3f} |")
    print("\n".join(rows))
    print(f"\nbold: the strongest of each kind within 1 point of no decay ({100 * ref_acc:.2f} %)")

    fig = figure(figsize=(11.0, 3.4))
    bins = np.linspace(-8, 0, 81)
    picks = [("none", 0.0, "#7f7f7f", "no decay")] + [
        (k, chosen[k], c, f"{k} λ={chosen[k]:g}") for k, c in (("L2", "#1f77b4"), ("L1", "#d62728")) if k in chosen]
    for col, layer in enumerate(LAYERS):
        ax = fig.add_subplot(1, 3, col + 1)
        for kind, lam, color, label in picks:
            w = results[(kind, lam)][0][layer].ravel()
            ax.hist(np.log10(np.abs(w) + 1e-12), bins=bins, histtype="step", color=color, lw=1.3,
                    label=f"{label}: {100 * np.mean(np.abs(w) < THRESHOLD):.0f} % < 1e-3",
                    weights=np.full(w.size, 1.0 / w.size))
        ax.axvline(np.log10(THRESHOLD), color="k", lw=0.8, ls=":")
        ax.set_title(f"{layer} weights ({results[('none', 0.0)][0][layer].size:,})", fontsize=10)
        ax.set_xlabel("log10 |w|")
        if col == 0:
            ax.set_ylabel("fraction of weights per bin")
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    fig.suptitle("Exp. 6: seeds' MLP, SGD lr 0.1, 6,000 iterations — L1 vs L2 at test accuracy "
                 "within 1 point of no decay", fontsize=10, y=1.02)
    save(fig, "exp6_l1_vs_l2.png")


if __name__ == "__main__":
    main()
