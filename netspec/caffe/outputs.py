"""The files ``netspec convert`` and ``netspec export`` write, and which existing files they may
replace.

The rule: an output never replaces a file netspec did not write, or one changed since netspec
wrote it, unless the command is given ``--force``; and when any output of a command would be
refused, nothing at all is written (every output is checked before the first is written).

* Text outputs (convert's YAML, export's prototxt) start with netspec's header line, which ends
  with the SHA-256 of the bytes after that line::

      # Converted by `netspec convert` from lenet.prototxt (Caffe current format); sha256 <hex>

  A file whose first line is such a header of the same command (``Converted by `netspec
  convert```, ``Exported by `netspec export```) and whose checksum still matches the rest of the
  file is netspec's own, unchanged output and may be replaced (re-running a conversion is
  normal). Anything else is refused: no header, a header without a checksum (older netspec
  versions wrote one), a checksum that no longer matches (edited since), the other command's
  header.
* Binary outputs (convert's ``.npz``, export's ``.caffemodel``) carry no mark: an extra array in
  an ``.npz`` would be an unused array to ``load_weights`` (named by ``train --weights`` and
  ``test``, refused by a strict load) and an error in ``export --weights`` (not a
  ``<layer>/<index>`` key), and a ``.caffemodel`` has no field Caffe would ignore. So an existing
  binary output is always refused without ``--force``.

Whatever ``--force`` says, an output may not be one of the command's inputs, a folder, or the
same file as another output of the command. Files are written with ``atomic_write_bytes``.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from ..files import atomic_write_bytes
from . import ConvertError

# netspec's header: its first words name the command that wrote the file, its last the checksum
_LEAD = re.compile(rb"# (?:Converted by `netspec convert`|Exported by `netspec export`)")
_HEADER = re.compile(_LEAD.pattern + rb"[^\n]*; sha256 ([0-9a-f]{64})\n")


class OverwriteError(ConvertError):
    """An output of ``netspec convert``/``export`` would replace a file that is not netspec's own
    unchanged output (or a binary file) and ``--force`` was not given; nothing was written."""


def stamped(first_line: str, body: str) -> str:
    """``body`` under netspec's header: ``# <first_line>; sha256 <hex of body's UTF-8 bytes>``."""
    first_line = " ".join(first_line.splitlines())
    digest = hashlib.sha256(body.encode()).hexdigest()
    return f"# {first_line}; sha256 {digest}\n{body}"


def is_own_unchanged(data: bytes) -> bool:
    """Whether ``data`` starts with netspec's header and the rest still has its checksum."""
    m = _HEADER.match(data)
    return bool(m) and hashlib.sha256(data[m.end():]).hexdigest() == m.group(1).decode()


def _text_refusal(data: bytes, payload: bytes) -> str | None:
    """Why a text output ``payload`` may not replace a file holding ``data``; None when it may:
    ``data`` is the unchanged output of the same command (its header's first words and
    checksum)."""
    lead = _LEAD.match(data)
    if not lead:
        return "netspec did not write it (its first line is not netspec's header)"
    if not _HEADER.match(data):
        return ("its first line has no netspec checksum (an older netspec wrote it, or it was "
                "edited), so netspec cannot tell that it is unchanged")
    if not is_own_unchanged(data):
        return ("it was changed since netspec wrote it (its checksum no longer matches netspec's "
                "header)")
    mine = _LEAD.match(payload)
    if mine and mine.group(0) != lead.group(0):
        return (f"it was written by `{_command(lead.group(0))}`, and this is "
                f"`{_command(mine.group(0))}`")
    return None


def _command(lead: bytes) -> str:
    return "netspec convert" if b"convert" in lead else "netspec export"


@dataclass
class Output:
    """One file a command writes: ``payload`` to ``path``. ``text``: it carries netspec's header
    (a text output). ``option``: the command's option that puts this output elsewhere (``-o``,
    ``--caffemodel``), or None when none does (a solver's net, written beside its .prototxt)."""
    path: Path
    payload: bytes
    text: bool
    option: str | None = "-o"

    def elsewhere(self) -> str:
        """How to write this output elsewhere, after "Give --force to overwrite it, or"."""
        if self.option:
            return f"{self.option} to write elsewhere"
        return "move it away first (a solver's nets are written beside their .prototxt)"

    def remedy(self) -> str:
        """The same as a sentence of its own."""
        return f"Give {self.elsewhere()}" if self.option else self.elsewhere().capitalize()


def _why_refused(out: Output) -> str | None:
    """Why ``out.path`` may not be replaced without --force; None when it may (no such file, or
    netspec's own unchanged text output)."""
    try:
        st = os.lstat(out.path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        return f"it cannot be checked ({e.strerror or e})"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link, which netspec never writes"
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    if not out.text:
        return ("it exists, and netspec replaces an existing .npz or .caffemodel only when asked "
                "(such files carry no mark of who wrote them)")
    try:
        data = out.path.read_bytes()
    except OSError as e:
        return f"it cannot be read to check that netspec wrote it ({e.strerror or e})"
    return _text_refusal(data, out.payload)


def _same(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def write_outputs(outputs: list[Output], inputs: list[Path | str | None],
                  force: bool = False) -> None:
    """Check every output, then write them all; OverwriteError (nothing written) when one may
    not be written: it is an input or a folder, two outputs are the same file, or (without
    ``force``) it would replace a file that is not netspec's own unchanged output."""
    ins = [Path(p) for p in inputs if p is not None]
    for i, out in enumerate(outputs):
        for src in ins:
            if _same(out.path, src):
                raise OverwriteError(f"the output would overwrite the input {src}; nothing was "
                                     f"written. {out.remedy()}", file=str(out.path))
        for other in outputs[:i]:
            if _same(out.path, other.path):
                alt = other if other.option else out
                raise OverwriteError("two outputs of this command would be this one file; nothing "
                                     f"was written. {alt.remedy()}", file=str(out.path))
        if out.path.is_dir():
            raise OverwriteError("this is a folder, and the output must be a file; nothing was "
                                 f"written. {out.remedy()}", file=str(out.path))
    if not force:
        refused = [(out, why) for out in outputs if (why := _why_refused(out)) is not None]
        if len(refused) == 1:
            out, why = refused[0]
            raise OverwriteError(f"not overwritten: {why}. Nothing was written. Give --force to "
                                 f"overwrite it, or {out.elsewhere()}", file=str(out.path))
        if refused:
            ways = ", or ".join(dict.fromkeys(out.elsewhere() for out, _ in refused))
            raise OverwriteError(
                f"{len(refused)} files not overwritten: "
                + "; ".join(f"{out.path}: {why}" for out, why in refused)
                + f". Nothing was written. Give --force to overwrite them, or {ways}")
    for out in outputs:
        atomic_write_bytes(out.path, out.payload)
