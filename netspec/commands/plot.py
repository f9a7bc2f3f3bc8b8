"""``netspec plot RUN [RUN ...] -o curves.png``: learning curves of one or more runs."""

from __future__ import annotations

import click

from ..tools.plot import plot_runs
from ..tools.plot_search import is_search_results, plot_search
from .options import friendly


@click.command("plot")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-o", "--output", "output", default="curves.png", show_default=True,
              type=click.Path(dir_okay=False),
              help="Image to write; the format follows the suffix (.png, .svg, .pdf).")
@click.option("--metric", "metrics", multiple=True, metavar="NAME",
              help="Plot only this metric, one panel each (repeatable): a net output such as "
                   "accuracy or loss, lr, weight_norms, or a parameter blob such as conv1/0.")
@click.option("--title", help="A title above the panels.")
@click.option("--dpi", default=100, show_default=True, type=click.IntRange(30, 600),
              help="Resolution of raster images.")
@friendly
def command(runs, output, metrics, title, dpi):
    """Plot training loss, test loss, test accuracy and per-layer weight norms of RUNS.

    Each RUN is a metrics.jsonl (written by `netspec train --log-dir DIR`), a directory holding
    one, or a Caffe-format text log (netspec's or Caffe's own). Several runs are overlaid, one
    colour each, labelled by their directory name or file stem. A single `netspec search`
    results file (results.json) is drawn as the search: validation accuracy over the parameters.
    """
    if len(runs) == 1 and is_search_results(runs[0]):
        out = plot_search(runs[0], output, title=title, dpi=dpi)
    else:
        out = plot_runs(list(runs), output, metrics=list(metrics), title=title, dpi=dpi)
    click.echo(f"Wrote {out}")
