"""ImageData: Caffe's layer that reads images listed in a text file; SegNet's DenseImageData
(images with per-pixel label images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.image_list import find_image, load_image, read_image_list, read_image_pairs
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
        self._set_together(("new_height", "new_width"))
        for f in ("label_type", "ignore_label"):
            if f in p.model_fields_set:
                raise self.spec_error(f"{f} is a field of DeepLab v2's ImageSegData layer; "
                                      "ImageData does not read it (type: ImageSegData?)",
                                      field=f"image_data_param.{f}")
        net_dir = self.net_dir
        listing = resolve_file(p.source, net_dir)
        try:
            entries = read_image_list(listing)
        except DataError as e:
            raise self.error(e.format(), field="image_data_param.source", cls=DataError) from None
        self.entries = entries
        self.files = [self._find(e.path, e.line, listing, net_dir) for e in entries]
        self.labels = np.asarray([e.label for e in entries], dtype=np.int64)
        self.n = len(entries)
        self._start(p, "image_data_param")
        first = self._read(int(self.order[self.cursor]))
        self.first_shape = tuple(first.shape)
        shape = self._setup_transform(self.first_shape, "image_data_param")
        return [(p.batch_size,) + tuple(shape), (p.batch_size,)]

    def _set_together(self, *pairs: tuple[str, str]) -> None:
        """A spec error unless both fields of each pair of the param block are set (> 0) or
        neither is."""
        for a, b in pairs:
            if (getattr(self.p, a) > 0) != (getattr(self.p, b) > 0):
                raise self.spec_error(f"set {a} and {b} together (or neither)",
                                      field=f"{self.param_block}.{a}")

    def _start(self, p, field: str) -> None:
        """The first pass over the n listed images: a fresh order from its first line, or with
        ``rand_skip`` from a line drawn in [0, rand_skip) (data-parallel ranks draw it from
        their shared generator, so they start alike)."""
        self.cursor, self.epoch = 0, 0
        self.order = self._new_order()
        if p.rand_skip:
            rng = self.rng if self.shard is None else self.shard.order_rng(SKIP_KEY)
            skip = int(rng.integers(p.rand_skip))
            if skip >= self.n:
                raise self.error(f"rand_skip drew {skip} but the list has only {self.n} images",
                                 field=f"{field}.rand_skip", cls=DataError)
            self.cursor = skip

    def _find(self, name: str, line: int, listing: Path, net_dir: Path | None) -> Path:
        """The file of ``root_folder + name`` (line ``line`` of ``listing``); missing: the
        layer's error naming its ``source``."""
        try:
            return find_image(self.p.root_folder + name, listing, net_dir, line)
        except DataError as e:
            raise self.error(e.format(), field=f"{self.param_block}.source",
                             cls=DataError) from None

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


@register("DenseImageData")
class DenseImageData(ImageData):
    """SegNet's ``DenseImageDataLayer`` (alexgkendall/caffe-segnet): batches of images and their
    per-pixel label images, listed as ``image label_image`` lines (whitespace-separated paths).

    ``dense_image_data_param``: ``source``, ``batch_size``, ``root_folder`` (prepended to both
    paths), ``shuffle``, ``rand_skip``, ``is_color`` and ``new_height``/``new_width`` as
    ImageData's; the label image is read grey and resized with nearest neighbours (OpenCV's
    INTER_NEAREST, as the fork does), never interpolated. Per image, ``mirror`` flips both
    images left-right with probability 1/2 and ``crop_height``/``crop_width`` cut the same
    random window of both. Then the image goes through ``transform_param`` (mean, scale);
    the label keeps its pixel values. ``transform_param``'s ``mirror`` and ``crop_size`` are
    refused, as the fork refuses them (they would move the image without its label).

    Tops: data (batch, C, H, W), label (batch, 1, H, W) as floats. Every image (after resizing)
    must have the first one's size, and its label image the same height and width (the fork
    also takes images of several sizes with batch_size 1, reshaping its tops per batch).
    """

    param_block = "dense_image_data_param"
    legacy_transform_fields = False

    def setup(self, bottom_shapes):

        p = self.p
        field = "dense_image_data_param"
        self._set_together(("new_height", "new_width"), ("crop_height", "crop_width"))
        tp = self.lp.transform_param
        for f in ("mirror", "crop_size"):
            if tp is not None and getattr(tp, f):
                raise self.spec_error(
                    f"transform_param.{f} would move the image without its label image: use "
                    f"dense_image_data_param.{'mirror' if f == 'mirror' else 'crop_height/crop_width'}",
                    field=f"transform_param.{f}")
        net_dir = self.net_dir
        listing = resolve_file(p.source, net_dir)
        try:
            pairs = read_image_pairs(listing)
        except DataError as e:
            raise self.error(e.format(), field=f"{field}.source", cls=DataError) from None
        self.entries = pairs
        self.files = [self._find(e.path, e.line, listing, net_dir) for e in pairs]
        self.label_files = [self._find(e.label_path, e.line, listing, net_dir) for e in pairs]
        self.n = len(pairs)
        self._start(p, field)
        image, label = self._read_pair(int(self.order[self.cursor]))
        self.first_shape = tuple(image.shape)
        C, H, W = self.first_shape
        if p.crop_height:
            if p.crop_height > H or p.crop_width > W:
                raise self.spec_error(f"crop {p.crop_height}×{p.crop_width} is larger than the "
                                      f"images ({H}×{W})", field=f"{field}.crop_height")
            H, W = p.crop_height, p.crop_width
        shape = self._setup_transform((C, H, W), field)
        return [(p.batch_size,) + tuple(shape), (p.batch_size, 1, H, W)]

    def _read_pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image i (C, H, W) and its label image (1, H, W), resized, sizes checked."""
        p = self.p
        where = f"(line {self.entries[i].line} of the image list)"
        try:
            image = load_image(self.files[i], p.is_color, p.new_height, p.new_width)
            label = load_image(self.label_files[i], False, p.new_height, p.new_width,
                               nearest=True)
        except DataError as e:
            raise self.error(f"{e.format()} {where}", field="dense_image_data_param.source",
                             cls=DataError) from None
        first = getattr(self, "first_shape", image.shape)
        if label.shape[1:] != image.shape[1:] or image.shape != first:
            raise self.error(
                f"image '{self.files[i]}' is {'×'.join(map(str, image.shape))} and its label "
                f"image {'×'.join(map(str, label.shape))} {where}: the label image must have "
                f"the image's height and width, and every image the first one's size "
                f"{'×'.join(map(str, first))} (set new_height/new_width)",
                field="dense_image_data_param.source", cls=DataError)
        return image, label

    def forward(self, bottom, top):
        p = self.p
        images, labels = [], []
        for i in self.next_indices():
            image, label = self._read_pair(int(i))
            if p.mirror and self.rng.integers(2):
                image, label = image[..., ::-1], label[..., ::-1]
            if p.crop_height:
                h0 = int(self.rng.integers(image.shape[1] - p.crop_height + 1))
                w0 = int(self.rng.integers(image.shape[2] - p.crop_width + 1))
                window = (slice(None), slice(h0, h0 + p.crop_height), slice(w0, w0 + p.crop_width))
                image, label = image[window], label[window]
            images.append(image)
            labels.append(label)
        top[0].data[...] = self.backend.asarray(self._transform(np.stack(images)))
        top[1].data[...] = self.backend.asarray(np.stack(labels).astype(np.float32))
