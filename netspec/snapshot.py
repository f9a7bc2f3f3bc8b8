"""Weights and solver-state files, written atomically (temp file + fsync + rename).

* weights: ``.npz`` with one array per parameter blob, key ``<layer>/<blob index>``
  (Caffe's blob order: 0 = weights, 1 = bias; BatchNorm: mean, variance, factor).
* solver state: ``.solverstate.npz`` with the iteration, the update rule's state arrays,
  the RNG state and each data layer's cursor, plus the name of its weights file.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .backend import to_numpy
from .errors import SnapshotError


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so that readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def save_npz(path: str | Path, arrays: dict[str, Any]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{k: to_numpy(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buf.getvalue())


def load_npz(path: str | Path, what: str = "file") -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise SnapshotError(f"{what} not found", file=str(path)) from None
    except Exception as e:  # noqa: BLE001 - truncated/corrupt zip
        raise SnapshotError(f"cannot read {what} (truncated or not an .npz): {e}",
                            file=str(path)) from None


def weights_dict(net) -> dict[str, Any]:
    return {key: p.data for key, p in net.named_params().items()}


def save_weights(net, path: str | Path) -> None:
    save_npz(path, weights_dict(net))


def load_weights(net, path: str | Path, strict: bool = False) -> tuple[list[str], list[str]]:
    """Copy arrays into the net's parameter blobs by ``layer/index``.

    Returns (missing, unused) keys. A shape mismatch is an error naming the blob.
    ``.caffemodel`` files are read through ``netspec.caffe`` when available.
    """
    path = Path(path)
    if path.suffix == ".caffemodel":
        from .caffe.caffemodel import read_caffemodel_arrays  # noqa: PLC0415

        arrays = read_caffemodel_arrays(path)
    else:
        arrays = load_npz(path, "weights file")
    params = net.named_params()
    missing = [k for k in params if k not in arrays]
    unused = [k for k in arrays if k not in params]
    for key, p in params.items():
        if key not in arrays:
            continue
        a = arrays[key]
        if a.size == p.count and a.shape != p.shape:
            a = a.reshape(p.shape)  # legacy 4-D num/channels/height/width shapes
        if a.shape != p.shape:
            raise SnapshotError(f"blob '{key}' has shape {a.shape} in the file but the net "
                                f"expects {p.shape}", file=str(path))
        p.data[...] = net.backend.asarray(a, p.data.dtype)
    if strict and (missing or unused):
        raise SnapshotError(f"weights do not fit the net: missing {missing}, unused {unused}",
                            file=str(path))
    return missing, unused


def pack_state(state: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts of arrays/scalars into npz keys joined by '|'."""
    out: dict[str, Any] = {}
    for k, v in state.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(pack_state(v, key + "|"))
        else:
            out[key] = v
    return out


def unpack_state(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, v in flat.items():
        parts = key.split("|")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return out


def rng_to_array(rng: np.random.Generator) -> np.ndarray:
    return np.frombuffer(json.dumps(rng.bit_generator.state).encode(), dtype=np.uint8)


def rng_from_array(rng: np.random.Generator, a: np.ndarray) -> None:
    rng.bit_generator.state = json.loads(bytes(np.asarray(a, dtype=np.uint8)).decode())
