"""YAML loading that remembers where every key and item came from.

``load_yaml(path)`` returns ``(data, LineMap)``; ``LineMap.line(loc)`` gives the 1-based line
of the deepest known prefix of a pydantic-style location tuple such as
``("layer", 3, "convolution_param", "kernel_size")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import SpecError


class LineMap:
    """Location tuple -> 1-based line number in one file."""

    def __init__(self, file: str):
        self.file = file
        self._lines: dict[tuple, int] = {}

    def set(self, loc: tuple, line: int) -> None:
        self._lines[loc] = line

    def line(self, loc: tuple) -> int | None:
        loc = tuple(loc)
        while True:
            if loc in self._lines:
                return self._lines[loc]
            if not loc:
                return None
            loc = loc[:-1]

    def exact(self, loc: tuple) -> int | None:
        return self._lines.get(tuple(loc))


def _construct(node: yaml.Node, loc: tuple, lines: LineMap, ctor: yaml.SafeLoader, file: str) -> Any:
    lines.set(loc, node.start_mark.line + 1) if loc not in lines._lines else None
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = ctor.construct_object(key_node, deep=True)
            if isinstance(key, (int, float, bool)) or key is None:
                key = str(key) if key is not None else "null"
            if key in out:
                raise SpecError(f"duplicate key '{key}' (first given on line "
                                f"{lines.exact(loc + (key,))})", file=file,
                                line=key_node.start_mark.line + 1, field=".".join(map(str, loc + (key,))))
            lines.set(loc + (key,), key_node.start_mark.line + 1)
            out[key] = _construct(value_node, loc + (key,), lines, ctor, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            lines.set(loc + (i,), item.start_mark.line + 1)
            items.append(_construct(item, loc + (i,), lines, ctor, file))
        return items
    return ctor.construct_object(node, deep=True)


def loads_yaml(text: str, file: str = "<string>") -> tuple[Any, LineMap]:
    """Parse YAML text; syntax errors become a SpecError naming file and line."""
    lines = LineMap(file)
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = {} if node is None else _construct(node, (), lines, loader, file)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        problem = e.problem or "invalid YAML"
        ctx = f" ({e.context})" if e.context else ""
        raise SpecError(f"YAML syntax error: {problem}{ctx}. Check indentation, colons and "
                        "brackets on this line or the one before.", file=file, line=line) from None
    except yaml.YAMLError as e:
        raise SpecError(f"YAML syntax error: {e}", file=file) from None
    return data, lines


def load_yaml(path: str | Path) -> tuple[Any, LineMap]:
    """Read and parse a YAML file with line tracking; a missing file is a SpecError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot read file: {e}", file=str(path)) from None
    return loads_yaml(text, str(path))
