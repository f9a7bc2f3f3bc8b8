"""Hyperparameter search (``netspec search``) on Optuna, with a validation split carved from
the training data (``docs/search.md``).

One trial trains the solver's net with sampled values for the ``--param`` paths (solver fields
such as ``base_lr``, layer fields such as ``layer.fc1.dropout_param.dropout_ratio``) for a fixed
number of epochs and scores it on a held-out part of the training data; the test split is never
read. Modules: ``config`` (settings), ``space`` (``--param``), ``split`` (the validation split),
``trial`` (one trial's solver, net and training), ``study`` (Optuna storage, sampler, pruner),
``workers`` (the trial loop of one process), ``results`` (ranking, files, best YAML) and ``run``
(the whole search).
"""

from .config import SearchConfig, SearchError, default_paths
from .results import SearchOutcome, ranked_trials, summarize, write_best_yaml
from .run import run_search
from .space import Param, parse_param
from .split import ValidationSplit
from .study import open_storage, open_study, require_optuna
from .trial import Problem
from .workers import reclaim_abandoned, work

__all__ = ["SearchConfig", "SearchError", "SearchOutcome", "Param", "Problem", "ValidationSplit",
           "default_paths", "open_storage", "open_study", "parse_param", "ranked_trials",
           "reclaim_abandoned", "require_optuna", "run_search", "summarize", "work",
           "write_best_yaml"]
