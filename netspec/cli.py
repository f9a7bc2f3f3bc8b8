"""Command line: ``netspec <command>``, one module per command in ``netspec/commands/``,
imported when the command runs (all of them for ``--help``).

Every failure prints one paragraph (file:line: field: message) and exits non-zero; a
traceback only with ``--debug`` (``netspec.commands.options.friendly``).
"""

from __future__ import annotations

import importlib
import pkgutil

import click

from . import commands


class _LazyGroup(click.Group):
    """One lazily imported module per command (``netspec/commands/<name>.py``)."""

    def list_commands(self, ctx):
        names = [m.name for m in pkgutil.iter_modules(commands.__path__)
                 if m.name not in commands.NOT_COMMANDS]
        return sorted(name.replace("_", "-") for name in names)

    def get_command(self, ctx, name):
        stem = name.replace("-", "_")
        if not stem.isidentifier() or stem in commands.NOT_COMMANDS:
            return None
        module_name = f"{commands.__name__}.{stem}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:
                return None
            raise
        return module.command


@click.group(cls=_LazyGroup)
@click.version_option(package_name="netspec")
def main():
    """netspec: Caffe-style nets and solvers in YAML, trained with NumPy or CuPy."""


if __name__ == "__main__":  # pragma: no cover
    main()
