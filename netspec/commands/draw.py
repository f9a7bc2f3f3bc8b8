"""``netspec draw NET -o net.svg``: the net as a graph (Caffe's draw_net.py)."""

from __future__ import annotations

import click

from ..tools.draw import draw_net
from .options import friendly


@click.command("draw")
@click.argument("net_file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "output", default="net.svg", show_default=True,
              type=click.Path(dir_okay=False),
              help="File to write; the format follows the suffix (.svg, .png, .pdf, or .dot for "
                   "the Graphviz source).")
@click.option("--phase", type=click.Choice(["TRAIN", "TEST"]), default="TRAIN", show_default=True,
              help="Which phase's layers to draw.")
@click.option("--rankdir", type=click.Choice(["LR", "TB", "RL", "BT"]), default="LR",
              show_default=True, help="Direction of the graph: left to right, top to bottom ...")
@click.option("--show-splits", is_flag=True,
              help="Also draw the Split layers netspec inserts for blobs read by several layers.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a layer field first (layer.conv1.convolution_param.num_output=32).")
@friendly
def command(net_file, output, phase, rankdir, show_splits, sets):
    """Draw NET_FILE: layers as boxes with their key parameters, blobs as edges with shapes.

    Needs the graphviz Python package and Graphviz's dot program
    (pip install 'netspec[draw]'; apt-get install graphviz).
    """
    out, warning = draw_net(net_file, output, phase=phase, rankdir=rankdir,
                            show_splits=show_splits, sets=sets)
    if warning:
        click.echo(f"netspec: warning: {warning}", err=True)
    click.echo(f"Wrote {out}")
