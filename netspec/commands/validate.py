"""``netspec validate FILE``: check a net or solver file and show what it builds."""

from __future__ import annotations

from pathlib import Path

import click

from ..tools.report import print_validation
from .options import friendly


@click.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a field.")
@friendly
def command(file, sets):
    """Check a net or solver FILE and print its layers, shapes and per-blob lr/decay."""
    print_validation(Path(file), list(sets))
