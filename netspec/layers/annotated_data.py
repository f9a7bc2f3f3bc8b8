"""SSD's AnnotatedData layer (weiliu89/caffe): images with their ground-truth boxes."""

from __future__ import annotations

import numpy as np

from ..data.annotated import open_annotated
from ..errors import DataError
from .data import Data, _color
from .registry import register

F32 = np.float32


@register("AnnotatedData")
class AnnotatedData(Data):
    """SSD's ``AnnotatedDataLayer``: batches of images and the boxes in them.

    Source (``data_param.source``, ``backend``): an LMDB or LevelDB of SSD's AnnotatedDatum
    records, or a ``.npz`` with ``data`` (N, C, H, W) and ``annotation`` (M, 8) rows [record,
    label, instance, xmin, ymin, xmax, ymax, difficult] (``netspec/data/annotated.py``). Tops:
    data (batch, C, H, W) through ``transform_param`` as the Data layer's (mean, scale) and
    label (1, 1, G, 8) rows [item in the batch, label, instance, xmin, ymin, xmax, ymax,
    difficult] of the batch's G boxes in record order; a batch without boxes gives one row of
    −1 (G changes from batch to batch; 1 at setup). As in SSD's transform of a whole image,
    each box is clipped to the image, boxes outside it or left empty are dropped (with
    ``emit_constraint``: also those whose centre is outside, or, MIN_OVERLAP, which the image
    covers by at most ``emit_overlap``), and ``mirror`` (TRAIN, half the images) flips images
    and boxes (x → 1 − x). ``resize_param`` (WARP, bilinear) resizes every record to
    height × width once, when the layer is built.

    netspec runs the deterministic part of SSD's pipeline: the random crops of
    ``batch_sampler`` (other than the whole-image sampler), ``distort_param``,
    ``expand_param`` and ``noise_param`` with a non-zero probability, ``crop_size``, and the
    FIT_SMALL_SIZE / FIT_LARGE_SIZE_AND_PAD resize modes are refused with an error naming the
    field.
    """

    extra_blocks = ("annotated_data_param",)

    def setup(self, bottom_shapes):
        p, tp = self.p, self.lp.transform_param
        self._refuse_random_fields()
        size = None
        if tp is not None and tp.resize_param is not None:
            size = (tp.resize_param.height, tp.resize_param.width)
        backend = p.backend if "backend" in p.model_fields_set else None
        try:
            ds = open_annotated(p.source, self.net_dir, backend, _color(self, tp), size)
        except DataError as e:
            raise self.error(e.format(), field="data_param.source", cls=DataError) from None
        self.images = ds.data
        self.n = len(ds)
        self.boxes = self._emitted(ds.boxes, tp)
        record = self.boxes[:, 0].astype(np.int64)
        self.box_start = np.searchsorted(record, np.arange(self.n))
        self.box_count = np.searchsorted(record, np.arange(self.n), side="right") - self.box_start
        shape = self._setup_transform(tuple(self.images.shape[1:]), "data_param")
        self.flip_boxes, self.mirror = self.mirror, False     # flipped here, with the boxes
        self.cursor, self.epoch = 0, 0
        self.order = self._new_order()
        tops = [(p.batch_size,) + tuple(shape)]
        if len(self.lp.top) > 1:
            tops.append((1, 1, 1, 8))
        return tops

    def _refuse_random_fields(self) -> None:
        """The randomised parts of SSD's transform that netspec does not run: errors naming
        them."""
        tp, ap = self.lp.transform_param, self.lp.annotated_data_param
        why = "netspec's AnnotatedData runs SSD's deterministic transform only"
        if tp is not None:
            if tp.crop_size:
                raise self.spec_error(f"crop_size: SSD crops boxes with the image; {why}",
                                      field="transform_param.crop_size")
            d = tp.distort_param
            if d is not None and any(getattr(d, f) > 0 for f in type(d).model_fields
                                     if f.endswith("_prob")):
                raise self.spec_error(f"random photometric distortion (a non-zero *_prob); "
                                      f"{why}", field="transform_param.distort_param")
            e = tp.expand_param
            if e is not None and e.prob > 0 and e.max_expand_ratio > 1:
                raise self.spec_error(f"random expansion (prob > 0, max_expand_ratio > 1); "
                                      f"{why}", field="transform_param.expand_param")
            if tp.noise_param is not None and tp.noise_param.prob > 0:
                raise self.spec_error(f"random noise (prob > 0); {why}",
                                      field="transform_param.noise_param")
            r = tp.resize_param
            if r is not None:
                f = "transform_param.resize_param"
                if r.resize_mode != "WARP":
                    raise self.spec_error(f"resize_mode {r.resize_mode}: netspec resizes with "
                                          "WARP only", field=f + ".resize_mode")
                if not (r.height and r.width):
                    raise self.spec_error("WARP needs height and width", field=f + ".height")
                if r.prob != 1:
                    raise self.spec_error(f"prob {r.prob:g}: a random resize; {why}",
                                          field=f + ".prob")
                if any(m != "LINEAR" for m in r.interp_mode):
                    raise self.spec_error("netspec resizes with LINEAR interpolation only",
                                          field=f + ".interp_mode")
        if ap is not None:
            if ap.yolo_data_type != 0:
                raise self.spec_error("yolo_data_type: eric612/MobileNet-YOLO's random YOLO "
                                      f"augmentation; {why}",
                                      field="annotated_data_param.yolo_data_type")
            for k, b in enumerate(ap.batch_sampler):
                s = b.sampler
                if s is not None and (s.min_scale, s.max_scale, s.min_aspect_ratio,
                                      s.max_aspect_ratio) != (1, 1, 1, 1):
                    raise self.spec_error(f"batch_sampler {k} samples random crops; {why} "
                                          "(only samplers of the whole image, scale and "
                                          "aspect ratio 1)",
                                          field="annotated_data_param.batch_sampler")

    def _emitted(self, boxes: np.ndarray, tp) -> np.ndarray:
        """SSD's TransformAnnotation of a whole image: the emit constraint, then each box
        clipped to [0, 1]; boxes outside the image or left empty dropped."""
        b = boxes[:, 3:7]
        keep = ~((b[:, 0] >= 1) | (b[:, 2] <= 0) | (b[:, 1] >= 1) | (b[:, 3] <= 0))
        ec = tp.emit_constraint if tp is not None else None
        if ec is not None and ec.emit_type == "CENTER":
            cx, cy = (b[:, 0] + b[:, 2]) / F32(2), (b[:, 1] + b[:, 3]) / F32(2)
            keep &= (cx >= 0) & (cx <= 1) & (cy >= 0) & (cy <= 1)
        elif ec is not None:
            w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
            iw = np.minimum(b[:, 2], 1) - np.maximum(b[:, 0], 0)
            ih = np.minimum(b[:, 3], 1) - np.maximum(b[:, 1], 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                cover = np.where((iw > 0) & (ih > 0), iw * ih / (w * h), 0)
            keep &= cover > F32(ec.emit_overlap or 0)
        out = boxes.copy()
        out[:, 3:7] = np.clip(b, F32(0), F32(1))
        keep &= (out[:, 5] > out[:, 3]) & (out[:, 6] > out[:, 4])
        return out[keep]

    def forward(self, bottom, top):
        idx = self.next_indices()
        x = self._transform(self.images[idx])
        n = len(idx)
        counts = self.box_count[idx]
        item = np.repeat(np.arange(n), counts)
        within = np.arange(len(item)) - np.repeat(np.cumsum(counts) - counts, counts)
        rows = self.boxes[np.repeat(self.box_start[idx], counts) + within].copy()
        rows[:, 0] = item
        if self.flip_boxes and self.phase == "TRAIN":
            flip = self.rng.random(n) < 0.5
            x[flip] = x[flip][..., ::-1]
            f = flip[item]
            rows[f, 3], rows[f, 5] = F32(1) - rows[f, 5], F32(1) - rows[f, 3]
        top[0].data[...] = self.backend.asarray(x)
        if len(top) > 1:
            if len(rows) == 0:
                rows = np.full((1, 8), -1, F32)
            top[1].data = self.backend.asarray(rows.reshape(1, 1, -1, 8).astype(top[0].data.dtype))
