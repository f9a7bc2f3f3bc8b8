"""Caffe layer catalog, part a: LRN, Deconvolution, Im2col, SPP, Crop, Slice, Reshape, Tile,
Reduction, ArgMax, Filter, BatchReindex, Embed, Parameter, Bias.

Each class follows the BVLC Caffe layer of the same type name (``src/caffe/layers/*_layer.cpp``)
in shapes, parameter defaults, checks and numbers. Everything is whole-array work on
``self.xp`` (NumPy or CuPy) in ``self.dtype``; Python loops run only over kernel offsets,
window offsets, pyramid levels or bottoms. Layers that read data-dependent indices (Filter,
BatchReindex, Embed) check them on the host, one device-to-host transfer per forward.
"""

from __future__ import annotations

import math

import numpy

from ..blob import Blob
from .base import Layer, add_param_diff, canonical_axis
from .conv import Convolution
from .registry import register


def _axis(layer: Layer, axis: int, ndim: int, field: str) -> int:
    try:
        return canonical_axis(axis, ndim)
    except ValueError as e:
        raise layer.spec_error(str(e), field=field) from None


def _scatter_add(xp, target, index, values) -> None:
    """``target[index[i]] += values[i]`` for every i; repeated indices add up (numpy.add.at)."""
    at = getattr(xp.add, "at", None)
    if at is not None:
        at(target, index, values)
    else:  # CuPy before ufunc.at
        import cupyx  # noqa: PLC0415

        cupyx.scatter_add(target, index, values)


# -- LRN ------------------------------------------------------------------------------------
@register("LRN")
class LRN(Layer):
    """Local response normalisation of an NCHW blob (Caffe's ``LRNLayer``), shape-preserving.

    n = ``local_size`` (odd), p = (n − 1)/2, windows zero-padded at the borders.

    * ACROSS_CHANNELS (default):
      s[n,c,h,w] = k + α/n · Σ_{c' = c−p … c+p} x[n,c',h,w]²,   y = x · s^(−β);
      ∂x = ∂y · s^(−β) − (2αβ/n) · x · Σ_{c' = c−p … c+p} (∂y · y / s)[n,c',h,w].
    * WITHIN_CHANNEL (``k`` is not used, as in Caffe, which builds it from Pooling AVE with
      pad p, whose divisor counts the padding, and Power with shift 1):
      u[n,c,h,w] = 1 + α/n² · Σ_{|i|,|j| ≤ p} x[n,c,h+i,w+j]²,   y = x · u^(−β);
      ∂x = ∂y · u^(−β) − (2αβ/n²) · x · Σ_{|i|,|j| ≤ p} (∂y · x · u^(−β−1))[n,c,h+i,w+j].

    Window sums are loops over the n offsets (twice, separably, for WITHIN_CHANNEL) into
    zero-bordered buffers allocated in ``setup``. Cannot run in place (backward reads x and y).
    """

    param_block = "lrn_param"
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if len(shape) != 4:
            raise self.error(f"input must have 4 axes (num, channels, height, width), "
                             f"got shape {shape}")
        if self.lp.bottom and self.lp.top and self.lp.bottom[0] == self.lp.top[0]:
            raise self.spec_error("LRN cannot run in place (give its top another name)",
                                  field="top")
        p = self.p
        if p.local_size % 2 != 1:
            raise self.spec_error(f"LRN only supports odd values for local_size, got "
                                  f"{p.local_size}", field="local_size")
        self.size, self.pre_pad = p.local_size, (p.local_size - 1) // 2
        self.alpha, self.beta, self.k = float(p.alpha), float(p.beta), float(p.k)
        self.across = p.norm_region == "ACROSS_CHANNELS"
        N, C, H, W = shape
        n = self.size
        if self.across:
            self._pad = self.backend.zeros((N, C + n - 1, H, W))
        else:
            self._pad = self.backend.zeros((N, C, H + n - 1, W + n - 1))
        self._shape = shape
        return [shape]

    def _window_sum(self, a):
        """Zero-padded window sum of ``a`` over channels (across) or over h×w (within)."""
        n, pp = self.size, self.pre_pad
        N, C, H, W = self._shape
        buf = self._pad
        if self.across:
            buf[:, pp:pp + C] = a
            out = buf[:, 0:C].copy()
            for o in range(1, n):
                out += buf[:, o:o + C]
            return out
        buf[:, :, pp:pp + H, pp:pp + W] = a
        rows = buf[:, :, 0:H].copy()
        for o in range(1, n):
            rows += buf[:, :, o:o + H]
        out = rows[..., 0:W].copy()
        for o in range(1, n):
            out += rows[..., o:o + W]
        return out

    def forward(self, bottom, top):
        if top[0] is bottom[0]:
            raise self.spec_error("LRN cannot run in place (give its top another name)",
                                  field="top")
        xp = self.xp
        x = bottom[0].data
        if self.across:
            s = self._window_sum(x * x)
            s *= self.alpha / self.size
            s += self.k
        else:
            s = self._window_sum(x * x)
            s *= self.alpha / (self.size * self.size)
            s += 1.0
        self._s = s                                 # k + ... (across) or u (within)
        self._p = xp.power(s, -self.beta)           # s^-β
        xp.multiply(x, self._p, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, y, dy = bottom[0].data, top[0].data, top[0].diff
        n = self.size
        if self.across:
            acc = self._window_sum(dy * y / self._s)
            coeff = 2.0 * self.alpha * self.beta / n
        else:
            acc = self._window_sum(dy * x * self._p / self._s)
            coeff = 2.0 * self.alpha * self.beta / (n * n)
        acc *= x
        acc *= -coeff
        dx = bottom[0].diff
        self.xp.multiply(dy, self._p, out=dx)
        dx += acc


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

    param_block = "spp_param"
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes):
        from ..spec.net import LayerParameter  # noqa: PLC0415 - spec imports the layers
        from .pool import Pooling  # noqa: PLC0415

        shape = tuple(bottom_shapes[0])
        if len(shape) != 4:
            raise self.error(f"input must have 4 axes (num, channels, height, width), "
                             f"got shape {shape}")
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


