"""Training progress: a rich progress bar on a terminal, nothing extra otherwise."""

from __future__ import annotations

import contextlib
import sys

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


@contextlib.contextmanager
def progress_for(total: int, start: int = 0, quiet: bool = False, stream=None):
    """Yield a callback ``(iteration, loss)`` that advances a bar, or None when not a TTY."""
    stream = stream if stream is not None else sys.stderr
    if quiet or not stream.isatty():
        yield None
        return
    columns = [TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:.1f} it/s"), TextColumn("loss {task.fields[loss]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=Console(file=stream), transient=False) as bar:
        task = bar.add_task("train", total=total, completed=start, loss="-", rate=0.0)

        def update(iteration: int, loss: float) -> None:
            t = bar.tasks[0]
            bar.update(task, completed=iteration, loss=f"{loss:.4g}", rate=t.speed or 0.0)

        yield update
