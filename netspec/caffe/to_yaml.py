"""Caffe messages -> netspec YAML data, keeping exactly what the file says.

Only fields the Caffe file sets are written (Caffe's defaults are netspec's defaults), in the
order of ``caffe.proto``; layers keep their order and names. Every field is checked against
netspec's own models (``netspec.spec``): a layer type netspec does not implement, or a field it
does not model, is an error that names the layer and the field (``drop_unsupported=True`` turns
unmodelled fields into warnings and leaves them out). A layer-specific block that netspec's
layer of that type does not read (``convolution_param`` on a ReLU) is left out with a warning.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel

from ..layers import registry
from ..spec.net import LayerParameter, NetParameter
from ..spec.params import LAYER_TYPES
from ..spec.solver import SolverParameter
from . import ConvertError, is_repeated

FORK_TYPES = {
    **dict.fromkeys(("YoloSeg",),
                    "the MobileNet-YOLO fork of Caffe (eric612/MobileNet-YOLO)"),
}


@dataclass
class Report:
    """What a conversion changed or could not carry over; ``errors`` stop it."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: layer type netspec does not implement -> names of the layers that use it
    unknown_types: dict[str, list[str]] = field(default_factory=dict)
    #: what each problem is about, in the order found: ("layer", name) or ("key", field)
    problem_at: list[tuple[str, str]] = field(default_factory=list)

    def raise_errors(self, file: str | None, what: str = "net",
                     locate: Callable[[tuple[str, str]], int | None] | None = None) -> None:
        """One ConvertError listing every problem (one line, problems separated by '; '),
        at the line ``locate`` gives for the first problem found."""
        problems = [_type_problem(t, names) for t, names in self.unknown_types.items()]
        problems += self.errors
        if problems:
            n = len(problems)
            implemented = (f"; netspec implements: {', '.join(sorted(LAYER_TYPES))}"
                           if self.unknown_types else "")
            line = locate(self.problem_at[0]) if locate and self.problem_at else None
            raise ConvertError(f"cannot convert this Caffe {what} to netspec YAML "
                               f"({n} problem{'s' if n > 1 else ''}): {'; '.join(problems)}"
                               f"{implemented}", file=file, line=line)


# -- message -> python ---------------------------------------------------------------------------
def f32(v: float) -> float:
    """The shortest decimal that is the same float32 (0.0001, not 9.999999747378752e-05)."""
    return float(str(np.float32(v)))


def value_of(fd, v) -> Any:
    from google.protobuf.descriptor import FieldDescriptor as FD  # noqa: PLC0415 - protobuf

    if fd.message_type is not None:
        return to_python(v)
    if fd.enum_type is not None:
        return fd.enum_type.values_by_number[v].name
    if fd.cpp_type == FD.CPPTYPE_FLOAT:
        return f32(v)
    return v


def to_python(msg) -> dict:
    """The fields ``msg`` sets, in declaration order: enums by name, float32 shortest."""
    out: dict[str, Any] = {}
    for fd in msg.DESCRIPTOR.fields:
        if is_repeated(fd):
            vals = getattr(msg, fd.name)
            if len(vals):
                out[fd.name] = [value_of(fd, v) for v in vals]
        elif msg.HasField(fd.name):
            out[fd.name] = value_of(fd, getattr(msg, fd.name))
    return out


