"""Region-of-interest layers: py-faster-rcnn's ROIPooling (rbgirshick/caffe-fast-rcnn) and
R-FCN's position-sensitive PSROIPooling (daijifeng001/caffe-rfcn).

ROIPooling max-pools each region of interest of a feature map into a fixed grid of bins. The
region's corners are the fork's: ``round(coordinate · spatial_scale)`` (C's round, halves away
from zero), its size at least 1 × 1; bin (ph, pw) covers rows ``floor(ph · h/P)`` to
``ceil((ph + 1) · h/P)`` (end excluded) from the region's top, clipped to the map, with the
arithmetic in the net's dtype as the fork's ``Dtype``. An empty bin gives 0.
"""

from __future__ import annotations

import math

import numpy

from ..backend import to_numpy
from .base import Layer, legacy_dim, scatter_add
from .registry import register

#: elements of gathered window values one chunk of regions may hold in forward
GATHER_BUDGET = 1 << 23


def c_round(x: numpy.ndarray) -> numpy.ndarray:
    """C's round(): to the nearest integer, halves away from zero (not NumPy's to-even)."""
    t = numpy.trunc(x)
    frac = x - t                      # exact
    return t + numpy.where(numpy.abs(frac) >= 0.5, numpy.sign(x), 0)


def roi_bins(rois: numpy.ndarray, spatial_scale: float, pooled: tuple[int, int],
             size: tuple[int, int], dtype) -> tuple[numpy.ndarray, ...]:
    """The fork's bin boundaries of each region, clipped to the map:
    (batch index (R,), hstart, hend (R, P), wstart, wend (R, Q)), all int64."""
    dt = numpy.dtype(dtype).type
    r = rois.astype(dt, copy=False)
    scale = dt(spatial_scale)
    corners = c_round(r[:, 1:5] * scale).astype(numpy.int64)   # x1, y1, x2, y2
    out = [numpy.trunc(r[:, 0]).astype(numpy.int64)]
    for axis, (start, end) in enumerate(((corners[:, 1], corners[:, 3]),
                                         (corners[:, 0], corners[:, 2]))):
        n_bins, limit = pooled[axis], size[axis]
        extent = numpy.maximum(end - start + 1, 1)
        bin_size = extent.astype(dt) / dt(n_bins)
        k = numpy.arange(n_bins, dtype=dt)
        lo = numpy.floor(k[None, :] * bin_size[:, None]).astype(numpy.int64)
        hi = numpy.ceil((k[None, :] + dt(1)) * bin_size[:, None]).astype(numpy.int64)
        out.append(numpy.clip(lo + start[:, None], 0, limit))
        out.append(numpy.clip(hi + start[:, None], 0, limit))
    return tuple(out)


