"""Write netspec YAML the way the project's own model files look.

Block style for the file and each layer; a nested message or list goes on one line in flow
style (``convolution_param: {num_output: 20, kernel_size: 5}``) when that line fits, block style
otherwise. A one-element repeated field is written as its element (``top: conv1``). Floats use
the shortest text that reads back to the same value (``0.0001``, not ``9.99999974738e-05``).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import yaml

WIDTH = 100
_PLAIN = re.compile(r"[A-Za-z_./][A-Za-z0-9_./\-]*")


def scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return fmt_float(v)
    if v is None:
        return "null"
    s = str(v)
    if _PLAIN.fullmatch(s) and yaml.safe_load(s) == s:
        return s
    return json.dumps(s, ensure_ascii=False)


def fmt_float(x: float) -> str:
    """Shortest YAML 1.1 text for ``x`` that PyYAML reads back as the same number."""
    if math.isnan(x):
        return ".nan"
    if math.isinf(x):
        return ".inf" if x > 0 else "-.inf"
    if x == int(x) and abs(x) < 1e15:
        return str(int(x)) if x != 0 or math.copysign(1, x) > 0 else "-0.0"
    s = repr(x)
    if "e" in s:  # YAML 1.1 floats need a dot in the mantissa and a signed exponent
        mant, exp = s.split("e")
        if "." not in mant:
            mant += ".0"
        if exp[0] not in "+-":
            exp = "+" + exp
        s = f"{mant}e{exp}"
    return s


def _compact(v: Any) -> Any:
    """A one-element list stands for its element (Caffe's repeated fields in netspec YAML)."""
    if isinstance(v, list) and len(v) == 1:
        return v[0]
    return v


def flow(v: Any) -> str:
    v = _compact(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{scalar(k)}: {flow(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(flow(x) for x in v) + "]"
    return scalar(v)


def _emit_map(d: dict, indent: int, out: list[str], first_prefix: str | None = None) -> None:
    pad = " " * indent
    for n, (k, v) in enumerate(d.items()):
        lead = first_prefix if (first_prefix is not None and n == 0) else pad
        v = _compact(v)
        key = scalar(k)
        if isinstance(v, (dict, list)) and v:
            one = f"{lead}{key}: {flow(v)}"
            if len(one) <= WIDTH:
                out.append(one)
            elif isinstance(v, dict):
                out.append(f"{lead}{key}:")
                _emit_map(v, indent + 2, out)
            else:
                out.append(f"{lead}{key}:")
                _emit_list(v, indent + 2, out)
        else:
            out.append(f"{lead}{key}: {flow(v)}")


def _emit_list(items: list, indent: int, out: list[str]) -> None:
    pad = " " * indent
    for item in items:
        if isinstance(item, dict) and item:
            one = f"{pad}- {flow(item)}"
            if len(one) <= WIDTH and indent > 0:
                out.append(one)
            else:
                _emit_map(item, indent + 2, out, first_prefix=f"{pad}- ")
        else:
            out.append(f"{pad}- {flow(item)}")


def dump(data: dict, comments: list[str] = ()) -> str:
    """The YAML text of ``data`` (a dict of netspec keys), with ``# comments`` on top.

    Top-level lists of messages (``layer``) are always written one item per block.
    """
    out = [f"# {c}" if c else "#" for c in comments]
    for k, v in data.items():
        if k == "layer" and isinstance(v, list):
            out.append("layer:")
            for item in v:
                _emit_map(item, 4, out, first_prefix="  - ")
        else:
            _emit_map({k: v}, 0, out)
    return "\n".join(out) + "\n"
