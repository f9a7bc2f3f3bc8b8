"""Layers that route or combine blobs: Split, Flatten, Concat, Eltwise (Caffe semantics)."""

from __future__ import annotations

import math

from .base import Layer, canonical_axis
from .registry import register


def _axis(layer: Layer, axis: int, ndim: int, field: str) -> int:
    try:
        return canonical_axis(axis, ndim)
    except ValueError as e:
        raise layer.spec_error(str(e), field=field) from None


@register("Split")
class Split(Layer):
    """One bottom to N ≥ 1 tops of the same shape (fan-out).

    Forward aliases: ``top[i].data is bottom[0].data``, except for i in ``copy_tops`` (filled by
    the graph when a consumer of top i runs in place, which would otherwise overwrite the shared
    array): those get their own copy. Backward: ∂bottom = Σ_i ∂top_i.
    """

    exact_bottoms = 1
    min_tops = 1

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.copy_tops: set[int] = set()
        self._copies: dict[int, object] = {}   # the layer's own buffers for copy_tops

    def setup(self, bottom_shapes):
        n_tops = max(len(self.lp.top), 1)
        return [tuple(bottom_shapes[0])] * n_tops

    def forward(self, bottom, top):
        x = bottom[0].data
        for i, t in enumerate(top):
            if i not in self.copy_tops:
                t.data = x
                continue
            buf = self._copies.get(i)
            if buf is None or buf.shape != x.shape:
                buf = self._copies[i] = self.xp.empty_like(x)
            buf[...] = x
            t.data = buf

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx = bottom[0].diff
        if len(top) == 1:
            dx[...] = top[0].diff
            return
        self.xp.add(top[0].diff, top[1].diff, out=dx)
        for t in top[2:]:
            dx += t.diff


@register("Flatten")
class Flatten(Layer):
    """Merge axes ``flatten_param.axis`` … ``end_axis`` (inclusive) into one.

    Top shape: shape[:a] + (Π shape[a:e+1],) + shape[e+1:]. Forward: the top data is a reshaped
    view of the bottom data (Caffe shares it); backward copies the top diff, reshaped, into the
    bottom diff.
    """

    param_block = "flatten_param"
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        start = _axis(self, self.p.axis, len(shape), "axis")
        end = _axis(self, self.p.end_axis, len(shape), "end_axis")
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


@register("Concat")
class Concat(Layer):
    """Join N ≥ 1 bottoms along ``concat_param.axis`` (or the legacy ``concat_dim``; not both).

    All bottoms must agree on every other axis. Backward slices the top diff back.
    """

    param_block = "concat_param"
    min_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes):
        shapes = [tuple(s) for s in bottom_shapes]
        ndim = len(shapes[0])
        if self.p.concat_dim is not None:
            if "axis" in self.p.model_fields_set:
                raise self.spec_error("give either axis or the legacy concat_dim, not both",
                                      field="concat_dim")
            if not 0 <= self.p.concat_dim < ndim:
                raise self.spec_error(f"concat_dim {self.p.concat_dim} out of range for a "
                                      f"{ndim}-D bottom", field="concat_dim")
            self.axis = self.p.concat_dim
        else:
            self.axis = _axis(self, self.p.axis, ndim, "axis")
        a = self.axis
        for i, s in enumerate(shapes[1:], 1):
            if len(s) != ndim or s[:a] != shapes[0][:a] or s[a + 1:] != shapes[0][a + 1:]:
                raise self.error(f"bottom {i} has shape {s}, but bottom 0 has {shapes[0]}: "
                                 f"all axes except the concat axis {a} must match")
        bounds = [0]
        for s in shapes:
            bounds.append(bounds[-1] + s[a])
        lead = (slice(None),) * a
        self.slices = [lead + (slice(lo, hi),) for lo, hi in zip(bounds, bounds[1:])]
        return [shapes[0][:a] + (bounds[-1],) + shapes[0][a + 1:]]

    def forward(self, bottom, top):
        y = top[0].data
        for b, sl in zip(bottom, self.slices):
            y[sl] = b.data

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        for b, sl, prop in zip(bottom, self.slices, propagate_down):
            if prop:
                b.diff[...] = dy[sl]


