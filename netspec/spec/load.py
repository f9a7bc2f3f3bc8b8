"""Load net and solver files: YAML with line tracking -> validated pydantic models.

Every problem becomes a SpecError naming the file, the line and the field, with the nearest
valid key or value suggested where one is close.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import SpecError, suggest
from .base import FieldError, ItemError
from .net import NetParameter
from .overrides import apply as apply_overrides
from .solver import SolverParameter
from .yaml_lines import LineMap, dotted, gc_paused, load_yaml, loads_yaml


def _unwrap(annotation: Any) -> Any:
    """The message class inside Optional[...] / list[...] / Annotated[...], if any."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is None:
            return annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if origin is typing.Literal or not args:
            return annotation
        annotation = args[0]


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that holds the last key of ``loc``."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        inner = _unwrap(field.annotation)
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return None
        model = inner
    return model


def _describe(err: dict, root: type[BaseModel], data: Any) -> tuple[tuple, str]:
    """(location, message) for one pydantic error, in the user's terms."""
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    kind = err["type"]
    if kind == "extra_forbidden":
        holder = _model_at(root, loc[:-1])
        hint = suggest(loc[-1], holder.model_fields) if holder else ""
        return loc, f"unknown key '{loc[-1]}'.{hint}"
    if kind == "missing":
        return loc, f"required field '{loc[-1]}' is missing"
    if kind == "value_error":
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, FieldError):
            loc = loc + (cause.field,)
        elif isinstance(cause, ItemError) and cause.index is not None:
            loc = loc + (cause.index,)
        return loc, str(cause) if cause is not None else err["msg"]
    if kind in ("literal_error", "enum"):
        expected = err.get("ctx", {}).get("expected", "")
        choices = [c.strip().strip("'\"") for c in expected.replace(" or ", ",").split(",")]
        hint = suggest(err.get("input"), [c for c in choices if c])
        return loc, f"'{err.get('input')}' is not a valid value; expected {expected}.{hint}"
    return loc, f"{err['msg']} (got {err.get('input')!r})"


def validate_model(model: type[BaseModel], data: Any, file: str, lines: LineMap,
                   origins: dict[tuple, str] | None = None):
    """``data`` (parsed YAML) as a ``model`` instance; every validation error is a SpecError
    naming ``file``, the line of the offending value and the field (or the ``--set`` that gave
    it, from ``origins``)."""
    if not isinstance(data, dict):
        raise SpecError("the file must be a YAML mapping of keys to values", file=file, line=1)
    try:
        with gc_paused():
            obj = model.model_validate(data)
    except ValidationError as e:
        # an unknown key first: it is often a misspelling of the "missing" required one
        rank = {"extra_forbidden": 0, "missing": 2}
        errors = sorted(e.errors(), key=lambda err: rank.get(err["type"], 1))
        loc, msg = _describe(errors[0], model, data)
        more = f" ({len(errors) - 1} more problem(s) in this file.)" if len(errors) > 1 else ""
        for oloc, text in (origins or {}).items():
            if tuple(loc[:len(oloc)]) == oloc:
                raise SpecError(f"{text}: {msg}", file=file, field=dotted(loc)) from None
        raise SpecError(msg + more, file=file, line=lines.line(loc), field=dotted(loc) or None) from None
    obj._origin = (file, lines)
    return obj


def parse_net(data: Any, file: str = "<net>", lines: LineMap | None = None,
              origins: dict[tuple, str] | None = None) -> NetParameter:
    """Validate an already-parsed net mapping; a net must define at least one layer."""
    net = validate_model(NetParameter, data, file, lines or LineMap(file), origins)
    if not net.layer and not net.input:
        empty = "the file is empty" if not data else "it has no 'layer' list (or an empty one)"
        where = net.where(("layer",))
        raise SpecError(f"the net defines no layers: {empty}. A net file lists its layers "
                        "under 'layer:'", file=where.get("file", file), line=where.get("line") or 1,
                        field="layer")
    return net


def load_net(path: str | Path, overrides=()) -> NetParameter:
    """Read and validate a network YAML file, applying ``layer.*`` overrides first."""
    data, lines = load_yaml(path)
    origins = apply_overrides(data, list(overrides), str(path)) if overrides else None
    return parse_net(data, str(path), lines, origins)


def loads_net(text: str, file: str = "<string>") -> NetParameter:
    data, lines = loads_yaml(text, file)
    return parse_net(data, file, lines)


def load_solver(path: str | Path, overrides=()) -> SolverParameter:
    """Read and validate a solver YAML file; ``net``/``train_net``/``test_net`` become absolute.

    ``overrides``: solver-field overrides from ``overrides.split_sets``.
    """
    path = Path(path)
    data, lines = load_yaml(path)
    origins = apply_overrides(data, list(overrides), str(path)) if overrides and isinstance(data, dict) else None
    solver = validate_model(SolverParameter, data, str(path), lines, origins)
    resolve_solver_paths(solver, path.parent)
    return solver


def resolve_solver_paths(solver: SolverParameter, base: Path) -> None:
    """Make the solver's file references absolute, relative to ``base`` (the solver's folder)."""
    def fix(p: str | None) -> str | None:
        if p is None or p.startswith("builtin:"):
            return p
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base / q).resolve())

    for field in ("net", "train_net", "weights", "snapshot_prefix"):
        value = getattr(solver, field)
        if value is not None:
            object.__setattr__(solver, field, fix(value))
    object.__setattr__(solver, "test_net", [fix(p) for p in solver.test_net])
    if solver.net is None and solver.train_net is None:
        raise SpecError("the solver names no network: add 'net: path/to/net.yaml'",
                        **solver.where(()), field="net")
