"""Convolution layers (Caffe's ``ConvolutionLayer``, ``DeconvolutionLayer``, ``Im2colLayer``; the
forks' DepthwiseConvolution and ConvolutionDepthwise, Convolution with group = channels).

Shapes (2-D, NCHW): bottom x (N, C, H, W), weight (M, C/g, kh, kw), bias (M,), top y (N, M, Ho, Wo)
with g = ``group``, M = ``num_output`` and, per spatial dim (Caffe's ``conv_layer.cpp``),

    Ho = (H + 2·pad_h − (dilation_h·(kh − 1) + 1)) // stride_h + 1.

    y[n, m, ho, wo] = b[m] + Σ_{c in group(m), i, j} W[m, c, i, j] ·
                      x_pad[n, c, ho·stride_h + i·dilation_h, wo·stride_w + j·dilation_w]

where x_pad is x with ``pad`` zeros on each side. Several bottoms give as many tops, all computed
with the same parameters (Caffe's weight sharing across bottoms); their gradients add up.
Deconvolution runs the same machinery (``conv_columns``) with forward and bottom diff swapped.
"""

from __future__ import annotations

from .. import parallel
from .base import Layer, add_param_diff
from .conv_columns import ConvColumns, SplitColumns, tuning
from .conv_direct import CompiledDepthwiseConv, DepthwiseConv, PointwiseConv, compiled_kernels
from .conv_fold import folded_affine
from .conv_winograd import WinogradConv
from .registry import register


@register("Convolution")
class Convolution(Layer):
    """2-D convolution (cross-correlation) with pad, stride, dilation and groups, as Caffe.

    Blobs: 0 = weight (num_output, C/group, kh, kw) from ``weight_filler``; 1 = bias
    (num_output,) from ``bias_filler`` when ``bias_term``. N bottoms of one shape -> N tops.
    """

    fills_tops = True
    writes_bottom_diffs = True

    param_block = "convolution_param"
    min_bottoms = 1
    splits_batch = True
    writes_param_diffs = True   # add_param_diff: each bottom's gradient written, then added
    _ones = None        # ones vector of the CPU bias-gradient GEMV (made on first backward)
    # conv_fold: the BatchNorm [, Scale] layers folded into this one (None: no fold; [] when
    # only a ReLU is), whether a ReLU after them is, and whether the folded epilogue may use
    # the compiled kernels (ConvTuning.compiled at setup; numba looked up at the first forward)
    folded = None
    folded_relu = False
    _compiled = False

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
        pair = self.spatial_pair
        self.kh, self.kw = pair(p.kernel_size, p.kernel_h, p.kernel_w, "kernel_size", None)
        self.pad_h, self.pad_w = pair(p.pad, p.pad_h, p.pad_w, "pad", 0)
        self.stride_h, self.stride_w = pair(p.stride, p.stride_h, p.stride_w, "stride", 1)
        self.dil_h, self.dil_w = pair(p.dilation, None, None, "dilation", 1)
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

    def _columns(self, N, C, H, W, M, Ho, Wo, g, winograd=True):
        """The machinery of a convolution (N, C, H, W) -> (N, M, Ho, Wo): on the CPU 1×1 ones
        as plain GEMMs and depthwise ones by kernel taps (``conv_direct``), large 3×3 stride-1
        forwards by Winograd F(2×2, 3×3) (``conv_winograd``; unless ``winograd`` is false: the
        machinery's forward is not the layer's), others by columns (``conv_columns``); split
        over the CPU threads when it has at least ``parallel.SPLIT_MIN_MACS`` multiply-adds."""
        kernel, pad = (self.kh, self.kw), (self.pad_h, self.pad_w)
        stride, dilation = (self.stride_h, self.stride_w), (self.dil_h, self.dil_w)
        t, cpu = tuning(), not self.backend.is_gpu

        # a batch smaller than the threads: its GEMMs split over them when BLAS runs one
        # thread (``ConvTuning.single_sample_blas_threads`` off; ``parallel.matmul``)
        T = self.threads if N < self.threads else 1

        def make(n):
            if cpu and t.pointwise_gemm and kernel == (1, 1) and stride == (1, 1) and pad == (0, 0):
                return PointwiseConv(self.backend, n, C, H, W, M, g, T)
            if cpu and t.depthwise_taps and g > 1 and g == C and M % C == 0:
                kernels = compiled_kernels() if t.compiled else None
                if kernels is not None:
                    return CompiledDepthwiseConv(self.backend, kernels, n, C, H, W, M, Ho, Wo,
                                                 kernel, pad, stride, dilation, self.threads)
                if M == C:
                    return DepthwiseConv(self.backend, n, C, H, W, Ho, Wo, kernel, pad, stride,
                                         dilation)
            if (winograd and cpu and t.winograd and kernel == (3, 3) and stride == (1, 1)
                    and dilation == (1, 1) and g == 1 and min(C, M) >= t.winograd_min_channels
                    and Ho * Wo >= t.winograd_min_positions
                    and n * Ho * Wo >= t.winograd_min_batch_positions):
                return WinogradConv(self.backend, n, C, H, W, M, Ho, Wo, pad, T)
            return ConvColumns(self.backend, n, C, H, W, M, Ho, Wo, g, kernel, pad, stride,
                               dilation, T)
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
        self._compiled = not self.backend.is_gpu and tuning().compiled
        return [(N, M, Ho, Wo)] * len(bottom_shapes)

    # -- forward / backward ---------------------------------------------------------------
    def forward(self, bottom, top):
        bias = self.blobs[1].data if self.p.bias_term else None
        if self.folded is not None:   # [BatchNorm [+ Scale]] [+ ReLU] after it (conv_fold):
            # y = max(conv(x)·s + t, 0); s = 1 and t = bias without a BatchNorm
            s, t = folded_affine(self, bias) if self.folded else (None, bias)
            fused = getattr(self.conv, "forward_fused", None)   # the compiled depthwise kernel
            for b, tp in zip(bottom, top):
                if fused is not None:
                    fused(b.data, self.blobs[0].data, tp.data, s, t, self.folded_relu)
                else:
                    self.conv.forward(b.data, self.blobs[0].data, tp.data)
                    self._affine(tp.data, s, t, self.folded_relu)
            return
        for b, t in zip(bottom, top):
            self.conv.forward(b.data, self.blobs[0].data, t.data, bias)

    def _affine(self, y, s, t, relu):
        """y (N, M, H, W) = max(y·s + t, 0) in place (the maximum when ``relu``; s and t (M,)
        or None: left out): one pass of the compiled kernel over row ranges on the threads,
        else NumPy's passes."""
        N, M = y.shape[:2]
        # looked up at the first forward: nets without a fold never import numba
        kernels = compiled_kernels() if self._compiled else None
        if kernels is None:
            if s is not None:
                self.xp.multiply(y, s.reshape(1, -1, 1, 1), out=y)
            if t is not None:
                self.xp.add(y, t.reshape(1, -1, 1, 1), out=y)
            if relu:
                self.xp.maximum(y, 0, out=y)
            return
        none = self.xp.empty(0, dtype=y.dtype)
        s = none if s is None else s
        t = none if t is None else t
        rows = y.reshape(N * M, -1)
        parts = self.threads if y.size >= parallel.SPLIT_MIN_ELEMENTS else 1
        parallel.run(lambda p0, n: kernels.affine_relu(rows, M, s, t, relu, p0, p0 + n),
                     parallel.split(N * M, parts))

    def _add_bias_grad(self, dy):
        """db += Σ_{n, h, w} dy[n, m, h, w]: one GEMV of the (N·M, H·W) top diff with a ones
        vector (Caffe's bias gradient is a GEMV too), then a sum over the N samples -- 2-3×
        faster than NumPy's reduction over axes (0, 2, 3) on the CPU. On a GPU CuPy's one
        reduction kernel is faster (H200: LeNet iteration 2.35 vs 2.42 ms)."""
        if self.backend.is_gpu:
            add_param_diff(self.blobs[1], dy.sum(axis=(0, 2, 3)))
            return
        M = dy.shape[1]
        if self._ones is None or self._ones.size != dy[0, 0].size:   # H·W changes by reshape
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
        self.conv = self._columns(N, M, Ho, Wo, C, H, W, g, winograd=False)
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


