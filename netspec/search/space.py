"""The search space: ``--param PATH=KIND:ARGS``, one searched solver or layer field each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from ..errors import suggest
from .config import SearchError

KINDS = ("loguniform", "uniform", "int", "logint", "choice")
#: solver fields the search sets itself (epochs -> iterations, one validation net, no snapshots)
FORCED_SOLVER_FIELDS = ("net", "train_net", "test_net", "test_iter", "test_interval",
                        "test_initialization", "test_state", "max_iter", "display", "snapshot",
                        "snapshot_after_train")
#: Data layer fields that define the records the validation split is carved from
SPLIT_FIELDS = ("source", "split", "offset", "limit", "rand_skip")


@dataclass(frozen=True)
class Param:
    """One searched field: ``path`` (``base_lr``, ``layer.fc1.dropout_param.dropout_ratio``)."""

    path: str
    kind: str                    # loguniform | uniform | int | logint | choice
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple = ()
    text: str = ""

    @property
    def log(self) -> bool:
        return self.kind in ("loguniform", "logint")

    @property
    def is_layer(self) -> bool:
        return self.path.split(".")[0] == "layer"

    def suggest(self, trial) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.path, list(self.choices))
        if self.kind in ("int", "logint"):
            return trial.suggest_int(self.path, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.path, float(self.low), float(self.high), log=self.log)

    def probes(self) -> list:
        """Values that must all be valid: the bounds, or every choice."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def contains(self, value) -> bool:
        if self.kind == "choice":
            return value in self.choices
        return self.low <= value <= self.high

    def describe(self) -> dict:
        return {"name": self.path, "kind": self.kind, "low": self.low, "high": self.high,
                "choices": list(self.choices), "log": self.log}


def _number(text: str, what: str, param: str, integer: bool = False):
    try:
        value = yaml.safe_load(text)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            value = float(text)
        if integer:
            if float(value) != int(value):
                raise ValueError
            return int(value)
        return float(value)
    except (ValueError, TypeError, yaml.YAMLError):
        kind = "an integer" if integer else "a number"
        raise SearchError(f"--param {param}: the {what} '{text}' is not {kind}", field="--param") from None


def parse_param(text: str) -> Param:
    """``base_lr=loguniform:1e-6:1e-2``, ``x=uniform:a:b``, ``x=int:a:b``, ``x=logint:a:b``,
    ``x=choice:a,b,c`` (each choice parsed as a YAML scalar)."""
    example = "e.g. --param base_lr=loguniform:1e-6:1e-2"
    if "=" not in text:
        raise SearchError(f"--param {text}: expected PATH=KIND:ARGS ({example})", field="--param")
    path, spec = (s.strip() for s in text.split("=", 1))
    if not path:
        raise SearchError(f"--param {text}: empty path ({example})", field="--param")
    kind, _, rest = spec.partition(":")
    kind = kind.strip()
    if kind not in KINDS:
        raise SearchError(f"--param {text}: unknown kind '{kind}'.{suggest(kind, KINDS)} Kinds: "
                          "loguniform:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH, logint:LOW:HIGH, "
                          "choice:A,B,C", field="--param")
    parts = path.split(".")
    if parts[0] in FORCED_SOLVER_FIELDS:
        raise SearchError(f"--param {text}: '{parts[0]}' is set by the search itself (--epochs, "
                          "the validation split); search another field", field="--param")
    if parts[0] == "layer" and len(parts) >= 4 and parts[2] == "data_param" and parts[3] in SPLIT_FIELDS:
        raise SearchError(f"--param {text}: the Data layer's {parts[3]} defines the records the "
                          "validation split is carved from; fix it with --set instead", field="--param")
    if kind == "choice":
        if not rest.strip():
            raise SearchError(f"--param {text}: choice needs values, e.g. choice:0.1,0.2", field="--param")
        choices = []
        for raw in rest.split(","):
            try:
                choices.append(yaml.safe_load(raw.strip()))
            except yaml.YAMLError:
                choices.append(raw.strip())
        if len(set(map(repr, choices))) != len(choices):
            raise SearchError(f"--param {text}: a choice is repeated", field="--param")
        return Param(path, kind, choices=tuple(choices), text=text)
    bounds = rest.split(":")
    if len(bounds) != 2:
        raise SearchError(f"--param {text}: {kind} takes two bounds, {kind}:LOW:HIGH", field="--param")
    integer = kind in ("int", "logint")
    low = _number(bounds[0], "lower bound", text, integer)
    high = _number(bounds[1], "upper bound", text, integer)
    if not low < high:
        raise SearchError(f"--param {text}: the lower bound must be below the upper bound", field="--param")
    if kind in ("loguniform", "logint") and low <= 0:
        raise SearchError(f"--param {text}: a log scale needs a lower bound above 0", field="--param")
    return Param(path, kind, low, high, text=text)


def override(path: str, value: Any, label: str | None = None) -> tuple[str, list[str], Any]:
    """``path = value`` as an override, the (text, path parts, value) that ``split_sets`` makes."""
    return (label or f"{path}={value}", path.split("."), value)


def split_values(values: dict[str, Any]) -> tuple[list, list]:
    """Searched values as (solver overrides, layer overrides)."""
    solver = [override(k, v) for k, v in values.items() if k.split(".")[0] != "layer"]
    layer = [override(k, v) for k, v in values.items() if k.split(".")[0] == "layer"]
    return solver, layer
