"""Resolve a Data layer ``source`` to in-memory arrays.

* ``builtin:mnist`` — the MNIST shipped with netspec (``split: train|test``)
* a folder with MNIST IDX files (``split`` picks ``train-*`` or ``t10k-*``)
* ``file.npz`` with arrays ``data`` (N, C, H, W) or (N, D) and ``label`` (N,)
* a Caffe LMDB or LevelDB directory of ``Datum`` records (``backend: LMDB`` or ``LEVELDB``;
  ``netspec.data.datum_db``)
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from ..caffe import pb2
from ..caffe.caffemodel import blob_to_array
from ..errors import DataError, NetspecError
from .dataset import Dataset
from .datum_db import backend_of, open_db
from .mnist import load_mnist


@lru_cache(maxsize=16)
def _npz(path: str) -> Dataset:
    try:
        with np.load(path) as z:
            missing = [k for k in ("data", "label") if k not in z.files]
            if missing:
                raise DataError(f".npz source lacks array(s) {missing}; it has {z.files}", file=path)
            data, label = z["data"], z["label"]
    except FileNotFoundError:
        raise DataError("data source not found", file=path) from None
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - zip/pickle errors of a corrupt file
        raise DataError(f"cannot read .npz data source: {e}", file=path) from None
    if data.shape[0] != label.shape[0]:
        raise DataError(f"'data' has {data.shape[0]} rows but 'label' has {label.shape[0]}", file=path)
    return Dataset(data, label.reshape(-1))


def open_source(source: str, split: str = "train", base_dir: str | Path | None = None, *,
                backend: str | None = None, color: bool | None = None) -> Dataset:
    """The dataset a Data layer reads. Relative paths resolve against ``base_dir``.

    ``backend``: the Data layer's ``data_param.backend`` when the file sets it (None when not).
    A Caffe LevelDB directory is read when ``backend`` is ``LEVELDB`` or unset (Caffe's
    default); an LMDB directory needs ``LMDB`` said (netspec, like Caffe, does not guess it).
    ``color`` goes to ``datum_db.open_db`` (encoded records only).
    """
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        if name != "mnist":
            raise DataError(f"unknown built-in dataset '{name}' (available: mnist)")
        return Dataset(*load_mnist(split))
    path = Path(source).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if path.suffix == ".npz" and not path.is_dir():
        return _npz(str(path))
    found = backend_of(path)
    if found == "LMDB" and backend != "LMDB":
        raise DataError("this source is a Caffe LMDB: set data_param.backend: LMDB (Caffe's "
                        "default backend is LEVELDB)", file=str(path))
    if found is not None:
        return open_db(path, found if backend is None else backend, color)
    if backend is not None and not (path.is_dir() and any(path.glob("*-ubyte*"))):
        return open_db(path, backend, color)   # a clear error: missing, not a database
    if path.is_dir():
        return Dataset(*load_mnist(split, str(path)))
    if not path.exists():
        raise DataError("data source not found", file=str(path))
    raise DataError("unsupported data source: use builtin:mnist, a folder of MNIST IDX files, "
                    "a .npz file with 'data' and 'label' arrays or a Caffe LMDB or LevelDB "
                    "directory (data_param.backend: LMDB or LEVELDB)", file=str(path))


def resolve_file(path: str, base_dir: str | Path | None) -> Path:
    """An existing file for ``path``: as given if absolute, else relative to ``base_dir`` (the
    net file's folder), then to the working directory (Caffe's). When neither exists, the
    first candidate (for the error message)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    candidates = ([Path(base_dir) / p] if base_dir is not None else []) + [Path.cwd() / p]
    for c in candidates:
        if c.exists():
            return c
    return candidates[0]


def load_mean_file(path: str | Path) -> np.ndarray:
    """Caffe's mean image: a binary ``BlobProto`` (``.binaryproto``) -> float32 (C, H, W).

    The blob's shape is 1×C×H×W (``shape { dim }`` or the legacy num/channels/height/width);
    ``double_data`` is read as float32, as Caffe's ``Blob<float>::FromProto`` does.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError("mean file not found", file=str(path)) from None
    except OSError as e:
        raise DataError(f"cannot read mean file: {e}", file=str(path)) from None
    try:
        P = pb2()
    except NetspecError as e:
        raise DataError(e.message, file=str(path)) from None
    blob = P.BlobProto()
    try:
        blob.ParseFromString(raw)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError
        raise DataError(f"not a binary BlobProto (Caffe's .binaryproto): {e}", file=str(path)) from None
    try:
        mean = blob_to_array(blob, "the mean blob", file=str(path))
    except NetspecError as e:
        raise DataError(e.message, file=str(path)) from None
    shape = mean.shape
    if len(shape) < 3 or any(d != 1 for d in shape[:-3]) or mean.size == 0:
        raise DataError(f"the mean blob has shape {shape}; Caffe's mean image is 1×C×H×W",
                        file=str(path))
    return np.ascontiguousarray(mean.reshape(shape[-3:]), dtype=np.float32)
