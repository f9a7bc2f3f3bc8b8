"""``netspec convert``: Caffe files to netspec's.

* ``netspec convert net.prototxt [-o net.yaml]``: a net (current, V1 or V0 format) to YAML.
* ``netspec convert solver.prototxt [-o solver.yaml]``: a solver, and the net(s) it names.
* ``netspec convert weights.caffemodel --model net.yaml [-o weights.npz]``: weights to .npz.

No output replaces a file netspec did not write, or changed since (the YAML header's checksum),
or any existing .npz, unless ``--force``; then nothing is written (``netspec/caffe/outputs.py``).
"""

from __future__ import annotations

import click

from ..caffe.port import convert
from .options import friendly


@click.command("convert")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Output file (default: FILE with .yaml, or .npz for a .caffemodel). A solver's "
                   "nets are written beside their .prototxt as .yaml.")
@click.option("--model", type=click.Path(dir_okay=False),
              help="For a .caffemodel: the netspec net YAML the weights are for (checks shapes, "
                   "reshapes legacy 4-D blobs, reports missing and unused blobs).")
@click.option("--drop-unsupported", is_flag=True,
              help="Leave out fields netspec does not model (each named in a warning) instead of "
                   "stopping with an error. Unknown layer types are always errors.")
@click.option("--input-layer", is_flag=True,
              help="Turn the legacy input/input_dim/input_shape header into an Input layer, as "
                   "Caffe's own upgrade does (netspec also reads the header as it is).")
@click.option("--force", is_flag=True,
              help="Overwrite existing files. Without it, the command stops and writes nothing "
                   "when an output exists, unless it is a YAML netspec wrote and nobody changed "
                   "since (its header's checksum matches); an existing .npz always stops it.")
@friendly
def command(file, output, model, drop_unsupported, input_layer, force):
    """Convert a Caffe FILE (.prototxt net or solver, or .caffemodel) to netspec's formats.

    Existing files are never overwritten unless netspec wrote them and they are unchanged (a
    YAML whose first line, netspec's header, still has the rest's checksum), or --force is
    given. An existing .npz is always kept without --force.
    """
    result = convert(file, output, model=model, drop_unsupported=drop_unsupported,
                     input_layer=input_layer, force=force)
    for note in result.notes:
        click.echo(f"netspec: note: {note}", err=True)
    for warning in result.warnings:
        click.echo(f"netspec: warning: {warning}", err=True)
    if result.kind == "weights":
        click.echo(f"wrote {result.outputs[0]} ({result.info.get('blobs')} blobs)")
    elif result.kind == "net":
        click.echo(f"wrote {result.outputs[0]} ({result.info.get('layers')} layers, Caffe "
                   f"{result.info.get('format')} format)")
    else:
        for path in result.outputs:
            click.echo(f"wrote {path}")
