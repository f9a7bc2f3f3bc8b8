"""CLI commands, one module each, imported by ``netspec.cli`` when the command is run.

A module ``netspec/commands/<name>.py`` defines ``command``: a ``click.Command`` whose name is
the subcommand (``netspec <name>``; ``_`` in the module name becomes ``-``). Wrap its function
with ``options.friendly`` so errors print one paragraph and exit non-zero. A command translates
options and prints; the work is done by library functions (``netspec.workflows``,
``netspec.tools``, ``netspec.search``).
"""

#: modules here that are not commands
NOT_COMMANDS = frozenset({"options"})
