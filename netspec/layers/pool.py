"""Pooling layer (Caffe's ``PoolingLayer``): MAX and AVE over 2-D windows of NCHW blobs.

Output size (Caffe's ``pooling_layer.cpp``, per spatial dim; ``round_mode`` CEIL by default):

    Ho = ceil((H + 2·pad_h − kh) / stride_h) + 1          (floor for round_mode FLOOR)
    if pad_h or pad_w: if (Ho − 1)·stride_h ≥ H + pad_h: Ho −= 1

(the last window must start inside the image or its left/top padding). Window (ph, pw) covers
rows hstart = ph·stride_h − pad_h ... hstart + kh − 1, clipped to the image:

* MAX: the largest input in the window (padding never wins); on ties the first in scan order
  (row by row). An optional second top holds the argmax as Caffe's flat index h·W + w of the
  input plane (as a float). Backward routes each top gradient to its argmax.
* AVE: the sum over the window's image cells divided by Caffe's ``pool_size`` =
  (min(hstart + kh, H + pad_h) − hstart) · (min(wstart + kw, W + pad_w) − wstart): padding
  cells count, cells past H + pad_h (the ceil overhang) do not. Backward spreads
  dy / pool_size over the window's image cells.

``global_pooling`` pools the whole H×W plane (pad 0, stride 1) to 1×1. STOCHASTIC pooling is
not supported.

Implementation: a loop over the kh·kw kernel taps; each tap is one strided (N, C, Ho, Wo) view
of the bottom (or of a padded copy when windows leave the image), so every array operation
covers the whole batch. MAX keeps the winning tap per output (uint8/int32) for the backward.
"""

from __future__ import annotations

import numpy

