"""Human-readable reports: the net summary table and the per-blob learning rate / decay."""

from __future__ import annotations

from pathlib import Path

from ..log import fmt


def decay_lines(solver) -> list[str]:
    """One line per learnable blob: lr and the effective weight decay per step at iteration 0.

    L2/L1 (coupled): the shrink per plain-SGD step is lr·lr_mult·λ·decay_mult (more under
    momentum); decoupled: λ·decay_mult·lr_t/base_lr, applied after the update.
    """
    sp = solver.sp
    reg = solver.regularizer
    lr0 = solver.learning_rate(0)
    kind = reg.name if reg else "none"
    lines = [f"Weight decay: {kind}, weight_decay {sp.weight_decay}; per blob at iteration 0:"]
    if reg is not None and reg.timing == "pre" and sp.type in ("SGD", "Nesterov") and sp.momentum:
        lines.append(f"  (coupled decay under momentum {sp.momentum}: the steady-state shrink is "
                     f"1/(1-momentum) = {fmt(1 / (1 - sp.momentum))}x the figure below)")
    for p in solver.net.params:
        rate = lr0 * p.lr_mult
        decay = reg.per_step(p, lr0, sp.base_lr) if reg else 0.0
        frozen = "  (frozen)" if p.lr_mult == 0 else ""
        lines.append(f"  {p.name:<24} lr {fmt(rate):<10} decay/step {fmt(decay):<10} "
                     f"(lr_mult {fmt(p.lr_mult)}, decay_mult {fmt(p.decay_mult)}){frozen}")
    return lines


def _test_stage_sets(net_param) -> list[tuple[str, ...]]:
    """The TEST-phase stage sets a net's include rules name (one TEST net each), or [()]."""
    sets: list[tuple[str, ...]] = []
    for lp in net_param.layer:
        for rule in lp.include:
            if rule.phase in (None, "TEST") and rule.stage and tuple(rule.stage) not in sets:
                sets.append(tuple(rule.stage))
    return sets or [()]


def _is_solver(data) -> bool:
    return isinstance(data, dict) and ("net" in data or "train_net" in data) and "layer" not in data


def print_validation(path: Path, sets: list[str]) -> None:
    """``netspec validate``: build the nets (TRAIN and TEST) and print what they contain."""
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from ..backend import get_backend  # noqa: PLC0415
    from ..net import Net  # noqa: PLC0415
    from ..spec import load_net, load_solver  # noqa: PLC0415
    from ..spec.overrides import split_sets  # noqa: PLC0415
    from ..spec.yaml_lines import load_yaml  # noqa: PLC0415

    console = Console()
    data, _ = load_yaml(path)
    solver_sets, net_sets = split_sets(sets)
    solver = None
    if _is_solver(data):
        from ..log import CaffeLog  # noqa: PLC0415
        from ..solvers import Solver  # noqa: PLC0415

        sp = load_solver(path, solver_sets)
        net_param = load_net(sp.train_net or sp.net, net_sets)
        solver = Solver(sp.model_copy(update={"solver_mode": "CPU"}), log=CaffeLog(quiet=True),
                        net_param=net_param, backend=get_backend(False))
        nets = [solver.net] + solver.test_nets
    else:
        net_param = load_net(path, net_sets)
        nets = [Net(net_param, "TRAIN", get_backend(False))]
        nets += [Net(net_param, "TEST", get_backend(False), stages=st) for st in _test_stage_sets(net_param)]
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