@register("ROIPooling")
class ROIPooling(Layer):
    """py-faster-rcnn's ROIPooling (``roi_pooling_param``: pooled_h, pooled_w, spatial_scale).

    Bottoms: features (N, C, H, W) and rois (R, 5), each row [batch index, x1, y1, x2, y2] in
    image coordinates (``spatial_scale`` maps them to the feature map). Top: (R, C, pooled_h,
    pooled_w), the maximum of each bin (the first one in row-major order on ties, as the fork's
    scan with ``>``), 0 for an empty bin. One top, as in the fork (it keeps the argmax inside).
    Backward: each top cell's gradient goes to its argmax, summed over regions and bins; none
    to the rois.
    """

    writes_bottom_diffs = True

    param_block = "roi_pooling_param"
    exact_bottoms = 2
    exact_tops = 1
    no_grad_bottoms = (1,)

    def setup(self, bottom_shapes):
        p = self.p
        for field in ("pooled_h", "pooled_w"):
            if getattr(p, field) <= 0:
                raise self.spec_error(f"{field} must be > 0", field=f"roi_pooling_param.{field}")
        feats, rois = (tuple(s) for s in bottom_shapes)
        if len(feats) != 4:
            raise self.error(f"the features bottom must be 4-D (N, C, H, W), got {feats}")
        num = legacy_dim(rois, 0)
        if math.prod(rois) != 5 * num:
            raise self.error(f"the rois bottom must hold 5 values per region "
                             f"[batch index, x1, y1, x2, y2], got shape {rois}")
        self.pooled = (int(p.pooled_h), int(p.pooled_w))
        self.argmax = None
        return [(num, feats[1]) + self.pooled]

    def forward(self, bottom, top):
        xp = self.xp
        x = bottom[0].data
        N, C, H, W = x.shape
        P, Q = self.pooled
        rois = to_numpy(bottom[1].data).reshape(-1, 5)
        R = rois.shape[0]
        b, hs, he, ws, we = roi_bins(rois, self.p.spatial_scale, self.pooled, (H, W), self.dtype)
        bad = (b < 0) | (b >= N)
        if bad.any():
            i = int(numpy.flatnonzero(bad)[0])
            raise self.error(f"region {i} has batch index {rois[i, 0]:g}, outside the "
                             f"features' batch of {N}")
        kh = max(int((he - hs).max(initial=0)), 1)
        kw = max(int((we - ws).max(initial=0)), 1)
        hidx = hs[:, :, None] + numpy.arange(kh)            # (R, P, kh)
        widx = ws[:, :, None] + numpy.arange(kw)            # (R, Q, kw)
        hval, wval = hidx < he[:, :, None], widx < we[:, :, None]
        hidx, widx = numpy.where(hval, hidx, 0), numpy.where(wval, widx, 0)
        # window cells in the fork's scan order (rows, then columns), per bin (r, P, Q, kh·kw)
        valid = (hval[:, :, None, :, None] & wval[:, None, :, None, :]).reshape(R, P, Q, kh * kw)
        flat = (hidx[:, :, None, :, None] * W + widx[:, None, :, None, :]).reshape(R, P, Q, -1)
        y = top[0].data
        if self.argmax is None or self.argmax.shape != y.shape:
            self.argmax = xp.empty(y.shape, dtype=xp.int64)
        chunk = max(1, GATHER_BUDGET // max(C * P * Q * kh * kw, 1))
        planes = x.reshape(N, C, H * W)
        lowest = xp.asarray(-numpy.inf, dtype=self.dtype)
        channels = xp.arange(C, dtype=xp.int64)
        channel_base = channels[None, :, None, None] * (H * W)
        for r0 in range(0, R, chunk):
            r1 = min(R, r0 + chunk)
            f = xp.asarray(flat[r0:r1])
            v = xp.asarray(valid[r0:r1])[:, None]                   # (r, 1, P, Q, K)
            bb = xp.asarray(b[r0:r1])
            vals = planes[bb[:, None, None], channels[None, :, None],
                          f.reshape(r1 - r0, 1, -1)]                 # (r, C, P·Q·K)
            vals = vals.reshape(r1 - r0, C, P, Q, kh * kw)
            vals = xp.where(v, vals, lowest)
            k = vals.argmax(axis=-1)
            best = xp.take_along_axis(vals, k[..., None], -1)[..., 0]
            empty = ~v.any(axis=-1)                                 # (r, 1, P, Q)
            y[r0:r1] = xp.where(empty, 0, best)
            pos = xp.take_along_axis(xp.broadcast_to(f[:, None], vals.shape), k[..., None],
                                     -1)[..., 0]
            index = (bb[:, None, None, None] * C) * (H * W) + channel_base + pos
            self.argmax[r0:r1] = xp.where(empty, -1, index)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        dx = bottom[0].diff
        dx[...] = 0
        hit = self.argmax >= 0
        scatter_add(xp, dx.reshape(-1), xp.where(hit, self.argmax, 0).reshape(-1),
                    xp.where(hit, top[0].diff, 0).reshape(-1))


def psroi_bins(rois: numpy.ndarray, spatial_scale: float, group: int,
               size: tuple[int, int], dtype) -> tuple[numpy.ndarray, ...]:
    """R-FCN's bin boundaries of each region, clipped to the map: (batch index (R,), hstart,
    hend (R, G), wstart, wend (R, G)), all int64. The region spans round(x1)·scale to
    (round(x2) + 1)·scale (C's round), at least 0.1 wide; bin k spans floor(k·w/G + start) to
    ceil((k + 1)·w/G + start), in the net's dtype as the fork's ``Dtype``."""
    dt = numpy.dtype(dtype).type
    r = rois.astype(dt, copy=False)
    scale = dt(spatial_scale)
    k = numpy.arange(group, dtype=dt)
    out = [numpy.trunc(r[:, 0]).astype(numpy.int64)]
    for lo_col, hi_col, limit in ((2, 4, size[0]), (1, 3, size[1])):
        start = c_round(r[:, lo_col]).astype(dt) * scale
        end = (c_round(r[:, hi_col]) + dt(1)).astype(dt) * scale
        extent = numpy.maximum(end - start, dt(0.1))
        bin_size = extent / dt(group)
        lo = numpy.floor(k[None, :] * bin_size[:, None] + start[:, None]).astype(numpy.int64)
        hi = numpy.ceil((k[None, :] + dt(1)) * bin_size[:, None] + start[:, None]).astype(numpy.int64)
        out.append(numpy.clip(lo, 0, limit))
        out.append(numpy.clip(hi, 0, limit))
    return tuple(out)


@register("PSROIPooling")
class PSROIPooling(Layer):
    """R-FCN's position-sensitive RoI pooling (``psroi_pooling_param``: spatial_scale,
    output_dim, group_size G; daijifeng001/caffe-rfcn).

    Bottoms: score maps (N, output_dim·G², H, W) and rois (R, 5), rows [batch index, x1, y1, x2,
    y2] in image coordinates. Top (R, output_dim, G, G): bin (i, j) of channel k averages
    channel (k·G + i)·G + j of the region's image over the bin (``psroi_bins``); an empty bin
    gives 0. Backward: each top cell's gradient divided by its bin's area to every cell of the
    bin; none to the rois.

    Computed with summed-area tables (in float64): each bin sum is four lookups, and the
    backward scatters ±∂y/area to the four corners and sums them back (the table's adjoint).
    """

    writes_bottom_diffs = True

    param_block = "psroi_pooling_param"
    exact_bottoms = 2
    exact_tops = 1
    no_grad_bottoms = (1,)

    def setup(self, bottom_shapes):
        p = self.p
        for field in ("output_dim", "group_size"):
            if getattr(p, field) <= 0:
                raise self.spec_error(f"{field} must be > 0",
                                      field=f"psroi_pooling_param.{field}")
        feats, rois = (tuple(s) for s in bottom_shapes)
        if len(feats) != 4:
            raise self.error(f"the score maps bottom must be 4-D (N, C, H, W), got {feats}")
        G, K = int(p.group_size), int(p.output_dim)
        if feats[1] != K * G * G:
            raise self.spec_error(f"the score maps have {feats[1]} channels; output_dim {K} × "
                                  f"group_size² {G * G} = {K * G * G} needed",
                                  field="psroi_pooling_param.output_dim")
        num = legacy_dim(rois, 0)
        if math.prod(rois) != 5 * num:
            raise self.error(f"the rois bottom must hold 5 values per region "
                             f"[batch index, x1, y1, x2, y2], got shape {rois}")
        self.group, self.dim = G, K
        return [(num, K, G, G)]

    def _corners(self, rois, N, H, W):
        """Flat indices into the (N, C, H + 1, W + 1) table of each top cell's four corners
        (R, K, G, G) — (hs, ws), (hs, we), (he, ws), (he, we) — and 1/area (0 when empty)."""
        xp, G, K = self.xp, self.group, self.dim
        b, hs, he, ws, we = psroi_bins(rois, self.p.spatial_scale, G, (H, W), self.dtype)
        bad = (b < 0) | (b >= N)
        if bad.any():
            i = int(numpy.flatnonzero(bad)[0])
            raise self.error(f"region {i} has batch index {rois[i, 0]:g}, outside the "
                             f"score maps' batch of {N}")
        area = (he - hs)[:, :, None] * (we - ws)[:, None, :]               # (R, G, G)
        inv = numpy.where(area > 0, 1.0 / numpy.maximum(area, 1), 0.0)
        c = (numpy.arange(K)[:, None, None] * G + numpy.arange(G)[:, None]) * G \
            + numpy.arange(G)                                              # (K, G, G)
        plane = (b[:, None, None, None] * (K * G * G) + c[None]) * ((H + 1) * (W + 1))
        rows = [hs[:, None, :, None], he[:, None, :, None]]
        cols = [ws[:, None, None, :], we[:, None, None, :]]
        corners = [xp.asarray(plane + r * (W + 1) + q) for r in rows for q in cols]
        return corners, xp.asarray(inv[:, None].astype(numpy.float64))

    def forward(self, bottom, top):
        xp = self.xp
        x = bottom[0].data
        N, C, H, W = x.shape
        rois = to_numpy(bottom[1].data).reshape(-1, 5)
        self.corners, self.inv_area = self._corners(rois, N, H, W)
        table = xp.zeros((N, C, H + 1, W + 1), dtype=numpy.float64)
        table[:, :, 1:, 1:] = x.astype(numpy.float64).cumsum(axis=2).cumsum(axis=3)
        t = table.reshape(-1)
        a, b_, c, d = (t.take(i) for i in self.corners)
        top[0].data[...] = ((d - b_ - c + a) * self.inv_area).astype(self.dtype)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        N, C, H, W = bottom[0].shape
        g = top[0].diff.astype(numpy.float64) * self.inv_area
        table = xp.zeros((N, C, H + 1, W + 1), dtype=numpy.float64)
        flat = table.reshape(-1)
        for index, sign in zip(self.corners, (1, -1, -1, 1)):
            scatter_add(xp, flat, index.reshape(-1), (sign * g).reshape(-1))
        # ∂S[h', w'] / ∂x[h, w] = 1 for h < h', w < w': sums over the corners beyond each cell
        dx = table[:, :, ::-1, ::-1].cumsum(axis=2).cumsum(axis=3)[:, :, ::-1, ::-1]
        bottom[0].diff[...] = dx[:, :, 1:, 1:].astype(self.dtype)


@register("BoxAnnotatorOHEM")
class BoxAnnotatorOHEM(Layer):
    """R-FCN's online hard example mining (daijifeng001/caffe-rfcn ``box_annotator_ohem_layer``):
    keep, per image, the ``roi_per_img`` RoIs of largest loss.

    Bottoms: rois (R, 5) [batch index, x1, y1, x2, y2], the per-RoI loss (R values), the labels
    (R values) and the box-regression loss weights (R, K). The RoIs are ranked by descending
    loss (stable among equal losses) and taken while their image has places left. Tops: the
    labels of the kept RoIs, ``ignore_label`` for the others, (R, 1, 1, 1); the loss weights of
    the kept RoIs, 0 for the others, (R, K, 1, 1). Forward only.
    """

    param_block = "box_annotator_ohem_param"
    exact_bottoms = 4
    exact_tops = 2
    has_backward = False

    def setup(self, bottom_shapes):
        rois, loss, labels, weights = (tuple(s) for s in bottom_shapes)
        r = legacy_dim(rois, 0)
        if legacy_dim(rois, 1) != 5 or math.prod(rois[2:]) != 1:
            raise self.error(f"bottom 0 (rois) {rois} must be (R, 5): [batch index, x1, y1, x2, y2]"
                             " per RoI")
        for i, (name, s) in enumerate((("loss", loss), ("labels", labels)), 1):
            if legacy_dim(s, 0) != r or math.prod(s) != r:
                raise self.error(f"bottom {i} ({name}) {s} must hold one value per RoI ({r})")
        if legacy_dim(weights, 0) != r or math.prod(weights[2:]) != 1:
            raise self.error(f"bottom 3 (box loss weights) {weights} must be (R, K) with R = {r}")
        self.channels = legacy_dim(weights, 1)
        return [(r, 1, 1, 1), (r, self.channels, 1, 1)]

    def forward(self, bottom, top):
        xp = self.xp
        loss = bottom[1].data.reshape(-1)
        image = bottom[0].data.reshape(-1, 5)[:, 0].astype(xp.int64)
        order = xp.argsort(-loss, kind="stable")
        ranked = image[order]
        images = int(ranked.max()) + 1 if ranked.size else 1
        # each RoI's place among the RoIs of its image, in loss order
        onehot = ranked[:, None] == xp.arange(images)[None, :]
        place = xp.cumsum(onehot, axis=0)[xp.arange(ranked.size), ranked] - 1
        keep = xp.zeros(loss.shape, dtype=bool)
        keep[order] = place < self.p.roi_per_img
        labels = bottom[2].data.reshape(-1)
        top[0].data[...] = xp.where(keep, labels, self.p.ignore_label).reshape(top[0].shape)
        weights = bottom[3].data.reshape(keep.size, -1)
        top[1].data[...] = xp.where(keep[:, None], weights, 0).reshape(top[1].shape)
