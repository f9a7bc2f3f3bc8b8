"""Images for a classifier: decoding, resizing, cropping and Caffe's input ``Transformer``.

pycaffe's semantics (BVLC ``python/caffe/io.py`` and ``classifier.py``), shared by
``netspec.pycaffe`` and ``netspec predict``: ``load_image`` gives H×W×K float32 in [0, 1] (RGB,
or one channel with ``color=False``); ``Transformer.preprocess`` resizes to the input's spatial
size, then transposes, swaps channels, scales by ``raw_scale``, subtracts the mean and scales by
``input_scale``, in that order; ``deprocess`` undoes it. Images are read with Pillow (Caffe:
scikit-image; grey from colour uses Pillow's weights), resized bilinearly with pixel centres
aligned and edges repeated (scikit-image's order-1 ``resize``). ``center_crop`` and
``oversample`` cut the crops ``caffe.Classifier.predict`` feeds the net.
"""

from __future__ import annotations

import numpy as np

from .errors import DataError, ShapeError


# -- images -------------------------------------------------------------------------------------
def load_image(filename, color: bool = True) -> np.ndarray:
    """An image file as float32 H×W×3 (``color``) or H×W×1, values in [0, 1]."""
    try:
        from PIL import Image, UnidentifiedImageError  # noqa: PLC0415 - optional: Pillow
    except ImportError:
        raise DataError("reading images needs Pillow: pip install 'netspec[caffe]' "
                        "(or pip install pillow)") from None
    try:
        with Image.open(filename) as im:
            if im.mode in ("I;16", "I;16B", "I"):
                a = np.asarray(im, np.float32) / (65535.0 if im.mode.startswith("I;16") else 1.0)
                a = a[:, :, None]
                return np.tile(a, (1, 1, 3)) if color else a
            im = im.convert("RGB" if color else "L")
            a = np.asarray(im, np.float32) / np.float32(255)
    except FileNotFoundError:
        raise DataError("image file not found", file=str(filename)) from None
    except UnidentifiedImageError:
        raise DataError("not an image Pillow can read (unknown or damaged format)",
                        file=str(filename)) from None
    except OSError as e:
        raise DataError(f"cannot read the image: {e}", file=str(filename)) from None
    return a if a.ndim == 3 else a[:, :, None]


def _resize_axis(a: np.ndarray, axis: int, n: int) -> np.ndarray:
    """Linear interpolation along ``axis`` to ``n`` samples (pixel centres aligned)."""
    m = a.shape[axis]
    if m == n:
        return a
    x = (np.arange(n, dtype=np.float64) + 0.5) * (m / n) - 0.5
    x = np.clip(x, 0, m - 1)
    lo = np.floor(x).astype(int)
    hi = np.minimum(lo + 1, m - 1)
    w = (x - lo).reshape([-1 if k == axis else 1 for k in range(a.ndim)])
    return np.take(a, lo, axis=axis) * (1 - w) + np.take(a, hi, axis=axis) * w


def resize_image(im: np.ndarray, new_dims, interp_order: int = 1) -> np.ndarray:
    """H×W×K ``im`` resized to ``new_dims`` (height, width): bilinear (``interp_order`` 1) or
    nearest (0)."""
    im = np.asarray(im)
    h, w = int(new_dims[0]), int(new_dims[1])
    if im.shape[:2] == (h, w):
        return im.astype(np.float32)
    if interp_order == 0:
        rows = np.minimum((np.arange(h) * im.shape[0] / h).astype(int), im.shape[0] - 1)
        cols = np.minimum((np.arange(w) * im.shape[1] / w).astype(int), im.shape[1] - 1)
        return im[rows][:, cols].astype(np.float32)
    if interp_order != 1:
        raise ShapeError(f"resize_image supports interp_order 0 and 1, not {interp_order}")
    out = _resize_axis(_resize_axis(im.astype(np.float64), 0, h), 1, w)
    return out.astype(np.float32)


def resize_images(images: np.ndarray, new_dims) -> np.ndarray:
    """N×H×W×K ``images`` resized bilinearly to ``new_dims`` (height, width), as
    ``resize_image`` does one."""
    images = np.asarray(images)
    h, w = int(new_dims[0]), int(new_dims[1])
    if images.shape[1:3] == (h, w):
        return images.astype(np.float32, copy=False)
    out = _resize_axis(_resize_axis(images.astype(np.float64), 1, h), 2, w)
    return out.astype(np.float32)


def center_crop(images: np.ndarray, crop_dims) -> np.ndarray:
    """The centre ``crop_dims`` (height, width) of N×H×W×K ``images`` (``Classifier``'s
    window: from ``(size − crop)/2`` rounded down)."""
    images = np.asarray(images)
    size = np.array(images.shape[1:3])
    crop = np.array([int(crop_dims[0]), int(crop_dims[1])])
    if np.any(crop > size):
        raise ShapeError(f"cannot crop {tuple(crop)} from images of {tuple(size)}: resize them "
                         "to at least the crop size")
    top = (size / 2.0 - crop / 2.0).astype(int)
    return images[:, top[0]:top[0] + crop[0], top[1]:top[1] + crop[1], :]


