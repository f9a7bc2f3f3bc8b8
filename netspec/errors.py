"""Typed errors. Every user-facing failure is a NetspecError: one paragraph naming file, line, field."""

from __future__ import annotations

import difflib


def suggest(word: str, choices) -> str:
    """' Did you mean 'x'?' for the nearest valid choice, or ''."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


class NetspecError(Exception):
    """A user-facing error. ``str(e)`` is the whole message shown on the command line.

    file/line/field locate the problem in the user's YAML when known.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        super().__init__(self.format())

    def format(self) -> str:
        where = ""
        if self.file:
            where = str(self.file)
            if self.line:
                where += f":{self.line}"
            where += ": "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


class SpecError(NetspecError):
    """The net or solver file is invalid (syntax, unknown key, bad value, bad graph)."""


class ShapeError(NetspecError):
    """Blob shapes do not fit a layer."""


class DataError(NetspecError):
    """A data source is missing or corrupt."""


class DivergenceError(NetspecError):
    """Training produced a NaN or Inf."""


class SnapshotError(NetspecError):
    """A snapshot or weights file cannot be read or does not fit the net."""
