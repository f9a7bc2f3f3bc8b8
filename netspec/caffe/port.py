"""``netspec convert`` as functions: Caffe net/solver prototxt -> YAML, caffemodel -> npz.

Every function returns a ``Converted`` record (what was written, the notes and warnings) and
raises ConvertError/SnapshotError naming the file, the layer and the field when it cannot.
Outputs go through ``outputs.write_outputs``: all are checked before any is written, and none
replaces a file that is not netspec's own unchanged output unless ``force`` (``--force``).
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backend import Backend
from ..errors import NetspecError, SpecError
from ..graph import filter_phase, legacy_inputs, resolve
from ..net import Net
from ..spec import load_net, loads_net
from ..spec.load import validate_model
from ..spec.params import NetState
from ..spec.solver import SolverParameter
from ..spec.yaml_lines import loads_yaml
from . import ConvertError
from .caffemodel import fit_to_model, net_arrays, read_caffemodel
from . import prototxt as ptx
from .outputs import Output, stamped, write_outputs
from .to_yaml import Report, net_to_dict, solver_to_dict
from .upgrade import UpgradeLog, upgrade_net, upgrade_solver
from .yaml_out import dump


@dataclass
class Converted:
    kind: str                     # "net", "solver" or "weights"
    outputs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


# -- nets ----------------------------------------------------------------------------------------
def located(e: ConvertError, file: str, text: str | None) -> ConvertError:
    """``e`` naming ``file`` and, where ``text`` has it, the line of the layer or field the
    error is about (errors raised where no file is known, e.g. by the format upgrades)."""
    if e.file is not None:
        return e
    return ConvertError(e.message, file=file, line=ptx.locate(text, e.where), field=e.field)


def net_yaml(net_msg, source: str, drop_unsupported: bool = False, input_layer: bool = False,
             out_name: str = "<converted>", text: str | None = None
             ) -> tuple[str, dict, Report, UpgradeLog]:
    """(YAML text, data, Report, UpgradeLog) of a NetParameter message; checks that it loads
    and that its graph builds (``_check_graph``). ``text`` (the prototxt) lets errors name the
    line of the layer they are about."""

    try:
        up, log = upgrade_net(net_msg, input_layer=input_layer)
    except ConvertError as e:
        raise located(e, source, text) from None
    data, report = net_to_dict(up, drop_unsupported)
    report.warnings[:0] = log.warnings
    report.notes[:0] = log.steps
    report.raise_errors(source, locate=lambda where: ptx.locate(text, where))
    fmt = {"V0": "legacy V0 format, upgraded as Caffe does",
           "V1": "legacy V1 format, upgraded as Caffe does"}.get(log.format, "current format")
    if not data.get("layer"):
        raise ConvertError("the net defines no layers (Caffe lists them as `layer { ... }`, or "
                           "`layers { ... }` in the legacy formats)", file=source)
    yaml_text = stamped(f"Converted by `netspec convert` from {Path(source).name} (Caffe {fmt})",
                        dump(data))
    try:
        net = loads_net(yaml_text, out_name)
    except SpecError as e:
        message, where = _name_layers(e.message, e.field, data)
        raise ConvertError(f"the converted net does not validate in netspec: {message}",
                           file=source, line=ptx.locate(text, where)) from None
    _check_graph(net, source, text)
    return yaml_text, data, report, log


def _name_layers(message: str, fld: str | None, data: dict) -> tuple[str, tuple[str, str] | None]:
    """(message naming the layer and field, what it is about: ("layer", name) or ("key", field))."""
    m = re.match(r"layer\[(\d+)\]\.?(.*)", fld or "")
    if m and int(m.group(1)) < len(data.get("layer", [])):
        layer = data["layer"][int(m.group(1))]
        text = f"layer '{layer.get('name')}' ({layer.get('type')}): {m.group(2) or 'layer'}: {message}"
        return text, ("layer", str(layer.get("name", "")))
    if fld:
        return f"{fld}: {message}", ("key", re.split(r"[.\[ ]", fld)[0])
    return message, None


def _check_graph(net, source: str, text: str | None) -> None:
    """Caffe's Net::Init checks (``netspec.graph``), for the net of each phase and each stage
    set its include rules name: no top produced twice except in place, legacy input_dim in
    fours, no declared shape past Caffe's blob limit, in any of them; every bottom produced by
    an earlier layer, in at least one of them (a file may be a train_net or a test_net only,
    its other phase missing its data layers). Nothing is built."""
    states = []
    for phase in ("TRAIN", "TEST"):
        stage_sets: list[tuple[str, ...]] = []
        for lp in net.layer:
            for rule in lp.include:
                if rule.phase in (None, phase) and rule.stage and tuple(rule.stage) not in stage_sets:
                    stage_sets.append(tuple(rule.stage))
        states += [(phase, st) for st in stage_sets or [tuple(net.state.stage)]]
    missing_bottoms = []
    for phase, stages in states:
        state = NetState(phase=phase, level=net.state.level, stage=list(stages))
        try:
            resolve(legacy_inputs(net) + filter_phase(net, state), net)
        except SpecError as e:
            if (e.field or "").endswith(".bottom"):
                missing_bottoms.append((phase, stages, e))
                continue
            raise _graph_error(net, phase, stages, e, source, text) from None
    if missing_bottoms and len(missing_bottoms) == len(states):
        raise _graph_error(net, *missing_bottoms[0], source, text) from None


def _graph_error(net, phase: str, stages: tuple[str, ...], e: SpecError, source: str,
                 text: str | None) -> ConvertError:
    fld = e.field or ""
    names = [lp.name for lp in net.layer if fld.startswith(f"layer {lp.name}.")]
    where = ("layer", max(names, key=len)) if names else ("key", fld.split(".")[0])
    return ConvertError(f"the net does not build ({phase} phase"
                        f"{', stages ' + ', '.join(stages) if stages else ''}): {e.message}",
                        file=source, line=ptx.locate(text, where))


def default_output(src: Path, suffix: str) -> Path:
    if src.name in ("", ".", ".."):
        raise ConvertError(f"'{src}' names no file", file=str(src))
    return src.with_suffix(suffix) if src.suffix else src.with_name(src.name + suffix)


def convert_net(src: str | Path, out: str | Path | None = None, drop_unsupported: bool = False,
                input_layer: bool = False, msg=None, force: bool = False) -> Converted:
    """A net .prototxt (or its parsed ``msg``) -> netspec YAML at ``out`` (default: same name,
    .yaml). An existing ``out`` is replaced only when it is netspec's own unchanged output or
    with ``force``."""

    result, output = _net_output(src, out, drop_unsupported, input_layer, msg)
    write_outputs([output], [src], force)
    return result


def _net_output(src: str | Path, out: str | Path | None, drop_unsupported: bool,
                input_layer: bool, msg=None, option: str | None = "-o") -> tuple[Converted, Output]:
    """convert_net's work, short of writing: (its record, the Output to write)."""

    src = Path(src)
    text = None
    if msg is None:
        kind, msg, text = ptx.read(src)
        if kind != "net":
            raise ConvertError("this is a solver file, not a net", file=str(src))
        _refuse_empty(text, src)
    out = Path(out) if out else default_output(src, ".yaml")
    if out.resolve() == src.resolve():
        raise ConvertError("the output would overwrite the input; give -o", file=str(src))
    yaml_text, data, report, log = net_yaml(msg, str(src), drop_unsupported, input_layer,
                                            str(out), text)
    return (Converted("net", [str(out)], report.notes, report.warnings,
                      {"layers": len(data.get("layer", [])), "format": log.format}),
            Output(out, yaml_text.encode(), text=True, option=option))


