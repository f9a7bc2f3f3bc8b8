"""``netspec time NET``: where the time goes, per layer (Caffe's ``caffe time``)."""

from __future__ import annotations

import click

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
    import numpy as np  # noqa: PLC0415
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from ..backend import get_backend  # noqa: PLC0415
    from ..net import Net  # noqa: PLC0415
    from ..spec import load_net  # noqa: PLC0415
    from ..spec.overrides import split_sets  # noqa: PLC0415
    from ..tools.timing import time_net  # noqa: PLC0415

    _, net_sets = split_sets(list(sets))
    net = Net(load_net(net_file, net_sets), phase, get_backend(gpu, dtype), np.random.default_rng(0))
    t = time_net(net, iterations)
    where = "GPU" if gpu else f"CPU, {net.backend.threads} threads"
    table = Table(title=f"{net.name or net_file} ({phase}, {where}, {dtype}), "
                        f"mean of {iterations} iterations")
    for col in ("layer", "type", "forward ms", "backward ms"):
        table.add_column(col, justify="right" if "ms" in col else "left")
    for layer in net.layers:
        table.add_row(layer.name, layer.type_name, f"{t.forward_ms[layer.name]:.3f}",
                      f"{t.backward_ms[layer.name]:.3f}")
    console = Console()
    console.print(table)
    console.print(f"Average Forward pass: {t.total_forward_ms:.3f} ms.")
    console.print(f"Average Backward pass: {t.total_backward_ms:.3f} ms.")
    console.print(f"Average Forward-Backward: {t.total_ms:.3f} ms.")