# -- routing: Crop, Slice, Reshape, Tile ----------------------------------------------------
@register("Crop")
class Crop(Layer):
    """Crop bottom 0 to the shape of bottom 1 (Caffe's ``CropLayer``).

    Axes before ``crop_param.axis`` (default 2) keep bottom 0's size; axes from it on take
    bottom 1's size, starting at ``offset`` (none: 0 everywhere; one value: for every cropped
    axis; else one per cropped axis). y = x[..., o_a : o_a + s_a, ...];
    ∂x = ∂y placed at the crop, 0 elsewhere. Bottom 1 only gives the shape (no gradient).
    """

    param_block = "crop_param"
    exact_bottoms = 2
    exact_tops = 1
    no_grad_bottoms = (1,)

    def setup(self, bottom_shapes):
        shape, ref = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        ndim = len(shape)
        start = _axis(self, self.p.axis, ndim, "axis")
        offsets = [int(o) for o in self.p.offset]
        if len(offsets) > 1 and start + len(offsets) != ndim:
            raise self.spec_error(f"{len(offsets)} offsets given for the {ndim - start} axes "
                                  f"from axis {start} on; give one value or one per cropped "
                                  "axis", field="offset")
        if len(ref) != ndim:
            raise self.error(f"bottom 1 has {len(ref)} axes, bottom 0 has {ndim}")
        out, index = [], []
        for i in range(ndim):
            if i < start:
                out.append(shape[i])
                index.append(slice(None))
                continue
            o = offsets[0] if len(offsets) == 1 else offsets[i - start] if offsets else 0
            if shape[i] - o < ref[i]:
                raise self.error(f"the crop for axis {i} is out of bounds: size {ref[i]} at "
                                 f"offset {o} in a dimension of {shape[i]}")
            out.append(ref[i])
            index.append(slice(o, o + ref[i]))
        self.index = tuple(index)
        return [tuple(out)]

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data[self.index]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dx = bottom[0].diff
            dx.fill(0)
            dx[self.index] = top[0].diff