def _refuse_empty(text: str, src: Path) -> None:
    """A file with nothing but blanks and comments is an error of its own (not 'no layers')."""
    if not any(line.split("#", 1)[0].strip() for line in text.splitlines()):
        raise ConvertError("the file is empty (nothing but blanks and comments): no net or solver "
                           "to convert", file=str(src))


# -- solvers -------------------------------------------------------------------------------------
def find_net(ref: str, solver_path: Path) -> Path | None:
    """Where a solver's net path points: Caffe resolves it from the working directory (usually
    Caffe's root); try that, then the solver's folder, then the solver's folder with leading
    components of the path dropped (examples/mnist/x.prototxt -> <solver dir>/x.prototxt)."""
    p = Path(ref).expanduser()
    if p.is_absolute():
        return p if p.is_file() else None
    candidates = [Path.cwd() / p, solver_path.parent / p]
    parts = p.parts
    candidates += [solver_path.parent.joinpath(*parts[k:]) for k in range(1, len(parts))]
    for c in candidates:
        if c.is_file():
            return c
    return None


def convert_solver(src: str | Path, out: str | Path | None = None, drop_unsupported: bool = False,
                   input_layer: bool = False, force: bool = False) -> Converted:
    """A solver .prototxt -> solver YAML; its net files (or inline nets) are converted too.

    A referenced net ``N.prototxt`` is written as ``N.yaml`` next to it, and the solver's
    ``net:`` points there relative to the solver YAML (netspec resolves paths from the solver
    file, Caffe from its working directory). Inline ``net_param`` blocks become
    ``<solver>.net.yaml`` beside the solver YAML. The solver YAML and every net YAML are
    checked (not replacing files that are not netspec's own unchanged output, unless ``force``)
    before any is written.
    """

    src = Path(src)
    kind, msg, solver_text = ptx.read(src)
    if kind != "solver":
        raise ConvertError("this is a net file, not a solver", file=str(src))
    out = Path(out) if out else default_output(src, ".yaml")
    if out.resolve() == src.resolve():
        raise ConvertError("the output would overwrite the input; give -o", file=str(src))
    try:
        solver, steps = upgrade_solver(msg)
    except ConvertError as e:
        raise located(e, str(src), solver_text) from None
    result = Converted("solver", [], list(steps), [])
    written: dict[Path, str] = {}
    outputs: list[Output] = []
    inputs: list[Path] = [src]

    def rel(p: Path) -> str:
        return Path(os.path.relpath(p.resolve(), out.resolve().parent)).as_posix()

    def net_ref(fld: str, ref: str) -> str:
        if ref.endswith((".yaml", ".yml")):
            return ref
        found = find_net(ref, src)
        if found is None:
            p = Path(ref).expanduser()
            folders = [c for c in ([p] if p.is_absolute() else [Path.cwd() / p, src.parent / p])
                       if c.is_dir()]
            if folders or Path(ref).name in ("", ".", ".."):
                raise ConvertError(f"'{fld}' names '{ref}', which is a folder, not a net file",
                                   file=str(src), line=ptx.key_line(solver_text, fld))
            guess = default_output(Path(ref), ".yaml").as_posix()
            result.warnings.append(
                f"{fld} '{ref}' not found (looked from the working directory and from "
                f"{src.parent}); the solver's {fld} says '{guess}': convert that net with "
                f"`netspec convert` and put it there (relative to {out.name})")
            return guess
        if found.resolve() not in written:
            try:
                sub, output = _net_output(found, default_output(found, ".yaml"), drop_unsupported,
                                          input_layer, option=None)
            except ConvertError as e:
                raise ConvertError(f"{fld} of {src.name}: {e.message}",
                                   file=e.file, line=e.line, field=e.field) from None
            outputs.append(output)
            inputs.append(found)
            written[found.resolve()] = sub.outputs[0]
            result.outputs.extend(sub.outputs)
            result.notes.extend(f"{found.name}: {n}" for n in sub.notes)
            result.warnings.extend(f"{found.name}: {w}" for w in sub.warnings)
        return rel(Path(written[found.resolve()]))

    def inline_net(net_msg, role: str) -> str:
        path = out.with_name(f"{out.stem}.{role}.yaml")
        key = re.sub(r"\d+$", "", role) + "_param"
        try:
            sub, output = _net_output(src, path, drop_unsupported, input_layer, msg=net_msg)
        except ConvertError as e:
            raise ConvertError(f"{key}: {e.message}", file=str(src),
                               line=e.line or ptx.key_line(solver_text, key)) from None
        outputs.append(output)
        result.outputs.extend(sub.outputs)
        result.notes.extend(f"{role}: {n}" for n in sub.notes)
        result.warnings.extend(f"{role}: {w}" for w in sub.warnings)
        return rel(path)

    data, report = solver_to_dict(solver, net_ref, inline_net, drop_unsupported)
    report.raise_errors(str(src), "solver", locate=lambda where: ptx.locate(solver_text, where))
    result.notes.extend(report.notes)
    result.warnings.extend(report.warnings)
    prefix = data.get("snapshot_prefix")
    if prefix and not Path(prefix).is_absolute():
        result.notes.append(f"snapshot_prefix '{prefix}' is now relative to {out.name} (Caffe: "
                            "relative to the working directory)")
    text = stamped(f"Converted by `netspec convert` from {src.name} (Caffe solver)", dump(data))
    try:
        parsed, lines = loads_yaml(text, str(out))
        validate_model(SolverParameter, parsed, str(out), lines)
    except SpecError as e:
        key = re.split(r"[.\[ ]", e.field)[0] if e.field else None
        raise ConvertError(f"the converted solver does not validate in netspec: "
                           f"{e.field + ': ' if e.field else ''}{e.message}", file=str(src),
                           line=ptx.key_line(solver_text, key) if key else None) from None
    write_outputs([Output(out, text.encode(), text=True), *outputs], inputs, force)
    result.outputs.insert(0, str(out))
    return result


