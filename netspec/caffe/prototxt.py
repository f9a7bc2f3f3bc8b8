"""Read Caffe text files (.prototxt): nets and solvers, with errors in the user's terms.

``google.protobuf.text_format`` does the parsing against netspec's ``caffe.proto``. Its errors
("12:5 : Message type "netspec.caffe.LayerParameter" has no field named "foo".") are rewritten to
name the file, the line, the enclosing layer and the nearest valid field.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from . import ConvertError, pb2

_NET_KEYS = {"name", "input", "input_shape", "input_dim", "force_backward", "state",
             "debug_info", "layer", "layers"}


def read_text(path: str | Path) -> str:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConvertError("file not found", file=str(path)) from None
    if b"\0" in raw[:4096]:
        raise ConvertError("this is a binary file, not a text .prototxt (a .caffemodel? "
                           "convert weights with: netspec convert W.caffemodel --model NET.yaml)",
                           file=str(path))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConvertError(f"not UTF-8 text ({e}); is this a binary .caffemodel?",
                           file=str(path)) from None


def _scan(text: str):
    """Yield (line, depth, token) for the identifiers, strings and braces of a prototxt.

    Enough of a tokenizer to find top-level keys and the layer enclosing a line; comments and
    string contents are skipped correctly.
    """
    line, depth, i, n = 1, 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                if text[j] == "\\":
                    j += 1
                if j < n and text[j] == "\n":
                    line += 1
                j += 1
            yield line, depth, text[i:j + 1]
            i = j + 1
        elif c in "{<":
            yield line, depth, "{"
            depth += 1
            i += 1
        elif c in "}>":
            depth = max(0, depth - 1)
            yield line, depth, "}"
            i += 1
        elif c == ":":
            yield line, depth, ":"
            i += 1
        elif c.isalnum() or c in "_-.+":
            j = i
            while j < n and (text[j].isalnum() or text[j] in "_-.+"):
                j += 1
            yield line, depth, text[i:j]
            i = j
        else:
            i += 1


def top_level_keys(text: str) -> list[str]:
    """The keys of the file's top-level fields, in order."""
    toks = list(_scan(text))
    keys = []
    for k, (_, depth, tok) in enumerate(toks):
        if depth == 0 and re.fullmatch(r"[A-Za-z_]\w*", tok) and k + 1 < len(toks) \
                and toks[k + 1][2] in (":", "{"):
            keys.append(tok)
    return keys


def layer_at(text: str, line: int, column: int = 0) -> str | None:
    """The name of the top-level ``layer``/``layers`` block open at (line, column), 1-based."""
    lines = text.split("\n")
    offset = sum(len(s) + 1 for s in lines[:max(line - 1, 0)]) + max(column - 1, 0)
    current, name, expect_name, last_ident = None, None, False, None
    for _, depth, tok in _scan(text[:offset]):
        if tok == "{" and depth == 0:
            current, name = last_ident, None
        elif tok == "}" and depth == 0:
            current, name = None, None
        elif current in ("layer", "layers"):
            # the layer's own name: depth 1 (current format) or depth 2 inside V0 `layer {}`
            if expect_name and tok[0] in "\"'":
                name = tok[1:-1]
                expect_name = False
            elif tok != ":":
                expect_name = tok == "name" and depth in (1, 2) and name is None
        if tok not in "{}:":
            last_ident = tok
    return name if current in ("layer", "layers") else None


def _explain(err, text: str, file: str, kind: str) -> ConvertError:
    msg = str(err)
    line = err.GetLine() if hasattr(err, "GetLine") else None
    column = err.GetColumn() if hasattr(err, "GetColumn") else None
    m = re.match(r"^\d+:\d+ : (.*)$", msg, re.S)
    body = m.group(1) if m else msg
    field_m = re.search(r'Message type "([\w.]+)" has no field named "(\w+)"', body)
    if field_m:
        type_name, field = field_m.group(1).rsplit(".", 1)[-1], field_m.group(2)
        desc = getattr(pb2(), type_name).DESCRIPTOR
        close = difflib.get_close_matches(field, [f.name for f in desc.fields], n=1, cutoff=0.6)
        body = (f"'{field}' is not a field of Caffe's {type_name}"
                + (f". Did you mean '{close[0]}'?" if close else
                   " (it may belong to a fork of Caffe; netspec reads BVLC Caffe's format)"))
    body = body.replace("netspec.caffe.", "")
    layer = layer_at(text, line, column or 0) if line else None
    where = f"in layer '{layer}': " if layer else ""
    return ConvertError(f"cannot parse as a Caffe {kind}: {where}{body}", file=file, line=line)


def parse_net(text: str, file: str = "<prototxt>"):
    """Text -> NetParameter message (no upgrade)."""
    from google.protobuf import text_format  # noqa: PLC0415 - optional: protobuf

    msg = pb2().NetParameter()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as e:
        raise _explain(e, text, file, "net (NetParameter)") from None
    return msg


def parse_solver(text: str, file: str = "<prototxt>"):
    """Text -> SolverParameter message (no upgrade)."""
    from google.protobuf import text_format  # noqa: PLC0415 - optional: protobuf

    msg = pb2().SolverParameter()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as e:
        raise _explain(e, text, file, "solver (SolverParameter)") from None
    return msg


def kind_of(text: str) -> str:
    """'solver' when the file's top-level keys belong to SolverParameter only, else 'net'."""
    solver_keys = {f.name for f in pb2().SolverParameter.DESCRIPTOR.fields}
    for key in top_level_keys(text):
        if key in _NET_KEYS:
            return "net"
        if key in solver_keys:
            return "solver"
    return "net"


def read(path: str | Path):
    """(kind, message, text) for a .prototxt file; kind is 'net' or 'solver'."""
    text = read_text(path)
    kind = kind_of(text)
    msg = parse_solver(text, str(path)) if kind == "solver" else parse_net(text, str(path))
    return kind, msg, text
