"""Command line: ``netspec train | test | validate``.

Every failure prints one paragraph (file:line: field: message) and exits non-zero; a
traceback only with ``--debug``.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import click

from . import commands
from .commands.options import friendly, threads_option


class _LazyGroup(click.Group):
    """The core commands plus one lazily imported module per extra command (netspec/commands)."""

    def list_commands(self, ctx):
        extra = [m.name.replace("_", "-") for m in pkgutil.iter_modules(commands.__path__)
                 if m.name not in commands.NOT_COMMANDS]
        return sorted(set(super().list_commands(ctx)) | set(extra))

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        stem = name.replace("-", "_")
        if not stem.isidentifier() or stem in commands.NOT_COMMANDS:
            return None
        module_name = f"{commands.__name__}.{stem}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:
                return None
            raise
        return module.command


@click.group(cls=_LazyGroup)
@click.version_option(package_name="netspec")
def main():
    """netspec: Caffe-style nets and solvers in YAML, trained with NumPy or CuPy."""


def _load_solver_and_net(solver_file, sets):
    from .spec import load_net, load_solver  # noqa: PLC0415
    from .spec.overrides import split_sets  # noqa: PLC0415

    solver_sets, net_sets = split_sets(list(sets))
    sp = load_solver(solver_file, solver_sets)
    net_file = sp.train_net or sp.net
    net_param = load_net(net_file, net_sets)
    return sp, net_param, solver_sets + net_sets


@main.command()
@click.argument("solver_file", type=click.Path(dir_okay=False))
@click.option("--gpu", is_flag=True, help="Run on the GPU with CuPy (overrides solver_mode).")
@click.option("--snapshot", "snapshot", type=click.Path(dir_okay=False),
              help="Resume from a .solverstate.npz written by an earlier run.")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Initialise from these weights (.npz or .caffemodel) to fine-tune.")
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
def train(solver_file, gpu, snapshot, weights, sets, max_iter, quiet, dtype, log_dir):
    """Train with SOLVER_FILE (Caffe's `caffe train --solver`)."""
    from .log import CaffeLog  # noqa: PLC0415
    from .progress import progress_for  # noqa: PLC0415
    from .snapshot import load_weights  # noqa: PLC0415
    from .solvers import Solver  # noqa: PLC0415

    if max_iter is not None:
        sets = tuple(sets) + (f"max_iter={max_iter}",)
    if gpu:
        sets = tuple(sets) + ("solver_mode=GPU",)
    sp, net_param, applied = _load_solver_and_net(solver_file, sets)
    log = CaffeLog(quiet=quiet)
    writers = []
    if log_dir:
        from .metrics import LogFileWriter, MetricsWriter  # noqa: PLC0415

        writers.append(LogFileWriter(Path(log_dir) / "train.log", append=bool(snapshot)))
        log.listeners.append(writers[-1])
    solver = Solver(sp, log=log, net_param=net_param, dtype=dtype)
    if log_dir:
        writers.append(MetricsWriter(Path(log_dir) / "metrics.jsonl", append=bool(snapshot)))
        solver.listeners.append(writers[-1])
    log.info(f"Solver {solver_file}: type {sp.type}, base_lr {sp.base_lr}, lr_policy {sp.lr_policy}, "
             f"weight_decay {sp.weight_decay} ({sp.regularization_type or 'none'}), "
             f"max_iter {sp.max_iter}, random_seed {solver.seed}, "
             f"{'GPU' if solver.backend.is_gpu else f'CPU ({solver.backend.threads} threads)'}")
    for text, _, _ in applied:
        log.info(f"Override: --set {text}")
    from .tools.report import decay_lines  # noqa: PLC0415

    for line in decay_lines(solver):
        log.info(line)
    if snapshot:
        solver.restore(snapshot)
    elif weights or sp.weights:
        w = weights or sp.weights
        missing, unused = load_weights(solver.net, w)
        log.info(f"Fine-tuning from {w}" + (f" (not in the file, kept from fillers: {missing})" if missing else "")
                 + (f" (unused: {unused})" if unused else ""))
    try:
        with progress_for(sp.max_iter, solver.iter, quiet) as progress:
            result = solver.solve(progress=progress)
        log.info(f"Trained {result['iterations']} iterations in {result['wall_s']:.1f} s "
                 f"({1000 * result['s_per_iter']:.2f} ms/iter)")
    finally:
        for writer in writers:
            writer.close()


@main.command()
@click.option("--model", "model", required=True, type=click.Path(dir_okay=False), help="Network YAML.")
@click.option("--weights", required=True, type=click.Path(dir_okay=False), help="Weights (.npz or .caffemodel).")
@click.option("--iterations", default=50, show_default=True, help="Number of batches to average.")
@click.option("--gpu", is_flag=True, help="Run on the GPU with CuPy.")
@click.option("--phase", type=click.Choice(["TEST", "TRAIN"]), default="TEST", show_default=True)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a layer field.")
@threads_option
@friendly
def test(model, weights, iterations, gpu, phase, sets):
    """Score a trained model: average each net output over ITERATIONS batches."""
    import numpy as np  # noqa: PLC0415

    from .backend import get_backend, to_numpy  # noqa: PLC0415
    from .log import CaffeLog, fmt  # noqa: PLC0415
    from .net import Net  # noqa: PLC0415
    from .snapshot import load_weights  # noqa: PLC0415
    from .spec import load_net  # noqa: PLC0415
    from .spec.overrides import split_sets  # noqa: PLC0415

    _, net_sets = split_sets(list(sets))
    net = Net(load_net(model, net_sets), phase, get_backend(gpu))
    missing, unused = load_weights(net, weights)
    log = CaffeLog()
    if missing:
        log.warn(f"not in {weights}, left as initialised: {', '.join(missing)}")
    sums: dict = {}
    for i in range(iterations):
        net.forward()
        for name in net.output_names:
            sums[name] = sums.get(name, 0.0) + to_numpy(net.blobs[name].data).astype(np.float64)
    for k, name in enumerate(net.output_names):
        for v in np.reshape(sums[name] / iterations, -1):
            log.info(f"{name} = {fmt(float(v))}", "caffe.cpp")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a field.")
@friendly
def validate(file, sets):
    """Check a net or solver FILE and print its layers, shapes and per-blob lr/decay."""
    from .tools.report import print_validation  # noqa: PLC0415

    print_validation(Path(file), list(sets))


if __name__ == "__main__":  # pragma: no cover
    main()
