"""YAML loading that remembers where every key and item came from.

``load_yaml(path)`` returns ``(data, LineMap)``; ``LineMap.line(loc)`` gives the 1-based line
of the deepest known prefix of a pydantic-style location tuple such as
``("layer", 3, "convolution_param", "kernel_size")``.

The data is built straight from the parser's event stream (libyaml's C parser where PyYAML has
it), in one pass and in time linear in the file, with these limits:

* only regular files are read (not directories, devices or FIFOs), and at most
  ``NETSPEC_MAX_YAML_MB`` megabytes (default ``DEFAULT_MAX_MB``);
* aliases (``*name``) are expanded into copies, at most ``MAX_ALIAS_NODES`` nodes in all, so a
  "billion laughs" file fails at once instead of filling memory;
* lists and mappings nest at most ``MAX_DEPTH`` deep;
* only plain mappings, lists and the standard scalar tags (str, int, float, bool, null) are
  read: any other tag (``!foo``, ``!!python/object``, ``!!set``, ``!!binary``) is an error, as
  is a list or mapping used as a key and a ``<<`` merge key.
"""

from __future__ import annotations

import contextlib
import gc
import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.events import (AliasEvent, MappingEndEvent, MappingStartEvent, ScalarEvent,
                         SequenceEndEvent, SequenceStartEvent, StreamEndEvent)
from yaml.nodes import ScalarNode

from ..errors import SpecError

#: The environment variable that raises (or lowers) the file size limit, in megabytes.
MAX_MB_ENV = "NETSPEC_MAX_YAML_MB"
#: Net and solver files larger than this many megabytes are refused: a 20,000-layer net is
#: about 1.4 MB, and 8 MB take about 10 s to load and validate.
DEFAULT_MAX_MB = 8
#: At most this many nodes (mappings, lists, scalars) are built by expanding aliases.
MAX_ALIAS_NODES = 100_000
#: Lists and mappings nest at most this deep (a net file needs fewer than 10 levels).
MAX_DEPTH = 100

#: libyaml's parser when PyYAML was built with it (loading is about 5x faster), else PyYAML's
#: Python parser.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_STD = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_STD + t for t in ("str", "int", "float", "bool", "null"))
_SCALAR_TAGS = {_STR, _INT, _FLOAT, _BOOL, _NULL}
_MAP_TAGS = {None, "!", _STD + "map"}
_SEQ_TAGS = {None, "!", _STD + "seq"}


@contextlib.contextmanager
def gc_paused():
    """Hold the cyclic garbage collector while a file is loaded.

    Loading builds many small objects, and each of them counts toward the collector's next
    pass, which scans every object still alive: validating a 200,000-layer net took 16 s with
    the collector running and 4.7 s without (1.3 s and 0.6 s at 20,000 layers), so the time
    grew faster than the file. Loading makes no reference cycles, so nothing is lost by letting
    the collector run after it instead.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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


def dotted(loc: tuple) -> str:
    """A location as the messages write it: ``layer[3].convolution_param.kernel_size``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _tag_text(tag: str) -> str:
    """A tag as the user wrote it: ``tag:yaml.org,2002:set`` -> ``!!set``."""
    return "!!" + tag[len(_STD):] if tag.startswith(_STD) else tag