# -- weights -------------------------------------------------------------------------------------
def model_param_shapes(model: str | Path) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """``{"layer/i": shape}`` of a netspec net file, from the nets of its phases that build."""

    net_param = load_net(model)
    shapes: dict[str, tuple[int, ...]] = {}
    problems: list[str] = []
    for phase in ("TEST", "TRAIN"):
        try:
            net = Net(net_param, phase, Backend())
        except NetspecError as e:
            problems.append(f"{phase}: {e}")
            continue
        for key, p in net.named_params().items():
            shapes.setdefault(key, tuple(p.shape))
    if not shapes and problems:
        raise ConvertError("cannot build the net to learn its parameter shapes ("
                           + "; ".join(problems) + "). Use a deploy net (Input layers) as --model",
                           file=str(model))
    return shapes, problems


def convert_weights(src: str | Path, out: str | Path | None = None,
                    model: str | Path | None = None, force: bool = False) -> Converted:
    """A .caffemodel -> .npz of ``{"layer/i": array}``; with ``model``, shapes are checked and
    legacy 4-D shapes reshaped to the net's, and missing/unused blobs reported. An existing
    ``out`` is replaced only with ``force`` (an .npz carries no mark of who wrote it)."""

    src = Path(src)
    out = Path(out) if out else default_output(src, ".npz")
    net = read_caffemodel(src)
    arrays, warnings = net_arrays(net, str(src))
    result = Converted("weights", [str(out)], [], list(warnings))
    if model is not None:
        shapes, problems = model_param_shapes(model)
        result.notes.extend(f"--model phase {p} (skipped)" for p in problems)
        fitted, missing, unused, reshaped = fit_to_model(arrays, shapes, str(src))
        if reshaped:
            result.notes.append(f"legacy shapes reshaped to the net's: {', '.join(reshaped)}")
        if missing:
            result.warnings.append(f"parameter blobs of {Path(model).name} not in the caffemodel "
                                   f"(left to the fillers when loaded): {', '.join(missing)}")
        if unused:
            result.warnings.append(f"blobs of the caffemodel that {Path(model).name} has no "
                                   f"parameter for (not written): {', '.join(unused)}")
        arrays = fitted
        result.info.update(missing=missing, unused=unused, reshaped=reshaped)
    else:
        result.notes.append("no --model: blobs written with the shapes stored in the caffemodel")
    if not arrays:
        raise ConvertError("no parameter blobs to write" + (" that fit the model" if model else ""),
                           file=str(src))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_outputs([Output(out, buf.getvalue(), text=False)], [src, model], force)
    result.info["blobs"] = len(arrays)
    return result


