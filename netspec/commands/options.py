"""What every command shares: ``friendly`` (errors as one paragraph, ``--debug`` for a
traceback) and ``--threads N``. Not a command itself (``NOT_COMMANDS``)."""

from __future__ import annotations

import functools
import sys

import click

from .. import parallel
from ..errors import NetspecError


def friendly(fn):
    """Turn NetspecError (and I/O errors) into a one-paragraph message and exit code 1."""
    @functools.wraps(fn)
    def wrapper(*args, debug: bool = False, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NetspecError as e:
            if debug:
                raise
            click.echo(f"netspec: error: {e}", err=True)
            sys.exit(1)
        except (OSError, MemoryError) as e:
            if debug:
                raise
            click.echo(f"netspec: error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("netspec: interrupted", err=True)
            sys.exit(130)
        except Exception as e:  # noqa: BLE001 - a bug: say so briefly, trace only on --debug
            if debug:
                raise
            click.echo(f"netspec: internal error: {type(e).__name__}: {e}. This is a bug in "
                       "netspec; run again with --debug for a traceback and report it.", err=True)
            sys.exit(2)
    return click.option("--debug", is_flag=True, help="Show a full traceback on errors.")(wrapper)


def threads_option(fn):
    """Add ``--threads N``: the CPU threads of this run (``netspec/parallel.py``)."""
    @functools.wraps(fn)
    def wrapper(*args, threads: int | None = None, **kwargs):
        if threads is not None:
            parallel.set_num_threads(threads)
        return fn(*args, **kwargs)
    return click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N",
                        help="CPU threads (default: $NETSPEC_NUM_THREADS, else BLAS's thread "
                             "count, $OMP_NUM_THREADS or the number of cores, at most 8)."
                        )(wrapper)