def _copy(value: Any) -> Any:
    """A fresh copy of an anchored value (overrides edit the data in place)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


class _Anchor:
    """An anchored value: its data, location, the slice of the line log its building wrote,
    its node count and height (for the alias limits)."""

    __slots__ = ("end", "height", "loc", "size", "start", "value")

    def __init__(self, loc: tuple, start: int):
        self.loc, self.start = loc, start
        self.value, self.end, self.size, self.height = None, None, 0, 0


class _Builder:
    """Python data plus a LineMap from one YAML document's events."""

    def __init__(self, loader, lines: LineMap, file: str):
        self.loader = loader
        self.lines = lines
        self.file = file
        #: (loc, line) in the order lines were first set; an anchor replays its slice
        self.log: list[tuple[tuple, int]] = []
        self.anchors: dict[str, _Anchor] = {}
        self.alias_nodes = 0

    def error(self, message: str, event, loc: tuple = ()) -> SpecError:
        if len(loc) > 6:  # a runaway nesting: the start and the end of the path are enough
            field = f"{dotted(loc[:3])}...{dotted(loc[-2:])}"
        else:
            field = dotted(loc) or None
        return SpecError(message, file=self.file, line=event.start_mark.line + 1, field=field)

    def mark(self, loc: tuple, line: int) -> None:
        if loc not in self.lines._lines:
            self.lines._lines[loc] = line
            self.log.append((loc, line))

    def document(self) -> Any:
        loader = self.loader
        loader.get_event()  # StreamStart
        if loader.check_event(StreamEndEvent):
            return {}  # an empty file (or only comments)
        loader.get_event()  # DocumentStart
        event = loader.peek_event()
        if isinstance(event, ScalarEvent) and event.value == "" and event.tag is None \
                and event.anchor is None and event.implicit[0]:
            loader.get_event()  # an empty document ('---' alone): an empty file
            value = {}
        else:
            value, _, _ = self.node((), 0)
        loader.get_event()  # DocumentEnd
        if not loader.check_event(StreamEndEvent):
            raise self.error("the file holds more than one YAML document ('---'); a net or "
                             "solver file is one document", loader.peek_event())
        return value

    def node(self, loc: tuple, depth: int) -> tuple[Any, int, int]:
        """Build the next node at ``loc``: (value, node count, height)."""
        event = self.loader.get_event()
        if isinstance(event, AliasEvent):
            return self.alias(event, loc, depth)
        self.mark(loc, event.start_mark.line + 1)
        if isinstance(event, ScalarEvent):
            value = self.scalar(event, loc)
            if event.anchor is not None:
                anchor = _Anchor(loc, len(self.log))
                anchor.value, anchor.end, anchor.size = value, len(self.log), 1
                self.anchors[event.anchor] = anchor
            return value, 1, 0
        if isinstance(event, MappingStartEvent):
            tags, kind = _MAP_TAGS, "mapping"
        elif isinstance(event, SequenceStartEvent):
            tags, kind = _SEQ_TAGS, "list"
        else:  # pragma: no cover - the parser only starts nodes with these events
            raise self.error(f"unexpected YAML event {type(event).__name__}", event, loc)
        if event.tag not in tags:
            raise self.error(f"YAML tag '{_tag_text(event.tag)}' on a {kind} is not supported: "
                             "netspec reads plain mappings, lists and scalars; remove the tag",
                             event, loc)
        if depth + 1 > MAX_DEPTH:
            raise self.error(f"lists and mappings nest more than {MAX_DEPTH} levels deep here; "
                             "a net or solver file needs only a few", event, loc)
        anchor = None
        if event.anchor is not None:
            anchor = self.anchors[event.anchor] = _Anchor(loc, len(self.log))
        if kind == "mapping":
            value, size, height = self.mapping(loc, depth)
        else:
            value, size, height = self.sequence(loc, depth)
        if anchor is not None:
            anchor.value, anchor.end, anchor.size, anchor.height = value, len(self.log), size, height
        return value, size, height

    def mapping(self, loc: tuple, depth: int) -> tuple[dict, int, int]:
        loader = self.loader
        out: dict[str, Any] = {}
        size, height = 1, 1
        while not loader.check_event(MappingEndEvent):
            key_event = loader.peek_event()
            key = self.key(loc)
            if key in out:
                raise self.error(f"duplicate key '{key}' (first given on line "
                                 f"{self.lines.exact(loc + (key,))})", key_event, loc + (key,))
            self.mark(loc + (key,), key_event.start_mark.line + 1)
            value, n, h = self.node(loc + (key,), depth + 1)
            out[key] = value
            size += n
            height = max(height, h + 1)
        loader.get_event()
        return out, size, height

    def sequence(self, loc: tuple, depth: int) -> tuple[list, int, int]:
        loader = self.loader
        items: list[Any] = []
        size, height = 1, 1
        while not loader.check_event(SequenceEndEvent):
            value, n, h = self.node(loc + (len(items),), depth + 1)
            items.append(value)
            size += n
            height = max(height, h + 1)
        loader.get_event()
        return items, size, height

    def key(self, loc: tuple) -> str:
        """The next mapping key as a string; lists, mappings and merge keys are errors."""
        event = self.loader.peek_event()
        if isinstance(event, (MappingStartEvent, SequenceStartEvent)):
            raise self.error("a list or mapping is used as a key here; keys must be plain "
                             "names such as 'num_output'", event, loc)
        if isinstance(event, AliasEvent):
            self.loader.get_event()
            anchor = self._anchor(event)
            if isinstance(anchor.value, (dict, list)):
                raise self.error(f"the alias '*{event.anchor}' names a list or mapping and is "
                                 "used as a key here; keys must be plain names such as "
                                 "'num_output'", event, loc)
            self._count_alias(event, 1)
            key = anchor.value
        else:
            self.loader.get_event()
            if event.tag is None and event.value == "<<" and event.implicit[0]:
                raise self.error("YAML merge keys ('<<') are not supported: write the keys out "
                                 "in this mapping", event, loc)
            key = self.scalar(event, loc)
            if event.anchor is not None:
                anchor = _Anchor(loc, len(self.log))
                anchor.value, anchor.end, anchor.size = key, len(self.log), 1
                self.anchors[event.anchor] = anchor
        if isinstance(key, str):
            return key
        return "null" if key is None else str(key)

    def scalar(self, event: ScalarEvent, loc: tuple) -> Any:
        tag = event.tag
        explicit = tag not in (None, "!")
        if not explicit:
            tag = self.loader.resolve(ScalarNode, event.value, event.implicit)
            if tag == _STR:
                return event.value
            if tag == _STD + "timestamp":
                return event.value  # no field is a date: '2024-01-02' stays text
        if tag not in _SCALAR_TAGS:
            raise self.error(f"YAML tag '{_tag_text(tag)}' is not supported: netspec reads "
                             "plain strings, numbers, booleans and null; remove the tag",
                             event, loc)
        node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        try:
            return self.loader.yaml_constructors[tag](self.loader, node)
        except (ValueError, TypeError, KeyError, IndexError, yaml.YAMLError):
            raise self.error(f"'{event.value}' is not a valid {_tag_text(tag)} value", event,
                             loc) from None

    def _anchor(self, event: AliasEvent) -> _Anchor:
        anchor = self.anchors.get(event.anchor)
        if anchor is None:
            raise self.error(f"the alias '*{event.anchor}' names no anchor: define "
                             f"'&{event.anchor}' earlier in the file", event)
        if anchor.end is None:
            raise self.error(f"the alias '*{event.anchor}' is used inside the value it names "
                             "(a recursive structure)", event)
        return anchor

    def _count_alias(self, event: AliasEvent, size: int) -> None:
        self.alias_nodes += size
        if self.alias_nodes > MAX_ALIAS_NODES:
            raise self.error(
                f"YAML aliases expand to more than {MAX_ALIAS_NODES:,} nodes (the alias "
                f"'*{event.anchor}' on this line repeats {size:,}); netspec stops there to "
                "protect memory. Write the repeated parts out or use fewer aliases", event)

    def alias(self, event: AliasEvent, loc: tuple, depth: int) -> tuple[Any, int, int]:
        """A copy of the anchored value, with its lines replayed under ``loc``."""
        anchor = self._anchor(event)
        self._count_alias(event, anchor.size)
        if depth + anchor.height > MAX_DEPTH:
            raise self.error(f"the alias '*{event.anchor}' makes lists and mappings nest more "
                             f"than {MAX_DEPTH} levels deep", event, loc)
        self.mark(loc, event.start_mark.line + 1)
        cut = len(anchor.loc)
        for sub, line in self.log[anchor.start:anchor.end]:
            self.mark(loc + sub[cut:], line)
        return _copy(anchor.value), anchor.size, anchor.height