@register("Slice")
class Slice(Layer):
    """Split one bottom along ``slice_param.axis`` (or legacy ``slice_dim``) into N tops.

    With ``slice_point`` (N − 1 strictly increasing positions) top i takes
    [point_{i−1}, point_i) (point_{−1} = 0, point_{N−1} = the axis size); without, the axis is
    split into N equal parts (it must divide evenly). Backward copies each top diff back.
    """

    param_block = "slice_param"
    exact_bottoms = 1
    min_tops = 1

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        p = self.p
        n_tops = max(len(self.lp.top), 1)
        if p.slice_dim is not None:
            if "axis" in p.model_fields_set:
                raise self.spec_error("either axis or slice_dim should be specified; not both",
                                      field="slice_dim")
            if not 0 <= p.slice_dim < len(shape):
                raise self.spec_error(f"slice_dim {p.slice_dim} out of range for a "
                                      f"{len(shape)}-D bottom", field="slice_dim")
            axis = p.slice_dim
        else:
            axis = _axis(self, p.axis, len(shape), "axis")
        dim = shape[axis]
        points = [int(v) for v in p.slice_point]
        if points:
            if len(points) != n_tops - 1:
                raise self.spec_error(f"{len(points)} slice_point value(s) for {n_tops} tops; "
                                      "give one fewer than the tops", field="slice_point")
            bounds = [0, *points, dim]
            if any(b <= a for a, b in zip(bounds, bounds[1:])):
                raise self.spec_error(f"slice points {points} must be strictly increasing "
                                      f"inside (0, {dim}) (axis {axis} size)",
                                      field="slice_point")
        else:
            if dim % n_tops:
                raise self.error(f"axis {axis} size {dim} cannot be split evenly into "
                                 f"{n_tops} tops; give slice_point")
            step = dim // n_tops
            bounds = [i * step for i in range(n_tops + 1)]
        lead = (slice(None),) * axis
        self.slices = [lead + (slice(lo, hi),) for lo, hi in zip(bounds, bounds[1:])]
        return [shape[:axis] + (hi - lo,) + shape[axis + 1:] for lo, hi in zip(bounds, bounds[1:])]

    def forward(self, bottom, top):
        x = bottom[0].data
        for t, sl in zip(top, self.slices):
            t.data[...] = x[sl]

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx = bottom[0].diff
        for t, sl in zip(top, self.slices):
            dx[sl] = t.diff


