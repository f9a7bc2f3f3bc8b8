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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), path.parent)
        raise SearchError(f"cannot put the search journal there: {blocker} is a file, not a "
                          "folder; give --storage a path in a folder", file=str(path)) from None
    # a worker killed while appending leaves the lock behind; appends take milliseconds, so
    # take a lock over after JOURNAL_LOCK_GRACE_S (Optuna's default: 30 s)
    lock = journal.JournalFileSymlinkLock(str(path), grace_period=JOURNAL_LOCK_GRACE_S)
    check_journal(path)
    try:
        return optuna.storages.JournalStorage(journal.JournalFileBackend(str(path), lock_obj=lock))
    except (KeyError, TypeError, ValueError, AssertionError, AttributeError, IndexError) as e:
        # check_journal passed every line, but their contents do not replay (a damaged value)
        why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise SearchError(f"Optuna cannot replay the search journal ({why}): {_DAMAGED}",
                          file=str(path)) from None


_DAMAGED = "the file is damaged or is not a search journal; give another --out or --storage"

#: the keys every operation of an Optuna journal holds, by op_code (Optuna's JournalOperation:
#: 0 create study ... 10 discard trials). Checked so that a damaged or foreign line is named,
#: instead of replayed into a KeyError.
JOURNAL_OPS = {0: ("study_name", "directions"), 1: ("study_id",), 2: ("study_id", "user_attr"),
               3: ("study_id", "system_attr"), 4: ("study_id", "datetime_start"),
               5: ("trial_id", "param_name", "param_value_internal", "distribution"),
               6: ("trial_id", "state", "values"), 7: ("trial_id", "step", "intermediate_value"),
               8: ("trial_id", "user_attr"), 9: ("trial_id", "system_attr"), 10: ()}


def check_journal(path: Path) -> None:
    """Refuse a journal file Optuna would stop on with a bare error (a folder, a line that is
    not UTF-8 JSON, a cut-off last line, a blank line, an object that is no journal operation):
    name the file, the line and what to do. Nothing is written."""
    if path.is_dir():
        raise SearchError("this is a folder, not a search journal file: give --storage a file "
                          "path (or --out a folder, for OUT/search.journal)", file=str(path))
    if not path.exists():
        return
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SearchError(f"cannot read the search journal: {e.strerror or e}", file=str(path)) from None
    lines = raw.split(b"\n")
    for number, line in enumerate(lines, 1):
        # Optuna writes an operation and its newline at once: only a worker killed while
        # writing leaves a last line without its newline
        unfinished = number == len(lines)
        if unfinished and not line:
            break                                  # the end of the file, after its last newline
        problem = _journal_line_problem(line)
        if problem is None:
            continue
        if unfinished and problem in ("not UTF-8 text", "not JSON"):
            why = ("its last line is cut off, as a worker killed while writing leaves it: remove "
                   "that line (the operation never completed) and run again")
        elif problem == "blank":
            why = ("this line is blank, and Optuna stops at a blank line: the file was edited "
                   "or damaged; remove the blank line")
        else:
            why = (f"this line is not an operation of an Optuna journal ({problem}): "
                   f"{_DAMAGED}")
        raise SearchError(f"line {number} of the search journal: {why}", file=str(path),
                          line=number)


def _journal_line_problem(line: bytes) -> str | None:
    """What is wrong with one line of a journal, or None."""
    if not line.strip():
        return "blank"
    try:
        op = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except ValueError:
        return "not JSON"
    if not isinstance(op, dict) or "op_code" not in op:
        return "JSON, but no object with an op_code"
    code = op["op_code"]
    if isinstance(code, bool) or not isinstance(code, int) or code not in JOURNAL_OPS:
        return f"op_code {json.dumps(code)} is none of Optuna's (0 to {max(JOURNAL_OPS)})"
    missing = [k for k in ("worker_id", *JOURNAL_OPS[code]) if k not in op]
    if missing:
        return f"op_code {code} without {', '.join(repr(k) for k in missing)}"
    attr = {2: "user_attr", 3: "system_attr", 8: "user_attr", 9: "system_attr"}.get(code)
    if attr and not (isinstance(op[attr], dict) and len(op[attr]) == 1):
        return f"op_code {code} sets one attribute, its '{attr}' holds {json.dumps(op[attr])[:80]}"
    return None


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


def open_study(cfg: SearchConfig, storage_obj, study_name: str, create: bool = True,
               storage_name: str | None = None):
    """Load the study (``create``: create it, or check that it has the same settings).

    An existing study's settings are compared before anything is written to the storage (even
    Optuna's ``create_study(load_if_exists=True)`` appends to a journal), so a refused worker
    leaves the storage as it was. ``storage_name`` (a path or redacted URL) names it in errors.
    """
    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kwargs = dict(study_name=study_name, storage=storage_obj, sampler=make_sampler(cfg.sampler, cfg.seed),
                  pruner=make_pruner(cfg.pruner, cfg.epochs))
    if not create:
        return optuna.load_study(**kwargs)
    settings = cfg.settings()
    try:
        study_id = storage_obj.get_study_id_from_name(study_name)
    except KeyError:
        study_id = None
    if study_id is not None:
        old = storage_obj.get_study_user_attrs(study_id).get(SETTINGS_ATTR)
        if old is not None and old != settings:
            diff = [k for k in settings if old.get(k) != settings[k]]
            where = f"in {storage_name}" if storage_name else "in this storage"
            raise SearchError(f"study '{study_name}' {where} was created with other settings "
                              f"({', '.join(f'{k}: {old.get(k)!r}, now {settings[k]!r}' for k in diff)}); "
                              "rerun with the same ones to continue it, or name a new study with --study",
                              field="--study")
        study = optuna.load_study(**kwargs)
    else:
        study = optuna.create_study(direction=cfg.direction, load_if_exists=True, **kwargs)
    if study.user_attrs.get(SETTINGS_ATTR) is None:
        study.set_user_attr(SETTINGS_ATTR, settings)
    return study


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
