"""Training and scoring from files, as ``netspec train`` and ``netspec test`` do, for Python.

``train`` loads a solver (YAML or Caffe's prototxt: ``solver_files``) and its net with ``KEY=VALUE`` overrides (``--set``), resumes from a
snapshot or initialises from weights, writes ``metrics.jsonl`` and ``train.log`` to ``log_dir``
and trains, logging in Caffe's format. ``score`` averages each output of a trained net over a
number of batches.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import distributed
from .distributed import devices
from .backend import to_numpy
from .errors import NetspecError
from .log import CaffeLog, fmt
from .metrics import LogFileWriter, MetricsWriter
from .model import load
from .progress import progress_for
from .snapshot import load_weights
from .solver_files import read_solver
from .solvers import Solver
from .solvers.detection_test import DetectionTally, mean_ap


def decay_lines(solver) -> list[str]:
    """One line per learnable blob: lr and the effective weight decay per step at iteration 0.

    L2/L1 (coupled): the shrink per plain-SGD step is lr·lr_mult·λ·decay_mult (more under
    momentum); decoupled: λ·decay_mult·lr_t/base_lr, applied after the update.
    """
    sp = solver.sp
    reg = solver.regularizer
    lr0 = solver.learning_rate(0)
    kind = reg.name if reg else "none"
    lines = [f"Weight decay: {kind}, weight_decay {sp.weight_decay}; per blob at iteration 0:"]
    if reg is not None and reg.timing == "pre" and sp.type in ("SGD", "Nesterov") and sp.momentum:
        lines.append(f"  (coupled decay under momentum {sp.momentum}: the steady-state shrink is "
                     f"1/(1-momentum) = {fmt(1 / (1 - sp.momentum))}x the figure below)")
    for p in solver.net.params:
        rate = lr0 * p.lr_mult
        decay = reg.per_step(p, lr0, sp.base_lr) if reg else 0.0
        frozen = "  (frozen)" if p.lr_mult == 0 else ""
        lines.append(f"  {p.name:<24} lr {fmt(rate):<10} decay/step {fmt(decay):<10} "
                     f"(lr_mult {fmt(p.lr_mult)}, decay_mult {fmt(p.decay_mult)}){frozen}")
    return lines


@dataclass
class TrainOutcome:
    solver: Solver   # the trained solver: its net, iteration, test history
    result: dict     # Solver.solve's: iterations, wall_s, s_per_iter, loss, tests


def gpu_sets(gpu: bool | int | str | None, group: distributed.Group | None) -> list[str]:
    """The solver overrides that ``--gpu`` stands for: False/None: none (solver_mode as the
    file says); True or "": the GPU of the solver's device_id; N: device N; "N,M,…" or "all":
    one device per rank (``distributed/devices.py``): the one netspec's launcher gave this
    rank, or under mpiexec the one at the rank's place on its machine."""
    if gpu is None or gpu is False:
        return []
    if gpu is True or gpu == "":
        return ["solver_mode=GPU"]
    text = str(gpu).strip()
    if group is not None and group.device is not None:     # netspec's launcher chose it
        return ["solver_mode=GPU", f"device_id={group.device}"]
    ids = devices.resolve(text, devices.device_count())
    every = devices.parse_gpu(text) == devices.ALL
    if len(ids) == 1 and (group is None or not every):     # under mpiexec: every rank on it
        return ["solver_mode=GPU", f"device_id={ids[0]}"]
    if group is None:
        raise NetspecError(
            f"--gpu {text} asks for several GPUs: netspec trains on several GPUs as one process "
            f"per GPU: `netspec train SOLVER --gpu {text}` starts them itself, or under MPI "
            f"`mpiexec -n {len(ids)} netspec train SOLVER --gpu {text}` (docs/distributed.md)")
    if len(ids) < group.local_size or (not every and len(ids) != group.local_size):
        raise NetspecError(f"--gpu {text} names {len(ids)} devices but {group.local_size} ranks "
                           "run on this machine: give one device per rank")
    return ["solver_mode=GPU", f"device_id={ids[group.local_rank]}"]