@register("Reshape")
class Reshape(Layer):
    """Change the shape without touching the data (Caffe's ``ReshapeLayer``).

    Axes [a, a + num_axes) of the bottom (a = ``axis``, negative counting from the end with
    −1 = after the last axis; ``num_axes`` −1 = to the end) are replaced by ``shape.dim``,
    where 0 copies the bottom's size at that position and one −1 is inferred from the count.
    The top data is a view of the bottom data (Caffe shares it); backward copies the diff.
    Cannot run in place.
    """

    param_block = "reshape_param"
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if self.lp.bottom and self.lp.top and self.lp.bottom[0] == self.lp.top[0]:
            raise self.spec_error("Reshape cannot run in place (give its top another name)",
                                  field="top")
        p = self.p
        dims = [int(d) for d in (p.shape.dim if p.shape is not None else [])]
        if any(d < -1 for d in dims):
            raise self.spec_error(f"shape dims must be >= -1, got {dims}", field="shape")
        if dims.count(-1) > 1:
            raise self.spec_error("new shape contains multiple -1 dims; at most a single -1 "
                                  "may be specified", field="shape")
        ndim = len(shape)
        start = p.axis if p.axis >= 0 else ndim + p.axis + 1
        if not 0 <= start <= ndim:
            raise self.spec_error(f"axis {p.axis} out of range for a {ndim}-D bottom",
                                  field="axis")
        if p.num_axes < -1:
            raise self.spec_error("num_axes must be >= 0, or -1 for all", field="num_axes")
        end = ndim if p.num_axes == -1 else start + p.num_axes
        if end > ndim:
            raise self.spec_error(f"axis + num_axes = {end} is out of range for a {ndim}-D "
                                  "bottom", field="num_axes")
        new = list(dims)
        for i, d in enumerate(dims):
            if d == 0:
                if start + i >= ndim:
                    raise self.spec_error("new shape contains a 0, but there is no "
                                          "corresponding bottom axis to copy", field="shape")
                new[i] = shape[start + i]
        count = math.prod(shape)
        if -1 in new:
            known = math.prod(shape[:start]) * math.prod(shape[end:]) * \
                math.prod(d for d in new if d != -1)
            if known == 0 or count % known:
                raise self.error(f"bottom count ({count}) must be divisible by the product "
                                 f"of the specified dimensions ({known})")
            new[new.index(-1)] = count // known
        out = shape[:start] + tuple(new) + shape[end:]
        if math.prod(out) != count:
            raise self.error(f"cannot reshape {shape} (count {count}) to {out} "
                             f"(count {math.prod(out)})")
        self.bottom_shape, self.top_shape = shape, out
        return [out]

    def forward(self, bottom, top):
        top[0].data = bottom[0].data.reshape(self.top_shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff.reshape(self.bottom_shape)


@register("Tile")
class Tile(Layer):
    """Repeat the bottom ``tiles`` times along ``axis`` (Caffe's ``TileLayer``).

    Top shape: shape[axis] · tiles. With outer = Π shape[:axis], inner = Π shape[axis:]:
    y.reshape(outer, tiles, inner)[:, t] = x.reshape(outer, inner) for every t (numpy.tile
    along ``axis``); ∂x = Σ_t ∂y.reshape(outer, tiles, inner)[:, t].
    """

    param_block = "tile_param"
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        axis = _axis(self, self.p.axis, len(shape), "axis")
        if self.p.tiles is None:
            raise self.spec_error("number of tiles must be specified", field="tiles")
        if self.p.tiles <= 0:
            raise self.spec_error(f"number of tiles must be positive, got {self.p.tiles}",
                                  field="tiles")
        self.tiles = self.p.tiles
        self.outer, self.inner = math.prod(shape[:axis]), math.prod(shape[axis:])
        self.bottom_shape = shape
        return [shape[:axis] + (shape[axis] * self.tiles,) + shape[axis + 1:]]

    def forward(self, bottom, top):
        y = top[0].data.reshape(self.outer, self.tiles, self.inner)
        y[...] = bottom[0].data.reshape(self.outer, 1, self.inner)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy = top[0].diff.reshape(self.outer, self.tiles, self.inner)
            dy.sum(axis=1, out=bottom[0].diff.reshape(self.outer, self.inner))


# -- reductions -----------------------------------------------------------------------------
@register("Reduction")
class Reduction(Layer):
    """Reduce all axes from ``axis`` on (Caffe's ``ReductionLayer``), times ``coeff``.

    Top shape: shape[:axis] (axis 0, the default: a scalar). With x viewed as (num, dim):
    SUM y = c·Σ x;  ASUM y = c·Σ |x|;  SUMSQ y = c·Σ x²;  MEAN y = c/dim·Σ x.
    ∂x = c·∂y (SUM), c·sign(x)·∂y (ASUM, sign(0) = 0), 2c·x·∂y (SUMSQ), c/dim·∂y (MEAN).
    """

    param_block = "reduction_param"
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        axis = _axis(self, self.p.axis, len(shape), "axis") if shape else 0
        self.op = self.p.operation
        self.num, self.dim = math.prod(shape[:axis]), math.prod(shape[axis:])
        self.coeff = float(self.p.coeff)
        if self.op == "MEAN":
            self.coeff /= self.dim
        return [shape[:axis]]

    def forward(self, bottom, top):
        xp = self.xp
        x = bottom[0].data.reshape(self.num, self.dim)
        if self.op == "ASUM":
            x = xp.abs(x)
        elif self.op == "SUMSQ":
            x = x * x
        y = top[0].data.reshape(self.num)
        x.sum(axis=1, out=y)
        y *= self.coeff

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        g = top[0].diff.reshape(self.num, 1) * self.coeff
        dx = bottom[0].diff.reshape(self.num, self.dim)
        if self.op == "ASUM":
            xp.multiply(xp.sign(bottom[0].data.reshape(self.num, self.dim)), g, out=dx)
        elif self.op == "SUMSQ":
            xp.multiply(bottom[0].data.reshape(self.num, self.dim), 2 * g, out=dx)
        else:
            dx[...] = g


@register("ArgMax")
class ArgMax(Layer):
    """Indices (and/or values) of the ``top_k`` largest entries (Caffe's ``ArgMaxLayer``).

    With ``axis``: along that axis; top shape = bottom shape with shape[axis] = top_k, holding
    the indices, or the values when ``out_max_val``. Without: over each item's flattened
    Π shape[1:] entries; top (N, 1, top_k) (padded with 1s to the bottom's axes, at least 3),
    or (N, 2, top_k) holding indices then values when ``out_max_val``. Order: descending value,
    ties by the larger index first (Caffe's ``std::greater`` on (value, index) pairs).
    Indices are written as floats. Forward only.
    """

    param_block = "argmax_param"
    exact_bottoms = 1
    exact_tops = 1
    has_backward = False

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        p = self.p
        self.k = p.top_k
        if self.k < 1:
            raise self.spec_error("top_k must not be less than 1", field="top_k")
        self.has_axis = p.axis is not None
        if self.has_axis:
            self.axis = _axis(self, p.axis, len(shape), "axis")
            if self.k > shape[self.axis]:
                raise self.spec_error(f"top_k ({self.k}) must be <= the size of axis "
                                      f"{self.axis} ({shape[self.axis]})", field="top_k")
            out = list(shape)
            out[self.axis] = self.k
        else:
            dim = math.prod(shape[1:])
            if self.k > dim:
                raise self.spec_error(f"top_k ({self.k}) must be <= the item size ({dim})",
                                      field="top_k")
            out = [1] * max(len(shape), 3)
            out[0], out[2] = shape[0], self.k
            if p.out_max_val:
                out[1] = 2
        self.shape = shape
        return [tuple(out)]

    def _top_k(self, a):
        """(indices, values) of the k largest along the last axis of ``a``, Caffe's order."""
        xp = self.xp
        order = xp.flip(xp.argsort(a, axis=-1, kind="stable"), axis=-1)[..., :self.k]
        return order, xp.take_along_axis(a, order, axis=-1)

    def forward(self, bottom, top):
        xp, x, y = self.xp, bottom[0].data, top[0].data
        if self.has_axis:
            idx, val = self._top_k(xp.moveaxis(x, self.axis, -1))
            out = val if self.p.out_max_val else idx
            y[...] = xp.moveaxis(out, -1, self.axis)
            return
        idx, val = self._top_k(x.reshape(x.shape[0], -1))
        y2 = y.reshape(x.shape[0], -1, self.k)
        y2[:, 0] = idx
        if self.p.out_max_val:
            y2[:, 1] = val


# -- index-driven: Filter, BatchReindex, Embed ----------------------------------------------
@register("Filter")
class Filter(Layer):
    """Keep the items whose selector is non-zero (Caffe's ``FilterLayer``).

    Bottoms x_1 … x_K and last the selector s (shape (N,) or (N, 1, …)); tops y_1 … y_K with
    y_i = x_i[{n : s[n] ≠ 0}] (original order). Every x_i must have N items. The top shapes
    are known only at forward: ``setup`` reports the full N (as Caffe's first reshape) and
    forward replaces each top's array with the selected items. Backward: ∂x_i = ∂y_i at the
    selected items, 0 elsewhere; the selector gets no gradient.
    """

    min_bottoms = 2

    def check_arity(self, n_bottoms, n_tops):
        super().check_arity(n_bottoms, n_tops)
        if n_tops != n_bottoms - 1:
            raise self.spec_error(f"needs one top per filtered bottom (bottoms minus the "
                                  f"selector): {n_bottoms} bottoms, {n_tops} tops", field="top")
        self.no_grad_bottoms = (n_bottoms - 1,)

    def setup(self, bottom_shapes):
        shapes = [tuple(s) for s in bottom_shapes]
        sel = shapes[-1]
        if not sel or any(d != 1 for d in sel[1:]):
            raise self.error(f"selector blob dimensions must be singletons (1), except the "
                             f"first; got {sel}")
        for i, s in enumerate(shapes[:-1]):
            if not s or s[0] != sel[0]:
                raise self.error(f"bottom {i} has shape {s}: each bottom must have the same "
                                 f"first dimension as the selector ({sel[0]})")
        self.no_grad_bottoms = (len(shapes) - 1,)
        self.index = None
        return shapes[:-1]

    def forward(self, bottom, top):
        xp = self.xp
        sel = bottom[-1].data.reshape(-1)
        self.index = xp.nonzero(sel)[0]
        for b, t in zip(bottom[:-1], top):
            if t is b:
                raise self.spec_error("Filter cannot run in place (give its tops other names)",
                                      field="top")
            t.data = xp.take(b.data, self.index, axis=0)

    def backward(self, top, propagate_down, bottom):
        for b, t, prop in zip(bottom[:-1], top, propagate_down):
            if prop:
                dx = b.diff
                dx.fill(0)
                dx[self.index] = t.diff


def _host_check_indices(layer: Layer, values, limit: int, what: str, integral: bool):
    """Raise unless every value v satisfies 0 <= v < limit (and is an integer, if asked)."""
    xp = layer.xp
    bad = (values < 0) | (values >= limit)
    if integral:
        bad |= values != xp.floor(values)
    if bool(bad.any()):
        host = numpy.asarray(values.get() if hasattr(values, "get") else values)
        bad_h = numpy.asarray(bad.get() if hasattr(bad, "get") else bad)
        first = host.reshape(-1)[numpy.flatnonzero(bad_h.reshape(-1))[:5]]
        kind = "integers in" if integral else "in"
        raise layer.error(f"{what} must be {kind} [0, {limit}); got {first.tolist()}")


@register("BatchReindex")
class BatchReindex(Layer):
    """Gather items of bottom 0 by the index vector bottom 1 (Caffe's ``BatchReindexLayer``).

    x (N, …), p (M,) float indices with 0 <= p[i] < N (truncated to integers):
    y[i] = x[int(p[i])], top (M, …). Backward: ∂x[n] = Σ_{i : int(p[i]) = n} ∂y[i]
    (0 for items never picked); the index bottom gets no gradient.
    """

    exact_bottoms = 2
    exact_tops = 1
    no_grad_bottoms = (1,)

    def setup(self, bottom_shapes):
        shape, perm = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        if len(perm) != 1:
            raise self.error(f"the index bottom must be 1-D, got shape {perm}")
        if not shape:
            raise self.error("bottom 0 must have an item axis")
        return [(perm[0],) + shape[1:]]

    def _index(self, bottom):
        p = bottom[1].data
        _host_check_indices(self, p, bottom[0].shape[0], "reindex indices", integral=False)
        return p.astype(numpy.int64)

    def forward(self, bottom, top):
        idx = self._index(bottom)
        top[0].data[...] = self.xp.take(bottom[0].data, idx, axis=0)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx = bottom[0].diff
        dx.fill(0)
        _scatter_add(self.xp, dx, bottom[1].data.astype(numpy.int64), top[0].diff)


@register("Embed")
class Embed(Layer):
    """A learned lookup table (Caffe's ``EmbedLayer``).

    Bottom: indices of any shape S (integer-valued floats in [0, ``input_dim``)); blobs:
    0 = weight (input_dim, num_output) from ``weight_filler``, 1 = bias (num_output,) from
    ``bias_filler`` when ``bias_term``. Top (S…, num_output): y[s] = W[x[s]] + b.
    Backward: ∂W[r] += Σ_{s : x[s] = r} ∂y[s]; ∂b += Σ_s ∂y[s]; no gradient to the indices.
    """

    param_block = "embed_param"
    exact_bottoms = 1
    exact_tops = 1
    no_grad_bottoms = (0,)

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        p = self.p
        if not p.num_output:
            raise self.spec_error("num_output must be positive", field="num_output")
        if not p.input_dim:
            raise self.spec_error("input_dim must be positive", field="input_dim")
        self.n_out, self.n_in = p.num_output, p.input_dim
        self.add_param((self.n_in, self.n_out), p.weight_filler, "weight")
        if p.bias_term:
            self.add_param((self.n_out,), p.bias_filler, "bias")
        self.M = math.prod(shape)
        return [shape + (self.n_out,)]

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(-1)
        _host_check_indices(self, x, self.n_in, "embedding indices", integral=True)
        y = top[0].data.reshape(self.M, self.n_out)
        y[...] = self.xp.take(self.blobs[0].data, x.astype(numpy.int64), axis=0)
        if self.p.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.M, self.n_out)
        idx = bottom[0].data.reshape(-1).astype(numpy.int64)
        _scatter_add(self.xp, self.blobs[0].diff, idx, dy)
        if self.p.bias_term:
            self.blobs[1].diff += dy.sum(axis=0)


