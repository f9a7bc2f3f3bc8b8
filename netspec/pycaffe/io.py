"""pycaffe's ``caffe.io``: images, the input ``Transformer``, and blob/datum protos.

As BVLC's ``python/caffe/io.py``: ``load_image`` gives H×W×K float32 in [0, 1] (RGB, or one
channel with ``color=False``); ``Transformer.preprocess`` resizes to the input's spatial size,
then transposes, swaps channels, scales by ``raw_scale``, subtracts the mean and scales by
``input_scale``, in that order; ``deprocess`` undoes it. Images are read with Pillow (Caffe:
scikit-image; grey from colour uses Pillow's weights), resized bilinearly with pixel centres
aligned and edges repeated (scikit-image's order-1 ``resize``). ``*_to_blobproto`` and
``*_datum`` need protobuf.
"""

from __future__ import annotations

import numpy as np

from ..caffe import pb2
from ..errors import DataError, ShapeError


# -- images -------------------------------------------------------------------------------------
def load_image(filename, color: bool = True) -> np.ndarray:
    """An image file as float32 H×W×3 (``color``) or H×W×1, values in [0, 1]."""
    try:
        from PIL import Image  # noqa: PLC0415 - optional: Pillow, only to read image files
    except ImportError:
        raise DataError("caffe.io.load_image needs Pillow: pip install 'netspec[caffe]' "
                        "(or pip install pillow)") from None
    with Image.open(filename) as im:
        if im.mode in ("I;16", "I;16B", "I"):
            a = np.asarray(im, np.float32) / (65535.0 if im.mode.startswith("I;16") else 1.0)
            a = a[:, :, None]
            return np.tile(a, (1, 1, 3)) if color else a
        im = im.convert("RGB" if color else "L")
        a = np.asarray(im, np.float32) / np.float32(255)
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


def oversample(images, crop_dims) -> np.ndarray:
    """Ten crops per image: the four corners and the centre, and their mirrors (N·10×h×w×K)."""
    im_shape = np.array(images[0].shape)
    crop_dims = np.array(crop_dims)
    im_center = im_shape[:2] / 2.0
    h_indices = (0, im_shape[0] - crop_dims[0])
    w_indices = (0, im_shape[1] - crop_dims[1])
    crops_ix = np.empty((5, 4), dtype=int)
    curr = 0
    for i in h_indices:
        for j in w_indices:
            crops_ix[curr] = (i, j, i + crop_dims[0], j + crop_dims[1])
            curr += 1
    crops_ix[4] = np.tile(im_center, (1, 2)) + np.concatenate([-crop_dims / 2.0, crop_dims / 2.0])
    crops_ix = np.tile(crops_ix, (2, 1))
    crops = np.empty((10 * len(images), crop_dims[0], crop_dims[1], im_shape[-1]), dtype=np.float32)
    ix = 0
    for im in images:
        for crop in crops_ix:
            crops[ix] = im[crop[0]:crop[2], crop[1]:crop[3], :]
            ix += 1
        crops[ix - 5:ix] = crops[ix - 5:ix, :, ::-1, :]  # flip for mirrors
    return crops


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
        self._check(in_)
        caffe_in = np.asarray(data).astype(np.float32, copy=False)
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        if channel_swap is not None:
            caffe_in = caffe_in[list(channel_swap), :, :]
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


# -- protos -------------------------------------------------------------------------------------
def blobproto_to_array(blob, return_diff: bool = False) -> np.ndarray:
    """A BlobProto's data (or diff) as an array of its shape (legacy num/channels/… too)."""
    values = np.array(blob.diff if return_diff else blob.data, dtype=np.float32)
    if len(blob.double_diff if return_diff else blob.double_data):
        values = np.array(blob.double_diff if return_diff else blob.double_data)
    if blob.HasField("num") or blob.HasField("channels") or blob.HasField("height") \
            or blob.HasField("width"):
        return values.reshape(blob.num, blob.channels, blob.height, blob.width)
    return values.reshape(tuple(blob.shape.dim))


def array_to_blobproto(arr, diff=None):
    """An array (and optionally its diff, same shape) as a BlobProto."""
    arr = np.asarray(arr)
    blob = pb2().BlobProto()
    blob.shape.dim.extend(arr.shape)
    blob.data.extend(arr.astype(float).flat)
    if diff is not None:
        blob.diff.extend(np.asarray(diff).astype(float).flat)
    return blob


def arraylist_to_blobprotovector_str(arraylist) -> bytes:
    vec = pb2().BlobProtoVector()
    vec.blobs.extend([array_to_blobproto(arr) for arr in arraylist])
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(s: bytes) -> list[np.ndarray]:
    vec = pb2().BlobProtoVector()
    vec.ParseFromString(s)
    return [blobproto_to_array(blob) for blob in vec.blobs]


def array_to_datum(arr, label=None):
    """A C×H×W array as a Datum: uint8 values as bytes, any other as float_data."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ShapeError("Incorrect array shape: a Datum holds a C×H×W array")
    datum = pb2().Datum()
    datum.channels, datum.height, datum.width = arr.shape
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(float).flat)
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum) -> np.ndarray:
    """A Datum's values as a C×H×W array (uint8 for byte data; the label is not included)."""
    shape = (datum.channels, datum.height, datum.width)
    if len(datum.data):
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape)
    return np.array(datum.float_data).astype(float).reshape(shape)
