"""Caffe-format log lines on stderr (parseable by Caffe's tools/extra/parse_log.py).

``I1126 12:34:56.789012 12345 solver.py:0] Iteration 100, loss = 0.25``
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from typing import TextIO


class CaffeLog:
    def __init__(self, stream: TextIO | None = None, quiet: bool = False):
        self._stream = stream
        self.quiet = quiet
        self.pid = os.getpid()
        self.listeners = []

    @property
    def stream(self) -> TextIO:
        """The given stream, else the current sys.stderr (so a progress bar can redirect it)."""
        return self._stream if self._stream is not None else sys.stderr

    def info(self, msg: str, source: str = "solver.py") -> None:
        if self.quiet and not self.listeners:
            return
        stamp = datetime.now().strftime("%m%d %H:%M:%S.%f")
        for line in msg.splitlines() or [""]:
            text = f"I{stamp} {self.pid} {source}:0] {line}"
            for listener in self.listeners:
                listener(text)
            if not self.quiet:
                self.stream.write(text + "\n")
        if not self.quiet:
            self.stream.flush()

    def warn(self, msg: str, source: str = "solver.py") -> None:
        stamp = datetime.now().strftime("%m%d %H:%M:%S.%f")
        self.stream.write(f"W{stamp} {self.pid} {source}:0] {msg}\n")
        self.stream.flush()


def fmt(x: float) -> str:
    """Caffe prints floats with 6 significant digits (std::ostream default)."""
    return f"{x:.6g}"


class Timer:
    def __init__(self):
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0
