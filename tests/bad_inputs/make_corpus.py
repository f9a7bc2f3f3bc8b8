"""Generate the corpus of bad input files and its manifest, ``tests/bad_inputs/cases.tsv``.

Run from the repository root:  ``PYTHONPATH=$PWD python tests/bad_inputs/make_corpus.py``
(it rewrites the folders it owns and every manifest row of its kinds; rows of other kinds are
kept). Each kind is one function ``<kind>_cases(root) -> list[Case]`` that writes its files
and returns its rows; add a kind by adding a function to ``KINDS``.

The manifest (tab-separated, one header row) has the columns

* ``case``: a unique id (``<kind>/<name>``);
* ``kind``: the function that made it (``solver``, ``state``, ``weights`` ...);
* ``file``: the bad file, relative to the repository root;
* ``command``: the command that reads it, run from the repository root and split with
  ``shlex.split`` (POSIX shell quoting); ``netspec`` is the command line
  (``python -m netspec.cli``), ``{file}`` stands for the ``file`` column and ``{tmp}`` for a
  fresh empty folder where a command must write its outputs (no other braces occur, so
  ``str.format(file=..., tmp=...)`` substitutes them);
* ``expect``: a phrase the error message contains (case-sensitive).

Every command must exit non-zero with one ``netspec: error:`` message that names ``{file}``
(as written in the ``file`` column) and contains ``expect``, with no traceback and no
"internal error". Files under ``support/`` (a tiny net, its data and solvers, the good
snapshot the corrupt states were made from) are not cases.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BASE = Path("tests/bad_inputs")          # how the manifest spells paths (repository-relative)
SUPPORT = BASE / "support"
MANIFEST = HERE / "cases.tsv"
COLUMNS = ("case", "kind", "file", "command", "expect")


@dataclass
class Case:
    kind: str
    name: str
    file: Path           # repository-relative
    command: str
    expect: str

    def row(self) -> list[str]:
        return [f"{self.kind}/{self.name}", self.kind, self.file.as_posix(), self.command,
                self.expect]


# -- support: a tiny net, its data and solvers ------------------------------------------------
TINY_NET = {"name": "tiny", "layer": [
    {"name": "d", "type": "Data", "top": ["x", "y"],
     "data_param": {"source": "tiny_data.npz", "batch_size": 5, "shuffle": True}},
    {"name": "conv1", "type": "Convolution", "bottom": "x", "top": "c",
     "convolution_param": {"num_output": 2, "kernel_size": 3, "weight_filler": {"type": "xavier"}}},
    {"name": "ip1", "type": "InnerProduct", "bottom": "c", "top": "z",
     "inner_product_param": {"num_output": 3, "weight_filler": {"type": "xavier"}}},
    {"name": "acc", "type": "Accuracy", "bottom": ["z", "y"], "top": "acc",
     "include": {"phase": "TEST"}},
    {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["z", "y"], "top": "loss"}]}

#: the solver the states resume with: at max_iter already (iteration 2), no snapshots, so a
#: state that wrongly passed its checks would train nothing and write nothing
TINY_SOLVER = {"net": "tiny_net.yaml", "type": "SGD", "base_lr": 0.05, "momentum": 0.9,
               "lr_policy": "fixed", "max_iter": 2, "random_seed": 5, "snapshot": 0,
               "snapshot_after_train": False, "snapshot_prefix": "/tmp/netspec-bad-inputs/tiny"}

TINY_MODEL = f"{SUPPORT}/tiny_net.yaml"
TINY_SOLVER_FILE = f"{SUPPORT}/tiny_solver.yaml"


def write_support(root: Path) -> None:
    folder = root / SUPPORT
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.savez(folder / "tiny_data.npz", data=rng.standard_normal((24, 1, 4, 4)).astype(np.float32),
             label=rng.integers(0, 3, 24))
    header = "# A tiny net for tests/bad_inputs (made by make_corpus.py): 24 records of 1x4x4.\n"
    (folder / "tiny_net.yaml").write_text(header + yaml.safe_dump(TINY_NET, sort_keys=False))
    (folder / "tiny_solver.yaml").write_text(
        "# Resumes the corrupt states of tests/bad_inputs/state (made by make_corpus.py).\n"
        + yaml.safe_dump(TINY_SOLVER, sort_keys=False))


def tiny_params() -> dict[str, np.ndarray]:
    """The tiny net's parameter blobs as initialised (seeded)."""
    from netspec.backend import Backend
    from netspec.net import Net
    from netspec.spec import load_net

    net = Net(load_net(ROOT / TINY_MODEL), "TRAIN", Backend(np, np.float32), np.random.default_rng(0))
    return {k: p.data.copy() for k, p in net.named_params().items()}


def npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


# -- solver files: one per field rule ---------------------------------------------------------
#: (name, fields after `net:` and `base_lr:`, phrase): every range rule of SolverParameter
SOLVER_CASES = [
    ("base_lr_zero", {"base_lr": 0}, "base_lr: must be a finite number > 0, got 0"),
    ("base_lr_negative", {"base_lr": -0.1}, "base_lr: must be a finite number > 0, got -0.1"),
    ("base_lr_inf", {"base_lr": ".inf"}, "base_lr: must be a finite number > 0, got inf"),
    ("base_lr_nan", {"base_lr": ".nan"}, "base_lr: must be a finite number > 0, got nan"),
    ("momentum_one", {"momentum": 1.0}, "momentum: must be in [0, 1), got 1.0"),
    ("momentum_above_one", {"momentum": 1.5}, "momentum: must be in [0, 1), got 1.5"),
    ("momentum_negative", {"momentum": -0.1}, "momentum: must be in [0, 1), got -0.1"),
    ("momentum2_above_one", {"type": "Adam", "momentum": 0.9, "momentum2": 1.5},
     "momentum2: must be in [0, 1), got 1.5"),
    ("momentum2_negative", {"type": "Adam", "momentum": 0.9, "momentum2": -0.5},
     "momentum2: must be in [0, 1), got -0.5"),
    ("rms_decay_one", {"type": "RMSProp", "rms_decay": 1.0}, "rms_decay: must be in [0, 1), got 1.0"),
    ("rms_decay_negative", {"type": "RMSProp", "rms_decay": -0.1}, "rms_decay: must be in [0, 1)"),
    ("delta_zero", {"type": "Adam", "momentum": 0.9, "delta": 0}, "delta: must be a finite number > 0"),
    ("delta_negative", {"type": "AdaGrad", "delta": -1.0e-8}, "delta: must be a finite number > 0"),
    ("weight_decay_negative", {"weight_decay": -0.001, "regularization_type": "L2"},
     "weight_decay: must be a finite number >= 0"),
    ("weight_decay_inf", {"weight_decay": ".inf", "regularization_type": "L2"},
     "weight_decay: must be a finite number >= 0, got inf"),
    ("clip_gradients_zero", {"clip_gradients": 0}, "clip_gradients: must be > 0, or negative"),
    ("clip_gradients_nan", {"clip_gradients": ".nan"}, "clip_gradients: must be > 0, or negative"),
    ("gamma_inf", {"lr_policy": "step", "gamma": ".inf", "stepsize": 10},
     "gamma: must be a finite number, got inf"),
    ("power_nan", {"lr_policy": "poly", "power": ".nan", "max_iter": 10},
     "power: must be a finite number, got nan"),
    ("max_iter_negative", {"max_iter": -1}, "max_iter: must be >= 0, got -1"),
    ("iter_size_zero", {"iter_size": 0}, "iter_size: must be >= 1, got 0"),
    ("display_negative", {"display": -1}, "display: must be >= 0"),
    ("average_loss_zero", {"average_loss": 0}, "average_loss: must be >= 1, got 0"),
    ("test_interval_negative", {"test_interval": -5}, "test_interval: must be >= 0"),
    ("test_iter_zero", {"test_iter": 0, "test_interval": 10}, "test_iter: entry 0 is 0"),
    ("snapshot_negative", {"snapshot": -100}, "snapshot: must be >= 0"),
    ("stepsize_zero", {"lr_policy": "step", "gamma": 0.1, "stepsize": 0}, "stepsize: must be > 0, got 0"),
    ("device_id_negative", {"device_id": -1}, "device_id: must be >= 0, got -1"),
    ("step_gamma_negative", {"lr_policy": "step", "gamma": -0.5, "stepsize": 10},
     "gamma: must be > 0 for lr_policy 'step', got -0.5"),
    ("exp_gamma_negative", {"lr_policy": "exp", "gamma": -0.9},
     "gamma: must be > 0 for lr_policy 'exp', got -0.9"),
    ("exp_gamma_zero", {"lr_policy": "exp", "gamma": 0}, "gamma: must be > 0 for lr_policy 'exp', got 0"),
    ("multistep_gamma_negative", {"lr_policy": "multistep", "gamma": -0.1, "stepvalue": [5, 10]},
     "gamma: must be > 0 for lr_policy 'multistep'"),
    ("inv_gamma_negative", {"lr_policy": "inv", "gamma": -1, "power": 0.75},
     "gamma: must be >= 0 for lr_policy 'inv', got -1"),
    ("poly_power_negative", {"lr_policy": "poly", "power": -1, "max_iter": 100},
     "power: must be >= 0 for lr_policy 'poly', got -1"),
    ("poly_max_iter_zero", {"lr_policy": "poly", "power": 1, "max_iter": 0},
     "max_iter: lr_policy 'poly' decays the rate to 0 at max_iter"),
    ("multistep_decreasing", {"lr_policy": "multistep", "gamma": 0.1, "stepvalue": [100, 50]},
     "stepvalue: must be increasing iterations >= 0, got [100, 50]"),
    ("multistep_repeated", {"lr_policy": "multistep", "gamma": 0.1, "stepvalue": [100, 100]},
     "stepvalue: must be increasing iterations >= 0, got [100, 100]"),
    ("multistep_negative", {"lr_policy": "multistep", "gamma": 0.1, "stepvalue": [-10, 100]},
     "stepvalue: must be increasing iterations >= 0, got [-10, 100]"),
    ("exp_overflow", {"lr_policy": "exp", "gamma": 1.5, "max_iter": 5000},
     "the rate overflows to inf before iteration 5000"),
    ("step_overflow", {"lr_policy": "step", "gamma": 10, "stepsize": 1, "max_iter": 400},
     "the rate overflows to inf before iteration 400"),
    ("multistep_overflow", {"lr_policy": "multistep", "gamma": 1.0e+200, "stepvalue": [1, 2, 3],
                            "max_iter": 10}, "the rate overflows to inf before iteration 10"),
    ("inv_overflow", {"lr_policy": "inv", "gamma": 1, "power": -200, "max_iter": 1000000},
     "power: with lr_policy 'inv'"),
    ("lr_policy_missing_gamma", {"lr_policy": "exp"}, "lr_policy: lr_policy 'exp' needs 'gamma'"),
    ("weight_decay_without_type", {"weight_decay": 0.0005},
     "weight_decay: weight_decay is set but regularization_type is not"),
]