@register("Eltwise")
class Eltwise(Layer):
    """Element-wise combination of N ≥ 2 same-shape bottoms (``eltwise_param.operation``).

    * SUM: y = Σ c_i·x_i, c = ``coeff`` (one per bottom, default all 1); ∂x_i = c_i·∂y.
    * PROD: y = Π x_i; ∂x_i = ∂y · Π_{j≠i} x_j with ``stable_prod_grad`` (default), else
      ∂y · y / x_i (Caffe's faster, zero-unsafe form).
    * MAX: y = max_i x_i; ∂x_i = ∂y where bottom i was the arg-max. Ties as in Caffe's loop:
      between bottoms 0 and 1 the later (1) wins, from bottom 2 on the earlier keeps it.
    """

    param_block = "eltwise_param"
    min_bottoms = 2
    exact_tops = 1

    def setup(self, bottom_shapes):
        shapes = [tuple(s) for s in bottom_shapes]
        for i, s in enumerate(shapes[1:], 1):
            if s != shapes[0]:
                raise self.error(f"bottom {i} has shape {s}, but bottom 0 has {shapes[0]}: "
                                 "Eltwise needs equal shapes")
        p = self.p
        self.op = p.operation
        if p.coeff and self.op != "SUM":
            raise self.spec_error("coeff is only allowed with operation SUM", field="coeff")
        if p.coeff and len(p.coeff) != len(shapes):
            raise self.spec_error(f"coeff has {len(p.coeff)} entries for {len(shapes)} bottoms; "
                                  "give one per bottom or none", field="coeff")
        self.coeff = [float(c) for c in p.coeff] or [1.0] * len(shapes)
        self.max_idx = None
        return [shapes[0]]

    def forward(self, bottom, top):
        xp, y = self.xp, top[0].data
        xs = [b.data for b in bottom]
        if self.op == "SUM":
            xp.multiply(xs[0], self.coeff[0], out=y)
            for x, c in zip(xs[1:], self.coeff[1:]):
                if c == 1.0:
                    y += x
                else:
                    y += c * x
        elif self.op == "PROD":
            xp.multiply(xs[0], xs[1], out=y)
            for x in xs[2:]:
                y *= x
        else:  # MAX, Caffe's tie order
            if self.max_idx is None or self.max_idx.shape != y.shape:
                self.max_idx = xp.empty(y.shape, dtype=xp.int32)
            first = xs[0] > xs[1]
            xp.copyto(y, xs[0], where=first)       # (a no-op when y is bottom 0: in place)
            xp.copyto(y, xs[1], where=xp.logical_not(first))
            self.max_idx.fill(1)
            xp.copyto(self.max_idx, 0, where=first)
            for i, x in enumerate(xs[2:], 2):
                better = x > y
                xp.copyto(y, x, where=better)
                xp.copyto(self.max_idx, i, where=better)

    def backward(self, top, propagate_down, bottom):
        xp, y, dy = self.xp, top[0].data, top[0].diff
        for i, (b, prop) in enumerate(zip(bottom, propagate_down)):
            if not prop:
                continue
            dx = b.diff
            if self.op == "SUM":
                xp.multiply(dy, self.coeff[i], out=dx)
            elif self.op == "PROD":
                if self.p.stable_prod_grad:
                    others = [o.data for j, o in enumerate(bottom) if j != i]
                    dx[...] = others[0]
                    for x in others[1:]:
                        dx *= x
                else:
                    xp.divide(y, b.data, out=dx)
                dx *= dy
            else:  # MAX
                xp.multiply(dy, self.max_idx == i, out=dx)
