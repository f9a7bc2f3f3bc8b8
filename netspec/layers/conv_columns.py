"""The convolution machinery behind Convolution, Deconvolution and Im2col: chunked im2col +
GEMM over NCHW arrays, CPU threads over sample ranges, and the tuning of its code paths.

The batch is processed in chunks of samples small enough that a chunk's columns stay in the CPU
cache (``ConvTuning.col_chunk_bytes``; the whole batch on a GPU). Per chunk the bottom is copied
into a zero-bordered NHWC buffer, a strided view of it into the columns ``col (n, Ho, Wo, g, kh,
kw, C/g)`` (one row of K = C·kh·kw values per output position), and one GEMM per group gives
``y (n·Ho·Wo, M/g) = col @ Wᵀ``, transposed into the NCHW top. Variants, each chosen by shape:

* kernel rows (CPU, one group, stride_h 1): columns along W only, ``col (Hp, n, Wo, kw, C)``,
  and ``y = Σ_i col_i @ W_iᵀ`` over the kh kernel rows: (Hp/Ho)·kw copies of each input value
  instead of kh·kw;
* few channels (kw·C/g < ``row_layout_min_run``): an NCHW buffer and (K, Q) columns, one GEMM per
  sample written straight into the top;
* bottom diff of a stride-1 "same"-padded convolution: the convolution of the padded top diff
  with the flipped, transposed kernel (no scatter), whose columns of dy also give dW;
* other stride-1, dilation-1, one-group bottom diffs: ``dcol = Wᵀ @ dy`` in one GEMM and a
  col2im of one add per kernel tap; anything else: one GEMM per kernel tap added as a shifted
  window.

Backward rebuilds the columns from the bottom as it is now, as Caffe does. The derivations are
in ``docs/layer_implementation.md``, the measurements behind each choice in ``bench/NOTES.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy

from .. import parallel
from .base import sample_chunks, samples_per_chunk, thread_scratch


@dataclass(frozen=True)
class ConvTuning:
    """The CPU code-path choices of the convolution machinery. Each default is measured;
    ``bench/NOTES.md`` has the figures and the alternatives tried. Tests run every path through
    the ``conv_tuning`` fixture (``tests/conftest.py``)."""

    #: target size of one chunk's column buffer on the CPU (at least one sample per chunk)
    col_chunk_bytes: int = 2 << 20
    #: stride-1 bottom diffs as a transposed convolution (else per-tap products) when its GEMM
    #: is at most ``transposed_max_growth`` times the dcol GEMM (H·W vs Ho·Wo rows: "same"
    #: padding) and produces at least ``transposed_min_channels`` columns (C/g): CIFAR-10
    #: quick's conv2/conv3 −50 %/−30 % backward, LeNet's unpadded conv2 would be +100 %
    transposed_backward: bool = True
    transposed_max_growth: float = 1.25
    transposed_min_channels: int = 8
    #: other stride-1, dilation-1, one-group bottom diffs by col2im (else per-tap products):
    #: LeNet conv2 8.1 -> 7.1 ms; with samples-last columns its bottom diff 3.4 -> 2.8 ms
    col2im_backward: bool = True
    #: largest (M/g)·(kh·kw·C/g) weight matrix whose gradient is a batch of per-sample GEMMs
    split_dw_max_weights: int = 4096
    #: shortest im2col copy run (kw·C/g values) for which the NHWC "rows" layout is used
    row_layout_min_run: int = 16
    #: CPU, one group, stride_h 1, rows layout: columns along W only and one GEMM per kernel
    #: row (``_Correlation``); their chunks take half of ``col_chunk_bytes`` (1 MiB measured
    #: best: CIFAR-10 quick conv2 forward 21.5 ms vs 22.6 at 2 MiB, 23.8 at 4)
    kernel_rows: bool = True
    #: kernel rows: weight products over wide columns -- kw·C values ≥ ``pair_transposed_min_
    #: columns`` or ≥ ``pair_transposed_min_aspect`` × the Mo channels of z -- as colsᵀ @ zᵀ,
    #: others as z @ cols: OpenBLAS runs each faster for those shapes (CIFAR-10 quick conv2/conv3
    #: transposed backwards −4 %/−19 %; LeNet conv2's weight gradient would be +17 %)
    pair_transposed_min_columns: int = 256
    pair_transposed_min_aspect: int = 4
    #: CPU 1×1, stride-1, unpadded convolutions as plain GEMMs on the NCHW arrays
    #: (``conv_direct.PointwiseConv``), no columns
    pointwise_gemm: bool = True
    #: CPU depthwise convolutions (group = channels = num_output) as per-tap multiply-adds
    #: (``conv_direct.DepthwiseConv``) instead of one tiny GEMM per channel
    depthwise_taps: bool = True
    #: ... their forward by taps only up to this many output positions Ho·Wo, by columns
    #: above (1 thread, batch 1: taps/columns 0.64 at 7x7, 1.2 at 14x14, 4-7 at 56x56-112x112)
    depthwise_taps_max_forward_positions: int = 100
    #: ... above that, forwards of at most ``depthwise_planes_max_batch`` samples, strides
    #: ≤ ``depthwise_planes_max_stride`` and ≥ ``depthwise_planes_min_positions`` outputs by
    #: taps over blocks of NCHW planes (``depthwise_planes_block_bytes`` each, kept in cache):
    #: MobileNet at batch 1, 1 thread, layer ÷ columns in the net 0.64 at 112², 0.87 at 56²,
    #: but 1.3–1.6 at 14²–28² (alone 0.85–0.9); stride 2 0.85–1.5, batch 16 0.8–2.4
    depthwise_planes_max_batch: int = 1
    depthwise_planes_max_stride: int = 1
    depthwise_planes_min_positions: int = 3136
    depthwise_planes_block_bytes: int = 1 << 20
    #: CPU kernels compiled by numba (``conv_compiled``, the ``fast`` extra) when numba
    #: imports: depthwise convolutions' forwards (group = channels, num_output a multiple of
    #: them) and the backwards of channel multipliers, and the folded convolutions' scale,
    #: shift and ReLU in one pass; the NumPy paths otherwise. MobileNet's depthwise forwards,
    #: 1 thread, compiled ÷ NumPy: batch 1 0.07–0.85, batch 16 0.25–0.94 (bench/NOTES.md)
    compiled: bool = True
    #: CPU nets without backward: BatchNorm (global statistics) + Scale folded into the
    #: Convolution before them (``conv_fold``), set when the net is built
    fold_batch_norm: bool = True
    #: ... and a ReLU (negative_slope 0) in place after them (``conv_fold``)
    fold_relu: bool = True
    #: CPU 3×3, stride-1, dilation-1, one-group Convolution forwards by Winograd F(2×2, 3×3)
    #: (``conv_winograd``) where C and M ≥ ``winograd_min_channels``, Ho·Wo ≥
    #: ``winograd_min_positions`` and N·Ho·Wo ≥ ``winograd_min_batch_positions`` (its weight
    #: transform, redone every forward, then costs little), chunks of at least
    #: ``winograd_min_chunk_tiles`` 2×2 tiles. Forward ÷ columns, 1 thread: ResNet's 64@56²
    #: 0.78–0.98 / 0.93 (batch 1 / 16), 128@28² 0.81 / 0.69, 256@14² 1.0 / 0.64, 512@7² 1.6 /
    #: 0.66; C = 16–32 1.0–1.34 (bench/NOTES.md)
    winograd: bool = True
    winograd_min_channels: int = 64
    winograd_min_positions: int = 49
    winograd_min_batch_positions: int = 784
    winograd_min_chunk_tiles: int = 256
    #: a pass whose batch is smaller than the CPU threads (one image on two cores): BLAS
    #: threads each GEMM (``Net.pass_blas_threads``) when set; else BLAS stays at one thread
    #: and the convolutions split their GEMMs (output rows or columns, Winograd's 16
    #: products), the compiled depthwise kernels their channels, over the engine's threads,
    #: which wait on locks instead of spinning. 2 threads, batch 1, split ÷ BLAS threads: on an
    #: idle 2-core machine 1.17–1.50 (ResNet-50, MobileNet, GoogLeNet, SqueezeNet 1.1), so BLAS
    #: threads by default; with the other core busy (load 3.4–4.3) MobileNet 0.19, ResNet-50
    #: 0.09 -- OpenBLAS's spinning threads collapse -- so turn it off on a shared machine
    #: (bench/NOTES.md)
    single_sample_blas_threads: bool = True


_tuning = ConvTuning()


def tuning() -> ConvTuning:
    """The tuning the next convolution set up will use."""
    return _tuning


def use_tuning(new: ConvTuning) -> ConvTuning:
    """Make ``new`` the tuning of convolutions set up from now on; returns the previous one."""
    global _tuning
    old, _tuning = _tuning, new
    return old


def _chunk_size(backend, N: int, per_sample_bytes: int, share: int = 1) -> int:
    """Samples per chunk: the whole batch on a GPU, else as many as fit col_chunk_bytes
    (divided by ``share``)."""
    return N if backend.is_gpu else samples_per_chunk(N, per_sample_bytes,
                                                      _tuning.col_chunk_bytes // share)


def _channels_first(buf, z, n0, n, g):
    """Samples n0 … n0+n−1 of z (N, Mo, H, W) copied into ``buf`` (Mo, ≥ n, H·W) and returned
    as (g, Mo/g, n·H·W): per group, one row per channel over the chunk's positions."""
    Mo = z.shape[1]
    d = buf[:, :n]
    d[...] = z[n0:n0 + n].reshape(n, Mo, -1).transpose(1, 0, 2)
    return d.reshape(g, Mo // g, -1)


def _product(a, b, gpu: bool):
    """a @ b over the last two axes. On the CPU computed as (bᵀ @ aᵀ)ᵀ: for a convolution's
    weight gradient (a: few filter rows, b: many column rows) OpenBLAS runs that orientation
    faster (CIFAR-10 quick conv1 dW 19.8 -> 15.6 ms, conv2 backward 50.3 -> 47.0 at 1 thread).
    On a GPU as written: CuPy's matmul copies non-contiguous operands."""
    if gpu:
        return a @ b
    return (b.swapaxes(-1, -2) @ a.swapaxes(-1, -2)).swapaxes(-1, -2)


class _Correlation:
    """One direction of a grouped 2-D cross-correlation over NCHW arrays, in sample chunks.

    Input (N, C, H, W) zero-padded by (ph, pw); kernel (g, Mo/g, kh·kw·C/g) with K ordered
    (i, j, c); output (N, Mo, Ho, Wo). Owns the chunk's padded buffer; its columns live in
    work arrays shared per thread (``thread_scratch``), in one of two layouts chosen by the
    length of the runs an im2col copy moves:

    * rows (kw·C/g ≥ ``row_layout_min_run``): NHWC buffer, columns (n, Ho, Wo, g, kh, kw, C/g),
      each copy run kw·C/g long;
    * columns (few channels, e.g. a first layer on 1–3 image channels): NCHW buffer, columns
      (g, kh, kw, C/g, n, Ho, Wo), each copy run Wo long.

    Either way the GEMMs see the columns as (g, n·Ho·Wo, Kg) (a transposed view in the second).
    On the CPU, with one group, stride_h 1 and the rows' run length, ``krows`` ("kernel rows")
    replaces both: NHWC buffer, columns along W only, (Hp, n, Wo, kw, C), taken per kernel row
    i as the (Ho·n·Wo, kw·C) matrix of padded rows i·dilation_h … + Ho − 1 (``kernel_row``);
    output and pair rows are then ordered (ho, n, wo).
    """

    def __init__(self, backend, N, C, H, W, Mo, Ho, Wo, g, kernel, pad, stride, dilation,
                 role="forward", threads=1):
        self.threads = threads      # GEMMs split over these (``parallel.matmul``; one group)
        self.xp, self.N, self.C, self.H, self.W = backend.xp, N, C, H, W
        self.backend, self.role = backend, role
        self.Mo, self.Ho, self.Wo, self.g = Mo, Ho, Wo, g
        (self.kh, self.kw), (self.ph, self.pw) = kernel, pad
        self.stride, self.dilation = stride, dilation
        self.Cg, self.Kg = C // g, self.kh * self.kw * (C // g)
        itemsize = numpy.dtype(backend.dtype).itemsize
        self.rows = self.kw * self.Cg >= _tuning.row_layout_min_run
        self.krows = (_tuning.kernel_rows and self.rows and not backend.is_gpu and g == 1
                      and stride[0] == 1)
        Hp, Wp = H + 2 * self.ph, W + 2 * self.pw
        self.Hp = Hp
        self.pair_transposed = self.kw * C >= min(_tuning.pair_transposed_min_columns,
                                                  _tuning.pair_transposed_min_aspect * Mo)
        # the columns and the GEMM output rows of a chunk (transposed into the top) are work
        # arrays of one call: shared per thread by every correlation of this role
        # (``thread_scratch``); a chunk of n samples takes a contiguous prefix
        if self.krows:
            self.chunk = n = _chunk_size(backend, N, Hp * Wo * self.kw * C * itemsize, share=2)
            self.buf = backend.zeros((n, Hp, Wp, C))
            self._shapes = {"col": (Hp * n * Wo * self.kw * C,), "out": (Ho * n * Wo, Mo),
                            "tmp": (Ho * n * Wo, Mo)}
        else:
            self.chunk = n = _chunk_size(backend, N, Ho * Wo * C * self.kh * self.kw * itemsize)
            if self.rows:
                self.buf = backend.zeros((n, Hp, Wp, C))
                self._shapes = {"col": (n, Ho, Wo, g, self.kh, self.kw, self.Cg),
                                "out": (n * Ho * Wo, Mo)}
            else:
                self.buf = backend.zeros((n, C, Hp, Wp))
                # each group's Kg column rows are followed by a row of ones (set by ``run``),
                # so that a bias is one more weight column of the GEMM instead of a pass over
                # the top
                self._shapes = {"col1": (g, self.Kg + 1, n * Ho * Wo)}
        self._pT = None         # krows: a chunk of the pair array as (Mo, Ho, n, Wo) (first use)
        self._zT = None         # a chunk of ``run``'s pair array, channels first (first use)
        self.is_gpu = backend.is_gpu

    def chunks(self):
        return sample_chunks(self.N, self.chunk)

    def _work(self, name):
        return thread_scratch(self.backend, ("correlation", self.role, name), self._shapes[name])

    @property
    def col(self):
        """The chunk's columns (layout of the class doc)."""
        if "col1" in self._shapes:
            g, n, (Ho, Wo) = self.g, self.chunk, (self.Ho, self.Wo)
            return self.col1[:, :self.Kg].reshape(g, self.kh, self.kw, self.Cg, n, Ho, Wo)
        return self._work("col")

    @property
    def col1(self):
        return self._work("col1")

    @property
    def out(self):
        return self._work("out")

    @property
    def tmp(self):
        return self._work("tmp")

    def columns(self, x, n0, n):
        """Fill the columns of samples n0 … n0+n−1 of x (N, C, H, W); returns them as
        (g, n·Ho·Wo, Kg) (per-group matrices sharing one buffer), or with ``krows`` as the
        (Hp·n·Wo, kw·C) matrix that ``kernel_row`` slices."""
        buf, xs = self.buf[:n], x[n0:n0 + n]
        (st_h, st_w), (d_h, d_w), Cg = self.stride, self.dilation, self.Cg
        as_strided = self.xp.lib.stride_tricks.as_strided
        if not self.rows:              # NCHW buffer, (g, kh, kw, C/g, n, Ho, Wo) columns
            buf[:, :, self.ph:self.ph + self.H, self.pw:self.pw + self.W] = xs
            sN, sC, sH, sW = buf.strides
            col = self.col[..., :n, :, :]
            col[...] = as_strided(buf, shape=col.shape, strides=(
                sC * Cg, sH * d_h, sW * d_w, sC, sN, sH * st_h, sW * st_w))
            return self.matrices(n)
        buf[:, self.ph:self.ph + self.H, self.pw:self.pw + self.W, :] = xs.transpose(0, 2, 3, 1)
        sN, sH, sW, sC = buf.strides
        if self.krows:
            shape = (self.Hp, n, self.Wo, self.kw, self.C)
            col = self.col[:self.Hp * n * self.Wo * self.kw * self.C].reshape(shape)
            col[...] = as_strided(buf, shape=shape, strides=(sH, sN, sW * st_w, sW * d_w, sC))
            return col.reshape(self.Hp * n * self.Wo, self.kw * self.C)
        col = self.col[:n]
        col[...] = as_strided(buf, shape=col.shape, strides=(
            sN, sH * st_h, sW * st_w, sC * Cg, sH * d_h, sW * d_w, sC))
        return self.matrices(n)

    def kernel_row(self, cols, i, n):
        """krows: the (Ho·n·Wo, kw·C) columns of kernel row i (padded input rows
        i·dilation_h … i·dilation_h + Ho − 1) in the matrix ``columns`` returned."""
        R, h0 = n * self.Wo, i * self.dilation[0]
        return cols[h0 * R:(h0 + self.Ho) * R]

    def add_pair_product(self, z, n0, n, cols, acc):
        """krows: acc += Σ_q z_q ⊗ (the columns row q of kernel row i) for every kernel row i
        (one GEMM each), samples n0 … n0+n−1 of z (N, Mo, Ho, Wo), rows q ordered (ho, n, wo);
        acc None: a new array, which ``pair_kernel`` reads. K = (i, j, c), the (g = 1) kernel
        layout. Wide columns (``pair_transposed``, see ``pair_transposed_min_columns``) take the
        product as colsᵢᵀ @ zᵀ into acc (kh, kw·C, Mo), others as z @ colsᵢ into acc
        (Mo, kh, kw·C): the orientation OpenBLAS runs faster for each."""
        xp, Mo = self.xp, z.shape[1]
        Q = self.Ho * n * self.Wo
        if self._pT is None:
            self._pT = xp.empty(Mo * self.Ho * self.chunk * self.Wo, dtype=z.dtype)
        pz = self._pT[:Mo * Q].reshape(Mo, self.Ho, n, self.Wo)
        pz[...] = z[n0:n0 + n].transpose(1, 2, 0, 3)
        pz = pz.reshape(Mo, Q)
        fresh = acc is None
        if fresh:
            shape = ((self.kh, self.kw * self.C, Mo) if self.pair_transposed
                     else (Mo, self.kh, self.kw * self.C))
            acc = xp.empty(shape, dtype=z.dtype)
        for i in range(self.kh):
            rows = self.kernel_row(cols, i, n)
            a, b, dst = (rows.T, pz.T, acc[i]) if self.pair_transposed else (pz, rows, acc[:, i])
            if fresh:
                xp.matmul(a, b, out=dst)
            else:
                dst += a @ b
        return acc

    def pair_kernel(self, acc):
        """The (Mo, kh·kw·C) kernel summed by ``add_pair_product`` into acc."""
        if self.pair_transposed:
            acc = acc.transpose(2, 0, 1)
        return acc.reshape(acc.shape[0], -1)

    def matrices(self, n):
        """The column buffer of n samples as (g, n·Ho·Wo, Kg)."""
        Q = n * self.Ho * self.Wo
        if self.rows:
            return self.col[:n].reshape(Q, self.g, self.Kg).transpose(1, 0, 2)
        return self.col[..., :n, :, :].reshape(self.g, self.Kg, Q).transpose(0, 2, 1)

    def run(self, x, wk, y, bias=None, pair=None):
        """y (N, Mo, Ho, Wo) = correlation of x with wk (g, Mo/g, Kg) (+ bias (Mo,)).

        Rows layout: one GEMM per chunk, output rows transposed into the NCHW top. Columns
        layout (few input channels, many output positions): one GEMM per sample, written
        straight into the top (the transpose of its wide output would cost more than the GEMM),
        the bias folded in as a weight column against the buffer's row of ones.

        With ``pair`` (an array shaped like y) also returns Σ_chunks pair @ cols, a
        (g, Mo/g, Kg) product with the same columns: the gradient of the kernel wk when x is a
        top diff and y the bottom diff of the transposed convolution (``ConvColumns.backward``).
        """
        if self.krows:
            return self._run_kernel_rows(x, wk, y, bias, pair)
        xp, g, Mo, HW = self.xp, self.g, self.Mo, self.Ho * self.Wo
        wkT = wk.transpose(0, 2, 1)
        if not self.rows and bias is not None:             # the bias as column Kg
            wk = xp.concatenate([wk, bias.reshape(g, Mo // g, 1)], axis=2)
        K1 = wk.shape[2]
        if K1 > self.Kg:
            col1 = self.col1
            col1[:, self.Kg] = 1
        acc = None
        for n0, n in self.chunks():
            cols = self.columns(x, n0, n)                  # fills the chunk's column buffer
            if pair is not None:
                if self._zT is None:
                    self._zT = xp.empty((Mo, self.chunk, HW), dtype=pair.dtype)
                part = _product(_channels_first(self._zT, pair, n0, n, g), cols, self.is_gpu)
                acc = part if acc is None else xp.add(acc, part, out=acc)
            if not self.rows:
                per_sample = self.col1[:, :K1, :n * HW].reshape(g, K1, n, HW)
                dst = y[n0:n0 + n].reshape(n, g, Mo // g, HW).transpose(1, 0, 2, 3)
                xp.matmul(wk[:, None], per_sample.transpose(0, 2, 1, 3), out=dst)
                continue
            out = self.out[:n * HW]
            if g == 1:
                parallel.matmul(cols[0], wkT[0], out.reshape(n * HW, Mo), self.threads)
            else:
                xp.matmul(cols, wkT, out=out.reshape(n * HW, g, Mo // g).transpose(1, 0, 2))
            self._to_top(out.reshape(n, HW, Mo).transpose(0, 2, 1),
                         y[n0:n0 + n].reshape(n, Mo, HW), bias)
        return acc

    def _to_top(self, rows, dst, bias):
        """dst = rows (+ bias along axis 1): a chunk's GEMM output rows into the NCHW top."""
        if bias is None:
            dst[...] = rows
        else:
            self.xp.add(rows, bias.reshape((1, -1) + (1,) * (dst.ndim - 2)), out=dst)

    def _run_kernel_rows(self, x, wk, y, bias, pair):
        """``run`` with ``krows``: per chunk y rows (Ho·n·Wo, Mo) = Σ_i col_i @ W_iᵀ, W_i the
        (Mo, kw·C) kernel row i of wk (a strided view, no copy), the first GEMM written and
        the others added; transposed into the NCHW top (+ bias)."""
        xp, Mo, Ho, Wo = self.xp, self.Mo, self.Ho, self.Wo
        wr = wk[0].reshape(Mo, self.kh, self.kw * self.C)
        acc = None
        for n0, n in self.chunks():
            cols = self.columns(x, n0, n)
            if pair is not None:
                acc = self.add_pair_product(pair, n0, n, cols, acc)
            Q = Ho * n * Wo
            out, tmp = self.out[:Q], self.tmp[:Q]
            for i in range(self.kh):
                if self.threads > 1 and parallel.blas_threads.current == 1:
                    # split by output rows, each thread writing or adding its own
                    parallel.matmul(self.kernel_row(cols, i, n), wr[:, i].T, out, self.threads,
                                    accumulate=i > 0)
                    continue
                xp.matmul(self.kernel_row(cols, i, n), wr[:, i].T, out=tmp if i else out)
                if i:
                    xp.add(out, tmp, out=out)
            self._to_top(out.reshape(Ho, n, Wo, Mo).transpose(1, 3, 0, 2), y[n0:n0 + n], bias)
        return None if acc is None else self.pair_kernel(acc)[None]


class ConvColumns:
    """A convolution x (N, C, H, W) -> y (N, M, Ho, Wo) with weight (M, C/g, kh, kw): forward,
    weight gradient and bottom (data) gradient, all through ``_Correlation`` chunks."""

    def __init__(self, backend, N, C, H, W, M, Ho, Wo, g, kernel, pad, stride, dilation,
                 threads=1):
        self.backend, self.xp = backend, backend.xp
        self.N, self.C, self.H, self.W, self.M, self.Ho, self.Wo, self.g = \
            N, C, H, W, M, Ho, Wo, g
        self.kernel, self.pad, self.stride, self.dilation = kernel, pad, stride, dilation
        self.ranges = [(0, N)]      # the samples it covers, as (start, count) ranges
        self.fwd = _Correlation(backend, N, C, H, W, M, Ho, Wo, g, kernel, pad, stride,
                                dilation, threads=threads)
        kh, kw = kernel
        # bottom diff as a correlation of dy padded by q = dilation·(k−1) − pad (stride 1)
        q = (dilation[0] * (kh - 1) - pad[0], dilation[1] * (kw - 1) - pad[1])
        # on a GPU the larger GEMM costs less than the per-tap launches: always when possible
        t = _tuning
        self.transposed = (t.transposed_backward and stride == (1, 1) and min(q) >= 0
                           and (backend.is_gpu or (H * W <= t.transposed_max_growth * Ho * Wo
                                                   and C // g >= t.transposed_min_channels)))
        self._q = q
        # other stride-1 bottom diffs of one group: one GEMM into the columns' diff + col2im
        self.col2im = (not self.transposed and _tuning.col2im_backward and stride == (1, 1)
                       and dilation == (1, 1) and g == 1)
        # per-tap products / col2im: the product rows and the padded NHWC bottom diff of a chunk
        itemsize = numpy.dtype(backend.dtype).itemsize
        padded = (H + 2 * pad[0]) * (W + 2 * pad[1]) * C
        # col2im: dy, dcol and the padded bottom diff, samples last; per tap: product + buffer
        per_sample = ((Ho * Wo * (kh * kw * C + M) if self.col2im else Ho * Wo * C) + padded
                      ) * itemsize
        self._tap_chunk = _chunk_size(backend, N, per_sample)
        self._bwd = None        # the transposed correlation, or the per-tap buffers (lazily)
        self._dyT = None        # a chunk of the top diff as (M, n, Ho·Wo)

    def _wk(self, w):
        """Weight (M, C/g, kh, kw) as (g, M/g, kh·kw·C/g), K ordered (i, j, c)."""
        g, M = self.g, self.M
        return self.xp.ascontiguousarray(
            w.reshape(g, M // g, self.C // g, *self.kernel).transpose(0, 1, 3, 4, 2)
        ).reshape(g, M // g, -1)

    def forward(self, x, w, y, bias=None):
        self.fwd.run(x, self._wk(w), y, bias)

    def _dy_chunk(self, dy, n0, n):
        """Top diff of samples n0 … n0+n−1 as (g, M/g, n·Ho·Wo)."""
        if self._dyT is None:
            self._dyT = self.backend.empty((self.M, max(self.fwd.chunk, self._tap_chunk),
                                            self.Ho * self.Wo))
        return _channels_first(self._dyT, dy, n0, n, self.g)

    def weight_grad(self, x, dy):
        """dW (M, C/g, kh, kw) = Σ_n dy_n ⊗ columns(x_n), as a new array.

        A small weight matrix ((M/g)·Kg ≤ ``split_dw_max_weights``) is computed as a batch of
        per-sample GEMMs that are then summed: BLAS runs a tiny output with a very long
        reduction poorly (about 2× slower for LeNet's conv1); ``_product`` picks their
        orientation (LeNet's conv1 pays 0.1 ms for it, ``bench/NOTES.md``).
        """
        xp, g, M = self.xp, self.g, self.M
        f = self.fwd
        kh, kw = self.kernel
        if f.krows:                    # one GEMM per kernel row, dy rows ordered (ho, n, wo)
            acc = None
            for n0, n in f.chunks():
                cols = f.columns(x, n0, n)
                acc = f.add_pair_product(dy, n0, n, cols, acc)
            return f.pair_kernel(acc).reshape(M, kh, kw, self.C).transpose(0, 3, 1, 2)
        split = (M // g) * f.Kg <= _tuning.split_dw_max_weights
        HW = self.Ho * self.Wo
        acc = None
        for n0, n in f.chunks():
            cols = f.columns(x, n0, n)                     # (g, n·HW, Kg)
            if split:      # (g, n, M/g, HW) @ (g, n, HW, Kg), summed over the samples
                dy4 = dy[n0:n0 + n].reshape(n, g, M // g, HW).transpose(1, 0, 2, 3)
                part = _product(dy4, cols.reshape(g, n, HW, f.Kg),
                                self.backend.is_gpu).sum(axis=1)
            else:
                part = xp.matmul(self._dy_chunk(dy, n0, n), cols)
            acc = part if acc is None else xp.add(acc, part, out=acc)
        return acc.reshape(M, kh, kw, self.C // g).transpose(0, 3, 1, 2)

    def backward(self, x, dy, w, dx=None):
        """The weight gradient dW (M, C/g, kh, kw) (returned, a new array) and, when dx is
        given, the bottom diff written into dx. When the bottom diff is a transposed
        convolution, dW comes from its columns of dy too (``_transposed``): no second im2col
        of x."""
        if dx is not None and self.transposed:
            return self._transposed(dy, w, dx, x)
        if dx is not None:
            self.backward_data(dy, w, dx)
        return self.weight_grad(x, dy)

    def backward_data(self, dy, w, dx):
        """dx (N, C, H, W) = the gradient of the convolution's input for top diff dy."""
        if self.transposed:
            self._transposed(dy, w, dx)
        elif self.col2im:
            self._col2im(dy, w, dx)
        else:
            self._tap_products(dy, w, dx)

    def _transposed(self, dy, w, dx, x=None):
        """dx = correlation of dy padded by q = dilation·(k−1) − pad with the flipped kernel,
        channels swapped. With x, also returns dW from the same columns of dy: with dycol the
        (n·H·W, (i', j', m)) columns and x as (c, n·H·W), Σ x @ dycol is dW with its taps
        flipped, dW[m, c, kh−1−i', kw−1−j'] (each tap pairs the x and dy cells that the
        forward pairs)."""
        g, M, C = self.g, self.M, self.C
        kh, kw = self.kernel
        if self._bwd is None:
            self._bwd = _Correlation(self.backend, self.N, M, self.Ho, self.Wo, C, self.H,
                                     self.W, g, self.kernel, self._q, (1, 1), self.dilation,
                                     role="transposed")
        # flipped kernel, input and output channels swapped: (g, C/g, kh·kw·M/g)
        w2 = self.xp.ascontiguousarray(
            w.reshape(g, M // g, C // g, kh, kw)[:, :, :, ::-1, ::-1].transpose(0, 2, 3, 4, 1)
        ).reshape(g, C // g, -1)
        dw2 = self._bwd.run(dy, w2, dx, pair=x)        # (g, C/g, kh·kw·M/g) or None
        if dw2 is None:
            return None
        return dw2.reshape(g, C // g, kh, kw, M // g)[:, :, ::-1, ::-1].transpose(
            0, 4, 1, 2, 3).reshape(M, C // g, kh, kw)

    def _col2im(self, dy, w, dx):
        """dx via the columns' diff, stride 1, dilation 1, one group, with the chunk's samples
        as the last (fastest) axis: dcol (K, Ho·Wo·n) = Wᵀ @ dy in one GEMM (K = kh·kw·C
        rows ordered (i, j, c); dy as (M, Ho·Wo·n)), then one add per kernel tap,
        dx_pad[c, ho + i, wo + j, :] += dcol[(i, j, c), ho, wo, :], over runs of Wo·n values
        into a zero-bordered (C, Hp, Wp, n) buffer, transposed into dx. Runs this long keep
        the adds few and large (the NHWC columns' runs were kw·C values: many small NumPy
        calls, which scale badly across threads)."""
        xp, M, C = self.xp, self.M, self.C
        kh, kw = self.kernel
        (ph, pw), Ho, Wo, H, W = self.pad, self.Ho, self.Wo, self.H, self.W
        Hp, Wp, K, HW = H + 2 * ph, W + 2 * pw, kh * kw * C, Ho * Wo
        if self._bwd is None:           # flat buffers, each chunk takes a contiguous prefix
            chunk = self._tap_chunk
            self._bwd = (self.backend.empty(M * HW * chunk), self.backend.empty(K * HW * chunk),
                         self.backend.empty(C * Hp * Wp * chunk))
        dy_all, dcol_all, dbuf_all = self._bwd
        wT = xp.ascontiguousarray(w.transpose(2, 3, 1, 0)).reshape(K, M)   # (i, j, c) x m
        for n0, n in sample_chunks(self.N, self._tap_chunk):
            Q = HW * n
            dyT = dy_all[:M * Q].reshape(M, Ho, Wo, n)
            dyT[...] = dy[n0:n0 + n].transpose(1, 2, 3, 0)
            dcol = dcol_all[:K * Q].reshape(K, Q)
            xp.matmul(wT, dyT.reshape(M, Q), out=dcol)
            dbuf = dbuf_all[:C * Hp * Wp * n].reshape(C, Hp, Wp, n)
            dbuf.fill(0)
            taps = dcol.reshape(kh, kw, C, Ho, Wo, n)
            for i in range(kh):
                for j in range(kw):
                    dst = dbuf[:, i:i + Ho, j:j + Wo]
                    xp.add(dst, taps[i, j], out=dst)
            dx[n0:n0 + n] = dbuf[:, ph:ph + H, pw:pw + W].transpose(3, 0, 1, 2)

    def _tap_products(self, dy, w, dx):
        """dx via one GEMM per kernel tap: dx_pad[n, ho·s + i·d, wo·s + j·d, c] +=
        Σ_m dy[n, m, ho, wo] · W[m, c, i, j], the product (n·Ho·Wo, C/g) added as a
        shifted NHWC window (whole rows of Wo·C values when the stride is 1)."""
        xp, g, M, C = self.xp, self.g, self.M, self.C
        kh, kw = self.kernel
        (ph, pw), (sh, sw), (dh, dw) = self.pad, self.stride, self.dilation
        Ho, Wo, H, W = self.Ho, self.Wo, self.H, self.W
        if self._bwd is None:
            chunk = self._tap_chunk
            self._bwd = (self.backend.zeros((chunk, H + 2 * ph, W + 2 * pw, C)),
                         self.backend.empty((chunk * Ho * Wo, C)))
        dbuf_all, prod_all = self._bwd
        # per tap (i, j): W[:, :, i, j] as a contiguous (g, M/g, C/g) matrix
        wt = xp.ascontiguousarray(w.reshape(g, M // g, C // g, kh, kw).transpose(3, 4, 0, 1, 2))
        for n0, n in sample_chunks(self.N, self._tap_chunk):
            dyc = self._dy_chunk(dy, n0, n).transpose(0, 2, 1)   # (g, n·Ho·Wo, M/g)
            dbuf, prod = dbuf_all[:n], prod_all[:n * Ho * Wo]
            dbuf.fill(0)
            for i in range(kh):
                for j in range(kw):
                    xp.matmul(dyc, wt[i, j],
                              out=prod.reshape(-1, g, C // g).transpose(1, 0, 2))
                    dbuf[:, i * dh:i * dh + sh * (Ho - 1) + 1:sh,
                         j * dw:j * dw + sw * (Wo - 1) + 1:sw] += prod.reshape(n, Ho, Wo, C)
            dx[n0:n0 + n] = dbuf[:, ph:ph + H, pw:pw + W].transpose(0, 3, 1, 2)


class SplitColumns:
    """``ConvColumns``' API over the batch split into contiguous sample ranges, one
    ``ConvColumns`` (own buffers) per CPU thread (``parallel.py``). Each range runs its own
    chunks; the weight gradient is the ranges' partial sums added in range order."""

    def __init__(self, make, N: int, threads: int):
        self.ranges = parallel.split(N, threads)
        self.parts = [make(n) for _, n in self.ranges]

    def _each(self, fn):
        """fn(part, sample slice) on every range at once; the results in range order."""
        return parallel.run(lambda part, r: fn(part, slice(r[0], r[0] + r[1])),
                            list(zip(self.parts, self.ranges)))

    def forward(self, x, w, y, bias=None):
        self._each(lambda c, s: c.forward(x[s], w, y[s], bias))

    def weight_grad(self, x, dy):
        return parallel.ordered_sum(self._each(lambda c, s: c.weight_grad(x[s], dy[s])))

    def backward(self, x, dy, w, dx=None):
        return parallel.ordered_sum(self._each(
            lambda c, s: c.backward(x[s], dy[s], w, None if dx is None else dx[s])))

    def backward_data(self, dy, w, dx):
        self._each(lambda c, s: c.backward_data(dy[s], w, dx[s]))
