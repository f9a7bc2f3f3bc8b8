"""ImageData: Caffe's layer that reads images listed in a text file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.image_list import find_image, load_image, read_image_list
from ..data.sources import resolve_file
from ..errors import DataError
from .data import SKIP_KEY, Data
from .registry import register


@register("ImageData")
class ImageData(Data):
    """Batches of (data, label) from image files listed as ``path label`` lines (Caffe's
    ImageData layer).

    ``image_data_param.source``: the list file, relative to the net file's folder, then to the
    working directory. Each image is ``root_folder + path`` (string concatenation, as in Caffe);
    a relative result is looked up from the net file's folder, the list file's folder, then the
    working directory. Every listed file must exist when the net is built; images are read with
    Pillow at each forward (not kept in memory).

    Images: B, G, R planes (``is_color``, OpenCV's order) or 1 grey plane, resized to
    ``new_height``×``new_width`` (both or neither) with OpenCV's INTER_LINEAR sampling, then
    ``transform_param`` exactly as the Data layer. Without resizing or ``crop_size`` all images
    must have the first one's size. Order: file order, or shuffled (the net's random generator)
    at set-up and after every pass when ``shuffle``; ``rand_skip`` starts at a random line in
    [0, rand_skip). Tops: data (batch, C, H, W), label (batch,) as floats.
    """

    param_block = "image_data_param"
    exact_tops = 2
    min_tops = 2
    max_tops = 2

    def setup(self, bottom_shapes):

        p = self.p
        if (p.new_height > 0) != (p.new_width > 0):
            raise self.spec_error("set new_height and new_width together (or neither)",
                                  field="image_data_param.new_height")
        net_dir = self.net_dir
        listing = resolve_file(p.source, net_dir)
        try:
            entries = read_image_list(listing)
        except DataError as e:
            raise self.error(e.format(), field="image_data_param.source", cls=DataError) from None
        self.entries = entries
        self.files = [self._find(e, listing, net_dir) for e in entries]
        self.labels = np.asarray([e.label for e in entries], dtype=np.int64)
        self.n = len(entries)
        self.cursor = 0
        self.epoch = 0
        self.order = self._new_order()
        if p.rand_skip:
            rng = self.rng if self.shard is None else self.shard.order_rng(SKIP_KEY)
            skip = int(rng.integers(p.rand_skip))
            if skip >= self.n:
                raise self.error(f"rand_skip drew {skip} but the list has only {self.n} images",
                                 field="image_data_param.rand_skip", cls=DataError)
            self.cursor = skip
        first = self._read(int(self.order[self.cursor]))
        self.first_shape = tuple(first.shape)
        shape = self._setup_transform(self.first_shape, "image_data_param")
        return [(p.batch_size,) + tuple(shape), (p.batch_size,)]

    def _find(self, entry, listing: Path, net_dir: Path | None) -> Path:

        try:
            return find_image(self.p.root_folder + entry.path, listing, net_dir, entry.line)
        except DataError as e:
            raise self.error(e.format(), field="image_data_param.source", cls=DataError) from None

    def _read(self, i: int) -> np.ndarray:

        p = self.p
        try:
            return load_image(self.files[i], p.is_color, p.new_height, p.new_width)
        except DataError as e:
            raise self.error(f"{e.format()} (line {self.entries[i].line} of the image list)",
                             field="image_data_param.source", cls=DataError) from None

    def _check_image(self, i: int, shape: tuple) -> None:
        """Caffe's per-image checks: channels, size (fixed without crop), mean image size."""
        first = self.first_shape
        ok = shape[0] == first[0]
        if self.mean_image is not None or not self.crop:
            ok = ok and shape == first
        else:
            ok = ok and shape[1] >= self.crop and shape[2] >= self.crop
        if not ok:
            need = ("the first image's size (set new_height/new_width, or crop_size)"
                    if not self.crop and self.mean_image is None else
                    "the mean image's size" if self.mean_image is not None else
                    f"at least crop_size {self.crop}")
            raise self.error(f"image '{self.files[i]}' (line {self.entries[i].line} of the list) "
                             f"is {'×'.join(map(str, shape))}; the first image is "
                             f"{'×'.join(map(str, first))}: it must have {need}",
                             field="image_data_param.source", cls=DataError)

    def forward(self, bottom, top):
        idx = self.next_indices()
        images = []
        for i in idx:
            a = self._read(int(i))
            self._check_image(int(i), tuple(a.shape))
            images.append(a)
        if len({a.shape for a in images}) == 1:
            out = self._transform(np.stack(images))
        else:   # sizes differ (allowed with crop_size): transform one by one
            out = np.concatenate([self._transform(a[None]) for a in images])
        top[0].data[...] = self.backend.asarray(out)
        top[1].data[...] = self.backend.asarray(self.labels[idx])
