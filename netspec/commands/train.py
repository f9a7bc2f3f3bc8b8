"""``netspec train SOLVER``: train (Caffe's ``caffe train --solver``); see ``workflows.train``."""

from __future__ import annotations

import sys

import click

from .. import workflows
from .options import friendly, threads_option


@click.command("train")
@click.argument("solver_file", type=click.Path(dir_okay=False))
@click.option("--gpu", is_flag=True, help="Run on the GPU with CuPy (overrides solver_mode).")
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
    """
    outcome = workflows.train(solver_file, sets, gpu=gpu, max_iter=max_iter, snapshot=snapshot,
                    weights=weights, allow_partial=allow_partial, dtype=dtype, log_dir=log_dir,
                    quiet=quiet)
    if outcome.result["interrupted"]:
        solver = outcome.solver
        click.echo(f"netspec: interrupted at iteration {solver.iter}; resume with --snapshot "
                   f"{solver.last_snapshot}", err=True)
        sys.exit(130)
