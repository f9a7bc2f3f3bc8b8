"""``netspec schema``: JSON Schemas of net and solver files (editor completion, validation)."""

from __future__ import annotations

from pathlib import Path

import click

from ..tools.schema import SOLVER_SCHEMA_FILE, stale_schemas, write_schemas
from .options import friendly


@click.command("schema")
@click.option("-o", "--output", "output", default="netspec.schema.json", show_default=True,
              type=click.Path(dir_okay=False), help="Where to write the network-file schema.")
@click.option("--solver-out", type=click.Path(dir_okay=False),
              help="Where to write the solver-file schema  [default: netspec.solver.schema.json "
                   "next to --output].")
@click.option("--check", is_flag=True,
              help="Write nothing; exit 1 if the files are missing or out of date (for CI).")
@friendly
def command(output, solver_out, check):
    """Write the JSON Schemas of network and solver files.

    Point your editor at them with a first line such as
    `# yaml-language-server: $schema=../netspec.schema.json` (VS Code's YAML extension) to get
    completion, hover documentation and checking of keys and values while you type.
    """
    solver = Path(solver_out) if solver_out else Path(output).with_name(SOLVER_SCHEMA_FILE)
    if check:
        stale = stale_schemas(output, solver)
        if stale:
            click.echo("netspec: error: out of date: " + ", ".join(map(str, stale))
                       + " (regenerate with `netspec schema`)", err=True)
            raise SystemExit(1)
        click.echo(f"{output} and {solver} are up to date.")
        return
    for path in write_schemas(output, solver):
        click.echo(f"Wrote {path}")
