"""Convolution layer (Caffe's ``ConvolutionLayer``): im2col through a strided view + one GEMM.

Shapes (2-D, NCHW): bottom x (N, C, H, W), weight (M, C/g, kh, kw), bias (M,), top y (N, M, Ho, Wo)
with g = ``group``, M = ``num_output`` and, per spatial dim (Caffe's ``conv_layer.cpp``),

    Ho = (H + 2·pad_h − (dilation_h·(kh − 1) + 1)) // stride_h + 1.

    y[n, m, ho, wo] = b[m] + Σ_{c in group(m), i, j} W[m, c, i, j] ·
                      x_pad[n, c, ho·stride_h + i·dilation_h, wo·stride_w + j·dilation_w]

where x_pad is x with ``pad`` zeros on each side. Several bottoms give as many tops, all computed
with the same parameters (Caffe's weight sharing across bottoms); their gradients add up.

Implementation: the padded bottom lives in a buffer allocated in ``setup``; a strided view of it
is copied once into ``col`` (K = C·kh·kw rows), and ``W (g, M/g, K/g) @ col (g, K/g, Q)`` is one
GEMM per group (a single batched ``matmul``). Backward: ``dW += dy @ colᵀ`` and
``dcol = Wᵀ @ dy`` (one GEMM each), then col2im as kh·kw slice-adds into a padded buffer.
Backward reuses the columns of the last forward when it sees the same bottom array (Caffe
recomputes them); the whole batch's columns are kept, C·kh·kw·N·Ho·Wo values per layer.

The columns Q of ``col`` are ordered either (N, Ho, Wo) ("batch-first") or (Ho, Wo, N)
("batch-last", the padded buffer then is (C, Hp, Wp, N)). NumPy copies and adds run one inner
loop per contiguous run, so with narrow outputs (small Wo) the batch-last order, whose runs are
Wo·N long, makes im2col/col2im several times faster at the price of transposing the (smaller)
top and bottom arrays; wide outputs keep batch-first, whose transposes move whole planes.
"""

from __future__ import annotations

from .base import Layer
from .registry import register

#: narrowest output row (Wo) for which the batch-first column order is used (see module doc)
BATCH_FIRST_MIN_WIDTH = 16
#: largest (M/g)·(K/g) weight matrix whose gradient is computed as a batch of GEMMs
SPLIT_DW_MAX_WEIGHTS = 4096


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


