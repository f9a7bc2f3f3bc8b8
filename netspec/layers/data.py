"""Input and Data layers: where blobs enter the net."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import Layer
from .registry import register


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
    Transform (``transform_param``), Caffe's order: crop (random in TRAIN, centre in TEST),
    mirror (random in TRAIN), subtract ``mean_value`` per channel, multiply by ``scale``.
    Tops: data (batch, C, H, W) (or (batch, D) for 2-D sources), label (batch,) as floats.
    """

    param_block = "data_param"
    exact_bottoms = 0
    min_tops = 1
    max_tops = 2
    has_backward = False

    def setup(self, bottom_shapes):
        p = self.p
        base = Path(self.where["file"]).parent if self.where.get("file") else None
        try:
            ds = _open(p.source, p.split, base)
        except DataError as e:
            raise self.error(e.format(), field="data_param.source", cls=DataError) from None
        end = len(ds) if p.limit == 0 else min(len(ds), p.offset + p.limit)
        if p.offset >= end:
            raise self.spec_error(f"offset {p.offset} leaves no records of {len(ds)}",
                                  field="data_param.offset")
        self.images = ds.data[p.offset:end]
        self.labels = ds.label[p.offset:end]
        self.n = len(self.labels)
        tp = self.lp.transform_param
        self.scale = (tp.scale if tp else 1.0) * p.scale
        self.crop = (tp.crop_size if tp else 0) or p.crop_size
        self.mirror = (tp.mirror if tp else False) or p.mirror
        mean = list(tp.mean_value) if tp else []
        if tp and tp.mean_file:
            raise self.spec_error("mean_file is not supported for this source; use mean_value",
                                  field="transform_param.mean_file")
        shape = self.images.shape[1:]
        if self.crop and len(shape) != 3:
            raise self.spec_error("crop_size needs image (C, H, W) records", field="transform_param.crop_size")
        if self.crop:
            shape = (shape[0], self.crop, self.crop)
        if mean and len(shape) >= 1:
            if len(mean) not in (1, shape[0]):
                raise self.spec_error(f"{len(mean)} mean_value(s) for {shape[0]} channels",
                                      field="transform_param.mean_value")
            self.mean = np.asarray(mean, dtype=np.float32).reshape((-1,) + (1,) * (len(shape) - 1))
        else:
            self.mean = None
        self.cursor = 0
        self.epoch = 0
        self.order = self._new_order()
        tops = [(p.batch_size,) + tuple(shape)]
        if len(self.lp.top) > 1:
            tops.append((p.batch_size,))
        return tops

    def _new_order(self):
        return self.rng.permutation(self.n) if self.p.shuffle else np.arange(self.n)

    def next_indices(self) -> np.ndarray:
        """Indices of the next batch, advancing the cursor (and the epoch) like Caffe."""
        out = np.empty(self.p.batch_size, dtype=np.int64)
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
        return out

    def _transform(self, batch: np.ndarray) -> np.ndarray:
        x = batch.astype(np.float32)
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
            flip = self.rng.random(x.shape[0]) < 0.5
            x[flip] = x[flip][..., ::-1]
        if self.mean is not None:
            x -= self.mean
        if self.scale != 1.0:
            x *= np.float32(self.scale)
        return x

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


def _open(source, split, base):
    from ..data import open_source  # noqa: PLC0415

    return open_source(source, split, base)
