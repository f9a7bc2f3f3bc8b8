"""Convolutions computed without im2col columns, on the CPU: the 1×1 convolutions and the
depthwise ones (group = channels = num_output) of ResNet, SqueezeNet and MobileNet.
``ConvColumns``' API (forward, weight_grad, backward, backward_data, ranges), so that
``SplitColumns`` splits them over threads as it splits the column machinery;
``Convolution._columns`` picks them (``ConvTuning.pointwise_gemm``, ``depthwise_taps``).

* ``PointwiseConv`` (1×1 kernel, stride 1, pad 0, group g): the NCHW arrays already are the
  GEMM operands, y[n] (g, M/g, H·W) = W (g, M/g, C/g) @ x[n] (g, C/g, H·W), no copy;
  dx[n] = Wᵀ @ dy[n]; dW = Σ_n dy[n] @ x[n]ᵀ as one GEMM over the batch's positions
  (channels-first copies of dy and x when N > 1: one K = N·H·W product).
* ``DepthwiseConv`` (C = g = M, any kernel, pad, stride, dilation): per kernel tap (i, j)
  one multiply-add over the whole chunk, in NHWC (the channel's weight broadcast along the
  contiguous last axis; forward so only for outputs of at most
  ``ConvTuning.depthwise_taps_max_forward_positions`` positions; larger ones of a single
  sample by taps over cache-sized blocks of NCHW planes (``_PlaneTaps``), others by columns),

      y[n, ho, wo, c] = Σ_{i,j} W[c, i, j] · x_pad[n, ho·sh + i·dh, wo·sw + j·dw, c],
      dx_pad[n, ho·sh + i·dh, wo·sw + j·dw, c] += W[c, i, j] · dy[n, ho, wo, c],
      dW[c, i, j] = Σ_{n,ho,wo} dy[n, ho, wo, c] · x_pad[n, ho·sh + i·dh, wo·sw + j·dw, c]

  (the last as a ones-vector GEMV over the positions): kh·kw passes instead of C tiny GEMMs.
* ``CompiledDepthwiseConv`` (C = g, M = mult·C): the same sums by the compiled kernels of
  ``conv_compiled`` (numba, the optional ``fast`` extra; ``ConvTuning.compiled``),
  one pass per output row with the kernel's taps in registers, the bias -- or a folded
  BatchNorm's scale and shift, and a ReLU (``forward_fused``) -- applied to the row while it
  is in cache; the backward by the compiled kernel for channel multipliers, by
  ``DepthwiseConv``'s taps otherwise. Chosen only when numba imports; the NumPy classes above
  are the reference.
"""

from __future__ import annotations

import numpy

from .. import parallel
from .base import sample_chunks, thread_scratch
from .conv_columns import ConvColumns, _channels_first, _chunk_size, _product, tuning

_kernels: list = []         # [conv_compiled or None] once looked up (``compiled_kernels``)


def compiled_kernels():
    """The module of compiled depthwise kernels (``conv_compiled``) when numba imports, else
    None (looked up once per process)."""
    if not _kernels:
        try:
            from . import conv_compiled  # noqa: PLC0415 - needs numba (the optional `fast` extra)
        except ImportError:
            conv_compiled = None
        _kernels.append(conv_compiled)
    return _kernels[0]


