"""Pooling layer (Caffe's ``PoolingLayer``): MAX and AVE over 2-D windows of NCHW blobs.

Output size (Caffe's ``pooling_layer.cpp``, per spatial dim; ``round_mode`` CEIL by default, or
the forks' ``ceil_mode`` true/false):

    Ho = ceil((H + 2·pad_h − kh) / stride_h) + 1          (floor for round_mode FLOOR)
    if pad_h or pad_w: if (Ho − 1)·stride_h ≥ H + pad_h: Ho −= 1

(the last window must start inside the image or its top/left padding). Window (ph, pw) covers
rows hstart = ph·stride_h − pad_h ... hstart + kh − 1 (columns alike), clipped to the image:

* MAX: the largest input in the window (padding never wins); on ties the first in scan order
  (row by row). An optional second top holds the argmax as Caffe's flat index h·W + w of the
  input plane (as a float). Backward routes each top gradient to its argmax.
* AVE: the sum over the window's image cells divided by Caffe's ``pool_size`` =
  (min(hstart + kh, H + pad_h) − hstart) · (min(wstart + kw, W + pad_w) − wstart): padding
  cells count, cells past H + pad_h (the ceil overhang) do not. Backward spreads
  dy / pool_size over the window's image cells.

``global_pooling`` pools the whole H×W plane (pad 0, stride 1) to 1×1. STOCHASTIC pooling is
not supported.

CPU implementation: a loop over the kh·kw kernel taps, each one array operation over a chunk
of samples (``PoolTuning.chunk_bytes``), on a strided view of the bottom (windows inside the
image) or on its stride phases (everything else); small AVE planes as one GEMM with the pooling
matrix; on the GPU single CUDA kernels (``pool_cuda.py``). Details and measurements:
``docs/layer_implementation.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy

from .. import parallel
from ..blob import Blob
from ..spec.net import LayerParameter
from . import pool_cuda
from .base import Layer, sample_chunks, samples_per_chunk, thread_scratch
from .registry import register

@dataclass(frozen=True)
class PoolTuning:
    """The CPU code-path choices of Pooling, measured (``bench/NOTES.md``). Tests run every
    path through the ``pool_tuning`` fixture (``tests/conftest.py``)."""

    #: bottom bytes per chunk of samples on the CPU (at least one sample per chunk)
    chunk_bytes: int = 1 << 20
    #: AVE pooling of planes of at most this many cells per kernel tap (H·W ≤ this · kh·kw, and
    #: a matrix of at most ``ave_matrix_max_elements``) is one GEMM with the pooling matrix: the
    #: dense product does H·W/(kh·kw) times the adds of the taps but at BLAS speed (CIFAR-10
    #: quick pool2, 16×16 planes, 3×3: 3.1 + 4.5 -> 1.2 + 1.1 ms; pool3, 8×8: 2.4 + 3.6 ->
    #: 0.2 + 0.2; 32×32 planes would take 17 + 16 ms)
    ave_matrix_max_cells_per_tap: int = 32
    ave_matrix_max_elements: int = 1 << 20


_tuning = PoolTuning()


def tuning() -> PoolTuning:
    """The tuning the next Pooling layer set up will use."""
    return _tuning


def use_tuning(new: PoolTuning) -> PoolTuning:
    """Make ``new`` the tuning of Pooling layers set up from now on; returns the previous one."""
    global _tuning
    old, _tuning = _tuning, new
    return old


def pooled_size(size: int, kernel: int, pad: int, stride: int, ceil: bool, any_pad: bool) -> int:
    """Caffe's pooled output length along one spatial dim (see module doc)."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if any_pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@register("Pooling")
