"""``netspec time NET``: where the time goes, per layer (Caffe's ``caffe time``)."""

from __future__ import annotations

import click

from ..tools.timing import print_timing, time_net_file
from .options import friendly, threads_option


@click.command("time")
@click.argument("net_file", type=click.Path(dir_okay=False))
@click.option("--iterations", default=50, show_default=True, help="Timed iterations (after 5 warm-up).")
@click.option("--phase", type=click.Choice(["TRAIN", "TEST"]), default="TRAIN", show_default=True)
@click.option("--gpu", is_flag=True, help="Time on the GPU with CuPy.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a layer field.")
@threads_option
@friendly
def command(net_file, iterations, phase, gpu, dtype, sets):
    """Average forward, backward and total ms per iteration, and per layer."""
    net, t = time_net_file(net_file, iterations, phase, gpu, dtype, sets)
    where = "GPU" if gpu else f"CPU, {net.backend.threads} threads"
    print_timing(net, t, f"{net.name or net_file} ({phase}, {where}, {dtype}), mean of {iterations} iterations")
