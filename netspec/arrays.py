"""Array modules: which of NumPy or CuPy owns an array, host copies, and CuPy's kernels.

CuPy is imported lazily (``cupy_available()``), so CPU-only machines never need it.
``netspec.backend`` builds on this seam; ``netspec.parallel`` uses it without the backend.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import Any

import numpy


@lru_cache(maxsize=1)
def _cupy():
    try:
        import cupy  # noqa: PLC0415 - optional: the 'gpu' extra

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
