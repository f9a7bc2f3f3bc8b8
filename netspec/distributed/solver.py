"""``DataParallelSolver``: a Solver that trains as one rank of a data-parallel run (the
package docstring: the iteration's collectives, what is per rank, what only rank 0 does)."""

from __future__ import annotations

import signal
import sys
from typing import Any

import numpy as np

from ..data.shard import Shard
from ..solvers import Solver
from .connect import use_nccl
from .group import DistributedError, Group, describe


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
        self.gradients_via: str | None = None    # GPU ranks: NCCL, or MPI through host memory

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
        messages = self.group.allgather(None if error is None else describe(error))
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
        if self.backend.is_gpu and self.gradients_via is None:
            self.gradients_via = use_nccl(self.group)
            self.log.info(f"Gradients all-reduced over {self.gradients_via}")
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
        meta = g.bcast_obj(meta)
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
