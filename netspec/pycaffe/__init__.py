"""pycaffe on netspec: ``import netspec.pycaffe as caffe`` runs pycaffe scripts.

``caffe.Net`` (``net.py``), the solvers and ``get_solver`` (``solver.py``), ``caffe.io``
(``io.py``), ``caffe.Classifier`` (``classifier.py``), ``caffe.set_mode_cpu/gpu`` and
``set_device`` (``mode.py``), ``caffe.NetSpec``/``layers``/``params``/``to_proto``
(``net_spec.py``), ``caffe.Layer`` for Python layers. Nets are Caffe ``.prototxt``
or netspec YAML; weights ``.caffemodel`` or ``.npz``. A pycaffe feature netspec lacks raises
``PycaffeUnsupported`` (a ``NotImplementedError``) naming it. See docs/python.md.
"""

from __future__ import annotations

from ..layers import registry
from ..layers.python import PythonLayerBase as Layer
from . import io
from .classifier import Classifier
from .mode import set_device, set_mode_cpu, set_mode_gpu
from .net import Blob, Net, PycaffeUnsupported
from .net_spec import NetSpec, layers, params, to_proto
from .solver import (
    AdaDeltaSolver,
    AdaGradSolver,
    AdamSolver,
    NesterovSolver,
    RMSPropSolver,
    SGDSolver,
    Solver,
    get_solver,
)

#: pycaffe's phases (``caffe.TRAIN``, ``caffe.TEST``)
TRAIN = 0
TEST = 1

__version__ = "1.0.0"  # the pycaffe interface this follows (BVLC Caffe 1.0)


def set_random_seed(seed: int) -> None:
    raise PycaffeUnsupported("pycaffe's set_random_seed is not supported by netspec.pycaffe; "
                             "set random_seed in the solver file")


def layer_type_list() -> list[str]:
    """The layer types netspec runs."""
    return sorted(registry.LAYERS)


def init_log(*args, **kwargs) -> None:
    """Caffe's glog set-up: nothing to do (netspec logs to stderr)."""


__all__ = ["Net", "Blob", "Layer", "Classifier", "io", "TRAIN", "TEST", "Solver", "SGDSolver",
           "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver", "AdamSolver",
           "get_solver", "set_mode_cpu", "set_mode_gpu", "set_device", "set_random_seed",
           "layer_type_list", "init_log", "PycaffeUnsupported", "NetSpec", "layers", "params",
           "to_proto"]
