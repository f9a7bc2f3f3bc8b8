"""The figure of a hyperparameter search (``netspec search --plot``), drawn headless.

Panels: the validation metric of every trial over the first two searched parameters (log axes
for log-scaled ones, the search bounds as the axis limits, complete trials coloured by rank with
the best five numbered, pruned trials as grey crosses, diverged ones as red crosses); the metric
against each of those two parameters; and the per-epoch validation curves (the best five in
colour, the rest grey), like the tutorial's figure of its best runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import NetspecError
from .plot import RUN_COLORS, _matplotlib


def load_results(source) -> dict:
    """A search's results: a dict, or the NAME.json that ``netspec search`` writes."""
    if isinstance(source, dict):
        return source
    path = Path(source)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise NetspecError(f"cannot read search results: {e}", file=str(path)) from None
    if not isinstance(data, dict) or "trials" not in data:
        raise NetspecError("not a netspec search results file (no 'trials')", file=str(path))
    return data


def is_search_results(path) -> bool:
    """Whether ``path`` is a results file of ``netspec search`` (NAME.json with 'trials')."""
    path = Path(path)
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("trials"), list) and "metric" in data


def _numeric(p: dict) -> bool:
    return p.get("kind") != "choice" or all(isinstance(c, (int, float)) and not isinstance(c, bool)
                                             for c in p.get("choices", []))


def plot_search(source, output, params: list[str] | None = None, dpi: int = 100,
                title: str | None = None, top: int = 5) -> Path:
    """Draw the search in ``source`` (dict or results JSON) to ``output``; return its path."""
    make = _matplotlib()
    import matplotlib  # noqa: PLC0415 - optional: the 'plot' extra
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415 - optional: the 'plot' extra

    data = load_results(source)
    metric = data.get("metric") or "accuracy"
    label = "validation accuracy" if metric == "accuracy" else f"validation {metric}"
    pinfo = {p["name"]: p for p in data.get("params", [])}
    names = params or [n for n, p in pinfo.items() if _numeric(p)] or list(pinfo)
    names = names[:2]
    trials = data["trials"]
    done = [t for t in trials if t["state"] == "complete"]
    pruned = [t for t in trials if t["state"] == "pruned"]
    diverged = [t for t in trials if t["state"] == "diverged"]
    n_rank = max([t["rank"] for t in done] or [1])
    cmap = matplotlib.colormaps["viridis"]

    def rank_color(t):
        return cmap(0.0 if n_rank <= 1 else (t["rank"] - 1) / (n_rank - 1))

    def last_value(t):
        iv = t.get("intermediate") or {}
        return iv[max(iv, key=int)] if iv else None

    def set_axis(ax, which, name):
        p = pinfo.get(name, {})
        scale = "log" if p.get("log") else "linear"
        (ax.set_xscale if which == "x" else ax.set_yscale)(scale)
        if p.get("low") is not None and p.get("high") is not None:
            lo, hi = float(p["low"]), float(p["high"])
            pad = (hi / lo) ** 0.04 if scale == "log" else None
            lim = (lo / pad, hi * pad) if pad else (lo - 0.04 * (hi - lo), hi + 0.04 * (hi - lo))
            (ax.set_xlim if which == "x" else ax.set_ylim)(*lim)
        (ax.set_xlabel if which == "x" else ax.set_ylabel)(name)

    panels = (["map"] if len(names) == 2 else []) + [f"p{i}" for i in range(len(names))] + ["curves"]
    ncols = 2 if len(panels) > 2 else len(panels)
    nrows = (len(panels) + ncols - 1) // ncols
    fig = make(figsize=(4.8 * ncols, 3.9 * nrows), dpi=dpi, layout="constrained")
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(len(panels))]
    ranked = sorted(done, key=lambda t: t["rank"])
    for ax, panel in zip(axes, panels):
        if panel == "map":
            x, y = names
            for t in pruned:
                ax.scatter(t["params"].get(x), t["params"].get(y), marker="x", color="0.6", s=22, lw=1)
            for t in diverged:
                ax.scatter(t["params"].get(x), t["params"].get(y), marker="x", color="tab:red", s=22, lw=1)
            sc = ax.scatter([t["params"].get(x) for t in ranked[::-1]], [t["params"].get(y) for t in ranked[::-1]],
                            c=[t["rank"] for t in ranked[::-1]], cmap=cmap, vmin=1, vmax=max(n_rank, 2),
                            s=36, edgecolors="k", linewidths=0.4)
            for t in ranked[:top]:
                ax.annotate(str(t["rank"]), (t["params"].get(x), t["params"].get(y)), fontsize=8,
                            xytext=(4, 4), textcoords="offset points", weight="bold")
            if ranked:
                fig.colorbar(sc, ax=ax, label="rank (1 = best)")
            set_axis(ax, "x", x)
            set_axis(ax, "y", y)
            ax.set_title(f"trials over {x} and {y}")
        elif panel.startswith("p"):
            name = names[int(panel[1:])]
            ax.scatter([t["params"].get(name) for t in ranked[::-1]], [t["value"] for t in ranked[::-1]],
                       c=[rank_color(t) for t in ranked[::-1]], s=30, edgecolors="k", linewidths=0.4)
            pv = [(t["params"].get(name), last_value(t)) for t in pruned if last_value(t) is not None]
            if pv:
                ax.scatter(*zip(*pv), marker="x", color="0.6", s=22, lw=1, label="pruned (last value)")
            set_axis(ax, "x", name)
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
            if pv:
                ax.legend(fontsize=8)
            ax.set_title(f"{label} vs {name}")
        else:
            for t in sorted(trials, key=lambda t: (t.get("rank") or 10**9), reverse=True):
                iv = t.get("intermediate") or {}
                if not iv:
                    continue
                steps = sorted(iv, key=int)
                xs, ys = [int(s) for s in steps], [iv[s] for s in steps]
                if t.get("rank") is not None and t["rank"] <= top:
                    ax.plot(xs, ys, color=RUN_COLORS[(t["rank"] - 1) % len(RUN_COLORS)], lw=1.6,
                            label=f"Best-{t['rank']}")
                else:
                    ax.plot(xs, ys, color="0.75", lw=0.7)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
            handles, labels = ax.get_legend_handles_labels()
            if handles:
                order = sorted(range(len(labels)), key=lambda i: labels[i])
                ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=8)
            ax.set_title(f"{label} per epoch")
    counts = data.get("counts") or {}
    fig.suptitle(title or f"search '{data.get('study', '')}': {len(done)} complete"
                 + (f", {len(pruned)} pruned" if pruned else "")
                 + (f", {len(diverged)} diverged" if diverged else "")
                 + (f" of {counts.get('finished')} finished" if counts.get("finished") else ""))
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
