"""Compiled CPU kernels of the depthwise convolution (numba, the ``fast`` extra): a direct
per-channel loop over each output row, where NumPy needs a whole-array pass per kernel tap.

This module imports numba at import time; ``conv_direct`` imports it inside a function and falls
back to its NumPy paths (the tested reference) when numba is absent. Kernels are compiled on
first use per dtype and cached on disk (``cache=True``): the first process on a machine pays
the compilation (bench/NOTES.md has the seconds), later ones load it. They release the GIL, so
netspec's threads run them on disjoint sample or channel ranges at the same time.

Shapes: x (N, C, H, W), weight w (M, kh, kw) with M = mult·C (output channel m reads input
channel m // mult), y and dy (N, M, Ho, Wo); ranges [n0, n1) of samples and [m0, m1) of output
channels (forward) or [c0, c1) of input channels (backward). Per output row,

    y[n, m, ho, wo] = Σ_{i,j} w[m, i, j] · x[n, m // mult, ho·sh + i·dh − ph, wo·sw + j·dw − pw]

over the taps that land inside x (zero padding), then the epilogue ``y = y·scale[m] +
shift[m]`` (each when given: a bias is a shift; a folded BatchNorm both) and ``max(y, 0)``
(``relu``): the same float operations in the same order as NumPy's passes after the
convolution, so the epilogue adds no rounding difference. Backward per input channel c:
dx[n, c] = Σ over c's mult outputs and the taps of w · dy (scattered back along the rows),
dw[m, i, j] = Σ_{n, ho, wo} dy · x (products added elementwise along the row, each plane's sum
then taken in float64). ``affine_relu`` is the same epilogue after any convolution's GEMM.
"""

from __future__ import annotations

import numba
import numpy


@numba.njit(cache=True, nogil=True)
def _load_plane(buf, plane, ph, pw):
    """The interior of the zero-bordered ``buf`` (Hp, Wp) set to ``plane`` (H, W)."""
    H, W = plane.shape
    for h in range(H):
        src, dst = plane[h], buf[ph + h, pw:pw + W]
        for k in range(W):
            dst[k] = src[k]


@numba.njit(cache=True, nogil=True)
def _epilogue(row, s, t, has_scale, has_shift, relu):
    """row = max(row·s + t, 0) in one pass, each part when asked: NumPy's passes' operations
    in their order (a multiply rounded, then an add rounded; NaN stays NaN, as NumPy's
    maximum)."""
    zero = row.dtype.type(0)
    for k in range(row.shape[0]):
        v = row[k]
        if has_scale:
            v = v * s
        if has_shift:
            v = v + t
        if relu and v < zero:
            v = zero
        row[k] = v


@numba.njit(cache=True, nogil=True)
def depthwise_forward(x, w, y, sh, sw, ph, pw, dh, dw, mult, scale, shift, relu, n0, n1, m0, m1):
    """y[n0:n1, m0:m1] of the module doc; ``scale``/``shift`` of size 0 when not given. Each
    input plane is copied once into a zero-bordered buffer; a 3×3 kernel then sums its nine
    taps per output in registers (one pass over each output row), others add one tap at a
    time into the row."""
    H, W = x.shape[2], x.shape[3]
    kh, kw = w.shape[1], w.shape[2]
    Ho, Wo = y.shape[2], y.shape[3]
    has_scale, has_shift = scale.size > 0, shift.size > 0
    buf = numpy.zeros((H + 2 * ph, W + 2 * pw), dtype=x.dtype)
    zero = y.dtype.type(0)
    one = y.dtype.type(1)
    for n in range(n0, n1):
        loaded = -1
        for m in range(m0, m1):
            c = m // mult
            if c != loaded:
                _load_plane(buf, x[n, c], ph, pw)
                loaded = c
            wm = w[m]
            yp = y[n, m]
            s = scale[m] if has_scale else one
            t = shift[m] if has_shift else zero
            if kh == 3 and kw == 3:
                w00, w01, w02 = wm[0, 0], wm[0, 1], wm[0, 2]
                w10, w11, w12 = wm[1, 0], wm[1, 1], wm[1, 2]
                w20, w21, w22 = wm[2, 0], wm[2, 1], wm[2, 2]
                for ho in range(Ho):
                    r0, r1, r2 = buf[ho * sh], buf[ho * sh + dh], buf[ho * sh + 2 * dh]
                    row = yp[ho]
                    # literal strides where they are MobileNet's (1 and 2): LLVM vectorizes
                    if sw == 1 and dw == 1:
                        for k in range(Wo):
                            row[k] = ((w00 * r0[k] + w01 * r0[k + 1] + w02 * r0[k + 2])
                                      + (w10 * r1[k] + w11 * r1[k + 1] + w12 * r1[k + 2])
                                      + (w20 * r2[k] + w21 * r2[k + 1] + w22 * r2[k + 2]))
                    elif sw == 2 and dw == 1:
                        for k in range(Wo):
                            b = 2 * k
                            row[k] = ((w00 * r0[b] + w01 * r0[b + 1] + w02 * r0[b + 2])
                                      + (w10 * r1[b] + w11 * r1[b + 1] + w12 * r1[b + 2])
                                      + (w20 * r2[b] + w21 * r2[b + 1] + w22 * r2[b + 2]))
                    else:
                        for k in range(Wo):
                            b = k * sw
                            row[k] = ((w00 * r0[b] + w01 * r0[b + dw] + w02 * r0[b + 2 * dw])
                                      + (w10 * r1[b] + w11 * r1[b + dw] + w12 * r1[b + 2 * dw])
                                      + (w20 * r2[b] + w21 * r2[b + dw] + w22 * r2[b + 2 * dw]))
                    _epilogue(row, s, t, has_scale, has_shift, relu)
            else:
                for ho in range(Ho):
                    row = yp[ho]
                    for k in range(Wo):
                        row[k] = zero
                    for i in range(kh):
                        r = buf[ho * sh + i * dh]
                        for j in range(kw):
                            wv = wm[i, j]
                            o = j * dw
                            for k in range(Wo):
                                row[k] += wv * r[o + k * sw]
                    _epilogue(row, s, t, has_scale, has_shift, relu)


