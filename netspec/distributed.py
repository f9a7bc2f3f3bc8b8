"""Data-parallel training over MPI, with Caffe's multi-GPU semantics (``docs/distributed.md``).

``mpiexec -n N netspec train solver.yaml`` starts N ranks. Each holds the whole net and reads
its share of every batch (``netspec/data/shard.py``: rank r keeps the items ≡ r mod N of the
global batch of N·B). One iteration on every rank:

  1. forward/backward ``iter_size`` times on its share (gradients accumulate in ``flat_diff``)
  2. status all-reduce of [failed, stop requested, loss]: a rank that raised, or a Ctrl-C on
     any rank, stops every rank at the same point; the displayed loss is the mean over ranks
  3. gradient all-reduce, in place on the flat buffer: g ← (Σ_ranks g) / N
  4. the identical update (clipping on the averaged gradient, iter_size, decay, rule)

so N ranks × batch B compute what one process with batch N·B computes, up to the order of the
sums. Parameters and solver state (a resume's too) are broadcast from rank 0 at the start; each
rank's generator is seeded with random_seed + rank (Dropout masks and random crops differ per
rank, as in Caffe); BatchNorm statistics stay per rank. Only rank 0 logs, tests and snapshots.

Start-up is one agreement: every rank loads its files and builds its solver, then all exchange
(error, hash of the parsed solver and nets); any failure or any difference stops every rank
with one message naming the rank. A rank that is SIGKILLed makes the launcher end the others.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import parallel
from .arrays import get_array_module, to_numpy
from .data.shard import Shard
from .errors import NetspecError
from .solvers import Solver

#: environment variables in which MPI launchers give the number of processes started: MPICH's
#: and Intel MPI's Hydra (also srun --mpi=pmi2), Open MPI's mpirun, MVAPICH2's
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
#: the solver fields that may differ between ranks (each rank's own GPU)
PER_RANK_FIELDS = ("device_id",)


class DistributedError(NetspecError):
    """A failure that stopped every rank; its message names the rank(s) and the cause."""


class PeerFailure(DistributedError):
    """Raised on ranks other than 0 when every rank stops: rank 0 prints the message."""


def launched_size(environ=os.environ) -> int:
    """How many processes an MPI launcher started together with this one (1: none)."""
    sizes = []
    for name in SIZE_VARIABLES:
        try:
            sizes.append(int(environ.get(name, "1")))
        except ValueError:
            pass
    return max(sizes, default=1)


@dataclass
class Group:
    """The ranks of one data-parallel run: an mpi4py communicator and what each rank needs
    to know about the others."""

    comm: Any
    rank: int
    size: int
    local_rank: int          # rank among the ranks on this machine
    local_size: int          # ranks on this machine
    seed: int                # rank 0's random seed, used when the solver's random_seed < 0
    MPI: Any = field(repr=False, default=None)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def sum_(self, array) -> None:
        """array ← Σ over ranks of array, in place (a GPU array goes through host memory)."""
        host = _host(array)
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        if host is not array:
            array[...] = get_array_module(array).asarray(host)

    def bcast_(self, array) -> None:
        """array ← rank 0's array, in place."""
        host = _host(array)
        self.comm.Bcast(host, root=0)
        if host is not array:
            array[...] = get_array_module(array).asarray(host)

    def agree(self, error: BaseException | None, where: str) -> list:
        """Every rank's (error message or None); raise the agreed error if any rank failed
        (rank 0 a DistributedError with the message, the others a PeerFailure)."""
        messages = self.comm.allgather(None if error is None else describe(error))
        if any(m is not None for m in messages):
            raise self.failure(messages, where)
        return messages

    def failure(self, messages: list, where: str) -> DistributedError:
        """The error every rank raises when the ranks whose ``messages`` are not None failed."""
        failed = [(r, m) for r, m in enumerate(messages) if m is not None]
        if len({m for _, m in failed}) == 1:
            if len(failed) == self.size:
                who = "every rank"
            else:
                who = ("rank " if len(failed) == 1 else "ranks ") + ", ".join(
                    str(r) for r, _ in failed)
            text = f"{who} of {self.size} failed {where}: {failed[0][1]}"
        else:
            text = f"{len(failed)} of {self.size} ranks failed {where}: " + "; ".join(
                f"rank {r}: {m}" for r, m in failed)
        text += " (every rank stopped)"
        return DistributedError(text) if self.is_root else PeerFailure(text)

    def abort(self, error: BaseException, where: str) -> None:
        """Print one line naming this rank and the cause, then end every rank (MPI_Abort): for
        a failure where the ranks cannot agree any more (between two collectives)."""
        print(f"netspec: error: rank {self.rank} of {self.size} failed {where}: "
              f"{describe(error)} (aborting every rank)", file=sys.stderr, flush=True)
        self.comm.Abort(1)


