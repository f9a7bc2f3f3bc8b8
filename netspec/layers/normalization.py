"""Normalization and affine layers: BatchNorm, Scale, Bias, LRN, MVN; from the forks, SSD's
Normalize.
"""

from __future__ import annotations

import math

import numpy

from ..spec.params import FillerParameter
from .base import (Layer, checked_axis, in_place, legacy_dim, proto_float, sample_chunks,
                   samples_per_chunk, thread_scratch)
from .registry import register


def _operand_shape(layer: Layer, shape: tuple[int, ...], axis: int, num_axes: int,
                   what: str) -> tuple[int, ...]:
    """The shape of Scale's or Bias's learned blob: ``num_axes`` axes of bottom[0] from
    ``axis`` on (-1: to the end), as Caffe's ScaleLayer and BiasLayer take it."""
    field = f"{layer.param_block}.num_axes"
    if num_axes < -1:
        raise layer.spec_error("num_axes must be non-negative, or -1 to extend to the end of "
                               "bottom[0]", field=field)
    if num_axes >= 0 and len(shape) < axis + num_axes:
        raise layer.error(f"{what} blob's shape extends past bottom[0]'s shape {shape} when "
                          f"applied from axis {axis}", field=field)
    return shape[axis:] if num_axes == -1 else shape[axis:axis + num_axes]


def _into(op, a, b, out):
    """``op(a, b)`` written into ``out`` when the result has ``out``'s dtype (the same values,
    no new array), else a new array as ``op(a, b)`` gives it."""
    if out.dtype == numpy.result_type(a.dtype, b.dtype):
        return op(a, b, out=out)
    return op(a, b)


def _diff_view(layer, blob, shape):
    """``blob.diff`` as ``shape`` to write a result into: a view, or a new array when the diff
    is not contiguous (``_store_diff`` then copies it back)."""
    d = blob.diff
    return d.reshape(shape) if d.flags.c_contiguous else layer.xp.empty(shape, dtype=d.dtype)


def _store_diff(blob, view, result) -> None:
    """Make ``blob.diff`` hold ``result`` (computed into ``view`` from ``_diff_view``, or not)."""
    if result is not view:
        view[...] = result
    if not blob.diff.flags.c_contiguous:
        blob.diff[...] = view.reshape(blob.diff.shape)


