"""Binary .caffemodel files (a NetParameter with parameter blobs) <-> ``{"layer/i": array}``.

Reading takes the blobs of current ``layer`` entries, V1 ``layers`` entries and V0 ``layers {
layer { blobs } }`` entries; a blob's shape comes from ``shape { dim }`` or, in old files, from
``num``/``channels``/``height``/``width``; its values from ``data`` (float32, kept float32) or
``double_data`` (float64, kept float64). When a later layer repeats a name, its blobs win, as in
Caffe's ``CopyTrainedLayersFrom``.

Writing puts each array back as ``shape { dim }`` + ``data`` (float32) or ``double_data``
(float64), so caffemodel -> npz -> caffemodel -> npz gives the same bits.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import SnapshotError
from ..files import atomic_write_bytes
from . import pb2
from .blob_shape import fit_blob


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(raw: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = raw[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _packed_values(blob, field_number: int, dtype: str) -> np.ndarray:
    """The values of a packed repeated field of ``blob``, read from its wire bytes at once.

    Python protobuf turns each element into a Python float; for blobs of millions of values
    this reads the serialized bytes (always packed when re-serialized) with np.frombuffer.
    """
    raw = blob.SerializeToString()
    chunks, i, n = [], 0, len(raw)
    while i < n:
        key, i = _read_varint(raw, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _read_varint(raw, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            length, i = _read_varint(raw, i)
            if number == field_number:
                chunks.append(raw[i:i + length])
            i += length
        else:  # groups: not in BlobProto; take the slow, certain path
            return np.asarray(getattr(blob, "double_data" if field_number == 8 else "data"),
                              dtype=dtype)
    return np.frombuffer(b"".join(chunks), dtype=dtype).copy()


def blob_to_array(blob, where: str = "", file: str | None = None) -> np.ndarray:
    """One BlobProto -> array of its shape; float32 for ``data``, float64 for ``double_data``."""
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    elif any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = ()
    if any(d < 0 for d in shape):
        raise SnapshotError(f"{where} has a negative dimension in its shape {shape}", file=file)
    count = math.prod(shape)
    if len(blob.double_data):  # Caffe's Blob::FromProto prefers double_data when present
        values = _packed_values(blob, 8, "<f8").astype(np.float64, copy=False)
    else:
        values = _packed_values(blob, 5, "<f4").astype(np.float32, copy=False)
    if values.size != count:
        raise SnapshotError(f"{where} has {values.size} values but its shape {shape} needs "
                            f"{count}: the file is truncated or corrupt", file=file)
    return values.reshape(shape)


def array_to_blob(a: np.ndarray, blob) -> None:
    """Fill ``blob`` with ``shape { dim }`` and the values (float64 -> double_data, else data)."""
    a = np.asarray(a)
    blob.shape.dim.extend(int(d) for d in a.shape)
    if a.dtype == np.float64:
        raw, tag = np.ascontiguousarray(a, dtype="<f8").tobytes(), 8
    else:
        raw, tag = np.ascontiguousarray(a, dtype="<f4").tobytes(), 5
    if raw:
        # packed repeated field written directly: fast for large blobs, same bytes as extend()
        blob.MergeFromString(_varint(tag << 3 | 2) + _varint(len(raw)) + raw)


def _layer_entries(net):
    """(name, blobs) of every layer with blobs, in file order, in any of the three formats."""
    for lp in net.layer:
        yield lp.name, lp.blobs
    for v1 in net.layers:
        if v1.HasField("layer"):
            yield (v1.layer.name or v1.name), v1.layer.blobs
        if len(v1.blobs):
            yield v1.name, v1.blobs


def _looks_like_text(raw: bytes) -> bool:
    head = raw[:512]
    return bool(head) and all(32 <= b < 127 or b in (9, 10, 13) for b in head)


def read_caffemodel(path: str | Path):
    """The NetParameter message of a binary .caffemodel; SnapshotError when it is unreadable."""
    from google.protobuf.message import DecodeError  # noqa: PLC0415 - optional: protobuf

    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SnapshotError("caffemodel not found", file=str(path)) from None
    net = pb2().NetParameter()
    text = _looks_like_text(raw)
    try:
        net.ParseFromString(raw)
    except (DecodeError, RuntimeError, ValueError) as e:
        if text:
            raise SnapshotError("this looks like a text .prototxt, not a binary .caffemodel",
                                file=str(path)) from None
        raise SnapshotError(f"cannot read this .caffemodel (truncated or not a Caffe model): {e}",
                            file=str(path)) from None
    if not len(net.layer) and not len(net.layers):
        raise SnapshotError("this looks like a text .prototxt, not a binary .caffemodel" if text
                            else "no layers in this file: not a Caffe model (or an empty one)",
                            file=str(path))
    return net


def net_arrays(net, file: str | None = None) -> tuple[dict[str, np.ndarray], list[str]]:
    """({"layer/i": array}, warnings) from a NetParameter message holding blobs."""
    arrays: dict[str, np.ndarray] = {}
    warnings: list[str] = []
    seen: set[str] = set()
    for name, blobs in _layer_entries(net):
        if not len(blobs):
            continue
        if name in seen:
            warnings.append(f"layer '{name}' appears more than once with blobs; the last one wins "
                            "(as in Caffe)")
            for k in [k for k in arrays if k.rsplit("/", 1)[0] == name]:
                del arrays[k]
        seen.add(name)
        for i, blob in enumerate(blobs):
            arrays[f"{name}/{i}"] = blob_to_array(blob, f"blob {i} of layer '{name}'", file)
    return arrays, warnings


def read_caffemodel_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """``{"<layer>/<blob index>": array}`` of a .caffemodel, shapes as stored in the file.

    Used by ``netspec.snapshot.load_weights``, which fits them to the net's shapes with
    ``netspec.caffe.blob_shape.fit_blob`` (Caffe's legacy 4-D rule). Errors are SnapshotError naming
    the file.
    """
    net = read_caffemodel(path)
    arrays, _ = net_arrays(net, str(path))
    if not arrays:
        raise SnapshotError("no parameter blobs in this file (a net definition without weights?)",
                            file=str(path))
    return arrays


def fit_to_model(arrays: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]],
                 file: str | None = None):
    """Match caffemodel arrays to a net's parameter shapes.

    Returns (fitted arrays, missing keys, unused keys, reshaped keys). Shapes go through
    ``blob_shape.fit_blob``: only Caffe's legacy 4-D shapes (the net's shape padded with
    leading 1s) are reshaped; any other difference is a SnapshotError naming the blob and both
    shapes, checked for every blob before anything is returned.
    """

    fitted: dict[str, np.ndarray] = {}
    reshaped: list[str] = []
    for key, shape in shapes.items():
        if key not in arrays:
            continue
        fitted[key] = fit_blob(key, arrays[key], shape, file)
        if fitted[key].shape != arrays[key].shape:
            reshaped.append(key)
    missing = [k for k in shapes if k not in arrays]
    unused = [k for k in arrays if k not in shapes]
    return fitted, missing, unused, reshaped


def attach_blobs(net, arrays: dict[str, np.ndarray]) -> list[str]:
    """Add ``arrays`` as blobs to the layers of ``net`` (a NetParameter message) by name.

    Every layer with a given name gets that name's blobs. Returns the keys no layer took.
    """
    by_layer: dict[str, dict[int, np.ndarray]] = {}
    for key, a in arrays.items():
        name, _, idx = key.rpartition("/")
        if not name or not idx.isdigit():
            raise SnapshotError(f"weights key '{key}' is not '<layer>/<blob index>'")
        by_layer.setdefault(name, {})[int(idx)] = a
    used: set[str] = set()
    for lp in net.layer:
        blobs = by_layer.get(lp.name)
        if not blobs:
            continue
        if sorted(blobs) != list(range(len(blobs))):
            raise SnapshotError(f"layer '{lp.name}' has blobs {sorted(blobs)} in the weights; "
                                "Caffe needs 0..n-1 without gaps")
        del lp.blobs[:]
        for i in range(len(blobs)):
            array_to_blob(blobs[i], lp.blobs.add())
        used.add(lp.name)
    return [k for k in arrays if k.rpartition("/")[0] not in used]


def write_caffemodel(net, path: str | Path) -> None:
    """Serialize ``net`` (with blobs) to ``path`` atomically."""

    atomic_write_bytes(path, net.SerializeToString())


__all__ = ["read_caffemodel", "read_caffemodel_arrays", "net_arrays", "fit_to_model",
           "attach_blobs", "write_caffemodel", "blob_to_array", "array_to_blob"]
