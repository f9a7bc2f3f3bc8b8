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


def stand_in_options(fn):
    """Add ``--input-shape NAME=N,C,H,W`` (repeatable) and ``--no-data``: build the net with
    Input layers standing in for its data layers (``netspec/spec/inputs.py``); the wrapped
    function gets ``stand_ins``: (shapes by top name, declared) or None."""
    @functools.wraps(fn)
    def wrapper(*args, input_shapes=(), no_data=False, **kwargs):
        shapes = dict(parse_input_shape(s) for s in input_shapes)
        return fn(*args, stand_ins=(shapes, no_data) if shapes or no_data else None, **kwargs)
    with_flag = click.option("--no-data", is_flag=True,
                      help="Do not read the data layers: stand Input layers of the sizes they "
                           "declare (batch_size, crop_size, new_height/new_width) in for them, "
                           "and say what was assumed.")(wrapper)
    return click.option("--input-shape", "input_shapes", multiple=True, metavar="TOP=N,C,H,W",
                        help="Stand an Input layer of this shape in for the data layer that "
                             "makes TOP (its label tops get N); repeatable.")(with_flag)


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``data=1,3,227,227`` -> ('data', (1, 3, 227, 227))."""
    name, sep, dims = text.partition("=")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not sep or not name.strip() or not shape or min(shape) < 1:
        raise click.BadParameter(f"{text!r}: expected TOP=N,C,H,W with positive integers "
                                 "(e.g. data=1,3,227,227)", param_hint="--input-shape")
    return name.strip(), shape
