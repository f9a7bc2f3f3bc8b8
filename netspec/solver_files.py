"""Reading a solver file, YAML or Caffe's ``.prototxt``, into what the engine's ``Solver`` takes:
the SolverParameter, the train net's NetParameter, the test nets' (for a prototxt, converted in
memory) and the overrides applied. ``netspec train`` and ``netspec.solver`` both read solvers
here, so a file either accepts the other does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .caffe import ConvertError
from .caffe import prototxt as ptx
from .caffe.port import find_net, net_yaml
from .caffe.to_yaml import solver_to_dict
from .caffe.upgrade import upgrade_solver
from .caffe.yaml_out import dump
from .errors import SpecError
from .model import is_prototxt, read_net_param
from .spec import load_net, load_solver, loads_net
from .spec.load import resolve_solver_paths, validate_model
from .spec.net import NetParameter
from .spec.overrides import apply as apply_overrides
from .spec.overrides import split_sets
from .spec.solver import SolverParameter
from .spec.yaml_lines import load_yaml, loads_yaml


def read_solver(solver_file: str | Path, sets: Sequence[str] = ()
                ) -> tuple[SolverParameter, NetParameter, list[NetParameter] | None, list]:
    """(SolverParameter, train net, test nets or None (the solver's own ``test_net`` files),
    the overrides applied) of a solver YAML (``load_solver_and_net``) or prototxt
    (``read_solver_prototxt``) with ``sets`` (``KEY=VALUE``)."""
    if is_prototxt(solver_file):
        sp, net_param, tests = read_solver_prototxt(solver_file, sets)
        return sp, net_param, tests, split_sets(list(sets))[0]
    sp, net_param, applied = load_solver_and_net(solver_file, sets)
    return sp, net_param, None, applied


def is_solver_data(data) -> bool:
    """Whether a loaded YAML file is a solver: it names a net and has no layers."""
    return isinstance(data, dict) and ("net" in data or "train_net" in data) and "layer" not in data


def load_solver_and_net(solver_file: str | Path, sets: Sequence[str] = ()):
    """(SolverParameter, its train NetParameter, the overrides applied) for ``solver_file`` with
    ``sets`` (``KEY=VALUE``: a solver field, or ``layer.NAME.…`` for a layer field)."""
    solver_sets, net_sets = split_sets(list(sets))
    sp = load_solver(solver_file, solver_sets)
    net_param = load_net(sp.train_net or sp.net, net_sets)
    return sp, net_param, solver_sets + net_sets


def load_any_net(path: str | Path, sets: Sequence[str] = ()):
    """The NetParameter of a net file, or of a solver file's train net, with ``sets`` applied."""
    solver_sets, net_sets = split_sets(list(sets))
    data, _ = load_yaml(Path(path))
    if is_solver_data(data):
        sp = load_solver(path, solver_sets)
        return load_net(sp.train_net or sp.net, net_sets)
    return load_net(path, net_sets)


def read_solver_prototxt(path: str | Path, sets: Sequence[str] = ()
                         ) -> tuple[SolverParameter, NetParameter, list[NetParameter]]:
    """(SolverParameter, train net, test nets) of a Caffe solver ``.prototxt``, converted in
    memory as ``netspec convert`` would (nothing is written). As in Caffe, the net files it
    names are found from the working directory (else from the solver's folder), and relative
    ``snapshot_prefix`` and ``weights`` are relative to the working directory. ``sets``:
    solver fields only."""
    path = Path(path)
    solver_sets, net_sets = split_sets(list(sets))
    if net_sets:
        raise SpecError("layer overrides apply to YAML nets; convert the solver first "
                        "(netspec convert)", file=str(path))
    kind, msg, _ = ptx.read(path)
    if kind != "solver":
        raise SpecError("this is a net file, not a solver: use netspec.load() for it", file=str(path))
    upgraded, _ = upgrade_solver(msg)
    nets: dict[str, NetParameter] = {}

    def net_ref(fld: str, ref: str) -> str:
        found = find_net(ref, path)
        if found is None:
            raise ConvertError(f"{fld} '{ref}' not found (looked from the working directory and "
                               f"from {path.parent})", file=str(path))
        key = str(found.resolve())
        if key not in nets:
            nets[key] = read_net_param(found)
        return key

    def inline_net(net_msg, role: str) -> str:
        key = f"{path.resolve()}#{role}"
        text, _, _, _ = net_yaml(net_msg, str(path), out_name=key)
        nets[key] = loads_net(text, key)
        return key

    data, report = solver_to_dict(upgraded, net_ref, inline_net)
    report.raise_errors(str(path), "solver")
    parsed, lines = loads_yaml(dump(data), str(path))
    origins = apply_overrides(parsed, solver_sets, str(path)) if solver_sets else None
    sp = validate_model(SolverParameter, parsed, str(path), lines, origins)
    resolve_solver_paths(sp, Path.cwd())
    return sp, nets[sp.train_net or sp.net], [nets[p] for p in sp.test_net]