def train(solver_file: str | Path, sets: Sequence[str] = (), *,
          gpu: bool | int | str | None = False,
          max_iter: int | None = None, snapshot: str | Path | None = None,
          weights: str | Path | None = None, allow_partial: bool = False,
          dtype: str = "float32", log_dir: str | Path | None = None,
          quiet: bool = False, distributed_run: bool | None = None) -> TrainOutcome:
    """Train with ``solver_file`` (Caffe's ``caffe train``).

    ``sets``: overrides, as ``netspec train --set``; ``max_iter`` and ``gpu`` (``gpu_sets``)
    are two more. ``distributed_run``: train as one rank of a data-parallel run
    (``netspec/distributed/``); None (default): when started by mpiexec with several
    processes, or by netspec's own launcher (``netspec train --gpu 0,1``). Only rank 0 logs, tests, snapshots and writes ``log_dir``.
    ``snapshot``: resume from this ``.solverstate.npz``; else ``weights`` (or the solver's
    ``weights``): initialise from these to fine-tune (``allow_partial``: the file may lack some
    of the net's blobs, which keep their fillers' values). ``log_dir``: write ``metrics.jsonl`` and
    ``train.log`` there (appended to when resuming). ``quiet``: no log lines on stderr.
    """
    group = distributed.connect() if distributed_run is not False else None
    if distributed_run and group is None:
        raise NetspecError("distributed_run=True but this process was not started by an MPI "
                           "launcher with several processes (mpiexec -n N ...)")
    if group is not None and not group.is_root:
        quiet, log_dir = True, None
    log = CaffeLog(quiet=quiet) if group is None or group.is_root else _silent_log()
    writers = []
    try:
        with distributed.startup(group) as start:
            sets = list(sets)
            if max_iter is not None:
                sets.append(f"max_iter={max_iter}")
            sets += gpu_sets(gpu, group)
            sp, net_param, tests, applied = read_solver(solver_file, sets)
            if log_dir:
                writers.append(LogFileWriter(Path(log_dir) / "train.log", append=bool(snapshot)))
                log.listeners.append(writers[-1])
            if group is None:
                solver = Solver(sp, log=log, net_param=net_param, dtype=dtype,
                                test_net_params=tests, reuse_diffs=True)
            else:
                solver = distributed.DataParallelSolver(sp, group, log=log, net_param=net_param,
                                                        dtype=dtype, test_net_params=tests,
                                                        reuse_diffs=True)
                start.config = distributed.config_digest(sp, net_param, dtype=dtype,
                                                         snapshot=snapshot, weights=weights)
            if log_dir:
                writers.append(MetricsWriter(Path(log_dir) / "metrics.jsonl", append=bool(snapshot)))
                solver.listeners.append(writers[-1])
            where = "GPU" if solver.backend.is_gpu else f"CPU ({solver.backend.threads} threads)"
            if group is not None:
                where += (f" per rank, {group.size} ranks (data-parallel: each iteration "
                          f"reads a global batch of {group.size} x the net's batch_size)")
            log.info(f"Solver {solver_file}: type {sp.type}, base_lr {sp.base_lr}, lr_policy {sp.lr_policy}, "
                     f"weight_decay {sp.weight_decay} ({sp.regularization_type or 'none'}), "
                     f"max_iter {sp.max_iter}, random_seed {solver.seed}, {where}")
            for text, _, _ in applied:
                log.info(f"Override: --set {text}")
            for line in decay_lines(solver):
                log.info(line)
            if snapshot:
                solver.restore(snapshot)
            elif weights or sp.weights:
                w = weights or sp.weights
                missing, unused = load_weights(solver.net, w, allow_partial=allow_partial)
                log.info(f"Fine-tuning from {w}" + (f" (not in the file, kept from fillers: {missing})" if missing else "")
                         + (f" (unused: {unused})" if unused else ""))
        with progress_for(sp.max_iter, solver.iter, quiet) as progress:
            result = solver.solve(progress=progress)
        if not result["interrupted"]:
            log.info(summary_line(solver, result))
    finally:
        for writer in writers:
            writer.close()
    return TrainOutcome(solver, result)


def _silent_log() -> CaffeLog:
    """The log of a rank other than 0: nothing written (rank 0 speaks for the run)."""
    return CaffeLog(stream=io.StringIO(), quiet=True)


def summary_line(solver, result: dict) -> str:
    """The one line that ends a training run: iterations, wall time, ms per iteration, the
    last test outputs and where the weights were written."""
    line = (f"Trained {result['iterations']} iterations in {result['wall_s']:.1f} s "
            f"({1000 * result['s_per_iter']:.2f} ms/iter)")
    if solver.test_history:
        it, outputs = solver.test_history[-1]
        line += f"; test at iteration {it}: " + ", ".join(f"{k} = {fmt(v)}"
                                                          for k, v in outputs.items())
    if solver.last_snapshot:
        weights = str(solver.last_snapshot).replace(".solverstate.npz", ".weights.npz")
        line += f"; weights: {weights}"
    return line


@dataclass
class Scores:
    outputs: dict[str, np.ndarray]   # each net output averaged over the batches (float64)
    missing: list[str]               # parameter blobs not in the weights, left as initialised
    unused: list[str]                # blobs in the weights that the net does not have


def score(model: str | Path, weights: str | Path, *, iterations: int = 50, gpu: bool = False,
          phase: str = "TEST", sets: Sequence[str] = (), allow_partial: bool = False,
          ap_version: str = "Integral") -> Scores:
    """Average each output of the net ``model`` (YAML or Caffe ``.prototxt``, read by
    ``netspec.load``) with ``weights`` over ``iterations`` forward passes (Caffe's
    ``caffe test``); ``sets``: layer overrides; ``allow_partial``: the weights
    may lack some of the net's blobs (they keep their fillers' values). The output of a
    DetectionEvaluate layer is instead tallied over the batches and scored as its mean average
    precision (``ap_version``), as the solver's detection test phase does."""
    m = load(model, weights, phase=phase, gpu=gpu, sets=sets, allow_partial=allow_partial)
    net, missing, unused = m.net, m.missing, m.unused
    detection = {t.name: DetectionTally() for layer, tops in zip(net.layers, net.tops)
                 if layer.type_name == "DetectionEvaluate" for t in tops
                 if t.name in net.output_names}
    sums: dict = {}
    for _ in range(iterations):
        net.forward()
        for name in net.output_names:
            if name in detection:
                detection[name].add(to_numpy(net.blobs[name].data))
            else:
                sums[name] = sums.get(name, 0.0) + to_numpy(net.blobs[name].data).astype(np.float64)
    return Scores({name: (np.float64(mean_ap(detection[name].average_precisions(ap_version)[0]))
                          if name in detection else sums[name] / iterations)
                   for name in net.output_names}, missing, unused)
