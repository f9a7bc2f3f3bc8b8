"""netspec YAML (and .npz weights) -> Caffe's .prototxt (and .caffemodel).

The fields a netspec file sets are written to Caffe's NetParameter message by name; a field
Caffe does not have (netspec's own ``data_param.split``, ``shuffle``, ``limit``, ``offset``) or a
value Caffe cannot read (``builtin:mnist``) is left out or kept with a warning that names the
layer and the field, so the written prototxt never claims more than Caffe will do.

The prototxt starts with netspec's header line (``# Exported by `netspec export` from net.yaml;
sha256 <hex>``, a comment to Caffe). Neither output replaces an existing file that is not
netspec's own unchanged prototxt (an existing .caffemodel never) unless ``force``
(``--force``); see ``outputs``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..snapshot import load_npz
from ..spec import load_net
from ..spec.yaml_lines import load_yaml
from . import ConvertError, is_repeated, pb2
from .blob_shape import fit_blob
from .caffemodel import attach_blobs, read_caffemodel_arrays
from .outputs import Output, stamped, write_outputs
from .port import model_param_shapes


def _fill(msg, data: dict, path: str, layer: str | None, warnings: list[str]) -> None:
    for key, value in data.items():
        here = f"{path}.{key}" if path else key
        fd = msg.DESCRIPTOR.fields_by_name.get(key)
        where = f"layer '{layer}': " if layer else ""
        if fd is None:
            warnings.append(f"{where}'{here}' is netspec's own field; Caffe has no such field, "
                            "so it is left out of the prototxt")
            continue
        if value is None:
            continue
        if is_repeated(fd):
            values = value if isinstance(value, list) else [value]
            target = getattr(msg, key)
            for v in values:
                if fd.message_type is not None:
                    _fill(target.add(), v, here, layer, warnings)
                else:
                    target.append(_scalar(fd, v, here))
        elif fd.message_type is not None:
            sub = getattr(msg, key)
            sub.SetInParent()
            _fill(sub, value, here, layer, warnings)
        else:
            setattr(msg, key, _scalar(fd, value, here))


def _scalar(fd, v: Any, where: str) -> Any:
    from google.protobuf.descriptor import FieldDescriptor as FD  # noqa: PLC0415 - protobuf

    if fd.enum_type is not None:
        if v not in fd.enum_type.values_by_name:
            raise ConvertError(f"'{where}' is '{v}', which Caffe's {fd.enum_type.name} does not "
                               f"have ({', '.join(fd.enum_type.values_by_name)})")
        return v
    if fd.cpp_type in (FD.CPPTYPE_FLOAT, FD.CPPTYPE_DOUBLE):
        return float(v)
    if fd.cpp_type == FD.CPPTYPE_BOOL:
        return bool(v)
    if fd.cpp_type == FD.CPPTYPE_STRING:
        return str(v)
    return int(v)


def net_message(net_param) -> tuple[Any, list[str]]:
    """A netspec NetParameter (pydantic) -> (Caffe NetParameter message, warnings)."""
    warnings: list[str] = []
    data = net_param.model_dump(exclude_unset=True)
    layers = data.pop("layer", [])
    msg = pb2().NetParameter()
    _fill(msg, data, "", None, warnings)
    for lp in layers:
        name = lp.get("name")
        _fill(msg.layer.add(), lp, "", name, warnings)
        src = (lp.get("data_param") or {}).get("source", "")
        if isinstance(src, str) and src.startswith("builtin:"):
            warnings.append(f"layer '{name}': data_param.source '{src}' is netspec's built-in "
                            "dataset; Caffe needs an LMDB/LevelDB path there")
    return msg, warnings


def prototxt_text(msg) -> str:
    from google.protobuf import text_format  # noqa: PLC0415 - optional: protobuf

    return text_format.MessageToString(msg)


def export_net(net_yaml: str | Path, out: str | Path, weights: str | Path | None = None,
               caffemodel: str | Path | None = None, force: bool = False,
               extra: list[Output] = ()) -> dict:
    """Write ``out`` (.prototxt) and, with ``weights``, ``caffemodel``. Returns a summary dict.

    The weights are checked against the net before anything is written: each blob must have the
    net's shape (or Caffe's legacy 4-D form of it, written back in the net's shape) and each
    layer the net's number of blobs, so the .caffemodel always loads into its own prototxt.

    Both outputs are checked before either is written: the prototxt may replace only netspec's
    own unchanged prototxt (its header checksum still matches), the .caffemodel no existing
    file, unless ``force``; otherwise OverwriteError and nothing is written. ``extra``: further
    outputs of the same command (``--onnx``), checked and written with these.
    """

    out = Path(out)
    raw, _ = load_yaml(net_yaml)
    if isinstance(raw, dict) and "layer" not in raw and ({"net", "train_net", "base_lr"} & set(raw)):
        raise ConvertError("this is a solver file; netspec export writes nets (export the file "
                           "its 'net:' names)", file=str(net_yaml))
    net_param = load_net(net_yaml)
    msg, warnings = net_message(net_param)
    summary = {"prototxt": str(out), "layers": len(msg.layer), "warnings": warnings}
    arrays = None
    if caffemodel is not None:
        if weights is None:
            raise ConvertError("--caffemodel needs --weights (an .npz or .caffemodel to take the "
                               "parameter blobs from)")
        w = Path(weights)
        arrays = read_caffemodel_arrays(w) if w.suffix == ".caffemodel" else load_npz(w, "weights file")
        arrays = fit_to_net(arrays, net_yaml, [lp.name for lp in msg.layer], w, warnings)
    text = stamped(f"Exported by `netspec export` from {Path(net_yaml).name}", prototxt_text(msg))
    outputs = [Output(out, text.encode(), text=True)]
    if arrays is not None:
        unused = attach_blobs(msg, arrays)      # after the prototxt's text: it has no blobs
        if unused:
            warnings.append(f"weights with no layer of that name in {net_yaml}, not written: "
                            f"{', '.join(unused)}")
        outputs.append(Output(Path(caffemodel), msg.SerializeToString(), text=False,
                              option="--caffemodel"))
        summary.update(caffemodel=str(caffemodel), blobs=len(arrays) - len(unused))
    write_outputs([*outputs, *extra], [net_yaml, weights], force)
    return summary


def fit_to_net(arrays: dict, net_yaml: str | Path, layer_names: list[str], weights: Path,
               warnings: list[str]) -> dict:
    """``arrays`` checked against the parameter blobs of the net in ``net_yaml`` and given the
    net's shapes; ConvertError/SnapshotError naming the weights file, the blob and both shapes
    (or both blob counts) for anything Caffe could not load into that net."""

    shapes, problems = model_param_shapes(net_yaml)
    have: dict[str, list[int]] = {}
    for key in shapes:
        name, _, i = key.rpartition("/")
        have.setdefault(name, []).append(int(i))
    given: dict[str, list[int]] = {}
    for key in arrays:
        name, _, i = key.rpartition("/")
        if not name or not i.isdigit():
            raise ConvertError(f"weights key '{key}' is not '<layer>/<blob index>'", file=str(weights))
        given.setdefault(name, []).append(int(i))
    for name, idx in given.items():
        if name not in layer_names:
            continue                    # no such layer: attach_blobs reports it, nothing written
        if name not in have and problems:
            raise ConvertError(f"cannot check the blobs of layer '{name}' against the net: "
                               f"{'; '.join(problems)}", file=str(weights))
        want = sorted(have.get(name, []))
        if sorted(idx) != want:
            raise ConvertError(
                f"layer '{name}' has blobs {sorted(idx)} in the weights but the net's layer has "
                f"{want or 'none'}: Caffe cannot load a layer whose blobs differ (\"Incompatible "
                f"number of blobs\"), so no .caffemodel is written", file=str(weights))
    fitted = {}
    for key, a in arrays.items():
        fitted[key] = fit_blob(key, a, shapes[key], weights) if key in shapes else a
    missing = [k for k in shapes if k not in arrays]
    if missing:
        warnings.append(f"parameter blobs of {net_yaml} not in {weights}, so not in the "
                        f".caffemodel (Caffe keeps its fillers for them): {', '.join(missing)}")
    return fitted
