"""Input and Data layers: where blobs enter the net."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from ..backend import to_numpy
from ..data import open_source
from ..data.sources import load_mean_file, resolve_file
from ..errors import DataError
from ..fillers import fill
from ..spec.params import FillerParameter
from ..spec.params.common import DEEPLAB_TRANSFORM_FIELDS, SSD_TRANSFORM_FIELDS
from .base import Layer
from .registry import register

#: the keys of ``Shard.order_rng`` for an epoch's order and for ``rand_skip``
ORDER_KEY, SKIP_KEY = 0, 1


@register("Input")
class Input(Layer):
    """Tops with fixed shapes (``input_param.shape``: one per top, or one for all tops).

    The caller fills ``net.blobs[name].data`` before forward; no backward.
    """

    param_block = "input_param"
    min_tops = 1
    exact_bottoms = 0
    has_backward = False

    def setup(self, bottom_shapes):
        shapes = [tuple(s.dim) for s in self.p.shape]
        n = len(self.lp.top)
        if len(shapes) == 1:
            shapes = shapes * n
        if len(shapes) != n:
            raise self.spec_error(f"gives {len(shapes)} shapes for {n} tops", field="input_param.shape")
        return shapes

    def forward(self, bottom, top):
        """Nothing: the input blobs are set from outside."""


@register("Data")
class Data(Layer):
    """Batches of (data, label) from a dataset, Caffe's Data layer with its transform.

    Records are read in order, ``batch_size`` per forward, wrapping around at the end of the
    dataset (like Caffe); ``data_param.shuffle`` (netspec) draws a new order every epoch.
    Sources: ``netspec.data.open_source`` (built-in MNIST, IDX folder, .npz, or a Caffe LevelDB
    or LMDB of Datum records, ``backend: LEVELDB`` (Caffe's default) or ``LMDB``, all read into
    memory).
    Transform (``transform_param``), as Caffe's DataTransformer: out = (x − mean) · scale, where
    x is the record cropped (random in TRAIN, centre in TEST) and mirrored (random in TRAIN),
    and mean is ``mean_value`` per channel or the ``mean_file`` image (a BlobProto 1×C×H×W of
    the uncropped record's shape) cropped and mirrored with it.
    Tops: data (batch, C, H, W) (or (batch, D) for 2-D sources), label (batch,) as floats.
    """

    param_block = "data_param"
    exact_bottoms = 0
    min_tops = 1
    max_tops = 2
    has_backward = False
    #: the block's own scale, crop_size, mirror, mean_file stand in for transform_param's
    legacy_transform_fields = True

    def setup(self, bottom_shapes):
        p = self.p
        self._require_source()
        base = Path(self.where["file"]).parent if self.where.get("file") else None
        tp = self.lp.transform_param
        backend = p.backend if "backend" in p.model_fields_set else None
        try:
            ds = _open(p.source, p.split, base, backend, _color(self, tp, p.force_encoded_color))
        except DataError as e:
            raise self.error(e.format(), field="data_param.source", cls=DataError) from None
        end = len(ds) if p.limit == 0 else min(len(ds), p.offset + p.limit)
        if p.offset >= end:
            raise self.spec_error(f"offset {p.offset} leaves no records of {len(ds)}",
                                  field="data_param.offset")
        self.images = ds.data[p.offset:end]
        self.labels = ds.label[p.offset:end]
        self.n = len(self.labels)
        shape = self._setup_transform(tuple(self.images.shape[1:]), "data_param")
        self.cursor = 0
        self.epoch = 0
        self.order = self._new_order()
        tops = [(p.batch_size,) + tuple(shape)]
        if len(self.lp.top) > 1:
            tops.append((p.batch_size,))
        return tops

    def _require_source(self) -> None:
        if self.p.source is None:
            raise self.spec_error(f"{self.type_name} reads its records from data_param.source; "
                                  "give it", field="data_param.source")

    def _setup_transform(self, shape: tuple, block: str) -> tuple:
        """Read ``transform_param`` (falling back to the legacy fields of ``block``: scale,
        crop_size, mirror, mean_file) for records of ``shape``; the transformed shape."""
        tp = self.lp.transform_param
        p = self.p if self.legacy_transform_fields else None
        self._refuse_fork_transform_fields()
        self.scale = (tp.scale if tp else 1.0) * (p.scale if p else 1.0)
        self.crop = (tp.crop_size if tp else 0) or (p.crop_size if p else 0)
        self.mirror = (tp.mirror if tp else False) or (p.mirror if p else False)
        mean = list(tp.mean_value) if tp else []
        mean_file = (tp.mean_file if tp else None) or (p.mean_file if p else None)
        mean_field = "transform_param.mean_file" if tp and tp.mean_file else f"{block}.mean_file"
        if self.crop and len(shape) != 3:
            raise self.spec_error("crop_size needs image (C, H, W) records", field="transform_param.crop_size")
        self.mean_image = None
        if mean_file:
            if mean:
                raise self.spec_error("set mean_file or mean_value, not both (Caffe refuses both)",
                                      field=mean_field)
            self.mean_image = self._load_mean(mean_file, mean_field)
            self._check_mean(shape, mean_field)
        if self.crop:
            if shape[1] < self.crop or shape[2] < self.crop:
                raise self.spec_error(f"crop_size {self.crop} is larger than the records "
                                      f"({shape[1]}×{shape[2]})", field="transform_param.crop_size")
            shape = (shape[0], self.crop, self.crop)
        if mean and len(shape) >= 1:
            if len(mean) not in (1, shape[0]):
                raise self.spec_error(f"{len(mean)} mean_value(s) for {shape[0]} channels",
                                      field="transform_param.mean_value")
            self.mean = np.asarray(mean, dtype=np.float32).reshape((-1,) + (1,) * (len(shape) - 1))
        else:
            self.mean = None
        return shape

    def _refuse_fork_transform_fields(self) -> None:
        """A spec error for a fork's ``transform_param`` field that this layer does not read
        (SSD's are AnnotatedData's, DeepLab v2's are ImageSegData's)."""
        tp = self.lp.transform_param
        if tp is None:
            return
        for fields, reader, fork in ((SSD_TRANSFORM_FIELDS, "AnnotatedData",
                                      "SSD's transform (weiliu89/caffe)"),
                                     (DEEPLAB_TRANSFORM_FIELDS, "ImageSegData",
                                      "DeepLab v2's transform (deeplab-public-ver2)")):
            if self.type_name == reader:
                continue
            for f in fields:
                if f in tp.model_fields_set:
                    raise self.spec_error(f"{f} is a field of {fork}, read by its {reader} "
                                          "layer only", field=f"transform_param.{f}")

    def _load_mean(self, mean_file: str, field: str) -> np.ndarray:

        try:
            return load_mean_file(resolve_file(mean_file, self.net_dir))
        except DataError as e:
            raise self.error(e.format(), field=field, cls=DataError) from None

    def _check_mean(self, shape: tuple, field: str) -> None:
        """Caffe: the mean image has the uncropped record's shape."""
        if tuple(self.mean_image.shape) != tuple(shape):
            c, h, w = self.mean_image.shape
            raise self.error(f"the mean image is {c}×{h}×{w} but the records are "
                             f"{'×'.join(str(d) for d in shape)} (before crop): it must be the "
                             "mean of records of the same shape", field=field, cls=DataError)

    def _new_order(self):
        """The order of this epoch: in data-parallel training (``self.shard``) one that every
        rank draws alike from (random_seed, epoch), else one from the net's generator."""
        if not self.p.shuffle:
            return np.arange(self.n)
        rng = self.rng if self.shard is None else self.shard.order_rng(ORDER_KEY, self.epoch)
        return rng.permutation(self.n)

    def next_indices(self) -> np.ndarray:
        """Indices of the next batch, advancing the cursor (and the epoch) like Caffe. In
        data-parallel training the cursor walks the global batch of size·batch_size items and
        this rank keeps its share (``netspec/data/shard.py``)."""
        size = 1 if self.shard is None else self.shard.size
        out = np.empty(self.p.batch_size * size, dtype=np.int64)
        filled = 0
        while filled < out.size:
            take = min(out.size - filled, self.n - self.cursor)
            out[filled:filled + take] = self.order[self.cursor:self.cursor + take]
            filled += take
            self.cursor += take
            if self.cursor == self.n:
                self.cursor = 0
                self.epoch += 1
                if self.p.shuffle:
                    self.order = self._new_order()
        return out if self.shard is None else self.shard.take(out)

    def _transform(self, batch: np.ndarray) -> np.ndarray:
        x = batch.astype(np.float32)
        if self.mean_image is not None:
            # Caffe subtracts mean[c, h_off + h, w_off + w] from the same pixel: subtracting the
            # whole image before cropping and mirroring is the same float arithmetic
            x -= self.mean_image
        if self.crop:
            n, _, h, w = x.shape
            c = self.crop
            if self.phase == "TRAIN":
                oh = self.rng.integers(0, h - c + 1, size=n)
                ow = self.rng.integers(0, w - c + 1, size=n)
            else:
                oh = np.full(n, (h - c) // 2)
                ow = np.full(n, (w - c) // 2)
            rows = oh[:, None] + np.arange(c)
            cols = ow[:, None] + np.arange(c)
            x = x[np.arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        if self.mirror and self.phase == "TRAIN":
            self._mirrored(x)
        if self.mean is not None:
            x -= self.mean
        if self.scale != 1.0:
            x *= np.float32(self.scale)
        return x

    def _mirrored(self, x: np.ndarray) -> np.ndarray:
        """Caffe's TRAIN mirror of a batch x (n, C, H, W): about half the items, drawn, flipped
        left-right in place; the (n,) mask of those flipped."""
        flip = self.rng.random(x.shape[0]) < 0.5
        x[flip] = x[flip][..., ::-1]
        return flip

    def forward(self, bottom, top):
        idx = self.next_indices()
        top[0].data[...] = self.backend.asarray(self._transform(self.images[idx]))
        if len(top) > 1:
            top[1].data[...] = self.backend.asarray(self.labels[idx])

    def state_dict(self):
        return {"cursor": self.cursor, "epoch": self.epoch, "order": self.order}

    def load_state_dict(self, state):
        self.cursor = int(state["cursor"])
        self.epoch = int(state["epoch"])
        self.order = np.asarray(state["order"], dtype=np.int64)


def _open(source, split, base, backend=None, color=None):

    return open_source(source, split, base, backend=backend, color=color)


def _color(layer: Layer, tp, force_encoded_color: bool = False) -> bool | None:
    """How encoded images decode (Caffe's transform_param.force_color / force_gray)."""
    if tp is not None and tp.force_color and tp.force_gray:
        raise layer.spec_error("force_color and force_gray cannot both be set",
                               field="transform_param.force_gray")
    if (tp is not None and tp.force_color) or force_encoded_color:
        return True
    if tp is not None and tp.force_gray:
        return False
    return None


@register("DummyData")
class DummyData(Layer):
    """Tops of fixed shapes filled by fillers (Caffe's DummyData); no bottoms, no gradient.

    Shapes: ``dummy_data_param.shape`` (one for all tops or one per top), or the legacy
    ``num``/``channels``/``height``/``width`` (each once or once per top) giving (N, C, H, W).
    ``data_filler``: none (constant 0), one for all tops, or one per top. Like Caffe, tops with
    a ``constant`` filler are filled once; the others are refilled on every forward (from the
    net's random generator).
    """

    param_block = "dummy_data_param"
    exact_bottoms = 0
    min_tops = 1
    has_backward = False

    def setup(self, bottom_shapes):
        p = self.p
        n_top = max(len(self.lp.top), 1)
        nf = len(p.data_filler)
        if nf not in (0, 1, n_top):
            raise self.spec_error(f"number of data fillers must be 0, 1 or equal to the number "
                                  f"of tops ({n_top}); got {nf}", field="dummy_data_param.data_filler")
        legacy = {k: list(getattr(p, k)) for k in ("num", "channels", "height", "width")}
        shapes = []
        if any(legacy.values()):
            if p.shape:
                raise self.spec_error("both shape and legacy fields (num, channels, height, "
                                      "width) were specified", field="dummy_data_param.shape")
            for k, v in legacy.items():
                if len(v) not in (1, n_top):
                    raise self.spec_error(f"must specify '{k}' once, or once per top blob "
                                          f"({n_top}); got {len(v)}", field=f"dummy_data_param.{k}")
            for i in range(n_top):
                shapes.append(tuple(int(v[0] if len(v) == 1 else v[i]) for v in legacy.values()))
        else:
            if len(p.shape) not in (1, n_top):
                raise self.spec_error(f"must specify 'shape' once, or once per top blob "
                                      f"({n_top}); got {len(p.shape)}", field="dummy_data_param.shape")
            for i in range(n_top):
                shapes.append(tuple(int(d) for d in p.shape[0 if len(p.shape) == 1 else i].dim))
        for s in shapes:
            if any(d < 0 for d in s):
                raise self.spec_error(f"negative dimension in shape {s}", field="dummy_data_param")
        self.fillers = list(p.data_filler) or [FillerParameter(type="constant", value=0.0)]
        self.refill = [f.type != "constant" for f in self.fillers]
        self.filled_once = False
        return shapes

    def forward(self, bottom, top):
        for i, t in enumerate(top):
            k = i if len(self.fillers) > 1 else 0
            if self.refill[k] or not self.filled_once:
                t.data[...] = self.backend.asarray(fill(self.fillers[k], t.shape, self.rng))
        self.filled_once = True


@register("MemoryData")
class MemoryData(Layer):
    """Batches of (data, label) from arrays handed over in Python (pycaffe's set_input_arrays).

    Tops: data (batch_size, channels, height, width) and labels (batch_size,)
    (``memory_data_param``, all positive). Call ``layer.reset(data, labels)`` — e.g.
    ``net.layer_by_name("mem").reset(x, y)`` — with n items (n a multiple of batch_size); each
    forward then takes the next batch, cycling through the n items in order. In data-parallel
    training every rank resets with all n items (a multiple of batch_size × ranks) and reads
    its share of each global batch. No transform is
    applied (Caffe's Reset does not transform either). No gradient.
    """

    param_block = "memory_data_param"
    exact_bottoms = 0
    exact_tops = 2
    has_backward = False

    def setup(self, bottom_shapes):
        p = self.p
        self.batch = int(p.batch_size)
        self.item = (int(p.channels), int(p.height), int(p.width))
        if self.batch * math.prod(self.item) <= 0:
            raise self.spec_error("batch_size, channels, height, and width must be specified "
                                  "and positive in memory_data_param", field="memory_data_param")
        self.data = self.labels = None
        self.n = self.pos = 0
        return [(self.batch, *self.item), (self.batch,)]

    def reset(self, data, labels) -> None:
        """Use ``data`` (n items of channels·height·width values) and ``labels`` (n values)."""
        host = np.asarray(to_numpy(data))
        lab = np.asarray(to_numpy(labels)).reshape(-1)
        n = lab.size
        size = math.prod(self.item)
        if n == 0 or host.size != n * size:
            raise self.error(f"reset() got {host.size} data values for {n} labels; each item "
                             f"needs {size} values {self.item}", cls=DataError)
        step = self.batch * (1 if self.shard is None else self.shard.size)
        if n % step:
            per = "" if step == self.batch else f" times the {self.shard.size} ranks"
            raise self.error(f"reset(): the number of items ({n}) must be a multiple of the "
                             f"batch size ({self.batch}{per})", cls=DataError)
        if self.lp.transform_param is not None:
            warnings.warn(f"layer '{self.name}' (MemoryData) does not transform array data on "
                          "reset()", stacklevel=2)
        self.data = self.backend.asarray(host.reshape((n, *self.item)))
        self.labels = self.backend.asarray(lab)
        self.n, self.pos = n, 0

    def forward(self, bottom, top):
        if self.data is None:
            raise self.error(f"needs data: call net.layer_by_name('{self.name}').reset(data, "
                             "labels) before the first forward", cls=DataError)
        step = self.batch * (1 if self.shard is None else self.shard.size)
        s = slice(self.pos, self.pos + step)
        data, labels = self.data[s], self.labels[s]
        if self.shard is not None:          # this rank's share of the global batch
            data, labels = self.shard.take(data), self.shard.take(labels)
        top[0].data[...] = data
        top[1].data[...] = labels
        self.pos = (self.pos + step) % self.n
