"""A search's settings (what ``netspec search`` was given), its error type, and the default
study name, output folder and storage."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import NetspecError


class SearchError(NetspecError):
    """A search cannot start or go on (bad --param, missing Optuna, mismatched study)."""

    def format(self) -> str:
        if self.field and not self.file and self.message.startswith(f"{self.field} "):
            return self.message  # the message names its option already
        return super().format()


@dataclass
class SearchConfig:
    solver: str
    params: list[str]
    sets: list[str] = field(default_factory=list)
    trials: int = 100
    epochs: int = 10
    val_fraction: float = 0.2
    seed: int = 0
    sampler: str = "tpe"
    pruner: str = "median"
    metric: str | None = None
    direction: str | None = None
    jobs: int = 1
    storage: str | None = None
    study: str | None = None
    out: str | None = None
    best_out: str | None = None
    plot: str | None = None
    show: int = 10
    gpu: bool = False
    quiet: bool = False

    def settings(self) -> dict:
        """What defines a study's objective; a rerun or another worker must give the same.
        Trials, jobs, sampler, pruner and the outputs may differ between runs."""
        return {"params": sorted(self.params), "sets": list(self.sets), "epochs": self.epochs,
                "val_fraction": self.val_fraction, "seed": self.seed, "metric": self.metric,
                "direction": self.direction, "solver": Path(self.solver).name}


#: what a study name may be: it names files and folders, so no separators and no '..'
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def default_paths(cfg: SearchConfig) -> tuple[str, Path, str]:
    """(study name, output folder, storage) with the defaults filled in."""
    study = cfg.study or Path(cfg.solver).stem
    if not STUDY_NAME.fullmatch(study):
        inside = (f"a study inside {cfg.storage} and " if cfg.storage and "://" not in cfg.storage
                  else "")
        raise SearchError(f"the study name {study!r} is not a plain name: use letters, digits, "
                          f"'.', '_' and '-', starting with a letter or digit (it names {inside}"
                          "files inside the output folder, never a path)", field="--study")
    storage = cfg.storage
    if cfg.out:
        out = Path(cfg.out)
    elif storage and storage.startswith("sqlite:///"):
        out = Path(storage[len("sqlite:///"):]).parent
    elif storage and "://" not in storage:
        out = Path(storage).parent
    else:
        out = Path(f"search-{study}")
    if storage is None:
        storage = str(out / "search.journal")
    return study, out, storage
