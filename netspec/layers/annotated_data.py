"""SSD's AnnotatedData layer (weiliu89/caffe): images with their ground-truth boxes."""

from __future__ import annotations

import numpy as np

from ..data.annotated import open_annotated
from ..data.ssd_augment import (UNIT, distort, draw_distortion, draw_expansion, draw_modes,
                                generate_batch_samples, jitter_crops, padded_boxes, pick_samples,
                                project_boxes, crop_rect, extrapolate_boxes, fit_hw,
                                resize_boxes, resize_policy, within_groups)
from ..errors import DataError
from ..spec.params.common import ResizeParameter
from ..spec.params.data import YOLO_ROWS
from .data import Data, _color
from .registry import register

F32 = np.float32
#: the MobileNet-YOLO fork draws a resize policy every this many batches (``load_batch``)
POLICY_PERIOD = 10
#: how far the policies' ``prob`` may sum from 1 (the fork's ``prob_eps``)
PROB_EPS = 0.01
#: the key of ``Shard.order_rng`` for the policy draws of data-parallel ranks
POLICY_KEY = 2


def roll_weighted_die(u: float, probabilities) -> int:
    """The MobileNet-YOLO fork's ``roll_weighted_die`` for a uniform ``u`` in [0, 1): the
    first index whose float32 cumulative sum of ``probabilities`` reaches u·(their sum)."""
    cumulative = np.cumsum(np.asarray(probabilities, F32), dtype=F32)
    val = F32(u) * cumulative[-1]
    return int(min(np.searchsorted(cumulative, val, side="left"), len(cumulative) - 1))


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
    height × width once, when the layer is built; the other resize modes run per batch.

    Several ``resize_param`` blocks are the MobileNet-YOLO fork's multi-scale training: every
    ``POLICY_PERIOD`` = 10 batches (the first included) one policy is drawn with the fork's
    ``roll_weighted_die`` over their ``prob`` (each in [0, 1], summing to 1 within 0.01) and
    the batches until the next draw are WARP-resized to its height × width (by one of its
    ``interp_mode``), from the records at their own size; top[0] then takes the new shape and
    the net sets the layers after it up again (``Layer.reshaped_tops``). The layer starts at
    the first policy's size; the batch counter and the policy are part of its state (resumed
    with a snapshot). One block always resizes; its ``prob`` must be 1 within 0.01, as the
    fork checks (SSD does not read it).

    SSD's random transform (``netspec/data/ssd_augment.py``), per image in SSD's order and
    in every phase where it is set, as SSD: ``distort_param`` (brightness, contrast,
    saturation, hue, channel order; 8-bit BGR), ``expand_param`` (the image at a random place
    of a canvas up to ``max_expand_ratio`` times larger, filled with ``mean_value``),
    ``batch_sampler`` (one of the crops the samplers find, boxes projected into it with
    ``emit_constraint``; an image where none is found stays whole), then the WARP resize of
    the crop to ``resize_param``'s height × width (by one of its ``interp_mode`` drawn per
    image: LINEAR, AREA, NEAREST, CUBIC, LANCZOS4 as OpenCV's), mirror, mean and scale. Its draws come from
    the net's random generator (reproducible from ``random_seed``, resumed with it).
    ``resize_mode`` FIT_LARGE_SIZE_AND_PAD and FIT_SMALL_SIZE (batch_size 1) resize as SSD's
    ``ApplyResize`` (``ssd_augment.resize_policy``, boxes by ``resize_boxes`` and, after the
    mirror, ``extrapolate_boxes``). ``noise_param`` with a non-zero probability and
    ``crop_size`` are refused with an error naming the field.
    """

    extra_blocks = ("annotated_data_param",)

    def setup(self, bottom_shapes):
        p, tp = self.p, self.lp.transform_param
        self._require_source()
        self._refuse_random_fields()
        self.policies = list(tp.resize_param) if tp is not None else []
        size = (self.policies[0].height, self.policies[0].width) if self.policies else None
        self.policy, self.iters = 0, 0
        self.augment = (self._random_transform() or len(self.policies) > 1
                        or any(r.resize_mode != "WARP" for r in self.policies))
        backend = p.backend if "backend" in p.model_fields_set else None
        try:
            ds = open_annotated(p.source, self.net_dir, backend, _color(self, tp), size,
                                keep_size=self.augment)
        except DataError as e:
            raise self.error(e.format(), field="data_param.source", cls=DataError) from None
        self.images = ds.data
        self.n = len(ds)
        self.sizes = ds.sizes
        if self.augment:
            self.boxes = ds.boxes
            shape = self._setup_augment(size)
        else:
            self.boxes = self._emitted(ds.boxes, tp)
            shape = tuple(self.images.shape[1:])
        record = self.boxes[:, 0].astype(np.int64)
        self.box_start = np.searchsorted(record, np.arange(self.n))
        self.box_count = np.searchsorted(record, np.arange(self.n), side="right") - self.box_start
        shape = self._setup_transform(shape, "data_param")
        if self.augment:        # the expansion's canvas: mean_value as 8-bit pixels
            fill = self.mean.reshape(-1) if self.mean is not None else np.zeros(1, F32)
            self.fill = np.broadcast_to(np.rint(fill).clip(0, 255), shape[:1]).astype(np.int32)
        self.flip_boxes, self.mirror = self.mirror, False     # flipped here, with the boxes
        self.cursor, self.epoch = 0, 0
        self.order = self._new_order()
        tops = [(p.batch_size,) + tuple(shape)]
        if len(self.lp.top) > 1:
            tops.append((p.batch_size, 1, YOLO_ROWS, 5) if self.yolo_labels else (1, 1, 1, 8))
        return tops

    def _random_transform(self) -> bool:
        """Whether SSD's random transform has anything to do: a distortion or expansion with a
        non-zero probability, a batch_sampler, or interpolation other than LINEAR alone."""
        tp, ap = self.lp.transform_param, self.lp.annotated_data_param
        d = tp.distort_param if tp is not None else None
        e = tp.expand_param if tp is not None else None
        self.distort_p = d if d is not None and any(
            getattr(d, f) > 0 for f in type(d).model_fields if f.endswith("_prob")) else None
        self.expand_p = e if e is not None and e.prob > 0 and e.max_expand_ratio > 1 else None
        self.samplers = list(ap.batch_sampler) if ap is not None else []
        self.yolo_labels = ap is not None and ap.yolo_data_type == 1
        self.jitter = (ap.yolo_data_jitter if self.yolo_labels and not self.samplers else 0.0)
        self.interp = self._interp(0)
        return bool(self.distort_p or self.expand_p or self.samplers or self.jitter
                    or list(self.interp) != ["LINEAR"])

    def _interp(self, policy: int) -> np.ndarray:
        """The interpolations of resize policy ``policy`` (LINEAR when it names none)."""
        r = self.policies[policy] if self.policies else None
        return np.array(r.interp_mode if r is not None and r.interp_mode else ["LINEAR"])

    def _setup_augment(self, size) -> tuple:
        """Checks of the records and fields SSD's random transform needs; the output shape."""
        tp = self.lp.transform_param
        src = "data_param.source"
        c = self.images.shape[1]
        if self.images.dtype != np.uint8:
            raise self.error("SSD's random transform (distort_param, expand_param, "
                             "batch_sampler, several resize_param) works on 8-bit images; "
                             "these records are float",
                             field=src, cls=DataError)
        d = self.distort_p
        if d is not None:
            f = "transform_param.distort_param"
            if c != 3 and (d.saturation_prob > 0 or d.hue_prob > 0 or d.random_order_prob > 0):
                raise self.error(f"saturation, hue and channel order need 3-channel (BGR) "
                                 f"images; the records have {c} channel(s)", field=f,
                                 cls=DataError)
            for prob, lo, hi, name in (("brightness_prob", None, "brightness_delta", "delta"),
                                       ("contrast_prob", "contrast_lower", "contrast_upper", ""),
                                       ("saturation_prob", "saturation_lower",
                                        "saturation_upper", ""),
                                       ("hue_prob", None, "hue_delta", "delta")):
                if getattr(d, prob) <= 0:
                    continue
                low = getattr(d, lo) if lo else 0.0
                if low < 0 or getattr(d, hi) < low:
                    want = f"{hi} ≥ 0" if lo is None else f"0 ≤ {lo} ≤ {hi}"
                    raise self.spec_error(f"SSD needs {want} when {prob} > 0",
                                          field=f"{f}.{hi if lo is None else lo}")
        if self.expand_p is not None and tp.mean_file:
            raise self.spec_error("expand_param with mean_file: SSD fills the canvas from a "
                                  "mean image of the expanded size; give mean_value instead",
                                  field="transform_param.expand_param")
        for k, b in enumerate(self.samplers):
            s = b.sampler
            if s is None:
                continue
            f = f"annotated_data_param.batch_sampler[{k}].sampler"
            if not (0 < s.min_scale <= s.max_scale <= 1):
                raise self.spec_error("SSD needs 0 < min_scale ≤ max_scale ≤ 1", field=f)
            if not (0 < s.min_aspect_ratio <= s.max_aspect_ratio):
                raise self.spec_error("SSD needs 0 < min_aspect_ratio ≤ max_aspect_ratio",
                                      field=f)
        if size is None:
            if (self.sizes != self.sizes[0]).any():
                raise self.error("records of different sizes: give transform_param."
                                 "resize_param to resize them to one size", field=src,
                                 cls=DataError)
            crops = self.jitter > 0 or any(
                b.sampler is not None and (b.sampler.min_scale, b.sampler.max_scale,
                                           b.sampler.min_aspect_ratio,
                                           b.sampler.max_aspect_ratio) != (1, 1, 1, 1)
                for b in self.samplers)
            if crops or self.expand_p is not None:
                field = ("transform_param.expand_param" if self.expand_p is not None else
                         "annotated_data_param.yolo_data_jitter" if self.jitter else
                         "annotated_data_param.batch_sampler")
                raise self.spec_error("random crops and expansion change the image size: give "
                                      "transform_param.resize_param (WARP height, width), as "
                                      "SSD needs", field=field)
            size = tuple(int(v) for v in self.sizes[0])
        for k, r in enumerate(self.policies):
            if len(r.pad_value) not in (0, 1, c):
                f = (f"transform_param.resize_param[{k}]" if len(self.policies) > 1 else
                     "transform_param.resize_param")
                raise self.spec_error(f"{len(r.pad_value)} pad_value for {c}-channel images: "
                                      "SSD takes one or one per channel", field=f + ".pad_value")
        self.out_hw = size
        if self.policies and self.policies[0].resize_mode == "FIT_SMALL_SIZE":
            size = fit_hw("FIT_SMALL_SIZE", self.sizes[:1], size)[0]   # SSD: the first record's
        return (c,) + tuple(int(v) for v in size)

    def _refuse_random_fields(self) -> None:
        """The parts of SSD's transform that netspec does not run: errors naming them."""
        tp, ap = self.lp.transform_param, self.lp.annotated_data_param
        why = "netspec's AnnotatedData does not run it"
        if tp is not None:
            if tp.crop_size:
                raise self.spec_error(f"crop_size: SSD crops boxes with the image; {why}",
                                      field="transform_param.crop_size")
            e = tp.expand_param
            if e is not None and e.max_expand_ratio < 1:
                raise self.spec_error(f"max_expand_ratio {e.max_expand_ratio:g}: SSD expands "
                                      "by a ratio of at least 1",
                                      field="transform_param.expand_param.max_expand_ratio")
            if tp.noise_param is not None and tp.noise_param.prob > 0:
                raise self.spec_error(f"random noise (prob > 0); {why}",
                                      field="transform_param.noise_param")
            self._check_policies(tp.resize_param)
        if ap is not None:
            if ap.yolo_data_type not in (0, 1):
                raise self.spec_error(f"yolo_data_type {ap.yolo_data_type}: eric612/MobileNet-"
                                      "YOLO knows 0 (SSD's labels) and 1 (YOLO's labels)",
                                      field="annotated_data_param.yolo_data_type")
            if ap.yolo_data_jitter < 0 or ap.yolo_data_jitter >= 1:
                raise self.spec_error(f"yolo_data_jitter {ap.yolo_data_jitter:g} must be in "
                                      "[0, 1)", field="annotated_data_param.yolo_data_jitter")

    def _check_policies(self, policies) -> None:
        """The resize policies netspec runs: WARP to a height and width, and the MobileNet-YOLO
        fork's checks of their ``prob`` (each in [0, 1], summing to 1 within ``PROB_EPS``)."""
        several = len(policies) > 1
        for k, r in enumerate(policies):
            f = f"transform_param.resize_param[{k}]" if several else "transform_param.resize_param"
            if not (r.height and r.width):
                raise self.spec_error(f"{r.resize_mode} needs height and width",
                                      field=f + ".height")
            if r.resize_mode == "FIT_SMALL_SIZE" and self.p.batch_size != 1:
                raise self.spec_error(
                    f"FIT_SMALL_SIZE gives each image its own size; SSD (and netspec) support "
                    f"it with batch_size 1 only, not {self.p.batch_size}",
                    field=f + ".resize_mode")
            if not 0 <= r.prob <= 1:
                raise self.spec_error(f"prob {r.prob:g} of a resize policy must be in [0, 1] "
                                      "(eric612/MobileNet-YOLO checks it)", field=f + ".prob")
        total = float(np.sum(np.asarray([r.prob for r in policies], F32), dtype=F32))
        if policies and abs(total - 1) > PROB_EPS:
            if several:
                raise self.spec_error(
                    f"the prob of the {len(policies)} resize policies sum to {total:g}; "
                    "eric612/MobileNet-YOLO draws one with these weights and checks that they "
                    f"sum to 1 (within {PROB_EPS:g})", field="transform_param.resize_param")
            raise self.spec_error(
                f"prob {total:g} of the only resize policy: eric612/MobileNet-YOLO stops "
                f"unless it is 1 (within {PROB_EPS:g}); SSD does not read it and always "
                "resizes: set prob: 1", field="transform_param.resize_param.prob")

    def _next_policy(self) -> None:
        """The fork's draw of a resize policy at every ``POLICY_PERIOD``-th batch: its size
        and interpolations for this batch; counts the batch. Data-parallel ranks draw alike
        (``Shard.order_rng``), so they resize their shares of a batch to one size."""
        if len(self.policies) > 1 and self.iters % POLICY_PERIOD == 0:
            rng = (self.rng if self.shard is None else
                   self.shard.order_rng(POLICY_KEY, self.iters // POLICY_PERIOD))
            self.policy = roll_weighted_die(rng.random(), [r.prob for r in self.policies])
        self.iters += 1
        r = self.policies[self.policy]
        self.out_hw = (int(r.height), int(r.width))
        self.interp = self._interp(self.policy)

    def state_dict(self):
        state = super().state_dict()
        if len(self.policies) > 1:
            state.update(iters=self.iters, policy=self.policy)
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if len(self.policies) > 1:
            policy = int(state["policy"])
            if not 0 <= policy < len(self.policies):
                raise ValueError(f"resize policy {policy} of {len(self.policies)}")
            self.iters, self.policy = int(state["iters"]), policy

    def _emitted(self, boxes: np.ndarray, tp) -> np.ndarray:
        """SSD's TransformAnnotation of a whole image: the emit constraint, then each box
        clipped to [0, 1]; boxes outside the image or left empty dropped."""
        keep, b = project_boxes(boxes[:, 3:7], UNIT, self._emit(tp))
        out = boxes.copy()
        out[:, 3:7] = b
        return out[keep]

    @staticmethod
    def _emit(tp):
        return tp.emit_constraint if tp is not None else None

    def _batch_rows(self, idx: np.ndarray) -> np.ndarray:
        """The box rows of records ``idx``, in order, column 0 their item in the batch."""
        counts = self.box_count[idx]
        rows = self.boxes[np.repeat(self.box_start[idx], counts) + within_groups(counts)]
        rows[:, 0] = np.repeat(np.arange(len(idx)), counts)
        return rows

    def _policy(self):
        """The resize policy of this batch: a ResizeParameter, or WARP to the records' size."""
        if self.policies:
            return self.policies[self.policy]
        return ResizeParameter(height=self.out_hw[0], width=self.out_hw[1])

    def _augmented(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """SSD's load_batch for records ``idx``: distort, expand, sample a crop, resize by the
        batch's policy; the images (n, C, H, W) uint8, their box rows (before mirror) and the
        size (n, 2) of each item's crop."""
        n, rng, emit = len(idx), self.rng, self._emit(self.lp.transform_param)
        images, sizes = self.images[idx], self.sizes[idx]
        rows = self._batch_rows(idx)
        item = rows[:, 0].astype(np.int64)
        if self.distort_p is not None:
            images = distort(images, draw_distortion(rng, self.distort_p, n))
        canvas, offset = sizes, np.zeros_like(sizes)
        if self.expand_p is not None:
            e = draw_expansion(rng, self.expand_p, sizes)
            canvas, offset = e.canvas, e.offset
            rows, item = _moved(rows, item, e.expanded, e.bbox, emit)
        rect = np.concatenate([np.zeros_like(canvas), canvas], 1)
        if self.samplers:
            objects, valid = padded_boxes(rows[:, 3:7], item, n)
            crops, found = generate_batch_samples(rng, self.samplers, objects, valid)
            crop, cropped = pick_samples(rng, crops, found)
            rows, item = _moved(rows, item, cropped, np.clip(crop, F32(0), F32(1)), emit)
            rect = np.where(cropped[:, None], crop_rect(crop, canvas[:, 0], canvas[:, 1]), rect)
        elif self.jitter:
            keep = self._policy().resize_mode == "FIT_LARGE_SIZE_AND_PAD"
            crop = jitter_crops(rng, self.jitter, n, keep_aspect=keep)
            rows, item = _moved(rows, item, np.ones(n, bool), crop, emit)
            rect = crop_rect(crop, canvas[:, 0], canvas[:, 1])
        mode = draw_modes(rng, self.interp, n)
        policy = self._policy()
        x = resize_policy(images, sizes, offset, rect, policy, self.fill, mode)
        rows[:, 3:7] = resize_boxes(rows[:, 3:7], rect[item, 2:4], policy)
        keep, rows[:, 3:7] = project_boxes(rows[:, 3:7], UNIT, emit)
        return x, rows[keep], rect[:, 2:4]

    def forward(self, bottom, top):
        if len(self.policies) > 1:
            self._next_policy()
        idx = self.next_indices()
        if self.augment:
            images, rows, crop_hw = self._augmented(idx)
        else:
            images, rows = self.images[idx], self._batch_rows(idx)
        x = self._transform(images)
        n = len(idx)
        item = rows[:, 0].astype(np.int64)
        if self.flip_boxes and self.phase == "TRAIN":
            f = self._mirrored(x)[item]
            rows[f, 3], rows[f, 5] = F32(1) - rows[f, 5], F32(1) - rows[f, 3]
        if self.augment:
            rows[:, 3:7] = self._extrapolated(rows, crop_hw, idx)
        if top[0].shape != x.shape:         # another resize policy (multi-scale training)
            top[0].data = self.backend.zeros(x.shape)
            self.reshaped_tops = True
        top[0].data[...] = self.backend.asarray(x)
        if len(top) > 1 and self.yolo_labels:
            top[1].data[...] = self.backend.asarray(self._yolo_rows(rows, n, idx))
        elif len(top) > 1:
            if len(rows) == 0:
                rows = np.full((1, 8), -1, F32)
            top[1].data = self.backend.asarray(rows.reshape(1, 1, -1, 8).astype(top[0].data.dtype))

    def _extrapolated(self, rows: np.ndarray, crop_hw: np.ndarray, idx: np.ndarray):
        """SSD's ExtrapolateBBox of the batch's boxes (FIT_SMALL_SIZE with height_scale and
        width_scale): SSD stops when the resized image is smaller than the scales."""
        r = self._policy()
        if not (r.resize_mode == "FIT_SMALL_SIZE" and r.height_scale > 0 and r.width_scale > 0):
            return rows[:, 3:7]
        hw = fit_hw(r.resize_mode, crop_hw, (r.height, r.width))
        small = (hw[:, 0] < r.height_scale) | (hw[:, 1] < r.width_scale)
        if small.any():
            k = int(np.argmax(small))
            raise self.error(f"record {int(idx[k])} resizes to {hw[k, 0]} × {hw[k, 1]}, smaller "
                             f"than height_scale × width_scale {r.height_scale} × "
                             f"{r.width_scale} (SSD's ExtrapolateBBox stops)",
                             field="transform_param.resize_param.height_scale", cls=DataError)
        return extrapolate_boxes(rows[:, 3:7], crop_hw[rows[:, 0].astype(np.int64)], r)

    def _yolo_rows(self, rows: np.ndarray, n: int, idx: np.ndarray) -> np.ndarray:
        """The fork's YOLO labels (n, 1, 300, 5): per image its boxes in order (difficult ones
        only with ``train_diffcult``) as [label − 1, centre x, centre y, width, height], then
        rows of 0."""
        if not self.lp.annotated_data_param.train_diffcult:
            rows = rows[rows[:, 7] == 0]
        item = rows[:, 0].astype(np.int64)
        counts = np.bincount(item, minlength=n)
        if counts.max(initial=0) > YOLO_ROWS:
            k = int(counts.argmax())
            raise self.error(f"record {int(idx[k])} has {counts[k]} boxes after the transform; "
                             f"yolo_data_type 1 holds at most {YOLO_ROWS} per image (as the "
                             "fork)", field="annotated_data_param.yolo_data_type", cls=DataError)
        at = within_groups(counts)
        b = rows[:, 3:7]
        out = np.zeros((n, 1, YOLO_ROWS, 5), dtype=self.dtype)
        out[item, 0, at] = np.stack([rows[:, 1] - 1, (b[:, 0] + b[:, 2]) / 2,
                                     (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0],
                                     b[:, 3] - b[:, 1]], -1)
        return out


def _moved(rows: np.ndarray, item: np.ndarray, moved: np.ndarray, crop: np.ndarray, emit
           ) -> tuple[np.ndarray, np.ndarray]:
    """Box rows after the items where ``moved`` (n,) take the crop ``crop`` (n, 4) of their
    image (TransformAnnotation: emit constraint, projection, clip); the others unchanged."""
    m = moved[item]
    keep, b = project_boxes(rows[m, 3:7], crop[item[m]], emit)
    rows = rows.copy()
    rows[m, 3:7] = b
    kept = ~m
    kept[m] = keep
    return rows[kept], item[kept]