# -- parameters as blobs: Parameter, Bias ---------------------------------------------------
@register("Parameter")
class Parameter(Layer):
    """A learned blob as a top (Caffe's ``ParameterLayer``): no bottoms, one top.

    Blob 0 of ``parameter_param.shape`` starts at 0 (Caffe runs no filler). Forward: y = blob;
    backward: ∂blob += ∂y.
    """

    param_block = "parameter_param"
    exact_bottoms = 0
    exact_tops = 1

    def setup(self, bottom_shapes):
        from ..spec.params import FillerParameter  # noqa: PLC0415

        dims = tuple(int(d) for d in (self.p.shape.dim if self.p.shape is not None else []))
        if any(d < 0 for d in dims):
            raise self.spec_error(f"shape dims must be non-negative, got {list(dims)}",
                                  field="shape")
        self.add_param(dims, FillerParameter(type="constant", value=0.0), "parameter")
        return [dims]

    def forward(self, bottom, top):
        top[0].data[...] = self.blobs[0].data

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff += top[0].diff


@register("Bias")
class Bias(Layer):
    """y = x + b, b broadcast along bottom axes [axis, axis + b.ndim) (Caffe's ``BiasLayer``).

    b is bottom 1 when given (its shape must equal bottom[0].shape[axis:axis + b.ndim]; it
    then receives a gradient), else learned blob 0 of shape bottom.shape[axis:axis + num_axes]
    (``num_axes`` −1: to the last axis; 0: a scalar) filled by ``filler`` (default constant 0).
    With x viewed as (outer, bias_dim, inner): ∂x = ∂y; ∂b = Σ_{outer, inner} ∂y
    (accumulated into the learned blob, written into bottom 1's diff). Works in place.
    """

    param_block = "bias_param"
    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1

    def setup(self, bottom_shapes):
        from ..spec.params import FillerParameter  # noqa: PLC0415

        shape = tuple(bottom_shapes[0])
        p = self.p
        axis = _axis(self, p.axis, len(shape), "axis") if shape else 0
        self.learned = len(bottom_shapes) == 1
        if self.learned:
            if p.num_axes < -1:
                raise self.spec_error("num_axes must be non-negative, or -1 to extend to the "
                                      "end of bottom[0]", field="num_axes")
            if p.num_axes >= 0 and len(shape) < axis + p.num_axes:
                raise self.error(f"bias blob's shape extends past bottom[0]'s shape {shape} "
                                 f"when applied from axis {axis}", field="num_axes")
            bias_shape = shape[axis:] if p.num_axes == -1 else shape[axis:axis + p.num_axes]
            self.add_param(bias_shape, p.filler or FillerParameter(type="constant", value=0.0),
                           "bias")
        else:
            bias_shape = tuple(bottom_shapes[1])
        self.axis = 0 if len(bias_shape) == 0 else axis    # scalar bias: Caffe uses axis 0
        if shape[self.axis:self.axis + len(bias_shape)] != tuple(bias_shape):
            raise self.error(f"bias shape {tuple(bias_shape)} does not match bottom[0] shape "
                             f"{shape} from axis {self.axis}")
        self.outer = math.prod(shape[:self.axis])
        self.bias_dim = math.prod(bias_shape)
        self.inner = math.prod(shape[self.axis + len(bias_shape):])
        return [shape]

    def _view(self, a):
        return a.reshape(self.outer, self.bias_dim, self.inner)

    def _bias(self, bottom):
        return self.blobs[0] if self.learned else bottom[1]

    def forward(self, bottom, top):
        b = self._bias(bottom).data.reshape(1, self.bias_dim, 1)
        self.xp.add(self._view(bottom[0].data), b, out=self._view(top[0].data))

    def backward(self, top, propagate_down, bottom):
        dy = self._view(top[0].diff)
        if self.learned or propagate_down[1]:
            db = dy.sum(axis=(0, 2)).reshape(self._bias(bottom).shape)
            if self.learned:
                self.blobs[0].diff += db
            else:
                bottom[1].diff[...] = db
        if propagate_down[0] and top[0] is not bottom[0]:
            bottom[0].diff[...] = top[0].diff
