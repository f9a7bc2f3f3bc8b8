"""Convolution layer (Caffe's ``ConvolutionLayer``): chunked im2col + GEMM on NHWC columns.

Shapes (2-D, NCHW): bottom x (N, C, H, W), weight (M, C/g, kh, kw), bias (M,), top y (N, M, Ho, Wo)
with g = ``group``, M = ``num_output`` and, per spatial dim (Caffe's ``conv_layer.cpp``),

    Ho = (H + 2·pad_h − (dilation_h·(kh − 1) + 1)) // stride_h + 1.

    y[n, m, ho, wo] = b[m] + Σ_{c in group(m), i, j} W[m, c, i, j] ·
                      x_pad[n, c, ho·stride_h + i·dilation_h, wo·stride_w + j·dilation_w]

where x_pad is x with ``pad`` zeros on each side. Several bottoms give as many tops, all computed
with the same parameters (Caffe's weight sharing across bottoms); their gradients add up.

Implementation (``ConvColumns``): the batch is processed in chunks of samples small enough
that a chunk's columns stay in the CPU cache (``COL_CHUNK_BYTES``; the whole batch on a GPU).
Per chunk the bottom is copied into a zero-bordered NHWC buffer, a strided view of it is copied
into the columns ``col (n, Ho, Wo, g, kh, kw, C/g)`` -- one row of K = C·kh·kw values per output
position, whose copies run over whole kw·C/g stretches -- and one GEMM per group gives the
outputs as rows, ``y (n·Ho·Wo, M/g) = col @ Wᵀ`` (the orientation in which BLAS runs fastest
for the few-filters, many-positions products of a convolution), transposed into the NCHW top.
On the CPU a one-group convolution of stride_h 1 builds columns along W only ("kernel rows",
``KERNEL_ROWS``): ``col (Hp, n, Wo, kw, C)``, kw·C values per output position and padded input
row, so kernel row i reads the contiguous rows i·dilation_h … i·dilation_h + Ho − 1 as one
(Ho·n·Wo, kw·C) matrix and ``y = Σ_i col_i @ W_iᵀ`` is kh GEMMs: (Hp/Ho)·kw instead of kh·kw
copies of each input value, and each GEMM's operand stays in cache (CIFAR-10 quick conv2
forward 27 -> 22 ms). Inputs with few channels (kw·C/g < ``ROW_LAYOUT_MIN_RUN``, e.g. a first
layer on 1–3 image channels) keep an NCHW buffer and (K, Q) columns instead, with one GEMM per
sample written straight into the top. Backward, per chunk: the columns are rebuilt from the
bottom as it is now (as Caffe does) and ``dW += dy @ col`` (one GEMM per kernel row with kernel
rows, a batch of per-sample GEMMs for small weights). The
bottom diff of a stride-1 convolution with "same"-like padding (always on a GPU) is the
convolution of the zero-padded top diff with the flipped, transposed kernel -- the same im2col +
GEMM, no scatter -- and its columns of dy give dW as well (``x @ dycol``, the taps flipped),
so such a layer builds no columns of x in the backward; other stride-1, dilation-1,
one-group ones take the columns' diff with the samples last, ``dcol (K, Ho·Wo·n) = Wᵀ @ dy``,
in one GEMM and a col2im of one add per kernel tap over runs of Wo·n values; any other
takes one GEMM per kernel tap, ``dy @ W[:, :, i, j]``, added to the bottom diff as a shifted
window. Deconvolution runs the same machinery with the roles of forward
and bottom diff swapped. Measurements behind each choice: ``bench/NOTES.md``.
"""

from __future__ import annotations

import numpy

from .. import parallel
from .base import Layer, add_param_diff, sample_chunks, samples_per_chunk
from .registry import register

