"""pycaffe's ``caffe.io``: images, the input ``Transformer``, and blob/datum protos.

As BVLC's ``python/caffe/io.py``. The image half (``load_image``, ``resize_image``,
``oversample``, ``Transformer``) lives in ``netspec/images.py``, shared with ``netspec
predict``; ``*_to_blobproto`` and ``*_datum`` need protobuf.
"""

from __future__ import annotations

import numpy as np

from ..caffe import pb2
from ..errors import ShapeError
from ..images import Transformer, load_image, oversample, resize_image

__all__ = ["Transformer", "load_image", "oversample", "resize_image", "blobproto_to_array",
           "array_to_blobproto", "arraylist_to_blobprotovector_str",
           "blobprotovector_str_to_arraylist", "array_to_datum", "datum_to_array"]


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
