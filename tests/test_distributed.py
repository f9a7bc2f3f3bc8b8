"""Data-parallel training over MPI (netspec/distributed.py, netspec/data/shard.py).

The oracle is a single process: N ranks with batch B must end with the weights of one process
with batch N·B (float64, equal up to the order of the sums), for every solver type and decay
mode, with iter_size, clipping, an lr policy and a resume from the distributed run's snapshot.
Each MPI test launches ``mpiexec -n N`` (one thread per rank) and runs many jobs per launch;
they skip where mpi4py or mpiexec is absent. The data split is checked in one process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from netspec import distributed
from netspec.backend import to_numpy
from netspec.data.shard import Shard
from netspec.errors import NetspecError
from netspec.spec import parse_net
from netspec.net import Net
from netspec.workflows import gpu_sets, train

ROOT = Path(__file__).resolve().parents[1]
MPIEXEC = shutil.which("mpiexec")


def _mpi_available() -> str | None:
    """Why MPI tests cannot run here, or None."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "needs mpi4py (pip install 'netspec[mpi]')"
    if MPIEXEC is None:
        return "needs mpiexec on PATH (pip install 'netspec[mpi]' brings MPICH's)"
    return None


needs_mpi = pytest.mark.skipif(_mpi_available() is not None, reason=_mpi_available() or "")

ITEMS = 48            # training items; 20 steps of 6 wrap around the data twice
GLOBAL_BATCH = 6      # one process's batch; N ranks take 6 / N each
STEPS = 20

NET = """
name: tiny
layer:
  - name: data
    type: Data
    top: [data, label]
    data_param: {source: data.npz, batch_size: %(batch)d}
%(extra)s
  - name: fc1
    type: InnerProduct
    bottom: %(fc1_bottom)s
    top: fc1
    param: [{lr_mult: 1, decay_mult: 1}, {lr_mult: 2, decay_mult: 0}]
    inner_product_param: {num_output: 5, weight_filler: {type: gaussian, std: 0.5},
                          bias_filler: {type: constant, value: 0.1}}
  - {name: relu1, type: TanH, bottom: fc1, top: fc1}
  - name: fc2
    type: InnerProduct
    bottom: fc1
    top: fc2
    inner_product_param: {num_output: 3, weight_filler: {type: gaussian, std: 0.5}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [fc2, label], top: loss}
"""

#: per update rule: the fields that make it a typical run of that rule
RULE_FIELDS = {
    "SGD": {"base_lr": 0.1, "momentum": 0.9},
    "Nesterov": {"base_lr": 0.1, "momentum": 0.9},
    "AdaGrad": {"base_lr": 0.1},
    "RMSProp": {"base_lr": 0.01, "rms_decay": 0.9},
    "AdaDelta": {"base_lr": 1.0, "momentum": 0.95, "delta": 1e-6},
    "Adam": {"base_lr": 0.01, "momentum": 0.9, "momentum2": 0.999},
}
DECAYS = ("L2", "L1", "decoupled")


def write_problem(folder: Path, extra_layer: str = "") -> None:
    rng = np.random.default_rng(7)
    np.savez(folder / "data.npz", data=rng.normal(size=(ITEMS, 6)),
             label=rng.integers(0, 3, size=ITEMS).astype(np.float64))
    fc1_bottom = "boom" if extra_layer else "data"
    (folder / "net.yaml").write_text(NET % {"batch": GLOBAL_BATCH, "extra": extra_layer,
                                            "fc1_bottom": fc1_bottom})


def write_solver(folder: Path, name: str, **fields) -> Path:
    sp = {"net": "net.yaml", "lr_policy": "fixed", "max_iter": STEPS, "random_seed": 3,
          "display": 0, "snapshot": 0, "snapshot_prefix": str(folder / "snap" / name)}
    sp.update(fields)
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(sp))         # JSON is YAML
    return path