class PointwiseConv:
    """x (N, C, H, W) -> y (N, M, H, W) with weight (M, C/g, 1, 1): plain GEMMs (module doc)."""

    def __init__(self, backend, N, C, H, W, M, g, threads=1):
        self.backend, self.xp = backend, backend.xp
        self.N, self.C, self.M, self.g, self.HW = N, C, M, g, H * W
        self.threads = threads      # one sample's GEMM split over these (``parallel.matmul``)
        self.ranges = [(0, N)]
        self.chunk = N

    def _w3(self, w):
        return w.reshape(self.g, self.M // self.g, self.C // self.g)

    def forward(self, x, w, y, bias=None):
        N, g = x.shape[0], self.g
        if N == 1 and g == 1 and self.threads > 1:
            parallel.matmul(w.reshape(self.M, self.C), x.reshape(self.C, self.HW),
                            y.reshape(self.M, self.HW), self.threads)
        else:
            self.xp.matmul(self._w3(w), x.reshape(N, g, self.C // g, self.HW),
                           out=y.reshape(N, g, self.M // g, self.HW))
        if bias is not None:
            y += bias.reshape(1, -1, 1, 1)

    def backward_data(self, dy, w, dx):
        N, g = dy.shape[0], self.g
        self.xp.matmul(self._w3(w).transpose(0, 2, 1), dy.reshape(N, g, self.M // g, self.HW),
                       out=dx.reshape(N, g, self.C // g, self.HW))

    def weight_grad(self, x, dy):
        """dW (M, C/g, 1, 1) = Σ_n dy[n] @ x[n]ᵀ per group, a new array."""
        xp, N, g = self.xp, x.shape[0], self.g
        if N == 1:
            a = dy.reshape(g, self.M // g, self.HW)
            b = x.reshape(g, self.C // g, self.HW)
        else:
            # channels-first copies of dy and x, in the thread's scratch: held by no layer
            # between calls (ResNet-50's 1×1 convolutions at batch 16 kept 833 MiB of them)
            dyT = thread_scratch(self.backend, ("pointwise", "dyT"), (self.M, N, self.HW))
            xT = thread_scratch(self.backend, ("pointwise", "xT"), (self.C, N, self.HW))
            a = _channels_first(dyT, dy, 0, N, g)
            b = _channels_first(xT, x, 0, N, g)
        dw = _product(a, b.swapaxes(-1, -2), self.backend.is_gpu)
        return xp.ascontiguousarray(dw).reshape(self.M, self.C // g, 1, 1)

    def backward(self, x, dy, w, dx=None):
        if dx is not None:
            self.backward_data(dy, w, dx)
        return self.weight_grad(x, dy)


class DepthwiseConv:
    """x (N, C, H, W) -> y (N, C, Ho, Wo) with weight (C, 1, kh, kw), group C: per-tap
    multiply-adds over NHWC chunks (module doc)."""

    def __init__(self, backend, N, C, H, W, Ho, Wo, kernel, pad, stride, dilation):
        self.backend, self.xp = backend, backend.xp
        # forward by columns unless the planes are small (the tap passes then lose to the
        # per-channel GEMMs over long rows: measured in bench/NOTES.md)
        t = tuning()
        self.columns = self.planes = None
        if Ho * Wo > t.depthwise_taps_max_forward_positions:
            if (N <= t.depthwise_planes_max_batch and max(stride) <= t.depthwise_planes_max_stride
                    and Ho * Wo >= t.depthwise_planes_min_positions):
                self.planes = _PlaneTaps(backend, H, W, Ho, Wo, kernel, pad, stride, dilation)
            else:
                self.columns = ConvColumns(backend, N, C, H, W, C, Ho, Wo, C, kernel, pad,
                                           stride, dilation)
        self.N, self.C, self.H, self.W, self.Ho, self.Wo = N, C, H, W, Ho, Wo
        self.kernel, self.pad, self.stride, self.dilation = kernel, pad, stride, dilation
        self.ranges = [(0, N)]
        Hp, Wp = H + 2 * pad[0], W + 2 * pad[1]
        itemsize = numpy.dtype(backend.dtype).itemsize
        self.chunk = n = _chunk_size(backend, N, (Hp * Wp + 2 * Ho * Wo) * C * itemsize)
        self.buf = backend.zeros((n, Hp, Wp, C))      # zero-bordered NHWC input
        self._dbuf = None                             # zero-bordered NHWC bottom diff
        self._ones = None                             # the positions' ones (weight gradient)

    def _work(self, name, n):
        """A chunk's (n, Ho, Wo, C) work array in the thread's scratch (``thread_scratch``):
        "acc" the NHWC output or top diff, "tmp" one tap's products."""
        return thread_scratch(self.backend, ("depthwise", name), (n, self.Ho, self.Wo, self.C))

    def _taps(self, w):
        """Weight (C, 1, kh, kw) as contiguous (kh, kw, C) rows, one per tap."""
        return self.xp.ascontiguousarray(w.reshape(self.C, *self.kernel).transpose(1, 2, 0))

    def _tap(self, buf, i, j):
        """The (n, Ho, Wo, C) cells of a padded chunk that tap (i, j) reads."""
        (sh, sw), (dh, dw), Ho, Wo = self.stride, self.dilation, self.Ho, self.Wo
        return buf[:, i * dh:i * dh + sh * (Ho - 1) + 1:sh, j * dw:j * dw + sw * (Wo - 1) + 1:sw]

    def _padded(self, x, n0, n):
        (ph, pw) = self.pad
        buf = self.buf[:n]
        buf[:, ph:ph + self.H, pw:pw + self.W] = x[n0:n0 + n].transpose(0, 2, 3, 1)
        return buf

    def forward(self, x, w, y, bias=None):
        if self.columns is not None:
            self.columns.forward(x, w, y, bias)
            return
        if self.planes is not None:
            self.planes.forward(x, w, y, bias)
            return
        xp, wt = self.xp, self._taps(w)
        kh, kw = self.kernel
        for n0, n in sample_chunks(x.shape[0], self.chunk):
            buf, acc, tmp = self._padded(x, n0, n), self._work("acc", n), self._work("tmp", n)
            xp.multiply(self._tap(buf, 0, 0), wt[0, 0], out=acc)
            for t in range(1, kh * kw):
                i, j = divmod(t, kw)
                xp.multiply(self._tap(buf, i, j), wt[i, j], out=tmp)
                xp.add(acc, tmp, out=acc)
            dst = y[n0:n0 + n]
            if bias is None:
                dst[...] = acc.transpose(0, 3, 1, 2)
            else:
                xp.add(acc.transpose(0, 3, 1, 2), bias.reshape(1, -1, 1, 1), out=dst)

    def backward(self, x, dy, w, dx=None):
        """dW (C, 1, kh, kw) (returned, a new array) and, when dx is given, the bottom diff
        written into dx; one pass over the chunks for both."""
        xp, wt = self.xp, self._taps(w)
        (kh, kw), (ph, pw), C = self.kernel, self.pad, self.C
        dwt = xp.zeros((kh, kw, C), dtype=dy.dtype)
        if dx is not None and self._dbuf is None:
            self._dbuf = self.backend.zeros(self.buf.shape)
        if self._ones is None:
            self._ones = self.backend.empty(self.chunk * self.Ho * self.Wo)
            self._ones.fill(1)
        for n0, n in sample_chunks(dy.shape[0], self.chunk):
            dyT, tmp = self._work("acc", n), self._work("tmp", n)
            dyT[...] = dy[n0:n0 + n].transpose(0, 2, 3, 1)
            ones = self._ones[:n * self.Ho * self.Wo]
            if x is not None:
                buf = self._padded(x, n0, n)
                for i in range(kh):
                    for j in range(kw):
                        xp.multiply(self._tap(buf, i, j), dyT, out=tmp)
                        dwt[i, j] += ones @ tmp.reshape(-1, C)
            if dx is not None:
                dbuf = self._dbuf[:n]
                dbuf.fill(0)
                for i in range(kh):
                    for j in range(kw):
                        xp.multiply(dyT, wt[i, j], out=tmp)
                        dst = self._tap(dbuf, i, j)
                        xp.add(dst, tmp, out=dst)
                dx[n0:n0 + n] = dbuf[:, ph:ph + self.H, pw:pw + self.W].transpose(0, 3, 1, 2)
        return dwt.transpose(2, 0, 1).reshape(C, 1, kh, kw)

    def weight_grad(self, x, dy):
        return self.backward(x, dy, None)

    def backward_data(self, dy, w, dx):
        self.backward(None, dy, w, dx)


class _PlaneTaps:
    """A depthwise forward over the N·C planes of NCHW arrays in blocks of about
    ``ConvTuning.depthwise_planes_block_bytes``: each block copied into a zero-bordered buffer,
    then per tap one multiply and one add into the block's output rows, all in cache
    (y[p] = Σ_{i,j} W[p mod C, i, j] · x_pad[p, ho·sh + i·dh, wo·sw + j·dw])."""

    def __init__(self, backend, H, W, Ho, Wo, kernel, pad, stride, dilation):
        self.xp, self.H, self.W, self.Ho, self.Wo = backend.xp, H, W, Ho, Wo
        self.kernel, self.pad, self.stride, self.dilation = kernel, pad, stride, dilation
        Hp, Wp = H + 2 * pad[0], W + 2 * pad[1]
        itemsize = numpy.dtype(backend.dtype).itemsize
        self.block = max(1, tuning().depthwise_planes_block_bytes
                         // ((Hp * Wp + 2 * Ho * Wo) * itemsize))
        self.buf = backend.zeros((self.block, Hp, Wp))    # zero-bordered planes
        self.tmp = backend.empty((self.block, Ho, Wo))    # one tap's products

    def forward(self, x, w, y, bias=None):
        xp, (kh, kw), (ph, pw) = self.xp, self.kernel, self.pad
        (sh, sw), (dh, dw), Ho, Wo = self.stride, self.dilation, self.Ho, self.Wo
        N, C = x.shape[:2]
        P = N * C
        xf, yf = x.reshape(P, self.H, self.W), y.reshape(P, Ho, Wo)
        # per tap, the weight of every plane: (kh·kw, P, 1, 1)
        wt = xp.tile(w.reshape(C, kh * kw).T, (1, N))[:, :, None, None]
        bt = None if bias is None else xp.tile(bias, N)[:, None, None]
        for p0 in range(0, P, self.block):
            n = min(self.block, P - p0)
            buf, acc, tmp = self.buf[:n], yf[p0:p0 + n], self.tmp[:n]
            buf[:, ph:ph + self.H, pw:pw + self.W] = xf[p0:p0 + n]
            for k in range(kh * kw):
                i, j = divmod(k, kw)
                tap = buf[:, i * dh:i * dh + sh * (Ho - 1) + 1:sh,
                          j * dw:j * dw + sw * (Wo - 1) + 1:sw]
                if k == 0:
                    xp.multiply(tap, wt[0, p0:p0 + n], out=acc)
                else:
                    xp.multiply(tap, wt[k, p0:p0 + n], out=tmp)
                    acc += tmp
            if bt is not None:
                acc += bt[p0:p0 + n]


class CompiledDepthwiseConv:
    """x (N, C, H, W) -> y (N, M, Ho, Wo), M = mult·C, weight (M, 1, kh, kw), group C, by the
    compiled kernels of ``conv_compiled`` (module doc). A batch smaller than ``threads`` (one
    image on two cores) is split over the threads by channels instead of samples."""

    def __init__(self, backend, kernels, N, C, H, W, M, Ho, Wo, kernel, pad, stride, dilation,
                 threads=1, numpy_backward=True):
        self.backend, self.k = backend, kernels
        self.N, self.C, self.M, self.mult = N, C, M, M // C
        self.kernel, self.geometry = kernel, (*stride, *pad, *dilation)   # sh, sw, ph, pw, dh, dw
        # the backward of one output per channel by NumPy's taps (``DepthwiseConv``, made at
        # the first backward): the compiled one measured 0.29–0.89 of its time on 112² and
        # strided 56² planes but 1.02–1.81 on 56² stride 1 and 7²–28² (bench/NOTES.md)
        self._taps_args = ((backend, N, C, H, W, Ho, Wo, kernel, pad, stride, dilation)
                           if numpy_backward and M == C else None)
        self._taps = None
        self.ranges = [(0, N)]
        self.chunk = N
        split = threads > 1 and N < threads and N * M * Ho * Wo >= parallel.SPLIT_MIN_ELEMENTS
        #: channel ranges run at the same time: of outputs (forward), of inputs (backward)
        self.out_parts = parallel.split(M, threads) if split else [(0, M)]
        self.in_parts = parallel.split(C, threads) if split else [(0, C)]
        self._none1 = backend.empty(0)
        self._none4 = backend.empty((0, 0, 0, 0))

    def _w3(self, w):
        return w.reshape(self.M, *self.kernel)

    def forward(self, x, w, y, bias=None):
        self.forward_fused(x, w, y, None, bias, False)

    def forward_fused(self, x, w, y, scale, shift, relu):
        """y = max(conv(x)·scale + shift, 0): each of scale (M,), shift (M,) when not None, the
        maximum when ``relu``; the same float operations as NumPy's passes after a forward."""
        w3, none, N = self._w3(w), self._none1, x.shape[0]
        scale = none if scale is None else scale
        shift = none if shift is None else shift

        def part(m0, count):
            self.k.depthwise_forward(x, w3, y, *self.geometry, self.mult, scale, shift, relu,
                                     0, N, m0, m0 + count)
        parallel.run(part, self.out_parts)

    def backward(self, x, dy, w, dx=None):
        """dW (M, 1, kh, kw) (a new array) and, when dx is given, the bottom diff written into
        dx; when x is None only dx."""
        if self._taps_args is not None:
            if self._taps is None:
                self._taps = DepthwiseConv(*self._taps_args)
            return self._taps.backward(x, dy, w, dx)
        N, (kh, kw) = dy.shape[0], self.kernel
        dwt = numpy.zeros((self.M if x is not None else 0, kh, kw))
        xa = self._none4 if x is None else x
        dxa = self._none4 if dx is None else dx
        # without dx the kernel reads only the weight's shape
        w3 = numpy.empty((self.M, kh, kw), dy.dtype) if w is None else self._w3(w)

        def part(c0, count):
            self.k.depthwise_backward(xa, dy, w3, dxa, dwt, *self.geometry, self.mult,
                                      0, N, c0, c0 + count)
        parallel.run(part, self.in_parts)
        if x is None:
            return None
        return self.backend.xp.asarray(dwt.astype(dy.dtype).reshape(self.M, 1, kh, kw))

    def weight_grad(self, x, dy):
        return self.backward(x, dy, None)

    def backward_data(self, dy, w, dx):
        self.backward(None, dy, w, dx)