def _syntax_error(e: yaml.YAMLError, file: str, raw: bytes | None, text: str) -> SpecError:
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        problem = e.problem or "invalid YAML"
        ctx = f" ({e.context})" if e.context else ""
        if e.context and e.context_mark and mark and e.context_mark.line != mark.line:
            # e.g. an unclosed quote is found at the end of the file: say where it started
            ctx = f" ({e.context} that starts on line {e.context_mark.line + 1})"
        if "maximum nesting depth" in problem:    # libyaml's own limit (PyYAML >= 6.0.4)
            return SpecError(f"lists and mappings nest more than {MAX_DEPTH} levels deep here; "
                             "a net or solver file needs only a few", file=file, line=line)
        return SpecError(f"YAML syntax error: {problem}{ctx}. Check indentation, colons and "
                         "brackets on this line or the one before.", file=file, line=line)
    if isinstance(e, yaml.reader.ReaderError):
        # libyaml reports a byte offset into the UTF-8 it was given, PyYAML a character index
        pos = max(e.position, 0)
        line = (raw.count(b"\n", 0, pos) if raw is not None else text.count("\n", 0, pos)) + 1
        char = e.character
        if isinstance(char, str) and len(char) == 1:
            what = f"the character U+{ord(char):04X}"
        elif isinstance(char, int):
            what = f"the character U+{char:04X}"
        else:
            what = "a character"
        return SpecError(f"the file contains {what}, which YAML does not allow ({e.reason}); "
                         "remove it", file=file, line=line)
    return SpecError(f"YAML syntax error: {e}", file=file)


