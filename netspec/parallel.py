"""CPU worker threads: a layer's batch split into contiguous sample ranges, one per thread.

A CPU ``Backend`` runs ``threads`` = T threads: the calling thread and T − 1 pool threads, each
working on its own samples with its own buffers (whole im2col + GEMM chunks of a convolution,
pooling chunks, blocks of a GEMM's output). NumPy releases the GIL inside its ufunc loops and BLAS
calls, so the threads run at the same time.

A net with layers that split their batch (``Layer.splits_batch``: convolutions, pooling) runs
BLAS one thread per call while it runs (``blas_threads``): T workers with their own
single-threaded GEMMs use T cores, where T BLAS threads inside each GEMM leave every other
step (im2col, pooling, elementwise work) on one core, and BLAS's idle threads spin for a while
after each GEMM on the cores the next step wants. A net without such layers (an MLP: all its
work is a few GEMMs) splits nothing itself and lets BLAS run its GEMMs on T threads, whose
spinning workers then wait for the next GEMM instead of ~50 µs wake-ups of a sleeping thread
(measurements: ``bench/NOTES.md``). A pass whose batch is smaller than T (one image through a
ResNet) has no batch to split: its convolutions split their own products over the threads
(``matmul``), BLAS still at one thread, or with ``ConvTuning.single_sample_blas_threads`` BLAS
threads each GEMM (``Net.pass_blas_threads``).

Results do not depend on the thread count beyond float rounding: per-range partial sums (a
weight gradient over samples) are added in range order, so a run with a given T is
deterministic, and one with T = 1 computes exactly what the serial code computes.

Thread count: ``get_backend(threads=…)``, else ``set_num_threads`` (the CLI's ``--threads``),
else the environment variable ``NETSPEC_NUM_THREADS``, else BLAS's own thread count
(``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` or the number of cores), at most 8.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Sequence

from threadpoolctl import ThreadpoolController

from .arrays import get_array_module
from .errors import NetspecError

ENV = "NETSPEC_NUM_THREADS"
#: a GEMM (or convolution) is split over the threads from this many multiply-adds on: the
#: MLP's 100×200×200 products (4 M) ran 5 % slower split, its 100×784×200 ones (16 M) 35 %
#: faster (2 threads; a hand-off costs ~15 µs)
SPLIT_MIN_MACS = 1 << 23
#: memory-bound work (pooling taps, elementwise layers) is split from this many cells touched
#: (several ufunc passes of ~1 ns per cell against the ~20 µs hand-off)
SPLIT_MIN_ELEMENTS = 1 << 16

#: the default (BLAS's count) is capped here: measured on 2 cores only, and a batch split into
#: many small ranges pays a hand-off per range; ``--threads``/the environment may ask for more
DEFAULT_MAX_THREADS = 8

_requested: int | None = None        # set_num_threads
_blas = None                          # threadpoolctl controllers of the BLAS libraries (lazily)


def set_num_threads(n: int | None) -> None:
    """Threads of the CPU backends made from now on (None: back to the default)."""
    if n is not None and int(n) < 1:
        raise NetspecError(f"the number of threads must be at least 1, got {n}")
    global _requested
    _requested = None if n is None else int(n)


def threads_chosen() -> bool:
    """Whether the user chose the thread count (``set_num_threads`` or ``NETSPEC_NUM_THREADS``)."""
    return _requested is not None or bool(os.environ.get(ENV))


def default_threads() -> int:
    """``set_num_threads``'s value, else ``NETSPEC_NUM_THREADS``, else BLAS's thread count (at
    most ``DEFAULT_MAX_THREADS``)."""
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
        n = max(counts)
    else:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(n, DEFAULT_MAX_THREADS)


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


class _Worker:
    """One pool thread, handed one job at a time through two locks (a lock hand-off wakes a
    thread in ~15 µs; ``concurrent.futures`` takes ~50)."""

    def __init__(self, k: int):
        self.go, self.done = threading.Lock(), threading.Lock()
        self.go.acquire()
        self.done.acquire()
        self.job: tuple = ()
        self.result: tuple = ()
        threading.Thread(target=self._loop, name=f"netspec-{k}", daemon=True).start()

    def _loop(self):
        while True:
            self.go.acquire()
            fn, args = self.job
            try:
                self.result = (True, fn(*args))
            except BaseException as e:  # noqa: BLE001 - handed back to the caller
                self.result = (False, e)
            self.job = ()
            self.done.release()

    def start(self, fn, args) -> None:
        self.job = (fn, args)
        self.go.release()

    def wait(self):
        self.done.acquire()
        ok, value = self.result
        self.result = ()
        return ok, value


_workers: list[_Worker] = []
_running = threading.Lock()       # held by the one ``run`` that is using the workers


def _forget_workers() -> None:
    """In a forked child: the parent's worker threads do not exist there; start afresh."""
    global _workers, _running
    _workers = []
    _running = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers)


