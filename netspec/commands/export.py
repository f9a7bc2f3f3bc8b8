"""``netspec export``: a netspec net YAML (and weights) back to Caffe's .prototxt/.caffemodel.

No output replaces a file netspec did not write, or changed since (the prototxt header's
checksum), or any existing .caffemodel, unless ``--force``; then nothing is written.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..caffe.export import export_net
from ..caffe.port import default_output
from .options import friendly


@click.command("export")
@click.argument("net_file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="The .prototxt to write (default: NET_FILE with .prototxt).")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Weights (.npz or .caffemodel) to write into a .caffemodel.")
@click.option("--caffemodel", type=click.Path(dir_okay=False),
              help="The .caffemodel to write (default with --weights: the output's name with "
                   ".caffemodel).")
@click.option("--force", is_flag=True,
              help="Overwrite existing files. Without it, the command stops and writes nothing "
                   "when an output exists, unless it is a .prototxt netspec wrote and nobody "
                   "changed since (its header's checksum matches); an existing .caffemodel "
                   "always stops it.")
@friendly
def command(net_file, output, weights, caffemodel, force):
    """Write NET_FILE as a Caffe .prototxt (and its weights as a .caffemodel).

    Existing files are never overwritten unless netspec wrote them and they are unchanged (a
    prototxt whose first line, netspec's header, still has the rest's checksum), or --force is
    given. An existing .caffemodel is always kept without --force.
    """
    out = Path(output) if output else default_output(Path(net_file), ".prototxt")
    if out.resolve() == Path(net_file).resolve():
        raise click.UsageError("the output would overwrite NET_FILE; give -o")
    if weights and not caffemodel:
        caffemodel = default_output(out, ".caffemodel")
    summary = export_net(net_file, out, weights, caffemodel, force=force)
    for warning in summary["warnings"]:
        click.echo(f"netspec: warning: {warning}", err=True)
    click.echo(f"wrote {summary['prototxt']} ({summary['layers']} layers)")
    if "caffemodel" in summary:
        click.echo(f"wrote {summary['caffemodel']} ({summary['blobs']} blobs)")