def solver_cases(folder: Path) -> dict[str, tuple[Path, str | None]]:
    """name -> (solver file, the name of the job whose snapshot it resumes, or None)."""
    cases: dict[str, tuple[Path, str | None]] = {}
    for rule, fields in RULE_FIELDS.items():
        for decay in DECAYS:
            name = f"{rule}-{decay}"
            cases[name] = (write_solver(folder, name, type=rule, weight_decay=0.01,
                                        regularization_type=decay, **fields), None)
    schedule = dict(type="Adam", base_lr=0.02, momentum=0.9, weight_decay=0.005,
                    regularization_type="L2", iter_size=2, clip_gradients=0.3,
                    lr_policy="step", gamma=0.5, stepsize=6, snapshot=10)
    cases["schedule"] = (write_solver(folder, "schedule", **schedule), None)
    cases["resumed"] = (write_solver(folder, "resumed", **schedule), "schedule")
    return cases


def single_process(solver: Path) -> np.ndarray:
    outcome = train(solver, dtype="float64", quiet=True, distributed_run=False)
    return to_numpy(outcome.solver.flat_data).copy()


def launch(n: int, args: list[str], timeout: float = 180, cwd: Path | None = None):
    env = dict(os.environ, NETSPEC_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests"),
                                           os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([MPIEXEC, "-n", str(n), sys.executable, *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd)


def cli(*args: str) -> list[str]:
    return ["-m", "netspec.cli", "train", *args]


# -- equivalence with one process ----------------------------------------------------------
@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_give_the_weights_of_one_process_with_the_whole_batch(tmp_path, ranks):
    """Every rule × decay mode, and Adam with iter_size, clipping, a step lr policy and a
    resume from the snapshot the distributed run took: N ranks × batch 6/N = one process ×
    batch 6, on every rank, after 20 steps."""
    _check_equivalence(tmp_path, ranks, [], rtol=1e-10, atol=1e-12)


@needs_mpi
@pytest.mark.gpu
def test_two_ranks_sharing_one_gpu_give_the_cpu_result(tmp_path):
    """The GPU path (gradients staged through host memory, every rank on device 0) against
    one CPU process; float64, so only the GPU's summation order differs."""
    _check_equivalence(tmp_path, 2, ["solver_mode=GPU", "device_id=0"], rtol=1e-9, atol=1e-11,
                       via="MPI through host memory (ranks share a GPU")


def _gpu_count() -> int:
    from netspec.distributed.devices import device_count
    return device_count() or 0


@needs_mpi
@pytest.mark.gpu
@pytest.mark.skipif(_gpu_count() < 2, reason="NCCL needs one GPU per rank: needs two GPUs")
def test_two_ranks_on_two_gpus_over_nccl_give_the_cpu_result(tmp_path):
    """mpiexec -n 2 ... --gpu all: rank r on GPU r, gradients over NCCL, against one CPU
    process with the whole batch (float64)."""
    _check_equivalence(tmp_path, 2, [], rtol=1e-9, atol=1e-11, gpu="all",
                       via="NCCL (device to device)")


def _check_equivalence(tmp_path: Path, ranks: int, extra_sets: list[str], rtol: float,
                       atol: float, gpu: str | bool = False, via: str | None = None) -> None:
    write_problem(tmp_path)
    cases = solver_cases(tmp_path)
    jobs = []
    for name, (solver, resumes) in cases.items():
        snap = None
        if resumes:
            snap = str(tmp_path / "snap" / f"{resumes}_iter_10.solverstate.npz")
        jobs.append({"solver": str(solver), "out": str(tmp_path / name), "snapshot": snap,
                     "gpu": gpu,
                     "sets": [f"layer.data.data_param.batch_size={GLOBAL_BATCH // ranks}",
                              *extra_sets]})
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    run = launch(ranks, [str(ROOT / "tests" / "distributed_worker.py"),
                         str(tmp_path / "jobs.json")])
    assert run.returncode == 0, run.stderr[-3000:]
    for name, (solver, resumes) in cases.items():
        reference = single_process(cases[resumes][0] if resumes else solver)
        weights = [np.load(tmp_path / f"{name}.rank{r}.npy") for r in range(ranks)]
        if via is not None:
            assert (tmp_path / f"{name}.rank0.via").read_text().startswith(via)
        for r in range(1, ranks):
            np.testing.assert_array_equal(weights[r], weights[0], err_msg=f"{name}: rank {r}")
        np.testing.assert_allclose(weights[0], reference, rtol=rtol, atol=atol, err_msg=name)
        assert np.abs(reference - single_process_start(solver)).max() > 1e-3, name  # it learned
    # the distributed run's snapshot holds the global data position: one process with the
    # whole batch resumes from it at the same item
    state = tmp_path / "snap" / "schedule_iter_10.solverstate.npz"
    resumed = train(cases["schedule"][0], snapshot=state, dtype="float64", quiet=True,
                    distributed_run=False)
    np.testing.assert_allclose(to_numpy(resumed.solver.flat_data),
                               single_process(cases["schedule"][0]), rtol=rtol, atol=atol)


def single_process_start(solver: Path) -> np.ndarray:
    outcome = train(solver, ["max_iter=0"], dtype="float64", quiet=True, distributed_run=False)
    return to_numpy(outcome.solver.flat_data).copy()


ALLGATHER_PICKLED = """
import numpy as np
from mpi4py import MPI
from netspec.distributed.collectives import allgather_pickled

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()

def allgather_array(a):
    out = np.empty(a.size * size, a.dtype)
    comm.Allgather(a, out)
    return out

objects = [{"rank": r, "text": "x" * (1000 * r)} if r != 1 else None for r in range(size)]
got = allgather_pickled(objects[rank], allgather_array, np)
assert got == objects, got
agreed = comm.gather(rank)
if rank == 0:
    print("agreed", *agreed)
"""


@needs_mpi
def test_objects_travel_as_padded_pickles_through_an_array_allgather():
    """NCCL carries no Python objects: netspec's launcher sends them as pickles padded to the
    longest through an array all-gather. The same code over MPI's Allgather, 3 ranks with
    objects of different sizes (one None)."""
    run = launch(3, ["-c", ALLGATHER_PICKLED], timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "agreed 0 1 2"      # one line, from rank 0 only


# -- the data split -------------------------------------------------------------------------
def _data_net(folder: Path, batch: int, shuffle: bool, shard: Shard | None) -> Net:
    write_problem(folder)
    text = (folder / "net.yaml").read_text().replace(
        f"batch_size: {GLOBAL_BATCH}}}", f"batch_size: {batch}, shuffle: {str(shuffle).lower()}}}")
    (folder / "net.yaml").write_text(text)
    from netspec.spec import load_net
    return Net(load_net(folder / "net.yaml"), "TRAIN", rng=np.random.default_rng(1), shard=shard)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("ranks", [2, 3])
def test_over_an_epoch_the_ranks_read_every_item_once(tmp_path, ranks, shuffle):
    """Caffe's rule: rank r keeps the items ≡ r mod N of each global batch; over one epoch
    (ITEMS / (N·B) steps) the ranks together read each item exactly once, and each step's
    items are those of one process's step with batch N·B when not shuffled."""
    batch = 2
    layers = [_data_net(tmp_path, batch, shuffle, Shard(r, ranks, seed=5)).layers[0]
              for r in range(ranks)]
    whole = _data_net(tmp_path, batch * ranks, False, None).layers[0]
    steps = ITEMS // (batch * ranks)
    seen = []
    for _ in range(steps):
        per_rank = [layer.next_indices() for layer in layers]
        assert all(len(ix) == batch for ix in per_rank)
        seen += [int(i) for ix in per_rank for i in ix]
        expected = whole.next_indices()
        if not shuffle:
            assert sorted(int(i) for ix in per_rank for i in ix) == sorted(expected.tolist())
    assert sorted(seen) == list(range(ITEMS))
    assert all(layer.epoch == 1 for layer in layers)


def test_memory_data_reads_its_share(tmp_path):
    net_text = {"name": "mem", "layer": [{
        "name": "mem", "type": "MemoryData", "top": ["data", "label"],
        "memory_data_param": {"batch_size": 2, "channels": 1, "height": 1, "width": 1}}]}
    x = np.arange(12, dtype=np.float64)
    got = []
    for r in range(3):
        net = Net(parse_net(net_text), "TRAIN", shard=Shard(r, 3, seed=0))
        layer = net.layers[0]
        layer.reset(x, x)
        reads = []
        for _ in range(2):
            net.forward()
            reads += to_numpy(net.blobs["label"].data).tolist()
        got.append(reads)
    assert got[0] == [0, 3, 6, 9] and got[1] == [1, 4, 7, 10] and got[2] == [2, 5, 8, 11]
    net = Net(parse_net(net_text), "TRAIN", shard=Shard(0, 3, seed=0))
    with pytest.raises(NetspecError, match="multiple of the batch size .2 times the 3 ranks"):
        net.layers[0].reset(x[:8], x[:8])


# -- faults ---------------------------------------------------------------------------------
BOOM = '''
import os
import signal

from netspec.python_layer import Layer


class Boom(Layer):
    """Passes its bottom on; rank 1 fails at its 4th forward (param_str: raise or kill)."""

    def setup(self, bottom, top):
        self.calls = 0
        self.rank = int(os.environ.get("PMI_RANK", "0"))

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        self.calls += 1
        if self.rank == 1 and self.calls == 4:
            if self.param_str == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise ValueError("boom on purpose")
        top[0].data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff
'''


def _fault_run(tmp_path: Path, mode: str):
    (tmp_path / "boom.py").write_text(BOOM)
    layer = ("  - {name: boom, type: Python, bottom: data, top: boom,\n"
             f"     python_param: {{module: boom, layer: Boom, param_str: {mode}}}}}")
    write_problem(tmp_path, layer)
    solver = write_solver(tmp_path, "fault", type="SGD", base_lr=0.1, max_iter=1000)
    t0 = time.monotonic()
    run = launch(2, cli(str(solver)), timeout=120, cwd=tmp_path)
    return run, time.monotonic() - t0


@needs_mpi
def test_a_rank_that_raises_stops_every_rank_with_one_message(tmp_path):
    run, elapsed = _fault_run(tmp_path, "raise")
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "rank 1 of 2 failed at iteration 3" in out, out[-2000:]
    assert out.count("boom on purpose") == 1, out[-2000:]
    assert "Traceback" not in out
    assert elapsed < 100


@needs_mpi
def test_a_killed_rank_ends_the_run(tmp_path):
    run, elapsed = _fault_run(tmp_path, "kill")
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "signal 9" in out or "Killed" in out, out[-2000:]
    assert elapsed < 100


def _mpmd(tmp_path: Path, first: list[str], second: list[str]):
    env = dict(os.environ, NETSPEC_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([MPIEXEC, "-n", "1", sys.executable, *first, ":",
                           "-n", "1", sys.executable, *second], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)


@needs_mpi
def test_ranks_with_different_solvers_are_refused_at_start_up(tmp_path):
    write_problem(tmp_path)
    solver = str(write_solver(tmp_path, "s", type="SGD", base_lr=0.1))
    run = _mpmd(tmp_path, cli(solver), cli(solver, "--set", "base_lr=0.02"))
    assert run.returncode != 0
    assert "rank 1 of 2 loaded a different solver, net or option than rank 0" in run.stderr
    assert "solver.base_lr: 0.1 vs 0.02" in run.stderr
    assert run.stderr.count("netspec: error") == 1, run.stderr
    assert "Iteration" not in run.stderr          # nothing trained


@needs_mpi
def test_a_rank_failing_at_start_up_stops_every_rank(tmp_path):
    write_problem(tmp_path)
    solver = str(write_solver(tmp_path, "s", type="SGD", base_lr=0.1))
    run = _mpmd(tmp_path, cli(solver), cli(str(tmp_path / "missing.yaml")))
    assert run.returncode != 0
    assert "rank 1 of 2 failed at start-up" in run.stderr and "missing.yaml" in run.stderr
    assert run.stderr.count("netspec: error") == 1, run.stderr


# -- launch detection and device choice -----------------------------------------------------
def test_launcher_size_from_the_environment():
    assert distributed.launched_size({}) == 1
    assert distributed.launched_size({"PMI_SIZE": "4"}) == 4
    assert distributed.launched_size({"OMPI_COMM_WORLD_SIZE": "3", "PMI_SIZE": "x"}) == 3
    assert distributed.connect({"PMI_SIZE": "1"}) is None


def test_launched_without_mpi4py_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)      # import mpi4py fails
    with pytest.raises(distributed.DistributedError, match="mpi4py is not installed"):
        distributed.connect({"PMI_SIZE": "2"})


def test_gpu_option_values():
    from netspec.commands.train import gpu_value_args
    assert gpu_value_args(["--gpu", "s.yaml"]) == ["--gpu=", "s.yaml"]
    assert gpu_value_args(["s.yaml", "--gpu", "1"]) == ["s.yaml", "--gpu=1"]
    assert gpu_value_args(["s.yaml", "--gpu", "0,1", "--quiet"]) == ["s.yaml", "--gpu=0,1",
                                                                     "--quiet"]
    assert gpu_value_args(["s.yaml", "--gpu"]) == ["s.yaml", "--gpu="]
    assert gpu_sets(False, None) == [] and gpu_sets(None, None) == []
    assert gpu_sets(True, None) == gpu_sets("", None) == ["solver_mode=GPU"]
    assert gpu_sets("2", None) == ["solver_mode=GPU", "device_id=2"]
    assert gpu_value_args(["s.yaml", "--gpu", "x"]) == ["s.yaml", "--gpu=x"]
    assert gpu_value_args(["--gpu", "-q", "s.yaml"]) == ["--gpu=", "-q", "s.yaml"]
    with pytest.raises(NetspecError, match="netspec train SOLVER --gpu 0,1. starts them itself"):
        gpu_sets("0,1", None)
    with pytest.raises(NetspecError, match="expected a device number"):
        gpu_sets("0,x", None)
    mpi_rank = distributed.Group(collectives=None, rank=1, size=2, local_rank=1, local_size=2,
                                 seed=0)
    assert gpu_sets("3,5", mpi_rank) == ["solver_mode=GPU", "device_id=5"]
    assert gpu_sets("3", mpi_rank) == ["solver_mode=GPU", "device_id=3"]   # shared by the ranks
    with pytest.raises(NetspecError, match="names 3 devices but 2 ranks run on this machine"):
        gpu_sets("0,1,2", mpi_rank)
    child = distributed.Group(collectives=None, rank=1, size=2, local_rank=1, local_size=2,
                              seed=0, device=7)                 # netspec's launcher chose GPU 7
    assert gpu_sets("all", child) == ["solver_mode=GPU", "device_id=7"]


@pytest.mark.gpu
def test_gpu_n_selects_the_device(tmp_path):
    import cupy

    write_problem(tmp_path)
    solver = write_solver(tmp_path, "g", type="SGD", base_lr=0.1, max_iter=2)
    device = cupy.cuda.runtime.getDeviceCount() - 1
    outcome = train(solver, gpu=str(device), quiet=True, distributed_run=False)
    assert outcome.solver.backend.is_gpu
    assert outcome.solver.flat_data.device.id == device


@needs_mpi
def test_ctrl_c_on_the_launcher_snapshots_from_rank_0_and_stops_every_rank(tmp_path):
    import signal

    write_problem(tmp_path)
    solver = write_solver(tmp_path, "long", type="SGD", base_lr=0.1, max_iter=10**6,
                          display=50)
    env = dict(os.environ, NETSPEC_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, *cli(str(solver))],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=env, cwd=tmp_path)
    lines = []
    try:
        for line in proc.stderr:                 # wait until training runs
            lines.append(line)
            if "Iteration 50, loss" in line:
                break
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines) + rest
    assert proc.returncode == 130, out[-2000:]
    states = sorted((tmp_path / "snap").glob("long_iter_*.solverstate.npz"))
    assert len(states) == 1, out[-2000:]
    assert f"resume with --snapshot {states[0]}" in out


def test_the_failure_message_names_the_ranks_once():
    group = distributed.Group(collectives=None, rank=0, size=3, local_rank=0, local_size=3, seed=0)
    one = group.failure([None, "bad data", None], "at iteration 4")
    assert str(one) == "rank 1 of 3 failed at iteration 4: bad data (every rank stopped)"
    same = group.failure(["x.yaml: not found"] * 3, "at start-up")
    assert str(same) == "every rank of 3 failed at start-up: x.yaml: not found (every rank stopped)"
    two = group.failure(["a", None, "b"], "at iteration 0")
    assert str(two) == "2 of 3 ranks failed at iteration 0: rank 0: a; rank 2: b (every rank stopped)"
    assert type(two) is distributed.DistributedError
    other = distributed.Group(collectives=None, rank=2, size=3, local_rank=2, local_size=3, seed=0)
    assert isinstance(other.failure(["a", None, None], "at start-up"), distributed.PeerFailure)


def test_dropout_masks_differ_per_rank_while_data_orders_agree(tmp_path):
    """Rank r's generator is seeded with random_seed + r (Caffe): Dropout masks differ; the
    shuffled data order comes from (random_seed, epoch) and is the same on every rank."""
    from netspec.log import CaffeLog
    from netspec.solver_files import load_solver_and_net

    write_problem(tmp_path, "  - {name: boom, type: Dropout, bottom: data, top: boom}")
    solver = write_solver(tmp_path, "drop", type="SGD", base_lr=0.1)
    sp, net_param, _ = load_solver_and_net(solver, ["layer.data.data_param.shuffle=true"])
    masks, orders = [], []
    for rank in range(2):
        group = distributed.Group(collectives=None, rank=rank, size=2, local_rank=rank, local_size=2,
                                  seed=0)
        s = distributed.DataParallelSolver(sp, group, net_param=net_param, dtype="float64",
                                           log=CaffeLog(quiet=True))
        s.net.forward()
        masks.append(to_numpy(s.net.blobs["boom"].data) == 0)
        orders.append(s.net.layers[0].order.copy())
    assert not np.array_equal(masks[0], masks[1])
    np.testing.assert_array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[0], np.arange(ITEMS))


