"""Weights and solver-state files, written atomically (temp file + fsync + rename).

* weights: ``.npz`` with one array per parameter blob, key ``<layer>/<blob index>``
  (Caffe's blob order: 0 = weights, 1 = bias; BatchNorm: mean, variance, factor).
* solver state: ``.solverstate.npz`` with the iteration, the update rule's state arrays,
  the RNG state and each data layer's cursor, plus the name of its weights file and the
  SHA-256 of that file's bytes (resume refuses a weights file that is not the one written
  with the state).

Written through ``netspec.files`` (atomic; a run removes the temporary files of interrupted
writes for its snapshot prefix when it starts).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from .backend import to_numpy
from .caffe.blob_shape import fit_blob
from .caffe.caffemodel import read_caffemodel_arrays
from .errors import SnapshotError
from .files import atomic_write_bytes


def save_npz(path: str | Path, arrays: dict[str, Any]) -> str:
    """Write ``arrays`` as an .npz atomically; returns the SHA-256 (hex) of the bytes written."""
    buf = io.BytesIO()
    np.savez(buf, **{k: to_numpy(v) for k, v in arrays.items()})
    payload = buf.getvalue()
    atomic_write_bytes(path, payload)
    return sha256_hex(payload)


def sha256_hex(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


#: the first bytes of a zip archive (an .npz): a local file header, or an empty archive
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def load_npz(path: str | Path, what: str = "file", data: bytes | None = None) -> dict[str, np.ndarray]:
    """The arrays of the .npz at ``path`` (or of its bytes ``data``, already read).

    Never unpickles: a file that is not a zip archive, or holds Python objects, is a
    SnapshotError saying so (not NumPy's advice to pass allow_pickle).
    """
    path = Path(path)
    try:
        if data is not None:
            head = data[:4]
        else:
            with open(path, "rb") as f:
                head = f.read(4)
    except FileNotFoundError:
        raise SnapshotError(f"{what} not found", file=str(path)) from None
    except OSError as e:
        raise SnapshotError(f"cannot read {what}: {e.strerror or e}", file=str(path)) from None
    if not head.startswith(ZIP_MAGIC):
        kind = ("the file is empty" if not head else
                "this is a single .npy array, not an .npz archive" if head.startswith(b"\x93NUM")
                else "this is not an .npz archive (an .npz is a zip file)")
        raise SnapshotError(f"cannot read {what}: {kind}", file=str(path))
    try:
        with np.load(io.BytesIO(data) if data is not None else path, allow_pickle=False) as z:
            out = {}
            for k in z.files:
                try:
                    out[k] = z[k]
                except ValueError as e:
                    if "allow_pickle" not in str(e):
                        raise
                    raise SnapshotError(f"cannot read {what}: its array '{k}' holds Python "
                                        "objects (pickled data), which netspec never loads",
                                        file=str(path)) from None
            return out
    except SnapshotError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated/corrupt zip
        raise SnapshotError(f"cannot read {what} (truncated or corrupt .npz): {e}",
                            file=str(path)) from None


def weights_dict(net) -> dict[str, Any]:
    return {key: p.data for key, p in net.named_params().items()}


def save_weights(net, path: str | Path) -> str:
    """Write the net's parameter blobs; returns the SHA-256 of the file written."""
    return save_npz(path, weights_dict(net))


def load_weights(net, path: str | Path, strict: bool = False, allow_partial: bool = False,
                 data: bytes | None = None) -> tuple[list[str], list[str]]:
    """Copy arrays into the net's parameter blobs by ``layer/index``.

    Returns (missing, unused) keys: the net's blobs the file lacks, and the file's arrays the
    net has no blob for (ignored, as Caffe ignores layers it does not have). Every blob is
    checked before any is copied: shapes by ``fit_blob``, values numeric and finite. A file
    none of whose arrays is a blob of the net is always an error (wrong file or wrong net);
    one that lacks some of the net's blobs is an error unless ``allow_partial`` (those blobs
    then keep their fillers' values: fine-tuning with new layers); ``strict`` (resume) also
    refuses unused arrays. ``.caffemodel`` files are read through ``netspec.caffe``; ``data``:
    the bytes of an .npz ``path``, already read (resume checks their checksum first).
    """
    path = Path(path)
    if path.suffix == ".caffemodel":
        arrays = read_caffemodel_arrays(path)
    else:
        arrays = load_npz(path, "weights file", data)
    where = {"file": str(path)}
    if {"iter", "type", "weights"} <= set(arrays):
        raise SnapshotError("this is a solver state, not a weights file: resume from it with "
                            f"--snapshot, or load the weights file it names ({arrays['weights']})",
                            **where)
    params = net.named_params()
    missing = [k for k in params if k not in arrays]
    unused = [k for k in arrays if k not in params]
    if len(missing) == len(params):
        raise SnapshotError(
            f"none of the {len(arrays)} arrays in the file ({_some(arrays)}) is a parameter blob of "
            f"this net ({_some(params) or 'it has none'}): the weights are for another net",
            **where)
    hints = _weights_hints(net, arrays)
    if strict and (missing or unused):
        parts = ([f"the net's blobs {', '.join(missing)} are not in the file"] if missing else []) \
            + ([f"the file's arrays {', '.join(unused)} are not blobs of the net"] if unused else [])
        raise SnapshotError(f"the weights do not fit the net exactly: {'; '.join(parts)}{hints}",
                            **where)
    if missing and not allow_partial:
        raise SnapshotError(
            f"the net's parameter blobs {', '.join(missing)} are not in the file, so they would "
            "keep their fillers' values. If that is meant (fine-tuning with new layers), allow "
            f"a partial load (--allow-partial){hints}", **where)
    fitted = {}
    for key, p in params.items():
        if key not in arrays:
            continue
        a = fit_blob(key, arrays[key], p.shape, path)
        if a.dtype.kind not in "fiu":
            raise SnapshotError(f"blob '{key}' holds {a.dtype} values, not numbers", **where)
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise SnapshotError(f"blob '{key}' holds NaN or Inf values", **where)
        fitted[key] = a
    for key, a in fitted.items():
        p = params[key]
        p.data[...] = net.backend.asarray(a, p.data.dtype)
    return missing, unused


def _weights_hints(net, arrays) -> str:
    """The layers' explanations of arrays that do not fit them (``Layer.weights_hint``), each
    once, after the layers it concerns: '. layer 'a', layer 'b' (BN): ...'."""
    by_hint: dict[str, list[str]] = {}
    for layer in net.layers:
        hint = layer.weights_hint(arrays)
        if hint:
            by_hint.setdefault(hint, []).append(f"'{layer.name}'")
    return "".join(f". Layer{'s' if len(names) > 1 else ''} {_some(names)}: {hint}"
                   for hint, names in by_hint.items())


def _some(keys, n: int = 4) -> str:
    """The first ``n`` keys, and how many more."""
    keys = list(keys)
    more = f", ... ({len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


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
    """The nested dicts ``pack_state`` flattened; ValueError when two keys collide (a value
    where a group of values should be, or the reverse)."""
    out: dict[str, Any] = {}
    for key, v in flat.items():
        parts = key.split("|")
        node = out
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"'{'|'.join(parts[:i + 1])}' is both a value and a group of values")
        if isinstance(node.get(parts[-1]), dict):
            raise ValueError(f"'{key}' is both a value and a group of values")
        node[parts[-1]] = v
    return out


def rng_to_array(rng: np.random.Generator) -> np.ndarray:
    return np.frombuffer(json.dumps(rng.bit_generator.state).encode(), dtype=np.uint8)


def rng_from_array(rng: np.random.Generator, a: np.ndarray) -> None:
    rng.bit_generator.state = json.loads(bytes(np.asarray(a, dtype=np.uint8)).decode())