def loads_yaml(text: str, file: str = "<string>") -> tuple[Any, LineMap]:
    """Parse YAML text; syntax errors become a SpecError naming file and line."""
    lines = LineMap(file)
    raw = None
    source: Any = text
    if _LOADER is not yaml.SafeLoader:
        try:
            source = raw = text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise SpecError(f"the text holds a character that is not valid Unicode "
                            f"({e.reason})", file=file,
                            line=text.count("\n", 0, e.start) + 1) from None
    loader = None
    try:
        loader = _LOADER(source)  # PyYAML's own reader checks the characters here
        with gc_paused():
            data = _Builder(loader, lines, file).document()
    except yaml.YAMLError as e:
        raise _syntax_error(e, file, raw, text) from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, lines


def max_file_bytes() -> int:
    """The size limit for net and solver files: ``$NETSPEC_MAX_YAML_MB`` or ``DEFAULT_MAX_MB``."""
    return int(_max_mb() * 2**20)


def _max_mb() -> float:
    raw = os.environ.get(MAX_MB_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_MB
    try:
        mb = float(raw)
        if not 0 < mb < float("inf"):
            raise ValueError
    except ValueError:
        raise SpecError(f"{MAX_MB_ENV}={raw!r}: expected a size in megabytes, e.g. 64",
                        field=MAX_MB_ENV) from None
    return mb


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_text(path: str | Path) -> str:
    """The UTF-8 text of a regular file of at most ``max_file_bytes()``; else a SpecError.

    The file is opened without blocking and checked with fstat before anything is read, so
    ``/dev/zero``, a FIFO or a directory is refused at once. A UTF-8 byte order mark is
    skipped.
    """
    name = str(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise SpecError("file not found", file=name) from None
    except OSError as e:
        raise SpecError(f"cannot read the file: {e.strerror or e}", file=name) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SpecError(f"this is {_kind(info.st_mode)}, not a file: net and solver files "
                            "must be regular YAML files", file=name)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        try:
            limit = max_file_bytes()
        except SpecError as e:  # a bad $NETSPEC_MAX_YAML_MB: say which file was being read
            raise SpecError(e.message, file=name) from None

        def too_big(size: int) -> SpecError:
            return SpecError(
                f"the file is {size:,} bytes, over the {_max_mb():g} MB limit for net and solver "
                f"files; set {MAX_MB_ENV} to a larger number of megabytes to read it anyway",
                file=name)

        if info.st_size > limit:
            raise too_big(info.st_size)
        try:
            data = f.read(limit + 1)  # the file may have grown since fstat
        except OSError as e:
            raise SpecError(f"cannot read the file: {e.strerror or e}", file=name) from None
        if len(data) > limit:
            raise too_big(len(data))
    return decode(data, name)


def decode(data: bytes, file: str) -> str:
    """UTF-8 bytes as text (a leading byte order mark dropped); anything else is a SpecError."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    elif data[:4] in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff") or data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise SpecError("the file is UTF-16 or UTF-32 text; save it as UTF-8", file=file, line=1)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise SpecError(f"the file is not UTF-8 text: byte 0x{data[e.start]:02x} at column "
                        f"{col} cannot be decoded; save the file as UTF-8", file=file,
                        line=line) from None


def load_yaml(path: str | Path) -> tuple[Any, LineMap]:
    """Read and parse a YAML file with line tracking; a missing file is a SpecError."""
    return loads_yaml(read_text(path), str(path))