def solver_cases(root: Path) -> list[Case]:
    """One solver file per range rule (``netspec train {file}`` stops while reading it), and
    one whose snapshot folder cannot be written (stops before the first iteration)."""
    folder = fresh(root / BASE / "solver")
    cases = []
    for name, fields, expect in SOLVER_CASES:
        lines = {"net": "../support/tiny_net.yaml", "base_lr": 0.01, "max_iter": 1,
                 "snapshot_after_train": False, **fields}
        text = "".join(f"{k}: {_yaml_value(v)}\n" for k, v in lines.items())
        (folder / f"{name}.yaml").write_text(f"# bad: {expect}\n{text}")
        cases.append(Case("solver", name, BASE / "solver" / f"{name}.yaml", "netspec train {file}", expect))
    for name, prefix, expect in [
            ("snapshot_prefix_in_proc", "/proc/netspec/lenet", "cannot write snapshots to /proc/netspec"),
            ("snapshot_prefix_under_a_file", "../support/tiny_net.yaml/snap/tiny",
             "tiny_net.yaml is a file, not a folder")]:
        text = (f"# bad: {expect}\nnet: ../support/tiny_net.yaml\nbase_lr: 0.01\nmax_iter: 300\n"
                f"snapshot_prefix: {prefix}\n")
        (folder / f"{name}.yaml").write_text(text)
        cases.append(Case("solver", name, BASE / "solver" / f"{name}.yaml", "netspec train {file}", expect))
    return cases


def _yaml_value(v) -> str:
    """``v`` as YAML reads it back: lists and booleans as JSON, floats with a decimal point
    (YAML 1.1 reads ``1e+200`` as text), ``.inf``/``.nan`` as written."""
    if isinstance(v, (list, bool)):
        return json.dumps(v)
    if isinstance(v, float):
        text = repr(v)
        return text.replace("e", ".0e", 1) if "e" in text and "." not in text else text
    return str(v)