# -- checking against netspec's models -------------------------------------------------------
def _submodel(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    fld = model.model_fields.get(name)
    if fld is None:
        return None
    ann = fld.annotation
    while True:
        origin = typing.get_origin(ann)
        if origin is None:
            break
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if origin is typing.Literal or not args:
            break
        ann = args[0]
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def prune(data: dict, model: type[BaseModel], path: str, unsupported: list[str]) -> dict:
    """``data`` without the keys ``model`` lacks (recursively); their paths go to ``unsupported``."""
    out = {}
    for k, v in data.items():
        here = f"{path}.{k}" if path else k
        if k not in model.model_fields:
            unsupported.append(here)
            continue
        sub = _submodel(model, k)
        if sub is not None and isinstance(v, dict):
            v = prune(v, sub, here, unsupported)
        elif sub is not None and isinstance(v, list):
            v = [prune(x, sub, f"{here}[{i}]", unsupported) if isinstance(x, dict) else x
                 for i, x in enumerate(v)]
        out[k] = v
    return out


def _type_problem(lp_type: str, names: list[str]) -> str:
    """One line for all the layers of a type netspec does not implement."""
    quoted = ", ".join(names)
    if not lp_type:
        return f"layer{'s' if len(names) > 1 else ''} {quoted} {'have' if len(names) > 1 else 'has'} no type"
    head = (f"layer {quoted} has type '{lp_type}'" if len(names) == 1 else
            f"layers {quoted} have type '{lp_type}'")
    head += ", which netspec does not implement"
    if lp_type in FORK_TYPES:
        return f"{head}: it exists only in {FORK_TYPES[lp_type]}, not in BVLC Caffe"
    same = [t for t in LAYER_TYPES if t.lower() == lp_type.lower()]
    if same:
        return head + f" (did you mean '{same[0]}'? Layer types are case-sensitive)"
    close = difflib.get_close_matches(lp_type, list(LAYER_TYPES), n=1, cutoff=0.6)
    return head + (f" (did you mean '{close[0]}'?)" if close else "")


def _data_source_note(d: dict, name: str) -> str | None:
    dp = d.get("data_param") or {}
    src = dp.get("source", "")
    if src.startswith("builtin:") or src.endswith(".npz"):
        return None
    db = dp.get("backend", "LEVELDB")
    name_of = {"LMDB": ("an LMDB", "lmdb"), "LEVELDB": ("a LevelDB", "plyvel")}[db]
    return (f"layer '{name}': data_param.source '{src}' is {name_of[0]} path, opened when the net "
            f"is built, relative to the YAML's folder (needs the 'caffe' extra: {name_of[1]}, "
            "Pillow)")


AUTO_TOP = "(automatic)"  # the blob name Caffe's Net::AppendTop gives an automatic top


def _with_top(d: dict, top: str) -> dict:
    """``d`` with ``top`` inserted after ``bottom`` (keeping the usual key order)."""
    out = {}
    for k, v in d.items():
        if k in ("param", "loss_weight", "phase", "propagate_down", "include", "exclude") \
                or k.endswith("_param"):
            out.setdefault("top", [top])
        out[k] = v
    out.setdefault("top", [top])
    return out


def layer_to_dict(lp, report: Report, drop_unsupported: bool = False) -> dict | None:
    """One LayerParameter message -> netspec layer data (None when its type is unknown)."""
    d = to_python(lp)
    name = d.get("name", "")
    if lp.type not in LAYER_TYPES:
        label = f"'{name}'"
        if lp.type == "Python" and d.get("python_param"):
            pp = d["python_param"]
            label += f" ({'.'.join(x for x in (pp.get('module'), pp.get('layer')) if x)})"
        report.unknown_types.setdefault(lp.type, []).append(label)
        report.problem_at.append(("layer", name))
        return None
    if "blobs" in d:
        report.warnings.append(f"layer '{name}': its {len(d.pop('blobs'))} parameter blob(s) "
                               "in the prototxt are not written to the YAML; put weights in an "
                               ".npz (netspec convert MODEL.caffemodel --model NET.yaml)")
    cls = registry.get(lp.type)
    reads = {cls.param_block, *cls.extra_blocks}
    for key in list(d):
        fd = lp.DESCRIPTOR.fields_by_name.get(key)
        # layer-specific blocks (field numbers from 102 on) that this type does not read
        if fd is not None and fd.number >= 102 and key not in reads:
            d.pop(key)
            report.warnings.append(f"layer '{name}' ({lp.type}): '{key}' left out: netspec's "
                                   f"{lp.type} layer does not read it")
    unsupported: list[str] = []
    d = prune(d, LayerParameter, "", unsupported)
    for path in unsupported:
        msg = (f"layer '{name}' ({lp.type}): field '{path}' is not supported by netspec")
        if drop_unsupported:
            report.warnings.append(msg + "; left out (--drop-unsupported)")
        else:
            report.errors.append(msg + " (convert with --drop-unsupported to leave it out)")
            report.problem_at.append(("layer", name))
    if not d.get("top") and getattr(cls, "is_loss", False):
        # Caffe's LossLayer::AutoTopBlobs: a loss layer without a top gets an anonymous one
        d = _with_top(d, AUTO_TOP)
        report.notes.append(f"layer '{name}' ({lp.type}) names no top; Caffe gives a loss layer "
                            f"an automatic one, written here as top '{AUTO_TOP}'")
    if lp.type == "Data":
        note = _data_source_note(d, name)
        if note:
            report.warnings.append(note)
    return d


def net_to_dict(net, drop_unsupported: bool = False) -> tuple[dict, Report]:
    """An (upgraded) NetParameter message -> (netspec net data, Report)."""
    report = Report()
    if len(net.layers):
        raise ConvertError("internal: upgrade the net (V1 'layers') before converting it")
    top = to_python(net)
    top.pop("layers", None)
    layers = top.pop("layer", [])
    unsupported: list[str] = []
    out = prune(top, NetParameter, "", unsupported)
    for path in unsupported:
        msg = f"net field '{path}' is not supported by netspec"
        (report.warnings if drop_unsupported else report.errors).append(msg)
        if not drop_unsupported:
            report.problem_at.append(("key", path.split(".")[0]))
    out["layer"] = []
    for lp in net.layer:
        d = layer_to_dict(lp, report, drop_unsupported)
        if d is not None:
            out["layer"].append(d)
    if not layers:
        out.pop("layer")
    return out, report


# -- solvers ---------------------------------------------------------------------------------
# Solver fields that change nothing netspec computes: left out with a warning.
SOLVER_IGNORED = {
    "layer_wise_reduce": "it only overlaps multi-GPU communication with compute",
}


def solver_to_dict(solver, net_ref: Callable[[str, str], str],
                   inline_net: Callable[[Any, str], str],
                   drop_unsupported: bool = False) -> tuple[dict, Report]:
    """An (upgraded) SolverParameter message -> (netspec solver data, Report).

    ``net_ref(field, path)`` converts a referenced net file and returns what the YAML's
    ``net``/``train_net``/``test_net`` should say; ``inline_net(message, role)`` writes an
    inline ``net_param``/``train_net_param``/``test_net_param`` as a YAML file and returns its
    path for the solver.
    """
    report = Report()
    d = to_python(solver)
    out: dict[str, Any] = {}
    if "net" in d and "net_param" in d:
        report.errors.append("the solver gives both 'net' and 'net_param'; Caffe takes one")
        report.problem_at.append(("key", "net"))
    if "train_net" in d and "train_net_param" in d:
        report.errors.append("the solver gives both 'train_net' and 'train_net_param'")
        report.problem_at.append(("key", "train_net"))
    if "net_param" in d:
        out["net"] = inline_net(solver.net_param, "net")
        report.notes.append(f"inline net_param written to {out['net']}")
    elif "net" in d:
        out["net"] = net_ref("net", d["net"])
    if "train_net_param" in d:
        out["train_net"] = inline_net(solver.train_net_param, "train_net")
        report.notes.append(f"inline train_net_param written to {out['train_net']}")
    elif "train_net" in d:
        out["train_net"] = net_ref("train_net", d["train_net"])
    tests = [inline_net(m, f"test_net{i}") for i, m in enumerate(solver.test_net_param)]
    tests += [net_ref("test_net", p) for p in d.get("test_net", [])]
    if tests:
        out["test_net"] = tests
    for key in ("net", "net_param", "train_net", "train_net_param", "test_net", "test_net_param"):
        d.pop(key, None)
    for key, why in SOLVER_IGNORED.items():
        if key in d:
            d.pop(key)
            report.warnings.append(f"solver field '{key}' left out: {why}")
    if "weights" in d:
        w = d.pop("weights")
        if len(w) == 1 and "," not in w[0]:
            d["weights"] = w[0]
        else:
            report.errors.append(f"solver field 'weights' lists several files {w}; netspec "
                                 "fine-tunes from one")
            report.problem_at.append(("key", "weights"))
    if d.get("weight_decay", 0.0) != 0.0 and "regularization_type" not in d:
        d = {k2: v2 for k, v in d.items()
             for k2, v2 in ([(k, v), ("regularization_type", "L2")] if k == "weight_decay"
                            else [(k, v)])}
        report.notes.append("regularization_type: L2 written explicitly (Caffe's default; "
                            "netspec requires it whenever weight_decay is set)")
    if "regularization_type" in d and d["regularization_type"] not in ("L1", "L2"):
        report.errors.append(f"regularization_type '{d['regularization_type']}' is not one of "
                             "Caffe's (L1, L2)")
        report.problem_at.append(("key", "regularization_type"))
    if "solver_mode" not in d:
        report.notes.append("solver_mode not set: Caffe's default is GPU, netspec's is CPU "
                            "(train with --gpu to use CuPy)")
    unsupported: list[str] = []
    d = prune(d, SolverParameter, "", unsupported)
    for path in unsupported:
        msg = f"solver field '{path}' is not supported by netspec"
        if drop_unsupported:
            report.warnings.append(msg + "; left out (--drop-unsupported)")
        else:
            report.errors.append(msg + " (convert with --drop-unsupported to leave it out)")
            report.problem_at.append(("key", path.split(".")[0]))
    out.update(d)
    return out, report
