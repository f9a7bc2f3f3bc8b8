"""Learning curves of one or more runs (``netspec plot``), drawn headless with matplotlib.

Default panels: training loss, test loss, test accuracy (each against iteration) and the L2
norm of each layer's parameters. Every run has one colour in every panel; within a panel,
several series of one run (several accuracy outputs, several layers) differ in line style.
``metrics=[...]`` replaces the default panels with one panel per named metric: a net output
(train solid, test dashed), ``loss`` (the smoothed training loss and the test ``loss``
output), ``lr``, ``weight_norms`` or one parameter blob such as ``conv1/0``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import NetspecError, suggest
from ..metrics import load_run, run_label

INSTALL_HINT = "pip install 'netspec[plot]'  (or: pip install matplotlib)"
#: one colour per run (matplotlib's tab10 without its gray), in order
RUN_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
              "#bcbd22", "#17becf"]
LINE_STYLES = ["-", "--", ":", "-."]
MARKERS = [None, "o", "s", "^", "v", "D", "x", "+"]


def _matplotlib():
    try:
        import matplotlib  # noqa: PLC0415 - optional: the 'plot' extra
    except ModuleNotFoundError:
        raise NetspecError(f"plotting needs matplotlib, which is not installed: {INSTALL_HINT}") from None
    del matplotlib
    # the Agg canvas directly (no pyplot): headless, and no global backend switch for callers
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - optional: 'plot' extra
    from matplotlib.figure import Figure  # noqa: PLC0415 - optional: the 'plot' extra

    def make(**kw):
        fig = Figure(**kw)
        FigureCanvasAgg(fig)
        return fig
    return make


class Run:
    """One run's events, as series: ``{name: [(iteration, value), ...]}`` per event kind."""

    def __init__(self, label: str, events: list[dict]):
        self.label = label
        self.events = events
        self.test_nets = sorted({int(e.get("net", 0) or 0) for e in events if e.get("event") == "test"})

    def _series(self, kind: str, pick) -> list[tuple[int, float]]:
        """(iteration, value) of every ``kind`` event that has the value; the last event of an
        iteration wins (a resumed run appends events for iterations it redoes)."""
        points: dict[int, float] = {}
        for e in self.events:
            if e.get("event") != kind:
                continue
            v = pick(e)
            if v is None:
                continue
            points[int(e["iteration"])] = float(v)
        return sorted(points.items())

    def train_loss(self):
        def pick(e):
            if e.get("loss") is not None:
                return e["loss"]
            losses = [v for k, v in (e.get("outputs") or {}).items() if "loss" in k and v is not None]
            return sum(losses) if losses else None
        return self._series("train", pick)

    def output_names(self, kind: str) -> list[str]:
        names: list[str] = []
        for e in self.events:
            if e.get("event") == kind:
                for k in e.get("outputs") or {}:
                    if k not in names:
                        names.append(k)
        return names

    def output(self, kind: str, name: str, net: int | None = None):
        def pick(e):
            if net is not None and int(e.get("net", 0) or 0) != net:
                return None
            return (e.get("outputs") or {}).get(name)
        return self._series(kind, pick)

    def lr(self):
        return self._series("train", lambda e: e.get("lr"))

    def blob_names(self) -> list[str]:
        names: list[str] = []
        for e in self.events:
            for k in e.get("weight_norms") or {}:
                if k not in names:
                    names.append(k)
        return names

    def layer_norms(self) -> dict[str, list[tuple[int, float]]]:
        """Per layer: the L2 norm of all its parameter blobs together, sqrt(sum of squares)."""
        layers: list[str] = []
        for b in self.blob_names():
            layer = b.rsplit("/", 1)[0]
            if layer not in layers:
                layers.append(layer)
        out = {}
        for layer in layers:
            def pick(e, layer=layer):
                norms = [v for k, v in (e.get("weight_norms") or {}).items()
                         if k.rsplit("/", 1)[0] == layer and v is not None]
                return sum(v * v for v in norms) ** 0.5 if norms else None
            # train events carry every display step; test events fill in the rest
            pts = dict(self._series("test", pick))
            pts.update(dict(self._series("train", pick)))
            out[layer] = sorted(pts.items())
        return out

    def blob_norm(self, blob: str):
        pts = dict(self._series("test", lambda e: (e.get("weight_norms") or {}).get(blob)))
        pts.update(dict(self._series("train", lambda e: (e.get("weight_norms") or {}).get(blob))))
        return sorted(pts.items())


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Read each path (metrics.jsonl, a directory holding one, or a Caffe log) as a Run."""
    labels = [run_label(p) for p in paths]
    if len(set(labels)) < len(labels):  # two runs named alike: use the paths as given
        labels = [str(p) for p in paths]
    runs = []
    for p, label in zip(paths, labels):
        events = load_run(p)
        if not events:
            raise NetspecError("no training or test events here; a run is a metrics.jsonl "
                               "(netspec train --log-dir DIR), a directory holding one, or a "
                               "Caffe-format log with 'Iteration N, loss = X' lines", file=str(p))
        runs.append(Run(label, events))
    return runs


# -- panels ----------------------------------------------------------------------------------
# A panel: (title, y label, [(run index, series label or None, points, style index)], log-y?)

def _is_acc(name: str) -> bool:
    n = name.lower()
    return "acc" in n or ("top" in n and "loss" not in n)


def _test_series(run: Run, i: int, names: list[str]):
    out = []
    nets = run.test_nets or [0]
    style = 0
    for net in nets:
        for name in names:
            pts = run.output("test", name, net if len(nets) > 1 else None)
            if pts:
                label = name if len(nets) == 1 else f"{name} (test net #{net})"
                out.append((i, label, pts, style))
                style += 1
    return out


def default_panels(runs: list[Run]) -> list[tuple]:
    train, test_loss, test_acc, norms = [], [], [], []
    for i, run in enumerate(runs):
        pts = run.train_loss()
        if pts:
            train.append((i, "loss (smoothed)", pts, 0))
        names = run.output_names("test")
        test_loss += _test_series(run, i, [n for n in names if "loss" in n.lower()])
        test_acc += _test_series(run, i, [n for n in names if _is_acc(n) and "loss" not in n.lower()])
        for k, (layer, lpts) in enumerate(run.layer_norms().items()):
            if lpts:
                norms.append((i, layer, lpts, k))
    panels = [("Training loss", "loss", train, False), ("Test loss", "loss", test_loss, False),
              ("Test accuracy", "accuracy", test_acc, False),
              ("Weight L2 norm per layer", "‖W‖₂", norms, False)]
    return [p for p in panels if p[2]]


def metric_panels(runs: list[Run], metrics: Sequence[str]) -> list[tuple]:
    panels = []
    known: set[str] = {"loss", "lr", "weight_norms"}
    for metric in metrics:
        series = []
        for i, run in enumerate(runs):
            known.update(run.output_names("train"), run.output_names("test"), run.blob_names())
            if metric == "lr":
                pts = run.lr()
                if pts:
                    series.append((i, None, pts, 0))
                continue
            if metric in ("weight_norms", "weight_norm", "norms"):
                for k, (layer, lpts) in enumerate(run.layer_norms().items()):
                    if lpts:
                        series.append((i, layer, lpts, k))
                continue
            if metric in run.blob_names():
                series.append((i, None, run.blob_norm(metric), 0))
                continue
            if metric == "loss":
                pts = run.train_loss()
                if pts:
                    series.append((i, "train (smoothed)", pts, 0))
            else:
                pts = run.output("train", metric)
                if pts:
                    series.append((i, f"train {metric}", pts, 0))
            for j, (_, label, tpts, _) in enumerate(_test_series(run, i, [metric])):
                series.append((i, f"test {label}", tpts, j + 1))
        if not series:
            raise NetspecError(f"no run has a metric '{metric}'.{suggest(metric, known)} "
                               f"Available: {', '.join(sorted(known))}", field="--metric")
        ylabel = "‖W‖₂" if metric in ("weight_norms", "weight_norm", "norms") or "/" in metric else metric
        panels.append((metric, ylabel, series, metric == "lr"))
    return panels


def plot_runs(paths: Sequence[str | Path], out: str | Path, metrics: Sequence[str] = (),
              title: str | None = None, dpi: int = 100) -> Path:
    """Draw the runs' curves into ``out`` (.png, .svg, .pdf ...); return the path written."""
    Figure = _matplotlib()
    runs = load_runs(paths)
    panels = metric_panels(runs, metrics) if metrics else default_panels(runs)
    if not panels:
        raise NetspecError("the runs hold no loss, accuracy or weight-norm values to plot")
    n = len(panels)
    cols = 1 if n == 1 else 2
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(6.2 * cols, 4.0 * rows + 0.6), dpi=dpi, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    from matplotlib.lines import Line2D  # noqa: PLC0415 - optional: the 'plot' extra

    for ax, (ptitle, ylabel, series, logy) in zip(axes, panels):
        styles: dict[int, str] = {}
        for run_i, label, pts, style in series:
            xs = [p[0] for p in pts]
            ys = [p[1] for p in pts]
            ls = LINE_STYLES[style % len(LINE_STYLES)]
            marker = MARKERS[(style // len(LINE_STYLES)) % len(MARKERS)]
            if len(xs) == 1:
                marker = marker or "o"
            ax.plot(xs, ys, color=RUN_COLORS[run_i % len(RUN_COLORS)], linestyle=ls, marker=marker,
                    markersize=3, linewidth=1.5)
            if label is not None:
                styles.setdefault(style, label)
        ax.set_title(ptitle)
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        if logy:
            ax.set_yscale("log")
        ax.grid(True, color="#dddddd", linewidth=0.6)
        if len(styles) > 1 or (metrics and styles):  # which line style is which series (gray)
            handles = [Line2D([], [], color="#555555", linestyle=LINE_STYLES[s % len(LINE_STYLES)],
                              marker=MARKERS[(s // len(LINE_STYLES)) % len(MARKERS)], markersize=3)
                       for s in styles]
            ax.legend(handles, list(styles.values()), fontsize="small", loc="best")
    run_handles = [Line2D([], [], color=RUN_COLORS[i % len(RUN_COLORS)], linewidth=2.5)
                   for i in range(len(runs))]
    fig.legend(run_handles, [r.label for r in runs], loc="outside upper center",
               ncols=min(len(runs), 4), frameon=False)
    if title:
        fig.suptitle(title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out)
    except ValueError as e:  # unknown format
        raise NetspecError(f"cannot write a plot in this format: {e}", file=str(out)) from None
    return out
