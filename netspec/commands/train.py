"""``netspec train SOLVER``: train (Caffe's ``caffe train --solver``); see ``workflows.train``."""

from __future__ import annotations

import os
import re
import sys

import click

from .. import workflows
from ..distributed import PeerFailure, launch
from .options import friendly, threads_option

#: what may follow ``--gpu`` as its value (checked by ``distributed.devices.parse_gpu``):
#: anything but an option or a file name (an existing path, or a name with a dot or a slash)
GPU_VALUE = re.compile(r"^[^-./\\][^./\\]*$")


def gpu_value_args(args: list[str]) -> list[str]:
    """Caffe's ``--gpu`` takes an optional value: ``--gpu`` followed by a device spec (or a
    mistyped one: ``--gpu x`` is an error, not a solver file) becomes ``--gpu=SPEC``, a bare
    ``--gpu`` (before the solver file or another option) ``--gpu=``."""
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            out += args[i:]
            break
        if a == "--gpu":
            nxt = args[i + 1] if i + 1 < len(args) else None
            if nxt is not None and GPU_VALUE.match(nxt) and not os.path.exists(nxt):
                out.append(f"--gpu={nxt}")
                i += 2
                continue
            a = "--gpu="
        out.append(a)
        i += 1
    return out


class TrainCommand(click.Command):
    def parse_args(self, ctx, args):
        return super().parse_args(ctx, gpu_value_args(list(args)))


@click.command("train", cls=TrainCommand)
@click.argument("solver_file", type=click.Path(dir_okay=False))
@click.option("--gpu", metavar="[N|N,M,…|all]", default=None,
              help="Run on the GPU with CuPy (overrides solver_mode): --gpu alone uses the "
                   "solver's device_id, --gpu N device N; --gpu 0,1 or --gpu all start one "
                   "process per GPU (NCCL), or under mpiexec give each rank of a machine its "
                   "own device (docs/distributed.md).")
@click.option("--snapshot", "snapshot", type=click.Path(dir_okay=False),
              help="Resume from a .solverstate.npz written by an earlier run.")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Initialise from these weights (.npz or .caffemodel) to fine-tune.")
@click.option("--allow-partial", is_flag=True,
              help="Accept weights that lack some of the net's blobs (new or renamed layers "
                   "keep their fillers' values); without it that is an error.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a solver field (weight_decay=0) or a layer field "
                   "(layer.fc1.param.0.decay_mult=0). Repeatable.")
@click.option("--max-iter", type=int, help="Stop after this many iterations (same as --set max_iter=N).")
@click.option("--quiet", is_flag=True, help="No log lines.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True,
              help="Floating-point type of blobs and parameters.")
@click.option("--log-dir", type=click.Path(file_okay=False),
              help="Write DIR/metrics.jsonl (one JSON object per display and test step, for "
                   "`netspec plot`) and DIR/train.log (the Caffe-format log).")
@threads_option
@friendly
def command(solver_file, gpu, snapshot, weights, allow_partial, sets, max_iter, quiet, dtype,
            log_dir):
    """Train with SOLVER_FILE (Caffe's `caffe train --solver`).

    Ctrl-C stops after the current batch (a test pass is abandoned), snapshots and exits with
    status 130; a second Ctrl-C stops at once without a snapshot.

    Under `mpiexec -n N`, or with --gpu 0,1 / --gpu all (one process per GPU), each process
    trains as one rank of a data-parallel run: every rank reads 1/N of each global batch of
    N x batch_size, gradients are averaged, only rank 0 logs, tests and snapshots
    (docs/distributed.md).
    """
    devices = launch.devices_to_launch(gpu)
    if devices is not None:          # one child process per GPU, over NCCL
        sys.exit(launch.train_on_gpus(devices))
    try:
        outcome = workflows.train(solver_file, sets, gpu=gpu, max_iter=max_iter,
                                  snapshot=snapshot, weights=weights, allow_partial=allow_partial,
                                  dtype=dtype, log_dir=log_dir, quiet=quiet)
    except PeerFailure:
        sys.exit(1)             # every rank stopped; rank 0 prints the one message
    if outcome.result["interrupted"]:
        solver = outcome.solver
        if solver.last_snapshot is None:     # a rank other than 0: rank 0 names the snapshot
            sys.exit(130)
        click.echo(f"netspec: interrupted at iteration {solver.iter}; resume with --snapshot "
                   f"{solver.last_snapshot}", err=True)
        sys.exit(130)