#: target size of one chunk's column buffer on the CPU (at least one sample per chunk)
COL_CHUNK_BYTES = 2 << 20
#: compute stride-1 bottom diffs as a transposed convolution (else per-tap products) when
#: its GEMM is at most TRANSPOSED_MAX_GROWTH times the dcol GEMM (H·W vs Ho·Wo rows: "same"
#: padding) and produces at least TRANSPOSED_MIN_CHANNELS columns (C/g); measured on CIFAR-10
#: quick's conv2/conv3 (−50 %/−30 % backward) against LeNet's unpadded conv2 (+100 %)
TRANSPOSED_BACKWARD = True
TRANSPOSED_MAX_GROWTH = 1.25
TRANSPOSED_MIN_CHANNELS = 8
#: other stride-1, dilation-1, one-group bottom diffs by col2im (else per-tap products):
#: LeNet conv2 8.1 -> 7.1 ms (NHWC columns); samples-last columns: its bottom diff 3.4 -> 2.8
#: ms at 1 thread, 4.6 -> 3.2 at 2 (``bench/NOTES.md``, session 14)
COL2IM_BACKWARD = True
#: largest (M/g)·(kh·kw·C/g) weight matrix whose gradient is a batch of per-sample GEMMs
SPLIT_DW_MAX_WEIGHTS = 4096
#: shortest im2col copy run (kw·C/g values) for which the NHWC "rows" layout is used
ROW_LAYOUT_MIN_RUN = 16
#: CPU, one group, stride_h 1, rows layout: columns along W only and one GEMM per kernel row
#: (``_Correlation``); their chunks take half of COL_CHUNK_BYTES (1 MiB measured best: CIFAR
#: conv2 forward 21.5 ms vs 22.6 at 2 MiB, 23.8 at 4)
KERNEL_ROWS = True
#: kernel rows: weight products over wide columns -- kw·C values ≥ PAIR_TRANSPOSED_MIN_COLUMNS
#: or ≥ PAIR_TRANSPOSED_MIN_ASPECT × the Mo channels of z -- are computed as colsᵀ @ zᵀ, others
#: as z @ cols: OpenBLAS runs each faster for those shapes (CIFAR-10 quick's conv2/conv3
#: transposed backwards, 160/320 columns against 32 channels: −4 %/−19 %; LeNet conv2's
#: weight gradient, 100 against 50: +17 %; ``bench/NOTES.md``, session 15)
PAIR_TRANSPOSED_MIN_COLUMNS = 256
PAIR_TRANSPOSED_MIN_ASPECT = 4


def _pair(layer: Layer, values, h, w, name: str, default) -> tuple[int, int]:
    """Caffe's (h, w) from a repeated field (1 value for both dims, or h then w) or an h/w pair."""
    values = [int(v) for v in values]
    if h is not None or w is not None:
        if values:
            raise layer.spec_error(f"either {name} or its _h/_w pair should be specified; "
                                   "not both", field=name)
        if h is None or w is None:
            raise layer.spec_error(f"the _h and _w forms of {name} must be given together",
                                   field=name)
        return int(h), int(w)
    if not values:
        if default is None:
            raise layer.spec_error(f"{name} (or its _h and _w pair) is required", field=name)
        return default, default
    if len(values) in (1, 2):
        return values[0], values[-1]
    raise layer.spec_error(f"{name} takes 1 or 2 values for a 2-D convolution, "
                           f"got {len(values)}", field=name)