def run(fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
    """``[fn(*item) for item in items]``, item 0 on the calling thread and each other item on a
    pool thread at the same time; results in item order, a worker's exception re-raised once
    all have finished. A call made while another is running (from a worker, or from a second
    thread of the user's) runs its items one after another on its own thread."""
    if len(items) == 1 or not _running.acquire(blocking=False):
        return [fn(*item) for item in items]
    try:
        while len(_workers) < len(items) - 1:
            _workers.append(_Worker(len(_workers) + 1))
        for w, item in zip(_workers, items[1:]):
            w.start(fn, item)
        try:
            first = (True, fn(*items[0]))
        except BaseException as e:  # noqa: BLE001 - re-raised after the workers finish
            first = (False, e)
        results = [first] + [w.wait() for w in _workers[:len(items) - 1]]
    finally:
        _running.release()
    for ok, value in results:
        if not ok:
            raise value
    return [value for _, value in results]


def over_slices(fn: Callable[[slice], Any], n: int, threads: int) -> list[Any]:
    """fn(s) for contiguous slices s of range(n) (n cells of elementwise work) that cover it,
    one per thread from ``SPLIT_MIN_ELEMENTS`` cells on (else one slice, all of it); results
    in slice order."""
    if threads == 1 or n < SPLIT_MIN_ELEMENTS:
        return [fn(slice(0, n))]
    return run(lambda a, k: fn(slice(a, a + k)), split(n, threads))


def ordered_sum(parts: list):
    """parts[0] + parts[1] + … in list order, into a new array (deterministic for a given T)."""
    acc = parts[0].copy() if len(parts) > 1 else parts[0]
    for p in parts[1:]:
        acc += p
    return acc


def matmul(a, b, out, threads: int, accumulate: bool = False) -> None:
    """out = a @ b (2-D; ``accumulate``: out += a @ b), split over ``threads`` when the product
    has at least ``SPLIT_MIN_MACS`` multiply-adds, each thread one GEMM on its own block of out,
    no reduction between them: row blocks of a and out when accumulating (the add runs over
    contiguous rows) or when a is taller than wide (each thread packs its own part of the
    larger operand), else column blocks of b and out. Measured on LeNet's InnerProduct, 2
    threads, ms rows / columns: x @ Wᵀ (64×800 @ 800×500) 0.66 / 0.46, dyᵀ @ x (500×64 @
    64×800) 0.33 / 0.39, dy @ W (64×500 @ 500×800) 0.41 / 0.36; the MLP's x @ Wᵀ 0.50 / 0.40,
    its dyᵀ @ x accumulated 0.46 / 0.49. Not split while BLAS threads each call itself
    (``blas_threads.current`` > 1). With one block exactly the unsplit product. An
    operand that shares memory with out (an in-place product) is copied before the blocks
    start: one block's writes would otherwise reach what another still reads."""
    parts = (threads if threads > 1 and blas_threads.current == 1
             and a.size * b.shape[1] >= SPLIT_MIN_MACS else 1)
    xp = get_array_module(a)
    if parts == 1:                     # the plain product (no per-call bookkeeping)
        if accumulate:
            out += a @ b
        else:
            xp.matmul(a, b, out=out)
        return
    if xp.may_share_memory(a, out):
        a = a.copy()
    if xp.may_share_memory(b, out):
        b = b.copy()
    if accumulate:
        def add_rows(r0, n):
            out[r0:r0 + n] += a[r0:r0 + n] @ b
        run(add_rows, split(a.shape[0], parts))
    elif a.shape[0] > a.shape[1]:
        def rows(r0, n):
            xp.matmul(a[r0:r0 + n], b, out=out[r0:r0 + n])
        run(rows, split(a.shape[0], parts))
    else:
        def columns(c0, n):
            xp.matmul(a, b[:, c0:c0 + n], out=out[:, c0:c0 + n])
        run(columns, split(b.shape[1], parts))


def _blas_libraries():
    """threadpoolctl's controllers of the loaded BLAS libraries (NumPy's OpenBLAS)."""
    global _blas
    if _blas is None:
        try:
            _blas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
        except Exception:  # noqa: BLE001 - no threadpoolctl or no BLAS it knows: nothing to limit
            _blas = []
    return _blas


class blas_threads:  # noqa: N801 - used as a context manager, like threadpoolctl's
    """While inside: BLAS runs each call on ``n`` threads (1 while the engine's own threads
    split the work); on exit each library's previous thread count is restored. Re-entrant;
    a no-op for a GPU backend. Costs a few µs."""

    #: the BLAS thread count inside the innermost active context (1 outside any): ``matmul``
    #: does not split a product over the engine's threads while BLAS threads each call
    current = 1

    def __init__(self, backend, n: int = 1):
        self.active = not backend.is_gpu
        self.n = n
        self.saved: list[tuple[Any, int]] = []
        self.outer = 1

    def __enter__(self):
        if self.active:
            for lib in _blas_libraries():
                old = lib.get_num_threads()
                if old != self.n:
                    lib.set_num_threads(self.n)
                    self.saved.append((lib, old))
            self.outer, blas_threads.current = blas_threads.current, self.n
        return self

    def __exit__(self, *exc):
        for lib, old in self.saved:
            lib.set_num_threads(old)
        self.saved.clear()
        if self.active:
            blas_threads.current = self.outer
        return False
