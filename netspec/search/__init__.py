"""Hyperparameter search (``netspec search``) on Optuna, with a validation split carved from
the training data.

One *trial* trains the solver's net with sampled values for ``--param`` paths (solver fields
such as ``base_lr`` or layer fields such as ``layer.fc1.dropout_param.dropout_ratio``, applied
through the same override mechanism as ``--set`` and validated like the file), for a fixed
number of epochs, and scores it on a held-out part of the *training* data:

* the records the TRAIN Data layer would read (its source, ``split``, ``offset``, ``limit``)
  are shuffled with ``--seed``; the first ``int(n * val_fraction)`` become the validation
  part, the rest the train part (the tutorial's ``shuffle_dataset`` + slice); both are written
  as temporary ``.npz`` sources and the Data layers are pointed at them (the TRAIN layer at the
  train part, the TEST layer, or a TEST copy of the TRAIN layer, at the validation part), so
  the test split is never read;
* epochs become iterations: ``ceil(n_train / (batch_size * iter_size))`` per epoch; the
  validation net runs once per epoch over the whole validation part and each value is
  reported to Optuna (``trial.report``), so a pruner can stop a poor trial early;
* the trial's value is the metric (``accuracy`` by default) after the last epoch.

Workers share one Optuna storage (a journal file by default, or any RDB URL), so a search can
run in several processes (``--jobs``) or on several machines (same ``--storage`` and
``--study``); a rerun continues the study until ``--trials`` trials are finished.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import socket
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from ..errors import DivergenceError, NetspecError, suggest
from ..solvers import Solver

INSTALL_HINT = "pip install 'netspec[search]'  (or: pip install 'optuna>=4' 'psycopg[binary]>=3.1')"
KINDS = ("loguniform", "uniform", "int", "logint", "choice")
#: solver fields the search sets itself (epochs -> iterations, one validation net, no snapshots)
FORCED_SOLVER_FIELDS = ("net", "train_net", "test_net", "test_iter", "test_interval",
                        "test_initialization", "test_state", "max_iter", "display", "snapshot",
                        "snapshot_after_train")
#: Data layer fields that define the records the validation split is carved from
SPLIT_FIELDS = ("source", "split", "offset", "limit", "rand_skip")
VAL_BATCH_CAP = 500          # validation batch at most this; exact when n_val <= cap
HEARTBEAT_S = 30.0           # a running trial refreshes its 'heartbeat' attribute this often
STALE_S = 600.0              # a running trial without a heartbeat for this long is abandoned
ORPHAN_S = 60.0              # ... and one that never got its worker's attributes, after this
SETTINGS_ATTR = "netspec_search"
JOURNAL_LOCK_GRACE_S = 5     # a journal lock older than this is from a killed worker


class SearchError(NetspecError):
    """A search cannot start or go on (bad --param, missing Optuna, mismatched study)."""

    def format(self) -> str:
        if self.field and not self.file and self.message.startswith(f"{self.field} "):
            return self.message  # the message names its option already
        return super().format()


def require_optuna():
    try:
        import optuna  # noqa: PLC0415
    except ImportError:
        raise SearchError(f"netspec search needs Optuna, which is not installed: {INSTALL_HINT}") from None
    return optuna


# ---------------------------------------------------------------------------------------------
# --param PATH=KIND:ARGS
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One searched field: ``path`` (``base_lr``, ``layer.fc1.dropout_param.dropout_ratio``)."""

    path: str
    kind: str                    # loguniform | uniform | int | logint | choice
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple = ()
    text: str = ""

    @property
    def log(self) -> bool:
        return self.kind in ("loguniform", "logint")

    @property
    def is_layer(self) -> bool:
        return self.path.split(".")[0] == "layer"

    def suggest(self, trial) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.path, list(self.choices))
        if self.kind in ("int", "logint"):
            return trial.suggest_int(self.path, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.path, float(self.low), float(self.high), log=self.log)

    def probes(self) -> list:
        """Values that must all be valid: the bounds, or every choice."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def contains(self, value) -> bool:
        if self.kind == "choice":
            return value in self.choices
        return self.low <= value <= self.high

    def describe(self) -> dict:
        return {"name": self.path, "kind": self.kind, "low": self.low, "high": self.high,
                "choices": list(self.choices), "log": self.log}


def _number(text: str, what: str, param: str, integer: bool = False):
    try:
        value = yaml.safe_load(text)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            value = float(text)
        if integer:
            if float(value) != int(value):
                raise ValueError
            return int(value)
        return float(value)
    except (ValueError, TypeError, yaml.YAMLError):
        kind = "an integer" if integer else "a number"
        raise SearchError(f"--param {param}: the {what} '{text}' is not {kind}", field="--param") from None


def parse_param(text: str) -> Param:
    """``base_lr=loguniform:1e-6:1e-2``, ``x=uniform:a:b``, ``x=int:a:b``, ``x=logint:a:b``,
    ``x=choice:a,b,c`` (each choice parsed as a YAML scalar)."""
    example = "e.g. --param base_lr=loguniform:1e-6:1e-2"
    if "=" not in text:
        raise SearchError(f"--param {text}: expected PATH=KIND:ARGS ({example})", field="--param")
    path, spec = (s.strip() for s in text.split("=", 1))
    if not path:
        raise SearchError(f"--param {text}: empty path ({example})", field="--param")
    kind, _, rest = spec.partition(":")
    kind = kind.strip()
    if kind not in KINDS:
        raise SearchError(f"--param {text}: unknown kind '{kind}'.{suggest(kind, KINDS)} Kinds: "
                          "loguniform:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH, logint:LOW:HIGH, "
                          "choice:A,B,C", field="--param")
    parts = path.split(".")
    if parts[0] in FORCED_SOLVER_FIELDS:
        raise SearchError(f"--param {text}: '{parts[0]}' is set by the search itself (--epochs, "
                          "the validation split); search another field", field="--param")
    if parts[0] == "layer" and len(parts) >= 4 and parts[2] == "data_param" and parts[3] in SPLIT_FIELDS:
        raise SearchError(f"--param {text}: the Data layer's {parts[3]} defines the records the "
                          "validation split is carved from; fix it with --set instead", field="--param")
    if kind == "choice":
        if not rest.strip():
            raise SearchError(f"--param {text}: choice needs values, e.g. choice:0.1,0.2", field="--param")
        choices = []
        for raw in rest.split(","):
            try:
                choices.append(yaml.safe_load(raw.strip()))
            except yaml.YAMLError:
                choices.append(raw.strip())
        if len(set(map(repr, choices))) != len(choices):
            raise SearchError(f"--param {text}: a choice is repeated", field="--param")
        return Param(path, kind, choices=tuple(choices), text=text)
    bounds = rest.split(":")
    if len(bounds) != 2:
        raise SearchError(f"--param {text}: {kind} takes two bounds, {kind}:LOW:HIGH", field="--param")
    integer = kind in ("int", "logint")
    low = _number(bounds[0], "lower bound", text, integer)
    high = _number(bounds[1], "upper bound", text, integer)
    if not low < high:
        raise SearchError(f"--param {text}: the lower bound must be below the upper bound", field="--param")
    if kind in ("loguniform", "logint") and low <= 0:
        raise SearchError(f"--param {text}: a log scale needs a lower bound above 0", field="--param")
    return Param(path, kind, low, high, text=text)


def _override(path: str, value: Any, label: str | None = None) -> tuple[str, list[str], Any]:
    return (label or f"{path}={value}", path.split("."), value)


# ---------------------------------------------------------------------------------------------
# the search's settings (what a study was created with) and outcome
# ---------------------------------------------------------------------------------------------
@dataclass
class SearchConfig:
    solver: str
    params: list[str]
    sets: list[str] = field(default_factory=list)
    trials: int = 100
    epochs: int = 10
    val_fraction: float = 0.2
    seed: int = 0
    sampler: str = "tpe"
    pruner: str = "median"
    metric: str | None = None
    direction: str | None = None
    jobs: int = 1
    storage: str | None = None
    study: str | None = None
    out: str | None = None
    best_out: str | None = None
    plot: str | None = None
    show: int = 10
    gpu: bool = False
    quiet: bool = False

    def settings(self) -> dict:
        """What defines a study's objective; a rerun or another worker must give the same.
        Trials, jobs, sampler, pruner and the outputs may differ between runs."""
        return {"params": sorted(self.params), "sets": list(self.sets), "epochs": self.epochs,
                "val_fraction": self.val_fraction, "seed": self.seed, "metric": self.metric,
                "direction": self.direction, "solver": Path(self.solver).name}


# ---------------------------------------------------------------------------------------------
# the problem: data split, per-trial solver and net
# ---------------------------------------------------------------------------------------------
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
        from ..spec import load_solver  # noqa: PLC0415
        from ..spec.overrides import split_sets  # noqa: PLC0415

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
        self._split_data()

    # -- the split -----------------------------------------------------------------------------
    def _raw_net(self, net_overrides):
        from ..spec.load import parse_net  # noqa: PLC0415
        from ..spec.overrides import apply as apply_overrides  # noqa: PLC0415
        from ..spec.yaml_lines import load_yaml  # noqa: PLC0415

        data, lines = load_yaml(self.net_file)
        if isinstance(data, dict) and isinstance(data.get("layer"), dict):
            data["layer"] = [data["layer"]]
        origins = apply_overrides(data, list(net_overrides), str(self.net_file)) if net_overrides else {}
        net = parse_net(copy.deepcopy(data), str(self.net_file), lines, origins)
        return data, lines, origins, net

    def _data_layers(self, net, state) -> list[int]:
        from ..graph import layer_included  # noqa: PLC0415

        return [i for i, lp in enumerate(net.layer) if lp.type == "Data" and layer_included(lp, state)]

    def _split_data(self) -> None:
        from ..data import open_source  # noqa: PLC0415 - looked up at call time (tests patch it)

        _, _, _, net = self._raw_net(self.fixed_net)
        train = self._data_layers(net, self.train_state)
        if len(train) != 1:
            raise SearchError(f"a search needs exactly one Data layer in the TRAIN net of "
                              f"{self.net_file}; found {len(train)}", file=str(self.net_file))
        lp = net.layer[train[0]]
        p = lp.data_param
        if p.split == "test":
            raise SearchError(f"the TRAIN Data layer '{lp.name}' reads split 'test'; a search carves "
                              "its validation part from the training data and never reads the test "
                              "split", **net.where(("layer", train[0], "data_param", "split")),
                              field="data_param.split")
        ds = open_source(p.source, p.split, self.net_file.parent, backend=p.backend)
        end = len(ds) if p.limit == 0 else min(len(ds), p.offset + p.limit)
        images, labels = ds.data[p.offset:end], ds.label[p.offset:end]
        n = len(labels)
        n_val = int(n * self.cfg.val_fraction)
        if n_val < 1 or n - n_val < 1:
            raise SearchError(f"--val-fraction {self.cfg.val_fraction} of {n} training records leaves "
                              f"{n_val} for validation and {n - n_val} for training", field="--val-fraction")
        order = np.random.default_rng(self.cfg.seed).permutation(n)
        val, tr = order[:n_val], order[n_val:]
        self.n_train, self.n_val, self.n_records = n - n_val, n_val, n
        self.train_npz = self.workdir / "search_train.npz"
        self.val_npz = self.workdir / "search_val.npz"
        np.savez(self.train_npz, data=images[tr], label=labels[tr])
        np.savez(self.val_npz, data=images[val], label=labels[val])
        steps = math.ceil(n_val / VAL_BATCH_CAP)
        self.val_batch = math.ceil(n_val / steps)
        self.val_iter = steps

    # -- one trial's files ---------------------------------------------------------------------
    def build(self, values: dict[str, Any], random_seed: int | None = None):
        """(SolverParameter, NetParameter, iterations per epoch) for these searched values."""
        from ..spec import load_solver  # noqa: PLC0415
        from ..spec.load import parse_net  # noqa: PLC0415
        from ..spec.params import NetState  # noqa: PLC0415
        from ..spec.yaml_lines import LineMap  # noqa: PLC0415

        solver_vals = [_override(k, v) for k, v in values.items() if k.split(".")[0] != "layer"]
        net_vals = [_override(k, v) for k, v in values.items() if k.split(".")[0] == "layer"]
        sp1 = load_solver(self.solver_file, self.fixed_solver + solver_vals)
        test_state = sp1.test_state[0] if sp1.test_state else NetState(phase="TEST")
        test_state = test_state.model_copy(update={"phase": "TEST"})

        data, lines, origins, net = self._raw_net(self.fixed_net + net_vals)
        layers = data["layer"]
        ti = self._data_layers(net, self.train_state)[0]
        tests = self._data_layers(net, test_state)
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
        tdp = layers[ti].setdefault("data_param", {})
        tdp.update(source=str(self.train_npz), split="train", offset=0, limit=0, rand_skip=0)
        vdp = layers[vi].setdefault("data_param", {})
        vdp.update(source=str(self.val_npz), split="train", offset=0, limit=0, rand_skip=0,
                   shuffle=False, batch_size=self.val_batch)
        net_param = parse_net(data, str(self.net_file), lines, origins)

        batch = net_param.layer[ti].data_param.batch_size
        per_epoch = max(1, math.ceil(self.n_train / (batch * sp1.iter_size)))
        forced = [
            _override("net", str(self.net_file)), _override("train_net", None),
            _override("test_net", []), _override("test_iter", [self.val_iter]),
            _override("test_state", [test_state.model_dump()] if sp1.test_state else []),
            _override("test_interval", per_epoch), _override("test_initialization", False),
            _override("max_iter", per_epoch * self.cfg.epochs), _override("display", 0),
            _override("snapshot", 0), _override("snapshot_after_train", False),
        ]
        if random_seed is not None and sp1.random_seed < 0:
            forced.append(_override("random_seed", int(random_seed)))
        sp = load_solver(self.solver_file, self.fixed_solver + solver_vals + forced)
        return sp, net_param, per_epoch

    def validate(self) -> tuple[str, str]:
        """Check every --param at its bounds (or each choice) like the file is checked; return
        (metric, direction)."""
        from ..backend import get_backend  # noqa: PLC0415
        from ..net import Net  # noqa: PLC0415

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

    # -- one trial -----------------------------------------------------------------------------
    def run(self, values: dict[str, Any], report: Callable[[int, float], None],
            random_seed: int | None = None) -> dict:
        """Train one configuration; ``report(epoch, metric)`` after every epoch (it may raise
        to prune). Returns {'value', 'loss', 'iterations', 'wall_s', 'random_seed'}."""
        from ..log import CaffeLog  # noqa: PLC0415

        sp, net_param, per_epoch = self.build(values, random_seed)
        solver = _TrialSolver(sp, net_param=net_param, log=CaffeLog(stream=io.StringIO(), quiet=True))
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


# ---------------------------------------------------------------------------------------------
# Optuna plumbing: storage, sampler, pruner, study
# ---------------------------------------------------------------------------------------------
def _mix(seed: int, number: int) -> int:
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(number)]).generate_state(1)[0])


def make_sampler(kind: str, seed: int):
    """A sampler whose randomness depends on (seed, trial number) only, so workers never draw
    the same sequence and trial k of a random search always gets the same values."""
    optuna = require_optuna()

    if kind == "random":
        def make(s):
            return optuna.samplers.RandomSampler(seed=s)
    elif kind == "tpe":
        def make(s):
            return optuna.samplers.TPESampler(seed=s, constant_liar=True)
    else:
        raise SearchError(f"--sampler {kind}: use random or tpe", field="--sampler")

    class PerTrialSeed(optuna.samplers.BaseSampler):
        def __init__(self):
            self._inner = make(seed)

        def infer_relative_search_space(self, study, trial):
            return self._inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._inner.sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study, trial):
            self._inner = make(_mix(seed, trial.number))
            self._inner.before_trial(study, trial)

        def after_trial(self, study, trial, state, values):
            self._inner.after_trial(study, trial, state, values)

        def reseed_rng(self):
            pass

    return PerTrialSeed()


def make_pruner(kind: str, epochs: int = 4):
    """median: stop a trial whose metric is worse than the median of the finished trials at the
    same epoch; halving: asynchronous successive halving. Neither judges a trial before a
    quarter of the epochs (at least 2): early validation values are mostly noise."""
    optuna = require_optuna()
    warmup = max(2, round(epochs / 4))
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup)
    if kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=warmup)
    if kind == "none":
        return optuna.pruners.NopPruner()
    raise SearchError(f"--pruner {kind}: use median, halving or none", field="--pruner")


def default_paths(cfg: SearchConfig) -> tuple[str, Path, str]:
    """(study name, output folder, storage) with the defaults filled in."""
    study = cfg.study or Path(cfg.solver).stem
    storage = cfg.storage
    if cfg.out:
        out = Path(cfg.out)
    elif storage and storage.startswith("sqlite:///"):
        out = Path(storage[len("sqlite:///"):]).parent
    elif storage and "://" not in storage:
        out = Path(storage).parent
    else:
        out = Path(f"search-{study}")
    if storage is None:
        storage = str(out / "search.journal")
    return study, out, storage


def open_storage(storage: str):
    """An Optuna RDB storage for a URL (postgresql://, mysql://, sqlite:///), else a journal
    file at that path."""
    optuna = require_optuna()
    if "://" in storage:
        if storage.startswith("sqlite:///"):
            Path(storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        try:
            return optuna.storages.RDBStorage(_with_driver(storage))
        except ImportError:
            raise SearchError(f"--storage {_redact(storage)}: the database driver is not installed: "
                              f"{INSTALL_HINT} (PostgreSQL: psycopg or psycopg2-binary; MySQL: PyMySQL)",
                              field="--storage") from None
        except Exception as e:  # noqa: BLE001 - sqlalchemy's connection errors: say which URL
            raise SearchError(f"--storage {_redact(storage)}: cannot open the database: "
                              f"{str(e).splitlines()[0]}", field="--storage") from None
    from optuna.storages import JournalStorage  # noqa: PLC0415
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock  # noqa: PLC0415

    path = Path(storage)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a worker killed while appending leaves the lock behind; appends take milliseconds, so
    # take a lock over after JOURNAL_LOCK_GRACE_S (Optuna's default: 30 s)
    lock = JournalFileSymlinkLock(str(path), grace_period=JOURNAL_LOCK_GRACE_S)
    return JournalStorage(JournalFileBackend(str(path), lock_obj=lock))


def _with_driver(url: str) -> str:
    """``postgresql://`` with the PostgreSQL driver that is installed (SQLAlchemy 2.1 defaults to
    psycopg 3, older versions to psycopg2): either package works."""
    import importlib.util  # noqa: PLC0415

    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
                if importlib.util.find_spec(module) is not None:
                    return f"postgresql+{driver}://" + url[len(scheme):]
    return url


def _redact(url: str) -> str:
    """The URL without its password."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    cred, host = rest.rsplit("@", 1)
    user = cred.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in cred else url