def _chunk_size(backend, N: int, per_sample_bytes: int, share: int = 1) -> int:
    """Samples per chunk: the whole batch on a GPU, else as many as fit COL_CHUNK_BYTES
    (divided by ``share``)."""
    return N if backend.is_gpu else samples_per_chunk(N, per_sample_bytes,
                                                      COL_CHUNK_BYTES // share)


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
    (i, j, c); output (N, Mo, Ho, Wo). Owns the chunk's padded buffer and columns, in one of
    two layouts chosen by the length of the runs an im2col copy moves:

    * rows (kw·C/g ≥ ``ROW_LAYOUT_MIN_RUN``): NHWC buffer, columns (n, Ho, Wo, g, kh, kw, C/g),
      each copy run kw·C/g long;
    * columns (few channels, e.g. a first layer on 1–3 image channels): NCHW buffer, columns
      (g, kh, kw, C/g, n, Ho, Wo), each copy run Wo long.

    Either way the GEMMs see the columns as (g, n·Ho·Wo, Kg) (a transposed view in the second).
    On the CPU, with one group, stride_h 1 and the rows' run length, ``krows`` ("kernel rows")
    replaces both: NHWC buffer, columns along W only, (Hp, n, Wo, kw, C), taken per kernel row
    i as the (Ho·n·Wo, kw·C) matrix of padded rows i·dilation_h … + Ho − 1 (``kernel_row``);
    output and pair rows are then ordered (ho, n, wo).
    """

    def __init__(self, backend, N, C, H, W, Mo, Ho, Wo, g, kernel, pad, stride, dilation):
        self.xp, self.N, self.C, self.H, self.W = backend.xp, N, C, H, W
        self.Mo, self.Ho, self.Wo, self.g = Mo, Ho, Wo, g
        (self.kh, self.kw), (self.ph, self.pw) = kernel, pad
        self.stride, self.dilation = stride, dilation
        self.Cg, self.Kg = C // g, self.kh * self.kw * (C // g)
        itemsize = numpy.dtype(backend.dtype).itemsize
        self.rows = self.kw * self.Cg >= ROW_LAYOUT_MIN_RUN
        self.krows = (KERNEL_ROWS and self.rows and not backend.is_gpu and g == 1
                      and stride[0] == 1)
        Hp, Wp = H + 2 * self.ph, W + 2 * self.pw
        self.Hp = Hp
        self.pair_transposed = self.kw * C >= min(PAIR_TRANSPOSED_MIN_COLUMNS,
                                                  PAIR_TRANSPOSED_MIN_ASPECT * Mo)
        # GEMM output rows of a chunk, transposed into the top (rows layouts only)
        self.out = self.tmp = None
        if self.krows:
            self.chunk = n = _chunk_size(backend, N, Hp * Wo * self.kw * C * itemsize, share=2)
            # flat column / output buffers: a chunk of n samples takes a contiguous prefix
            self.buf = backend.zeros((n, Hp, Wp, C))
            self.col = backend.empty(Hp * n * Wo * self.kw * C)
            self.out = backend.empty((Ho * n * Wo, Mo))
            self.tmp = backend.empty((Ho * n * Wo, Mo))
        else:
            self.chunk = n = _chunk_size(backend, N, Ho * Wo * C * self.kh * self.kw * itemsize)
            if self.rows:
                self.buf = backend.zeros((n, Hp, Wp, C))
                self.col = backend.empty((n, Ho, Wo, g, self.kh, self.kw, self.Cg))
                self.out = backend.empty((n * Ho * Wo, Mo))
            else:
                self.buf = backend.zeros((n, C, Hp, Wp))
                # each group's Kg column rows are followed by a row of ones, so that a bias is
                # one more weight column of the GEMM instead of a pass over the top
                self.col1 = backend.empty((g, self.Kg + 1, n * Ho * Wo))
                self.col1[:, self.Kg] = 1
                self.col = self.col1[:, :self.Kg].reshape(g, self.kh, self.kw, self.Cg, n, Ho,
                                                          Wo)
        self._pT = None         # krows: a chunk of the pair array as (Mo, Ho, n, Wo) (first use)
        self._zT = None         # a chunk of ``run``'s pair array, channels first (first use)
        self.is_gpu = backend.is_gpu

    def chunks(self):
        return sample_chunks(self.N, self.chunk)

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
        layout. Wide columns (``pair_transposed``, see ``PAIR_TRANSPOSED_MIN_COLUMNS``) take the
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
                xp.matmul(self.kernel_row(cols, i, n), wr[:, i].T, out=tmp if i else out)
                if i:
                    xp.add(out, tmp, out=out)
            self._to_top(out.reshape(Ho, n, Wo, Mo).transpose(1, 3, 0, 2), y[n0:n0 + n], bias)
        return None if acc is None else self.pair_kernel(acc)[None]


class ConvColumns:
    """A convolution x (N, C, H, W) -> y (N, M, Ho, Wo) with weight (M, C/g, kh, kw): forward,
    weight gradient and bottom (data) gradient, all through ``_Correlation`` chunks."""

    def __init__(self, backend, N, C, H, W, M, Ho, Wo, g, kernel, pad, stride, dilation):
        self.backend, self.xp = backend, backend.xp
        self.N, self.C, self.H, self.W, self.M, self.Ho, self.Wo, self.g = \
            N, C, H, W, M, Ho, Wo, g
        self.kernel, self.pad, self.stride, self.dilation = kernel, pad, stride, dilation
        self.ranges = [(0, N)]      # the samples it covers, as (start, count) ranges
        self.fwd = _Correlation(backend, N, C, H, W, M, Ho, Wo, g, kernel, pad, stride,
                                dilation)
        kh, kw = kernel
        # bottom diff as a correlation of dy padded by q = dilation·(k−1) − pad (stride 1)
        q = (dilation[0] * (kh - 1) - pad[0], dilation[1] * (kw - 1) - pad[1])
        # on a GPU the larger GEMM costs less than the per-tap launches: always when possible
        self.transposed = (TRANSPOSED_BACKWARD and stride == (1, 1) and min(q) >= 0
                           and (backend.is_gpu or (H * W <= TRANSPOSED_MAX_GROWTH * Ho * Wo
                                                   and C // g >= TRANSPOSED_MIN_CHANNELS)))
        self._q = q
        # other stride-1 bottom diffs of one group: one GEMM into the columns' diff + col2im
        self.col2im = (not self.transposed and COL2IM_BACKWARD and stride == (1, 1)
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

        A small weight matrix ((M/g)·Kg ≤ ``SPLIT_DW_MAX_WEIGHTS``) is computed as a batch of
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
        split = (M // g) * f.Kg <= SPLIT_DW_MAX_WEIGHTS
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
                                     self.W, g, self.kernel, self._q, (1, 1), self.dilation)
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


@register("Convolution")
class Convolution(Layer):
    """2-D convolution (cross-correlation) with pad, stride, dilation and groups, as Caffe.

    Blobs: 0 = weight (num_output, C/group, kh, kw) from ``weight_filler``; 1 = bias
    (num_output,) from ``bias_filler`` when ``bias_term``. N bottoms of one shape -> N tops.
    """

    param_block = "convolution_param"
    min_bottoms = 1
    splits_batch = True
    writes_param_diffs = True   # add_param_diff: each bottom's gradient written, then added
    _ones = None        # ones vector of the CPU bias-gradient GEMV (made on first backward)

    def check_arity(self, n_bottoms, n_tops):
        super().check_arity(n_bottoms, n_tops)
        if n_tops != n_bottoms:
            raise self.spec_error(f"needs as many tops as bottoms, got {n_bottoms} bottom(s) "
                                  f"and {n_tops} top(s)", field="top")

    # -- setup ----------------------------------------------------------------------------
    def _geometry(self, shape):
        p = self.p
        if len(shape) != 4 or p.axis not in (1, -3):
            raise self.spec_error(f"only 2-D convolution of NCHW blobs (axis 1) is supported; "
                                  f"bottom shape {tuple(shape)}, axis {p.axis}", field="axis")
        self.kh, self.kw = _pair(self, p.kernel_size, p.kernel_h, p.kernel_w, "kernel_size", None)
        self.pad_h, self.pad_w = _pair(self, p.pad, p.pad_h, p.pad_w, "pad", 0)
        self.stride_h, self.stride_w = _pair(self, p.stride, p.stride_h, p.stride_w, "stride", 1)
        self.dil_h, self.dil_w = _pair(self, p.dilation, None, None, "dilation", 1)
        if min(self.kh, self.kw) <= 0:
            raise self.spec_error("kernel dimensions must be positive", field="kernel_size")
        if min(self.stride_h, self.stride_w) <= 0:
            raise self.spec_error("stride must be positive", field="stride")
        if min(self.dil_h, self.dil_w) <= 0:
            raise self.spec_error("dilation must be positive", field="dilation")
        if min(self.pad_h, self.pad_w) < 0:
            raise self.spec_error("pad must be non-negative", field="pad")

    def _check_bottoms(self, bottom_shapes):
        """Common setup of Convolution-like layers: one shape for all bottoms, the geometry,
        num_output and group. Returns (shape, group, num_output)."""
        shape = tuple(bottom_shapes[0])
        if any(tuple(s) != shape for s in bottom_shapes):
            raise self.error(f"all bottoms must have the same shape, got {bottom_shapes}")
        self._geometry(shape)
        g, M = self.p.group, self.p.num_output
        if M is None:
            raise self.spec_error("convolution_param.num_output is required",
                                  field="convolution_param.num_output")
        if shape[1] % g or M % g:
            raise self.spec_error(f"channels ({shape[1]}) and num_output ({M}) must be divisible by "
                                  f"group ({g})", field="group")
        return shape, g, M

    def _output_size(self, H: int, W: int) -> tuple[int, int]:
        """(Ho, Wo) = ((H + 2·pad − (dilation·(k−1)+1)) // stride + 1, same for W)."""
        ext_h = self.dil_h * (self.kh - 1) + 1
        ext_w = self.dil_w * (self.kw - 1) + 1
        Hp, Wp = H + 2 * self.pad_h, W + 2 * self.pad_w
        if Hp < ext_h or Wp < ext_w:
            raise self.error(f"kernel extent {ext_h}x{ext_w} exceeds the padded input "
                             f"{Hp}x{Wp}")
        return (Hp - ext_h) // self.stride_h + 1, (Wp - ext_w) // self.stride_w + 1

    def _columns(self, N, C, H, W, M, Ho, Wo, g) -> ConvColumns | SplitColumns:
        """The column machinery of a convolution (N, C, H, W) -> (N, M, Ho, Wo): split over
        the CPU threads when it has at least ``parallel.SPLIT_MIN_MACS`` multiply-adds."""
        def make(n):
            return ConvColumns(self.backend, n, C, H, W, M, Ho, Wo, g, (self.kh, self.kw),
                               (self.pad_h, self.pad_w), (self.stride_h, self.stride_w),
                               (self.dil_h, self.dil_w))
        macs = N * Ho * Wo * M * (C // g) * self.kh * self.kw
        if self.threads > 1 and N > 1 and macs >= parallel.SPLIT_MIN_MACS:
            return SplitColumns(make, N, self.threads)
        return make(N)

    def setup(self, bottom_shapes):
        shape, g, M = self._check_bottoms(bottom_shapes)
        p = self.p
        N, C, H, W = shape
        Ho, Wo = self._output_size(H, W)
        self.add_param((M, C // g, self.kh, self.kw), p.weight_filler, "weight")
        if p.bias_term:
            self.add_param((M,), p.bias_filler, "bias")
        self.conv = self._columns(N, C, H, W, M, Ho, Wo, g)
        return [(N, M, Ho, Wo)] * len(bottom_shapes)

    # -- forward / backward ---------------------------------------------------------------
    def forward(self, bottom, top):
        bias = self.blobs[1].data if self.p.bias_term else None
        for b, t in zip(bottom, top):
            self.conv.forward(b.data, self.blobs[0].data, t.data, bias)

    def _add_bias_grad(self, dy):
        """db += Σ_{n, h, w} dy[n, m, h, w]: one GEMV of the (N·M, H·W) top diff with a ones
        vector (Caffe's bias gradient is a GEMV too), then a sum over the N samples -- 2-3×
        faster than NumPy's reduction over axes (0, 2, 3) on the CPU. On a GPU CuPy's one
        reduction kernel is faster (H200: LeNet iteration 2.35 vs 2.42 ms)."""
        if self.backend.is_gpu:
            add_param_diff(self.blobs[1], dy.sum(axis=(0, 2, 3)))
            return
        M = dy.shape[1]
        if self._ones is None:                       # the top's H·W is fixed at setup
            self._ones = self.xp.ones(dy[0, 0].size, dtype=dy.dtype)

        def part(n0, n):
            return (dy[n0:n0 + n].reshape(n * M, -1) @ self._ones).reshape(n, M).sum(axis=0)
        add_param_diff(self.blobs[1], parallel.ordered_sum(parallel.run(part, self.conv.ranges)))

    def backward(self, top, propagate_down, bottom):
        wblob = self.blobs[0]
        for k, (t, b) in enumerate(zip(top, bottom)):
            dy = t.diff
            if self.p.bias_term:
                self._add_bias_grad(dy)
            dx = b.diff if propagate_down[k] else None
            add_param_diff(wblob, self.conv.backward(b.data, dy, wblob.data, dx))


# -- Deconvolution / Im2col (the Convolution machinery, roles swapped) ----------------------
@register("Deconvolution")
class Deconvolution(Convolution):
    """Transposed convolution (Caffe's ``DeconvolutionLayer``): the gradient of Convolution.

    Bottom x (N, C, H, W), weight W (C, M/g, kh, kw) (Caffe's deconvolution layout: bottom
    channels first), bias (M,), top y (N, M, Ho, Wo), M = ``num_output``, per spatial dim

        Ho = stride_h·(H − 1) + dilation_h·(kh − 1) + 1 − 2·pad_h.

        y_pad[n, m, h·stride_h + i·dilation_h, w·stride_w + j·dilation_w] +=
            Σ_{c in group(m)} W[c, m, i, j] · x[n, c, h, w],     y = y_pad cropped + b[m]

    i.e. exactly the backward-data pass of the convolution from (N, M, Ho, Wo) to
    (N, C, H, W) with weight W. Backward: ∂x = that convolution of ∂y; ∂W is its weight
    gradient with ∂y as input and x as output gradient; ∂b += Σ ∂y. Same fields as Convolution
    (``convolution_param``); the bilinear filler gives the usual upsampling kernel. N bottoms
    -> N tops, shared W.
    """

    def setup(self, bottom_shapes):
        shape, g, M = self._check_bottoms(bottom_shapes)
        p = self.p
        N, C, H, W = shape
        Ho = self.stride_h * (H - 1) + self.dil_h * (self.kh - 1) + 1 - 2 * self.pad_h
        Wo = self.stride_w * (W - 1) + self.dil_w * (self.kw - 1) + 1 - 2 * self.pad_w
        if Ho <= 0 or Wo <= 0:
            raise self.error(f"output size {Ho}x{Wo} is not positive (padding too large)")
        self.add_param((C, M // g, self.kh, self.kw), p.weight_filler, "weight")
        if p.bias_term:
            self.add_param((M,), p.bias_filler, "bias")
        # the convolution whose gradient this is: input = our top, output = our bottom
        self.conv = self._columns(N, M, Ho, Wo, C, H, W, g)
        return [(N, M, Ho, Wo)] * len(bottom_shapes)

    def forward(self, bottom, top):
        w = self.blobs[0].data
        for b, t in zip(bottom, top):
            self.conv.backward_data(b.data, w, t.data)
            if self.p.bias_term:
                t.data += self.blobs[1].data.reshape(1, -1, 1, 1)

    def backward(self, top, propagate_down, bottom):
        wblob = self.blobs[0]
        for k, (t, b) in enumerate(zip(top, bottom)):
            dy = t.diff
            if self.p.bias_term:
                self._add_bias_grad(dy)
            add_param_diff(wblob, self.conv.weight_grad(dy, b.data))
            if propagate_down[k]:
                self.conv.forward(dy, wblob.data, b.diff)


@register("Im2col")
class Im2col(Convolution):
    """Caffe's ``Im2colLayer``: the convolution columns as a blob.

    Bottom x (N, C, H, W) -> top (N, C·kh·kw, Ho, Wo), Ho/Wo as for Convolution, with
    top[n, (c·kh + i)·kw + j, ho, wo] = x_pad[n, c, ho·stride_h + i·dilation_h,
    wo·stride_w + j·dilation_w] (zero outside the image). Backward: col2im (each top diff added
    back to the input cell it was read from), one strided add per kernel tap. Reads
    kernel/pad/stride/dilation of ``convolution_param``; num_output, group, bias and fillers
    are ignored. No parameters.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        self._geometry(shape)
        N, C, H, W = shape
        self.Ho, self.Wo = self._output_size(H, W)
        self.H, self.W = H, W
        self._xbuf = self.backend.zeros((N, C, H + 2 * self.pad_h, W + 2 * self.pad_w))
        return [(N, C * self.kh * self.kw, self.Ho, self.Wo)]

    def _interior(self, buf):
        return buf[:, :, self.pad_h:self.pad_h + self.H, self.pad_w:self.pad_w + self.W]

    def _tap(self, buf, i, j):
        """Cells of the padded (N, C, Hp, Wp) buffer that kernel tap (i, j) reads."""
        h0, w0 = i * self.dil_h, j * self.dil_w
        return buf[:, :, h0:h0 + self.stride_h * (self.Ho - 1) + 1:self.stride_h,
                   w0:w0 + self.stride_w * (self.Wo - 1) + 1:self.stride_w]

    def _top6(self, a):
        """A top array (N, C·kh·kw, Ho, Wo) as (N, C, kh, kw, Ho, Wo)."""
        N, C = self._xbuf.shape[:2]
        return a.reshape(N, C, self.kh, self.kw, self.Ho, self.Wo)

    def forward(self, bottom, top):
        self._interior(self._xbuf)[...] = bottom[0].data
        out = self._top6(top[0].data)
        for i in range(self.kh):
            for j in range(self.kw):
                out[:, :, i, j] = self._tap(self._xbuf, i, j)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dbuf = self.xp.zeros_like(self._xbuf)
        dtop = self._top6(top[0].diff)
        for i in range(self.kh):
            for j in range(self.kw):
                self._tap(dbuf, i, j)[...] += dtop[:, :, i, j]
        bottom[0].diff[...] = self._interior(dbuf)