# -- solver states: a real snapshot of the tiny net, then damaged one record at a time -----------
def good_snapshot(folder: Path) -> Path:
    """Train the tiny net 2 iterations and snapshot into ``folder`` (prefix ``tiny``)."""
    from netspec.log import CaffeLog
    from netspec.solvers import Solver
    from netspec.spec import load_solver

    sp = load_solver(ROOT / TINY_SOLVER_FILE, [("snapshot_prefix", ["snapshot_prefix"],
                                                str(folder / "tiny"))])
    s = Solver(sp, log=CaffeLog(quiet=True))
    s.solve(max_iter=2)
    return s.snapshot()


def _set(key, value):
    def edit(flat):
        flat[key] = value
    return edit


def _drop(*keys):
    def edit(flat):
        for k in [k for k in flat if k in keys or k.startswith(tuple(f"{p}|" for p in keys))]:
            del flat[k]
    return edit


CURSOR, ORDER = "data|train:d|cursor", "data|train:d|order"
#: (name, edit of the flat state, phrase): one damaged record each
STATE_EDITS = [
    ("missing_iter", _drop("iter"), "the solver state has no 'iter' record"),
    ("missing_type", _drop("type"), "the solver state has no 'type' record"),
    ("missing_weights", _drop("weights"), "the solver state has no 'weights' record"),
    ("missing_rng", _drop("rng"), "the solver state has no 'rng' record"),
    ("missing_history", _drop("history"), "the solver state has no 'history' record"),
    ("iter_text", _set("iter", np.array("abc")), "the record 'iter' is 'abc', not an iteration number"),
    ("iter_negative", _set("iter", np.int64(-5)), "the record 'iter' is -5, not an iteration number"),
    ("iter_fraction", _set("iter", np.float64(2.5)), "the record 'iter' is 2.5, not an iteration number"),
    ("type_number", _set("type", np.int64(3)), "the record 'type' should be a text, not 3"),
    ("weights_empty", _set("weights", np.array("")), "the record 'weights' should be a text"),
    ("rng_garbage", _set("rng", np.frombuffer(b"garbage", np.uint8)),
     "the random-generator record 'rng' is corrupt"),
    ("rng_other_generator", _set("rng", np.frombuffer(
        b'{"bit_generator": "MT19937", "state": {"key": [1], "pos": 0}}', np.uint8)),
     "the random-generator record 'rng' is corrupt"),
    ("history_short", _set("history|0|history", np.zeros(5, np.float32)),
     "the history 'history' of parameter group 0 has 5 float32 values"),
    ("history_text", _set("history|0|history", np.array(["a"] * 47)),
     "the history 'history' of parameter group 0 has 47 <U1 values"),
    ("history_nan", _set("history|0|history", np.full(47, np.nan, np.float32)),
     "the history 'history' of parameter group 0 holds NaN or Inf values"),
    ("history_other_rule", _set("history|0|m", np.zeros(47, np.float32)),
     "the history of parameter group 0 should hold ['history'] for SGD"),
    ("history_extra_group", _set("history|1|history", np.zeros(47, np.float32)),
     "the state holds 2 parameter histories, this net has 1 parameter groups"),
    ("groups_changed", _set("groups", np.array([1.0, 1.0, 23.0, 2.0, 1.0, 24.0])),
     "the parameter groups changed since this state was written"),
    ("groups_garbage", _set("groups", np.array("x")), "the record 'groups' should be"),
    ("value_and_group", _set("history", np.zeros(3)), "is both a value and a group of values"),
    ("losses_text", _set("losses", np.array("abc")), "the record 'losses' should be a list of numbers"),
    ("cursor_past_end", _set(CURSOR, np.int64(999)), "'cursor' of layer 'd' is 999, past the end"),
    ("cursor_negative", _set(CURSOR, np.int64(-3)), "'cursor' of layer 'd' is negative"),
    ("cursor_text", _set(CURSOR, np.array("abc")), "'cursor' of layer 'd' is 'abc', not an integer"),
    ("cursor_missing", _drop(CURSOR), "the data record of layer 'd' has no 'cursor'"),
    ("order_repeats", _set(ORDER, np.zeros(24, np.int64)), "'order' of layer 'd' is not an order"),
    ("order_out_of_range", _set(ORDER, np.arange(24, dtype=np.int64) + 5),
     "'order' of layer 'd' is not an order"),
    ("order_short", _set(ORDER, np.arange(10, dtype=np.int64)),
     "'order' of layer 'd' has shape (10,) in the state, (24,) in this net"),
    ("data_not_a_record", _set("data|train:d", np.int64(1)), "is both a value and a group of values"),
]


