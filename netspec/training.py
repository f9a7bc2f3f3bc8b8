"""Training from Python: ``netspec.solver`` and the ``Training`` it returns.

``Training`` wraps the engine's ``Solver`` for a solver file: ``step(n)`` runs ``n``
iterations as Caffe's ``Solver::Step`` does (testing at ``test_interval``, snapshotting at
``snapshot``), ``solve()`` trains to ``max_iter``; ``net`` and ``test_nets`` are ``Model``\\ s
sharing the solver's weights (``training.net.blobs["loss"].data``); callbacks run at display,
test and snapshot. Training loops that bring their own data feed a MemoryData layer
(``training.net.set_input_arrays(data, labels)``) or write the Input blobs of the train net before
each ``step`` (``training.net.blobs["data"].data[...] = batch``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import SpecError
from .log import CaffeLog
from .model import Model
from .snapshot import load_weights
from .solver_files import read_solver
from .solvers import Solver

EVENTS = ("display", "test", "snapshot")


class Training:
    """A solver from Python (see the module docstring); ``solver``: the engine's Solver."""

    def __init__(self, solver: Solver, source: str = "", model_class: type[Model] = Model):
        self.solver = solver
        self.source = source
        self.net = model_class.wrap(solver.net, source)
        self.test_nets = [model_class.wrap(n, source) for n in solver.test_nets]
        self._callbacks: dict[str, list[Callable]] = {e: [] for e in EVENTS}
        solver.listeners.append(self._event)
        solver.snapshot_hooks.append(lambda path: self._fire("snapshot", {"iteration": self.iter,
                                                                          "state": path}))

    # -- callbacks ---------------------------------------------------------------------------
    def on(self, event: str, fn: Callable[[dict], Any]) -> Callable[[dict], Any]:
        """Call ``fn(info)`` at each ``event``: 'display' (iteration, loss, lr, outputs),
        'test' (iteration, outputs, net index) or 'snapshot' (iteration, state path)."""
        if event not in EVENTS:
            raise SpecError(f"no event '{event}': the events are {', '.join(EVENTS)}")
        self._callbacks[event].append(fn)
        return fn

    def _event(self, event: dict) -> None:
        self._fire("display" if event["event"] == "train" else event["event"], event)

    def _fire(self, event: str, info: dict) -> None:
        for fn in self._callbacks.get(event, ()):
            fn(info)

    # -- state -------------------------------------------------------------------------------
    @property
    def iter(self) -> int:
        return self.solver.iter

    @property
    def param(self):
        """The SolverParameter (base_lr, max_iter …)."""
        return self.solver.sp

    @property
    def loss(self) -> float:
        """The smoothed training loss (over ``average_loss`` iterations)."""
        return self.solver.smoothed_loss

    def _sync(self) -> None:
        self.net.sync()
        for m in self.test_nets:
            m.sync()

    # -- running -----------------------------------------------------------------------------
    def step(self, n: int = 1) -> float:
        """``n`` iterations (Caffe's ``Solver::Step``): test at ``test_interval``, forward,
        backward and update, snapshot at ``snapshot``; returns the last iteration's loss."""
        s, sp = self.solver, self.solver.sp
        self._sync()
        loss = float("nan")
        for _ in range(int(n)):
            if (sp.test_interval and s.iter % sp.test_interval == 0
                    and (s.iter > 0 or sp.test_initialization)):
                s.test_all()
            loss = s.step_once()
            if sp.snapshot and s.iter % sp.snapshot == 0:
                s.snapshot()
        return loss

    def solve(self, max_iter: int | None = None) -> dict:
        """Train to ``max_iter`` (default: the solver's), as ``netspec train`` does: returns
        iterations, wall_s, s_per_iter, loss and the test history."""
        self._sync()
        return self.solver.solve(max_iter)

    def test(self, i: int = 0) -> dict[str, float]:
        """Run test net ``i`` over ``test_iter[i]`` batches: each output's mean."""
        self._sync()
        return self.solver.test(i)

    def snapshot(self) -> Path:
        """Write the weights and solver state now; returns the state's path."""
        self._sync()
        return self.solver.snapshot()

    def restore(self, state: str | Path) -> None:
        """Resume from a ``.solverstate.npz``."""
        self._sync()
        self.solver.restore(state)

    def load_weights(self, path: str | Path, allow_partial: bool = False) -> tuple[list, list]:
        """Initialise from weights (``.npz`` or ``.caffemodel``) to fine-tune."""
        self._sync()
        return load_weights(self.solver.net, path, allow_partial=allow_partial)

    def __repr__(self) -> str:
        return f"<netspec.Training {self.source!r} at iteration {self.iter}>"


def solver(solver_file: str | Path, sets: Sequence[str] = (), *, gpu: bool = False,
           weights: str | Path | None = None, snapshot: str | Path | None = None,
           allow_partial: bool = False, dtype: str = "float32", quiet: bool = True,
           log: CaffeLog | None = None, model_class: type[Model] = Model,
           reuse_diffs: bool = False) -> Training:
    """A ``Training`` for the solver ``solver_file`` (YAML, or a Caffe ``.prototxt`` read by
    ``netspec.solver_files.read_solver``) with ``sets`` (``KEY=VALUE`` overrides, as ``--set``): resumed from ``snapshot``, or initialised from ``weights`` (or the
    solver's own ``weights``). ``quiet``: no Caffe log lines on stderr; ``model_class``: the
    class of ``net`` and ``test_nets`` (``netspec.pycaffe`` passes its ``Net``);
    ``reuse_diffs``: the train net's blob diffs share arrays, as in ``netspec train`` (the
    same weights, less memory; only its inputs', outputs' and loss tops' diffs stay readable)."""
    sets = list(sets) + (["solver_mode=GPU"] if gpu else [])
    sp, net_param, tests, _ = read_solver(solver_file, sets)
    s = Solver(sp, log=log or CaffeLog(quiet=quiet), net_param=net_param, dtype=dtype,
               test_net_params=tests, reuse_diffs=reuse_diffs)
    t = Training(s, str(solver_file), model_class)
    if snapshot:
        t.restore(snapshot)
    elif weights or sp.weights:
        t.load_weights(weights or sp.weights, allow_partial=allow_partial)
    return t
