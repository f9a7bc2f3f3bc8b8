"""One trial: the solver and net for a set of searched values, and their training.

A trial trains the solver's net with the searched values applied as overrides (validated like
the file) for ``epochs`` epochs of the train part, ``ceil(n_train / (batch_size * iter_size))``
iterations each. After every epoch the validation net runs once over the whole validation
part and the metric is reported, so a pruner can stop a poor trial early; the trial's value is
the metric after the last epoch.
"""

from __future__ import annotations

import copy
import io
import math
import time
from pathlib import Path
from typing import Any, Callable

from ..backend import get_backend
from ..errors import NetspecError, suggest
from ..log import CaffeLog
from ..net import Net
from ..solvers import Solver
from ..spec import load_solver, parse_net
from ..spec.overrides import apply as apply_overrides
from ..spec.overrides import split_sets
from ..spec.params import NetState
from ..spec.yaml_lines import LineMap, load_yaml
from .config import SearchConfig, SearchError
from .space import FORCED_SOLVER_FIELDS, Param, override, split_values
from .split import carve_split, data_layers


def _shift_layers(mapping: dict, at: int, copy_from: int | None = None) -> dict:
    """Renumber ('layer', i, ...) locations for a layer inserted at index ``at``."""
    out = {}
    for loc, v in mapping.items():
        if len(loc) >= 2 and loc[0] == "layer" and isinstance(loc[1], int) and loc[1] >= at:
            loc = ("layer", loc[1] + 1) + tuple(loc[2:])
        out[loc] = v
    if copy_from is not None:
        for loc, v in list(mapping.items()):
            if len(loc) >= 2 and loc[0] == "layer" and loc[1] == copy_from:
                out.setdefault(("layer", at) + tuple(loc[2:]), v)
    return out


