"""Run by tests/test_launch.py: the launcher's supervision with children that need no GPU.

``launch_child.py launch BEHAVIOUR N FOLDER`` runs ``netspec.distributed.launch.supervise`` over
N children ``launch_child.py child BEHAVIOUR FOLDER`` with the environments the launcher gives
(GPUs 0..N-1), and exits with its status. A child writes ``FOLDER/rank<r>.json`` (what its
environment said, its pid and process group) and ``FOLDER/rank<r>.ready``, then per BEHAVIOUR:

* ``ok``: exits 0;
* ``raise``: rank 1 raises ValueError; the others wait for 120 s (so only the launcher can
  end them in time);
* ``kill``: rank 1 SIGKILLs itself; the others wait for 120 s;
* ``message``: rank 1 prints a netspec error line, as ``netspec train`` does, and exits 1; the
  others wait for 120 s;
* ``wait``: every child waits for 120 s;
* ``sigint``: every child waits for SIGINT for 120 s, appends ``SIGINT`` to
  ``FOLDER/rank<r>.signals`` each time it gets one and exits 130 at the first.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from netspec.distributed import launch
from netspec.distributed.connect import DEVICE_VAR, NCCL_ID_VAR, RANK_VAR, SEED_VAR, SIZE_VAR

WAIT_S = 120


def child(behaviour: str, folder: Path) -> None:
    rank = int(os.environ[RANK_VAR])
    env = {k: os.environ.get(k) for k in (RANK_VAR, SIZE_VAR, DEVICE_VAR, NCCL_ID_VAR, SEED_VAR)}
    env["pid"], env["pgid"] = os.getpid(), os.getpgid(0)
    (folder / f"rank{rank}.json").write_text(json.dumps(env))
    if behaviour == "sigint":
        def on_sigint(signum, frame):
            with open(folder / f"rank{rank}.signals", "a") as f:
                f.write("SIGINT\n")
            time.sleep(0.5)          # a second forwarded SIGINT would be recorded meanwhile
            sys.exit(130)
        signal.signal(signal.SIGINT, on_sigint)
    (folder / f"rank{rank}.ready").write_text("")
    if behaviour == "ok":
        return
    if rank == 1 and behaviour == "raise":
        raise ValueError("boom on purpose")
    if rank == 1 and behaviour == "message":
        print("netspec: error: rank 1 of 2 failed at iteration 3: bad data", file=sys.stderr)
        sys.exit(1)
    if rank == 1 and behaviour == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(WAIT_S)


def run_launcher(behaviour: str, n: int, folder: Path) -> int:
    devices = list(range(n))
    envs = launch.child_environments(devices, "ab" * 128, seed=1234)
    command = [sys.executable, __file__, "child", behaviour, str(folder)]
    names = [f"rank {r} of {n} (GPU {d})" for r, d in enumerate(devices)]
    return launch.supervise([command] * n, envs, names)


if __name__ == "__main__":
    if sys.argv[1] == "child":
        child(sys.argv[2], Path(sys.argv[3]))
    else:
        sys.exit(run_launcher(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])))
