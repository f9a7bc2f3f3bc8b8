"""Progress bars: a rich bar on a terminal, nothing extra otherwise (piped, captured, quiet)."""

from __future__ import annotations

import contextlib
import sys

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


@contextlib.contextmanager
def _bar(columns: list, total: int | None, start: int, quiet: bool, stream, **fields):
    """Yield (Progress, task id), or None when quiet or ``stream`` is not a TTY."""
    stream = stream if stream is not None else sys.stderr
    if quiet or not stream.isatty():
        yield None
        return
    with Progress(*columns, console=Console(file=stream), transient=False) as bar:
        yield bar, bar.add_task("", total=total, completed=start, **fields)


@contextlib.contextmanager
def progress_for(total: int, start: int = 0, quiet: bool = False, stream=None):
    """Yield a callback ``(iteration, loss)`` that advances a bar, or None when not a TTY."""
    columns = [TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:.1f} it/s"), TextColumn("loss {task.fields[loss]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with _bar(columns, total, start, quiet, stream, loss="-", rate=0.0) as held:
        if held is None:
            yield None
            return
        bar, task = held

        def update(iteration: int, loss: float) -> None:
            t = bar.tasks[0]
            bar.update(task, completed=iteration, loss=f"{loss:.4g}", rate=t.speed or 0.0)

        yield update


@contextlib.contextmanager
def count_progress(what: str, quiet: bool = False, stream=None):
    """Yield a callback ``(done, total)`` that advances a bar of items labelled ``what``, or
    None when not a TTY."""
    columns = [TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with _bar(columns, None, 0, quiet, stream) as held:
        if held is None:
            yield None
            return
        bar, task = held
        yield lambda done, total: bar.update(task, completed=done, total=total)
