"""Caffe's LMDB databases of ``Datum`` records, read into memory.

A Caffe ``Data`` layer with ``backend: LMDB`` reads a directory holding ``data.mdb`` (and
usually ``lock.mdb``): one ``Datum`` message per key, read in key order (LMDB's byte order, as
Caffe's cursor does). A Datum holds ``channels``/``height``/``width`` and its pixels as ``data``
bytes (uint8, C×H×W order) or ``float_data``, a ``label``, and ``encoded`` when ``data`` is an
image file (PNG, JPEG, …) to decode. Encoded images are decoded with Pillow into Caffe's
(OpenCV's) layout: colour as B, G, R planes, grey as one plane.

Every record is read into memory at once (``Dataset``); all records must have the same shape.
Needs the ``lmdb`` package (and Pillow for encoded records): ``pip install 'netspec[caffe]'``.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import DataError

INSTALL = "pip install 'netspec[caffe]'"


def is_lmdb_dir(path: Path) -> bool:
    return path.is_dir() and (path / "data.mdb").is_file()


def is_leveldb_dir(path: Path) -> bool:
    """A LevelDB directory (``CURRENT`` and a ``MANIFEST-*`` file)."""
    return path.is_dir() and (path / "CURRENT").is_file() and any(path.glob("MANIFEST-*"))


def _lmdb():
    try:
        import lmdb  # noqa: PLC0415
    except ImportError:
        raise DataError(f"reading an LMDB needs the 'lmdb' package: {INSTALL}") from None
    return lmdb


def open_lmdb(path: str | Path, color: bool | None = None):
    """All Datum records of the LMDB directory ``path`` as a ``Dataset``.

    ``color`` applies to encoded records only (Caffe's ``force_color``/``force_gray``): True
    decodes to 3 planes (B, G, R), False to 1 (grey), None keeps the image's own (grey images
    stay grey, everything else becomes B, G, R).
    """
    path = Path(path)
    if not path.exists():
        raise DataError("LMDB not found (a Caffe LMDB is a directory holding data.mdb)", file=str(path))
    if not path.is_dir():
        raise DataError("not an LMDB: a Caffe LMDB is a directory holding data.mdb", file=str(path))
    if is_leveldb_dir(path):
        raise leveldb_error(path)
    if not (path / "data.mdb").is_file():
        raise DataError("not an LMDB: the directory has no data.mdb", file=str(path))
    stat = (path / "data.mdb").stat()
    return _read(str(path.resolve()), stat.st_mtime_ns, stat.st_size, color)


def leveldb_error(path: Path | str) -> DataError:
    return DataError("LevelDB databases are not supported: convert it to an LMDB (Caffe's "
                     "convert_imageset --backend=lmdb, or copy its records into an LMDB with the "
                     "'plyvel' and 'lmdb' packages) and set data_param.backend: LMDB",
                     file=str(path))


@lru_cache(maxsize=8)
def _read(path: str, _mtime: int, _size: int, color: bool | None):
    from ..caffe import pb2  # noqa: PLC0415
    from .sources import Dataset  # noqa: PLC0415

    from ..errors import NetspecError  # noqa: PLC0415

    lmdb = _lmdb()
    try:
        P = pb2()
    except NetspecError as e:   # protobuf is not installed
        raise DataError(e.message, file=path) from None
    try:
        env = lmdb.open(path, readonly=True, lock=False, readahead=False, subdir=True,
                        max_readers=1)
    except lmdb.Error as e:
        raise DataError(f"cannot open LMDB: {e}", file=path) from None
    images, labels, first = [], [], None
    try:
        with env.begin(buffers=False) as txn:
            for key, value in txn.cursor():
                d = P.Datum()
                try:
                    d.ParseFromString(value)
                except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
                    raise DataError(f"record {_key(key)} is not a Caffe Datum ({e})", file=path) from None
                arr = _datum_array(d, key, path, color)
                if first is None:
                    first = (key, arr.shape)
                elif arr.shape != first[1]:
                    raise DataError(f"record {_key(key)} has shape {arr.shape} but record "
                                    f"{_key(first[0])} has {first[1]}: netspec's Data layer needs "
                                    "records of one shape", file=path)
                images.append(arr)
                labels.append(int(d.label))
    except lmdb.Error as e:
        raise DataError(f"cannot read LMDB: {e}", file=path) from None
    finally:
        env.close()
    if not images:
        raise DataError("the LMDB holds no records", file=path)
    dtype = np.float32 if any(a.dtype != np.uint8 for a in images) else np.uint8
    data = np.stack([a.astype(dtype, copy=False) for a in images])
    data.setflags(write=False)
    label = np.asarray(labels, dtype=np.int64)
    label.setflags(write=False)
    return Dataset(data, label)


def _key(key: bytes) -> str:
    try:
        return repr(key.decode("ascii"))
    except UnicodeDecodeError:
        return key.hex()


def _datum_array(d, key: bytes, path: str, color: bool | None) -> np.ndarray:
    """One Datum's pixels as (C, H, W): uint8 for ``data`` bytes, float32 for ``float_data``."""
    if d.encoded:
        try:
            return decode_image(d.data, color)
        except DataError as e:
            raise DataError(f"record {_key(key)}: {e.message}", file=path) from None
    c, h, w = d.channels, d.height, d.width
    if c <= 0 or h <= 0 or w <= 0:
        raise DataError(f"record {_key(key)}: Datum has channels×height×width {c}×{h}×{w}",
                        file=path)
    n = c * h * w
    if len(d.data):
        if len(d.data) != n:
            raise DataError(f"record {_key(key)}: Datum has {len(d.data)} data bytes but "
                            f"channels×height×width = {c}×{h}×{w} = {n}", file=path)
        return np.frombuffer(d.data, dtype=np.uint8).reshape(c, h, w)
    if len(d.float_data) != n:
        raise DataError(f"record {_key(key)}: Datum has {len(d.float_data)} float_data values "
                        f"(and no data bytes) but channels×height×width = {c}×{h}×{w} = {n}",
                        file=path)
    return np.asarray(d.float_data, dtype=np.float32).reshape(c, h, w)


def _pil():
    try:
        from PIL import Image  # noqa: PLC0415
    except ImportError:
        raise DataError(f"decoding images needs the 'Pillow' package: {INSTALL}") from None
    return Image


_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def pil_to_caffe(img, color: bool | None) -> np.ndarray:
    """A Pillow image -> uint8 (C, H, W) in OpenCV's channel order (B, G, R) or grey (1 plane).

    ``color``: True = 3 planes, False = 1, None = the image's own (OpenCV's IMREAD_ANYCOLOR).
    16-bit images keep their high byte (OpenCV converts them to 8 bits the same way).
    """
    grey = img.mode in _GREY_MODES
    if color is None:
        color = not grey
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        img = _from_16bit(img)
    if color:
        a = np.asarray(img.convert("RGB"), dtype=np.uint8)
        return np.ascontiguousarray(a[:, :, ::-1].transpose(2, 0, 1))
    a = np.asarray(img.convert("L"), dtype=np.uint8)
    return np.ascontiguousarray(a[None])


def _from_16bit(img):
    Image = _pil()
    a = np.asarray(img).astype(np.int64)
    if a.max(initial=0) > 255 or img.mode.startswith("I;16"):
        a = a >> 8
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def decode_image(raw: bytes, color: bool | None) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, …) -> uint8 (C, H, W), see ``pil_to_caffe``."""
    Image = _pil()
    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            return pil_to_caffe(img, color)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for bad files
        raise DataError(f"cannot decode the encoded image ({len(raw)} bytes): {e}") from None
