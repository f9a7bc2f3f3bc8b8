"""DeepLab v2's ImageSegData: images and their label images for semantic segmentation, with
DeepLab's transform (random scale, padding to the crop, crop, mirror) applied to both alike."""

from __future__ import annotations

import numpy as np

from ..data.image_list import load_image, read_seg_list, resize_linear, resize_nearest
from ..data.sources import resolve_file
from ..errors import DataError
from .image_data import ImageData
from .registry import register

FIELD = "image_data_param"


@register("ImageSegData")
class ImageSegData(ImageData):
    """DeepLab v2's ``ImageSegDataLayer`` (deeplab-public-ver2, as carried by hszhao/PSPNet)
    with ``DataTransformer::TransformImgAndSeg``.

    ``image_data_param``: ``source`` lists ``image label`` lines; ``label_type`` says what the
    second word is: PIXEL a label image (read grey), IMAGE a class c (the label image is c
    everywhere), NONE nothing (the label image is ``ignore_label`` everywhere). ``root_folder``,
    ``new_height``/``new_width`` (both images resized with OpenCV's INTER_LINEAR, the label
    image too, as the fork does), ``is_color``, ``shuffle``, ``rand_skip``, ``batch_size`` as
    ImageData's. Label images are 8-bit: ``ignore_label`` is saturated to [0, 255].

    Per image, in the fork's order: mirror with probability 1/2 (``transform_param.mirror``,
    in both phases); one of ``scale_factors`` drawn uniformly, s ≠ 1 resizing both images to
    (⌊H·s⌋, ⌊W·s⌋) (image INTER_LINEAR, label INTER_NEAREST); the images padded at the bottom
    and right up to the crop (image with the mean, label with ``ignore_label``); the crop
    (``crop_size``, or ``crop_height`` and ``crop_width``) at a random offset in TRAIN, the
    centre ⌊(H − h)/2⌋ in TEST. Then data = (pixel − ``mean_value``[c]) · ``scale`` (padding
    0), label = the label pixel. Without a crop every image must have the first one's size.

    Tops: data (N, C, h, w), label (N, 1, h, w), data_dim (N, 1, 1, 2): each image's height and
    width before scaling (at most h, w) — the fork makes missing tops itself, so one to three
    may be named. No gradient.
    """

    min_tops = 1
    max_tops = 3
    exact_tops = None
    legacy_transform_fields = False

    def setup(self, bottom_shapes):
        p = self.p
        tp = self.lp.transform_param
        self._set_together(("new_height", "new_width"))
        for f in ("crop_size", "mirror", "scale", "mean_file"):
            if f in p.model_fields_set:
                raise self.spec_error(f"ImageSegData reads transform_param.{f}, not "
                                      f"{FIELD}.{f}", field=f"{FIELD}.{f}")
        self._refuse_fork_transform_fields()
        if tp is not None and tp.mean_file:
            raise self.spec_error("ImageSegData does not support a mean file (the fork refuses "
                                  "it): give mean_value", field="transform_param.mean_file")
        self.crop_hw = self._crop(tp)
        self.mirror = bool(tp and tp.mirror)
        self.scale = float(tp.scale) if tp else 1.0
        self.factors = [float(s) for s in tp.scale_factors] if tp else []
        if any(s <= 0 for s in self.factors):
            raise self.spec_error(f"scale_factors must be positive, got {self.factors}",
                                  field="transform_param.scale_factors")
        self.ignore = int(np.clip(p.ignore_label, 0, 255))
        listing = resolve_file(p.source, self.net_dir)
        try:
            self.entries = read_seg_list(listing, p.label_type)
        except DataError as e:
            raise self.error(e.format(), field=f"{FIELD}.source", cls=DataError) from None
        self.files = [self._find(e.path, e.line, listing, self.net_dir) for e in self.entries]
        self.label_files = [self._find(e.label_path, e.line, listing, self.net_dir)
                            if p.label_type == "PIXEL" else None for e in self.entries]
        self.n = len(self.entries)
        self._start(p, FIELD)
        first = self._read(int(self.order[self.cursor]))
        self.first_shape = tuple(first.shape)
        c = self.first_shape[0]
        h, w = self.crop_hw or self.first_shape[1:]
        mean = list(tp.mean_value) if tp else []
        if mean and len(mean) not in (1, c):
            raise self.spec_error(f"{len(mean)} mean_value(s) for {c} channels",
                                  field="transform_param.mean_value")
        self.mean = np.broadcast_to(np.asarray(mean or [0.0], np.float32), (c,)).reshape(c, 1, 1)
        n = p.batch_size
        return [(n, c, h, w), (n, 1, h, w), (n, 1, 1, 2)][:len(self.lp.top)]

    def _crop(self, tp) -> tuple[int, int] | None:
        """(height, width) of the crop: ``crop_size`` or both ``crop_height``/``crop_width``
        (the fork refuses other mixes); None for no crop."""
        if tp is None:
            return None
        given = tp.model_fields_set
        hw = {"crop_height", "crop_width"} & given
        if hw and ("crop_size" in given or len(hw) != 2):
            raise self.spec_error("give crop_size, or both crop_height and crop_width",
                                  field=f"transform_param.{sorted(hw)[0]}")
        h, w = (tp.crop_height, tp.crop_width) if hw else (tp.crop_size, tp.crop_size)
        return (h, w) if h > 0 and w > 0 else None

    def _read_pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image i (C, H, W) and its label image (1, H, W), uint8, as the fork reads them."""
        p = self.p
        image = self._read(i)
        if p.label_type != "PIXEL":
            value = self.ignore if p.label_type == "NONE" else int(self.entries[i].label_path)
            return image, np.full((1,) + image.shape[1:], value, np.uint8)
        try:
            label = load_image(self.label_files[i], False, p.new_height, p.new_width)
        except DataError as e:
            raise self.error(f"{e.format()} (line {self.entries[i].line} of the image list)",
                             field=f"{FIELD}.source", cls=DataError) from None
        if label.shape[1:] != image.shape[1:]:
            raise self.error(f"image '{self.files[i]}' is {'×'.join(map(str, image.shape[1:]))}"
                             f" but its label image '{self.label_files[i]}' is "
                             f"{'×'.join(map(str, label.shape[1:]))} (line "
                             f"{self.entries[i].line} of the image list): they must have the "
                             "same size", field=f"{FIELD}.source", cls=DataError)
        return image, label

    def _scaled(self, image, label):
        """One of ``scale_factors`` (drawn) applied to both images."""
        s = np.float32(self.factors[int(self.rng.integers(len(self.factors)))])
        if s == 1:
            return image, label
        h, w = int(np.float32(image.shape[1]) * s), int(np.float32(image.shape[2]) * s)
        if h < 1 or w < 1:
            raise self.error(f"scale factor {s} makes a {image.shape[1]}×{image.shape[2]} image "
                             "empty", field="transform_param.scale_factors", cls=DataError)
        return resize_linear(image, h, w), resize_nearest(label, h, w)

    def forward(self, bottom, top):
        idx = self.next_indices()
        n, (c, h, w) = len(idx), top[0].data.shape[1:]
        data = np.empty((n, c, h, w), np.float32)
        data[...] = self.mean            # padding: the mean, 0 once it is subtracted
        label = np.full((n, 1, h, w), self.ignore, np.float32)
        dims = np.empty((n, 1, 1, 2), np.float32)
        flip = np.zeros(n, bool)
        for k, i in enumerate(idx):
            image, seg = self._read_pair(int(i))
            dims[k, 0, 0] = min(h, image.shape[1]), min(w, image.shape[2])
            flip[k] = self.mirror and bool(self.rng.integers(2))
            if self.factors:
                image, seg = self._scaled(image, seg)
            H, W = image.shape[1:]
            if self.crop_hw is None:
                if (image.shape[0], H, W) != (c, h, w):
                    raise self.error(f"image '{self.files[i]}' is {'×'.join(map(str, image.shape))}"
                                     f"; without a crop every image must have the first one's "
                                     f"size {c}×{h}×{w}", field=f"{FIELD}.source", cls=DataError)
                h0 = w0 = 0
            elif self.phase == "TRAIN":
                h0 = int(self.rng.integers(max(H - h, 0) + 1))
                w0 = int(self.rng.integers(max(W - w, 0) + 1))
            else:
                h0, w0 = max(H - h, 0) // 2, max(W - w, 0) // 2
            window = image[:, h0:h0 + h, w0:w0 + w]
            rows, cols = window.shape[1:]
            data[k, :, :rows, :cols] = window
            label[k, :, :rows, :cols] = seg[:, h0:h0 + h, w0:w0 + w]
        data -= self.mean
        if self.scale != 1.0:
            data *= np.float32(self.scale)
        data[flip] = data[flip][..., ::-1]
        label[flip] = label[flip][..., ::-1]
        for blob, a in zip(top, (data, label, dims)):
            blob.data[...] = self.backend.asarray(a)
