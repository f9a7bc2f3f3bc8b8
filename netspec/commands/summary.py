"""``netspec summary NET``: per-layer shapes, parameters, multipliers, FLOPs and memory."""

from __future__ import annotations

import json

import click
from rich.console import Console

from ..tools.summary import print_summary, summarize_file
from .options import friendly, stand_in_options


@click.command("summary")
@click.argument("net_file", type=click.Path(dir_okay=False))
@click.option("--phase", type=click.Choice(["TRAIN", "TEST"]), default="TRAIN", show_default=True)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a layer field first (layer.mnist.data_param.batch_size=1).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of a table.")
@stand_in_options
@friendly
def command(net_file, phase, sets, as_json, stand_ins):
    """Per-layer output shapes, parameters, lr/decay multipliers, FLOPs and memory of NET_FILE.

    NET_FILE is a network file or a solver file (its net is used). FLOPs are for one forward
    pass of one batch, counting a multiply-add as 2. --input-shape / --no-data build it
    without reading its data (Input layers stand in for the data layers).
    """
    shapes, no_data = stand_ins or ({}, False)
    info = summarize_file(net_file, phase, sets, shapes, no_data)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    console = Console()
    if not console.is_terminal:  # piped or captured: wide enough that numbers never wrap
        console = Console(width=max(console.width, 160))
    print_summary(info, console)