# -- the forks' depthwise convolutions (Convolution with group = channels) ----------------------
@register("DepthwiseConvolution")
class DepthwiseConvolution(Convolution):
    """The MobileNet forks' depthwise convolution (eric612/MobileNet-YOLO and others): a
    Convolution with one group per input channel, ``convolution_param`` as Convolution's.

    The group is the bottom's channel count C whatever ``group`` says (the fork files set
    ``group: C``; another value would give a different weight layout, so it is refused);
    ``num_output`` must be C or a multiple of it (a channel multiplier). Weight
    (num_output, 1, kh, kw), bias (num_output,).
    """

    #: whether num_output may be a multiple of the channels (else it must equal them)
    multiplier_allowed = True

    def _check_bottoms(self, bottom_shapes):
        C = tuple(bottom_shapes[0])[1] if len(bottom_shapes[0]) > 1 else None
        p = self.p
        if C is not None:
            if "group" in p.model_fields_set and p.group != C:
                raise self.spec_error(f"group ({p.group}) must be the bottom's channel count "
                                      f"({C}) in a {self.lp.type} layer (or be left out)",
                                      field="convolution_param.group")
            M = p.num_output
            if M is not None and (M % C if self.multiplier_allowed else M != C):
                want = "a multiple of" if self.multiplier_allowed else "equal to"
                raise self.spec_error(f"num_output ({M}) must be {want} the bottom's channel "
                                      f"count ({C}) in a {self.lp.type} layer",
                                      field="convolution_param.num_output")
            self.p = p.model_copy(update={"group": C})
        return super()._check_bottoms(bottom_shapes)


@register("ConvolutionDepthwise")
class ConvolutionDepthwise(DepthwiseConvolution):
    """ShuffleNet's depthwise convolution (farmingyard/ShuffleNet): as DepthwiseConvolution,
    but its fork has no channel multiplier: ``num_output`` must equal the bottom's channels."""

    multiplier_allowed = False
