"""A search worker: ask the study for trials and run them until the requested number is
finished. A running trial carries its worker's host, pid and a heartbeat; a trial whose worker
is gone is marked failed ('abandoned') by the next worker that looks."""

from __future__ import annotations

import math
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from ..errors import DivergenceError, NetspecError
from .config import SearchConfig, default_paths
from .results import fmt_value, metric_label
from .space import parse_param
from .study import ask, count_trials, mix_seed, open_storage, open_study, require_optuna
from .trial import Problem

HEARTBEAT_S = 30.0           # a running trial refreshes its 'heartbeat' attribute this often
STALE_S = 600.0              # a running trial without a heartbeat for this long is abandoned
ORPHAN_S = 60.0              # ... and one that never got its worker's attributes, after this
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


def reclaim_abandoned(study, storage_obj, now: float | None = None) -> list[int]:
    """Mark RUNNING trials whose worker is gone as failed ('abandoned'): on this host, a worker
    process that no longer exists; anywhere, no heartbeat for STALE_S seconds, or no worker
    attributes at all a minute after the start (a worker killed right after creating it)."""
    TrialState = require_optuna().trial.TrialState
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


def work(cfg: SearchConfig, problem: Problem | None = None, echo: Callable[[str], None] | None = None,
         worker: str = "") -> int:
    """Run trials until ``cfg.trials`` are finished (or being run by other workers); return how
    many this worker finished."""
    optuna = require_optuna()
    TrialState = optuna.trial.TrialState
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
            c = count_trials(study)
            if c["finished"] + c["running"] >= cfg.trials:
                break
            trial = ask(study, {"host": HOST, "pid": os.getpid(), "worker": me, "heartbeat": time.time()})
            values = {p.path: p.suggest(trial) for p in params}
            seed = mix_seed(cfg.seed, trial.number) % (2 ** 31)

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
            except Exception as e:  # noqa: BLE001 - this trial's own failure: record it, go on
                # (a sampled value the machine cannot hold, a shape the net refuses, ...)
                state, note = TrialState.FAIL, f"failed: {type(e).__name__}: {e}"
                trial.set_user_attr("failed", True)
                trial.set_user_attr("error", f"{type(e).__name__}: {e}")
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
                c = count_trials(study)
                shown = " | ".join(f"{k}: {fmt_value(v)}" for k, v in values.items())
                head = (f"{metric_label(cfg.metric)}: {value:.4g}" if value is not None
                        else note or state.name.lower())
                echo(f"Trial {trial.number} ({head}) | {shown}  [{wall:.1f} s, {c['finished']}/"
                     f"{cfg.trials} finished{', worker ' + worker if worker else ''}]")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return mine


def worker_main(cfg_dict: dict, index: int) -> None:
    """Entry point of a --jobs worker process."""
    cfg = SearchConfig(**cfg_dict)
    try:
        work(cfg, worker=str(index))
    except KeyboardInterrupt:
        sys.exit(130)
    except NetspecError as e:
        print(f"netspec: error: worker {index}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
