"""Run bad-input cases, each in its own process, and print the results as JSON.

Used by tests/test_bad_inputs.py; also by hand: ``PYTHONPATH=. python
tests/bad_inputs/run_cases.py < cases.json`` in the folder the commands expect.

Input (stdin), JSON: ``{"cases": [{"id": ..., "argv": [...], "env": {...}}], "limit": seconds,
"jobs": n, "exec": bool, "out": folder for the captured output}``. ``argv`` is what follows
``netspec`` on the command line.

Two ways to run a case:

* ``exec``: ``python -m netspec.cli ARGV`` in a fresh interpreter, exactly as a user runs it
  (about 1.5 s a case, most of it importing netspec);
* fork (the default where ``os.fork`` exists): this process imports netspec once, then forks
  one child per case that calls the same ``netspec.cli:main`` with its own stdout, stderr,
  environment and exit code (a few milliseconds a case).

Either way a case that runs past ``limit`` seconds is killed and reported as timed out.
Output: ``{id: {"rc", "stdout", "stderr", "seconds", "timed_out"}}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path


def _preload() -> None:
    """Import what the commands import, once, before forking."""
    import importlib  # noqa: PLC0415

    for name in ("netspec.cli", "netspec.spec", "netspec.net", "netspec.report", "netspec.solvers",
                 "netspec.snapshot", "netspec.log", "netspec.progress", "rich.console", "rich.table"):
        # a module that fails to import here fails in the case that needs it, with its message
        with contextlib.suppress(Exception):
            importlib.import_module(name)


def _child(argv: list[str], env: dict, out: Path, err: Path) -> None:
    """In the forked child: run the command line and exit with its code (never returns)."""
    code = 1
    try:
        for fd, path in ((1, out), (2, err)):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        os.environ.update(env)
        from netspec.cli import main  # noqa: PLC0415

        main.main(args=argv, prog_name="netspec", standalone_mode=True)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - shows up as a traceback, which the test refuses
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _run_forked(cases: list[dict], limit: float, jobs: int, out: Path) -> dict:
    results: dict = {}
    pending = list(enumerate(cases))
    running: dict[int, tuple[int, dict, float]] = {}  # pid -> (index, case, start)
    sys.stdout.flush()
    sys.stderr.flush()
    while pending or running:
        while pending and len(running) < jobs:
            i, case = pending.pop(0)
            pid = os.fork()
            if pid == 0:
                _child(case["argv"], case.get("env", {}), out / f"{i}.out", out / f"{i}.err")
            running[pid] = (i, case, time.perf_counter())
        for pid, (i, case, start) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            elapsed = time.perf_counter() - start
            timed_out = False
            if not done and elapsed > limit:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                done, timed_out = pid, True
            if done:
                del running[pid]
                rc = os.waitstatus_to_exitcode(status)
                results[case["id"]] = {
                    "rc": rc, "seconds": elapsed, "timed_out": timed_out,
                    "stdout": (out / f"{i}.out").read_text(errors="replace"),
                    "stderr": (out / f"{i}.err").read_text(errors="replace")}
        time.sleep(0.002)
    return results


def _text(out: bytes | str | None) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else out or ""


def _run_exec(cases: list[dict], limit: float) -> dict:
    results: dict = {}
    for case in cases:
        env = {**os.environ, **case.get("env", {})}
        start = time.perf_counter()
        try:
            p = subprocess.run([sys.executable, "-m", "netspec.cli", *case["argv"]], env=env,
                               capture_output=True, text=True, errors="replace", timeout=limit,
                               stdin=subprocess.DEVNULL, check=False)
            rc, stdout, stderr, timed_out = p.returncode, p.stdout, p.stderr, False
        except subprocess.TimeoutExpired as e:
            rc, timed_out = -9, True
            stdout, stderr = _text(e.stdout), _text(e.stderr)
        results[case["id"]] = {"rc": rc, "seconds": time.perf_counter() - start,
                               "timed_out": timed_out, "stdout": stdout, "stderr": stderr}
    return results


def main() -> None:
    spec = json.load(sys.stdin)
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    if spec.get("exec") or not hasattr(os, "fork"):
        results = _run_exec(spec["cases"], spec["limit"])
    else:
        _preload()
        results = _run_forked(spec["cases"], spec["limit"], spec.get("jobs", 1), out)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
