"""``netspec search SOLVER --param base_lr=loguniform:1e-6:1e-2 …``: hyperparameter search with
Optuna on a validation split carved from the training data (see docs/search.md)."""

from __future__ import annotations

import click

from ..search import SearchConfig, run_search
from .options import friendly


@click.command("search")
@click.argument("solver_file", type=click.Path(dir_okay=False, exists=True))
@click.option("--param", "params", multiple=True, metavar="PATH=KIND:ARGS",
              help="A field to search (repeatable): a solver field (base_lr=loguniform:1e-6:1e-2) or "
                   "a layer field (layer.fc1.dropout_param.dropout_ratio=uniform:0:0.5). KIND: "
                   "loguniform:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH, logint:LOW:HIGH, choice:A,B,C.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="A fixed override for every trial, as in `netspec train --set` (repeatable).")
@click.option("--trials", default=100, show_default=True, type=click.IntRange(1),
              help="Finished trials the study should reach (a rerun continues up to this total).")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(1),
              help="Epochs of the train part per trial; the validation metric is reported after each.")
@click.option("--val-fraction", default=0.2, show_default=True, type=float,
              help="Part of the TRAIN Data layer's records held out for validation (shuffled with --seed).")
@click.option("--sampler", type=click.Choice(["tpe", "random"]), default="tpe", show_default=True,
              help="tpe: Optuna's Tree-structured Parzen Estimator; random: independent draws (the "
                   "tutorial's random search).")
@click.option("--pruner", type=click.Choice(["median", "halving", "none"]), default="median",
              show_default=True, help="Stop poor trials early on the per-epoch validation metric.")
@click.option("--metric", help="Validation net output to optimise (default: accuracy).")
@click.option("--direction", type=click.Choice(["maximize", "minimize"]),
              help="Default: maximize, or minimize for a metric named like a loss.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seeds the validation split, the sampler and (for random_seed: -1) the weights.")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1),
              help="Worker processes on this machine, sharing the study's storage.")
@click.option("--storage", metavar="URL|FILE",
              help="Optuna storage shared by all workers: an RDB URL (postgresql://user:pw@host/db, "
                   "sqlite:///search.db) or a journal file path. Default: OUT/search.journal.")
@click.option("--study", "study", metavar="NAME", help="Study name (default: the solver file's stem).")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for NAME.csv, NAME.json and NAME-best.yaml (default: beside a file "
                   "storage, else ./search-NAME).")
@click.option("--best-out", type=click.Path(dir_okay=False),
              help="Write the best configuration as a solver YAML here (default: OUT/NAME-best.yaml).")
@click.option("--plot", type=click.Path(dir_okay=False),
              help="Draw the search (metric over the first two parameters, trials coloured by rank, "
                   "per-epoch curves) to this image; needs matplotlib.")
@click.option("--show", default=10, show_default=True, type=int,
              help="Ranked trials to print (0: all).")
@click.option("--gpu", is_flag=True, help="Train the trials on the GPU with CuPy.")
@click.option("--quiet", is_flag=True, help="No line per finished trial.")
@friendly
def command(solver_file, params, sets, trials, epochs, val_fraction, sampler, pruner, metric, direction,
            seed, jobs, storage, study, out, best_out, plot, show, gpu, quiet):
    """Search hyperparameters of SOLVER_FILE: train each sampled configuration for --epochs on
    the training data less a held-out validation part, rank the trials by validation accuracy
    and write the best as a solver YAML that `netspec train` runs. The test split is never read.

    \b
    netspec search solvers/exp_search.yaml --trials 100 --epochs 50 --sampler random \\
        --param base_lr=loguniform:1e-6:1e-2 --param weight_decay=loguniform:1e-8:1e-4 \\
        --best-out best.yaml --plot search.png
    """
    cfg = SearchConfig(solver=solver_file, params=list(params), sets=list(sets), trials=trials,
                       epochs=epochs, val_fraction=val_fraction, seed=seed, sampler=sampler,
                       pruner=pruner, metric=metric, direction=direction, jobs=jobs, storage=storage,
                       study=study, out=out, best_out=best_out, plot=plot, show=show, gpu=gpu,
                       quiet=quiet)
    run_search(cfg, echo=lambda line: click.echo(line, err=True))
