"""Extra CLI commands, one module each, loaded lazily by ``netspec.cli``.

A module ``netspec/commands/<name>.py`` defines ``command``: a ``click.Command`` whose name is
the subcommand (``netspec <name>``). Wrap its function with ``netspec.cli.friendly`` so errors
print one paragraph and exit non-zero.
"""