def state_cases(root: Path) -> list[Case]:
    """Corrupt ``.solverstate.npz`` files (``netspec train <tiny solver> --snapshot {file}``),
    each a real state with one record damaged, plus states whose weights file is wrong and
    files that are not states at all."""
    from netspec.snapshot import load_npz

    folder = fresh(root / BASE / "state")
    resume = f"netspec train {TINY_SOLVER_FILE} --snapshot {{file}}"
    good = good_snapshot(folder)                           # tiny_iter_2.{weights,solverstate}.npz
    weights = good.with_name("tiny_iter_2.weights.npz")
    flat = load_npz(good)
    cases = []

    def add(name: str, data: bytes | dict, expect: str, command: str = resume,
            suffix: str = ".solverstate.npz") -> None:
        path = folder / f"{name}{suffix}"
        path.write_bytes(data if isinstance(data, bytes) else npz_bytes(data))
        cases.append(Case("state", name, BASE / "state" / path.name, command, expect))

    for name, edit, expect in STATE_EDITS:
        damaged = copy.deepcopy(flat)
        edit(damaged)
        add(name, damaged, expect)
    # states whose weights file is wrong
    w = load_npz(weights)
    other = {k: v + 1 for k, v in w.items()}
    (folder / "other_run.weights.npz").write_bytes(npz_bytes(other))
    add("weights_of_another_run", dict(flat, weights=np.array("other_run.weights.npz")),
        "is not the one written with this state (its SHA-256 differs)")
    for name, arrays, expect in [
            ("weights_transposed", dict(w, **{"ip1/0": np.ascontiguousarray(w["ip1/0"].T)}),
             "blob 'ip1/0' has shape (8, 3) in the file but the net expects (3, 8)"),
            ("weights_missing_blob", {k: v for k, v in w.items() if k != "ip1/1"},
             "the weights do not fit the net exactly: the net's blobs ip1/1 are not in the file")]:
        payload = npz_bytes(arrays)
        (folder / f"{name}.weights.npz").write_bytes(payload)
        add(name, dict(flat, weights=np.array(f"{name}.weights.npz"),
                       weights_sha256=np.array(hashlib.sha256(payload).hexdigest())), expect)
    add("weights_file_gone", dict(flat, weights=np.array("gone.weights.npz")),
        "cannot read the weights file this state names")
    # the state is fine but the solver or net is not the one it was written with
    add("other_solver_type", flat, "the state was written by a SGD solver, this one is Adam",
        command=resume + " --set type=Adam --set momentum=0.9")
    add("lr_mult_changed", flat, "the parameter groups changed since this state was written",
        command=resume + " --set layer.ip1.param.0.lr_mult=2")
    add("data_limit_changed", flat, "'order' of layer 'd' has shape (24,) in the state, (10,) in this net",
        command=resume + " --set layer.d.data_param.limit=10")
    # files that are not solver states
    add("weights_given_as_state", weights.read_bytes(), "this is a weights file, not a solver state",
        suffix=".npz")
    add("caffemodel_given_as_state", caffemodel_bytes(w), "this is a Caffe .caffemodel (weights), "
        "not a solver state", suffix=".caffemodel")
    add("text_file", b"iter: 2\ntype: SGD\n", "this is not an .npz archive")
    add("empty_file", b"", "the file is empty")
    add("truncated", good.read_bytes()[:300], "cannot read solver state (truncated or corrupt .npz)")
    add("single_npy", _npy_bytes(np.arange(3)), "this is a single .npy array, not an .npz archive")
    add("pickled", _pickled_npz(), "holds Python objects (pickled data), which netspec never loads")
    good.unlink()                    # the good state is not a case; its weights file stays
    return cases


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _pickled_npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, iter=np.array([{"a": 1}], dtype=object), **{"ip1/0": np.array([{"b": 2}], dtype=object)})
    return buf.getvalue()


