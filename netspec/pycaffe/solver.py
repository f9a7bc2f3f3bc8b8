"""pycaffe's solvers (``caffe.SGDSolver`` … ``caffe.get_solver``) over ``netspec.training``.

``caffe.AdamSolver(file)`` trains with Adam whatever the file's ``type`` says, as in pycaffe
(the class picks the C++ solver); ``caffe.get_solver(file)`` uses the file's ``type``. The
solver file is a netspec solver YAML or a Caffe solver ``.prototxt`` (converted in memory,
its paths relative to the working directory as in Caffe: ``netspec.solver_files.read_solver_prototxt``).
"""

from __future__ import annotations

from pathlib import Path

from ..training import Training
from ..training import solver as make_training
from . import mode
from .net import Net, unsupported


class Solver:
    """``net``, ``test_nets``, ``iter``, ``step(n)``, ``solve()``, ``restore``, ``snapshot``."""

    #: the solver ``type`` this class forces (None: the file's)
    TYPE: str | None = None

    def __init__(self, filename, *, quiet: bool = True):
        path = Path(filename)
        sets = ([f"type={self.TYPE}"] if self.TYPE else []) + \
            ([f"device_id={mode.device}"] if mode.gpu else [])
        self.training: Training = make_training(path, sets, gpu=mode.gpu, quiet=quiet,
                                                model_class=Net)
        self.net: Net = self.training.net
        self.test_nets: list[Net] = self.training.test_nets

    @property
    def iter(self) -> int:
        return self.training.iter

    @property
    def param(self):
        return self.training.param

    def step(self, iters: int) -> None:
        self.training.step(iters)

    def solve(self, resume_file=None) -> None:
        if resume_file:
            self.training.restore(resume_file)
        self.training.solve()

    def restore(self, state_file) -> None:
        self.training.restore(state_file)

    def snapshot(self) -> None:
        self.training.snapshot()

    def test(self, i: int = 0) -> dict:
        return self.training.test(i)

    def share_weights(self, net: Net) -> None:
        """Let ``net`` use this solver's weights (pycaffe's ``solver.share_weights``)."""
        net.sync()
        net.net.share_with(self.training.solver.net)

    def add_callback(self, *callbacks) -> None:
        raise unsupported("Solver.add_callback (multi-GPU NCCL hooks)",
                          "use netspec.solver(...).on('display'|'test'|'snapshot', fn)")

    def apply_update(self) -> None:
        self.training.solver.apply_update()


class SGDSolver(Solver):
    TYPE = "SGD"


class NesterovSolver(Solver):
    TYPE = "Nesterov"


class AdaGradSolver(Solver):
    TYPE = "AdaGrad"


class RMSPropSolver(Solver):
    TYPE = "RMSProp"


class AdaDeltaSolver(Solver):
    TYPE = "AdaDelta"


class AdamSolver(Solver):
    TYPE = "Adam"


def get_solver(filename) -> Solver:
    """A solver of the type the file names."""
    return Solver(filename)