def open_study(cfg: SearchConfig, storage_obj, study_name: str, create: bool = True):
    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kwargs = dict(study_name=study_name, storage=storage_obj, sampler=make_sampler(cfg.sampler, cfg.seed),
                  pruner=make_pruner(cfg.pruner, cfg.epochs))
    if create:
        study = optuna.create_study(direction=cfg.direction, load_if_exists=True, **kwargs)
        settings = cfg.settings()
        old = study.user_attrs.get(SETTINGS_ATTR)
        if old is None:
            study.set_user_attr(SETTINGS_ATTR, settings)
        elif old != settings:
            diff = [k for k in settings if old.get(k) != settings[k]]
            raise SearchError(f"study '{study_name}' in this storage was created with other settings "
                              f"({', '.join(f'{k}: {old.get(k)!r}, now {settings[k]!r}' for k in diff)}); "
                              "rerun with the same ones to continue it, or name a new study with --study",
                              field="--study")
        return study
    return optuna.load_study(**kwargs)


# ---------------------------------------------------------------------------------------------
# workers
# ---------------------------------------------------------------------------------------------
HOST = socket.gethostname()


def _pid_alive(pid) -> bool:
    """Whether process ``pid`` on this host still runs (a zombie does not)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _counts(study) -> dict[str, int]:
    from optuna.trial import TrialState  # noqa: PLC0415

    c = {"complete": 0, "pruned": 0, "diverged": 0, "running": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            c["complete"] += 1
        elif t.state == TrialState.PRUNED:
            c["pruned"] += 1
        elif t.state == TrialState.FAIL and t.user_attrs.get("diverged"):
            c["diverged"] += 1
        elif t.state == TrialState.RUNNING:
            c["running"] += 1
    c["finished"] = c["complete"] + c["pruned"] + c["diverged"]
    return c


def reclaim_abandoned(study, storage_obj, now: float | None = None) -> list[int]:
    """Mark RUNNING trials whose worker is gone as failed ('abandoned'): on this host, a worker
    process that no longer exists; anywhere, no heartbeat for STALE_S seconds, or no worker
    attributes at all a minute after the start (a worker killed right after creating it)."""
    from optuna.trial import TrialState  # noqa: PLC0415

    now = time.time() if now is None else now
    done = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = t.user_attrs
        beat = attrs.get("heartbeat")
        if beat is None and t.datetime_start is not None:
            beat = t.datetime_start.timestamp()
        local_dead = attrs.get("host") == HOST and attrs.get("pid") not in (None, os.getpid()) \
            and not _pid_alive(attrs.get("pid"))
        stale = beat is not None and now - float(beat) > (STALE_S if "heartbeat" in attrs else ORPHAN_S)
        if not (local_dead or stale):
            continue
        why = (f"worker {attrs.get('worker', '?')} is gone" if local_dead
               else f"no heartbeat for {now - float(beat):.0f} s")
        try:
            storage_obj.set_trial_user_attr(t._trial_id, "abandoned", why)
            storage_obj.set_trial_state_values(t._trial_id, TrialState.FAIL)
            done.append(t.number)
        except Exception:  # noqa: BLE001 - it finished (or was reclaimed) meanwhile
            pass
    return done


class _Heartbeat:
    def __init__(self, trial):
        self.trial = trial
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.wait(HEARTBEAT_S):
            try:
                self.trial.set_user_attr("heartbeat", time.time())
            except Exception:  # noqa: BLE001 - the trial finished meanwhile
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)


def _fmt_value(v) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return str(v)
    return f"{v:.2g}"


def _ask(study, attrs: dict):
    """``study.ask()`` with the worker's attributes written in the same storage operation as
    the new trial, so a worker killed at any moment leaves no running trial without an owner."""
    optuna = require_optuna()
    from optuna.trial import FrozenTrial, TrialState  # noqa: PLC0415

    try:
        storage, study_id = study._storage, study._study_id
    except AttributeError:  # pragma: no cover - a future Optuna without these: the plain way
        trial = study.ask()
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        return trial
    if hasattr(study, "_thread_local"):
        study._thread_local.cached_all_trials = None  # as ask() does: see the newest trials
    from datetime import datetime  # noqa: PLC0415

    template = FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, datetime_start=datetime.now(),
                           datetime_complete=None, params={}, distributions={}, user_attrs=dict(attrs),
                           system_attrs={}, intermediate_values={}, trial_id=-1)
    return optuna.Trial(study, storage.create_new_trial(study_id, template_trial=template))


def metric_label(metric: str) -> str:
    return "val acc" if metric == "accuracy" else f"val {metric}"


def work(cfg: SearchConfig, problem: Problem | None = None, echo: Callable[[str], None] | None = None,
         worker: str = "") -> int:
    """Run trials until ``cfg.trials`` are finished (or being run by other workers); return how
    many this worker finished."""
    optuna = require_optuna()
    from optuna.trial import TrialState  # noqa: PLC0415

    echo = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    params = [parse_param(t) for t in cfg.params]
    study_name, _, storage = default_paths(cfg)
    storage_obj = open_storage(storage)
    study = open_study(cfg, storage_obj, study_name, create=False)
    tmp = None
    if problem is None:
        tmp = tempfile.TemporaryDirectory(prefix="netspec-search-")
        problem = Problem(cfg, params, tmp.name)
    me = f"{HOST}:{os.getpid()}"
    mine = 0
    try:
        while True:
            reclaim_abandoned(study, storage_obj)
            c = _counts(study)
            if c["finished"] + c["running"] >= cfg.trials:
                break
            trial = _ask(study, {"host": HOST, "pid": os.getpid(), "worker": me, "heartbeat": time.time()})
            values = {p.path: p.suggest(trial) for p in params}
            seed = _mix(cfg.seed, trial.number) % (2 ** 31)

            def report(epoch: int, value: float, trial=trial) -> None:
                trial.report(value, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch}")

            state, value, note = TrialState.COMPLETE, None, ""
            t0 = time.perf_counter()
            try:
                with _Heartbeat(trial):
                    r = problem.run(values, report, seed)
                value = r["value"]
                trial.set_user_attr("train_loss", r["loss"])
                trial.set_user_attr("iterations", r["iterations"])
                trial.set_user_attr("random_seed", r["random_seed"])
            except optuna.TrialPruned as e:
                state, note = TrialState.PRUNED, str(e)
            except DivergenceError as e:
                state, note = TrialState.FAIL, "diverged"
                trial.set_user_attr("diverged", str(e))
            except KeyboardInterrupt:
                trial.set_user_attr("interrupted", me)
                study.tell(trial, state=TrialState.FAIL)
                raise
            except BaseException as e:
                trial.set_user_attr("error", f"{type(e).__name__}: {e}")
                study.tell(trial, state=TrialState.FAIL)
                raise
            wall = time.perf_counter() - t0
            trial.set_user_attr("wall_s", wall)
            if value is not None and not math.isfinite(value):
                state, note, value = TrialState.FAIL, "diverged", None
                trial.set_user_attr("diverged", "the validation metric is not finite")
            study.tell(trial, value if state == TrialState.COMPLETE else None,
                       state=None if state == TrialState.COMPLETE else state)
            mine += 1
            if not cfg.quiet:
                c = _counts(study)
                shown = " | ".join(f"{k}: {_fmt_value(v)}" for k, v in values.items())
                head = (f"{metric_label(cfg.metric)}: {value:.4g}" if value is not None
                        else note or state.name.lower())
                echo(f"Trial {trial.number} ({head}) | {shown}  [{wall:.1f} s, {c['finished']}/"
                     f"{cfg.trials} finished{', worker ' + worker if worker else ''}]")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return mine


def _worker_main(cfg_dict: dict, index: int) -> None:
    """Entry point of a --jobs worker process."""
    cfg = SearchConfig(**cfg_dict)
    try:
        work(cfg, worker=str(index))
    except KeyboardInterrupt:
        sys.exit(130)
    except NetspecError as e:
        print(f"netspec: error: worker {index}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


# ---------------------------------------------------------------------------------------------
# results: ranking, files, best YAML
# ---------------------------------------------------------------------------------------------
def ranked_trials(study, direction: str) -> list[dict]:
    """Every trial as a dict, ranked: complete trials by value, then pruned ones (by their last
    value), then diverged, failed and running ones."""
    from optuna.trial import TrialState  # noqa: PLC0415

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
        parts = [head] + [f"{k}: {_fmt_value(v)}" for k, v in r["params"].items()]
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
    from ..spec import load_net, load_solver  # noqa: PLC0415
    from ..spec.overrides import apply as apply_overrides  # noqa: PLC0415
    from ..spec.overrides import split_sets  # noqa: PLC0415
    from ..spec.yaml_lines import load_yaml  # noqa: PLC0415

    path = Path(path).resolve()
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    solver_file = Path(cfg.solver).resolve()
    fixed_solver, fixed_net = split_sets(list(cfg.sets))
    solver_vals = [_override(k, v) for k, v in values.items() if k.split(".")[0] != "layer"]
    net_vals = [_override(k, v) for k, v in values.items() if k.split(".")[0] == "layer"]
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


# ---------------------------------------------------------------------------------------------
# the whole search
# ---------------------------------------------------------------------------------------------
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


def run_search(cfg: SearchConfig, echo: Callable[[str], None] | None = None) -> SearchOutcome:
    """Validate, run ``cfg.jobs`` workers until ``cfg.trials`` trials are finished, then rank,
    print and save the results (CSV, JSON, best solver YAML, optional figure)."""
    require_optuna()  # a clear error before any work when optuna is absent
    echo = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    params = [parse_param(t) for t in cfg.params]
    if not params:
        raise SearchError("give at least one --param PATH=KIND:ARGS (e.g. --param "
                          "base_lr=loguniform:1e-6:1e-2)", field="--param")
    names = [p.path for p in params]
    if len(set(names)) != len(names):
        raise SearchError("a --param path is given twice", field="--param")
    if cfg.trials < 1:
        raise SearchError("--trials must be at least 1", field="--trials")
    if cfg.jobs < 1:
        raise SearchError("--jobs must be at least 1", field="--jobs")
    cfg.solver = str(Path(cfg.solver).resolve())
    study_name, out, storage = default_paths(cfg)
    with tempfile.TemporaryDirectory(prefix="netspec-search-") as tmp:
        problem = Problem(cfg, params, tmp)
        cfg.metric, cfg.direction = problem.validate()
        storage_obj = open_storage(storage)
        study = open_study(cfg, storage_obj, study_name)
        c = _counts(study)
        echo(f"Search '{study_name}' in {_redact(storage)}: {len(params)} parameter(s), "
             f"{cfg.trials} trials of {cfg.epochs} epoch(s) ({c['finished']} finished already), "
             f"{problem.n_train} training and {problem.n_val} validation records (of {problem.n_records} "
             f"in the TRAIN Data layer), {cfg.sampler} sampler, {cfg.pruner} pruner, "
             f"{cfg.jobs} worker process(es)")
        interrupted = False
        try:
            if cfg.jobs == 1:
                work(cfg, problem, echo)
            else:
                _run_jobs(cfg, echo)
        except KeyboardInterrupt:
            interrupted = True
    outcome = summarize(cfg, study_name, storage, out, echo)
    outcome.interrupted = interrupted
    if interrupted:
        echo(f"Interrupted: {outcome.counts['finished']} of {cfg.trials} trials are finished and kept in "
             f"{_redact(storage)}; run the same command again to continue the study.")
        raise KeyboardInterrupt
    return outcome


def _run_jobs(cfg: SearchConfig, echo) -> None:
    import multiprocessing as mp  # noqa: PLC0415

    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // cfg.jobs)
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                            "NETSPEC_NUM_THREADS")}
    for k, v in saved.items():
        if v is None:
            os.environ[k] = str(threads)
    procs = []
    try:
        for i in range(cfg.jobs):
            p = ctx.Process(target=_worker_main, args=(asdict(cfg), i), name=f"netspec-search-{i}")
            p.start()
            procs.append(p)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:  # they got the same Ctrl-C; give them time to mark their trials
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
        raise
    bad = [p.exitcode for p in procs if p.exitcode not in (0,)]
    if bad:
        if all(code == 130 for code in bad):
            raise KeyboardInterrupt
        raise SearchError(f"{len(bad)} of {cfg.jobs} worker process(es) failed (exit codes {bad}); "
                          "finished trials are kept: fix the cause and rerun to continue")


def summarize(cfg: SearchConfig, study_name: str, storage: str, out: Path,
              echo: Callable[[str], None] | None = None) -> SearchOutcome:
    """Rank the study's trials, print the table, write CSV/JSON, the best YAML and the plot."""
    echo = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    storage_obj = open_storage(storage)
    study = open_study(cfg, storage_obj, study_name, create=False)
    params = [parse_param(t) for t in cfg.params]
    rows = ranked_trials(study, cfg.direction)
    counts = _counts(study)
    meta = {"study": study_name, "storage": _redact(storage), "metric": cfg.metric,
            "direction": cfg.direction, "params": [p.describe() for p in params],
            "settings": cfg.settings(), "trials_requested": cfg.trials, "counts": counts,
            "solver": cfg.solver}
    csv_path, json_path = write_results(rows, out, study_name, meta)
    outcome = SearchOutcome(study_name, storage, out, rows, counts, csv_path, json_path)
    state_counts = f"{counts['complete']} complete, {counts['pruned']} pruned, {counts['diverged']} diverged"
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
        from ..tools.plot_search import plot_search  # noqa: PLC0415

        outcome.plot = plot_search({**meta, "trials": rows}, cfg.plot)
    wrote = [str(p) for p in (csv_path, json_path, outcome.best_yaml, outcome.plot) if p]
    echo("Wrote " + ", ".join(wrote))
    return outcome