@numba.njit(cache=True, nogil=True)
def depthwise_backward(x, dy, w, dx, dwt, sh, sw, ph, pw, dh, dw, mult, n0, n1, c0, c1):
    """Input channels [c0, c1) over samples [n0, n1): dx[n, c] written (when dx has size) and
    dwt[m, i, j] (float64) added to for c's mult output channels (when x has size); both
    through zero-bordered plane buffers (the bottom's, and the bottom diff's, cropped after).
    Per plane and tap, dy·x products are added elementwise into a row of the plane's width,
    summed once at the end (in float64)."""
    want_dx, want_dw = dx.size > 0, x.size > 0
    H, W = (dx.shape[2], dx.shape[3]) if want_dx else (x.shape[2], x.shape[3])
    kh, kw = w.shape[1], w.shape[2]
    Ho, Wo = dy.shape[2], dy.shape[3]
    xbuf = numpy.zeros((H + 2 * ph, W + 2 * pw), dtype=dy.dtype)
    dbuf = numpy.zeros((H + 2 * ph, W + 2 * pw), dtype=dy.dtype)
    acc = numpy.zeros((kh * kw, Wo), dtype=dy.dtype)
    for n in range(n0, n1):
        for c in range(c0, c1):
            if want_dw:
                _load_plane(xbuf, x[n, c], ph, pw)
            if want_dx:
                dbuf[:, :] = 0
            for m in range(c * mult, (c + 1) * mult):
                dyp = dy[n, m]
                wm = w[m]
                if want_dw:
                    acc[:, :] = 0
                for ho in range(Ho):
                    for i in range(kh):
                        hrow = ho * sh + i * dh
                        for j in range(kw):
                            o = j * dw
                            t = i * kw + j
                            wv = wm[i, j]
                            if sw == 1:         # a literal stride: vectorized
                                if want_dx:
                                    for k in range(Wo):
                                        dbuf[hrow, o + k] += wv * dyp[ho, k]
                                if want_dw:
                                    for k in range(Wo):
                                        acc[t, k] += dyp[ho, k] * xbuf[hrow, o + k]
                            else:
                                if want_dx:
                                    for k in range(Wo):
                                        dbuf[hrow, o + k * sw] += wv * dyp[ho, k]
                                if want_dw:
                                    for k in range(Wo):
                                        acc[t, k] += dyp[ho, k] * xbuf[hrow, o + k * sw]
                if want_dw:
                    for t in range(kh * kw):
                        total = 0.0
                        for k in range(Wo):
                            total += numpy.float64(acc[t, k])
                        dwt[m, t // kw, t % kw] += total
            if want_dx:
                dst = dx[n, c]
                for h in range(H):
                    src, out = dbuf[ph + h, pw:pw + W], dst[h]
                    for k in range(W):
                        out[k] = src[k]


@numba.njit(cache=True, nogil=True)
def affine_relu(y, M, scale, shift, relu, p0, p1):
    """Rows [p0, p1) of y (N·M, H·W), in place: row p (channel p mod M) = max(row·scale +
    shift, 0), each part when given (``scale``/``shift`` of size 0 when not): a folded
    convolution's epilogue in one pass, the operations of NumPy's passes in their order."""
    has_scale, has_shift = scale.size > 0, shift.size > 0
    one, zero = y.dtype.type(1), y.dtype.type(0)
    for p in range(p0, p1):
        m = p % M
        _epilogue(y[p], scale[m] if has_scale else one, shift[m] if has_shift else zero,
                  has_scale, has_shift, relu)
