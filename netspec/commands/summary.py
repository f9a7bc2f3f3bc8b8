"""``netspec summary NET``: per-layer shapes, parameters, multipliers, FLOPs and memory."""

from ..tools.summary import command  # noqa: F401 - the command's logic moved to netspec/tools/summary.py
