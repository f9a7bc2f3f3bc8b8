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

#: layer fields of well-known Caffe forks that netspec's schema lacks
FORK_FIELDS = {
    **dict.fromkeys(("yolo_seg_param",),
                    "the MobileNet-YOLO fork of Caffe (eric612/MobileNet-YOLO)"),
}
#: fields of well-known forks inside BVLC's messages: (message, field) -> the fork (none now:
#: DeepLab v2's, the last listed here, are implemented)
FORK_SUBFIELDS: dict[tuple[str, str], str] = {}

_NET_KEYS = {"name", "input", "input_shape", "input_dim", "force_backward", "state",
             "debug_info", "layer", "layers"}


def read_text(path: str | Path) -> str:
    """The text of a .prototxt; ConvertError (naming the file, and the line where there is one)
    for a missing, binary, non-UTF-8 or byte-order-marked file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConvertError("file not found", file=str(path)) from None
    except IsADirectoryError:
        raise ConvertError("this is a folder, not a .prototxt file", file=str(path)) from None
    if b"\0" in raw[:4096]:
        raise ConvertError(binary_message(raw), file=str(path))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConvertError(f"not UTF-8 text: byte 0x{raw[e.start]:02x} at column {column} "
                           "(a .prototxt is UTF-8 text; is this a binary .caffemodel, or text "
                           "saved in another encoding?)", file=str(path), line=line) from None
    if text.startswith("\ufeff"):
        raise ConvertError("the file starts with a byte-order mark (U+FEFF), which Caffe's "
                           "parser refuses: save it as UTF-8 without a BOM", file=str(path), line=1)
    return text


def binary_message(raw: bytes) -> str:
    """Why binary ``raw`` is not a .prototxt, saying so when it is a readable .caffemodel."""
    from google.protobuf.message import DecodeError  # noqa: PLC0415 - optional: protobuf

    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "this is UTF-16 text; a .prototxt is UTF-8: save it as UTF-8"
    msg = pb2().NetParameter()
    try:
        msg.ParseFromString(raw)
        layers = len(msg.layer) or len(msg.layers)
    except (DecodeError, RuntimeError, ValueError):
        layers = 0
    if layers:
        return (f"this is a binary Caffe .caffemodel (weights, {layers} layers), not a text "
                ".prototxt: convert weights to .npz with: netspec convert FILE.caffemodel "
                "--model NET.yaml -o WEIGHTS.npz")
    return "this is a binary file, not a text .prototxt (nor a .caffemodel netspec can read)"


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


def layer_line(text: str, name: str) -> int | None:
    """The line of the first top-level ``layer``/``layers`` block named ``name`` (its own
    ``name:``, or a V0 ``layers { layer { name: } }``), or None."""
    toks = list(_scan(text))
    stack: list[str] = []        # identifiers of the open blocks
    start = None                 # line of the open top-level layer block
    for k, (line, _, tok) in enumerate(toks):
        if tok == "{":
            key = toks[k - 1][2] if k and toks[k - 1][2] != ":" else (toks[k - 2][2] if k > 1 else "")
            stack.append(key)
            if len(stack) == 1:
                start = toks[k - 1][0] if toks[k - 1][2] != ":" else toks[k - 2][0]
        elif tok == "}":
            if stack:
                stack.pop()
        elif (tok == "name" and stack and stack[0] in ("layer", "layers")
              and (len(stack) == 1 or stack[1:] == ["layer"])
              and k + 2 < len(toks) and toks[k + 1][2] == ":" and toks[k + 2][2][:1] in "\"'"
              and toks[k + 2][2][1:-1] == name):
            return start
    return None


def key_line(text: str, key: str) -> int | None:
    """The line of the first top-level field ``key``, or None."""
    toks = list(_scan(text))
    for k, (line, depth, tok) in enumerate(toks):
        if depth == 0 and tok == key and k + 1 < len(toks) and toks[k + 1][2] in (":", "{"):
            return line
    return None


def locate(text: str | None, where: tuple[str, str] | None) -> int | None:
    """The line of ``("layer", name)`` or ``("key", field)`` in ``text``, or None."""
    if not text or not where:
        return None
    kind, name = where
    return layer_line(text, name) if kind == "layer" else key_line(text, name)


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
        if field in ("layer", "layers") and type_name in ("LayerParameter", "V1LayerParameter"):
            body = (f"'{field}' is not a field of Caffe's {type_name}: a layer inside a layer "
                    "(is the closing '}' of the layer before it missing?)")
        elif type_name == "LayerParameter" and field in FORK_FIELDS:
            body = (f"'{field}' is not a field of Caffe's {type_name}: it exists only in "
                    f"{FORK_FIELDS[field]}, not in BVLC Caffe, whose format netspec reads")
        elif (type_name, field) in FORK_SUBFIELDS:
            body = (f"'{field}' is not a field of Caffe's {type_name}: it exists only in "
                    f"{FORK_SUBFIELDS[type_name, field]}, not in BVLC Caffe, whose format "
                    "netspec reads")
        else:
            # a field of one of the message's blocks, written one level too high (a block
            # `field { }` only where that field is a block, a value where it is a value)
            after = text.split("\n")[line - 1][max((column or 1) - 1, 0):] if line else ""
            block = re.match(rf"\W*{field}\s*:?\s*[{{<]", after) is not None
            homes = [f.name for f in desc.fields
                     if f.message_type is not None and field in f.message_type.fields_by_name
                     and (f.message_type.fields_by_name[field].message_type is not None) == block]
            body = f"'{field}' is not a field of Caffe's {type_name}"
            if close:
                body += f". Did you mean '{close[0]}'?"
            elif homes:
                body += (f"; it goes inside {' or '.join(homes[:3])}"
                         f"{' (or another block)' if len(homes) > 3 else ''}")
            else:
                body += " (it may belong to a fork of Caffe; netspec reads BVLC Caffe's format)"
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