# -- weights files: .npz and .caffemodel that must not load into the tiny net -------------------
def caffemodel_bytes(arrays: dict, legacy: set[str] = frozenset(), extra=None) -> bytes:
    """A .caffemodel of ``arrays`` (``layer/i`` keys); blobs named in ``legacy`` get the old
    num/channels/height/width fields instead of ``shape``; ``extra(net)`` may damage it."""
    from netspec.caffe import pb2
    from netspec.caffe.caffemodel import array_to_blob

    net = pb2().NetParameter(name="tiny")
    layers: dict[str, object] = {}
    for key, a in arrays.items():
        name, _, _ = key.rpartition("/")
        if name not in layers:
            layers[name] = net.layer.add(name=name, type="InnerProduct")
        blob = layers[name].blobs.add()
        if key in legacy:
            n, c, h, w = (1,) * (4 - a.ndim) + a.shape
            blob.num, blob.channels, blob.height, blob.width = n, c, h, w
            blob.data.extend(np.asarray(a, np.float32).ravel().tolist())
        else:
            array_to_blob(a, blob)
    if extra is not None:
        extra(net)
    return net.SerializeToString()


def weights_cases(root: Path) -> list[Case]:
    """Weights that must not load into the tiny net: through ``netspec test`` (``--weights``),
    ``netspec convert --model`` and ``netspec export --caffemodel``."""
    folder = fresh(root / BASE / "weights")
    w = tiny_params()
    test = f"netspec test --model {TINY_MODEL} --weights {{file}} --iterations 1"
    convert = f"netspec convert {{file}} --model {TINY_MODEL} -o {{tmp}}/w.npz"
    export = (f"netspec export {TINY_MODEL} --weights {{file}} -o {{tmp}}/o.prototxt "
              "--caffemodel {tmp}/o.caffemodel")
    cases = []

    def add(name: str, data: bytes, expect: str, command: str = test) -> None:
        path = folder / name
        path.write_bytes(data)
        verb = command.split()[1]
        cases.append(Case("weights", name if command == test else f"{name}:{verb}",
                          BASE / "weights" / name, command, expect))

    transposed = dict(w, **{"ip1/0": np.ascontiguousarray(w["ip1/0"].T)})
    shape_msg = "blob 'ip1/0' has shape (8, 3) in the file but the net expects (3, 8)"
    add("transposed.npz", npz_bytes(transposed), shape_msg)
    add("wrong_count.npz", npz_bytes(dict(w, **{"ip1/0": np.zeros((3, 7), np.float32)})),
        "blob 'ip1/0' has shape (3, 7) in the file but the net expects (3, 8)")
    add("legacy_transposed.npz", npz_bytes(dict(w, **{"ip1/0": w["ip1/0"].T.reshape(1, 1, 8, 3)})),
        "blob 'ip1/0' has shape (1, 1, 8, 3) in the file but the net expects (3, 8)")
    add("conv_flattened.npz", npz_bytes(dict(w, **{"conv1/0": w["conv1/0"].reshape(2, 9)})),
        "blob 'conv1/0' has shape (2, 9) in the file but the net expects (2, 1, 3, 3)")
    add("bias_as_column.npz", npz_bytes(dict(w, **{"ip1/1": w["ip1/1"].reshape(3, 1)})),
        "blob 'ip1/1' has shape (3, 1) in the file but the net expects (3,)")
    add("missing_blob.npz", npz_bytes({k: v for k, v in w.items() if not k.startswith("ip1")}),
        "the net's parameter blobs ip1/0, ip1/1 are not in the file")
    add("other_net.npz", npz_bytes({"fc9/0": w["ip1/0"], "fc9/1": w["ip1/1"]}),
        "none of the 2 arrays in the file (fc9/0, fc9/1) is a parameter blob of this net")
    add("nan.npz", npz_bytes(dict(w, **{"ip1/0": np.full((3, 8), np.nan, np.float32)})),
        "blob 'ip1/0' holds NaN or Inf values")
    add("inf_bias.npz", npz_bytes(dict(w, **{"conv1/1": np.array([np.inf, 0], np.float32)})),
        "blob 'conv1/1' holds NaN or Inf values")
    add("strings.npz", npz_bytes(dict(w, **{"ip1/0": np.full((3, 8), "x")})),
        "blob 'ip1/0' holds <U1 values, not numbers")
    add("pickled.npz", _pickled_npz(), "holds Python objects (pickled data), which netspec never loads")
    add("truncated.npz", npz_bytes(w)[:500], "cannot read weights file (truncated or corrupt .npz)")
    add("text.npz", b"conv1/0: [1, 2, 3]\n", "this is not an .npz archive")
    add("empty.npz", b"", "the file is empty")
    add("single_npy.npz", _npy_bytes(w["ip1/0"]), "this is a single .npy array, not an .npz archive")
    state = npz_bytes({"iter": np.int64(2), "type": np.array("SGD"),
                       "weights": np.array("tiny_iter_2.weights.npz"), "rng": np.zeros(3, np.uint8)})
    add("solver_state.npz", state, "this is a solver state, not a weights file")
    # .caffemodel files
    add("transposed.caffemodel", caffemodel_bytes(transposed), shape_msg)
    add("legacy_transposed.caffemodel", caffemodel_bytes(transposed, legacy={"ip1/0"}),
        "blob 'ip1/0' has shape (1, 1, 8, 3) in the file but the net expects (3, 8)")
    add("other_net.caffemodel", caffemodel_bytes({"fc9/0": w["ip1/0"]}),
        "none of the 1 arrays in the file (fc9/0) is a parameter blob of this net")

    def negative_dim(net):
        net.layer[0].blobs[0].shape.dim[0] = -2
    add("negative_dim.caffemodel", caffemodel_bytes(w, extra=negative_dim), "has a negative dimension")

    def short_values(net):
        del net.layer[1].blobs[0].shape.dim[:]
        net.layer[1].blobs[0].shape.dim.extend([3, 9])
    add("count_mismatch.caffemodel", caffemodel_bytes(w, extra=short_values),
        "has 24 values but its shape (3, 9) needs 27")
    add("truncated.caffemodel", caffemodel_bytes(w)[:150], "cannot read this .caffemodel")
    add("prototxt.caffemodel", b'name: "tiny"\nlayer { name: "ip1" type: "InnerProduct" }\n',
        "this looks like a text .prototxt, not a binary .caffemodel")
    add("empty.caffemodel", b"", "no layers in this file")
    add("no_blobs.caffemodel", caffemodel_bytes({}, extra=lambda net: net.layer.add(name="ip1")),
        "no parameter blobs in this file")
    # the same files through convert --model and export --caffemodel
    add("transposed.caffemodel", caffemodel_bytes(transposed), shape_msg, command=convert)
    add("legacy_transposed.caffemodel", caffemodel_bytes(transposed, legacy={"ip1/0"}),
        "blob 'ip1/0' has shape (1, 1, 8, 3) in the file but the net expects (3, 8)", command=convert)
    add("transposed.npz", npz_bytes(transposed), shape_msg, command=export)
    add("export_extra_blob.npz", npz_bytes(dict(w, **{"ip1/2": np.zeros(3, np.float32)})),
        "layer 'ip1' has blobs [0, 1, 2] in the weights but the net's layer has [0, 1]", command=export)
    add("export_missing_bias.npz", npz_bytes({k: v for k, v in w.items() if k != "conv1/1"}),
        "layer 'conv1' has blobs [0] in the weights but the net's layer has [0, 1]", command=export)
    add("export_blobs_for_accuracy.npz", npz_bytes(dict(w, **{"acc/0": np.zeros(3, np.float32)})),
        "layer 'acc' has blobs [0] in the weights but the net's layer has none", command=export)
    add("export_bad_key.npz", npz_bytes(dict(w, **{"ip1": np.zeros(3, np.float32)})),
        "weights key 'ip1' is not '<layer>/<blob index>'", command=export)
    return cases


#: kind -> function writing that kind's files and returning its cases
KINDS = {"solver": solver_cases, "state": state_cases, "weights": weights_cases}


def main(kinds: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    write_support(ROOT)
    rows: list[list[str]] = []
    if MANIFEST.exists():          # keep the rows of kinds this run does not make
        with open(MANIFEST, newline="") as f:
            rows = [r for r in list(csv.reader(f, delimiter="\t"))[1:] if r and r[1] not in kinds]
    for kind in kinds:
        rows += [c.row() for c in KINDS[kind](ROOT)]
    ids = [r[0] for r in rows]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise SystemExit(f"duplicate case ids: {sorted(dupes)}")
    rows.sort(key=lambda r: r[0])
    with open(MANIFEST, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    counts = {k: sum(r[1] == k for r in rows) for k in sorted({r[1] for r in rows})}
    print(f"wrote {MANIFEST.relative_to(ROOT)}: {len(rows)} cases {counts}")


if __name__ == "__main__":
    main(sys.argv[1:] or list(KINDS))
