"""``--set key=value`` overrides, applied to the parsed YAML before validation.

Paths: a solver field (``weight_decay=0``, ``type=AdamW``) or a layer field addressed by the
layer's name (``layer.fc1.param.0.decay_mult=0``, ``layer.conv1.convolution_param.num_output=32``).
Values are parsed as YAML scalars/flow collections (``0.5``, ``true``, ``[1, 2]``) by the same
loader as the files, with its limits (no tags, bounded aliases).
"""

from __future__ import annotations

from typing import Any

from ..errors import SpecError, suggest
from .yaml_lines import loads_yaml


def parse_set(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise SpecError(f"--set {text}: expected key=value (e.g. --set weight_decay=0)", field="--set")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise SpecError(f"--set {text}: empty key", field="--set")
    try:
        value = loads_yaml(raw, "--set")[0] if raw.strip() else ""
    except SpecError as e:
        raise SpecError(f"--set {text}: cannot parse the value: {e.message}", field="--set") from None
    return key.split("."), value


def split_sets(sets: list[str]) -> tuple[list[tuple[str, list[str], Any]], list[tuple[str, list[str], Any]]]:
    """(solver overrides, net overrides), each as (original text, path, value)."""
    solver, net = [], []
    for text in sets:
        path, value = parse_set(text)
        (net if path[0] == "layer" else solver).append((text, path, value))
    return solver, net


def apply(data: dict, overrides, file: str) -> dict[tuple, str]:
    """Apply overrides to ``data`` in place; return {loc: '--set text'} for error messages.

    ``layer.NAME.…`` sets the field on every layer called NAME (Caffe nets often have a TRAIN
    and a TEST layer of the same name, e.g. two Data layers ``mnist``).
    """
    origins: dict[tuple, str] = {}
    for text, path, value in overrides:
        if path[0] != "layer":
            _set_path(data, [], list(path), value, text)
            origins[tuple(_loc(path))] = f"--set {text}"
            continue
        if len(path) < 3:
            raise SpecError(f"--set {text}: use layer.<layer name>.<field>=value", field="--set")
        layers = data.get("layer") or []
        layers = layers if isinstance(layers, list) else [layers]
        data["layer"] = layers
        names = [l.get("name") if isinstance(l, dict) else None for l in layers]
        hits = [i for i, n in enumerate(names) if n == path[1]]
        if not hits:
            raise SpecError(f"--set {text}: no layer named '{path[1]}' in {file}."
                            f"{suggest(path[1], [n for n in names if n])}", field="--set")
        for idx in hits:
            _set_path(layers[idx], ["layer", idx], list(path[2:]), value, text)
            origins[("layer", idx) + tuple(_loc(path[2:]))] = f"--set {text}"
    return origins


def _loc(parts) -> list:
    return [int(p) if p.isdigit() else p for p in parts]


def _set_path(node: Any, loc: list, parts: list[str], value: Any, text: str) -> None:
    """Set ``value`` at ``parts`` below ``node``, creating mappings on the way."""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        key: Any = int(part) if part.isdigit() else part
        if isinstance(key, int):
            if isinstance(node, dict) and key == 0:
                if last:
                    raise SpecError(f"--set {text}: cannot replace a whole entry", field="--set")
                loc.append(key)
                continue  # a single mapping stands for a one-element list
            if not isinstance(node, list) or key >= len(node):
                raise SpecError(f"--set {text}: '{'.'.join(map(str, loc))}' has no item {key}",
                                field="--set")
        elif not isinstance(node, dict):
            raise SpecError(f"--set {text}: '{'.'.join(map(str, loc))}' is not a mapping",
                            field="--set")
        loc.append(key)
        if last:
            node[key] = value
        else:
            if isinstance(node, dict) and key not in node:
                nxt = parts[i + 1]
                node[key] = [] if nxt.isdigit() and nxt != "0" else {}
            node = node[key]
