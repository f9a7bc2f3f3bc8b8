"""Layers that change a blob's shape or extent: Flatten, Reshape, Crop, Tile; from the forks,
SSD's Permute, the YOLO forks' nearest Upsample and SegNet's un-pooling one (MaxUnpool),
ShuffleNet's ShuffleChannel, PSPNet's bilinear Interp.
"""

from __future__ import annotations

import math

import numpy

from .base import Layer, checked_axis
from .registry import register


@register("Flatten")
class Flatten(Layer):
    """Merge axes ``flatten_param.axis`` … ``end_axis`` (inclusive) into one.

    Top shape: shape[:a] + (Π shape[a:e+1],) + shape[e+1:]. Forward: the top data is a reshaped
    view of the bottom data (Caffe shares it); backward copies the top diff, reshaped, into the
    bottom diff.
    """

    writes_bottom_diffs = True

    param_block = "flatten_param"
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        start = checked_axis(self, self.p.axis, len(shape), "axis")
        end = checked_axis(self, self.p.end_axis, len(shape), "end_axis")
        if end < start:
            raise self.spec_error(f"end_axis ({self.p.end_axis}) comes before axis "
                                  f"({self.p.axis}) for a {len(shape)}-D bottom", field="end_axis")
        self.bottom_shape = shape
        self.top_shape = shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:]
        return [self.top_shape]

    def forward(self, bottom, top):
        if top[0] is bottom[0]:
            raise self.spec_error("Flatten cannot run in place (give its top another name)",
                                  field="top")
        top[0].data = bottom[0].data.reshape(self.top_shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff.reshape(self.bottom_shape)


@register("Reshape")
class Reshape(Layer):
    """Change the shape without touching the data (Caffe's ``ReshapeLayer``).

    Axes [a, a + num_axes) of the bottom (a = ``axis``, negative counting from the end with
    −1 = after the last axis; ``num_axes`` −1 = to the end) are replaced by ``shape.dim``,
    where 0 copies the bottom's size at that position and one −1 is inferred from the count.
    The top data is a view of the bottom data (Caffe shares it); backward copies the diff.
    Cannot run in place.
    """

    writes_bottom_diffs = True

    param_block = "reshape_param"
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
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


# -- routing: Crop, Slice, Reshape, Tile ----------------------------------------------------
@register("Crop")
class Crop(Layer):
    """Crop bottom 0 to the shape of bottom 1 (Caffe's ``CropLayer``).

    Axes before ``crop_param.axis`` (default 2) keep bottom 0's size; axes from it on take
    bottom 1's size, starting at ``offset`` (none: 0 everywhere; one value: for every cropped
    axis; else one per cropped axis). y = x[..., o_a : o_a + s_a, ...];
    ∂x = ∂y placed at the crop, 0 elsewhere. Bottom 1 only gives the shape (no gradient).
    """

    writes_bottom_diffs = True

    param_block = "crop_param"
    exact_bottoms = 2
    exact_tops = 1
    no_grad_bottoms = (1,)

    def setup(self, bottom_shapes):
        shape, ref = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        ndim = len(shape)
        start = checked_axis(self, self.p.axis, ndim, "axis")
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


@register("Tile")
class Tile(Layer):
    """Repeat the bottom ``tiles`` times along ``axis`` (Caffe's ``TileLayer``).

    Top shape: shape[axis] · tiles. With outer = Π shape[:axis], inner = Π shape[axis:]:
    y.reshape(outer, tiles, inner)[:, t] = x.reshape(outer, inner) for every t (numpy.tile
    along ``axis``); ∂x = Σ_t ∂y.reshape(outer, tiles, inner)[:, t].
    """

    writes_bottom_diffs = True

    param_block = "tile_param"
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        axis = checked_axis(self, self.p.axis, len(shape), "axis")
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


@register("Permute")
class Permute(Layer):
    """SSD's ``PermuteLayer`` (weiliu89/caffe): reorder the axes, y = x.transpose(order).

    ``permute_param.order`` lists axes of the bottom, each at most once; the axes it leaves out
    follow in increasing order (SSD's rule; no order at all is the identity). Backward:
    ∂x = ∂y transposed by the inverse order.
    """

    writes_bottom_diffs = True

    param_block = "permute_param"
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        order: list[int] = []
        for a in self.p.order:
            if a >= len(shape):
                raise self.spec_error(f"order {a} is not an axis of the {len(shape)}-D bottom "
                                      f"{shape}", field="permute_param.order")
            if a in order:
                raise self.spec_error(f"order lists axis {a} twice", field="permute_param.order")
            order.append(a)
        order += [a for a in range(len(shape)) if a not in order]
        self.order = tuple(order)
        self.inverse = tuple(order.index(a) for a in range(len(shape)))
        return [tuple(shape[a] for a in self.order)]

    def forward(self, bottom, top):
        top[0].data[...] = self.xp.transpose(bottom[0].data, self.order)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = self.xp.transpose(top[0].diff, self.inverse)


#: SegNet's Upsample (max-unpooling with a mask) reads these; the YOLO forks' reads ``scale`` only
SEGNET_UPSAMPLE_FIELDS = ("scale_h", "scale_w", "pad_out_h", "pad_out_w", "upsample_h",
                          "upsample_w")


@register("Upsample")
class Upsample(Layer):
    """The YOLO forks' nearest-neighbour ``UpsampleLayer`` (eric612/MobileNet-YOLO and the
    YOLOv3 ports): one bottom (N, C, H, W) -> (N, C, s·H, s·W), s = ``upsample_param.scale``,
    y[n, c, h, w] = x[n, c, h // s, w // s]. Backward: ∂x = the sum of ∂y over each s×s block.

    A layer of this type with two bottoms is SegNet's un-pooling ``Upsample``
    (alexgkendall/caffe-segnet): ``MaxUnpool`` below. The YOLO layer with SegNet's fields
    (``upsample_h``, ``scale_h``, ``pad_out_h`` …) is an error naming SegNet's layer.
    """

    writes_bottom_diffs = True

    param_block = "upsample_param"
    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1

    def __new__(cls, lp, *args, **kwargs):
        if cls is Upsample and len(lp.bottom) == 2:
            cls = MaxUnpool
        return super().__new__(cls)

    def check_arity(self, n_bottoms, n_tops):
        segnet = [f for f in SEGNET_UPSAMPLE_FIELDS if f in self.p.model_fields_set]
        if segnet and n_bottoms == 1:
            raise self.spec_error(
                f"upsample_param.{segnet[0]} is a field of SegNet's un-pooling Upsample "
                "(alexgkendall/caffe-segnet), which takes two bottoms: the pooled blob and its "
                "max-pooling mask. With one bottom this is the YOLO forks' nearest-neighbour "
                "Upsample, which reads upsample_param.scale only", field="upsample_param")
        super().check_arity(n_bottoms, n_tops)

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        s = self.p.scale
        if s <= 0:
            raise self.spec_error(f"scale must be positive, got {s}", field="upsample_param.scale")
        if len(shape) != 4:
            raise self.error(f"upsamples 4-D NCHW blobs only, got shape {shape}")
        N, C, H, W = shape
        self.s = s
        self.view = (N, C, H, s, W, s)
        return [(N, C, H * s, W * s)]

    def forward(self, bottom, top):
        x = bottom[0].data
        N, C, H, s, W, _ = self.view
        top[0].data.reshape(self.view)[...] = x.reshape(N, C, H, 1, W, 1)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            top[0].diff.reshape(self.view).sum(axis=(3, 5), out=bottom[0].diff)


class MaxUnpool(Upsample):
    """SegNet's ``Upsample`` (alexgkendall/caffe-segnet ``UpsampleLayer``): max-unpooling.

    Bottoms: x (N, C, H, W) and its max-pooling mask (same shape: the flat index h·W_out + w of
    each value's position in the output plane, as Pooling's second top writes it). Top
    (N, C, H_out, W_out), zero except y[n, c].flat[mask[n, c, i]] = x[n, c].flat[i]; where two
    values name one position (overlapping pooling windows) the later in row-major order wins,
    as in the fork's loop (on a GPU, as in the fork's CUDA kernel, which one is unspecified). Backward: ∂x[n, c].flat[i] = ∂y[n, c].flat[mask[n, c, i]] (the fork's
    gather: each of such duplicates receives the position's whole diff); none to the mask.

    Output size (the fork's rules): ``upsample_h`` × ``upsample_w`` (both, each > 1); else
    H·scale_h − pad_out_h by W·scale_w − pad_out_w, with ``scale_h``/``scale_w`` (both, each > 1,
    ``scale`` not set) or ``scale`` for both (here default 2, the fork's default); ``pad_out_*``
    only with a scale of 2. A mask value outside the output plane is an error naming the layer.
    """

    min_bottoms = 2
    max_bottoms = 2
    no_grad_bottoms = (1,)

    def check_arity(self, n_bottoms, n_tops):
        Layer.check_arity(self, n_bottoms, n_tops)

    def _output_size(self, H, W) -> tuple[int, int]:
        p = self.p
        given = p.model_fields_set
        if "upsample_h" in given or "upsample_w" in given:
            if not ("upsample_h" in given and "upsample_w" in given):
                raise self.spec_error("set upsample_h and upsample_w together",
                                      field="upsample_param.upsample_h")
            for f in ("upsample_h", "upsample_w"):
                if getattr(p, f) <= 1:
                    raise self.spec_error(f"{f} must be greater than 1, got {getattr(p, f)}",
                                          field=f"upsample_param.{f}")
            return p.upsample_h, p.upsample_w
        if "scale_h" in given or "scale_w" in given:
            if not ("scale_h" in given and "scale_w" in given) or "scale" in given:
                raise self.spec_error(
                    "give the output size as upsample_h and upsample_w, or the factors as "
                    "scale alone or as scale_h and scale_w together (not with scale)",
                    field="upsample_param.scale_h")
            sh, sw = p.scale_h, p.scale_w
        else:
            sh = sw = p.scale if "scale" in given else 2
        for f, v in (("scale_h", sh), ("scale_w", sw)):
            if v <= 1:
                name = f if f in given else "scale"
                raise self.spec_error(f"{name} must be greater than 1, got {v}",
                                      field=f"upsample_param.{name}")
        for f, v in (("pad_out_h", sh), ("pad_out_w", sw)):
            if getattr(p, f) and v != 2:
                raise self.spec_error(f"{f} needs a scale of 2 (got {v}): otherwise the output "
                                      "size is ill-defined", field=f"upsample_param.{f}")
        return H * sh - int(p.pad_out_h), W * sw - int(p.pad_out_w)

    def setup(self, bottom_shapes):
        N, C, H, W = self.nchw(bottom_shapes[0])
        mask = tuple(bottom_shapes[1])
        if mask != (N, C, H, W):
            raise self.error(f"the mask (bottom 1, shape {mask}) must have the shape of bottom 0 "
                             f"{(N, C, H, W)}", field="bottom")
        Ho, Wo = self._output_size(H, W)
        self.planes = (N * C, H * W)
        self.plane_out = Ho * Wo
        # flat index of each plane's first output value
        self._plane_base = self.backend.asarray(
            numpy.arange(N * C, dtype=numpy.int64).reshape(-1, 1) * self.plane_out,
            dtype=numpy.int64)
        return [(N, C, Ho, Wo)]

    def _indices(self, mask):
        """Flat top indices of every bottom value; an error when the mask leaves the plane."""
        xp = self.xp
        idx = mask.reshape(self.planes).astype(xp.int64)
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= self.plane_out:
            bad = hi if hi >= self.plane_out else lo
            raise self.error(f"mask index {bad} is outside the {self.plane_out} positions of the "
                             "output plane: the upsample size must match the input of the "
                             "pooling layer that made the mask", field="upsample_param")
        return self._plane_base + idx

    def forward(self, bottom, top):
        self.idx = self._indices(bottom[1].data)
        y = top[0].data.reshape(-1)
        y[...] = 0
        y[self.idx.reshape(-1)] = bottom[0].data.reshape(-1)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff.reshape(-1).take(
                self.idx.reshape(-1)).reshape(bottom[0].shape)


@register("ShuffleChannel")
class ShuffleChannel(Layer):
    """ShuffleNet's channel shuffle (farmingyard/ShuffleNet): with g = ``group`` and the C
    channels seen as a g × C/g matrix, transpose it: top channel j·g + i = bottom channel
    i·(C/g) + j. Backward: the inverse shuffle of the diff (the same with C/g groups).
    """

    writes_bottom_diffs = True

    param_block = "shuffle_channel_param"
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        g = self.p.group
        if len(shape) < 2:
            raise self.error(f"takes a bottom of at least 2 axes (N, C, ...), got {shape}")
        if g <= 0 or shape[1] % g:
            raise self.spec_error(f"the channels ({shape[1]}) must be a multiple of group ({g})",
                                  field="shuffle_channel_param.group")
        N, C = shape[0], shape[1]
        self.groups = (N, g, C // g, math.prod(shape[2:]))
        return [shape]

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.groups)
        N, g, k, S = self.groups
        top[0].data.reshape(N, k, g, S)[...] = x.transpose(0, 2, 1, 3)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            N, g, k, S = self.groups
            dy = top[0].diff.reshape(N, k, g, S)
            bottom[0].diff.reshape(self.groups)[...] = dy.transpose(0, 2, 1, 3)


def interp_matrix(n_in: int, n_out: int):
    """The (n_out, n_in) matrix of Caffe's 1-D bilinear resampling with aligned corners, as the
    forks' ``caffe_cpu_interp2`` weighs it: ratio r = (n_in − 1)/(n_out − 1) in float32 (0 when
    n_out is 1), source i = ⌊r·o⌋, weight r·o − i on i + 1 (on i itself at the last row)."""
    r = numpy.float32((n_in - 1) / (n_out - 1)) if n_out > 1 else numpy.float32(0)
    pos = r * numpy.arange(n_out, dtype=numpy.float32)
    lo = pos.astype(numpy.int64)
    frac = (pos - lo.astype(numpy.float32)).astype(numpy.float64)
    hi = numpy.where(lo < n_in - 1, lo + 1, lo)
    m = numpy.zeros((n_out, n_in))
    rows = numpy.arange(n_out)
    numpy.add.at(m, (rows, lo), 1.0 - frac)
    numpy.add.at(m, (rows, hi), frac)
    return m


@register("Interp")
class Interp(Layer):
    """PSPNet's (hszhao/PSPNet; DeepLab v2's) ``InterpLayer``: bilinear resizing of (N, C, H, W)
    with aligned corners (y[0] = x[0], y[-1] = x[-1], Caffe's ``caffe_cpu_interp2``).

    The input is first cropped by ``pad_beg``/``pad_end`` (≤ 0) on both spatial axes to
    H_eff = H + pad_beg + pad_end. The output size: ``shrink_factor`` s alone (H_eff − 1)/s + 1;
    ``zoom_factor`` z alone H_eff + (H_eff − 1)(z − 1); ``height`` and ``width`` as given; both
    factors: shrink, then zoom; no field and a second bottom: that bottom's (H, W).
    Forward: y = A_h · x_crop · A_wᵀ with the interpolation matrices A; backward: the transposed
    scatter ∂x_crop = A_hᵀ · ∂y · A_w, zero on the cropped-off border.
    """

    writes_bottom_diffs = True

    param_block = "interp_param"
    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1

    def setup(self, bottom_shapes):
        p = self.p
        given = p.model_fields_set
        if len(bottom_shapes[0]) != 4:
            raise self.error(f"resizes 4-D NCHW blobs only, got shape {tuple(bottom_shapes[0])}")
        N, C, H, W = bottom_shapes[0]
        if p.pad_beg > 0 or p.pad_end > 0:
            raise self.spec_error("only non-positive padding (cropping) is supported, got "
                                  f"pad_beg {p.pad_beg}, pad_end {p.pad_end}",
                                  field="interp_param")
        He, We = H + p.pad_beg + p.pad_end, W + p.pad_beg + p.pad_end
        if He <= 0 or We <= 0:
            raise self.spec_error(f"pad_beg/pad_end crop the {H}x{W} input to nothing",
                                  field="interp_param")
        zoom = "zoom_factor" in given
        shrink = "shrink_factor" in given
        hw = "height" in given and "width" in given
        if zoom and (p.zoom_factor or 0) < 1:
            raise self.spec_error(f"zoom_factor must be at least 1, got {p.zoom_factor}",
                                  field="interp_param.zoom_factor")
        if shrink and (p.shrink_factor or 0) < 1:
            raise self.spec_error(f"shrink_factor must be at least 1, got {p.shrink_factor}",
                                  field="interp_param.shrink_factor")
        if len(bottom_shapes) == 2 and (zoom or shrink or hw):
            raise self.spec_error("a second bottom gives the output size: zoom_factor, "
                                  "shrink_factor, height and width must then be left out",
                                  field="interp_param")
        if len(bottom_shapes) == 2:
            if len(bottom_shapes[1]) != 4:
                raise self.error(f"the second bottom must be 4-D, got {tuple(bottom_shapes[1])}")
            Ho, Wo = bottom_shapes[1][2], bottom_shapes[1][3]
        elif shrink or zoom:
            Ho, Wo = He, We
            if shrink:
                Ho, Wo = (Ho - 1) // p.shrink_factor + 1, (Wo - 1) // p.shrink_factor + 1
            if zoom:
                z = p.zoom_factor
                Ho, Wo = Ho + (Ho - 1) * (z - 1), Wo + (Wo - 1) * (z - 1)
        elif hw:
            Ho, Wo = p.height, p.width
        else:
            raise self.spec_error("give the output size by zoom_factor and/or shrink_factor, by "
                                  "height and width, or by a second bottom",
                                  field="interp_param")
        if Ho <= 0 or Wo <= 0:
            raise self.spec_error(f"the output size {Ho}x{Wo} must be positive",
                                  field="interp_param")
        self.crop = (-p.pad_beg, -p.pad_beg + He, -p.pad_beg, -p.pad_beg + We)
        xp = self.xp
        self.Ah = xp.asarray(interp_matrix(He, Ho), dtype=self.dtype)
        self.Aw = xp.asarray(interp_matrix(We, Wo), dtype=self.dtype)
        self.AwT = xp.ascontiguousarray(self.Aw.T)
        return [(N, C, Ho, Wo)]

    def forward(self, bottom, top):
        h0, h1, w0, w1 = self.crop
        x = bottom[0].data[:, :, h0:h1, w0:w1]
        top[0].data[...] = self.xp.matmul(self.xp.matmul(self.Ah, x), self.AwT)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        h0, h1, w0, w1 = self.crop
        dx = bottom[0].diff
        if (h0, w0) != (0, 0) or h1 != dx.shape[2] or w1 != dx.shape[3]:
            dx[...] = 0
        dx[:, :, h0:h1, w0:w1] = self.xp.matmul(self.xp.matmul(self.Ah.T, top[0].diff), self.Aw)
