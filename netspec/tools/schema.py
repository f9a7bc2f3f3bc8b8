"""JSON Schemas of net and solver files, for editor completion and checking (``netspec schema``).

Generated from the pydantic models (``NetParameter``, ``SolverParameter``) as draft-07
(``definitions``, which VS Code's YAML language server reads), then adjusted to what netspec
accepts: a Caffe ``repeated`` field also takes one value (``top: conv1``) or null, and layer
and filler ``type`` list the known names. netspec checks more than a schema can say (that
bottoms exist, shapes fit ...).
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, BeforeValidator

from ..fillers import FILLERS
from ..spec.params import LAYER_TYPES
from ..spec.base import _as_list
from ..spec.net import NetParameter
from ..spec.solver import SolverParameter

DRAFT = "http://json-schema.org/draft-07/schema#"
REF = "#/definitions/{model}"
NET_SCHEMA_FILE = "netspec.schema.json"
SOLVER_SCHEMA_FILE = "netspec.solver.schema.json"


def _is_repeated(field) -> bool:
    return any(isinstance(m, BeforeValidator) and m.func is _as_list for m in field.metadata)


def _models(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model reachable from ``root``, by class name (pydantic's definition names)."""
    seen: dict[str, type[BaseModel]] = {}

    def visit(tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp.__name__ in seen:
                return
            seen[tp.__name__] = tp
            for f in tp.model_fields.values():
                visit(f.annotation)
            return
        for arg in typing.get_args(tp):
            visit(arg)

    visit(root)
    return seen


def _accept_single(prop: dict) -> dict:
    """``{"type": "array", "items": X}`` -> one of X, an array of X, or null."""
    array = {k: v for k, v in prop.items() if k in ("type", "items", "minItems", "maxItems")}
    rest = {k: v for k, v in prop.items() if k not in array}
    item = prop.get("items", {})
    return {**rest, "anyOf": [item, array, {"type": "null"}]}


def _adjust(schema: dict, root: type[BaseModel]) -> dict:
    defs = schema.get("definitions", {})
    for name, model in _models(root).items():
        target = schema if model is root else defs.get(name)
        if target is None:
            continue
        props = target.get("properties", {})
        for fname, field in model.model_fields.items():
            key = field.alias or fname
            if key in props and _is_repeated(field) and props[key].get("type") == "array":
                props[key] = _accept_single(props[key])
    layer = defs.get("LayerParameter")
    if layer is not None:
        layer["properties"]["type"]["enum"] = sorted(LAYER_TYPES)
        layer["properties"]["type"]["description"] = "The layer's Caffe type name."
        layer["properties"]["name"]["description"] = "A name unique within the net."
    filler = defs.get("FillerParameter")
    if filler is not None:
        filler["properties"]["type"]["enum"] = sorted(FILLERS)
    return schema


# Hover text for the fields people most often get wrong (model -> field -> description).
DESCRIPTIONS: dict[str, dict[str, str]] = {
    "SolverParameter": {
        "net": "The network file, relative to this solver file.",
        "base_lr": "Base learning rate; lr_policy scales it per iteration.",
        "lr_policy": "fixed | step (gamma, stepsize) | exp (gamma) | inv (gamma, power) | "
                     "multistep (gamma, stepvalue) | poly (power) | sigmoid (gamma, stepsize).",
        "weight_decay": "The decay coefficient lambda. Needs regularization_type when not 0.",
        "regularization_type": "L2: g += lambda*decay_mult*W before the update (Caffe, PyTorch "
                               "SGD); L1: g += lambda*decay_mult*sign(W); decoupled: "
                               "W *= 1 - lambda*decay_mult*lr_t/base_lr after the update (AdamW).",
        "test_iter": "Batches per test phase, one value per test net.",
        "test_interval": "Test every this many iterations (0: never).",
        "display": "Log the loss every this many iterations (0: never).",
        "snapshot": "Write weights and solver state every this many iterations (0: only at the end).",
        "snapshot_prefix": "Path prefix of snapshots, relative to this solver file.",
        "random_seed": "Seed of every random choice (fillers, shuffling, dropout); -1: random.",
        "solver_mode": "CPU (NumPy) or GPU (CuPy).",
    },
    "ParamSpec": {
        "lr_mult": "Multiplies the learning rate of this parameter blob (0 freezes it).",
        "decay_mult": "Multiplies weight_decay for this parameter blob (0: no decay).",
        "name": "Blobs with the same name in several layers are one shared blob.",
    },
    "LayerParameter": {
        "bottom": "Input blob name(s), produced by earlier layers.",
        "top": "Output blob name(s); top[i] == bottom[i] runs in place.",
        "param": "Per parameter blob (weights, then bias): lr_mult, decay_mult, name.",
        "include": "Keep the layer only in these states, e.g. {phase: TRAIN}.",
        "exclude": "Drop the layer in these states.",
        "loss_weight": "Weight of each top in the loss (loss layers: 1 for the first top).",
    },
}

# Solver rules pydantic checks in a validator, restated for editors (JSON Schema if/then).
_LR_POLICY_NEEDS = {"step": ("gamma", "stepsize"), "exp": ("gamma",), "inv": ("gamma", "power"),
                    "multistep": ("gamma", "stepvalue"), "poly": ("power",),
                    "sigmoid": ("gamma", "stepsize")}


def _solver_rules() -> list[dict]:
    rules: list[dict] = [
        {"if": {"required": ["weight_decay"],
                "properties": {"weight_decay": {"not": {"const": 0}}}},
         "then": {"required": ["regularization_type"],
                  "properties": {"regularization_type": {"type": "string"}}}},
        {"anyOf": [{"required": ["net"]}, {"required": ["train_net"]}]},
    ]
    for policy, needs in _LR_POLICY_NEEDS.items():
        rules.append({"if": {"required": ["lr_policy"], "properties": {"lr_policy": {"const": policy}}},
                      "then": {"required": list(needs)}})
    return rules


def _describe(schema: dict, root: type[BaseModel]) -> None:
    for model_name, fields in DESCRIPTIONS.items():
        target = schema if root.__name__ == model_name else schema["definitions"].get(model_name)
        if target is None:
            continue
        for field, text in fields.items():
            prop = target.get("properties", {}).get(field)
            if prop is not None and "description" not in prop:
                prop["description"] = text


def _schema(model: type[BaseModel], title: str, description: str) -> dict:
    raw = model.model_json_schema(ref_template=REF, mode="validation")
    raw["definitions"] = raw.pop("$defs", {})
    raw = _adjust(raw, model)
    _describe(raw, model)
    head = {"$schema": DRAFT, "title": title, "description": description}
    body = {k: v for k, v in raw.items() if k not in ("title", "description", "definitions")}
    out = {**head, **body}
    if model.__name__ == "SolverParameter":
        out["allOf"] = _solver_rules()
    if raw["definitions"]:
        out["definitions"] = dict(sorted(raw["definitions"].items()))
    return out


def net_schema() -> dict:
    """JSON Schema of a netspec network file (NetParameter)."""
    return _schema(NetParameter, "netspec network file",
                   "A network in Caffe's NetParameter vocabulary (name, layer: [...]), as YAML. "
                   "A single value may stand for a one-element list. Generated by "
                   "`netspec schema`.")


def solver_schema() -> dict:
    """JSON Schema of a netspec solver file (SolverParameter)."""
    return _schema(SolverParameter, "netspec solver file",
                   "A solver in Caffe's SolverParameter vocabulary (net, base_lr, lr_policy, "
                   "weight_decay with regularization_type, ...), as YAML. Generated by "
                   "`netspec schema`.")


def dumps(schema: dict) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_schemas(net_out: str | Path | None = NET_SCHEMA_FILE,
                  solver_out: str | Path | None = SOLVER_SCHEMA_FILE) -> list[Path]:
    """Write the net and/or solver schema; return the paths written."""
    written = []
    for out, make in ((net_out, net_schema), (solver_out, solver_schema)):
        if out is None:
            continue
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(dumps(make()), encoding="utf-8")
        written.append(out)
    return written


def stale_schemas(net_out: str | Path | None = NET_SCHEMA_FILE,
                  solver_out: str | Path | None = SOLVER_SCHEMA_FILE) -> list[Path]:
    """The given schema files that are missing or differ from what the models generate."""
    stale = []
    for out, make in ((net_out, net_schema), (solver_out, solver_schema)):
        if out is None:
            continue
        out = Path(out)
        if not out.exists() or out.read_text(encoding="utf-8") != dumps(make()):
            stale.append(out)
    return stale
