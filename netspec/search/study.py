"""The Optuna study: storage (a journal file, or an RDB URL), sampler, pruner and trial counts.

Workers share one storage, so a search can run in several processes (``--jobs``) or on several
machines (same ``--storage`` and ``--study``); the settings a study was created with are kept
in it, and a worker with other settings is refused.
"""

from __future__ import annotations

import importlib.util
import json
from datetime import datetime
from pathlib import Path

import numpy as np

from .config import SearchConfig, SearchError

INSTALL_HINT = "pip install 'netspec[search]'  (or: pip install 'optuna>=4' 'psycopg[binary]>=3.1')"
SETTINGS_ATTR = "netspec_search"
JOURNAL_LOCK_GRACE_S = 5     # a journal lock older than this is from a killed worker


def require_optuna():
    """The optuna module, or a SearchError that says how to install it."""
    try:
        import optuna  # noqa: PLC0415 - optional: the 'search' extra
    except ImportError:
        raise SearchError(f"netspec search needs Optuna, which is not installed: {INSTALL_HINT}") from None
    return optuna


def mix_seed(seed: int, number: int) -> int:
    """A seed that depends on (seed, trial number) only."""
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
            self._inner = make(mix_seed(seed, trial.number))
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
            raise SearchError(f"--storage {redact(storage)}: the database driver is not installed: "
                              f"{INSTALL_HINT} (PostgreSQL: psycopg or psycopg2-binary; MySQL: PyMySQL)",
                              field="--storage") from None
        except Exception as e:  # noqa: BLE001 - sqlalchemy's connection errors: say which URL
            raise SearchError(f"--storage {redact(storage)}: cannot open the database: "
                              f"{str(e).splitlines()[0]}", field="--storage") from None
    journal = optuna.storages.journal
    path = Path(storage)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a worker killed while appending leaves the lock behind; appends take milliseconds, so
    # take a lock over after JOURNAL_LOCK_GRACE_S (Optuna's default: 30 s)
    lock = journal.JournalFileSymlinkLock(str(path), grace_period=JOURNAL_LOCK_GRACE_S)
    check_journal(path)
    return optuna.storages.JournalStorage(journal.JournalFileBackend(str(path), lock_obj=lock))


def check_journal(path: Path) -> None:
    """Refuse a journal file with a line that is not one JSON operation (Optuna would stop on
    it with a bare JSON error): name the file, the line and what to do."""
    if not path.exists():
        return
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SearchError(f"cannot read the search journal: {e}", file=str(path)) from None
    lines = text.split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            op = json.loads(line)
        except ValueError:
            op = None
        if isinstance(op, dict) and "op_code" in op:
            continue
        last = number == len(lines) or (number == len(lines) - 1 and not lines[-1])
        why = ("its last line is cut off, as a worker killed while writing leaves it: remove "
               "that line (the operation never completed) and run again" if last else
               "this line is not an operation of an Optuna journal: the file is damaged or is "
               "not a search journal; give another --out or --storage")
        raise SearchError(f"line {number} of the search journal: {why}", file=str(path),
                          line=number)


def _with_driver(url: str) -> str:
    """``postgresql://`` with the PostgreSQL driver that is installed (SQLAlchemy 2.1 defaults to
    psycopg 3, older versions to psycopg2): either package works."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
                if importlib.util.find_spec(module) is not None:
                    return f"postgresql+{driver}://" + url[len(scheme):]
    return url


def redact(url: str) -> str:
    """The URL without its password."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    cred, host = rest.rsplit("@", 1)
    user = cred.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in cred else url


def open_study(cfg: SearchConfig, storage_obj, study_name: str, create: bool = True):
    """Load the study (``create``: create it, or check that it has the same settings)."""
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


def count_trials(study) -> dict[str, int]:
    """Trials per state: complete, pruned, diverged, failed (the trial's own error, e.g. a
    sampled size the machine cannot hold), running, and finished (all but running)."""
    TrialState = require_optuna().trial.TrialState
    c = {"complete": 0, "pruned": 0, "diverged": 0, "failed": 0, "running": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            c["complete"] += 1
        elif t.state == TrialState.PRUNED:
            c["pruned"] += 1
        elif t.state == TrialState.FAIL and t.user_attrs.get("diverged"):
            c["diverged"] += 1
        elif t.state == TrialState.FAIL and t.user_attrs.get("failed"):
            c["failed"] += 1
        elif t.state == TrialState.RUNNING:
            c["running"] += 1
    c["finished"] = c["complete"] + c["pruned"] + c["diverged"] + c["failed"]
    return c


def ask(study, attrs: dict):
    """``study.ask()`` with the worker's attributes written in the same storage operation as
    the new trial, so a worker killed at any moment leaves no running trial without an owner."""
    optuna = require_optuna()
    try:
        storage, study_id = study._storage, study._study_id
    except AttributeError:  # pragma: no cover - a future Optuna without these: the plain way
        trial = study.ask()
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        return trial
    if hasattr(study, "_thread_local"):
        study._thread_local.cached_all_trials = None  # as ask() does: see the newest trials
    template = optuna.trial.FrozenTrial(
        number=-1, state=optuna.trial.TrialState.RUNNING, value=None, datetime_start=datetime.now(),
        datetime_complete=None, params={}, distributions={}, user_attrs=dict(attrs), system_attrs={},
        intermediate_values={}, trial_id=-1)
    return optuna.Trial(study, storage.create_new_trial(study_id, template_trial=template))
