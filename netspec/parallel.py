"""CPU worker threads: a layer's batch split into contiguous sample ranges, one per thread.

A CPU ``Backend`` runs ``threads`` = T threads: the calling thread and T − 1 pool threads, each
working on its own samples with its own buffers (whole im2col + GEMM chunks of a convolution,
pooling chunks, row blocks of a GEMM). NumPy releases the GIL inside its ufunc loops and BLAS
calls, so the threads run at the same time.

While a net runs (``single_threaded_blas``) BLAS runs one thread per call: T workers with their
own single-threaded GEMMs use T cores, where T BLAS threads inside each GEMM leave every other
step (im2col, pooling, elementwise work) on one core, and BLAS's idle threads spin for a while
after each GEMM on the cores the next step wants (measurements: ``bench/NOTES.md``).

Results do not depend on the thread count beyond float rounding: per-range partial sums (a
weight gradient over samples) are added in range order, so a run with a given T is
deterministic, and one with T = 1 computes exactly what the serial code computes.

Thread count: ``get_backend(threads=…)``, else ``set_num_threads`` (the CLI's ``--threads``),
else the environment variable ``NETSPEC_NUM_THREADS``, else BLAS's own thread count
(``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` or the number of cores).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

from .backend import get_array_module
from .errors import NetspecError

ENV = "NETSPEC_NUM_THREADS"
#: a GEMM is split over the threads when it has at least this many multiply-adds (below it the
#: hand-off costs more than the second core gives: ~20 µs against ~50 GFLOP/s per core)
SPLIT_MIN_MACS = 1 << 20
#: memory-bound work (pooling taps, elementwise layers) is split from this many cells touched
#: (several ufunc passes of ~1 ns per cell against the ~20 µs hand-off)
SPLIT_MIN_ELEMENTS = 1 << 16

_requested: int | None = None        # set_num_threads
_executor: ThreadPoolExecutor | None = None
_executor_size = 0
_blas = None                          # threadpoolctl controllers of the BLAS libraries (lazily)


def set_num_threads(n: int | None) -> None:
    """Threads of the CPU backends made from now on (None: back to the default)."""
    if n is not None and int(n) < 1:
        raise NetspecError(f"the number of threads must be at least 1, got {n}")
    global _requested
    _requested = None if n is None else int(n)


def default_threads() -> int:
    """``set_num_threads``'s value, else ``NETSPEC_NUM_THREADS``, else BLAS's thread count."""
    if _requested is not None:
        return _requested
    env = os.environ.get(ENV)
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise NetspecError(f"environment variable {ENV}={env!r}: expected a whole number "
                               ">= 1 (the CPU threads netspec runs)")
        return n
    counts = [lib.get_num_threads() for lib in _blas_libraries()]
    if counts:
        return max(counts)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """n items as at most ``parts`` contiguous (start, count) ranges of near-equal size
    (the first n % parts ranges one longer); no empty ranges."""
    parts = max(1, min(parts, n))
    base, extra = divmod(n, parts)
    out, start = [], 0
    for k in range(parts):
        count = base + (k < extra)
        out.append((start, count))
        start += count
    return out


def _pool(workers: int) -> ThreadPoolExecutor:
    global _executor, _executor_size
    if _executor is None or _executor_size < workers:
        if _executor is not None:
            _executor.shutdown(wait=False)
        _executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="netspec")
        _executor_size = workers
    return _executor


def run(fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
    """``[fn(*item) for item in items]``, item 0 on the calling thread and each other item on a
    pool thread at the same time; results in item order, a worker's exception re-raised."""
    if len(items) == 1:
        return [fn(*items[0])]
    futures = [_pool(len(items) - 1).submit(fn, *item) for item in items[1:]]
    try:
        first = fn(*items[0])
    finally:
        rest = [f.result() for f in futures]       # wait for all before anything is re-raised
    return [first, *rest]


def over_samples(fn: Callable[[slice], Any], N: int, cells: int, threads: int) -> list[Any]:
    """fn(samples) for contiguous sample ranges (slices) of a batch of N covering every sample,
    one per thread when the work touches at least ``SPLIT_MIN_ELEMENTS`` cells (else one
    slice, all samples); results in range order."""
    ranges = split(N, threads if cells >= SPLIT_MIN_ELEMENTS else 1)
    return run(lambda a, n: fn(slice(a, a + n)), ranges)


def ordered_sum(parts: list):
    """parts[0] + parts[1] + … in list order, into a new array (deterministic for a given T)."""
    acc = parts[0].copy() if len(parts) > 1 else parts[0]
    for p in parts[1:]:
        acc += p
    return acc


def matmul(a, b, out, threads: int, accumulate: bool = False) -> None:
    """out = a @ b (2-D; ``accumulate``: out += a @ b), with a's and out's rows split over
    ``threads`` when the product is large enough (``SPLIT_MIN_MACS``): each thread one GEMM on
    its rows, no reduction between them. With one range exactly the unsplit product."""
    rows = split(a.shape[0], threads if a.size * b.shape[1] >= SPLIT_MIN_MACS else 1)

    def block(r0, n):
        if accumulate:
            out[r0:r0 + n] += a[r0:r0 + n] @ b
        else:
            get_array_module(a).matmul(a[r0:r0 + n], b, out=out[r0:r0 + n])

    run(block, rows)


def _blas_libraries():
    """threadpoolctl's controllers of the loaded BLAS libraries (NumPy's OpenBLAS)."""
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController  # noqa: PLC0415
            _blas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
        except Exception:  # noqa: BLE001 - no threadpoolctl or no BLAS it knows: nothing to limit
            _blas = []
    return _blas


class single_threaded_blas:  # noqa: N801 - used as a context manager, like threadpoolctl's
    """While inside: BLAS runs each call on one thread (the engine's own threads split the
    work); on exit each library's previous thread count is restored. Re-entrant; a no-op for a
    GPU backend. Costs a few µs."""

    def __init__(self, backend):
        self.active = not backend.is_gpu
        self.saved: list[tuple[Any, int]] = []

    def __enter__(self):
        if self.active:
            for lib in _blas_libraries():
                n = lib.get_num_threads()
                if n != 1:
                    lib.set_num_threads(1)
                    self.saved.append((lib, n))
        return self

    def __exit__(self, *exc):
        for lib, n in self.saved:
            lib.set_num_threads(n)
        self.saved.clear()
        return False
