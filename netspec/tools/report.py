"""``netspec validate``: the TRAIN and TEST nets of a net or solver file, layer by layer, and
for a solver the learning rate and weight decay per blob."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..backend import get_backend
from ..log import CaffeLog, fmt
from ..net import Net
from ..solvers import Solver
from ..spec import load_net, load_solver
from ..spec.inputs import stand_in_inputs
from ..spec.overrides import split_sets
from ..spec.yaml_lines import load_yaml
from ..solver_files import is_solver_data
from ..workflows import decay_lines


#: (input shapes by top name, stand in for every data layer with its declared sizes) or None
StandIns = tuple[dict[str, tuple[int, ...]], bool] | None


def _test_stage_sets(net_param) -> list[tuple[str, ...]]:
    """The TEST-phase stage sets a net's include rules name (one TEST net each), or [()]."""
    sets: list[tuple[str, ...]] = []
    for lp in net_param.layer:
        for rule in lp.include:
            if rule.phase in (None, "TEST") and rule.stage and tuple(rule.stage) not in sets:
                sets.append(tuple(rule.stage))
    return sets or [()]


def build_for_validation(path: Path, sets: list[str], stand_ins: StandIns = None):
    """(nets, solver, notes): the TRAIN net and every TEST net of a net or solver file, for a
    solver file the Solver (on the CPU) they belong to, else None, and with ``stand_ins``
    ((shapes by top, declared): see ``stand_in_inputs``) the notes on the Input layers
    that stand in for the data layers."""
    data, _ = load_yaml(path)
    solver_sets, net_sets = split_sets(sets)
    if is_solver_data(data):
        sp = load_solver(path, solver_sets)
        net_param, notes = stand_in_inputs(load_net(sp.train_net or sp.net, net_sets), *(stand_ins or ({}, False)))
        solver = Solver(sp.model_copy(update={"solver_mode": "CPU"}), log=CaffeLog(quiet=True),
                        net_param=net_param, backend=get_backend(False))
        return [solver.net] + solver.test_nets, solver, notes
    net_param, notes = stand_in_inputs(load_net(path, net_sets), *(stand_ins or ({}, False)))
    nets = [Net(net_param, "TRAIN", get_backend(False))]
    nets += [Net(net_param, "TEST", get_backend(False), stages=st) for st in _test_stage_sets(net_param)]
    return nets, None, notes



def print_validation(path: Path, sets: list[str], console: Console | None = None,
                     stand_ins: StandIns = None) -> None:
    """Build the nets of ``path`` (TRAIN and TEST) and print what they contain."""
    console = console or Console()
    nets, solver, notes = build_for_validation(path, sets, stand_ins)
    for note in notes:
        console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    for net in nets:
        stage = f" (stage {', '.join(net.stages)})" if net.stages else ""
        table = Table(title=f"{net.name or path.name} — {net.phase}{stage}", show_lines=False)
        for col in ("layer", "type", "bottoms", "tops (shape)", "params", "lr_mult / decay_mult"):
            table.add_column(col)
        for row in net.summary_rows():
            tops = "\n".join(f"{n} {tuple(s)}" for n, s in row["tops"])
            mults = "\n".join(f"{name.split('/')[-1]}: {fmt(lr)} / {fmt(dm)}"
                              for name, _, lr, dm in row["params"])
            table.add_row(row["name"], row["type"], ", ".join(row["bottoms"]), tops,
                          f"{row['count']:,}" if row["count"] else "", mults)
        console.print(table)
        console.print(f"{net.phase}: {len(net.layers)} layers, {net.param_count():,} parameters, "
                      f"outputs: {', '.join(net.output_names)}")
    if solver is not None:
        for line in decay_lines(solver):
            console.print(line, highlight=False)
    console.print(f"[green]OK[/green]: {path} is valid.")
