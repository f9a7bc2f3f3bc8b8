"""The whole search: check the options, open (or continue) the study, run ``--jobs`` worker
processes until ``--trials`` trials are finished, then rank and save the results."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from .config import SearchConfig, SearchError, default_paths
from .results import SearchOutcome, summarize
from .space import parse_param
from .study import count_trials, open_storage, open_study, redact, require_optuna
from .trial import Problem
from .workers import work, worker_main

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NETSPEC_NUM_THREADS")


def run_search(cfg: SearchConfig, echo: Callable[[str], None] | None = None) -> SearchOutcome:
    """Validate, run ``cfg.jobs`` workers until ``cfg.trials`` trials are finished, then rank,
    print and save the results (CSV, JSON, best solver YAML, optional figure)."""
    require_optuna()  # a clear error before any work when optuna is absent
    echo = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    params = [parse_param(t) for t in cfg.params]
    if not params:
        raise SearchError("give at least one --param PATH=KIND:ARGS (e.g. --param "
                          "base_lr=loguniform:1e-6:1e-2)", field="--param")
    names = [p.path for p in params]
    if len(set(names)) != len(names):
        raise SearchError("a --param path is given twice", field="--param")
    if cfg.trials < 1:
        raise SearchError("--trials must be at least 1", field="--trials")
    if cfg.jobs < 1:
        raise SearchError("--jobs must be at least 1", field="--jobs")
    cfg.solver = str(Path(cfg.solver).resolve())
    study_name, out, storage = default_paths(cfg)
    with tempfile.TemporaryDirectory(prefix="netspec-search-") as tmp:
        problem = Problem(cfg, params, tmp)
        cfg.metric, cfg.direction = problem.validate()
        storage_obj = open_storage(storage)
        study = open_study(cfg, storage_obj, study_name, storage_name=redact(storage))
        c = count_trials(study)
        split = problem.split
        echo(f"Search '{study_name}' in {redact(storage)}: {len(params)} parameter(s), "
             f"{cfg.trials} trials of {cfg.epochs} epoch(s) ({c['finished']} finished already), "
             f"{split.n_train} training and {split.n_val} validation records (of {split.n_records} "
             f"in the TRAIN Data layer), {cfg.sampler} sampler, {cfg.pruner} pruner, "
             f"{cfg.jobs} worker process(es)")
        interrupted = False
        try:
            if cfg.jobs == 1:
                work(cfg, problem, echo)
            else:
                run_jobs(cfg)
        except KeyboardInterrupt:
            interrupted = True
    outcome = summarize(cfg, study_name, storage, out, echo)
    outcome.interrupted = interrupted
    if interrupted:
        echo(f"Interrupted: {outcome.counts['finished']} of {cfg.trials} trials are finished and kept in "
             f"{redact(storage)}; run the same command again to continue the study.")
        raise KeyboardInterrupt
    return outcome


def run_jobs(cfg: SearchConfig) -> None:
    """Run ``cfg.jobs`` worker processes (spawned, the CPU threads shared out) to the end."""
    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // cfg.jobs)
    saved = {k: os.environ.get(k) for k in THREAD_ENV}
    for k, v in saved.items():
        if v is None:
            os.environ[k] = str(threads)
    procs = []
    try:
        for i in range(cfg.jobs):
            p = ctx.Process(target=worker_main, args=(asdict(cfg), i), name=f"netspec-search-{i}")
            p.start()
            procs.append(p)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:  # they got the same Ctrl-C; give them time to mark their trials
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
        raise
    bad = [p.exitcode for p in procs if p.exitcode not in (0,)]
    if bad:
        if all(code == 130 for code in bad):
            raise KeyboardInterrupt
        raise SearchError(f"{len(bad)} of {cfg.jobs} worker process(es) failed (exit codes {bad}); "
                          "finished trials are kept: fix the cause and rerun to continue")
