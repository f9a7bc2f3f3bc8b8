"""Caffe's key-value databases of ``Datum`` records (LMDB and LevelDB), read into memory.

A Caffe ``Data`` layer reads a database directory: ``backend: LMDB`` one holding ``data.mdb``
(and usually ``lock.mdb``), ``backend: LEVELDB`` (Caffe's default) one holding ``CURRENT``,
``MANIFEST-*`` and ``*.ldb``/``*.sst`` tables. Both hold one ``Datum`` message per key, read in
key order (bytewise, as Caffe's cursors read them). A Datum holds ``channels``/``height``/
``width`` and its pixels as ``data`` bytes (uint8, C×H×W order) or ``float_data``, a ``label``,
and ``encoded`` when ``data`` is an image file (PNG, JPEG, …) to decode. Encoded images are
decoded with Pillow into Caffe's (OpenCV's) layout: colour as B, G, R planes, grey as one plane.

The two backends differ only in how the (key, value) pairs are listed (``_records``); every
record is read into memory at once (``Dataset``) and all records must have the same shape.
Needs the ``lmdb`` or ``plyvel`` package (and Pillow for encoded records):
``pip install 'netspec[caffe]'``.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any
from contextlib import closing
from pathlib import Path

import numpy as np

from ..caffe import pb2
from ..errors import DataError, NetspecError
from .dataset import Dataset
from .image_list import INSTALL, decode_image

#: what each backend's directory holds, for messages
LAYOUT = {"LMDB": "a Caffe LMDB is a directory holding data.mdb",
          "LEVELDB": "a Caffe LevelDB is a directory holding CURRENT and MANIFEST-* files"}
NAME = {"LMDB": "LMDB", "LEVELDB": "LevelDB"}
A_NAME = {"LMDB": "an LMDB", "LEVELDB": "a LevelDB"}


def is_lmdb_dir(path: Path) -> bool:
    return path.is_dir() and (path / "data.mdb").is_file()


def is_leveldb_dir(path: Path) -> bool:
    """A LevelDB directory (``CURRENT`` and a ``MANIFEST-*`` file)."""
    return path.is_dir() and (path / "CURRENT").is_file() and any(path.glob("MANIFEST-*"))


def backend_of(path: Path) -> str | None:
    """``LMDB`` or ``LEVELDB`` for a database directory, None for anything else."""
    if is_lmdb_dir(path):
        return "LMDB"
    if is_leveldb_dir(path):
        return "LEVELDB"
    return None


def open_db(path: str | Path, backend: str, color: bool | None = None):
    """All Datum records of the ``backend`` (``LMDB`` or ``LEVELDB``) database ``path`` as a
    ``Dataset``.

    ``color`` applies to encoded records only (Caffe's ``force_color``/``force_gray``): True
    decodes to 3 planes (B, G, R), False to 1 (grey), None keeps the image's own (grey images
    stay grey, everything else becomes B, G, R).
    """
    path = Path(path)
    name = NAME[backend]
    if not path.exists():
        raise DataError(f"{name} not found ({LAYOUT[backend]})", file=str(path))
    if not path.is_dir():
        raise DataError(f"not {A_NAME[backend]}: {LAYOUT[backend]}", file=str(path))
    found = backend_of(path)
    if found is not None and found != backend:
        raise DataError(f"this source is a Caffe {NAME[found]}, not {A_NAME[backend]}: set "
                        f"data_param.backend: {found}", file=str(path))
    if found is None:
        missing = "data.mdb" if backend == "LMDB" else "CURRENT and MANIFEST-* files"
        raise DataError(f"not {A_NAME[backend]}: the directory has no {missing}", file=str(path))
    key = (str(path.resolve()), backend, color)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] == _signature(path, backend):
        _CACHE.move_to_end(key)
        return hit[1]
    ds = _read(key[0], backend, color)
    # after the read: opening a LevelDB can move its write-ahead log into a new table
    _CACHE[key] = (_signature(path, backend), ds)
    while len(_CACHE) > 8:
        _CACHE.popitem(last=False)
    return ds


#: (path, backend, color) -> (signature, Dataset): a net's TRAIN and TEST phases share one copy
_CACHE: OrderedDict = OrderedDict()


def _signature(path: Path, backend: str) -> tuple:
    """What changes when the database's records change (checked before using a cached copy).

    LevelDB rewrites CURRENT, MANIFEST-*, LOG and an empty *.log each time it is opened, so
    only its tables and non-empty write-ahead logs count."""
    if backend == "LMDB":
        s = (path / "data.mdb").stat()
        return ((s.st_mtime_ns, s.st_size),)
    out = []
    for f in sorted(path.iterdir()):
        if f.suffix in (".ldb", ".sst", ".log") and f.is_file():
            s = f.stat()
            if f.suffix != ".log" or s.st_size:
                out.append((f.name, s.st_mtime_ns, s.st_size))
    return tuple(out)


def _module(backend: str):
    package = "lmdb" if backend == "LMDB" else "plyvel"
    try:
        return importlib.import_module(package)
    except ImportError:
        raise DataError(f"reading {A_NAME[backend]} needs the '{package}' package: "
                        f"{INSTALL}") from None


def _records(path: str, backend: str) -> Iterator[tuple[bytes, bytes]]:
    """The (key, value) pairs of the database in key order; DataError when it cannot be read."""
    return (_lmdb_records if backend == "LMDB" else _leveldb_records)(path, _module(backend))


def _lmdb_records(path: str, mod) -> Iterator[tuple[bytes, bytes]]:
    try:
        env = mod.open(path, readonly=True, lock=False, readahead=False, subdir=True,
                       max_readers=1)
    except mod.Error as e:
        raise DataError(f"cannot open LMDB: {e}", file=path) from None
    try:
        with env.begin(buffers=False) as txn:
            yield from txn.cursor()
    except mod.Error as e:
        raise DataError(f"cannot read LMDB: {e}", file=path) from None
    finally:
        env.close()


def _leveldb_records(path: str, mod) -> Iterator[tuple[bytes, bytes]]:
    try:
        db = mod.DB(path, create_if_missing=False)
    except mod.Error as e:
        text = str(e).lower()
        hint = ""
        if "lock" in text:
            hint = (" (LevelDB lets one process open it at a time: is Caffe or another run "
                    "using it?)")
        elif "permission" in text or "read-only" in text:
            hint = (" (LevelDB writes its LOCK and LOG files even to read: copy it to a "
                    "writable place)")
        raise DataError(f"cannot open LevelDB: {e}{hint}", file=path) from None
    try:
        with db.iterator(fill_cache=False) as it:
            yield from it
    except mod.Error as e:
        raise DataError(f"cannot read LevelDB: {e}", file=path) from None
    finally:
        db.close()


def parsed_records(path: str, backend: str, message: str, what: str
                   ) -> Iterator[tuple[bytes, Any]]:
    """(key, record parsed as Caffe's ``message``, e.g. "Datum") of the database in key order;
    DataError naming the record when one is not ``what`` (or protobuf is not installed)."""
    try:
        cls = getattr(pb2(), message)
    except NetspecError as e:   # protobuf is not installed
        raise DataError(e.message, file=path) from None
    with closing(_records(path, backend)) as records:   # closed (LevelDB unlocked) on errors too
        for key, value in records:
            m = cls()
            try:
                m.ParseFromString(value)
            except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
                raise DataError(f"record {_key(key)} is not {what} ({e})", file=path) from None
            yield key, m


def _read(path: str, backend: str, color: bool | None):
    images, labels, first = [], [], None
    for key, d in parsed_records(path, backend, "Datum", "a Caffe Datum"):
        arr = _datum_array(d, key, path, color)
        if first is None:
            first = (key, arr.shape)
        elif arr.shape != first[1]:
            raise DataError(f"record {_key(key)} has shape {arr.shape} but record "
                            f"{_key(first[0])} has {first[1]}: netspec's Data layer needs "
                            "records of one shape", file=path)
        images.append(arr)
        labels.append(int(d.label))
    if not images:
        raise DataError(f"the {NAME[backend]} holds no records", file=path)
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