def classifier_crops(images, image_dims, crop_dims, ten_crops: bool) -> np.ndarray:
    """What ``caffe.Classifier.predict`` feeds its net: ``images`` (N×H×W×K, or a list of
    H×W×K of any sizes) resized to ``image_dims``, then the centre crop (N×h×w×K) or, with
    ``ten_crops``, the crops of ``oversample`` (N·10×h×w×K, ten per image)."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        resized = resize_images(images, image_dims)
    elif len({np.shape(x) for x in images}) == 1:
        resized = resize_images(np.stack(images), image_dims)
    else:  # sizes differ: one resize each
        resized = np.stack([resize_image(x, image_dims) for x in images])
    if ten_crops:
        return oversample(resized, crop_dims)
    return center_crop(resized, crop_dims)


def oversample(images, crop_dims) -> np.ndarray:
    """Ten crops per image: the four corners and the centre, then their mirrors (left-right),
    in that order (N·10×h×w×K; pycaffe's ``caffe.io.oversample``)."""
    images = np.asarray(images, dtype=np.float32)
    n, height, width, k = images.shape
    h, w = int(crop_dims[0]), int(crop_dims[1])
    if h > height or w > width:
        raise ShapeError(f"cannot crop {(h, w)} from images of {(height, width)}")
    centre = (int(height / 2.0 - h / 2.0), int(width / 2.0 - w / 2.0))
    corners = [(0, 0), (0, width - w), (height - h, 0), (height - h, width - w), centre]
    crops = np.empty((n, 10, h, w, k), dtype=np.float32)
    for i, (top, left) in enumerate(corners):  # five windows, each cut from every image at once
        crops[:, i] = images[:, top:top + h, left:left + w, :]
    crops[:, 5:] = crops[:, :5, :, ::-1, :]
    return crops.reshape(n * 10, h, w, k)


# -- the input transformer -----------------------------------------------------------------------
class Transformer:
    """Preprocess images for a net's inputs: ``Transformer({name: blob shape})``."""

    def __init__(self, inputs: dict):
        self.inputs = {k: tuple(v) for k, v in inputs.items()}
        self.transpose: dict = {}
        self.channel_swap: dict = {}
        self.raw_scale: dict = {}
        self.mean: dict = {}
        self.input_scale: dict = {}

    def _check(self, in_: str) -> None:
        if in_ not in self.inputs:
            raise KeyError(f"{in_} is not one of the net inputs: {list(self.inputs)}")

    def preprocess(self, in_: str, data) -> np.ndarray:
        """H×W×K image -> K×H×W input for blob ``in_``."""
        return self.preprocess_batch(in_, np.asarray(data)[None])[0]

    def preprocess_batch(self, in_: str, images) -> np.ndarray:
        """N×H×W×K images -> N×K×H×W inputs for blob ``in_``, each as ``preprocess`` makes it:
        resized to the blob's H×W, transposed, channels swapped, ``x·raw_scale − mean``, then
        ``·input_scale``."""
        self._check(in_)
        caffe_in = np.asarray(images).astype(np.float32, copy=False)
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[1:3] != in_dims:
            caffe_in = resize_images(caffe_in, in_dims)
        if transpose is not None:
            caffe_in = caffe_in.transpose((0, *(t + 1 for t in transpose)))
        if channel_swap is not None:
            caffe_in = caffe_in[:, list(channel_swap)]
        if raw_scale is not None:
            caffe_in = caffe_in * np.float32(raw_scale)
        if mean is not None:
            caffe_in = caffe_in - mean
        if input_scale is not None:
            caffe_in = caffe_in * np.float32(input_scale)
        return caffe_in

    def deprocess(self, in_: str, data) -> np.ndarray:
        """Invert ``preprocess`` (without the resize)."""
        self._check(in_)
        decaf_in = np.array(data, copy=True).squeeze()
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            decaf_in /= input_scale
        if mean is not None:
            decaf_in += mean
        if raw_scale is not None:
            decaf_in /= raw_scale
        if channel_swap is not None:
            decaf_in = decaf_in[np.argsort(channel_swap), :, :]
        if transpose is not None:
            decaf_in = decaf_in.transpose(np.argsort(transpose))
        return decaf_in

    def set_transpose(self, in_: str, order) -> None:
        """Axis order of the input relative to the image's (usually (2, 0, 1): HWK -> KHW)."""
        self._check(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise ShapeError("transpose order needs to have the same number of dimensions as the input")
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_: str, order) -> None:
        """Channel order after the transpose (e.g. (2, 1, 0): RGB -> BGR)."""
        self._check(in_)
        if len(order) != self.inputs[in_][1]:
            raise ShapeError("channel swap needs to have the same number of dimensions as the input channels")
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_: str, scale) -> None:
        """Scale applied after the channel swap, before the mean (e.g. 255 for [0, 255] models)."""
        self._check(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_: str, mean) -> None:
        """Per-channel mean (K values) or mean image (K×H×W, resized if its size differs)."""
        self._check(in_)
        mean = np.asarray(mean)
        ms = mean.shape
        if mean.ndim == 1:
            if ms[0] != self.inputs[in_][1]:
                raise ShapeError("Mean channels incompatible with input.")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if len(ms) == 2:
                ms = (1,) + ms
            if len(ms) != 3:
                raise ShapeError("Mean shape invalid")
            if ms != self.inputs[in_][1:]:
                in_shape = self.inputs[in_][1:]
                m_min, m_max = mean.min(), mean.max()
                normal_mean = (mean - m_min) / (m_max - m_min)
                mean = resize_image(normal_mean.transpose((1, 2, 0)), in_shape[1:]).transpose(
                    (2, 0, 1)) * (m_max - m_min) + m_min
        self.mean[in_] = mean.astype(np.float32)

    def set_input_scale(self, in_: str, scale) -> None:
        """Scale applied last, after the mean."""
        self._check(in_)
        self.input_scale[in_] = scale
