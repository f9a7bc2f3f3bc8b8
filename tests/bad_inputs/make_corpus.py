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
* ``expect``: a phrase the error message contains (case-sensitive);
* ``line``: the line the message names as ``FILE:LINE:``, empty where there is none.

Every command must exit non-zero with one ``netspec: error:`` message that names ``{file}``
(as written in the ``file`` column) and contains ``expect``, with no traceback and no
"internal error". Files under ``support/`` (a tiny net, its data and solvers, the good
snapshot the corrupt states were made from) are not cases.
"""

from __future__ import annotations

import copy
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
COLUMNS = ("case", "kind", "file", "command", "expect", "line")


@dataclass
class Case:
    kind: str
    name: str
    file: Path           # repository-relative
    command: str
    expect: str
    line: int | None = None   # the line the message names (FILE:LINE:), where there is one

    def row(self) -> list[str]:
        return [f"{self.kind}/{self.name}", self.kind, self.file.as_posix(), self.command,
                self.expect, "" if self.line is None else str(self.line)]


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

#: the solver the bad search journals are searched with: trains the tiny net (20 training and
#: 4 validation records), one epoch in well under a second
SEARCH_SOLVER = {"net": "tiny_net.yaml", "type": "SGD", "base_lr": 0.05, "momentum": 0.9,
                 "lr_policy": "fixed", "max_iter": 2, "random_seed": 5, "snapshot": 0,
                 "snapshot_after_train": False}

TINY_MODEL = f"{SUPPORT}/tiny_net.yaml"
TINY_SOLVER_FILE = f"{SUPPORT}/tiny_solver.yaml"
SEARCH_SOLVER_FILE = f"{SUPPORT}/search_solver.yaml"


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
    (folder / "search_solver.yaml").write_text(
        "# Searched over by the bad journals of tests/bad_inputs/journal (made by make_corpus.py).\n"
        + yaml.safe_dump(SEARCH_SOLVER, sort_keys=False))


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
    ("eval_type_unknown", {"eval_type": "segmentation"},
     "eval_type: 'segmentation' is not a valid value"),
    ("ap_version_unknown", {"eval_type": "detection", "ap_version": "VOC2007"},
     "ap_version: 'VOC2007' is not a valid value"),
    ("detection_test_of_a_classifier", {"eval_type": "detection", "test_iter": [1],
                                        "test_interval": 1},
     "the detection test phase needs DetectionEvaluate rows"),
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


# -- Caffe prototxt: nets and solvers that `netspec convert` must refuse ------------------------
#: the first layer of most bad nets (lines 1-6 of a case, before the header comment is added)
INPUT = ('layer {\n  name: "data"\n  type: "Input"\n  top: "data"\n'
         '  input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } }\n}\n')


def _layer(name: str, type_: str, *body: str, bottom: str = "data", top: str | None = None) -> str:
    """A layer block (the lines ``layer {``, name, type, bottom, top, then ``body``, ``}``)."""
    lines = ["layer {", f'  name: "{name}"', f'  type: "{type_}"']
    lines += [f'  bottom: "{bottom}"'] if bottom else []
    lines += [f'  top: "{top or name}"']
    return "\n".join(lines + [f"  {b}" for b in body] + ["}"]) + "\n"


def _conv(*body: str) -> str:
    """INPUT, then a Convolution layer 'c' whose line 12 is ``body``."""
    return INPUT + _layer("c", "Convolution", *body)


V0_HEAD = 'name: "v0"\ninput: "data"\ninput_dim: 1\ninput_dim: 1\ninput_dim: 4\ninput_dim: 4\n'
V1_HEAD = V0_HEAD.replace('"v0"', '"v1"')
#: a net the solver cases name that converts cleanly, so that the solver is their only problem
CONVERT_NET = ('name: "convert_net"\n' + INPUT.replace("dim: 2 dim: 3 dim: 8 dim: 8", "dim: 2 dim: 4")
               + 'layer {\n  name: "label"\n  type: "Input"\n  top: "label"\n'
               '  input_param { shape { dim: 2 } }\n}\n'
               + _layer("ip", "InnerProduct", "inner_product_param { num_output: 3 }")
               + 'layer {\n  name: "loss"\n  type: "SoftmaxWithLoss"\n  bottom: "ip"\n'
               '  bottom: "label"\n  top: "loss"\n}\n')
NET_REF = 'net: "../support/convert_net.prototxt"\n'

#: (name, text, phrase, line in ``text`` or None): nets, run as `netspec convert FILE -o
#: {tmp}/out.yaml`. Each file gets a header comment, so the manifest's line is one more.
PROTOTXT_NETS = [
    # text-format syntax
    ("syntax_unclosed_brace", INPUT + 'layer {\n  name: "relu"\n  type: "ReLU"\n  bottom: "data"\n'
     '  top: "data"\n', 'Expected "}"', 11),
    ("syntax_extra_closing_brace", INPUT + "}\n", "Expected identifier or number, got }", 7),
    ("syntax_unterminated_string", 'name: "corpus\n' + INPUT, "String missing ending quote", 1),
    ("syntax_mismatched_quotes", "name: \"corpus'\n" + INPUT, "String missing ending quote", 1),
    ("syntax_missing_colon", 'name "corpus"\n' + INPUT, 'Expected ":"', 1),
    ("syntax_missing_value", INPUT + 'layer {\n  name:\n}\n', "Expected string but found: '}'", 9),
    ("syntax_angle_bracket_closed_by_brace", 'layer <\n  name: "data"\n  type: "Input"\n}\n',
     "Expected identifier or number, got }", 4),
    ("syntax_stray_character", INPUT + "@\n", "Expected identifier or number, got @", 7),
    ("syntax_bare_word_for_string", INPUT + 'layer {\n  name: relu\n  type: "ReLU"\n}\n',
     "Expected string but found: 'relu'", 8),
    ("syntax_field_given_twice", 'layer {\n  name: "a"\n  name: "b"\n  type: "Input"\n  top: "x"\n'
     "  input_param { shape { dim: 1 } }\n}\n", 'should not have multiple "name" fields', 3),
    ("syntax_layer_left_open", INPUT[:-2] + _layer("relu", "ReLU"),
     "a layer inside a layer (is the closing '}' of the layer before it missing?)", 6),
    # nesting
    ("nesting_2000_layers", "layer {\n" * 2000 + "}\n" * 2000, "a layer inside a layer", 2),
    ("nesting_rule_in_rule", INPUT + 'layer {\n  name: "deep"\n  type: "ReLU"\n'
     + "  include {\n" * 3 + "}\n" * 4, "'include' is not a field of Caffe's NetStateRule", 11),
    # unknown fields
    ("unknown_net_field", 'nmae: "corpus"\n' + INPUT, "Did you mean 'name'?", 1),
    ("unknown_layer_field", _conv("convolution_param { num_outptu: 3 kernel_size: 3 }"),
     "'num_outptu' is not a field of Caffe's ConvolutionParameter. Did you mean 'num_output'?", 12),
    ("field_one_level_too_high", _conv("num_output: 3"),
     "'num_output' is not a field of Caffe's LayerParameter; it goes inside convolution_param", 12),
    ("block_at_the_top_level", "convolution_param { num_output: 3 }\n" + INPUT,
     "'convolution_param' is not a field of Caffe's NetParameter", 1),
    ("fork_field_yolo_seg_param", INPUT + _layer("y", "YoloSeg", "yolo_seg_param { num: 1 }"),
     "'yolo_seg_param' is not a field of Caffe's LayerParameter: it exists only in the "
     "MobileNet-YOLO fork", 12),
    ("fork_field_wrong_type", INPUT + _layer("e", "DetectionEvaluate",
                                             'detection_evaluate_param { num_classes: "three" }'),
     "Couldn't parse integer: \"three\"", 12),
    ("solver_field_in_a_net", "base_lr: 0.1\n" + INPUT,
     "'layer' is not a field of Caffe's SolverParameter; it goes inside net_param", 2),
    # layer types
    ("type_yolo_seg_twice", INPUT + _layer("v", "YoloSeg")
     + _layer("y", "YoloSeg", bottom="v"), "layers 'v', 'y' have type 'YoloSeg'", 7),
    ("type_yolo_seg", INPUT + _layer("yolo", "YoloSeg"),
     "layer 'yolo' has type 'YoloSeg', which netspec does not implement", 7),
    ("type_misspelt", INPUT + _layer("c", "Convolutoin"), "did you mean 'Convolution'?", 7),
    ("type_lowercase", INPUT + _layer("r", "relu"), "did you mean 'ReLU'?", 7),
    ("layer_without_type", INPUT + 'layer {\n  name: "c"\n  bottom: "data"\n  top: "c"\n}\n',
     "layer 'c' has no type", 7),
    ("layer_with_empty_type", INPUT + _layer("e", ""), "layer 'e' has no type", 7),
    # values of the wrong type
    ("value_text_for_integer", _conv('convolution_param { num_output: "ten" kernel_size: 3 }'),
     "Couldn't parse integer: \"ten\"", 12),
    ("value_fraction_for_integer", _conv("convolution_param { num_output: 2.5 kernel_size: 3 }"),
     "Couldn't parse integer: 2.5", 12),
    ("value_negative_unsigned", _conv("convolution_param { num_output: -4 kernel_size: 3 }"),
     "Value out of range: -4", 12),
    ("value_trailing_letters", _conv("convolution_param { num_output: 10abc kernel_size: 3 }"),
     "Couldn't parse integer: 10abc", 12),
    ("value_text_for_float", INPUT + _layer("d", "Dropout", 'dropout_param { dropout_ratio: "0.5" }'),
     "Couldn't parse float", 12),
    ("value_not_a_bool", _conv("convolution_param { num_output: 2 kernel_size: 3 bias_term: maybe }"),
     'Expected "true" or "false"', 12),
    ("enum_no_such_value", INPUT + _layer("p", "Pooling", "pooling_param { pool: AVERAGE kernel_size: 2 }"),
     'Enum type "PoolingParameter.PoolMethod" has no value named AVERAGE', 12),
    ("enum_quoted", INPUT + _layer("p", "Pooling", 'pooling_param { pool: "MAX" kernel_size: 2 }'),
     'has no value named "MAX"', 12),
    ("enum_number_out_of_range", INPUT + _layer("p", "Pooling", "pooling_param { pool: 7 kernel_size: 2 }"),
     "has no value with number 7", 12),
    ("enum_phase_no_such_value", INPUT + _layer("r", "ReLU", "include { phase: VALIDATION }"),
     'Enum type "Phase" has no value named VALIDATION', 12),
    # huge numbers
    ("huge_unsigned", _conv("convolution_param { num_output: 99999999999999999999 kernel_size: 3 }"),
     "Value out of range: 99999999999999999999", 12),
    ("huge_int64_dim", INPUT.replace("dim: 2 dim", "dim: 99999999999999999999 dim"),
     "Value out of range: 99999999999999999999", 5),
    ("huge_float_is_inf", INPUT + _layer("d", "Dropout", "dropout_param { dropout_ratio: 1e999 }"),
     "dropout_param.dropout_ratio: Input should be less than 1 (got inf)", 7),
    ("huge_blob_shape", INPUT.replace("dim: 2 dim: 3 dim: 8 dim: 8", "dim: 9223372036854775807 dim: 3"),
     "a blob holds at most 2,147,483,647 (Caffe's limit)", 1),
    # graphs Caffe's Net::Init refuses, and so does netspec
    ("duplicate_top", INPUT + _layer("a", "ReLU", top="r") + _layer("b", "Sigmoid", top="r"),
     "top 'r' of layer 'b' is already produced by layer 'a'", 13),
    ("duplicate_top_in_a_test_stage", INPUT
     + _layer("a", "ReLU", 'include { phase: TEST stage: "s" }', top="r")
     + _layer("b", "ReLU", 'include { phase: TEST stage: "s" }', top="r"),
     "(TEST phase, stages s): top 'r' of layer 'b' is already produced by layer 'a'", 14),
    ("top_listed_twice", INPUT + _layer("s", "Slice", 'top: "a"', top="a"),
     "layer 's' lists top 'a' twice", 7),
    ("unknown_bottom", INPUT + _layer("a", "ReLU", bottom="nothere"),
     "layer 'a' reads bottom 'nothere', which no earlier layer in this phase produces", 7),
    ("input_dim_not_four", 'input: "data"\ninput_dim: 1\ninput_dim: 3\n' + _layer("r", "ReLU"),
     "input_dim must give 4 values per input", 2),
    ("input_shapes_fewer_than_inputs", 'input: "data"\ninput: "b"\ninput_shape { dim: 1 }\n'
     + _layer("r", "ReLU"), "2 inputs but 1 shapes", 3),
    ("no_layers", 'name: "corpus"\nforce_backward: true\n', "the net defines no layers", None),
    ("only_comments", "# a net file with nothing in it yet\n\n", "the file is empty", None),
    # legacy formats
    ("v0_unknown_type", V0_HEAD + 'layers {\n  layer {\n    name: "c"\n    type: "convv"\n  }\n'
     '  bottom: "data"\n  top: "c"\n}\n', "V0 layer 'c' has type 'convv', which Caffe's upgrade does "
     "not know", 7),
    ("v0_padding_into_relu", V0_HEAD + 'layers {\n  layer {\n    name: "pad"\n    type: "padding"\n'
     '    pad: 1\n  }\n  bottom: "data"\n  top: "p"\n}\nlayers {\n  layer {\n    name: "r"\n'
     '    type: "relu"\n  }\n  bottom: "p"\n  top: "r"\n}\n',
     "only conv and pool layers can absorb padding", 16),
    ("v0_unknown_bottom", V0_HEAD + 'layers {\n  layer {\n    name: "r"\n    type: "relu"\n  }\n'
     '  bottom: "nothere"\n  top: "r"\n}\n',
     "V0 layer 'r' reads blob 'nothere', which no earlier layer or input produces", 7),
    ("v0_unknown_field", 'name: "v0"\nlayers {\n  layer {\n    name: "c"\n    type: "conv"\n'
     "    num_outputs: 3\n  }\n}\n", "V0LayerParameter. Did you mean 'num_output'?", 6),
    ("v0_enum_no_such_value", 'name: "v0"\nlayers {\n  layer {\n    name: "p"\n    type: "pool"\n'
     "    pool: AVERAGE\n  }\n}\n", '"V0LayerParameter.PoolMethod" has no value named AVERAGE', 6),
    ("v1_type_misspelt", 'name: "v1"\nlayers {\n  name: "c"\n  type: CONVOLUTON\n}\n',
     '"V1LayerParameter.LayerType" has no value named CONVOLUTON', 4),
    ("v1_type_as_text", 'name: "v1"\nlayers {\n  name: "c"\n  type: "Convolution"\n}\n',
     'has no value named "Convolution"', 4),
    ("v1_unknown_field", 'name: "v1"\nlayers {\n  name: "c"\n  type: CONVOLUTION\n  blobs_lrr: 1\n}\n',
     "V1LayerParameter. Did you mean 'blobs_lr'?", 5),
    ("v1_and_current_layers", INPUT + 'layers {\n  name: "r"\n  type: RELU\n  bottom: "data"\n'
     '  top: "data"\n}\n', "the file has both 'layer' (current) and 'layers' (V1) entries", 7),
    ("v1_layer_without_type", V1_HEAD + 'layers {\n  name: "r"\n  bottom: "data"\n  top: "r"\n}\n',
     "layer 'r' has no type", 7),
    ("v1_duplicate_top", V1_HEAD + 'layers {\n  name: "a"\n  type: RELU\n  bottom: "data"\n  top: "r"\n'
     '}\nlayers {\n  name: "b"\n  type: SIGMOID\n  bottom: "data"\n  top: "r"\n}\n',
     "top 'r' of layer 'b' is already produced by layer 'a'", 13),
]

#: (name, text, phrase, line in ``text`` or None): solvers, run as `netspec convert FILE -o
#: {tmp}/solver.yaml` (which would also write the nets they name or hold)
PROTOTXT_SOLVERS = [
    ("solver_type_no_such_value", NET_REF + "base_lr: 0.01\nsolver_type: ADAMW\n",
     'Enum type "SolverParameter.SolverType" has no value named ADAMW', 3),
    ("solver_base_lr_text", NET_REF + 'base_lr: "0.01"\n', "Couldn't parse float: \"0.01\"", 2),
    ("solver_type_and_solver_type", NET_REF + 'solver_type: SGD\ntype: "Adam"\nbase_lr: 0.01\n',
     "the solver sets both solver_type (old enum) and type", 2),
    ("solver_type_unknown", NET_REF + 'type: "Adamax"\nbase_lr: 0.01\n', "'Adamax' is not a valid value", 2),
    ("solver_regularization_l3", NET_REF + 'base_lr: 0.01\nweight_decay: 0.1\nregularization_type: "L3"\n',
     "regularization_type 'L3' is not one of Caffe's (L1, L2)", 4),
    ("solver_base_lr_negative", NET_REF + "base_lr: -0.01\n",
     "base_lr: must be a finite number > 0, got -0.01", 2),
    ("solver_base_lr_inf", NET_REF + "base_lr: 1e999\n", "base_lr: must be a finite number > 0, got inf", 2),
    ("solver_max_iter_negative", NET_REF + "base_lr: 0.01\nmax_iter: -5\n",
     "max_iter: must be >= 0, got -5", 3),
    ("solver_lr_policy_unknown", NET_REF + 'base_lr: 0.01\nlr_policy: "cosine"\n',
     "lr_policy: 'cosine' is not a valid value", 3),
    ("solver_unknown_field", NET_REF + "base_lr: 0.01\nbase_lrr: 0.1\n", "Did you mean 'base_lr'?", 3),
    ("solver_several_weights", NET_REF + 'base_lr: 0.01\nweights: "a.caffemodel"\nweights: "b.caffemodel"\n',
     "solver field 'weights' lists several files", 3),
    ("solver_net_and_net_param", NET_REF + 'net_param {\n  layer {\n    name: "a"\n    type: "ReLU"\n'
     "  }\n}\nbase_lr: 0.1\n", "the solver gives both 'net' and 'net_param'", 1),
    ("solver_inline_net_fork_type", 'base_lr: 0.01\nnet_param {\n  layer {\n    name: "p"\n'
     '    type: "YoloSeg"\n  }\n}\n', "net_param: cannot convert this Caffe net to netspec YAML", 2),
    ("solver_names_a_bad_net", 'net: "type_yolo_seg.prototxt"\nbase_lr: 0.01\n',
     "net of solver_names_a_bad_net.prototxt: cannot convert this Caffe net", None),
    ("solver_test_net_is_bad", 'train_net: "../support/convert_net.prototxt"\n'
     'test_net: "unknown_bottom.prototxt"\ntest_iter: 1\ntest_interval: 10\nbase_lr: 0.01\n',
     "test_net of solver_test_net_is_bad.prototxt: the net does not build", None),
    ("solver_names_itself", 'net: "solver_names_itself.prototxt"\nbase_lr: 0.01\n',
     "this is a solver file, not a net", None),
    ("solver_net_is_a_folder", 'net: "../support"\nbase_lr: 0.01\n',
     "'net' names '../support', which is a folder, not a net file", 1),
]


def prototxt_cases(root: Path) -> list[Case]:
    """Caffe text files ``netspec convert`` must refuse, each with one problem: text-format
    syntax, unknown fields and layer types (Caffe forks' too), values of the wrong type, huge
    numbers, graphs Caffe refuses, legacy V0/V1 nets, files that are no prototxt, and solvers
    (bad fields, or naming a bad net). The output goes to ``{tmp}``, which must stay empty; a
    solver's nets would be written beside them, so nothing may be written before every part
    has converted."""
    folder = fresh(root / BASE / "prototxt")
    (root / SUPPORT / "convert_net.prototxt").write_text(
        "# The net the bad solvers of tests/bad_inputs/prototxt name (made by make_corpus.py).\n"
        + CONVERT_NET)
    cases = []

    def add(name: str, data: str | bytes, expect: str, line: int | None, command: str) -> None:
        path = folder / f"{name}.prototxt"
        if isinstance(data, str):      # a comment saying what is wrong; lines move down by one
            data = f"# bad input (tests/bad_inputs/make_corpus.py): {expect}\n{data}".encode()
            line = None if line is None else line + 1
        path.write_bytes(data)
        cases.append(Case("prototxt", name, BASE / "prototxt" / path.name, command, expect, line))

    net = "netspec convert {file} -o {tmp}/out.yaml"
    solver = "netspec convert {file} -o {tmp}/solver.yaml"
    for name, text, expect, line in PROTOTXT_NETS:
        add(name, text, expect, line, net)
    for name, text, expect, line in PROTOTXT_SOLVERS:
        add(name, text, expect, line, solver)
    # files that are no UTF-8 text prototxt (no header comment: the bytes are the case)
    add("empty", b"", "the file is empty", None, net)
    add("binary_garbage", np.random.default_rng(1).bytes(2000),
        "this is a binary file, not a text .prototxt", None, net)
    add("caffemodel_renamed", caffemodel_bytes(tiny_params()),
        "this is a binary Caffe .caffemodel (weights, 2 layers), not a text .prototxt", None, net)
    add("latin1_comment", (INPUT + "# r\xe9seau de test\n" + _layer("r", "ReLU")).encode("latin-1"),
        "not UTF-8 text: byte 0xe9 at column 4", 7, net)
    add("utf16", INPUT.encode("utf-16"), "this is UTF-16 text; a .prototxt is UTF-8", None, net)
    add("byte_order_mark", b"\xef\xbb\xbf" + INPUT.encode(), "starts with a byte-order mark", 1, net)
    return cases


# -- search journals: `netspec search --storage FILE` must refuse them, unchanged --------------
SEARCH_PARAM = "base_lr=loguniform:1e-4:1e-1"
#: the settings `netspec search` stores in a study, as the journal cases' command gives them
SEARCH_SETTINGS = {"params": [SEARCH_PARAM], "sets": [], "epochs": 1, "val_fraction": 0.2,
                   "seed": 0, "metric": "acc", "direction": "maximize", "solver": "search_solver.yaml"}


def _journal_ops(settings: dict | None = None) -> list[dict]:
    """The operations of a journal holding study 'search_solver' with one finished trial, as a
    1-trial search writes them (fixed worker id and times, so the corpus does not change)."""
    w, t0, t1 = "corpus-worker-1", "2025-01-01T00:00:00.000000+00:00", "2025-01-01T00:00:01.000000+00:00"
    dist = json.dumps({"name": "FloatDistribution",
                       "attributes": {"step": None, "low": 0.0001, "high": 0.1, "log": True}})
    return [
        {"op_code": 0, "worker_id": w, "study_name": "search_solver", "directions": [2]},
        {"op_code": 2, "worker_id": w, "study_id": 0,
         "user_attr": {"netspec_search": settings or SEARCH_SETTINGS}},
        {"op_code": 4, "worker_id": w, "study_id": 0, "datetime_start": t0, "state": 0,
         "value": None, "values": None, "distributions": {}, "params": {},
         "user_attrs": {"host": "corpus", "pid": 1, "worker": "corpus:1"}, "system_attrs": {},
         "intermediate_values": {}},
        {"op_code": 5, "worker_id": w, "trial_id": 0, "param_name": "base_lr",
         "param_value_internal": 0.004, "distribution": dist},
        {"op_code": 7, "worker_id": w, "trial_id": 0, "step": 1, "intermediate_value": 0.75},
        {"op_code": 8, "worker_id": w, "trial_id": 0, "user_attr": {"iterations": 4}},
        {"op_code": 6, "worker_id": w, "trial_id": 0, "state": 1, "values": [0.75],
         "datetime_complete": t1},
    ]


def _journal(ops: list) -> bytes:
    return "".join(json.dumps(op, separators=(",", ":")) + "\n" for op in ops).encode()


def journal_cases(root: Path) -> list[Case]:
    """Search journals ``netspec search`` must refuse before it writes anything (the journal
    stays as it is, ``{tmp}`` stays empty): damaged lines, files that are no journal, a study
    with other settings, a folder or a file's child as the journal, a path as the study name.
    Each case is ``journal/<case>/search.journal``; the search would train the tiny net of
    ``support/`` (one trial, one epoch)."""
    folder = fresh(root / BASE / "journal")
    search = (f"netspec search {SEARCH_SOLVER_FILE} --param {SEARCH_PARAM} --trials 1 --epochs 1 "
              "--storage {file} --out {tmp}/out")
    good = _journal(_journal_ops())
    lines = good.split(b"\n")             # 7 operations, then b""
    cases = []
    not_an_op = "this line is not an operation of an Optuna journal"

    def add(name: str, data: bytes | None, expect: str, line: int | None = None,
            command: str = search, file: str = "search.journal") -> None:
        path = folder / name / file
        path.parent.mkdir(parents=True)
        if data is None:                   # the journal is a folder (git keeps a file in it)
            path.mkdir()
            (path / "README").write_text("A folder named like a search journal (a bad input).\n")
        else:
            path.write_bytes(data)
        cases.append(Case("journal", name, BASE / "journal" / name / file, command, expect, line))

    add("cut_off_last_line", good[:-40], "its last line is cut off, as a worker killed while "
        "writing leaves it", 7)
    add("zeros_after_last_line", good + bytes(64), "its last line is cut off", 8)
    damaged = list(lines)
    damaged[2] = damaged[2][:50]
    add("damaged_middle_line", b"\n".join(damaged), f"{not_an_op} (not JSON)", 3)
    add("blank_middle_line", b"\n".join(lines[:4] + [b""] + lines[4:]),
        "this line is blank, and Optuna stops at a blank line", 5)
    add("blank_last_line", good + b"\n", "this line is blank", 8)
    add("yaml_solver_as_journal", (root / SEARCH_SOLVER_FILE).read_bytes(), f"{not_an_op} (not JSON)", 1)
    add("json_object_not_an_operation", b'{"study": "search_solver", "trials": []}\n',
        f"{not_an_op} (JSON, but no object with an op_code)", 1)
    add("json_array", b"[0, 1, 2]\n", f"{not_an_op} (JSON, but no object with an op_code)", 1)
    add("op_code_unknown", _journal([{"op_code": 99, "worker_id": "w"}]),
        "op_code 99 is none of Optuna's (0 to 10)", 1)
    add("op_code_text", _journal([{"op_code": "create_study", "worker_id": "w"}]),
        'op_code "create_study" is none of Optuna\'s', 1)
    add("op_without_its_fields", _journal([{"op_code": 0}]),
        "op_code 0 without 'worker_id', 'study_name', 'directions'", 1)
    ops = _journal_ops()
    ops[5] = dict(ops[5], user_attr={"iterations": 4, "wall_s": 0.1})
    add("op_with_two_attributes", _journal(ops), "op_code 8 sets one attribute", 6)
    ops = _journal_ops()
    ops[0] = dict(ops[0], directions=[7])
    add("study_direction_unknown", _journal(ops),
        "Optuna cannot replay the search journal (ValueError: 7 is not a valid StudyDirection)")
    add("png_image", b"\x89PNG\r\n\x1a\n" + np.random.default_rng(2).bytes(300),
        f"{not_an_op} (not UTF-8 text)", 1)
    latin1 = list(lines)
    latin1[5] = latin1[5].replace(b'"iterations"', '"itérations"'.encode("latin-1"))
    add("latin1_line", b"\n".join(latin1), f"{not_an_op} (not UTF-8 text)", 6)
    add("study_with_other_settings", _journal(_journal_ops(dict(SEARCH_SETTINGS, epochs=3))),
        "was created with other settings (epochs: 3, now 1)")
    add("study_with_other_params", _journal(_journal_ops(dict(
        SEARCH_SETTINGS, params=["base_lr=uniform:0.001:0.1"]))), "was created with other settings")
    add("journal_is_a_folder", None, "this is a folder, not a search journal file")
    add("journal_under_a_file", b"a file, where the search journal's folder should be\n",
        "cannot put the search journal there", command=search.replace("{file}", "{file}/search.journal"),
        file="not_a_folder")
    add("study_name_is_a_path", good, "the study name '../x' is not a plain name",
        command=search + " --study ../x")
    add("study_name_is_the_journal", good, "is not a plain name",
        command=search.replace("--storage {file}", "--study {file}"))
    add("sqlite_not_a_database", b"this is a text file, not an SQLite database\n" * 20,
        "cannot open the database: (sqlite3.DatabaseError) file is not a database",
        command=search.replace("--storage {file}", "--storage sqlite:///{file}"), file="search.db")
    return cases


#: kind -> function writing that kind's files and returning its cases
KINDS = {"solver": solver_cases, "state": state_cases, "weights": weights_cases,
         "prototxt": prototxt_cases, "journal": journal_cases}


def main(kinds: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    write_support(ROOT)
    rows: list[list[str]] = []
    if MANIFEST.exists():          # keep the rows of kinds this run does not make
        # plain tab-separated text, as tests/test_bad_inputs.py reads it: no quoting, so a
        # phrase may hold quotes ("Expected \"}\"") as they are
        rows = [r + [""] * (len(COLUMNS) - len(r))
                for r in (line.split("\t") for line in MANIFEST.read_text().splitlines()[1:])
                if len(r) > 1 and r[1] not in kinds]
    for kind in kinds:
        rows += [c.row() for c in KINDS[kind](ROOT)]
    ids = [r[0] for r in rows]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise SystemExit(f"duplicate case ids: {sorted(dupes)}")
    bad = [r[0] for r in rows if any("\t" in v or "\n" in v for v in r)]
    if bad:
        raise SystemExit(f"tabs or newlines in the manifest fields of {bad}")
    rows.sort(key=lambda r: r[0])
    MANIFEST.write_text("".join("\t".join(r) + "\n" for r in [list(COLUMNS), *rows]))
    counts = {k: sum(r[1] == k for r in rows) for k in sorted({r[1] for r in rows})}
    print(f"wrote {MANIFEST.relative_to(ROOT)}: {len(rows)} cases {counts}")


if __name__ == "__main__":
    main(sys.argv[1:] or list(KINDS))