from .base import Layer
from .registry import register


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

    param_block = "pooling_param"
    exact_bottoms = 1
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
        elif p.kernel_size is not None:
            if p.kernel_h is not None or p.kernel_w is not None:
                raise self.spec_error("either kernel_size or kernel_h/kernel_w should be "
                                      "specified; not both", field="kernel_size")
            kh = kw = p.kernel_size
        elif p.kernel_h is not None and p.kernel_w is not None:
            kh, kw = p.kernel_h, p.kernel_w
        else:
            raise self.spec_error("kernel_size or kernel_h and kernel_w are required",
                                  field="kernel_size")
        if (p.pad_h is None) != (p.pad_w is None):
            raise self.spec_error("pad_h and pad_w must be given together", field="pad_h")
        if (p.stride_h is None) != (p.stride_w is None):
            raise self.spec_error("stride_h and stride_w must be given together",
                                  field="stride_h")
        ph, pw = (p.pad_h, p.pad_w) if p.pad_h is not None else (p.pad, p.pad)
        sh, sw = (p.stride_h, p.stride_w) if p.stride_h is not None else (p.stride, p.stride)
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
        ceil = self.p.round_mode == "CEIL"
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
        self.is_global = Ho == Wo == 1 and kh == H and kw == W and not any_pad

        # Padded work area: needed when windows reach outside the image.
        Hb = max(H + 2 * ph, (Ho - 1) * sh + kh)
        Wb = max(W + 2 * pw, (Wo - 1) * sw + kw)
        self._buffered = (Hb, Wb) != (H, W)
        self._buf = self._dbuf = None
        if self._buffered:
            fill = float(numpy.finfo(self.dtype).min) if self.is_max else 0.0
            self._buf = self.xp.full((N, C, Hb, Wb), fill, dtype=self.dtype)
        # windows tile the image exactly (no overlap, no gap): backward assigns, no zeroing
        self._tiles = (not self._buffered and sh == kh and sw == kw and Ho * kh == H
                       and Wo * kw == W)

        if not self.is_max:
            self._pool_size = self._ave_pool_size()
        else:
            idx_dtype = numpy.uint8 if kh * kw <= 255 else numpy.int32
            self._argmax = self.xp.zeros((N, C, Ho, Wo), dtype=idx_dtype)
            self._better = self.xp.zeros((N, C, Ho, Wo), dtype=bool)
            self._scratch = self.xp.zeros((N, C, Ho, Wo), dtype=idx_dtype)
            self._routed = self.xp.zeros((N, C, Ho, Wo), dtype=self.dtype)
        tops = [(N, C, Ho, Wo)]
        if self.n_tops == 2:
            tops.append((N, C, Ho, Wo))
        return tops

    def _ave_pool_size(self):
        """Caffe's AVE divisor per output cell: an int when uniform, else an (Ho, Wo) array."""
        def sizes(n_out, stride, pad, k, size):
            starts = [o * stride - pad for o in range(n_out)]
            return [min(s + k, size + pad) - s for s in starts]
        rows = sizes(self.Ho, self.stride_h, self.pad_h, self.kh, self.H)
        cols = sizes(self.Wo, self.stride_w, self.pad_w, self.kw, self.W)
        if len(set(rows)) == 1 and len(set(cols)) == 1:
            return rows[0] * cols[0]
        host = numpy.outer(numpy.array(rows, dtype=numpy.float64),
                           numpy.array(cols, dtype=numpy.float64))
        return self.backend.asarray(host)

    # -- helpers --------------------------------------------------------------------------
    def _tap(self, a, i, j):
        """Cells (N, C, Ho, Wo) of a (padded) plane array that kernel tap (i, j) covers."""
        return a[:, :, i:i + self.stride_h * (self.Ho - 1) + 1:self.stride_h,
                 j:j + self.stride_w * (self.Wo - 1) + 1:self.stride_w]

    def _taps(self):
        return [(i, j) for i in range(self.kh) for j in range(self.kw)]

    def _interior(self, buf):
        return buf[:, :, self.pad_h:self.pad_h + self.H, self.pad_w:self.pad_w + self.W]

    def _source(self, x):
        """The array the taps read: x itself, or x copied into the padded buffer."""
        if not self._buffered:
            return x
        self._interior(self._buf)[...] = x
        return self._buf

    # -- forward --------------------------------------------------------------------------
    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        if self.is_global:
            self._forward_global(x, y)
        elif self.is_max:
            self._forward_max(self._source(x), y)
        else:
            src = self._source(x)
            taps = self._taps()
            self.xp.copyto(y, self._tap(src, *taps[0]))
            for i, j in taps[1:]:
                y += self._tap(src, i, j)
            y /= self._pool_size
        if self.n_tops == 2:
            self._write_mask(top[1].data)

    def _forward_max(self, src, y):
        """y = max over taps; ``_argmax`` = the first tap (scan order) reaching it."""
        xp = self.xp
        taps = self._taps()
        xp.copyto(y, self._tap(src, *taps[0]))
        self._argmax.fill(0)
        for o, (i, j) in enumerate(taps[1:], start=1):
            v = self._tap(src, i, j)
            xp.greater(v, y, out=self._better)            # strict: earlier taps win ties
            xp.maximum(y, v, out=y)
            # taps come in increasing order, so the last improving tap is the argmax
            xp.multiply(self._better, self._argmax.dtype.type(o), out=self._scratch)
            xp.maximum(self._argmax, self._scratch, out=self._argmax)

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
        a = self._argmax.astype(numpy.int64)
        mask[...] = (hstart + a // self.kw) * self.W + (wstart + a % self.kw)

    # -- backward -------------------------------------------------------------------------
    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        dy, dx = top[0].diff, bottom[0].diff
        if self.is_global:
            return self._backward_global(dy, dx)
        g = dy if self.is_max else dy / self._pool_size
        if self._tiles:
            dst, add = dx, False                 # each input cell is in exactly one window
        else:
            if self._buffered and self._dbuf is None:
                self._dbuf = xp.zeros_like(self._buf)
            dst = self._dbuf if self._buffered else dx
            dst.fill(0)
            add = True
        for o, (i, j) in enumerate(self._taps()):
            part = self._tap(dst, i, j)
            if self.is_max:
                hit = xp.equal(self._argmax, self._argmax.dtype.type(o), out=self._better)
                if add:
                    part += xp.multiply(g, hit, out=self._routed)
                else:
                    xp.multiply(g, hit, out=part)
            elif add:
                part += g
            else:
                part[...] = g
        if self._buffered:
            dx[...] = self._interior(self._dbuf)

    def _backward_global(self, dy, dx):
        flat = dx.reshape(self.N, self.C, -1)
        g = dy.reshape(self.N, self.C, 1)
        if self.is_max:
            cells = self.xp.arange(flat.shape[2]).reshape(1, 1, -1)
            hit = cells == self._argmax.reshape(self.N, self.C, 1)
            self.xp.multiply(g, hit, out=flat)
        else:
            flat[...] = g / self._pool_size

