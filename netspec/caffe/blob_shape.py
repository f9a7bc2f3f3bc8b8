"""Caffe's rule for fitting a stored parameter blob to a net's blob shape (``Blob::ShapeEquals``
for a BlobProto): equal shapes, or the legacy 4-D num/channels/height/width shape padded with
leading 1s. Every loader of weights (``.npz``, ``.caffemodel``, resume, export) uses it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import SnapshotError


def shape_text(shape) -> str:
    """``(500, 800)`` / ``(500,)`` / ``()``: a shape as users read it in messages."""
    return str(tuple(int(d) for d in shape))


def fit_blob(key: str, a: np.ndarray, shape, file: str | Path | None = None) -> np.ndarray:
    """``a`` as the net's blob ``key`` of ``shape``, by Caffe's rules only.

    Equal shapes pass unchanged. The one reshape allowed is Caffe's legacy one
    (``Blob::ShapeEquals`` for a BlobProto with num/channels/height/width): a 4-D array whose
    shape is the net's shape (at most 4 axes) padded with leading 1s, e.g. InnerProduct weights
    stored as (1, 1, N, K) or a bias as (1, 1, 1, N); leading 1s never move a value. Anything
    else, including another layout of the same number of values (a transposed matrix), is a
    SnapshotError naming the blob and both shapes: reshaping it would load scrambled weights.
    """
    shape = tuple(int(d) for d in shape)
    if a.shape == shape:
        return a
    if a.ndim == 4 and len(shape) <= 4 and a.shape == (1,) * (4 - len(shape)) + shape:
        return a.reshape(shape)
    same = ""
    if a.size == math.prod(shape):
        same = (" It holds the same number of values in another layout (transposed or "
                "reordered?), which is never reshaped")
        same += (f": only Caffe's legacy 4-D shape {shape_text((1,) * (4 - len(shape)) + shape)} "
                 "would be." if len(shape) < 4 else ".")
    raise SnapshotError(f"blob '{key}' has shape {shape_text(a.shape)} in the file but the net "
                        f"expects {shape_text(shape)}.{same}", file=str(file) if file else None)