def _host(array) -> np.ndarray:
    """``array`` itself when MPI can use it in place (contiguous NumPy), else a host copy."""
    if isinstance(array, np.ndarray) and array.flags.c_contiguous:
        return array
    return np.ascontiguousarray(to_numpy(array))


def describe(error: BaseException) -> str:
    """One line for an error of any rank, as the command line would print it."""
    if isinstance(error, NetspecError):
        return str(error)
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return f"internal error: {type(error).__name__}: {error}"


def connect(environ=os.environ) -> Group | None:
    """The group of ranks when this process was started by an MPI launcher with N > 1
    processes, else None. Sets this rank's CPU threads to cores / (ranks on this machine)
    unless ``--threads``/``NETSPEC_NUM_THREADS`` chose them."""
    n = launched_size(environ)
    if n <= 1:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise DistributedError(
            f"this process was started by an MPI launcher as one of {n} processes, but mpi4py "
            "is not installed, so the ranks cannot train together: pip install "
            "'netspec[mpi]' (mpi4py and the MPICH wheel), or run without mpiexec") from None
    comm = MPI.COMM_WORLD
    if comm.Get_size() != n:
        raise DistributedError(
            f"the launcher started {n} processes but MPI sees {comm.Get_size()}: mpi4py uses "
            "another MPI library than the launcher (run the mpiexec of the MPI that mpi4py was "
            "built with; under Slurm, srun --mpi=pmi2 or pmix)")
    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    group = Group(comm, comm.Get_rank(), comm.Get_size(), local.Get_rank(), local.Get_size(),
                  int(comm.bcast(int(np.random.SeedSequence().entropy % (2**31)), root=0)), MPI)
    local.Free()
    if not parallel.threads_chosen():
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        parallel.set_num_threads(max(1, (cores or 1) // group.local_size))
    return group


def config_digest(sp, net_param, **options) -> tuple[str, dict]:
    """(SHA-256, the dict hashed) of the parsed solver (less ``PER_RANK_FIELDS``), its train
    net and the run's options: ranks that would train different things differ here."""
    solver = sp.model_dump(mode="json", exclude=set(PER_RANK_FIELDS))
    config = {"solver": solver, "net": net_param.model_dump(mode="json"),
              "options": {k: None if v is None else str(v) for k, v in options.items()}}
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest(), config


def first_difference(a, b, path: str = "") -> str:
    """The first field path where two JSON-like values differ, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                return first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_difference(x, y, f"{path}.{i}")
    return f"{path or 'value'}: {json.dumps(a, default=str)[:80]} vs {json.dumps(b, default=str)[:80]}"


class Startup:
    """What the start-up agreement checks: set ``config`` (``config_digest``'s pair) inside
    ``startup``'s block."""

    config: tuple[str, dict] | None = None


@contextmanager
def startup(group: Group | None):
    """Run the block (load files, build the solver, restore) on every rank, then agree: any
    rank's exception, or solver/net files that differ between ranks, stop every rank with
    one message. Without a group the block just runs."""
    state = Startup()
    if group is None:
        yield state
        return
    try:
        yield state
    except BaseException as e:  # noqa: BLE001 - every rank must learn of it
        group.agree(e, "at start-up")
        raise
    group.agree(None, "at start-up")
    digests = group.comm.allgather(state.config[0] if state.config else None)
    odd = [r for r, d in enumerate(digests) if d != digests[0]]
    if odd:
        configs = group.comm.gather(state.config[1] if state.config else None, root=0)
        what = ""
        if group.is_root:
            what = ": " + first_difference(configs[0], configs[odd[0]])
        cls = DistributedError if group.is_root else PeerFailure
        raise cls(f"rank{'s' * (len(odd) > 1)} {', '.join(map(str, odd))} of {group.size} "
                  f"loaded a different solver, net or option than rank 0{what}. Every rank "
                  "must train the same files (same paths on every machine, same --set)")


class DataParallelSolver(Solver):
    """A Solver that trains as rank ``group.rank`` of ``group.size`` (the module docstring)."""

    def __init__(self, sp, group: Group, **kwargs):
        seed = sp.random_seed if sp.random_seed >= 0 else group.seed
        self.group = group
        self.shard = Shard(group.rank, group.size, seed)
        super().__init__(sp.model_copy(update={"random_seed": seed + group.rank}),
                         shard=self.shard, **kwargs)
        self.seed = seed                    # the run's seed, as rank 0 logs it
        self._local_stop = False
        self._reducing = False              # between the status check and the gradient sum
        self._resumed = False

    # -- the collectives of an iteration ------------------------------------------------
    def _status(self, failed: bool, loss: float) -> np.ndarray:
        status = np.array([float(failed), float(self._local_stop), loss], dtype=np.float64)
        self.group.sum_(status)
        return status

    def agree(self, loss: float) -> float:
        status = self._status(False, loss)
        if status[0]:
            self._fail_agreed()
        if status[1]:
            self.requested_stop = True
        self._reducing = True
        return float(status[2]) / self.group.size

    def reduce_gradients(self) -> None:
        g = self.flat_diff
        self.group.sum_(g)
        g *= g.dtype.type(1.0 / self.group.size)
        self._reducing = False

    def _fail_agreed(self, error: BaseException | None = None, where: str | None = None):
        messages = self.group.comm.allgather(None if error is None else describe(error))
        raise self.group.failure(messages, where or f"at iteration {self.iter}") from None

    def _fail(self, error: BaseException) -> None:
        """This rank raised: tell the others at their next status check, then stop."""
        if isinstance(error, DistributedError):
            raise error
        where = f"at iteration {self.iter}"
        if self._reducing:           # the others wait in the gradient sum: no agreement
            self.group.abort(error, where)
        self._status(True, 0.0)
        self._fail_agreed(error, where)

    # -- the loop -----------------------------------------------------------------------
    def solve(self, max_iter: int | None = None, progress: Any = None) -> dict:
        self.broadcast_from_root()
        try:
            result = super().solve(max_iter, progress)
        except BaseException as e:  # noqa: BLE001 - every rank must learn of it
            self._fail(e)
            raise
        status = self._status(False, 0.0)    # rank 0's last test or snapshot went well
        if status[0]:
            self._fail_agreed(where="at the end of training")
        return result

    def broadcast_from_root(self) -> None:
        """Every rank takes rank 0's parameters (learned and frozen), update history and, after
        a resume, iteration, loss history and data readers' positions."""
        g = self.group
        g.bcast_(self.flat_data)
        for p in self.frozen:
            g.bcast_(p.data)
        for s in self.state:
            for v in s.values():
                g.bcast_(v)
        train_layers = {f"train:{layer.name}": layer for layer in self.net.layers}
        meta = None
        if g.is_root:
            meta = {"iter": self.iter, "losses": list(self.losses), "resumed": self._resumed,
                    "data": {k: v for k, v in self._data_states().items() if k in train_layers}}
        meta = g.comm.bcast(meta, root=0)
        if g.is_root or not meta["resumed"]:
            return
        self.iter = meta["iter"]
        self.losses.clear()
        self.losses.extend(meta["losses"])
        if self.losses:
            self.smoothed_loss = sum(self.losses) / len(self.losses)
        for key, saved in meta["data"].items():
            train_layers[key].load_state_dict(saved)
        # rank 0 restored its own generator; the others cannot (the state holds rank 0's):
        # each starts a stream of (seed, rank, iteration), the same in every resume
        fresh = np.random.default_rng([self.seed, g.rank, self.iter])
        self.rng.bit_generator.state = fresh.bit_generator.state

    def restore(self, state_path) -> None:
        """Rank 0 reads the state; ``solve`` broadcasts it to every rank."""
        self._resumed = True
        if self.group.is_root:
            super().restore(state_path)

    # -- only rank 0 tests and writes ---------------------------------------------------
    def test_all(self):
        return super().test_all() if self.group.is_root else []

    def snapshot(self):
        return super().snapshot() if self.group.is_root else None

    def check_snapshot_folder(self) -> None:
        if self.group.is_root:
            super().check_snapshot_folder()

    def _install_sigint(self):
        """Ctrl-C marks this rank; the next status check stops every rank together."""
        def handler(signum, frame):
            if self._local_stop:
                raise KeyboardInterrupt
            self._local_stop = True
            if self.group.is_root:
                print(f"netspec: interrupt received at iteration {self.iter}: every rank stops "
                      "after the current batch and rank 0 snapshots", file=sys.stderr,
                      flush=True)
        try:
            return signal.signal(signal.SIGINT, handler)
        except ValueError:
            return None
