"""The array module seam: NumPy on the CPU or CuPy on an NVIDIA GPU behind one ``xp``.

CuPy is imported lazily (``netspec.arrays``), so CPU-only machines never need it.
Layers receive a :class:`Backend` and use ``backend.xp`` and ``backend.dtype`` for all
array work; nothing else in the engine imports numpy or cupy for device arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy

from . import parallel
from .arrays import _cupy, cupy_available, elementwise_kernel, get_array_module, to_numpy
from .errors import NetspecError

__all__ = ["Backend", "get_backend", "cupy_available", "elementwise_kernel", "get_array_module",
           "to_numpy"]


@dataclass(frozen=True)
class Backend:
    """Where arrays live (``xp``), their floating dtype (float32 default, float64 for checks)
    and, on the CPU, how many threads the layers split their batch over (``parallel.py``)."""

    xp: Any = numpy
    dtype: Any = numpy.float32
    threads: int = 1

    @property
    def is_gpu(self) -> bool:
        return self.xp is not numpy

    def asarray(self, a: Any, dtype: Any = None):
        """``a`` on this backend's device, in ``dtype`` (default: the float dtype)."""
        src = a if self.is_gpu else to_numpy(a)
        return self.xp.asarray(src, dtype=self.dtype if dtype is None else dtype)

    def zeros(self, shape, dtype: Any = None):
        return self.xp.zeros(shape, dtype=self.dtype if dtype is None else dtype)

    def empty(self, shape, dtype: Any = None):
        return self.xp.empty(shape, dtype=self.dtype if dtype is None else dtype)


def get_backend(gpu: bool = False, dtype: str | Any = "float32", device_id: int = 0,
                threads: int | None = None) -> Backend:
    """Backend for ``solver_mode``/``--gpu``. Raises a clear error when a GPU is asked for but
    absent. CPU threads: ``threads``, else ``parallel.default_threads()``."""
    dt = numpy.dtype(dtype).type
    if not gpu:
        n = parallel.default_threads() if threads is None else int(threads)
        if n < 1:
            raise NetspecError(f"the number of threads must be at least 1, got {n}")
        return Backend(numpy, dt, n)
    cp = _cupy()
    if cp is None:
        raise NetspecError(
            "GPU mode was requested (solver_mode: GPU or --gpu) but CuPy is not installed or "
            "sees no CUDA device. Install the extra with `pip install netspec[gpu]`, or use "
            "solver_mode: CPU.")
    cp.cuda.Device(device_id).use()
    return Backend(cp, dt)
