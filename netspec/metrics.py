"""Training metrics as JSON Lines, and the same events read back from a Caffe-format log.

One event per display or test step, as ``Solver._emit`` sends it to its listeners::

    {"event": "train", "iteration": 100, "lr": 0.0099, "wall_s": 1.9, "loss": 0.27,
     "outputs": {"loss": 0.25}, "weight_norms": {"conv1/0": 4.1, "conv1/1": 0.03, ...}}
    {"event": "test", "iteration": 500, "lr": 0.0096, "wall_s": 9.8, "net": 0,
     "outputs": {"accuracy": 0.97, "loss": 0.09}, "weight_norms": {...}}

``MetricsWriter(path)`` is such a listener: it appends one JSON object per line to ``path`` and
flushes after each, so a killed run keeps every event it reported. ``read_metrics(path)`` reads
them back (a half-written last line from a killed run is skipped). ``parse_caffe_log(text)``
builds the same dicts from a Caffe-format text log -- netspec's own stderr or a real Caffe
log -- with the regular expressions of Caffe's ``tools/extra/parse_log.py``; a log carries no
weight norms, so ``weight_norms`` is ``{}`` there.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from .errors import NetspecError

METRICS_FILE = "metrics.jsonl"


def _plain(value: Any) -> Any:
    """JSON-safe copy: numpy scalars/arrays to Python numbers/lists, NaN/Inf to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if hasattr(value, "tolist"):       # numpy / cupy scalar or array
        return _plain(value.tolist())
    if isinstance(value, float) or hasattr(value, "__float__"):
        f = float(value)
        return f if math.isfinite(f) else None
    return str(value)


