"""``netspec validate FILE``: check a net or solver file and show what it builds."""

from __future__ import annotations

from pathlib import Path

import click

from ..tools.report import print_validation
from .options import friendly, stand_in_options


@click.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a field.")
@stand_in_options
@friendly
def command(file, sets, stand_ins):
    """Check a net or solver FILE and print its layers, shapes and per-blob lr/decay.

    --input-shape / --no-data check a net whose data is not on this machine: Input layers
    stand in for its data layers (a note says which, with what shapes).
    """
    print_validation(Path(file), list(sets), stand_ins=stand_ins)