@register("Convolution")
class Convolution(Layer):
    """2-D convolution (cross-correlation) with pad, stride, dilation and groups, as Caffe.

    Blobs: 0 = weight (num_output, C/group, kh, kw) from ``weight_filler``; 1 = bias
    (num_output,) from ``bias_filler`` when ``bias_term``. N bottoms of one shape -> N tops.
    """

    param_block = "convolution_param"
    min_bottoms = 1

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

    def setup(self, bottom_shapes):
        shape, g, M = self._check_bottoms(bottom_shapes)
        p = self.p
        N, C, H, W = shape
        Ho, Wo = self._output_size(H, W)
        Hp, Wp = H + 2 * self.pad_h, W + 2 * self.pad_w
        self.N, self.C, self.H, self.W, self.M, self.g = N, C, H, W, M, g
        self.Ho, self.Wo = Ho, Wo
        self.K = C * self.kh * self.kw

        self.add_param((M, C // g, self.kh, self.kw), p.weight_filler, "weight")
        if p.bias_term:
            self.add_param((M,), p.bias_filler, "bias")

        # Buffers (shapes fixed from here on). Memory: col holds C·kh·kw·N·Ho·Wo values.
        # self._perm views any (channel, *rest) array, and the padded buffers, as NCHW.
        self.batch_last = Wo < BATCH_FIRST_MIN_WIDTH
        if self.batch_last:
            rest, self._perm = (Ho, Wo, N), (3, 0, 1, 2)
            buf = self.backend.zeros((C, Hp, Wp, N))
        else:
            rest, self._perm = (N, Ho, Wo), (1, 0, 2, 3)
            buf = self.backend.zeros((C, N, Hp, Wp))
        self._rest = rest
        self._xbuf = buf                                  # padded bottom, zero border
        self._dbuf = None                                 # padded bottom diff (backward)
        self._col = self.backend.empty((C, self.kh, self.kw, *rest))
        self._out = self.backend.empty((M, *rest))       # GEMM result / top diff, (M, *rest)
        self._col_src = None                              # bottom array held in _col
        return [(N, M, Ho, Wo)] * len(bottom_shapes)

    # -- helpers --------------------------------------------------------------------------
    def _nchw(self, a):
        """The NCHW (logical) view of a (channel, *rest) array."""
        return a.transpose(self._perm)

    def _interior(self, buf_nchw):
        """The unpadded (N, C, H, W) part of an NCHW view of a padded buffer."""
        return buf_nchw[:, :, self.pad_h:self.pad_h + self.H, self.pad_w:self.pad_w + self.W]

    def _window(self, buf_nchw, i, j):
        """Cells of the padded NCHW buffer that kernel tap (i, j) reads: (N, C, Ho, Wo)."""
        h0, w0 = i * self.dil_h, j * self.dil_w
        return buf_nchw[:, :, h0:h0 + self.stride_h * (self.Ho - 1) + 1:self.stride_h,
                        w0:w0 + self.stride_w * (self.Wo - 1) + 1:self.stride_w]

    def _im2col(self, x):
        """Fill ``_col`` (C, kh, kw, *rest) from the bottom array x (N, C, H, W)."""
        xp = self.xp
        xbuf = self._nchw(self._xbuf)
        self._interior(xbuf)[...] = x
        sN, sC, sH, sW = xbuf.strides
        axis_strides = {"N": sN, "Ho": sH * self.stride_h, "Wo": sW * self.stride_w}
        names = ("Ho", "Wo", "N") if self.batch_last else ("N", "Ho", "Wo")
        view = xp.lib.stride_tricks.as_strided(
            self._xbuf, shape=self._col.shape,
            strides=(sC, sH * self.dil_h, sW * self.dil_w, *(axis_strides[a] for a in names)))
        self._col[...] = view
        self._col_src = x

    def _grouped(self, a, rows):
        """(rows, *rest) array as (g, rows/g, Q)."""
        return a.reshape(self.g, rows // self.g, -1)

    # -- forward / backward ---------------------------------------------------------------
    def forward(self, bottom, top):
        xp = self.xp
        w = self.blobs[0].data.reshape(self.g, self.M // self.g, -1)
        for b, t in zip(bottom, top):
            self._im2col(b.data)
            xp.matmul(w, self._grouped(self._col, self.K), out=self._grouped(self._out, self.M))
            y = self._nchw(self._out)
            if self.p.bias_term:
                xp.add(y, self.blobs[1].data.reshape(1, -1, 1, 1), out=t.data)
            else:
                t.data[...] = y

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        g, M, K = self.g, self.M, self.K
        wblob = self.blobs[0]
        w = wblob.data.reshape(g, M // g, K // g)
        for k, (t, b) in enumerate(zip(top, bottom)):
            if self._col_src is not b.data:
                self._im2col(b.data)
            dy = self._out                                    # reused: (M, *rest)
            self._nchw(dy)[...] = t.diff
            dyg = self._grouped(dy, M)
            if self.p.bias_term:
                self.blobs[1].diff += dy.reshape(M, -1).sum(axis=1)
            colg = self._grouped(self._col, K)
            wblob.diff += self._weight_grad(dyg, colg).reshape(wblob.shape)
            if propagate_down[k]:
                # dcol overwrites col (no longer needed), then col2im into the padded buffer
                xp.matmul(w.transpose(0, 2, 1), dyg, out=colg)
                self._col_src = None
                self._col2im(b.diff)

    def _weight_grad(self, dyg, colg):
        """dW (g, M/g, K/g) = dy (g, M/g, Q) @ colᵀ (g, Q, K/g).

        For a small weight matrix the reduction over Q is split along the first ``rest`` axis
        into a batch of GEMMs that are summed (BLAS handles a tiny output with a very long
        reduction poorly: about 2x faster for LeNet's conv1).
        """
        xp = self.xp
        if (self.M // self.g) * (self.K // self.g) > SPLIT_DW_MAX_WEIGHTS:
            return xp.matmul(dyg, colg.transpose(0, 2, 1))
        S = self._rest[0]
        dy4 = dyg.reshape(*dyg.shape[:2], S, -1).transpose(0, 2, 1, 3)     # (g, S, M/g, Q/S)
        col4 = colg.reshape(*colg.shape[:2], S, -1).transpose(0, 2, 3, 1)  # (g, S, Q/S, K/g)
        return xp.matmul(dy4, col4).sum(axis=1)

    def _col2im(self, dx):
        """dx (N, C, H, W) = Σ over taps of ``_col`` (holding dcol) scattered to the input."""
        if self._dbuf is None:
            self._dbuf = self.xp.zeros_like(self._xbuf)
        dbuf = self._dbuf
        dbuf.fill(0)
        dbuf_nchw = self._nchw(dbuf)
        for i in range(self.kh):
            for j in range(self.kw):
                self._window(dbuf_nchw, i, j)[...] += self._nchw(self._col[:, i, j])
        dx[...] = self._interior(dbuf_nchw)