class Pooling(Layer):
    """MAX / AVE pooling with Caffe's pad, stride, ceil rule and window clipping."""

    fills_tops = True
    writes_bottom_diffs = True

    param_block = "pooling_param"
    exact_bottoms = 1
    splits_batch = True
    min_tops = 1
    max_tops = 2

    def check_arity(self, n_bottoms, n_tops):
        super().check_arity(n_bottoms, n_tops)
        if n_tops == 2 and self.p.pool != "MAX":
            raise self.spec_error("only MAX pooling has a second (mask) top", field="top")

    # -- setup ----------------------------------------------------------------------------
    def _parse(self, H, W):
        p = self.p
        if p.pool == "STOCHASTIC":
            raise self.spec_error("pool: STOCHASTIC is not supported (use MAX or AVE)",
                                  field="pool")
        if p.global_pooling:
            if p.kernel_size is not None or p.kernel_h is not None or p.kernel_w is not None:
                raise self.spec_error("with global_pooling: true the kernel size cannot be "
                                      "specified", field="kernel_size")
            kh, kw = H, W
        else:
            kh, kw = self.spatial_pair(p.kernel_size, p.kernel_h, p.kernel_w, "kernel_size",
                                       None)
        # pad and stride default to 0 and 1, so their scalar form yields to an _h/_w pair
        pad = None if p.pad_h is not None else p.pad
        stride = None if p.stride_h is not None else p.stride
        ph, pw = self.spatial_pair(pad, p.pad_h, p.pad_w, "pad", 0)
        sh, sw = self.spatial_pair(stride, p.stride_h, p.stride_w, "stride", 1)
        if kh <= 0 or kw <= 0:
            raise self.spec_error("kernel dimensions must be positive", field="kernel_size")
        if sh <= 0 or sw <= 0:
            raise self.spec_error("stride must be positive", field="stride")
        if p.global_pooling and (ph or pw or sh != 1 or sw != 1):
            raise self.spec_error("with global_pooling: true only pad 0 and stride 1 are "
                                  "allowed", field="global_pooling")
        if ph < 0 or pw < 0 or ph >= kh or pw >= kw:
            raise self.spec_error(f"pad ({ph}, {pw}) must be >= 0 and smaller than the kernel "
                                  f"({kh}, {kw})", field="pad")
        return kh, kw, ph, pw, sh, sw

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if len(shape) != 4:
            raise self.spec_error(f"pools 4-D NCHW blobs only, got shape {shape}", field="bottom")
        N, C, H, W = shape
        kh, kw, ph, pw, sh, sw = self._parse(H, W)
        ceil = self.p.ceil   # round_mode, or a fork's ceil_mode
        any_pad = bool(ph or pw)
        Ho = pooled_size(H, kh, ph, sh, ceil, any_pad)
        Wo = pooled_size(W, kw, pw, sw, ceil, any_pad)
        if Ho <= 0 or Wo <= 0:
            raise self.error(f"kernel {kh}x{kw} does not fit the input {H}x{W} (pad {ph}, {pw})")
        self.N, self.C, self.H, self.W, self.Ho, self.Wo = N, C, H, W, Ho, Wo
        self.kh, self.kw, self.pad_h, self.pad_w, self.stride_h, self.stride_w = \
            kh, kw, ph, pw, sh, sw
        self.is_max = self.p.pool == "MAX"
        self.n_tops = max(len(self.lp.top), 1)
        self.is_global = (Ho, Wo) == (1, 1) and (kh, kw) == (H, W) and not any_pad
        if self.backend.is_gpu:              # CUDA kernels (pool_cuda.py): one launch per pass
            self._gpu_mask = (self.xp.zeros((N, C, Ho, Wo), dtype=numpy.int32)
                              if self.is_max else None)
            return [(N, C, Ho, Wo)] * self.n_tops
        self._argmax_stale = False     # True after a forward that kept the maxima only
        self._matrix = None
        if (not self.is_max and not self.is_global
                and H * W <= _tuning.ave_matrix_max_cells_per_tap * kh * kw
                and H * W * Ho * Wo <= _tuning.ave_matrix_max_elements):
            self._matrix = self._ave_matrix()
        if self._matrix is not None:
            return [(N, C, Ho, Wo)] * self.n_tops
        itemsize = numpy.dtype(self.dtype).itemsize
        work_cells = N * C * Ho * Wo * kh * kw
        threads = self.threads if work_cells >= parallel.SPLIT_MIN_ELEMENTS else 1
        self._ranges = parallel.split(N, threads)
        longest = max(count for _, count in self._ranges)
        self._chunk = samples_per_chunk(longest, C * H * W * itemsize,
                                        _tuning.chunk_bytes)
        n = self._chunk * len(self._ranges)          # work rows: one slot per range
        self._plan_layout()
        work = (n, C, Ho, Wo) if self._direct else (n, C, Ho * self._Wq)
        if not self.is_max:
            self._pool_size = self._ave_pool_size()
        if self.is_max:
            idx = numpy.uint8 if kh * kw <= 255 else numpy.int32
            self._argmax = self.xp.zeros((N,) + work[1:], dtype=idx)    # the whole batch
            self._better = self.xp.zeros(work, dtype=bool)
            self._scratch = self.xp.zeros(work, dtype=idx)
            if self._direct:
                self._routed = self.backend.zeros(work)
            else:
                self._plan_scatter()
        return [(N, C, Ho, Wo)] * self.n_tops

    def _plan_scatter(self):
        """Index tables of the overlapping-window MAX backward, relative to a chunk's first
        sample: the flat input index (n·C + c)·H·W + h·W + w of tap (i, j) of output
        (n, c, ho, wo) is ``_window_base[n, c, ho, wo] + _tap_offset[i·kw + j]`` (the table
        in int32 where a chunk's indices fit: half the memory, the same sums in int64)."""
        xp, C, H, W = self.xp, self.C, self.H, self.W
        plane = xp.arange(self._chunk * C, dtype=numpy.int64).reshape(-1, C, 1, 1) * (H * W)
        hstart = xp.arange(self.Ho, dtype=numpy.int64).reshape(-1, 1) * self.stride_h - self.pad_h
        wstart = xp.arange(self.Wo, dtype=numpy.int64).reshape(1, -1) * self.stride_w - self.pad_w
        base = plane + hstart * W + wstart
        small = self._chunk * C * H * W < 2**31
        self._window_base = base.astype(numpy.int32) if small else base
        self._tap_offset = xp.asarray([i * W + j for i, j in self._taps()], dtype=numpy.int64)

    def _plan_layout(self):
        """Choose the direct or phased layout (module doc) and plan the phase copies (into
        the thread's scratch, ``_phase_work``)."""
        H, W, Ho, Wo = self.H, self.W, self.Ho, self.Wo
        kh, kw, ph, pw, sh, sw = (self.kh, self.kw, self.pad_h, self.pad_w,
                                  self.stride_h, self.stride_w)
        fits = not (ph or pw) and (Ho - 1) * sh + kh <= H and (Wo - 1) * sw + kw <= W
        self._direct = self.is_global or (fits and sh >= kh and sw >= kw)
        # direct taps that tile the image exactly: backward assigns, no zeroing
        self._tiles = self._direct and (sh, sw) == (kh, kw) and (Ho * kh, Wo * kw) == (H, W)
        if self._direct:
            return
        Hq, Wq = Ho + (kh - 1) // sh, Wo + (kw - 1) // sw
        self._Wq = Wq

        def runs(size, pad, stride, n_q):
            """Per phase p: (x slice, phase slice) of the input rows that phase p holds."""
            out = []
            for p in range(stride):
                first = (p - pad) % stride              # first input row of phase p
                q0 = (first + pad) // stride
                count = min(len(range(first, size, stride)), max(n_q - q0, 0))
                if count > 0:
                    out.append((p, slice(first, first + stride * (count - 1) + 1, stride),
                                slice(q0, q0 + count), count))
            return out, sum(r[3] for r in out)

        rows, covered_h = runs(H, ph, sh, Hq)
        cols, covered_w = runs(W, pw, sw, Wq)
        #: (index into the phases, index into x) pairs, one per (row phase, column phase)
        self._phase_copies = [((p, q, Ellipsis, hq, wq), (Ellipsis, hx, wx))
                              for p, hx, hq, _ in rows for q, wx, wq, _ in cols]
        self._full_cover = (covered_h, covered_w) == (H, W)
        self._phase_fill = float(numpy.finfo(self.dtype).min) if self.is_max else 0.0
        # one slack row so that the last tap's wide run stays inside its plane
        self._phase_plane = (Hq + 1, Wq)
        #: the cells of the phases no copy writes (padding, overhang, the slack row)
        self._phase_rest = []
        row_of = {p: hq for p, _, hq, _ in rows}
        col_of = {q: wq for q, _, wq, _ in cols}
        for p in range(sh):
            for q in range(sw):
                hq, wq = row_of.get(p), col_of.get(q)
                if hq is None or wq is None:
                    self._phase_rest.append((p, q, Ellipsis))
                    continue
                self._phase_rest += [(p, q, Ellipsis, slice(0, hq.start), slice(None)),
                                     (p, q, Ellipsis, slice(hq.stop, None), slice(None)),
                                     (p, q, Ellipsis, hq, slice(0, wq.start)),
                                     (p, q, Ellipsis, hq, slice(wq.stop, None))]

    def _work(self, name: str, shape: tuple[int, ...]):
        """The thread's scratch array ``name`` of ``shape`` (``thread_scratch``, shared by the
        net's Pooling layers: its values are left from its last user)."""
        return thread_scratch(self.backend, ("pool", name), shape)

    def _phase_work(self, name: str, n: int):
        """A work array of the phase layout (stride_h, stride_w, n, C, Hq + 1, Wq)."""
        return self._work(name, (self.stride_h, self.stride_w, n, self.C) + self._phase_plane)

    def _wide_work(self, name: str, n: int):
        """A work array of wide rows (n, C, Ho·Wq)."""
        return self._work(name, (n, self.C, self.Ho * self._Wq))

    def _windows(self, dim: int):
        """Per output index along dim 0 (rows) or 1 (columns): (first, end) image cell of its
        window and the window's length in Caffe's pool_size (padding counts, the ceil
        overhang does not)."""
        n_out, size, k, pad, stride = ((self.Ho, self.H, self.kh, self.pad_h, self.stride_h)
                                       if dim == 0 else
                                       (self.Wo, self.W, self.kw, self.pad_w, self.stride_w))
        out = []
        for o in range(n_out):
            start = o * stride - pad
            end = min(start + k, size + pad)
            out.append((max(start, 0), min(end, size), end - start))
        return out

    def _ave_pool_size(self):
        """Caffe's AVE divisor per output cell: an int when uniform, else an (Ho, Wo) array."""
        rows = [length for _, _, length in self._windows(0)]
        cols = [length for _, _, length in self._windows(1)]
        if len(set(rows)) == 1 and len(set(cols)) == 1:
            return rows[0] * cols[0]
        host = numpy.outer(numpy.array(rows, dtype=numpy.float64),
                           numpy.array(cols, dtype=numpy.float64))
        return self.backend.asarray(host)

    def _ave_matrix(self):
        """AVE pooling as a linear map of one plane: P (H·W, Ho·Wo) with P[h·W + w, ph·Wo + pw]
        = 1 / pool_size(ph, pw) for every image cell (h, w) of window (ph, pw), else 0, so that
        y (N·C, Ho·Wo) = x (N·C, H·W) @ P and dx = dy @ Pᵀ (the module doc's AVE; Σ x/pool_size
        equals Caffe's Σ x / pool_size to rounding). Windows and pool_size factor by dim, so P
        is the outer product of a rows factor (H, Ho) and a columns factor (W, Wo). None when a
        window holds no image cell (stride > kernel with the ceil overhang: Caffe's 0/0 gives
        NaN there, as the taps do)."""
        factors = []
        for dim, size in ((0, self.H), (1, self.W)):
            windows = self._windows(dim)
            if any(first >= end for first, end, _ in windows):
                return None
            f = numpy.zeros((size, len(windows)))
            for o, (first, end, length) in enumerate(windows):
                f[first:end, o] = 1.0 / length
            factors.append(f)
        P = numpy.einsum("hp,wq->hwpq", *factors).reshape(self.H * self.W, self.Ho * self.Wo)
        return self.backend.asarray(P.astype(self.dtype))

    # -- helpers --------------------------------------------------------------------------
    def _taps(self):
        """Kernel taps (i, j) in Caffe's scan order (row by row)."""
        return [(i, j) for i in range(self.kh) for j in range(self.kw)]

    def _tap(self, a, i, j):
        """What kernel tap (i, j) reads: an (n, C, Ho, Wo) strided view of the bottom (direct)
        or an (n, C, Ho·Wq) run of one phase plane (phased). Also indexes the diffs."""
        Ho, Wo, sh, sw = self.Ho, self.Wo, self.stride_h, self.stride_w
        if self._direct:
            return a[:, :, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw]
        plane = a[i % sh, j % sw]
        plane = plane.reshape(plane.shape[0], self.C, -1)
        start = (i // sh) * self._Wq + j // sw
        return plane[:, :, start:start + Ho * self._Wq]

    def _crop(self, wide):
        """(n, C, Ho, Wo) view of a work array (drops the wide rows' extra columns)."""
        if self._direct:
            return wide
        return wide.reshape(wide.shape[0], self.C, self.Ho, self._Wq)[..., :self.Wo]

    def _source(self, x):
        """The array the taps read: x (a chunk of samples) itself, or its phases (the cells
        no copy writes hold the fill: the smallest float for MAX, 0 for AVE)."""
        if self._direct:
            return x
        phases = self._phase_work("phases", x.shape[0])
        for rest in self._phase_rest:
            phases[rest] = self._phase_fill
        for dst, src in self._phase_copies:
            phases[dst] = x[src]
        return phases

    # -- forward --------------------------------------------------------------------------
    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        if self.backend.is_gpu:
            pool_cuda.pool_forward(self, x, y, self._gpu_mask)
            if self.n_tops == 2:
                top[1].data[...] = self._gpu_mask
            return
        if self._matrix is not None:         # (parallel.matmul copies an in-place x)
            planes = self.N * self.C
            return parallel.matmul(x.reshape(planes, -1), self._matrix,
                                   y.reshape(planes, -1), self.threads)
        # the winners are needed by a backward or the mask top; a TEST pass rarely has either
        track = not (self.phase == "TEST" and self.n_tops == 1 and bottom[0] is not top[0])
        self._run_forward(x, y, track)
        if self.n_tops == 2:
            self._write_mask(top[1].data)

    def _run_forward(self, x, y, track: bool = True):
        """y = the pooling of x; MAX: with ``track`` also the winners (``_argmax``)."""
        self._argmax_stale = self.is_max and not track and not self.is_global
        if self.is_global:
            self._forward_global(x, y)
        else:
            self._each_chunk(lambda n0, n, s: self._forward_chunk(x[n0:n0 + n], y[n0:n0 + n],
                                                                   n0, s, track))

    def _each_chunk(self, fn):
        """fn(n0, n, s) for every chunk of the batch: each thread (``parallel.run``) runs the
        chunks of its own sample range with its slot's work rows, from s = k·chunk on."""
        def one_range(k, start, count):
            for c0, n in sample_chunks(count, self._chunk):
                fn(start + c0, n, k * self._chunk)
        parallel.run(one_range, [(k, a, c) for k, (a, c) in enumerate(self._ranges)])

    def _forward_chunk(self, x, y, n0, s, track=True):
        """Forward of the samples n0 … n0 + len(x) − 1 (x, y: that chunk of bottom and top),
        with the work rows s … s + len(x) − 1; MAX without ``track``: the maxima only."""
        xp, n = self.xp, x.shape[0]
        src = self._source(x)
        acc = y if self._direct else self._wide_work("top", n)
        if self.is_max:
            if track:
                self._forward_max(src, acc, self._argmax[n0:n0 + n], s)
            else:
                taps = self._taps()
                xp.copyto(acc, self._tap(src, *taps[0]))
                for i, j in taps[1:]:
                    xp.maximum(acc, self._tap(src, i, j), out=acc)
            if not self._direct:
                y[...] = self._crop(acc)
            return
        taps = self._taps()
        xp.copyto(acc, self._tap(src, *taps[0]))
        for i, j in taps[1:]:
            acc += self._tap(src, i, j)
        xp.divide(self._crop(acc), self._pool_size, out=y)

    def _forward_max(self, src, y, argmax, s):
        """y = max over taps; ``argmax`` = the first tap (scan order) reaching it."""
        xp, n = self.xp, y.shape[0]
        better, scratch = self._better[s:s + n], self._scratch[s:s + n]
        better_u8 = better.view(numpy.uint8)     # bool·uint8 would run a casting loop (2× slower)
        taps = self._taps()
        xp.copyto(y, self._tap(src, *taps[0]))
        argmax.fill(0)
        for o, (i, j) in enumerate(taps[1:], start=1):
            v = self._tap(src, i, j)
            xp.greater(v, y, out=better)                   # strict: earlier taps win ties
            xp.maximum(y, v, out=y)
            # taps come in increasing order, so the last improving tap is the argmax
            # (multiply + maximum: faster than copyto(where=) in NumPy)
            xp.multiply(better_u8, argmax.dtype.type(o), out=scratch)
            xp.maximum(argmax, scratch, out=argmax)

    def _forward_global(self, x, y):
        flat = x.reshape(self.N, self.C, -1)
        if self.is_max:
            self._argmax[...] = flat.argmax(axis=2).reshape(self._argmax.shape)
            y[...] = flat.max(axis=2).reshape(y.shape)
        else:
            y[...] = flat.sum(axis=2).reshape(y.shape)
            y /= self._pool_size

    def _write_mask(self, mask):
        """Caffe's MAX mask: argmax as the flat input index h·W + w (float)."""
        xp = self.xp
        hstart = xp.arange(self.Ho).reshape(-1, 1) * self.stride_h - self.pad_h
        wstart = xp.arange(self.Wo).reshape(1, -1) * self.stride_w - self.pad_w
        a = self._crop(self._argmax).astype(numpy.int64)
        mask[...] = (hstart + a // self.kw) * self.W + (wstart + a % self.kw)

    # -- backward -------------------------------------------------------------------------
    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        dy, dx = top[0].diff, bottom[0].diff
        if self.backend.is_gpu:
            return pool_cuda.pool_backward(self, dy, dx, self._gpu_mask)
        if self._matrix is not None:
            planes = self.N * self.C
            return parallel.matmul(dy.reshape(planes, -1), self._matrix.T,
                                   dx.reshape(planes, -1), self.threads)
        if self._argmax_stale:                  # a TEST forward kept the maxima only
            self._run_forward(bottom[0].data, xp.empty_like(top[0].data))
        if self.is_global:
            return self._backward_global(dy, dx)
        self._each_chunk(lambda n0, n, s: self._backward_chunk(dy[n0:n0 + n], dx[n0:n0 + n],
                                                               n0, s))

    def _backward_chunk(self, dy, dx, n0, s):
        """Bottom diff of the samples n0 … n0 + len(dy) − 1 (dy, dx: that chunk), with the
        work rows s … s + len(dy) − 1."""
        xp, n = self.xp, dy.shape[0]
        if self.is_max and not self._direct:
            return self._backward_max_scatter(dy, dx, n0)
        if self._direct:
            g = dy if self.is_max else dy / self._pool_size
            dst, add = dx, not self._tiles
        else:
            g = self._wide_work("top_diff", n)            # AVE (MAX scatters above)
            g.reshape(n, self.C, self.Ho, self._Wq)[..., self.Wo:] = 0
            xp.divide(dy, self._pool_size, out=self._crop(g))
            dst, add = self._phase_work("phase_diffs", n), True
        if add:
            dst.fill(0)
        argmax = self._argmax[n0:n0 + n] if self.is_max else None
        for o, (i, j) in enumerate(self._taps()):
            part = self._tap(dst, i, j)
            if self.is_max:
                hit = xp.equal(argmax, argmax.dtype.type(o), out=self._better[s:s + n])
                if add:
                    part += xp.multiply(g, hit, out=self._routed[s:s + n])
                else:
                    xp.multiply(g, hit, out=part)
            elif add:
                part += g
            else:
                part[...] = g
        if not self._direct:
            if not self._full_cover:
                dx.fill(0)                   # rows/cols no window reads get no gradient
            for src, dst_ in self._phase_copies:
                dx[dst_] = dst[src]

    def _backward_max_scatter(self, dy, dx, n0):
        """Overlapping windows: every top diff of the chunk added to its argmax input cell
        (``add.at``: in float32, top cells in order, as Caffe's loop; several windows may pick
        the same cell)."""
        n = dy.shape[0]
        taps = self._crop(self._argmax[n0:n0 + n])
        winner = self._window_base[:n] + self._tap_offset.take(taps)
        dx.fill(0)                          # a chunk of the bottom diff: reshape is a view
        self.xp.add.at(dx.reshape(-1), winner.reshape(-1), dy.reshape(-1))

    def _backward_global(self, dy, dx):
        flat = dx.reshape(self.N, self.C, -1)
        g = dy.reshape(self.N, self.C, 1)
        if self.is_max:
            cells = self.xp.arange(flat.shape[2]).reshape(1, 1, -1)
            hit = cells == self._argmax.reshape(self.N, self.C, 1)
            self.xp.multiply(g, hit, out=flat)
        else:
            flat[...] = g / self._pool_size


# -- SPP ------------------------------------------------------------------------------------
@register("SPP")
class SPP(Layer):
    """Spatial pyramid pooling (Caffe's ``SPPLayer``) of an (N, C, H, W) bottom.

    Level l = 0 … L−1 (L = ``pyramid_height``) pools with b = 2^l bins per side:
    kernel kh = ceil(H / b), stride kh, pad_h = (kh·b − H + 1) // 2 (w alike), through Caffe's
    Pooling (``pool`` MAX or AVE, ceil rule, AVE divisor counting padding). Top: the levels'
    outputs flattened and concatenated, (N, C·Σ_l Ho_l·Wo_l) (= C·(4^L − 1)/3 when every level
    yields b×b bins); with L = 1 the single level's (N, C, 1, 1) output itself, as in Caffe.
    Backward: the sum of the levels' pooling gradients.
    """

    writes_bottom_diffs = True

    param_block = "spp_param"
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes):
        shape = self.nchw(bottom_shapes[0])
        p = self.p
        if not p.pyramid_height:
            raise self.spec_error("pyramid_height (>= 1) is required", field="pyramid_height")
        if p.pool == "STOCHASTIC":
            raise self.spec_error("pool: STOCHASTIC is not supported (use MAX or AVE)",
                                  field="pool")
        N, C, H, W = shape
        if H <= 0 or W <= 0:
            raise self.error("input dimensions cannot be zero")
        self.levels, self.pool_tops, self.offsets = [], [], []
        offset = 0
        for level in range(p.pyramid_height):
            bins = 2 ** level
            kh, kw = -(-H // bins), -(-W // bins)
            pool = {"pool": p.pool, "kernel_h": kh, "kernel_w": kw, "stride_h": kh,
                    "stride_w": kw, "pad_h": (kh * bins - H + 1) // 2,
                    "pad_w": (kw * bins - W + 1) // 2}
            lp = LayerParameter.model_validate({"name": f"{self.name}/level{level}",
                                                "type": "Pooling", "pooling_param": pool})
            layer = Pooling(lp, self.phase, self.backend, self.rng, self.where)
            layer.check_arity(1, 1)
            (out,) = layer.setup([shape])
            self.levels.append(layer)
            self.pool_tops.append(Blob(f"{self.name}/level{level}", self.backend.zeros(out),
                                       self.xp))
            size = math.prod(out[1:])
            self.offsets.append((offset, offset + size))
            offset += size
        self._scratch = Blob(f"{self.name}/bottom", None, self.xp)
        if p.pyramid_height == 1:
            return [tuple(self.pool_tops[0].shape)]
        return [(N, offset)]

    def forward(self, bottom, top):
        y = top[0].data
        for layer, t, (lo, hi) in zip(self.levels, self.pool_tops, self.offsets):
            layer.forward(bottom, [t])
            y.reshape(y.shape[0], -1)[:, lo:hi] = t.data.reshape(t.shape[0], -1)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(top[0].shape[0], -1)
        scratch = self._scratch
        scratch.data = bottom[0].data
        for i, (layer, t, (lo, hi)) in enumerate(zip(self.levels, self.pool_tops,
                                                     self.offsets)):
            t.diff[...] = dy[:, lo:hi].reshape(t.shape)
            if i == 0:
                layer.backward([t], [True], bottom)     # overwrites bottom diff
            else:
                layer.backward([t], [True], [scratch])
                bottom[0].diff += scratch.diff
