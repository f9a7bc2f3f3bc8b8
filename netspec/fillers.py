"""Parameter fillers (Caffe's ``filler.hpp`` plus a truncated gaussian).

All fillers draw on the host from a ``numpy.random.Generator`` (so a seed gives the same
weights on CPU and GPU) and return float64 arrays; the caller casts to the net's dtype.
fan_in = count / shape[0], fan_out = count / shape[1] (Caffe's convention: for an
InnerProduct weight (out, in) fan_in = in; for a convolution (out, in/g, kh, kw)
fan_in = in/g * kh * kw).

=================  =====================================================================
type               values
=================  =====================================================================
constant           ``value``
uniform            U(min, max)
gaussian           N(mean, std²); with ``sparse`` = s > 0 each weight is kept with
                   probability s / fan_out (Caffe's sparse gaussian), zero otherwise
truncated_gaussian N(mean, std²) redrawn until within mean ± 2·std (TensorFlow's
                   truncated_normal)
positive_unitball  U(0, 1) per element, then each row (``shape[0]`` slice) divided by its sum
xavier             U(−a, a), a = sqrt(3 / n), n = fan_in | fan_out | (fan_in+fan_out)/2
msra               N(0, 2 / n), n as for xavier (He et al.)
bilinear           the bilinear upsampling kernel, for Deconvolution (shape[-1] == shape[-2])
=================  =====================================================================
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .errors import SpecError, suggest

FILLERS: dict[str, Callable[[Any, tuple[int, ...], np.random.Generator], np.ndarray]] = {}


def _filler(name: str):
    def deco(fn):
        FILLERS[name] = fn
        return fn
    return deco


def _fans(shape: tuple[int, ...]) -> tuple[float, float]:
    count = int(np.prod(shape)) if shape else 1
    fan_in = count / shape[0] if len(shape) >= 1 and shape[0] else count
    fan_out = count / shape[1] if len(shape) >= 2 and shape[1] else count
    return fan_in, fan_out


def _norm(f: Any, shape: tuple[int, ...]) -> float:
    fan_in, fan_out = _fans(shape)
    return {"FAN_IN": fan_in, "FAN_OUT": fan_out, "AVERAGE": (fan_in + fan_out) / 2.0}[f.variance_norm]


@_filler("constant")
def _constant(f, shape, rng):
    return np.full(shape, f.value, dtype=np.float64)


@_filler("uniform")
def _uniform(f, shape, rng):
    return rng.uniform(f.min, f.max, size=shape)


@_filler("gaussian")
def _gaussian(f, shape, rng):
    w = rng.normal(f.mean, f.std, size=shape)
    if f.sparse > 0:
        _, fan_out = _fans(shape)
        keep = rng.random(shape) < min(1.0, f.sparse / fan_out)
        w = w * keep
    return w


@_filler("truncated_gaussian")
def _truncated_gaussian(f, shape, rng):
    w = rng.normal(0.0, 1.0, size=shape)
    bad = np.abs(w) > 2.0
    while bad.any():
        w[bad] = rng.normal(0.0, 1.0, size=int(bad.sum()))
        bad = np.abs(w) > 2.0
    return f.mean + f.std * w


@_filler("positive_unitball")
def _positive_unitball(f, shape, rng):
    w = rng.uniform(0.0, 1.0, size=shape)
    rows = w.reshape(shape[0], -1)
    return (rows / rows.sum(axis=1, keepdims=True)).reshape(shape)


@_filler("xavier")
def _xavier(f, shape, rng):
    a = np.sqrt(3.0 / _norm(f, shape))
    return rng.uniform(-a, a, size=shape)


@_filler("msra")
def _msra(f, shape, rng):
    return rng.normal(0.0, np.sqrt(2.0 / _norm(f, shape)), size=shape)


@_filler("bilinear")
def _bilinear(f, shape, rng):
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise SpecError("the bilinear filler needs square kernels (kernel_h == kernel_w)")
    k = shape[-1]
    factor = np.ceil(k / 2.0)
    center = (2 * factor - 1 - factor % 2) / (2.0 * factor)
    og = np.arange(k)
    filt = 1 - np.abs(og / factor - center)
    kernel = filt[:, None] * filt[None, :]
    return np.broadcast_to(kernel, shape).copy()


def fill(filler: Any, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Values for a blob of ``shape`` from a FillerParameter (``filler.type`` picks the rule)."""
    fn = FILLERS.get(filler.type)
    if fn is None:
        raise SpecError(f"unknown filler type '{filler.type}'.{suggest(filler.type, FILLERS)} "
                        f"Known: {', '.join(sorted(FILLERS))}", field="type")
    return np.asarray(fn(filler, shape, rng), dtype=np.float64)