def convert(src: str | Path, out: str | Path | None = None, model: str | Path | None = None,
            drop_unsupported: bool = False, input_layer: bool = False,
            force: bool = False) -> Converted:
    """Dispatch on the file: .caffemodel (binary) -> weights; text -> net or solver.

    No output replaces an existing file that is not netspec's own unchanged output (a YAML
    whose header checksum still matches) unless ``force``; then nothing is written at all.

    A binary file named like a text file (.prototxt, .pbtxt) or converted to .yaml is refused:
    it is no net, and its weights would not belong in a YAML file."""
    src = Path(src)
    if src.suffix == ".caffemodel" or _is_binary(src):
        if src.suffix != ".caffemodel" and (src.suffix in TEXT_SUFFIXES or (
                out is not None and Path(out).suffix in (".yaml", ".yml"))):
            ptx.read_text(src)          # raises: what the binary file is and what to do
        return convert_weights(src, out, model, force)
    if model is not None:
        raise ConvertError("--model is for .caffemodel files", file=str(src))
    text = ptx.read_text(src)
    _refuse_empty(text, src)
    kind = ptx.kind_of(text)
    if kind == "solver":
        return convert_solver(src, out, drop_unsupported, input_layer, force)
    return convert_net(src, out, drop_unsupported, input_layer, force=force)


#: suffixes of Caffe's text files
TEXT_SUFFIXES = (".prototxt", ".pbtxt", ".txt")


def _is_binary(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return b"\0" in f.read(4096)
    except OSError:
        return False
