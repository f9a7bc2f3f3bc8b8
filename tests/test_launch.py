"""netspec's own launcher (netspec/distributed/launch.py) and ``--gpu`` values
(netspec/distributed/devices.py).

The supervision runs on the CPU: tests/launch_child.py runs ``supervise`` with the environments
the launcher gives, over children that need no GPU and that wait two minutes unless the
launcher ends them; a test fails if a child is not stopped, if the message does not name the
rank and the cause or is printed twice, or if the exit status is wrong. The GPU tests (one
rank per GPU over NCCL) skip without CuPy and two GPUs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from netspec.distributed import launch
from netspec.distributed.collectives import decode_unique_id, encode_unique_id
from netspec.distributed.devices import parse_gpu, resolve
from netspec.errors import NetspecError
from netspec.workflows import train

ROOT = Path(__file__).resolve().parents[1]
CHILD = ROOT / "tests" / "launch_child.py"
#: well under the children's two-minute wait: a run this long was not stopped by the launcher
LIMIT_S = 60


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def run_launcher(behaviour: str, n: int, folder: Path):
    t0 = time.monotonic()
    run = subprocess.run([sys.executable, str(CHILD), "launch", behaviour, str(n), str(folder)],
                         capture_output=True, text=True, timeout=LIMIT_S + 60, env=_env())
    return run, time.monotonic() - t0


def test_every_child_succeeds_and_learns_its_place(tmp_path):
    run, _ = run_launcher("ok", 3, tmp_path)
    assert run.returncode == 0, run.stderr
    assert "netspec: error" not in run.stderr
    envs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(3)]
    assert [e["NETSPEC_RANK"] for e in envs] == ["0", "1", "2"]
    assert {e["NETSPEC_WORLD_SIZE"] for e in envs} == {"3"}
    assert [e["NETSPEC_DEVICE"] for e in envs] == ["0", "1", "2"]
    assert {e["NETSPEC_SEED"] for e in envs} == {"1234"}
    assert {e["NETSPEC_NCCL_ID"] for e in envs} == {"ab" * 128}


def test_a_child_that_raises_stops_the_others_with_one_message(tmp_path):
    run, elapsed = run_launcher("raise", 3, tmp_path)
    assert run.returncode == 1, run.stderr
    assert elapsed < LIMIT_S
    lines = [line for line in run.stderr.splitlines() if line.startswith("netspec: error")]
    assert lines == ["netspec: error: rank 1 of 3 (GPU 1) exited with status 1: ValueError: "
                     "boom on purpose; every rank was stopped"], run.stderr
    assert all((tmp_path / f"rank{r}.ready").exists() for r in range(3))


def test_a_killed_child_stops_the_others_with_one_message(tmp_path):
    run, elapsed = run_launcher("kill", 2, tmp_path)
    assert run.returncode == 1, run.stderr
    assert elapsed < LIMIT_S
    lines = [line for line in run.stderr.splitlines() if line.startswith("netspec: error")]
    assert lines == ["netspec: error: rank 1 of 2 (GPU 1) was killed by signal 9 (SIGKILL); "
                     "every rank was stopped"], run.stderr


def test_a_child_that_prints_the_message_is_not_repeated(tmp_path):
    run, elapsed = run_launcher("message", 2, tmp_path)
    assert run.returncode == 1, run.stderr
    assert elapsed < LIMIT_S
    lines = [line for line in run.stderr.splitlines() if line.startswith("netspec: error")]
    assert lines == ["netspec: error: rank 1 of 2 failed at iteration 3: bad data"], run.stderr


def _start_launcher(behaviour: str, n: int, folder: Path) -> subprocess.Popen:
    """The launcher in a session of its own, as in a terminal, once its children are ready."""
    proc = subprocess.Popen([sys.executable, str(CHILD), "launch", behaviour, str(n), str(folder)],
                            stderr=subprocess.PIPE, text=True, env=_env(), start_new_session=True)
    deadline = time.monotonic() + LIMIT_S
    while not all((folder / f"rank{r}.ready").exists() for r in range(n)):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(f"children did not start: {proc.communicate()[1]}")
        time.sleep(0.05)
    return proc


def test_ctrl_c_reaches_every_child_once(tmp_path):
    """A terminal's Ctrl-C goes to the launcher's whole process group; the children (in their
    own session) get it once, from the launcher, and the launcher exits 130."""
    proc = _start_launcher("sigint", 2, tmp_path)
    groups = {json.loads((tmp_path / f"rank{r}.json").read_text())["pgid"] for r in range(2)}
    assert proc.pid not in groups       # the terminal's signal cannot reach them directly
    try:
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=LIMIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    for r in range(2):
        assert (tmp_path / f"rank{r}.signals").read_text() == "SIGINT\n", f"rank {r}"
    assert "netspec: error" not in err


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's parent-death signal")
def test_children_end_when_the_launcher_is_killed(tmp_path):
    proc = _start_launcher("wait", 2, tmp_path)
    pids = [json.loads((tmp_path / f"rank{r}.json").read_text())["pid"] for r in range(2)]
    assert all(_alive(pid) for pid in pids)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + LIMIT_S
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)


def test_nccl_unique_id_round_trips_through_the_environment():
    for signed in (True, False):                 # CuPy gives C chars: signed on x86, not on ARM
        low = -128 if signed else 0
        uid = tuple(int(b) for b in np.random.default_rng(0).integers(low, low + 256, size=128))
        text = encode_unique_id(uid)
        assert "\n" not in text and "\0" not in text
        assert decode_unique_id(text) == uid
        assert type(decode_unique_id(text)) is tuple


# -- --gpu values ---------------------------------------------------------------------------
def test_gpu_values():
    assert parse_gpu("1") == [1]
    assert parse_gpu("2,0") == [2, 0]
    assert parse_gpu(" all ") == "all"
    assert resolve("all", 3) == [0, 1, 2]
    assert resolve("0,1", None) == [0, 1]          # without CuPy nothing to check against
    for bad in ("x", "0,x", "-1", "0,", "1.5"):
        with pytest.raises(NetspecError, match="expected a device number .0., a list of devices"):
            parse_gpu(bad)
    with pytest.raises(NetspecError, match="--gpu 0,0: device 0 is named twice"):
        parse_gpu("0,0")
    with pytest.raises(NetspecError, match=r"--gpu 0,3: there is no GPU 3; CuPy sees 2 \(devices 0-1\)"):
        resolve("0,3", 2)
    with pytest.raises(NetspecError, match="there is no GPU 1; CuPy sees 1 .device 0."):
        resolve("1", 1)
    with pytest.raises(NetspecError, match="--gpu all: CuPy is not installed or sees no GPU"):
        resolve("all", None)


def test_which_gpu_values_start_the_launcher():
    assert launch.devices_to_launch(None, {}) is None
    assert launch.devices_to_launch("", {}) is None           # bare --gpu: this process
    assert launch.devices_to_launch("1", {}) is None
    assert launch.devices_to_launch("0,1", {"PMI_SIZE": "2"}) is None        # under mpiexec
    assert launch.devices_to_launch("0,1", {"NETSPEC_WORLD_SIZE": "2"}) is None  # a child
    if launch.device_count() is None:
        assert launch.devices_to_launch("0,1", {}) == [0, 1]
        with pytest.raises(NetspecError, match="--gpu all: CuPy is not installed"):
            launch.devices_to_launch("all", {})


@pytest.mark.parametrize("value, message", [
    ("x", "--gpu x: expected a device number (0), a list of devices (0,1) or all"),
    ("0,0", "--gpu 0,0: device 0 is named twice"),
])
def test_bad_gpu_values_on_the_command_line_are_one_line(tmp_path, value, message):
    (tmp_path / "s.yaml").write_text("net: net.yaml\nbase_lr: 0.1\n")
    run = subprocess.run([sys.executable, "-m", "netspec.cli", "train", str(tmp_path / "s.yaml"),
                          "--gpu", value], capture_output=True, text=True, env=_env(), timeout=120)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netspec: error: " + message), run.stderr


# -- on GPUs --------------------------------------------------------------------------------
def _two_gpus() -> bool:
    return (launch.device_count() or 0) >= 2


@pytest.mark.gpu
@pytest.mark.skipif(not _two_gpus(), reason="NCCL needs one GPU per rank: needs two GPUs")
def test_two_ranks_on_two_gpus_over_nccl_give_the_cpu_result(tmp_path):
    """``netspec train --gpu 0,1``: two children over NCCL, each with batch 3, end with the
    weights of one CPU process with batch 6 (float64)."""
    from test_distributed import GLOBAL_BATCH, STEPS, single_process, write_problem, write_solver

    write_problem(tmp_path)
    solver = write_solver(tmp_path, "nccl", type="Adam", base_lr=0.01, momentum=0.9,
                          weight_decay=0.01, snapshot_after_train=True)
    run = subprocess.run([sys.executable, "-m", "netspec.cli", "train", str(solver), "--gpu",
                          "0,1", "--dtype", "float64", "--set",
                          f"layer.data.data_param.batch_size={GLOBAL_BATCH // 2}"],
                         capture_output=True, text=True, env=_env(), timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Gradients all-reduced over NCCL (device to device)" in run.stderr, run.stderr[-3000:]
    weights = tmp_path / "snap" / f"nccl_iter_{STEPS}.weights.npz"      # rank 0's
    loaded = train(solver, ["max_iter=0"], weights=weights, dtype="float64", quiet=True,
                   distributed_run=False).solver.flat_data
    np.testing.assert_allclose(np.asarray(loaded), single_process(solver), rtol=1e-9, atol=1e-11)
