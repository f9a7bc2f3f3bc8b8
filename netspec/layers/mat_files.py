"""DeepLab v2's MATLAB-file layers: MatWrite saves its bottoms as .mat files (DeepLab's score
maps for its CRF post-processing), MatRead reads such files back as tops. Both need SciPy
(``pip install 'netspec[caffe]'``).

The file format is the fork's ``WriteBlobToMat``: one variable ``data`` of the blob's values in
MATLAB's column-major order with dimensions (W, H, C, N) — element (w, h, c, n) is the blob's
[n, c, h, w] — in the net's precision (single for float32 nets). MatRead also takes files
of fewer dimensions (as MATLAB saves a (W, H, C, 1) array), the missing ones 1. File names: ``prefix + name + '_blob_<i>.mat'``, the names read from the
``source`` list (the first word of each line, ``strip`` characters cut from its end) by the
iteration's index, or ``iter_<k>`` without a list.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..backend import to_numpy
from ..data.sources import resolve_file
from ..errors import DataError
from .base import Layer
from .registry import register


def _scipy_io(layer: Layer, field: str):
    """scipy.io, or the layer's error naming ``field`` when SciPy is not installed."""
    try:
        import scipy.io  # noqa: PLC0415 - optional: the 'caffe' extra
    except ImportError:
        raise layer.error("MATLAB .mat files need the 'scipy' package: pip install scipy",
                          field=field, cls=DataError) from None
    return scipy.io


def _names(layer: Layer, block: str) -> list[str] | None:
    """The names of the ``source`` list (``strip`` characters cut from each), or None when
    there is no list."""
    p = getattr(layer.lp, block)
    if not p.source:
        return None
    path = resolve_file(p.source, layer.net_dir)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except OSError as e:
        raise layer.error(f"cannot read the list '{path}': {e}", field=f"{block}.source",
                          cls=DataError) from None
    names = []
    for i, line in enumerate(lines, 1):
        words = line.split()
        if not words:
            if i < len(lines):
                raise layer.error(f"line {i} of '{path}' is blank: every line names a file "
                                  "(as in the fork, which stops at one)", field=f"{block}.source",
                                  cls=DataError)
            continue
        if len(words[0]) <= p.strip:
            raise layer.error(f"line {i} of '{path}': strip {p.strip} leaves nothing of "
                              f"{words[0]!r}", field=f"{block}.strip", cls=DataError)
        names.append(words[0][:len(words[0]) - p.strip])
    if not names:
        raise layer.error(f"the list '{path}' names no file", field=f"{block}.source",
                          cls=DataError)
    return names


def _file(layer: Layer, block: str, name: str, i: int) -> Path:
    path = Path(getattr(layer.lp, block).prefix + name + f"_blob_{i}.mat").expanduser()
    return path if path.is_absolute() else (layer.net_dir or Path.cwd()) / path


@register("MatWrite")
class MatWrite(Layer):
    """Writes each bottom to ``prefix + name + '_blob_<i>.mat'`` every ``period`` forwards
    (forwards 0, period, 2·period … counted from the first; ``name`` the forward's index into
    the ``source`` list, an error past its end, else ``iter_<k>``). The whole blob, all N
    items, goes to one file (see the module docstring). Relative paths start at the net
    file's folder; missing folders are created. The list is read at the first forward (the
    fork reads it at set-up), so the net builds where it is absent (``netspec summary``).
    No tops, no gradient."""

    param_block = "mat_write_param"
    min_bottoms = 1
    exact_tops = 0
    has_backward = False

    def setup(self, bottom_shapes):
        self.scipy_io = _scipy_io(self, "mat_write_param")
        for j, s in enumerate(bottom_shapes):
            if len(s) > 4:
                raise self.error(f"bottom {j} has {len(s)} axes {tuple(s)}; a .mat file of the "
                                 "fork holds at most 4 (N, C, H, W)")
        self.names: list[str] | None = None
        self.names_read = False    # at the first forward: the net builds without its list
        self.iteration = 0
        return []

    def forward(self, bottom, top):
        if not self.names_read:
            self.names, self.names_read = _names(self, "mat_write_param"), True
        k, self.iteration = self.iteration, self.iteration + 1
        if k % self.p.period:
            return
        if self.names is not None and k >= len(self.names):
            raise self.error(f"forward {k + 1} but the list names {len(self.names)} files (the "
                             "net has run for more iterations than the list has names)",
                             field="mat_write_param.source", cls=DataError)
        name = self.names[k] if self.names is not None else f"iter_{k}"
        for i, b in enumerate(bottom):
            path = _file(self, "mat_write_param", name, i)
            a = to_numpy(b.data)
            a = a.reshape(a.shape + (1,) * (4 - a.ndim)).transpose(3, 2, 1, 0)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.scipy_io.savemat(path, {"data": a})
            except OSError as e:
                raise self.error(f"cannot write '{path}': {e}", field="mat_write_param.prefix",
                                 cls=DataError) from None


@register("MatRead")
class MatRead(Layer):
    """Reads tops from .mat files as MatWrite writes them: per forward ``batch_size`` names
    (the next ones of the ``source`` list, wrapping around, else ``iter_<k>``), top i of item n
    from ``prefix + name + '_blob_<i>.mat'``, whose ``data`` must hold one item (N = 1) of the
    first file's size. Top i: (batch_size, C, H, W) of the first name's file. No gradient."""

    param_block = "mat_read_param"
    exact_bottoms = 0
    min_tops = 1
    has_backward = False

    def setup(self, bottom_shapes):
        self.scipy_io = _scipy_io(self, "mat_read_param")
        self.names = _names(self, "mat_read_param")
        self.iteration = 0
        first = self.names[0] if self.names is not None else "iter_0"
        shapes = [self._read(first, i).shape for i in range(len(self.lp.top))]
        return [(self.p.batch_size,) + s[1:] for s in shapes]

    def _read(self, name: str, i: int, shape: tuple | None = None) -> np.ndarray:
        """Item ``data`` of file (name, i) as (1, C, H, W)."""
        path = _file(self, "mat_read_param", name, i)
        try:
            a = self.scipy_io.loadmat(path, variable_names=["data"]).get("data")
        except (OSError, ValueError, TypeError) as e:
            raise self.error(f"cannot read '{path}': {e}", field="mat_read_param.prefix",
                             cls=DataError) from None
        if a is None or a.ndim > 4 or a.dtype.kind != "f":
            raise self.error(f"'{path}' must hold a single or double array 'data' of at most 4 "
                             "dimensions (W, H, C, N)", field="mat_read_param.prefix",
                             cls=DataError)
        a = a.reshape(a.shape + (1,) * (4 - a.ndim)).transpose(3, 2, 1, 0)
        if a.shape[0] != 1 or (shape is not None and a.shape[1:] != shape):
            want = f"1×{'×'.join(map(str, shape))}" if shape else "one item (N = 1)"
            raise self.error(f"'{path}' holds {'×'.join(map(str, a.shape))} (N×C×H×W); "
                             f"MatRead needs {want}", field="mat_read_param.prefix",
                             cls=DataError)
        return a

    def forward(self, bottom, top):
        items = [[] for _ in top]
        for _ in range(self.p.batch_size):
            if self.names is not None:
                self.iteration %= len(self.names)
                name = self.names[self.iteration]
            else:
                name = f"iter_{self.iteration}"
            for i, blob in enumerate(top):
                items[i].append(self._read(name, i, tuple(blob.data.shape[1:])))
            self.iteration += 1
        for blob, a in zip(top, items):
            blob.data[...] = self.backend.asarray(np.concatenate(a))
