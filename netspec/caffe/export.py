"""netspec YAML (and .npz weights) -> Caffe's .prototxt (and .caffemodel).

The fields a netspec file sets are written to Caffe's NetParameter message by name; a field
Caffe does not have (netspec's own ``data_param.split``, ``shuffle``, ``limit``, ``offset``) or a
value Caffe cannot read (``builtin:mnist``) is left out or kept with a warning that names the
layer and the field, so the written prototxt never claims more than Caffe will do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import ConvertError, is_repeated, pb2, write_bytes


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
    from google.protobuf.descriptor import FieldDescriptor as FD  # noqa: PLC0415

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
    from google.protobuf import text_format  # noqa: PLC0415

    return text_format.MessageToString(msg)


def export_net(net_yaml: str | Path, out: str | Path, weights: str | Path | None = None,
               caffemodel: str | Path | None = None) -> dict:
    """Write ``out`` (.prototxt) and, with ``weights``, ``caffemodel``. Returns a summary dict."""
    from ..snapshot import load_npz  # noqa: PLC0415
    from ..spec import load_net  # noqa: PLC0415
    from .caffemodel import attach_blobs, read_caffemodel_arrays, write_caffemodel  # noqa: PLC0415

    from ..spec.yaml_lines import load_yaml  # noqa: PLC0415

    raw, _ = load_yaml(net_yaml)
    if isinstance(raw, dict) and "layer" not in raw and ({"net", "train_net", "base_lr"} & set(raw)):
        raise ConvertError("this is a solver file; netspec export writes nets (export the file "
                           "its 'net:' names)", file=str(net_yaml))
    net_param = load_net(net_yaml)
    msg, warnings = net_message(net_param)
    write_bytes(out, prototxt_text(msg).encode())
    summary = {"prototxt": str(out), "layers": len(msg.layer), "warnings": warnings}
    if caffemodel is not None:
        if weights is None:
            raise ConvertError("--caffemodel needs --weights (an .npz or .caffemodel to take the "
                               "parameter blobs from)")
        w = Path(weights)
        arrays = read_caffemodel_arrays(w) if w.suffix == ".caffemodel" else load_npz(w, "weights file")
        unused = attach_blobs(msg, arrays)
        if unused:
            warnings.append(f"weights with no layer of that name in {net_yaml}, not written: "
                            f"{', '.join(unused)}")
        write_caffemodel(msg, caffemodel)
        summary.update(caffemodel=str(caffemodel), blobs=len(arrays) - len(unused))
    return summary
