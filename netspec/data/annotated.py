"""SSD's annotated data: images with their boxes, as its AnnotatedData layer reads them.

Two sources, both read into memory (``AnnotatedSet``):

* an LMDB or LevelDB of SSD's ``AnnotatedDatum`` records (``datum``: the image, as a Data
  layer's record; ``annotation_group``: per class ``group_label`` its annotations, each an
  ``instance_id`` and a ``bbox`` normalised to the image), read in key order;
* netspec's ``.npz`` form: ``data`` (N, C, H, W) images and ``annotation`` (M, 8) rows
  [record, label, instance, xmin, ymin, xmax, ymax, difficult] (record: the image's index).

Records of different sizes are resized (``size``: OpenCV's INTER_LINEAR, as SSD's WARP);
without a size they must all have the first one's. For SSD's random transform, which resizes
after cropping, ``keep_size`` keeps each record at its own size: the records are stored at the
top left of one array of the largest height and width, with their sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .datum_db import A_NAME, LAYOUT, NAME, _datum_array, _key, backend_of, parsed_records
from .image_list import resize_linear


@dataclass(frozen=True)
class AnnotatedSet:
    """``data`` (N, C, H, W) images (uint8, or float32 from ``float_data``) and ``boxes``
    (M, 8) float32 rows [record, label, instance, xmin, ymin, xmax, ymax, difficult] sorted
    by record."""

    data: np.ndarray
    boxes: np.ndarray
    #: (N, 2) [height, width] of each record inside ``data`` (``keep_size``), else None
    sizes: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.data.shape[0])


def open_annotated(source: str, base_dir: str | Path | None, backend: str | None,
                   color: bool | None = None, size: tuple[int, int] | None = None,
                   keep_size: bool = False) -> AnnotatedSet:
    """The AnnotatedSet of ``source`` (a ``.npz``, or an LMDB/LevelDB directory of
    AnnotatedDatum records), relative to ``base_dir``; ``size`` (height, width) resizes, unless
    ``keep_size`` (records of any sizes, padded, with ``sizes``)."""
    if keep_size:
        size = None
    path = Path(source).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if path.suffix == ".npz" and not path.is_dir():
        ds = _npz(path, size)
    else:
        ds = _db(path, _checked_backend(path, backend), color, size, keep_size)
    if keep_size and ds.sizes is None:
        ds = AnnotatedSet(ds.data, ds.boxes, np.tile(ds.data.shape[2:], (len(ds), 1)))
    return ds


def _checked_backend(path: Path, backend: str | None) -> str:
    found = backend_of(path)
    if found is None:
        if not path.exists():
            raise DataError("data source not found", file=str(path))
        raise DataError("unsupported AnnotatedData source: use an LMDB or LevelDB of SSD's "
                        "AnnotatedDatum records or a .npz with 'data' and 'annotation' arrays",
                        file=str(path))
    if backend is not None and found != backend:
        raise DataError(f"this source is a Caffe {NAME[found]}, not {A_NAME[backend]}: set "
                        f"data_param.backend: {found}", file=str(path))
    if found == "LMDB" and backend is None:
        raise DataError("this source is a Caffe LMDB: set data_param.backend: LMDB (Caffe's "
                        "default backend is LEVELDB)", file=str(path))
    return found


def _npz(path: Path, size) -> AnnotatedSet:
    try:
        with np.load(path) as z:
            missing = [k for k in ("data", "annotation") if k not in z.files]
            if missing:
                raise DataError(f".npz AnnotatedData source lacks array(s) {missing}; it has "
                                f"{z.files}", file=str(path))
            data, boxes = z["data"], z["annotation"]
    except FileNotFoundError:
        raise DataError("data source not found", file=str(path)) from None
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - zip/pickle errors of a corrupt file
        raise DataError(f"cannot read .npz data source: {e}", file=str(path)) from None
    if data.ndim != 4:
        raise DataError(f"'data' must be (N, C, H, W) images, got shape {data.shape}",
                        file=str(path))
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 8) if boxes.size else \
        np.zeros((0, 8), np.float32)
    rec = boxes[:, 0]
    if ((rec < 0) | (rec >= len(data)) | (rec != np.round(rec))).any():
        raise DataError(f"'annotation' rows must start with a record index in 0…{len(data) - 1}",
                        file=str(path))
    if size is not None and tuple(data.shape[2:]) != tuple(size):
        if data.dtype != np.uint8:
            raise DataError("resizing needs uint8 images", file=str(path))
        data = np.stack([resize_linear(a, *size) for a in data])
    return AnnotatedSet(data, boxes[np.argsort(rec, kind="stable")])


def _db(path: Path, backend: str, color, size, keep_size: bool = False) -> AnnotatedSet:
    images, rows, first = [], [], None
    for key, a in parsed_records(str(path), backend, "AnnotatedDatum", "SSD's AnnotatedDatum"):
        if not a.HasField("datum"):
            raise DataError(f"record {_key(key)} is not SSD's AnnotatedDatum (no datum)",
                            file=str(path))
        img = _datum_array(a.datum, key, str(path), color)
        if size is not None and img.shape[1:] != tuple(size):
            if img.dtype != np.uint8:
                raise DataError(f"record {_key(key)}: resizing needs uint8 images",
                                file=str(path))
            img = resize_linear(img, *size)
        if first is None:
            first = (key, img.shape)
        elif img.shape != first[1] and not (keep_size and img.shape[0] == first[1][0]):
            raise DataError(f"record {_key(key)} has shape {img.shape} but record "
                            f"{_key(first[0])} has {first[1]}: give transform_param."
                            "resize_param to resize them to one size", file=str(path))
        k = len(images)
        images.append(img)
        for g in a.annotation_group:
            for an in g.annotation:
                b = an.bbox
                rows.append([k, g.group_label, an.instance_id, b.xmin, b.ymin, b.xmax,
                             b.ymax, b.difficult])
    if not images:
        raise DataError(f"the {NAME[backend]} holds no records ({LAYOUT[backend]})",
                        file=str(path))
    dtype = np.float32 if any(a.dtype != np.uint8 for a in images) else np.uint8
    boxes = np.asarray(rows, np.float32).reshape(-1, 8)
    if keep_size:
        sizes = np.array([a.shape[1:] for a in images], np.int64)
        data = np.zeros((len(images), first[1][0], *sizes.max(0)), dtype)
        for k, a in enumerate(images):      # one copy per record, as it is read
            data[k, :, :a.shape[1], :a.shape[2]] = a
        return AnnotatedSet(data, boxes, sizes)
    data = np.stack([a.astype(dtype, copy=False) for a in images])
    return AnnotatedSet(data, boxes)