class Problem:
    """Everything one worker process needs to run trials: the split data (written as .npz
    under ``workdir``) and a builder of validated (SolverParameter, NetParameter) pairs."""

    def __init__(self, cfg: SearchConfig, params: list[Param], workdir: str | Path):
        self.cfg = cfg
        self.params = params
        self.workdir = Path(workdir)
        self.solver_file = Path(cfg.solver).resolve()
        sets = list(cfg.sets) + (["solver_mode=GPU"] if cfg.gpu else [])
        self.fixed_solver, self.fixed_net = split_sets(sets)
        for text, path, _ in self.fixed_solver:
            if path[0] in FORCED_SOLVER_FIELDS:
                raise SearchError(f"--set {text}: '{path[0]}' is set by the search itself (--epochs, "
                                  "the validation split)", field="--set")
        if not 0 < cfg.val_fraction < 1:
            raise SearchError(f"--val-fraction {cfg.val_fraction}: give a fraction between 0 and 1",
                              field="--val-fraction")
        if cfg.epochs < 1:
            raise SearchError("--epochs must be at least 1", field="--epochs")
        sp0 = load_solver(self.solver_file, self.fixed_solver)
        self.net_file = Path(sp0.train_net or sp0.net)
        self.train_state = sp0.train_state.model_copy(update={"phase": "TRAIN"})
        _, _, _, net = self._raw_net(self.fixed_net)
        self.split = carve_split(net, self.net_file, self.train_state, cfg.val_fraction, cfg.seed,
                                 self.workdir)

    def _raw_net(self, net_overrides):
        data, lines = load_yaml(self.net_file)
        if isinstance(data, dict) and isinstance(data.get("layer"), dict):
            data["layer"] = [data["layer"]]
        origins = apply_overrides(data, list(net_overrides), str(self.net_file)) if net_overrides else {}
        net = parse_net(copy.deepcopy(data), str(self.net_file), lines, origins)
        return data, lines, origins, net

    def build(self, values: dict[str, Any], random_seed: int | None = None):
        """(SolverParameter, NetParameter, iterations per epoch) for these searched values."""
        solver_vals, net_vals = split_values(values)
        sp1 = load_solver(self.solver_file, self.fixed_solver + solver_vals)
        test_state = sp1.test_state[0] if sp1.test_state else NetState(phase="TEST")
        test_state = test_state.model_copy(update={"phase": "TEST"})

        data, lines, origins, net = self._raw_net(self.fixed_net + net_vals)
        layers = data["layer"]
        ti = data_layers(net, self.train_state)[0]
        tests = data_layers(net, test_state)
        if len(tests) > 1:
            raise SearchError(f"the TEST net of {self.net_file} has {len(tests)} Data layers; a search "
                              "needs one (or none)", file=str(self.net_file))
        if ti in tests or not tests:
            # one layer for both phases, or none for TEST: a TEST copy of the TRAIN layer
            val = copy.deepcopy(layers[ti])
            for key in ("include", "exclude", "phase"):
                val.pop(key, None)
            val["include"] = [{"phase": "TEST"}]
            if ti in tests:
                if any(layers[ti].get(k) for k in ("include", "exclude", "phase")):
                    raise SearchError(f"the Data layer '{net.layer[ti].name}' is in both the TRAIN and "
                                      "the TEST net through include/exclude rules; give it "
                                      "include: {phase: TRAIN} and a TEST Data layer of its own",
                                      **net.where(("layer", ti)))
                layers[ti]["include"] = [{"phase": "TRAIN"}]
            layers.insert(ti + 1, val)
            new_lines = LineMap(lines.file)
            new_lines._lines = _shift_layers(lines._lines, ti + 1, copy_from=ti)
            lines = new_lines
            origins = _shift_layers(origins, ti + 1)
            vi = ti + 1
        else:
            vi = tests[0]
        split = self.split
        tdp = layers[ti].setdefault("data_param", {})
        tdp.update(source=str(split.train_npz), split="train", offset=0, limit=0, rand_skip=0)
        vdp = layers[vi].setdefault("data_param", {})
        vdp.update(source=str(split.val_npz), split="train", offset=0, limit=0, rand_skip=0,
                   shuffle=False, batch_size=split.val_batch)
        net_param = parse_net(data, str(self.net_file), lines, origins)

        batch = net_param.layer[ti].data_param.batch_size
        per_epoch = max(1, math.ceil(split.n_train / (batch * sp1.iter_size)))
        forced = [
            override("net", str(self.net_file)), override("train_net", None),
            override("test_net", []), override("test_iter", [split.val_iter]),
            override("test_state", [test_state.model_dump()] if sp1.test_state else []),
            override("test_interval", per_epoch), override("test_initialization", False),
            override("max_iter", per_epoch * self.cfg.epochs), override("display", 0),
            override("snapshot", 0), override("snapshot_after_train", False),
        ]
        if random_seed is not None and sp1.random_seed < 0:
            forced.append(override("random_seed", int(random_seed)))
        sp = load_solver(self.solver_file, self.fixed_solver + solver_vals + forced)
        return sp, net_param, per_epoch

    def validate(self) -> tuple[str, str]:
        """Check every --param at its bounds (or each choice) like the file is checked; return
        (metric, direction)."""
        for p in self.params:  # each alone first, so an error names the right --param
            for v in p.probes():
                try:
                    self.build({p.path: v})
                except NetspecError as e:
                    why = str(e).replace(f"--set {p.path}={v}: ", "").replace("--set: ", "")
                    raise SearchError(f"--param {p.text}: at {p.path}={v}: {why}", field="--param") from None
        base = {p.path: p.probes()[0] for p in self.params}
        sp, net_param, _ = self.build(base)
        backend = get_backend(False)
        Net(net_param, "TRAIN", backend)
        test = Net(net_param, "TEST", backend)
        outputs = list(test.output_names)
        metric = self.cfg.metric
        if metric is None:
            metric = "accuracy" if "accuracy" in outputs else next((o for o in outputs if "acc" in o), None)
            if metric is None:
                raise SearchError(f"the validation net has no accuracy output (outputs: {outputs}); "
                                  "name the one to optimise with --metric", field="--metric")
        elif metric not in outputs:
            raise SearchError(f"--metric {metric}: the validation net has no output '{metric}'."
                              f"{suggest(metric, outputs)} Outputs: {outputs}", field="--metric")
        direction = self.cfg.direction or ("minimize" if "loss" in metric else "maximize")
        return metric, direction

    def run(self, values: dict[str, Any], report: Callable[[int, float], None],
            random_seed: int | None = None) -> dict:
        """Train one configuration; ``report(epoch, metric)`` after every epoch (it may raise
        to prune). Returns {'value', 'loss', 'iterations', 'wall_s', 'random_seed'}."""
        sp, net_param, per_epoch = self.build(values, random_seed)
        # blob diffs share arrays as in `netspec train`: a trial reads only its test outputs
        solver = _TrialSolver(sp, net_param=net_param, log=CaffeLog(stream=io.StringIO(), quiet=True),
                              reuse_diffs=True)
        metric = self.cfg.metric
        last: list[float] = []

        def listener(event: dict) -> None:
            if event.get("event") != "test":
                return
            value = float(event["outputs"][metric])
            last.append(value)
            report(int(event["iteration"]) // per_epoch, value)

        solver.listeners.append(listener)
        t0 = time.perf_counter()
        solver.solve()
        return {"value": last[-1], "loss": float(solver.smoothed_loss), "iterations": solver.iter,
                "wall_s": time.perf_counter() - t0, "random_seed": solver.seed}


class _TrialSolver(Solver):
    """A Solver for a search trial: Ctrl-C interrupts at once (the trial is marked failed and
    the study keeps every finished trial) and nothing is snapshotted."""

    def _install_sigint(self):
        return None

    def snapshot(self):
        return None
