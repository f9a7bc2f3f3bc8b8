"""Layers that route blobs: Split, Concat, Slice, Eltwise, Silence, Filter, BatchReindex; from the
forks, SENet's Axpy.
"""

from __future__ import annotations

import numpy

from .base import Layer, check_indices, checked_axis, scatter_add
from .registry import register


@register("Split")
class Split(Layer):
    """One bottom to N ≥ 1 tops of the same shape (fan-out).

    Forward aliases: ``top[i].data is bottom[0].data``, except for i in ``copy_tops`` (filled by
    the graph when a consumer of top i runs in place, which would otherwise overwrite the shared
    array): those get their own copy. Backward: ∂bottom = Σ_i ∂top_i.
    """

    writes_bottom_diffs = True

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


@register("Concat")
class Concat(Layer):
    """Join N ≥ 1 bottoms along ``concat_param.axis`` (or the legacy ``concat_dim``; not both).

    All bottoms must agree on every other axis. Backward slices the top diff back.
    """

    fills_tops = True
    writes_bottom_diffs = True

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
            self.axis = checked_axis(self, self.p.axis, ndim, "axis")
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

    fills_tops = True
    writes_bottom_diffs = True

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


@register("Slice")
class Slice(Layer):
    """Split one bottom along ``slice_param.axis`` (or legacy ``slice_dim``) into N tops.

    With ``slice_point`` (N − 1 strictly increasing positions) top i takes
    [point_{i−1}, point_i) (point_{−1} = 0, point_{N−1} = the axis size); without, the axis is
    split into N equal parts (it must divide evenly). Backward copies each top diff back.
    """

    writes_bottom_diffs = True

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
            axis = checked_axis(self, p.axis, len(shape), "axis")
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


@register("Silence")
class Silence(Layer):
    """Consumes any number of bottoms (at least one) and produces no tops.

    Keeps otherwise-unused blobs from being net outputs. Backward writes zero gradients.
    """

    writes_bottom_diffs = True

    min_bottoms = 1
    exact_tops = 0

    def setup(self, bottom_shapes):
        return []

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for b, p in zip(bottom, propagate_down):
            if p:
                b.diff[...] = 0


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

    writes_bottom_diffs = True

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


@register("BatchReindex")
class BatchReindex(Layer):
    """Gather items of bottom 0 by the index vector bottom 1 (Caffe's ``BatchReindexLayer``).

    x (N, …), p (M,) float indices with 0 <= p[i] < N (truncated to integers):
    y[i] = x[int(p[i])], top (M, …). Backward: ∂x[n] = Σ_{i : int(p[i]) = n} ∂y[i]
    (0 for items never picked); the index bottom gets no gradient.
    """

    writes_bottom_diffs = True

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
        check_indices(self, p, bottom[0].shape[0], "reindex indices", integral=False)
        return p.astype(numpy.int64)

    def forward(self, bottom, top):
        idx = self._index(bottom)
        top[0].data[...] = self.xp.take(bottom[0].data, idx, axis=0)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx = bottom[0].diff
        dx.fill(0)
        scatter_add(self.xp, dx, bottom[1].data.astype(numpy.int64), top[0].diff)


@register("Axpy")
class Axpy(Layer):
    """SENet's ``AxpyLayer`` (hujie-frank/SENet; also in the MobileNet forks): top = a·x + y.

    Bottoms: a (N, C, 1, 1) or (N, C) — one factor per image and channel —, x and y of one
    shape (N, C, ...). No parameter block. Backward: ∂a[n, c] = Σ over the rest of ∂top·x,
    ∂x = a·∂top, ∂y = ∂top.
    """

    writes_bottom_diffs = True

    exact_bottoms = 3
    exact_tops = 1

    def setup(self, bottom_shapes):
        a, x, y = (tuple(s) for s in bottom_shapes)
        if x != y:
            raise self.error(f"x (bottom 1) and y (bottom 2) must have one shape, got {x} and {y}")
        if len(x) < 2 or len(a) < 2 or a[:2] != x[:2] or any(d != 1 for d in a[2:]):
            raise self.error(f"a (bottom 0) must be (N, C, 1, 1) for x of shape (N, C, ...); "
                             f"got a {a}, x {x}")
        self.a_view = x[:2] + (1,) * (len(x) - 2)
        self.a_shape = a
        self.sum_axes = tuple(range(2, len(x)))
        return [x]

    def forward(self, bottom, top):
        a = bottom[0].data.reshape(self.a_view)
        t = top[0].data
        self.xp.multiply(bottom[1].data, a, out=t)
        t += bottom[2].data

    def backward(self, top, propagate_down, bottom):
        dt = top[0].diff
        if propagate_down[0]:
            bottom[0].diff[...] = (dt * bottom[1].data).sum(axis=self.sum_axes).reshape(
                self.a_shape)
        if propagate_down[1]:
            self.xp.multiply(dt, bottom[0].data.reshape(self.a_view), out=bottom[1].diff)
        if propagate_down[2]:
            bottom[2].diff[...] = dt
