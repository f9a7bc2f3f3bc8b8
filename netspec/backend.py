"""The array module seam: NumPy on the CPU or CuPy on an NVIDIA GPU behind one ``xp``.

CuPy is imported lazily (``cupy_available()``), so CPU-only machines never need it.
Layers receive a :class:`Backend` and use ``backend.xp`` and ``backend.dtype`` for all
array work; nothing else in the engine imports numpy or cupy for device arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import numpy

from .errors import NetspecError


@lru_cache(maxsize=1)
def _cupy():
    try:
        import cupy  # noqa: PLC0415

        cupy.cuda.runtime.getDeviceCount()
        return cupy
    except Exception:  # noqa: BLE001 - any failure means "no usable GPU"
        return None


@cache
def elementwise_kernel(name: str, params: str, outputs: str, body: str):
    """A ``cupy.ElementwiseKernel`` (templated on its type placeholders), compiled on first use
    and cached by its arguments. GPU only."""
    return _cupy().ElementwiseKernel(params, outputs, body, name)


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    return _cupy() is not None


def get_array_module(*arrays: Any):
    """The module (numpy or cupy) that owns ``arrays`` (Chainer's get_array_module)."""
    cp = _cupy() if any(type(a).__module__.startswith("cupy") for a in arrays) else None
    return cp if cp is not None else numpy


def to_numpy(a: Any) -> numpy.ndarray:
    """A host NumPy copy/view of a numpy or cupy array."""
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return numpy.asarray(a)


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
        from . import parallel  # noqa: PLC0415
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
