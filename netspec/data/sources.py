"""Resolve a Data layer ``source`` to in-memory arrays.

* ``builtin:mnist`` — the MNIST shipped with netspec (``split: train|test``)
* a folder with MNIST IDX files (``split`` picks ``train-*`` or ``t10k-*``)
* ``file.npz`` with arrays ``data`` (N, C, H, W) or (N, D) and ``label`` (N,)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import DataError
from .mnist import load_mnist


@dataclass(frozen=True)
class Dataset:
    data: np.ndarray   # (N, ...) raw values (uint8 for images)
    label: np.ndarray  # (N,)

    def __len__(self) -> int:
        return int(self.data.shape[0])


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


def open_source(source: str, split: str = "train", base_dir: str | Path | None = None) -> Dataset:
    """The dataset a Data layer reads. Relative paths resolve against ``base_dir``."""
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        if name != "mnist":
            raise DataError(f"unknown built-in dataset '{name}' (available: mnist)")
        return Dataset(*load_mnist(split))
    path = Path(source).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if path.is_dir():
        return Dataset(*load_mnist(split, str(path)))
    if path.suffix == ".npz":
        return _npz(str(path))
    if not path.exists():
        raise DataError("data source not found", file=str(path))
    raise DataError("unsupported data source: use builtin:mnist, a folder of MNIST IDX files "
                    "or a .npz file with 'data' and 'label' arrays", file=str(path))
