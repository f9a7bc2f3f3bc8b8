"""``netspec export``: a netspec net YAML (and weights) back to Caffe's .prototxt/.caffemodel,
and/or to ONNX (``--onnx``; ``docs/onnx.md``).

With ``--onnx`` the prototxt (and .caffemodel) are written only when ``-o`` or ``--caffemodel``
asks for them too. No output replaces a file netspec did not write, or changed since (the prototxt header's
checksum), or any existing .caffemodel, unless ``--force``; then nothing is written.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..caffe.export import export_net
from ..caffe.outputs import Output, write_outputs
from ..caffe.port import default_output
from ..onnx_export.export import onnx_model
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
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False),
              help="Write the net (TEST phase) with --weights as this ONNX model (opset 17). "
                   "Alone, no prototxt is written; with -o or --caffemodel, those too.")
@click.option("--batch", type=click.IntRange(min=1), default=None, metavar="N",
              help="With --onnx: the batch size of the model's inputs (default: the net's).")
@click.option("--force", is_flag=True,
              help="Overwrite existing files. Without it, the command stops and writes nothing "
                   "when an output exists, unless it is a .prototxt netspec wrote and nobody "
                   "changed since (its header's checksum matches); an existing .caffemodel "
                   "or .onnx always stops it.")
@friendly
def command(net_file, output, weights, caffemodel, onnx_path, batch, force):
    """Write NET_FILE as a Caffe .prototxt (and its weights as a .caffemodel), or as an ONNX
    model with --onnx (docs/onnx.md).

    Existing files are never overwritten unless netspec wrote them and they are unchanged (a
    prototxt whose first line, netspec's header, still has the rest's checksum), or --force is
    given. An existing .caffemodel or .onnx is always kept without --force.
    """
    if batch is not None and not onnx_path:
        raise click.UsageError("--batch applies to --onnx")
    extra = []
    if onnx_path:
        proto = onnx_model(net_file, weights, batch_size=batch)
        if not weights:
            click.echo("netspec: warning: no --weights: the ONNX model holds the net's filler "
                       "values", err=True)
        extra = [Output(Path(onnx_path), proto.SerializeToString(), text=False, option="--onnx")]
        if not output and not caffemodel:
            write_outputs(extra, [net_file, weights], force)
            click.echo(f"wrote {onnx_path} ({len(proto.graph.node)} nodes, opset "
                       f"{proto.opset_import[0].version})")
            return
    out = Path(output) if output else default_output(Path(net_file), ".prototxt")
    if out.resolve() == Path(net_file).resolve():
        raise click.UsageError("the output would overwrite NET_FILE; give -o")
    if weights and not caffemodel:
        caffemodel = default_output(out, ".caffemodel")
    summary = export_net(net_file, out, weights, caffemodel, force=force, extra=extra)
    for warning in summary["warnings"]:
        click.echo(f"netspec: warning: {warning}", err=True)
    click.echo(f"wrote {summary['prototxt']} ({summary['layers']} layers)")
    if "caffemodel" in summary:
        click.echo(f"wrote {summary['caffemodel']} ({summary['blobs']} blobs)")
    if extra:
        click.echo(f"wrote {onnx_path} ({len(proto.graph.node)} nodes, opset "
                   f"{proto.opset_import[0].version})")
