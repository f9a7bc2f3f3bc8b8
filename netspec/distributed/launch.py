"""netspec's own launcher: ``netspec train SOLVER --gpu 0,1`` (or ``--gpu all``) outside an MPI
launcher starts one child process per GPU, each running the same command as one rank (Caffe's
``caffe train --gpu 0,1`` does the same with threads), and supervises them.

Each child learns its place from its environment (``connect.py``: rank, number of ranks, GPU,
the NCCL unique id that this launcher created, the run's seed) and forms the group over NCCL;
it takes cores / ranks CPU threads, as under mpiexec. Supervision (``supervise``):

* the first child that fails (non-zero exit, or killed by a signal) leaves the others
  ``GRACE_S`` to stop by themselves (after a raised error they agree and stop within an
  iteration), then they get SIGTERM and, ``KILL_S`` later, SIGKILL: never a hang in a
  collective whose peer is gone;
* exactly one message names the rank and the cause: the children's own (``netspec: error:``,
  printed by rank 0 after an agreement, or by a rank that aborts), else the launcher's
  (``rank 1 of 2 (GPU 1) was killed by signal 9 (SIGKILL)``, or the exit status and the
  child's last line);
* SIGINT and SIGTERM on the launcher go to every child once (the children run in their own
  session, so a terminal's Ctrl-C reaches them only through the launcher): a Ctrl-C makes rank
  0 snapshot and every rank stop; a second one stops them at once;
* the exit status is 0 when every child succeeded, 130 after a Ctrl-C, else 1.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np

from .collectives import encode_unique_id
from .connect import DEVICE_VAR, NCCL_ID_VAR, RANK_VAR, SEED_VAR, SIZE_VAR, launched_size
from .devices import ALL, device_count, parse_gpu, resolve
from ..errors import NetspecError

#: after the first child fails, how long the others may take to stop by themselves (s)
GRACE_S = 3.0
#: after SIGTERM, how long a child may take before SIGKILL (s)
KILL_S = 2.0
#: the beginnings of the one-line messages that netspec's commands print on failure
MESSAGE_MARKS = (b"netspec: error:", b"netspec: internal error:")


def devices_to_launch(gpu, environ=os.environ) -> list[int] | None:
    """The GPUs to start one child each on: when ``--gpu`` names several devices (or ``all``
    of several) and no launcher started this process; else None (train in this process)."""
    if not isinstance(gpu, str) or gpu.strip() == "" or launched_size(environ) > 1:
        return None
    ids = parse_gpu(gpu)
    if ids != ALL and len(ids) < 2:
        return None
    ids = resolve(gpu, device_count())
    return ids if len(ids) > 1 else None


def train_on_gpus(devices: list[int], argv: list[str] | None = None) -> int:
    """Run ``netspec <argv>`` (default: this process's arguments) as one child per device
    over NCCL; the exit status for the launcher (``supervise``)."""
    try:
        from cupy.cuda import nccl
        if not nccl.available:
            raise ImportError
    except ImportError:
        raise NetspecError(
            "several GPUs train through NCCL, but CuPy is not installed or was built without "
            "NCCL (pip install 'netspec[gpu]'; CuPy's wheels load NCCL from the nvidia-nccl "
            "package: pip install nvidia-nccl-cu12)") from None
    argv = sys.argv[1:] if argv is None else argv
    seed = int(np.random.SeedSequence().entropy % (2**31))
    envs = child_environments(devices, encode_unique_id(nccl.get_unique_id()), seed)
    command = [sys.executable, "-m", "netspec.cli", *argv]
    names = [f"rank {r} of {len(devices)} (GPU {d})" for r, d in enumerate(devices)]
    return supervise([command] * len(devices), envs, names)


def child_environments(devices: list[int], nccl_id: str, seed: int,
                       environ=os.environ) -> list[dict[str, str]]:
    """Each child's environment: this one's plus its rank, the number of ranks, its GPU, the
    NCCL unique id and the seed (``connect.py`` reads them)."""
    return [dict(environ, **{RANK_VAR: str(r), SIZE_VAR: str(len(devices)), DEVICE_VAR: str(d),
                             NCCL_ID_VAR: nccl_id, SEED_VAR: str(seed)})
            for r, d in enumerate(devices)]


class _Forward(threading.Thread):
    """Copies a child's stderr to ours as it comes, keeping its last bytes and whether it
    printed one of netspec's failure messages."""

    def __init__(self, pipe, out, lock: threading.Lock):
        super().__init__(daemon=True)
        self.pipe, self.out, self.lock = pipe, out, lock
        self.tail = b""
        self.spoke = False

    def run(self) -> None:
        fd = self.pipe.fileno()
        while chunk := os.read(fd, 65536):
            self.tail = (self.tail + chunk)[-4096:]
            self.spoke = self.spoke or any(m in self.tail for m in MESSAGE_MARKS)
            with self.lock:
                text_stream = not hasattr(self.out, "buffer") and hasattr(self.out, "encoding")
                self.out.write(chunk.decode(errors="replace") if text_stream else chunk)
                self.out.flush()

    def last_line(self) -> str:
        lines = [s.strip() for s in self.tail.decode(errors="replace").splitlines()]
        lines = [s for s in lines if s]
        return lines[-1][:300] if lines else ""


def _end_with_parent() -> None:
    """In a child, before exec: receive SIGTERM when the launcher dies (Linux), so that a
    launcher killed outright leaves no orphaned ranks."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG


def supervise(commands: list[list[str]], envs: list[dict[str, str]], names: list[str],
              grace: float = GRACE_S, kill_after: float = KILL_S) -> int:
    """Run one child per command (rank r: ``commands[r]`` with ``envs[r]``, called
    ``names[r]`` in messages) and supervise them as the module docstring says; the exit
    status."""
    out = getattr(sys.stderr, "buffer", None) or sys.stderr
    procs: list[subprocess.Popen] = []
    try:
        for command, env in zip(commands, envs):
            procs.append(subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, start_new_session=True,
                                          preexec_fn=_end_with_parent))
    except OSError as e:
        for p in procs:
            p.kill()
        raise NetspecError(f"could not start {names[len(procs)]}: {e}") from None
    lock = threading.Lock()
    forwards = [_Forward(p.stderr, out, lock) for p in procs]
    for f in forwards:
        f.start()

    received: list[int] = []

    def forward_signal(signum, frame):
        received.append(signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            handlers[signum] = signal.signal(signum, forward_signal)
    try:
        failed = _watch(procs, grace, kill_after, received)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    for f in forwards:
        f.join(timeout=5)
    if failed is None:
        if signal.SIGINT in received:
            return 130
        return 128 + signal.SIGTERM if received else 0
    rank, code = failed
    if code < 0:
        cause = f"was killed by signal {-code} ({signal.Signals(-code).name})"
    elif not any(f.spoke for f in forwards):
        last = forwards[rank].last_line()
        cause = f"exited with status {code}" + (f": {last}" if last else "")
    else:
        return 1                    # a child printed the one message
    with lock:
        print(f"netspec: error: {names[rank]} {cause}; every rank was stopped",
              file=sys.stderr, flush=True)
    return 1


def _watch(procs: list[subprocess.Popen], grace: float, kill_after: float,
           received: list[int]) -> tuple[int, int] | None:
    """Wait for every child; after the first failure, stop the others (``supervise``).
    Returns (rank, exit code; negative: the signal) of the first failure, or None. An exit
    with the status of a signal this launcher forwarded is not a failure."""
    expected = {0}
    failed = None
    terminate_at = kill_at = None
    while True:
        if signal.SIGINT in received:
            expected |= {130, -signal.SIGINT}
        if signal.SIGTERM in received:
            expected |= {128 + signal.SIGTERM, -signal.SIGTERM}
        codes = [p.poll() for p in procs]
        if failed is None:
            for rank, code in enumerate(codes):
                if code is not None and code not in expected:
                    failed = (rank, code)
                    terminate_at = time.monotonic() + grace
                    break
        if all(c is not None for c in codes):
            return failed
        now = time.monotonic()
        if terminate_at is not None and now >= terminate_at:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            terminate_at, kill_at = None, now + kill_after
        if kill_at is not None and now >= kill_at:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            kill_at = None
        time.sleep(0.05)