class MetricsWriter:
    """A solver listener writing one JSON object per event to ``path`` (JSON Lines).

    With ``append=True`` (the default) an existing file is continued -- what a resumed run
    wants; readers keep the last event of each iteration -- and with ``append=False`` it is
    started afresh. Every event is flushed at once::

        writer = MetricsWriter("runs/lenet/metrics.jsonl")
        solver.listeners.append(writer)
        ...
        writer.close()
    """

    def __init__(self, path: str | Path, append: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115

    def __call__(self, event: dict) -> None:
        if self._fh is None:
            raise ValueError(f"MetricsWriter for {self.path} is closed")
        self._fh.write(json.dumps(_plain(event), allow_nan=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LogFileWriter:
    """A ``CaffeLog`` listener copying every log line to a text file (``log.listeners``).

    The file can be read back with ``parse_caffe_log`` or Caffe's own ``parse_log.py``.
    ``append`` as for ``MetricsWriter``.
    """

    def __init__(self, path: str | Path, append: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115

    def __call__(self, line: str) -> None:
        if self._fh is not None:
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def metrics_path(path: str | Path) -> Path:
    """``path`` itself, or ``path/metrics.jsonl`` when ``path`` is a directory."""
    path = Path(path)
    return path / METRICS_FILE if path.is_dir() else path


def read_metrics(path: str | Path) -> list[dict]:
    """The events of a metrics file (or of ``DIR/metrics.jsonl``), in file order."""
    path = metrics_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NetspecError("metrics file not found", file=str(path)) from None
    lines = text.splitlines()
    events = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) and not text.endswith("\n"):
                break  # the last line of a run killed while writing it
            raise NetspecError(f"not a JSON object: {e.msg}", file=str(path), line=i) from None
        if not isinstance(obj, dict):
            raise NetspecError("each line must be a JSON object", file=str(path), line=i)
        events.append(obj)
    return events


# -- Caffe-format text logs ------------------------------------------------------------------
# The expressions of Caffe's tools/extra/parse_log.py, and its "Iteration N (x iter/s, ...),
# loss = X" variant of newer Caffe versions.
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
_ITER_LOSS = re.compile(rf"Iteration (\d+)(?: \([^)]*\))?, loss = ({_NUM})")
_ITER_LR = re.compile(rf"Iteration (\d+), lr = ({_NUM})")
_TESTING = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
_TRAIN_OUT = re.compile(rf"Train net output #(\d+): (\S+) = ({_NUM})")
_TEST_OUT = re.compile(rf"Test net output #(\d+): (\S+) = ({_NUM})")
_STAMP = re.compile(r"^[IWEF](\d{4} \d{2}:\d{2}:\d{2}\.\d+)")


def _stamp(line: str) -> datetime | None:
    m = _STAMP.match(line)
    if not m:
        return None
    try:  # a leap year, so that 0229 parses; the log carries no year
        return datetime.strptime("2000" + m.group(1), "%Y%m%d %H:%M:%S.%f")
    except ValueError:
        return None


def _looks_like_text(value: str) -> bool:
    return "\n" in value or "] " in value or len(value) > 4096


def parse_caffe_log(text_or_path: str | Path | Iterable[str]) -> list[dict]:
    """Train and test events from a Caffe-format log (text, a path, or an iterable of lines).

    * ``Iteration N, loss = X`` starts a train event (``loss`` = X, the smoothed loss);
      ``Train net output #k: name = V`` lines after it fill ``outputs``;
      ``Iteration N, lr = X`` sets its ``lr``.
    * ``Iteration N, Testing net (#i)`` starts a test event of net ``i``; the
      ``Test net output #k: name = V`` lines after it fill ``outputs`` (an output with several
      values, e.g. per class, is averaged, as the solver's events do).
    * ``lr`` of a test event is that of the train event at the same iteration (``None`` when
      the log has none, e.g. the test after the last iteration).
    * ``wall_s`` is the time since the log's first timestamped line (``None`` without stamps).
    """
    if isinstance(text_or_path, Path) or (isinstance(text_or_path, str)
                                          and not _looks_like_text(text_or_path)):
        path = Path(text_or_path)
        try:
            lines: Iterable[str] = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            raise NetspecError("log file not found", file=str(path)) from None
    elif isinstance(text_or_path, str):
        lines = text_or_path.splitlines()
    else:
        lines = text_or_path

    events: list[dict] = []
    values: list[dict[str, list[float]]] = []   # per event: output name -> values
    current: dict | None = None
    current_vals: dict[str, list[float]] = {}
    lrs: dict[int, float] = {}
    t0: datetime | None = None
    last: datetime | None = None
    offset = 0.0   # seconds added when the clock wraps around the new year

    def wall() -> float | None:
        if t0 is None or last is None:
            return None
        return round((last - t0).total_seconds() + offset, 6)

    def start(kind: str, it: int, **extra) -> dict:
        ev = {"event": kind, "iteration": it, "lr": None, "wall_s": wall(), "outputs": {},
              **extra, "weight_norms": {}}
        events.append(ev)
        values.append({})
        return ev

    for raw in lines:
        line = raw.rstrip("\n")
        stamp = _stamp(line)
        if stamp is not None:
            if t0 is None:
                t0 = stamp
            elif last is not None and stamp < last and (last - stamp).days > 300:
                # Dec 31 -> Jan 1: the stamps carry no year; count on from the year after
                offset += (stamp.replace(year=2001) - stamp).total_seconds()
            last = stamp
        m = _TESTING.search(line)
        if m:
            current = start("test", int(m.group(1)), net=int(m.group(2)))
            current_vals = values[-1]
            continue
        m = _ITER_LOSS.search(line)
        if m:
            current = start("train", int(m.group(1)), loss=float(m.group(2)))
            current_vals = values[-1]
            continue
        m = _ITER_LR.search(line)
        if m:
            it, lr = int(m.group(1)), float(m.group(2))
            lrs[it] = lr
            for ev in reversed(events):
                if ev["event"] == "train" and ev["iteration"] == it:
                    ev["lr"] = lr
                    break
            continue
        m = _TRAIN_OUT.search(line) or _TEST_OUT.search(line)
        if m and current is not None and m.re is (_TRAIN_OUT if current["event"] == "train" else _TEST_OUT):
            current_vals.setdefault(m.group(2), []).append(float(m.group(3)))

    for ev, vals in zip(events, values):
        ev["outputs"] = {name: (v[0] if len(v) == 1 else sum(v) / len(v)) for name, v in vals.items()}
        if ev["lr"] is None and ev["iteration"] in lrs:
            ev["lr"] = lrs[ev["iteration"]]
    return events


def load_run(path: str | Path) -> list[dict]:
    """Events of one run: a metrics.jsonl, a directory holding one, or a Caffe text log."""
    path = Path(path)
    if path.is_dir():
        target = path / METRICS_FILE
        if target.exists():
            return read_metrics(target)
        logs = sorted(path.glob("*.log")) + sorted(path.glob("*.log.txt"))
        if len(logs) == 1:
            return parse_caffe_log(logs[0])
        raise NetspecError(f"no {METRICS_FILE} in this directory"
                           + (f" and {len(logs)} *.log files; name one" if logs else
                              " (write one with `netspec train SOLVER --log-dir DIR`)"),
                           file=str(path))
    if not path.exists():
        raise NetspecError("no such file or directory", file=str(path))
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        return read_metrics(path)
    with open(path, encoding="utf-8", errors="replace") as fh:
        head = fh.read(4096).lstrip()
    if head.startswith("{"):
        return read_metrics(path)
    return parse_caffe_log(path)


def run_label(path: str | Path) -> str:
    """A short legend label: the directory's name for ``DIR`` or ``DIR/metrics.jsonl``, else the stem."""
    path = Path(path)
    if path.is_dir():
        return path.resolve().name or str(path)
    if path.name == METRICS_FILE:
        return path.resolve().parent.name or path.stem
    return path.stem
