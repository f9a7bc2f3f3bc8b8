"""MNIST in IDX format: the copy shipped inside the package, any folder of IDX files, and a
download path for machines with internet.

The shipped files are the original LeCun/Cortes/Burges MNIST (``train-*``: 60,000 images,
``t10k-*``: 10,000), verified by SHA-256 on load.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import urllib.request
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import DataError

BUILTIN_DIR = Path(__file__).with_name("mnist")
FILES = {
    ("train", "images"): "train-images-idx3-ubyte.gz",
    ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("test", "images"): "t10k-images-idx3-ubyte.gz",
    ("test", "labels"): "t10k-labels-idx1-ubyte.gz",
}
SHA256 = {
    "train-images-idx3-ubyte.gz": "db8f937d487057fb14a9f0fbe97f0bc8d311ab41b750d41e1ff37c43b9e55e19",
    "train-labels-idx1-ubyte.gz": "51fc562b6747b666fbf6e84ce29d43c3cb5f9c388c664d43b33f02095313405a",
    "t10k-images-idx3-ubyte.gz": "cfeddb84311ecf044fc6a5b0f6ee8a24d265d4e83e388400186eb114082f4209",
    "t10k-labels-idx1-ubyte.gz": "e41c74e484045d39b462a7790a4af51301bd9b0b24f0154798d713ec68c45920",
}
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
           "https://storage.googleapis.com/cvdf-datasets/mnist/")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into an array of its declared dtype and shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError("IDX file not found", file=str(path)) from None
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file: {e}", file=str(path)) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError("not an IDX file (bad magic number)", file=str(path))
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise DataError(f"IDX file is truncated or corrupt: header says {dims}, "
                        f"{expected} bytes, file has {len(raw) - offset}", file=str(path))
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(dims)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _find(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / name[:-3]):
        if candidate.exists():
            return candidate
    raise DataError(f"MNIST file {name} (or its unzipped form) not found", file=str(folder))


@lru_cache(maxsize=8)
def load_mnist(split: str = "train", folder: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 1, 28, 28), labels uint8 (N,)) for ``split`` 'train' or 'test'.

    ``folder=None`` reads the built-in copy and verifies its checksums.
    """
    base = BUILTIN_DIR if folder is None else Path(folder)
    paths = {kind: _find(base, FILES[(split, kind)]) for kind in ("images", "labels")}
    if folder is None:
        for p in paths.values():
            if _sha256(p) != SHA256[p.name]:
                raise DataError("built-in MNIST file fails its SHA-256 check (corrupt install?)",
                                file=str(p))
    images, labels = read_idx(paths["images"]), read_idx(paths["labels"])
    if images.ndim != 3 or labels.shape != (images.shape[0],):
        raise DataError(f"MNIST images {images.shape} and labels {labels.shape} do not match",
                        file=str(base))
    return images[:, None, :, :], labels


def download(folder: str | Path, mirrors=MIRRORS) -> Path:
    """Download the four MNIST files into ``folder`` and verify their SHA-256."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, digest in SHA256.items():
        target = folder / name
        if target.exists() and _sha256(target) == digest:
            continue
        last_error: Exception | None = None
        for mirror in mirrors:
            tmp = target.with_suffix(".part")
            try:
                with urllib.request.urlopen(mirror + name, timeout=60) as r, open(tmp, "wb") as f:
                    shutil.copyfileobj(r, f)
                if _sha256(tmp) != digest:
                    raise DataError(f"downloaded {name} fails its checksum", file=mirror + name)
                tmp.replace(target)
                break
            except Exception as e:  # noqa: BLE001 - try the next mirror
                last_error = e
                tmp.unlink(missing_ok=True)
        else:
            raise DataError(f"could not download {name}: {last_error}", file=str(target))
    return folder
