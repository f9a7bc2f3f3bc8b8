"""A study's results: the ranked trials, the table printed at the end, NAME.csv and NAME.json,
the best trial as a solver YAML that ``netspec train`` runs, and the optional figure."""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from ..spec import load_net, load_solver
from ..spec.overrides import apply as apply_overrides
from ..spec.overrides import split_sets
from ..spec.yaml_lines import load_yaml
from ..tools.plot_search import plot_search
from .config import SearchConfig
from .space import parse_param, split_values
from .study import count_trials, open_storage, open_study, redact, require_optuna


@dataclass
class SearchOutcome:
    study: str
    storage: str
    out: Path
    rows: list[dict]
    counts: dict
    csv: Path | None = None
    json: Path | None = None
    best_yaml: Path | None = None
    plot: Path | None = None
    interrupted: bool = False


def metric_label(metric: str) -> str:
    return "val acc" if metric == "accuracy" else f"val {metric}"


def fmt_value(v) -> str:
    """A searched value as the table shows it (floats to 2 significant digits)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return str(v)
    return f"{v:.2g}"


def ranked_trials(study, direction: str) -> list[dict]:
    """Every trial as a dict, ranked: complete trials by value, then pruned ones (by their last
    value), then diverged, failed and running ones."""
    TrialState = require_optuna().trial.TrialState
    sign = -1.0 if direction == "maximize" else 1.0
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        if t.state == TrialState.COMPLETE:
            state, group, key = "complete", 0, sign * t.value
        elif t.state == TrialState.PRUNED:
            state, group = "pruned", 1
            last = t.intermediate_values.get(t.last_step) if t.last_step is not None else None
            key = sign * last if last is not None else math.inf
        elif t.state == TrialState.FAIL:
            state = ("diverged" if attrs.get("diverged") else "interrupted" if attrs.get("interrupted")
                     else "abandoned" if attrs.get("abandoned") else "failed")
            group, key = (2 if state == "diverged" else 3), 0.0
        else:
            state, group, key = t.state.name.lower(), 4, 0.0
        rows.append({
            "number": t.number, "state": state, "value": t.value if t.state == TrialState.COMPLETE else None,
            "params": dict(t.params),
            "intermediate": {int(k): float(v) for k, v in sorted(t.intermediate_values.items())},
            "wall_s": attrs.get("wall_s"), "worker": attrs.get("worker"),
            "train_loss": attrs.get("train_loss"), "iterations": attrs.get("iterations"),
            "random_seed": attrs.get("random_seed"),
            "note": attrs.get("diverged") or attrs.get("abandoned") or attrs.get("error") or "",
            "_sort": (group, key, t.number)})
    rows.sort(key=lambda r: r["_sort"])
    rank = 0
    for r in rows:
        del r["_sort"]
        if r["state"] == "complete":
            rank += 1
            r["rank"] = rank
        else:
            r["rank"] = None
    return rows


def table_lines(rows: list[dict], metric: str, show: int) -> list[str]:
    label = metric_label(metric)
    lines = []
    for r in rows[:show] if show > 0 else rows:
        if r["rank"] is not None:
            head = f"Best-{r['rank']} ({label}: {r['value']:.4g})"
        elif r["state"] == "pruned" and r["intermediate"]:
            last = max(r["intermediate"])
            head = f"pruned at epoch {last} ({label}: {r['intermediate'][last]:.4g})"
        else:
            head = r["state"]
        parts = [head] + [f"{k}: {fmt_value(v)}" for k, v in r["params"].items()]
        lines.append(" | ".join(parts) + f"  [trial {r['number']}]")
    return lines


def write_results(rows: list[dict], out: Path, study_name: str, meta: dict) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys(k for r in rows for k in r["params"]))
    csv_path = out / f"{study_name}.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "trial", "state", meta["metric"], *names, "epochs", "train_loss",
                    "wall_s", "worker", "note"])
        for r in rows:
            w.writerow([r["rank"] or "", r["number"], r["state"], "" if r["value"] is None else repr(r["value"]),
                        *[repr(r["params"][k]) if k in r["params"] else "" for k in names],
                        len(r["intermediate"]), "" if r["train_loss"] is None else repr(r["train_loss"]),
                        "" if r["wall_s"] is None else f"{r['wall_s']:.3f}", r["worker"] or "", r["note"]])
    json_path = out / f"{study_name}.json"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**meta, "trials": rows}, indent=1, default=str))
    tmp.replace(json_path)
    return csv_path, json_path


def _rel(target: str | Path, start: Path) -> str:
    return os.path.relpath(str(target), str(start))


def write_best_yaml(cfg: SearchConfig, values: dict[str, Any], path: str | Path, header: str = "") -> Path:
    """The original solver with --set and the chosen values applied, its net path (and the
    other file paths) made valid relative to ``path``. Layer values go into a copy of the net
    written beside it (``<stem>.net.yaml``); its relative data sources are rewritten too."""
    path = Path(path).resolve()
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    solver_file = Path(cfg.solver).resolve()
    fixed_solver, fixed_net = split_sets(list(cfg.sets))
    solver_vals, net_vals = split_values(values)
    data, _ = load_yaml(solver_file)
    if fixed_solver + solver_vals:
        apply_overrides(data, fixed_solver + solver_vals, str(solver_file))
    sp = load_solver(solver_file, fixed_solver + solver_vals)  # absolute paths, validated
    for key in ("net", "train_net", "weights"):
        if getattr(sp, key) and key in data:
            data[key] = getattr(sp, key) if str(getattr(sp, key)).startswith("builtin:") \
                else _rel(getattr(sp, key), folder)
    if sp.test_net and "test_net" in data:
        data["test_net"] = [_rel(p, folder) for p in sp.test_net]
    if sp.snapshot_prefix and "snapshot_prefix" in data:
        data["snapshot_prefix"] = _rel(sp.snapshot_prefix, folder) + "_best"
    if fixed_net + net_vals:
        net_src = Path(sp.train_net or sp.net)
        net_data, _ = load_yaml(net_src)
        if isinstance(net_data.get("layer"), dict):
            net_data["layer"] = [net_data["layer"]]
        apply_overrides(net_data, fixed_net + net_vals, str(net_src))
        for layer in net_data.get("layer") or []:
            dp = layer.get("data_param") if isinstance(layer, dict) else None
            src = dp.get("source") if isinstance(dp, dict) else None
            if isinstance(src, str) and not src.startswith("builtin:") and not Path(src).expanduser().is_absolute():
                dp["source"] = _rel((net_src.parent / src).resolve(), folder)
        net_path = path.with_name(path.stem + ".net.yaml")
        net_path.write_text(f"# {net_src.name} with the search's layer values: "
                            + ", ".join(t for t, _, _ in fixed_net + net_vals) + "\n"
                            + yaml.safe_dump(net_data, sort_keys=False, default_flow_style=None, width=100))
        data["train_net" if "train_net" in data else "net"] = net_path.name
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100))
    check = load_solver(path)
    load_net(check.train_net or check.net)
    return path


def summarize(cfg: SearchConfig, study_name: str, storage: str, out: Path,
              echo: Callable[[str], None] | None = None) -> SearchOutcome:
    """Rank the study's trials, print the table, write CSV/JSON, the best YAML and the plot."""
    echo = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    storage_obj = open_storage(storage)
    study = open_study(cfg, storage_obj, study_name, create=False)
    params = [parse_param(t) for t in cfg.params]
    rows = ranked_trials(study, cfg.direction)
    counts = count_trials(study)
    meta = {"study": study_name, "storage": redact(storage), "metric": cfg.metric,
            "direction": cfg.direction, "params": [p.describe() for p in params],
            "settings": cfg.settings(), "trials_requested": cfg.trials, "counts": counts,
            "solver": cfg.solver}
    csv_path, json_path = write_results(rows, out, study_name, meta)
    outcome = SearchOutcome(study_name, storage, out, rows, counts, csv_path, json_path)
    state_counts = (f"{counts['complete']} complete, {counts['pruned']} pruned, "
                    f"{counts['diverged']} diverged")
    if counts["failed"]:
        state_counts += f", {counts['failed']} failed (see their 'error')"
    if counts["running"]:
        state_counts += f", {counts['running']} still running in other workers"
    echo(f"Study '{study_name}': {counts['finished']} of {cfg.trials} trials finished ({state_counts}); "
         f"ranked by {metric_label(cfg.metric)} after epoch {cfg.epochs}:")
    for line in table_lines(rows, cfg.metric, cfg.show):
        echo(line)
    best = next((r for r in rows if r["rank"] == 1), None)
    if best is not None:
        best_path = Path(cfg.best_out) if cfg.best_out else out / f"{study_name}-best.yaml"
        header = (f"# netspec search '{study_name}': best of {counts['complete']} complete trials "
                  f"(trial {best['number']}, {metric_label(cfg.metric)} {best['value']:.4g} on "
                  f"{100 * cfg.val_fraction:g} % of the training data held out,\n# {cfg.epochs} epoch(s) each). "
                  f"From {Path(cfg.solver).name} with "
                  + ", ".join(f"{k}={v!r}" for k, v in best["params"].items())
                  + (" and --set " + " ".join(cfg.sets) if cfg.sets else "") + "."
                  + (f" The trial's random_seed was {best['random_seed']}." if best.get("random_seed") is not None
                     else "") + "\n")
        outcome.best_yaml = write_best_yaml(cfg, best["params"], best_path, header)
    if cfg.plot:
        outcome.plot = plot_search({**meta, "trials": rows}, cfg.plot)
    wrote = [str(p) for p in (csv_path, json_path, outcome.best_yaml, outcome.plot) if p]
    echo("Wrote " + ", ".join(wrote))
    return outcome
