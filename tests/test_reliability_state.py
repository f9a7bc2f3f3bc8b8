"""Weights, snapshots and solver files under hostile input: every bad file is one NetspecError
naming the file and what is wrong in it, and nothing is ever loaded into the wrong place.

* weights: only Caffe's legacy 4-D shapes are reshaped (``fit_blob``), everywhere weights load;
* export: a .caffemodel is checked against its own net before anything is written;
* solver files: every field's range is checked when the file is read;
* snapshots: the folder is checked before training, failed writes name the path and the state is
  rescued, a state and its weights file are tied by a checksum, corrupt states are refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from netspec.backend import Backend
from netspec.cli import main
from netspec.errors import NetspecError, SnapshotError
from netspec.log import CaffeLog
from netspec.net import Net
from netspec.caffe.blob_shape import fit_blob
from netspec.snapshot import load_npz, load_weights, save_npz
from netspec.solvers import Solver
from netspec.spec import parse_net
from netspec.spec.solver import SolverParameter

F32 = Backend(np, np.float32)


# -- a tiny net with a convolution and an InnerProduct -----------------------------------------
def tiny_net(tmp_path, limit: int = 0) -> dict:
    """Data (N, 1, 4, 4) -> Convolution 2×3×3 -> InnerProduct 3 -> SoftmaxWithLoss (+Accuracy)."""
    src = tmp_path / "d.npz"
    if not src.exists():
        rng = np.random.default_rng(0)
        np.savez(src, data=rng.standard_normal((24, 1, 4, 4)).astype(np.float32),
                 label=rng.integers(0, 3, 24))
    return {"name": "tiny", "layer": [
        {"name": "d", "type": "Data", "top": ["x", "y"],
         "data_param": {"source": str(src), "batch_size": 5, "shuffle": True, "limit": limit}},
        {"name": "conv1", "type": "Convolution", "bottom": "x", "top": "c",
         "convolution_param": {"num_output": 2, "kernel_size": 3, "weight_filler": {"type": "xavier"}}},
        {"name": "ip1", "type": "InnerProduct", "bottom": "c", "top": "z",
         "inner_product_param": {"num_output": 3, "weight_filler": {"type": "xavier"}}},
        {"name": "acc", "type": "Accuracy", "bottom": ["z", "y"], "top": "acc",
         "include": {"phase": "TEST"}},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["z", "y"], "top": "loss"}]}


def build(tmp_path, phase: str = "TRAIN") -> Net:
    return Net(parse_net(tiny_net(tmp_path)), phase, F32, np.random.default_rng(0))


def solver(tmp_path, rule: str = "SGD", limit: int = 0, **extra) -> Solver:
    settings = {"net": "x", "type": rule, "base_lr": 0.05, "momentum": 0.9, "lr_policy": "fixed",
                "random_seed": 5, "snapshot_prefix": str(tmp_path / "snap" / "tiny"),
                "max_iter": 4, **extra}
    sp = SolverParameter.model_validate(settings)
    return Solver(sp, backend=F32, net_param=parse_net(tiny_net(tmp_path, limit)),
                  log=CaffeLog(quiet=True))


def arrays_of(net: Net) -> dict[str, np.ndarray]:
    return {k: p.data.copy() for k, p in net.named_params().items()}


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# == 1. weights are reshaped only by Caffe's legacy rule =======================================
def test_fit_blob_allows_only_legacy_leading_ones():
    w = np.arange(24, dtype=np.float32).reshape(3, 8)
    assert fit_blob("ip1/0", w, (3, 8)) is w
    np.testing.assert_array_equal(fit_blob("ip1/0", w.reshape(1, 1, 3, 8), (3, 8)), w)
    np.testing.assert_array_equal(fit_blob("ip1/1", np.ones((1, 1, 1, 3)), (3,)), np.ones(3))
    for bad in (w.T, w.reshape(1, 3, 8), w.reshape(2, 12), w.reshape(1, 1, 8, 3), w.reshape(24)):
        with pytest.raises(SnapshotError, match=r"blob 'ip1/0' has shape .* but the net expects \(3, 8\)"):
            fit_blob("ip1/0", bad, (3, 8), "w.npz")


def test_transposed_weights_are_refused_with_blob_and_shapes(tmp_path):
    net = build(tmp_path)
    good = arrays_of(net)
    bad = dict(good, **{"ip1/0": np.ascontiguousarray(good["ip1/0"].T)})
    np.savez(tmp_path / "wT.npz", **bad)
    before = arrays_of(net)
    with pytest.raises(SnapshotError) as e:
        load_weights(net, tmp_path / "wT.npz")
    msg = str(e.value)
    assert "wT.npz" in msg and "'ip1/0'" in msg and "(8, 3)" in msg and "(3, 8)" in msg
    for k, v in arrays_of(net).items():          # nothing was copied before the check
        np.testing.assert_array_equal(v, before[k])


def test_legacy_4d_weights_load_with_their_values(tmp_path):
    net = build(tmp_path)
    good = arrays_of(net)
    legacy = {k: v.reshape((1,) * (4 - v.ndim) + v.shape) for k, v in good.items()}
    np.savez(tmp_path / "legacy.npz", **legacy)
    other = Net(parse_net(tiny_net(tmp_path)), "TRAIN", F32, np.random.default_rng(9))
    load_weights(other, tmp_path / "legacy.npz")
    for k, v in arrays_of(other).items():
        np.testing.assert_array_equal(v, good[k])


def test_fit_to_model_refuses_same_count_other_shape():
    from netspec.caffe.caffemodel import fit_to_model

    arrays = {"ip1/0": np.zeros((8, 3), np.float32), "ip1/1": np.zeros((1, 1, 1, 3), np.float32)}
    with pytest.raises(SnapshotError, match=r"'ip1/0' has shape \(8, 3\).*expects \(3, 8\)"):
        fit_to_model(arrays, {"ip1/0": (3, 8), "ip1/1": (3,)}, "m.caffemodel")
    arrays["ip1/0"] = np.zeros((1, 1, 3, 8), np.float32)
    fitted, _, _, reshaped = fit_to_model(arrays, {"ip1/0": (3, 8), "ip1/1": (3,)})
    assert reshaped == ["ip1/0", "ip1/1"] and fitted["ip1/0"].shape == (3, 8)


def test_netspec_test_refuses_transposed_lenet_weights(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    gold = load_npz(root / "tests/golden/caffe/lenet_trained/lenet_iter_10000_weights.npz")
    gold["ip1/0"] = np.ascontiguousarray(gold["ip1/0"].T)
    np.savez(tmp_path / "wT.npz", **gold)
    r = invoke("test", "--model", root / "models/lenet.yaml", "--weights", tmp_path / "wT.npz",
               "--iterations", 1)
    assert r.exit_code == 1, r.output
    assert "wT.npz" in r.output and "'ip1/0'" in r.output and "(800, 500)" in r.output
    assert "accuracy" not in r.output


def test_resume_refuses_a_transposed_weights_file(tmp_path):
    s = solver(tmp_path)
    s.solve(max_iter=2)
    state = s.snapshot()
    weights = tmp_path / "snap" / "tiny_iter_2.weights.npz"
    w = load_npz(weights)
    w["ip1/0"] = np.ascontiguousarray(w["ip1/0"].T)
    save_npz(weights, w)
    rewrite_checksum(state, weights)
    with pytest.raises(SnapshotError) as e:
        solver(tmp_path).restore(state)
    assert str(e.value).startswith(f"{weights}: blob 'ip1/0' has shape (8, 3) in the file but the "
                                   "net expects (3, 8)")
    assert str(e.value).endswith(f"(the weights file of the solver state {state})")


def rewrite_checksum(state, weights) -> None:
    """Make ``state`` name ``weights`` as its own (as if the two had been written together), so
    that the checks after the checksum are what a test sees."""
    import hashlib

    flat = load_npz(state)
    if "weights_sha256" in flat:
        flat["weights_sha256"] = np.array(hashlib.sha256(weights.read_bytes()).hexdigest())
        save_npz(state, flat)


# == 5. export checks the weights against its own net before writing ===========================
def tiny_yaml(tmp_path):
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_net(tmp_path), sort_keys=False))
    return path


@pytest.mark.parametrize("damage", ["transposed", "extra_blob", "missing_bias", "blobs_for_relu"])
def test_export_refuses_weights_that_do_not_fit_and_writes_nothing(tmp_path, damage):
    pytest.importorskip("google.protobuf")
    from netspec.caffe.export import export_net

    net_yaml = tiny_yaml(tmp_path)
    w = arrays_of(build(tmp_path))
    expect = {"transposed": r"blob 'ip1/0' has shape \(8, 3\) in the file but the net expects \(3, 8\)",
              "extra_blob": r"layer 'ip1' has blobs \[0, 1, 2\] in the weights but the net's layer has \[0, 1\]",
              "missing_bias": r"layer 'conv1' has blobs \[0\] in the weights but the net's layer has \[0, 1\]",
              "blobs_for_relu": r"layer 'acc' has blobs \[0\] in the weights but the net's layer has none"}
    if damage == "transposed":
        w["ip1/0"] = np.ascontiguousarray(w["ip1/0"].T)
    elif damage == "extra_blob":
        w["ip1/2"] = np.zeros(3, np.float32)
    elif damage == "missing_bias":
        del w["conv1/1"]
    else:
        w["acc/0"] = np.zeros(3, np.float32)
    np.savez(tmp_path / "w.npz", **w)
    r = invoke("export", net_yaml, "--weights", tmp_path / "w.npz", "-o", tmp_path / "o.prototxt",
               "--caffemodel", tmp_path / "o.caffemodel")
    assert r.exit_code == 1 and "w.npz" in r.output, r.output
    import re
    assert re.search(expect[damage], r.output), r.output
    assert not (tmp_path / "o.caffemodel").exists() and not (tmp_path / "o.prototxt").exists()
    with pytest.raises(NetspecError):
        export_net(net_yaml, tmp_path / "o.prototxt", tmp_path / "w.npz", tmp_path / "o.caffemodel")


def test_export_writes_legacy_weights_in_the_nets_shapes(tmp_path):
    pytest.importorskip("google.protobuf")
    from netspec.caffe.caffemodel import read_caffemodel_arrays

    net_yaml = tiny_yaml(tmp_path)
    good = arrays_of(build(tmp_path))
    np.savez(tmp_path / "legacy.npz", **{k: v.reshape((1,) * (4 - v.ndim) + v.shape)
                                         for k, v in good.items()})
    r = invoke("export", net_yaml, "--weights", tmp_path / "legacy.npz", "-o", tmp_path / "o.prototxt",
               "--caffemodel", tmp_path / "o.caffemodel")
    assert r.exit_code == 0, r.output
    back = read_caffemodel_arrays(tmp_path / "o.caffemodel")
    assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in good.items()}
    for k, v in good.items():
        np.testing.assert_array_equal(back[k], v)


# == 4. every solver field's range is checked when the file is read ============================
#: (case id, fields written after `net:` and `base_lr:`, the field blamed, a phrase of the message)
SOLVER_RANGE_CASES = [
    ("base_lr_zero", {"base_lr": 0}, "base_lr", "must be a finite number > 0"),
    ("base_lr_negative", {"base_lr": -0.1}, "base_lr", "must be a finite number > 0"),
    ("base_lr_inf", {"base_lr": ".inf"}, "base_lr", "must be a finite number > 0, got inf"),
    ("base_lr_nan", {"base_lr": ".nan"}, "base_lr", "must be a finite number > 0, got nan"),
    ("momentum_one", {"momentum": 1.0}, "momentum", "must be in [0, 1), got 1.0"),
    ("momentum_above_one", {"momentum": 1.5}, "momentum", "must be in [0, 1), got 1.5"),
    ("momentum_negative", {"momentum": -0.1}, "momentum", "must be in [0, 1)"),
    ("momentum2_above_one", {"type": "Adam", "momentum": 0.9, "momentum2": 1.5}, "momentum2",
     "must be in [0, 1), got 1.5"),
    ("momentum2_negative", {"type": "Adam", "momentum2": -0.5}, "momentum2", "must be in [0, 1)"),
    ("rms_decay_one", {"type": "RMSProp", "rms_decay": 1.0}, "rms_decay", "must be in [0, 1)"),
    ("rms_decay_negative", {"type": "RMSProp", "rms_decay": -0.1}, "rms_decay", "must be in [0, 1)"),
    ("delta_zero", {"type": "Adam", "momentum": 0.9, "delta": 0}, "delta", "must be a finite number > 0"),
    ("delta_negative", {"type": "AdaGrad", "delta": -1e-8}, "delta", "must be a finite number > 0"),
    ("weight_decay_negative", {"weight_decay": -0.001, "regularization_type": "L2"},
     "weight_decay", "must be a finite number >= 0"),
    ("weight_decay_inf", {"weight_decay": ".inf", "regularization_type": "L2"}, "weight_decay",
     "must be a finite number >= 0"),
    ("clip_gradients_zero", {"clip_gradients": 0}, "clip_gradients", "0 would scale every gradient"),
    ("clip_gradients_nan", {"clip_gradients": ".nan"}, "clip_gradients", "must be > 0, or negative"),
    ("gamma_inf", {"lr_policy": "step", "gamma": ".inf", "stepsize": 10}, "gamma", "must be a finite number"),
    ("power_nan", {"lr_policy": "poly", "power": ".nan", "max_iter": 10}, "power", "must be a finite number"),
    ("max_iter_negative", {"max_iter": -1}, "max_iter", "must be >= 0"),
    ("iter_size_zero", {"iter_size": 0}, "iter_size", "must be >= 1"),
    ("display_negative", {"display": -1}, "display", "must be >= 0"),
    ("average_loss_zero", {"average_loss": 0}, "average_loss", "must be >= 1"),
    ("test_interval_negative", {"test_interval": -5}, "test_interval", "must be >= 0"),
    ("test_iter_zero", {"test_iter": 0, "test_interval": 10}, "test_iter", "each test_iter must be >= 1"),
    ("snapshot_negative", {"snapshot": -100}, "snapshot", "must be >= 0"),
    ("stepsize_zero", {"lr_policy": "step", "gamma": 0.1, "stepsize": 0}, "stepsize", "must be > 0"),
    ("device_id_negative", {"device_id": -1}, "device_id", "must be >= 0"),
    ("step_gamma_negative", {"lr_policy": "step", "gamma": -0.5, "stepsize": 10}, "gamma",
     "must be > 0 for lr_policy 'step'"),
    ("exp_gamma_negative", {"lr_policy": "exp", "gamma": -0.9}, "gamma",
     "alternate in sign"),
    ("exp_gamma_zero", {"lr_policy": "exp", "gamma": 0}, "gamma", "must be > 0 for lr_policy 'exp'"),
    ("multistep_gamma_negative", {"lr_policy": "multistep", "gamma": -0.1, "stepvalue": [5, 10]},
     "gamma", "must be > 0 for lr_policy 'multistep'"),
    ("inv_gamma_negative", {"lr_policy": "inv", "gamma": -1, "power": 0.75}, "gamma",
     "must be >= 0 for lr_policy 'inv'"),
    ("poly_power_negative", {"lr_policy": "poly", "power": -1, "max_iter": 100}, "power",
     "must be >= 0 for lr_policy 'poly'"),
    ("poly_max_iter_zero", {"lr_policy": "poly", "power": 1, "max_iter": 0}, "max_iter", "max_iter must be > 0"),
    ("multistep_decreasing", {"lr_policy": "multistep", "gamma": 0.1, "stepvalue": [100, 50]},
     "stepvalue", "must be increasing"),
    ("multistep_repeated", {"lr_policy": "multistep", "gamma": 0.1, "stepvalue": [100, 100]},
     "stepvalue", "must be increasing"),
    ("multistep_negative", {"lr_policy": "multistep", "gamma": 0.1, "stepvalue": [-10, 100]},
     "stepvalue", "must be increasing iterations >= 0"),
    ("exp_overflow", {"lr_policy": "exp", "gamma": 1.5, "max_iter": 5000}, "gamma",
     "overflows to inf"),
    ("step_overflow", {"lr_policy": "step", "gamma": 10, "stepsize": 1, "max_iter": 400}, "gamma",
     "overflows to inf"),
    ("multistep_overflow", {"lr_policy": "multistep", "gamma": 1e200, "stepvalue": [1, 2, 3],
                            "max_iter": 10}, "gamma", "overflows to inf"),
    ("inv_overflow", {"lr_policy": "inv", "gamma": 1, "power": -200, "max_iter": 10**6}, "power",
     "overflows to inf"),
]


def solver_yaml(path, fields: dict) -> str:
    """A solver file: net and base_lr first, then ``fields`` one per line (``base_lr`` given in
    ``fields`` replaces the default)."""
    lines = {"net": "net.yaml", "base_lr": 0.01, **fields}
    text = "".join(f"{k}: {list(v) if isinstance(v, list) else v}\n" for k, v in lines.items())
    path.write_text(text)
    return text


@pytest.mark.parametrize("case,fields,field,phrase", SOLVER_RANGE_CASES,
                         ids=[c[0] for c in SOLVER_RANGE_CASES])
def test_solver_field_ranges_are_checked_with_file_and_line(tmp_path, case, fields, field, phrase):
    from netspec.errors import SpecError
    from netspec.spec import load_solver

    path = tmp_path / f"{case}.yaml"
    text = solver_yaml(path, fields)
    with pytest.raises(SpecError) as e:
        load_solver(path)
    err = e.value
    assert err.field == field and phrase in err.message, str(err)
    assert err.file == str(path)
    expected_line = next(i for i, line in enumerate(text.splitlines(), 1)
                         if line.startswith(f"{field}:"))
    assert err.line == expected_line, str(err)
    assert str(err).startswith(f"{path}:{expected_line}: {field}: ")


def test_solver_range_override_names_the_set(tmp_path):
    from netspec.errors import SpecError
    from netspec.spec import load_solver
    from netspec.spec.overrides import split_sets

    path = tmp_path / "s.yaml"
    solver_yaml(path, {})
    sets, _ = split_sets(["momentum=1.5"])
    with pytest.raises(SpecError, match=r"--set momentum=1.5: must be in \[0, 1\)"):
        load_solver(path, sets)


@pytest.mark.parametrize("fields", [
    {"momentum": 0.99, "clip_gradients": -1, "weight_decay": 0},
    {"type": "Adam", "momentum": 0.9, "momentum2": 0.0, "delta": 1e-8},
    {"lr_policy": "exp", "gamma": 1.001, "max_iter": 1000},
    {"lr_policy": "inv", "gamma": 0, "power": 0.75, "max_iter": 10},
    {"lr_policy": "inv", "gamma": 1e-4, "power": -0.5, "max_iter": 1000},
    {"lr_policy": "poly", "power": 0, "max_iter": 10},
    {"lr_policy": "sigmoid", "gamma": -0.5, "stepsize": 100, "max_iter": 100000},
    {"lr_policy": "multistep", "gamma": 0.1, "stepvalue": [0, 10, 20]},
    {"clip_gradients": 35, "test_iter": 1, "test_interval": 0},
])
def test_solver_ranges_accept_what_caffe_means(tmp_path, fields):
    from netspec.spec import load_solver

    path = tmp_path / "s.yaml"
    solver_yaml(path, fields)
    load_solver(path)


def test_learning_rate_past_its_range_is_inf_or_zero_not_an_exception():
    from netspec.solvers.lr_policy import learning_rate

    sp = SolverParameter.model_validate({"net": "x", "lr_policy": "exp", "gamma": 1.5, "max_iter": 10})
    assert learning_rate(sp, 10) == 0.01 * 1.5 ** 10 and learning_rate(sp, 5000) == float("inf")
    sp = SolverParameter.model_validate({"net": "x", "lr_policy": "sigmoid", "gamma": 1.0,
                                         "stepsize": 2000, "max_iter": 10})
    assert learning_rate(sp, 0) == 0.0 and learning_rate(sp, 4000) == 0.01


# == 7. the snapshot folder is checked before training; failed writes name the path ============
def unwritable_prefixes(tmp_path):
    """Prefixes no process can write, as root too: under /proc, and under a file."""
    (tmp_path / "afile").write_text("not a folder")
    return [("/proc/netspec/lenet", "/proc/netspec"),
            (str(tmp_path / "afile" / "sub" / "tiny"), f"{tmp_path / 'afile'} is a file, not a folder")]


def test_unwritable_snapshot_folder_stops_before_training(tmp_path):
    for prefix, phrase in unwritable_prefixes(tmp_path):
        s = solver(tmp_path, snapshot_prefix=prefix, max_iter=300)
        with pytest.raises(SnapshotError) as e:
            s.solve()
        assert phrase in str(e.value) and f"snapshot_prefix '{prefix}'" in str(e.value)
        assert e.value.field == "snapshot_prefix"
        assert s.iter == 0                      # failed before the first iteration


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root writes into read-only folders; the /proc and file cases cover it")
def test_read_only_snapshot_folder_stops_before_training(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        s = solver(tmp_path, snapshot_prefix=str(folder / "tiny"))
        with pytest.raises(SnapshotError, match="Permission denied"):
            s.solve()
        assert s.iter == 0
    finally:
        folder.chmod(0o700)


def test_no_probe_when_the_run_never_snapshots(tmp_path):
    s = solver(tmp_path, snapshot_prefix="/proc/netspec/lenet", snapshot=0,
               snapshot_after_train=False, max_iter=2)
    s.solve()
    assert s.iter == 2


def test_cli_train_with_unwritable_snapshot_prefix(tmp_path):
    import yaml

    (tmp_path / "net.yaml").write_text(yaml.safe_dump(tiny_net(tmp_path)))
    (tmp_path / "s.yaml").write_text("net: net.yaml\nbase_lr: 0.01\nmax_iter: 300\nsnapshot_prefix: snap/t\n")
    r = invoke("train", tmp_path / "s.yaml", "--set", "snapshot_prefix=/proc/netspec/lenet")
    assert r.exit_code == 1
    assert "cannot write snapshots to /proc/netspec" in r.output and "Nothing was trained" in r.output
    assert "Iteration" not in r.output and "Traceback" not in r.output


def full_disk_under(monkeypatch, folder):
    """Make every write into ``folder`` fail as a full disk does (ENOSPC)."""
    import errno

    from netspec import files as files_module

    real = files_module._write_and_sync

    def write(f, payload, path):
        if str(path).startswith(str(folder)):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(f, payload, path)
    monkeypatch.setattr(files_module, "_write_and_sync", write)


def test_failed_write_names_the_path_and_leaves_no_temp_file(tmp_path, monkeypatch):
    from netspec.files import atomic_write_bytes

    full_disk_under(monkeypatch, tmp_path)
    with pytest.raises(SnapshotError) as e:
        atomic_write_bytes(tmp_path / "x.npz", b"data")
    assert str(e.value) == f"{tmp_path / 'x.npz'}: could not write this file: No space left on device"
    assert list(tmp_path.iterdir()) == []


def test_failed_final_snapshot_is_rescued_and_resumable(tmp_path, monkeypatch):
    import re

    full_disk_under(monkeypatch, tmp_path / "snap")
    s = solver(tmp_path, max_iter=4)
    with pytest.raises(SnapshotError) as e:
        s.solve()
    msg = str(e.value)
    assert f"{tmp_path / 'snap' / 'tiny_iter_4.weights.npz'}: could not write this file: " \
           "No space left on device" in msg
    rescued = re.search(r"resume with --snapshot (\S+)", msg).group(1)
    assert "netspec-rescue-" in rescued and rescued.endswith("tiny_iter_4.solverstate.npz")
    assert not [p for p in (tmp_path / "snap").iterdir()]         # no half-written files
    expected = arrays_of(s.net)
    resumed = solver(tmp_path, max_iter=4)
    resumed.restore(rescued)
    assert resumed.iter == 4
    for k, v in arrays_of(resumed.net).items():
        np.testing.assert_array_equal(v, expected[k])
    import shutil
    shutil.rmtree(Path(rescued).parent)


def test_failed_periodic_snapshot_stops_the_run_and_says_where_it_is(tmp_path, monkeypatch):
    full_disk_under(monkeypatch, tmp_path / "snap")
    s = solver(tmp_path, max_iter=10, snapshot=3)
    with pytest.raises(SnapshotError, match=r"snapshot at iteration 3 failed: .*tiny_iter_3\.weights\.npz"
                                            r".*saved instead to (\S+)tiny_iter_3\.weights\.npz") as e:
        s.solve()
    assert s.iter == 3
    import re
    import shutil
    shutil.rmtree(Path(re.search(r"--snapshot (\S+)", str(e.value)).group(1)).parent)


# == 8. a state and its weights file are tied by a checksum; orphaned temp files go ============
def test_state_with_another_runs_weights_is_refused_naming_both_files(tmp_path):
    from netspec.snapshot import save_weights

    a = solver(tmp_path)
    a.solve(max_iter=2)
    state = a.snapshot()
    weights = tmp_path / "snap" / "tiny_iter_2.weights.npz"
    # another run with the same prefix, killed after its weights and before its state
    b = solver(tmp_path, random_seed=99)
    save_weights(b.net, weights)
    with pytest.raises(SnapshotError) as e:
        solver(tmp_path).restore(state)
    msg = str(e.value)
    assert msg.startswith(f"{state}: the weights file it names, {weights}, is not the one written "
                          "with this state")
    # the same state with its own weights resumes
    save_weights(a.net, weights)
    rewrite_checksum(state, weights)
    r = solver(tmp_path)
    r.restore(state)
    assert r.iter == 2


def test_state_without_checksum_resumes_with_a_warning(tmp_path):
    import io

    a = solver(tmp_path)
    a.solve(max_iter=2)
    state = a.snapshot()
    flat = load_npz(state)
    del flat["weights_sha256"]
    save_npz(state, flat)
    stream = io.StringIO()
    r = solver(tmp_path)
    r.log = CaffeLog(stream=stream)
    r.restore(state)
    assert r.iter == 2 and "holds no checksum of its weights file" in stream.getvalue()


def test_orphaned_temp_files_of_the_prefix_are_removed_at_start_up(tmp_path):
    import io
    import os

    snap = tmp_path / "snap"
    snap.mkdir()
    dead = 4194305                       # above Linux's largest pid: no such process
    orphans = [snap / f".tiny_iter_4.weights.npz.{dead}.k2j4h5g6.tmp",
               snap / ".tiny_iter_2.solverstate.npz.abcd1234.tmp"]       # older name, no pid
    kept = [snap / f".tiny_iter_6.weights.npz.{os.getpid()}.zzzz.tmp",   # a live writer's
            snap / f".other_iter_1.weights.npz.{dead}.x.tmp",           # another prefix's
            snap / "tiny_iter_2.weights.npz"]
    for p in orphans + kept:
        p.write_bytes(b"x")
    stream = io.StringIO()
    s = solver(tmp_path, max_iter=1)
    s.log = CaffeLog(stream=stream)
    s.solve()
    assert not any(p.exists() for p in orphans) and all(p.exists() for p in kept)
    assert "Removed 2 temporary file(s) left by an interrupted snapshot write" in stream.getvalue()


# == 12. a corrupt or foreign solver state is one clear error naming the file =================
def real_state(tmp_path, **extra) -> Path:
    """The solver state of a tiny 2-iteration run (Data layer with shuffle: cursor and order)."""
    s = solver(tmp_path, **extra)
    s.solve(max_iter=2)
    return s.snapshot()


def _set(key, value):
    def edit(flat):
        flat[key] = value
    return edit


def _drop(*prefixes):
    def edit(flat):
        for k in [k for k in flat if k.startswith(prefixes)]:
            del flat[k]
    return edit


CURSOR = "data|train:d|cursor"
ORDER = "data|train:d|order"
#: (case id, edit of the flat state, phrase of the message)
CORRUPT_STATES = [
    ("missing_iter", _drop("iter"), "the solver state has no 'iter' record"),
    ("missing_type", _drop("type"), "has no 'type' record"),
    ("missing_weights", _drop("weights|", "weights"), "has no 'weights' record"),
    ("missing_rng", _drop("rng"), "has no 'rng' record"),
    ("missing_history", _drop("history|"), "has no 'history' record"),
    ("history_other_rule", _set("history|0|m", np.zeros(47, np.float32)),
     "the history of parameter group 0 should hold ['history'] for SGD, it holds ['history', 'm']"),
    ("iter_text", _set("iter", np.array("abc")), "the record 'iter' is 'abc', not an iteration number"),
    ("iter_negative", _set("iter", np.int64(-5)), "the record 'iter' is -5, not an iteration number"),
    ("iter_fraction", _set("iter", np.float64(2.5)), "the record 'iter' is 2.5"),
    ("iter_array", _set("iter", np.arange(3)), "the record 'iter' is 3 int64 values"),
    ("type_number", _set("type", np.int64(3)), "the record 'type' should be a text, not 3"),
    ("weights_empty", _set("weights", np.array("")), "the record 'weights' should be a text"),
    ("rng_garbage", _set("rng", np.frombuffer(b"garbage", np.uint8)), "the random-generator record 'rng' is corrupt"),
    ("rng_other_generator", _set("rng", np.frombuffer(
        b'{"bit_generator": "MT19937", "state": {"key": [1], "pos": 0}}', np.uint8)),
     "the random-generator record 'rng' is corrupt"),
    ("history_short", _set("history|0|history", np.zeros(5, np.float32)),
     "the history 'history' of parameter group 0 has 5 float32 values of shape (5,)"),
    ("history_text", _set("history|0|history", np.array(["a"] * 47)), "of parameter group 0 has 47 <U1 values"),
    ("history_nan", _set("history|0|history", np.full(47, np.nan, np.float32)), "holds NaN or Inf values"),
    ("history_extra_group", _set("history|1|history", np.zeros(47, np.float32)),
     "the state holds 2 parameter histories, this net has 1 parameter groups"),
    ("groups_garbage", _set("groups", np.array("x")), "the record 'groups' should be (lr_mult, decay_mult, count) triples"),
    ("value_and_group", _set("history", np.zeros(3)), "is both a value and a group of values"),
    ("losses_text", _set("losses", np.array("abc")), "the record 'losses' should be a list of numbers"),
    ("cursor_past_end", _set(CURSOR, np.int64(999)), "'cursor' of layer 'd' is 999, past the end of its 24 records"),
    ("cursor_negative", _set(CURSOR, np.int64(-3)), "'cursor' of layer 'd' is negative"),
    ("cursor_text", _set(CURSOR, np.array("abc")), "'cursor' of layer 'd' is 'abc', not an integer"),
    ("cursor_missing", _drop(CURSOR), "the data record of layer 'd' has no 'cursor'"),
    ("order_repeats", _set(ORDER, np.zeros(24, np.int64)), "'order' of layer 'd' is not an order of its 24 records"),
    ("order_out_of_range", _set(ORDER, np.arange(24, dtype=np.int64) + 5), "is not an order of its 24 records"),
    ("order_short", _set(ORDER, np.arange(10, dtype=np.int64)), "'order' of layer 'd' has shape (10,) in the state, (24,) in this net"),
    ("data_not_a_record", _set("data|train:d", np.int64(1)), "is both a value and a group of values"),
]


@pytest.mark.parametrize("case,edit,phrase", CORRUPT_STATES, ids=[c[0] for c in CORRUPT_STATES])
def test_corrupt_state_is_one_clear_error(tmp_path, case, edit, phrase):
    state = real_state(tmp_path)
    flat = load_npz(state)
    edit(flat)
    save_npz(state, flat)
    s = solver(tmp_path)
    before = arrays_of(s.net)
    with pytest.raises(SnapshotError) as e:
        s.restore(state)
    assert phrase in str(e.value) and str(e.value).startswith(f"{state}: "), str(e.value)
    assert s.iter == 0                                   # nothing was changed
    for k, v in arrays_of(s.net).items():
        np.testing.assert_array_equal(v, before[k])


def test_resume_after_an_lr_mult_change_names_the_groups(tmp_path):
    state = real_state(tmp_path)
    net = tiny_net(tmp_path)
    net["layer"][2]["param"] = [{"lr_mult": 2}, {"lr_mult": 1}]
    sp = SolverParameter.model_validate({"net": "x", "base_lr": 0.05, "momentum": 0.9, "random_seed": 5,
                                         "snapshot_prefix": str(tmp_path / "snap" / "tiny"), "max_iter": 4})
    s = Solver(sp, backend=F32, net_param=parse_net(net), log=CaffeLog(quiet=True))
    with pytest.raises(SnapshotError) as e:
        s.restore(state)
    msg = str(e.value)
    assert msg.startswith(f"{state}: the parameter groups changed since this state was written: it "
                          "holds (lr_mult 1, decay_mult 1: 47 values), this net has (lr_mult 1, "
                          "decay_mult 1: 23 values), (lr_mult 2, decay_mult 1: 24 values)"), msg
    assert "start with --weights" in msg


def test_resume_after_a_data_limit_change_names_the_layer(tmp_path):
    state = real_state(tmp_path)
    with pytest.raises(SnapshotError, match=r"'order' of layer 'd' has shape \(24,\) in the state, "
                                            r"\(10,\) in this net. Resuming needs the same data"):
        solver(tmp_path, limit=10).restore(state)


def test_snapshot_given_a_weights_file_or_caffemodel_or_text(tmp_path):
    state = real_state(tmp_path)
    weights = state.with_name("tiny_iter_2.weights.npz")
    with pytest.raises(SnapshotError, match="this is a weights file, not a solver state: --snapshot "
                                            "resumes from the .solverstate.npz"):
        solver(tmp_path).restore(weights)
    model = tmp_path / "m.caffemodel"
    model.write_bytes(b"\x0a\x05LeNet")
    with pytest.raises(SnapshotError, match=r"this is a Caffe .caffemodel \(weights\), not a solver state"):
        solver(tmp_path).restore(model)
    text = tmp_path / "notes.solverstate.npz"
    text.write_text("iter: 5\n")
    with pytest.raises(SnapshotError, match=r"cannot read solver state: this is not an .npz archive"):
        solver(tmp_path).restore(text)
    pickled = tmp_path / "p.solverstate.npz"
    np.savez(pickled, iter=np.array([{"a": 1}], dtype=object))
    with pytest.raises(SnapshotError) as e:
        solver(tmp_path).restore(pickled)
    assert "holds Python objects (pickled data), which netspec never loads" in str(e.value)
    assert "allow_pickle" not in str(e.value)


def test_state_whose_weights_file_is_gone(tmp_path):
    state = real_state(tmp_path)
    state.with_name("tiny_iter_2.weights.npz").unlink()
    with pytest.raises(SnapshotError, match="cannot read the weights file this state names, .*"
                                            "tiny_iter_2.weights.npz: No such file"):
        solver(tmp_path).restore(state)


def test_cli_resume_from_corrupt_state_is_rc1_without_internal_error(tmp_path):
    import yaml

    state = real_state(tmp_path)
    flat = load_npz(state)
    flat["iter"] = np.array("abc")
    save_npz(state, flat)
    (tmp_path / "net.yaml").write_text(yaml.safe_dump(tiny_net(tmp_path)))
    (tmp_path / "s.yaml").write_text("net: net.yaml\nbase_lr: 0.05\nmomentum: 0.9\nmax_iter: 4\n"
                                     "snapshot_prefix: snap/tiny\n")
    r = invoke("train", tmp_path / "s.yaml", "--snapshot", state)
    assert r.exit_code == 1 and "internal error" not in r.output
    assert f"{state}: the record 'iter' is 'abc'" in r.output


def test_resume_past_max_iter_warns(tmp_path):
    import io

    state = real_state(tmp_path)
    stream = io.StringIO()
    s = solver(tmp_path, max_iter=1)
    s.log = CaffeLog(stream=stream)
    s.restore(state)
    assert "the state is at iteration 2, max_iter is 1: nothing is left to train" in stream.getvalue()


def test_hdf5_resume_with_shuffle_is_bit_identical(tmp_path):
    """HDF5Data reopens its current file on restore, drawing a row permutation from the shared
    generator: the generator must be restored after the data layers, or the run diverges."""
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    for name, n in (("a.h5", 7), ("b.h5", 5)):
        with h5py.File(tmp_path / name, "w") as f:
            f["data"] = rng.standard_normal((n, 4)).astype(np.float32)
            f["label"] = rng.integers(0, 2, n).astype(np.float32)
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'a.h5'}\n{tmp_path / 'b.h5'}\n")
    net = {"name": "h", "layer": [
        {"name": "d", "type": "HDF5Data", "top": ["data", "label"],
         "hdf5_data_param": {"source": str(tmp_path / "list.txt"), "batch_size": 3, "shuffle": True}},
        {"name": "ip", "type": "InnerProduct", "bottom": "data", "top": "z",
         "inner_product_param": {"num_output": 2, "weight_filler": {"type": "xavier"}}},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["z", "label"], "top": "loss"}]}

    def make():
        sp = SolverParameter.model_validate({"net": "x", "base_lr": 0.1, "random_seed": 1, "max_iter": 9,
                                             "snapshot_prefix": str(tmp_path / "s")})
        return Solver(sp, backend=F32, net_param=parse_net(net), log=CaffeLog(quiet=True))
    straight = make()
    straight.solve(max_iter=3)
    state = straight.snapshot()
    straight.solve(max_iter=9)
    resumed = make()
    resumed.restore(state)
    resumed.solve(max_iter=9)
    for key, value in arrays_of(resumed.net).items():
        np.testing.assert_array_equal(value, arrays_of(straight.net)[key], err_msg=key)


# == 14. weights that miss the net are refused unless a partial load is asked for =============
def test_weights_matching_no_blob_are_an_error_even_when_partial(tmp_path):
    net = build(tmp_path)
    np.savez(tmp_path / "other.npz", **{"fc9/0": np.zeros((3, 8), np.float32)})
    for partial in (False, True):
        with pytest.raises(SnapshotError, match=r"none of the 1 arrays in the file \(fc9/0\) is a "
                                                r"parameter blob of this net \(conv1/0, conv1/1, "
                                                r"ip1/0, ip1/1\)"):
            load_weights(net, tmp_path / "other.npz", allow_partial=partial)


def test_partial_weights_need_allow_partial(tmp_path):
    net = build(tmp_path)
    good = arrays_of(net)
    np.savez(tmp_path / "part.npz", **{k: v + 1 for k, v in good.items() if k.startswith("conv1")})
    with pytest.raises(SnapshotError, match=r"the net's parameter blobs ip1/0, ip1/1 are not in the "
                                            r"file.*--allow-partial"):
        load_weights(net, tmp_path / "part.npz")
    np.testing.assert_array_equal(net.named_params()["conv1/0"].data, good["conv1/0"])
    missing, unused = load_weights(net, tmp_path / "part.npz", allow_partial=True)
    assert missing == ["ip1/0", "ip1/1"] and unused == []
    np.testing.assert_array_equal(net.named_params()["conv1/0"].data, good["conv1/0"] + 1)
    np.testing.assert_array_equal(net.named_params()["ip1/0"].data, good["ip1/0"])


@pytest.mark.parametrize("value,phrase", [
    (np.full((3, 8), np.nan, np.float32), "blob 'ip1/0' holds NaN or Inf values"),
    (np.full((3, 8), "x"), "blob 'ip1/0' holds <U1 values, not numbers"),
])
def test_weights_with_bad_values_are_refused(tmp_path, value, phrase):
    net = build(tmp_path)
    w = dict(arrays_of(net), **{"ip1/0": value})
    np.savez(tmp_path / "bad.npz", **w)
    with pytest.raises(SnapshotError, match=phrase):
        load_weights(net, tmp_path / "bad.npz")


def test_solver_state_given_as_weights(tmp_path):
    state = real_state(tmp_path)
    with pytest.raises(SnapshotError, match=r"this is a solver state, not a weights file: resume from "
                                            r"it with --snapshot, or load the weights file it names "
                                            r"\(tiny_iter_2.weights.npz\)"):
        load_weights(build(tmp_path), state)


def test_cli_test_with_weights_of_another_net(tmp_path):
    import yaml

    (tmp_path / "net.yaml").write_text(yaml.safe_dump(tiny_net(tmp_path)))
    np.savez(tmp_path / "other.npz", **{"fc9/0": np.zeros((3, 8), np.float32)})
    r = invoke("test", "--model", tmp_path / "net.yaml", "--weights", tmp_path / "other.npz",
               "--iterations", 1)
    assert r.exit_code == 1 and f"{tmp_path / 'other.npz'}: none of the 1 arrays" in r.output
    assert "acc =" not in r.output


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_snapshot_files_respect_the_umask(tmp_path, umask, mode):
    import os
    import stat

    old = os.umask(umask)
    try:
        s = solver(tmp_path, max_iter=1)
        s.solve()
    finally:
        os.umask(old)
    files = sorted((tmp_path / "snap").iterdir())
    assert [p.name for p in files] == ["tiny_iter_1.solverstate.npz", "tiny_iter_1.weights.npz"]
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == mode, (p, oct(p.stat().st_mode))


def test_resume_weights_must_fit_exactly(tmp_path):
    state = real_state(tmp_path)
    weights = state.with_name("tiny_iter_2.weights.npz")
    w = load_npz(weights)
    w["fc9/0"] = w.pop("ip1/1")
    save_npz(weights, w)
    rewrite_checksum(state, weights)
    with pytest.raises(SnapshotError, match=r"the weights do not fit the net exactly: the net's blobs "
                                            r"ip1/1 are not in the file; the file's arrays fc9/0 are "
                                            r"not blobs of the net \(the weights file of the solver"):
        solver(tmp_path).restore(state)


def test_same_count_hint_only_where_a_legacy_shape_exists():
    w = np.zeros((2, 9), np.float32)
    with pytest.raises(SnapshotError) as e:
        fit_blob("conv1/0", w, (2, 1, 3, 3))
    assert str(e.value).endswith("another layout (transposed or reordered?), which is never reshaped.")