@needs_mpi
def test_ranks_share_the_cores_of_their_machine(tmp_path):
    write_problem(tmp_path)
    solver = write_solver(tmp_path, "t", type="SGD", base_lr=0.1, max_iter=1)
    env = {k: v for k, v in os.environ.items() if k != "NETSPEC_NUM_THREADS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    run = subprocess.run([MPIEXEC, "-n", "2", sys.executable, *cli(str(solver))],
                         capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    per_rank = max(1, len(os.sched_getaffinity(0)) // 2)
    assert f"CPU ({per_rank} threads) per rank, 2 ranks" in run.stderr


def test_hdf5_data_reads_its_share_and_refuses_shuffle(tmp_path):
    h5py = pytest.importorskip("h5py")
    for name, rows in (("a.h5", range(0, 5)), ("b.h5", range(5, 8))):
        with h5py.File(tmp_path / name, "w") as f:
            f["data"] = np.asarray(rows, np.float64)[:, None]
            f["label"] = np.asarray(rows, np.float64)
    (tmp_path / "list.txt").write_text("a.h5\nb.h5\n")

    def net(shard, shuffle=False):
        spec = {"name": "h", "layer": [
            {"name": "h5", "type": "HDF5Data", "top": ["data", "label"],
             "hdf5_data_param": {"source": "list.txt", "batch_size": 2, "shuffle": shuffle}},
            {"name": "sil", "type": "Silence", "bottom": ["data", "label"]}]}
        (tmp_path / "net.yaml").write_text(json.dumps(spec))
        from netspec.spec import load_net
        return Net(load_net(tmp_path / "net.yaml"), "TRAIN", shard=shard)

    nets = [net(Shard(r, 2, seed=0)) for r in range(2)]
    seen = [[], []]
    for _ in range(3):                  # 3 global batches of 4 rows: 8 rows, then 0..3 again
        for r, n in enumerate(nets):
            n.forward()
            seen[r] += to_numpy(n.blobs["label"].data).tolist()
    assert seen[0] == [0, 2, 4, 6, 0, 2] and seen[1] == [1, 3, 5, 7, 1, 3]
    with pytest.raises(NetspecError, match="shuffle is not supported in data-parallel"):
        net(Shard(0, 2, seed=0), shuffle=True)
