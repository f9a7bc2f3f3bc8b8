"""Caffe's WindowData inputs: an R-CNN window file, read as Caffe's WindowDataLayer reads it.

The file is a stream of whitespace-separated tokens (line breaks do not matter, as with C++'s
``>>``); for each image, in order::

    # IMAGE_INDEX          0, 1, 2, ... (Caffe uses it as the image's position in the file)
    IMAGE_PATH             one token (no spaces), root_folder is prepended by the layer
    CHANNELS HEIGHT WIDTH  as the image has them (CHANNELS is the data top's channel count)
    NUM_WINDOWS
    CLASS_INDEX OVERLAP X1 Y1 X2 Y2     NUM_WINDOWS times: a box of 0-based, inclusive pixel
                                        coordinates and its overlap with the object of class
                                        CLASS_INDEX (R-CNN writes overlap with the best box)

``read_window_file`` checks every token (Caffe stops reading silently at the first one that
does not parse) and names the file and line of a bad one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import DataError


class WindowImage(NamedTuple):
    path: str       # as written in the file
    channels: int
    height: int
    width: int
    line: int       # 1-based line of its image path


@dataclass(frozen=True)
class WindowFile:
    """The images and windows of a window file; window arrays are in file order."""

    path: Path
    images: list[WindowImage]
    image: np.ndarray     # (N,) int64: index into ``images``
    label: np.ndarray     # (N,) int64: class index as written
    overlap: np.ndarray   # (N,) float32
    box: np.ndarray       # (N, 4) int64: x1, y1, x2, y2
    line: np.ndarray      # (N,) int64: line of the window's class index


class _Tokens:
    """The file's tokens with their line numbers, read one by one or a line at a time."""

    def __init__(self, path: Path, lines):
        self.path = path
        self._lines = enumerate(lines, 1)
        self._pending: deque[str] = deque()
        self.line = 0

    def _fill(self) -> bool:
        while not self._pending:
            try:
                self.line, text = next(self._lines)
            except StopIteration:
                return False
            self._pending.extend(text.split())
        return True

    def at_end(self) -> bool:
        return not self._fill()

    def next(self, what: str, context: str) -> str:
        if not self._fill():
            raise DataError(f"the window file ends where {context} needs {what}",
                            file=str(self.path), line=self.line or None)
        return self._pending.popleft()

    def number(self, what: str, context: str, kind=int):
        tok = self.next(what, context)
        try:
            return kind(tok)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise DataError(f"{context}: {what} must be {noun}, got {tok!r}",
                            file=str(self.path), line=self.line) from None

    def windows(self, count: int, context: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The next ``count`` windows: (int64 (count, 5) class index, x1, y1, x2, y2; float32
        (count,) overlaps; int64 (count,) line of each window's class index).

        Fast (NumPy's parser) when the next ``count`` lines hold one window each, as R-CNN
        writes them; otherwise token by token, for the same values or a message."""
        if not self._pending and count:
            block = list(islice(self._lines, count))
            fast = _block(block, count)
            if fast is not None:
                self.line = block[-1][0]
                return fast
            self._lines = chain(block, self._lines)     # read them again, one token at a time
        ints = np.empty((count, 5), np.int64)
        over = np.empty(count, np.float32)
        lines = np.empty(count, np.int64)
        for k in range(count):
            wctx = f"window {k} of {context}"
            ints[k, 0] = self.number(_WINDOW[0], wctx)
            lines[k] = self.line
            over[k] = self.number(_WINDOW[1], wctx, float)
            ints[k, 1:] = [self.number(what, wctx) for what in _WINDOW[2:]]
        return ints, over, lines


def _block(block: list[tuple[int, str]], count: int):
    """``windows``' result for ``count`` lines of six numbers each, or None."""
    try:
        a = np.loadtxt([text for _, text in block], dtype=np.float64, comments=None, ndmin=2)
    except ValueError:
        return None
    if a.shape != (count, 6):
        return None
    ints = a[:, [0, 2, 3, 4, 5]]
    if not (np.all(ints == np.floor(ints)) and np.all(np.abs(ints) < 2**31)):
        return None                       # not integers: the slow path says where
    over = a[:, 1].astype(np.float32)     # via double, as float() below
    return ints.astype(np.int64), over, np.asarray([i for i, _ in block], dtype=np.int64)


_WINDOW = ("class index", "overlap", "x1", "y1", "x2", "y2")


def read_window_file(path: str | Path) -> WindowFile:
    """Parse a WindowData ``source`` file (see the module docstring)."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as f:
            return _parse(path, f)
    except FileNotFoundError:
        raise DataError("window file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read window file: {e}", file=str(path)) from None


def _parse(path: Path, lines) -> WindowFile:
    toks = _Tokens(path, lines)
    if toks.at_end():
        raise DataError("the window file is empty", file=str(path))
    images: list[WindowImage] = []
    blocks: list[tuple] = []
    while not toks.at_end():
        n = len(images)
        context = f"image {n}"
        head = toks.next("'#'", context)
        if head != "#":
            raise DataError(f"expected '# {n}' to start image {n}, got {head!r}",
                            file=str(path), line=toks.line)
        index = toks.number("the image index", context)
        if index != n:
            raise DataError(f"image index {index}: Caffe's WindowData takes it as the image's "
                            f"position in the file, so images must be numbered 0, 1, 2, ... in "
                            f"order; this is image {n}", file=str(path), line=toks.line)
        image_path = toks.next("the image path", context)
        line = toks.line
        c, h, w = (toks.number(what, context) for what in ("channels", "height", "width"))
        images.append(WindowImage(image_path, c, h, w, line))
        count = toks.number("the number of windows", context)
        if count < 0:
            raise DataError(f"{context}: the number of windows is {count}", file=str(path),
                            line=toks.line)
        ints, over, wlines = toks.windows(count, context)
        bad = np.flatnonzero((ints[:, 3] < ints[:, 1]) | (ints[:, 4] < ints[:, 2]))
        if bad.size:
            k = int(bad[0])
            raise DataError(f"window {k} of image {n}: the box x1 y1 x2 y2 = "
                            f"{' '.join(map(str, ints[k, 1:]))} is empty (x2 and y2 are "
                            "inclusive: they must be at least x1 and y1)", file=str(path),
                            line=int(wlines[k]))
        blocks.append((np.full(count, n, np.int64), ints, over, wlines))
    image, ints, over, wlines = (np.concatenate(parts) for parts in zip(*blocks, strict=True))
    return WindowFile(path, images, image=image, label=ints[:, 0], overlap=over,
                      box=ints[:, 1:], line=wlines)