@register("BatchNorm")
class BatchNorm(Layer):
    """Caffe's BatchNorm: y = (x − mean) / sqrt(var + eps) per channel, with no scale or shift.

    Bottom (N, C, ...) (also (N, C) or (N,)); channels are axis 1 and statistics run over every
    other axis, m = N·Π shape[2:] values per channel. Blobs (statistics, never learned:
    lr_mult = decay_mult = 0, and a non-zero ``lr_mult`` in ``param`` is an error as in Caffe):
    0 = mean sum (C,), 1 = variance sum (C,), 2 = scale factor (1,).

    * batch statistics (``use_global_stats`` false; default in TRAIN): mean and *biased*
      variance of this batch normalise x; then, with f = ``moving_average_fraction``,
      mean_sum ← f·mean_sum + mean, var_sum ← f·var_sum + m/(m−1)·var, factor ← f·factor + 1.
    * global statistics (``use_global_stats`` true; default in TEST): mean = mean_sum / factor,
      var = var_sum / factor (factor 0 gives 0 for both, as Caffe).

    Backward: global: dx = dy / sqrt(var + eps); batch:
    dx = (dy − mean(dy) − mean(dy·x̂)·x̂) / sqrt(var + eps), means over the non-channel axes.
    Works in place (x̂ and sqrt(var + eps) are cached by forward).
    """

    fills_tops = True
    writes_bottom_diffs = True

    allows_in_place = True
    param_block = "batch_norm_param"
    folded_into = None       # the Convolution computing this layer's output (conv_fold)
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if not shape:
            raise self.error("needs a bottom with at least one axis")
        p = self.p
        self.use_global_stats = (self.phase == "TEST" if p.use_global_stats is None
                                 else p.use_global_stats)
        self.maf = p.moving_average_fraction
        self.eps = p.eps
        self.channels = shape[1] if len(shape) > 1 else 1
        for i, spec in enumerate(self.lp.param[:3]):
            if spec.lr_mult != 0:
                raise self.spec_error(
                    "cannot configure batch normalization statistics as layer parameters: "
                    f"param[{i}].lr_mult must be 0 (got {spec.lr_mult:g})", field="param")
        zero = FillerParameter(type="constant", value=0)
        for blob_shape, suffix in (((self.channels,), "mean"), ((self.channels,), "variance"),
                                   ((1,), "scale_factor")):
            param = self.add_param(blob_shape, zero, suffix)
            param.lr_mult = 0
            param.decay_mult = 0
        return [shape]

    def _view(self, a):
        """``a`` as (N, C, S): channels on axis 1, the remaining axes flattened into S."""
        return a.reshape(a.shape[0], self.channels, -1)

    def forward(self, bottom, top):
        if self.folded_into:     # computed by the Convolution before it (conv_fold)
            return
        xp = self.xp
        shape = bottom[0].shape
        x = self._view(bottom[0].data)
        # x − mean and then x̂ are written into the previous forward's x̂ (dead once its
        # backward ran): no new blob-sized arrays per call where the dtypes let it be exact
        buf = getattr(self, "x_norm", None)
        if buf is None or buf.shape != x.shape or buf.dtype != x.dtype:
            buf = xp.empty(x.shape, dtype=x.dtype)
        if self.use_global_stats:
            factor = self.blobs[2].data
            nonzero = factor != 0
            scale = xp.where(nonzero, 1 / xp.where(nonzero, factor, 1), 0).astype(self.dtype)
            mean = self.blobs[0].data * scale
            var = self.blobs[1].data * scale
            xc = _into(xp.subtract, x, mean[:, None], buf)
        else:
            mean = x.mean(axis=(0, 2))
            xc = _into(xp.subtract, x, mean[:, None], buf)
            var = (xc * xc).mean(axis=(0, 2))
            m = x.size // self.channels
            correction = m / (m - 1) if m > 1 else 1.0
            mean_sum, var_sum, factor = (b.data for b in self.blobs)
            factor *= self.maf
            factor += 1
            mean_sum *= self.maf
            mean_sum += mean
            var_sum *= self.maf
            var_sum += correction * var
        self.std = xp.sqrt(var + self.eps)[:, None]
        self.x_norm = _into(xp.divide, xc, self.std, xc)
        top[0].data[...] = self.x_norm.reshape(shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        dy = self._view(top[0].diff)
        dx = _diff_view(self, bottom[0], dy.shape)      # dy itself in place
        if self.use_global_stats:
            _store_diff(bottom[0], dx, _into(xp.divide, dy, self.std, dx))
            return
        y = self.x_norm
        m_dy = dy.mean(axis=(0, 2), keepdims=True)
        m_dyy = (dy * y).mean(axis=(0, 2), keepdims=True) * y
        # ((dy − mean(dy)) − mean(dy·x̂)·x̂) / std, written into the bottom diff
        d = _into(xp.subtract, dy, m_dy, dx)
        d = _into(xp.subtract, d, m_dyy, d)
        _store_diff(bottom[0], dx, _into(xp.divide, d, self.std, d))


@register("Scale")
class Scale(Layer):
    """y = x ⊙ s (+ b), s broadcast along bottom axes [axis, axis + s.ndim).

    The scale s is bottom 1 when given (its shape must equal bottom[0].shape[axis:axis+s.ndim];
    it then receives a gradient), else a learned blob 0 of shape
    bottom.shape[axis:axis+num_axes] (``num_axes`` −1: to the last axis; 0: a scalar),
    filled by ``filler`` (default constant 1). ``bias_term`` adds a learned b of s's shape
    (filled by ``bias_filler``, default constant 0), the last blob. Works in place.

    Gradients: ds = Σ dy·x and db = Σ dy over the axes outside [axis, axis + s.ndim);
    dx = dy ⊙ s.
    """

    fills_tops = True
    writes_bottom_diffs = True

    allows_in_place = True
    param_block = "scale_param"
    folded_into = None       # the Convolution computing this layer's output (conv_fold)
    #: in place right after a BatchNorm that wrote this bottom: its x̂, equal to the bottom
    #: before this layer overwrites it, stands in for the layer's own copy (memory_plan)
    input_from = None
    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        p = self.p
        axis = checked_axis(self, p.axis, len(shape), "scale_param.axis")
        self.learned_scale = len(bottom_shapes) == 1
        if self.learned_scale:
            scale_shape = _operand_shape(self, shape, axis, p.num_axes, "scale")
            filler = p.filler or FillerParameter(type="constant", value=1)
            self.add_param(scale_shape, filler, "scale")
        else:
            scale_shape = tuple(bottom_shapes[1])
        # a scalar scale applies the same for any axis: Caffe then uses axis 0
        self.axis = 0 if len(scale_shape) == 0 else axis
        if shape[self.axis:self.axis + len(scale_shape)] != tuple(scale_shape):
            raise self.error(f"scale shape {tuple(scale_shape)} does not match bottom[0] shape "
                             f"{shape} from axis {self.axis}")
        self.scale_shape = tuple(scale_shape)
        self.outer = math.prod(shape[:self.axis])
        self.scale_dim = math.prod(scale_shape)
        self.inner = math.prod(shape[self.axis + len(scale_shape):])
        self.bias_index = None
        if p.bias_term:
            self.bias_index = self.next_param_index()
            self.add_param(scale_shape, p.bias_filler or FillerParameter(type="constant", value=0),
                           "bias")
        return [shape]

    def _view(self, a):
        """``a`` (bottom-shaped) as (outer, scale_dim, inner)."""
        return a.reshape(self.outer, self.scale_dim, self.inner)

    def _scale(self, bottom):
        s = self.blobs[0] if self.learned_scale else bottom[1]
        return s, s.data.reshape(1, self.scale_dim, 1)

    def forward(self, bottom, top):
        if self.folded_into:     # computed by the Convolution before it (conv_fold)
            return
        x = self._view(bottom[0].data)
        in_place = bottom[0] is top[0]
        # in place the bottom data is overwritten: keep a copy for the scale gradient, or
        # read the one the BatchNorm before keeps (``input_from``, memory_plan)
        self.x_cache = None
        if in_place:
            saved = getattr(self.input_from, "x_norm", None)
            if saved is not None and saved.dtype == x.dtype and saved.size == x.size:
                self.x_cache = saved.reshape(x.shape)
            else:
                self.x_cache = x.copy()
        _, s = self._scale(bottom)
        out = top[0].data
        view = self._view(out) if out.flags.c_contiguous else None     # in place: x itself
        y = _into(self.xp.multiply, x, s, view) if view is not None else x * s
        if self.bias_index is not None:
            y += self.blobs[self.bias_index].data.reshape(1, self.scale_dim, 1)
        if y is not view:
            out[...] = y.reshape(out.shape)

    def backward(self, top, propagate_down, bottom):
        dy = self._view(top[0].diff)
        if self.bias_index is not None:
            b = self.blobs[self.bias_index]
            b.diff += dy.sum(axis=(0, 2)).reshape(b.shape)
        s_blob, s = self._scale(bottom)
        if self.learned_scale or propagate_down[1]:
            x = self.x_cache if self.x_cache is not None else self._view(bottom[0].data)
            ds = (dy * x).sum(axis=(0, 2)).reshape(self.scale_shape)
            if self.learned_scale:
                s_blob.diff += ds
            else:
                s_blob.diff[...] = ds
        if propagate_down[0]:
            # after ds and db: in place, dy and bottom[0].diff are one array
            dx = _diff_view(self, bottom[0], dy.shape)
            _store_diff(bottom[0], dx, _into(self.xp.multiply, dy, s, dx))


@register("Bias")
class Bias(Layer):
    """y = x + b, b broadcast along bottom axes [axis, axis + b.ndim) (Caffe's ``BiasLayer``).

    b is bottom 1 when given (its shape must equal bottom[0].shape[axis:axis + b.ndim]; it
    then receives a gradient), else learned blob 0 of shape bottom.shape[axis:axis + num_axes]
    (``num_axes`` −1: to the last axis; 0: a scalar) filled by ``filler`` (default constant 0).
    With x viewed as (outer, bias_dim, inner): ∂x = ∂y; ∂b = Σ_{outer, inner} ∂y
    (accumulated into the learned blob, written into bottom 1's diff). Works in place.
    """

    writes_bottom_diffs = True

    allows_in_place = True
    param_block = "bias_param"
    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        p = self.p
        axis = checked_axis(self, p.axis, len(shape), "axis") if shape else 0
        self.learned = len(bottom_shapes) == 1
        if self.learned:
            bias_shape = _operand_shape(self, shape, axis, p.num_axes, "bias")
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

    Window sums are loops over the n offsets (twice, separably, for WITHIN_CHANNEL) over a
    zero-bordered copy of a chunk of samples (at most ``chunk_bytes``; the whole batch on a
    GPU) in the thread's scratch (``thread_scratch``, shared by the net's LRN layers; its
    border is zeroed per chunk).
    Cannot run in place (backward reads x and y).
    """

    fills_tops = True
    writes_bottom_diffs = True

    param_block = "lrn_param"
    #: bytes of the padded copy of one chunk of samples (at least one sample per chunk)
    chunk_bytes = 1 << 20
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes):
        shape = self.nchw(bottom_shapes[0])
        p = self.p
        if p.local_size % 2 != 1:
            raise self.spec_error(f"LRN only supports odd values for local_size, got "
                                  f"{p.local_size}", field="local_size")
        self.size, self.pre_pad = p.local_size, (p.local_size - 1) // 2
        self.alpha, self.beta, self.k = float(p.alpha), float(p.beta), float(p.k)
        self.across = p.norm_region == "ACROSS_CHANNELS"
        N, C, H, W = shape
        n = self.size
        self._pad_plane = (C + n - 1, H, W) if self.across else (C, H + n - 1, W + n - 1)
        per_sample = math.prod(self._pad_plane) * numpy.dtype(self.dtype).itemsize
        # on a GPU the whole batch at once: chunks would only add kernel launches
        self._chunk = N if self.backend.is_gpu else samples_per_chunk(N, per_sample,
                                                                     self.chunk_bytes)
        self._shape = shape
        return [shape]

    def _padded(self, a):
        """``a`` (a chunk of samples) in the middle of a scratch buffer, zero around it."""
        pp = self.pre_pad
        _, C, H, W = self._shape
        shape = (a.shape[0],) + self._pad_plane
        buf = thread_scratch(self.backend, "lrn_pad", shape)
        if self.across:
            buf[:, :pp] = 0
            buf[:, pp + C:] = 0
            buf[:, pp:pp + C] = a
            return buf
        buf[:, :, :pp] = 0
        buf[:, :, pp + H:] = 0
        buf[:, :, pp:pp + H, :pp] = 0
        buf[:, :, pp:pp + H, pp + W:] = 0
        buf[:, :, pp:pp + H, pp:pp + W] = a
        return buf

    def _window_sum(self, a):
        """Zero-padded window sum of ``a`` over channels (across) or over h×w (within)."""
        n = self.size
        N, C, H, W = self._shape
        out = self.xp.empty(self._shape, dtype=self.dtype)
        for n0, count in sample_chunks(N, self._chunk):
            buf = self._padded(a[n0:n0 + count])
            part = out[n0:n0 + count]
            if self.across:
                part[...] = buf[:, 0:C]
                for o in range(1, n):
                    part += buf[:, o:o + C]
                continue
            rows = buf[:, :, 0:H].copy()
            for o in range(1, n):
                rows += buf[:, :, o:o + H]
            part[...] = rows[..., 0:W]
            for o in range(1, n):
                part += rows[..., o:o + W]
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


@register("MVN")
class MVN(Layer):
    """Mean-variance normalisation over each image (``across_channels``) or each channel.

    Bottom (N, C, H, W) (at most 4 axes; missing ones count as 1, Caffe's legacy accessors).
    Top: (N, C, H, W) as Caffe's Reshape makes it (a 2-D bottom (N, D) gives (N, D, 1, 1);
    in place the bottom's shape is kept). With groups g = one image (or one channel of one image)
    of D values: y = (x − mean_g) / (std_g + eps) where std_g = sqrt(mean_g((x − mean_g)²))
    (``normalize_variance``, default), else y = x − mean_g. eps = ``mvn_param.eps`` (1e-9).

    Backward (Caffe's formula, from y): dx = (dy − mean_g(dy) − y·mean_g(dy·y)) / (std_g + eps);
    mean only: dx = dy − mean_g(dy). (The exact derivative scales the y·mean(dy·y) term by
    (std + eps)/std; with eps = 1e-9 the two agree to that relative order.)
    """

    writes_bottom_diffs = True

    allows_in_place = True
    param_block = "mvn_param"
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if len(shape) > 4:
            raise self.error(f"takes blobs of at most 4 axes (N, C, H, W), got {shape}")
        legacy = tuple(legacy_dim(shape, i) for i in range(4))
        groups = legacy[0] if self.p.across_channels else legacy[0] * legacy[1]
        self.view = (groups, math.prod(legacy) // max(groups, 1))
        self.normalize_variance = bool(self.p.normalize_variance)
        self.eps = proto_float(self.p.eps)
        self.std = None
        return [shape if in_place(self.lp) else legacy]

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.view)
        y = x - x.mean(axis=1, keepdims=True)
        if self.normalize_variance:
            std = self.xp.sqrt((y * y).mean(axis=1, keepdims=True))
            std += self.eps
            y /= std
            self.std = std
        top[0].data[...] = y.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self.view)
        dx = dy - dy.mean(axis=1, keepdims=True)
        if self.normalize_variance:
            y = top[0].data.reshape(self.view)
            dx -= y * (dy * y).mean(axis=1, keepdims=True)
            dx /= self.std
        bottom[0].diff[...] = dx.reshape(bottom[0].shape)


@register("Normalize")
class Normalize(Layer):
    """SSD's ``NormalizeLayer`` (weiliu89/caffe): L2 normalisation with a learned scale.

    Bottom (N, C, ...) viewed as (N, C, S), S = Π shape[2:]. The norm is taken over each image
    (``across_spatial``, default) or over the channels at each position:
    r = sqrt(Σ x² + eps) (eps = ``norm_param.eps``, 1e-10, added before the root), x̂ = x / r,
    y = x̂ ⊙ s, with s the learned blob 0: a scalar (shape (), ``channel_shared``, default) or
    one per channel (C,), filled by ``scale_filler`` (default constant 1).

    Backward (per group of the norm, g = dy ⊙ s): ds = Σ dy·x̂ over all but the scale's axes;
    dx = (g − x̂ · Σ(x̂·g)) / r.
    """

    writes_bottom_diffs = True

    param_block = "norm_param"
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if len(shape) < 2:
            raise self.error(f"takes a bottom of at least 2 axes (N, C, ...), got {shape}")
        p = self.p
        N, C = shape[0], shape[1]
        self.view = (N, C, math.prod(shape[2:]))
        self.sum_axes = (1, 2) if p.across_spatial else (1,)
        self.eps = proto_float(p.eps)
        self.channel_shared = bool(p.channel_shared)
        filler = p.scale_filler or FillerParameter(type="constant", value=1.0)
        self.add_param(() if self.channel_shared else (C,), filler, "scale")
        self.xhat = self.norm = None
        return [shape]

    def _scale(self):
        s = self.blobs[0].data
        return s.reshape(1, 1, 1) if self.channel_shared else s.reshape(1, -1, 1)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.view)
        norm = (x * x).sum(axis=self.sum_axes, keepdims=True)
        norm += self.eps
        self.xp.sqrt(norm, out=norm)
        self.norm = norm
        self.xhat = x / norm
        top[0].data[...] = (self.xhat * self._scale()).reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.view)
        s = self.blobs[0]
        prod = dy * self.xhat
        s.diff += prod.sum() if self.channel_shared else prod.sum(axis=(0, 2))
        if propagate_down[0]:
            g = dy * self._scale()
            dx = g - self.xhat * (self.xhat * g).sum(axis=self.sum_axes, keepdims=True)
            dx /= self.norm
            bottom[0].diff[...] = dx.reshape(bottom[0].shape)
