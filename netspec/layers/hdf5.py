"""HDF5 layers: HDF5Data reads the files listed in ``source``; HDF5Output writes its bottoms.
Both need h5py (``pip install 'netspec[caffe]'``).
"""

from __future__ import annotations

from pathlib import Path

import numpy

from ..backend import to_numpy
from ..errors import DataError, NetspecError
from .base import Layer
from .registry import register


def _h5py(layer: Layer, action: str, field: str):
    """The h5py module, or the layer's error naming ``field`` when it is not installed."""
    try:
        import h5py  # noqa: PLC0415 - optional: the 'caffe' extra
    except ImportError:
        raise layer.error(f"{action} HDF5 files needs the 'h5py' package: pip install h5py",
                          field=field, cls=DataError) from None
    return h5py


def _resolve_listed(name: str, folder: Path) -> Path:
    p = Path(name).expanduser()
    if p.is_absolute():
        return p
    for c in (folder / p, Path.cwd() / p):
        if c.is_file():
            return c
    return folder / p


@register("HDF5Data")
class HDF5Data(Layer):
    """Rows of HDF5 datasets, one dataset per top, named like the top (Caffe's HDF5Data).

    ``hdf5_data_param.source``: a text file listing .h5 files (whitespace separated), relative
    to the net file's folder or the working directory; relative .h5 paths resolve against the
    list file's folder, then the working directory. Each file holds a dataset per top name with
    the same number of rows (axis 0). Top i: (batch_size, *dataset_i.shape[1:]). Rows are read
    in order, file after file, wrapping around; ``shuffle`` permutes the files and the rows
    within each file (a new order on every pass). Values become floats. No gradient; needs
    ``h5py``. ``transform_param`` is refused (Caffe: HDF5 data is not transformed).
    """

    param_block = "hdf5_data_param"
    exact_bottoms = 0
    min_tops = 1
    has_backward = False

    def setup(self, bottom_shapes):
        if self.lp.transform_param is not None:
            raise self.spec_error("HDF5Data does not transform data: remove transform_param",
                                  field="transform_param")
        h5py = _h5py(self, "reading", "hdf5_data_param.source")
        p = self.p
        listing = self.resolve_path(p.source)
        try:
            names = listing.read_text().split()
        except OSError:
            raise self.error(f"failed to open source file '{p.source}' (looked for {listing})",
                             field="hdf5_data_param.source", cls=DataError) from None
        if not names:
            raise self.error(f"must have at least 1 HDF5 filename listed in {listing}",
                             field="hdf5_data_param.source", cls=DataError)
        self.files = [str(_resolve_listed(n, listing.parent)) for n in names]
        self.tops = list(self.lp.top)
        trailing = None
        for f in self.files:
            shapes = self._dataset_shapes(h5py, f)
            if trailing is None:
                trailing = [s[1:] for s in shapes]
            elif [s[1:] for s in shapes] != trailing:
                raise self.error(f"'{f}' has datasets of shapes {shapes}; the first file's rows "
                                 f"are {trailing} (netspec tops have fixed shapes)", cls=DataError)
        if p.shuffle and self.shard is not None:
            raise self.spec_error(
                f"shuffle is not supported in data-parallel training ({self.shard.size} ranks): "
                "the ranks would draw different orders. Shuffle the rows into the files "
                "beforehand and set shuffle: false", field="hdf5_data_param.shuffle")
        self.file_order = numpy.arange(len(self.files))
        if p.shuffle:
            self.file_order = self.rng.permutation(len(self.files))
        self.current_file = 0
        self._load(self.file_order[0])
        self.current_row = 0
        return [(int(p.batch_size), *t) for t in trailing]

    def _dataset_shapes(self, h5py, f):
        try:
            with h5py.File(f, "r") as h:
                shapes = []
                for name in self.tops:
                    if name not in h:
                        raise self.error(f"'{f}' has no dataset '{name}' (a top's name); it has "
                                         f"{sorted(h.keys())}", cls=DataError)
                    shapes.append(tuple(int(d) for d in h[name].shape))
        except NetspecError:
            raise
        except OSError as e:
            raise self.error(f"cannot open HDF5 file '{f}': {e}", cls=DataError) from None
        if any(len(s) < 1 for s in shapes):
            raise self.error(f"'{f}': datasets must have at least 1 axis, got {shapes}",
                             cls=DataError)
        if len({s[0] for s in shapes}) != 1:
            raise self.error(f"'{f}': datasets {self.tops} differ in rows: {shapes}",
                             cls=DataError)
        return shapes

    def _load(self, index: int) -> None:
        h5py = _h5py(self, "reading", "hdf5_data_param.source")
        with h5py.File(self.files[index], "r") as h:
            self.arrays = [numpy.asarray(h[name][...]) for name in self.tops]
        self.rows = self.arrays[0].shape[0]
        self.row_order = numpy.arange(self.rows)
        if self.p.shuffle:
            self.row_order = self.rng.permutation(self.rows)
        self.loaded = int(index)

    def _next_file(self) -> None:
        """Caffe's Next() at the end of a file's rows."""
        if len(self.files) > 1:
            self.current_file += 1
            if self.current_file == len(self.files):
                self.current_file = 0
                if self.p.shuffle:
                    self.file_order = self.rng.permutation(len(self.files))
            self._load(self.file_order[self.current_file])
        self.current_row = 0
        if self.p.shuffle:
            self.row_order = self.rng.permutation(self.rows)

    def forward(self, bottom, top):
        """The next batch_size rows; in data-parallel training the rows of the global batch
        (batch_size × ranks) at this rank's positions (``netspec/data/shard.py``)."""
        size = 1 if self.shard is None else self.shard.size
        batch = int(self.p.batch_size) * size
        out = [numpy.empty((batch, *t.shape[1:]), dtype=numpy.float64) for t in top]
        filled = 0
        while filled < batch:
            take = min(batch - filled, self.rows - self.current_row)
            idx = self.row_order[self.current_row:self.current_row + take]
            for o, a in zip(out, self.arrays):
                o[filled:filled + take] = a[idx]
            filled += take
            self.current_row += take
            if self.current_row == self.rows:
                self._next_file()
        for t, o in zip(top, out):
            t.data[...] = self.backend.asarray(o if self.shard is None else self.shard.take(o))

    def state_dict(self):
        return {"current_file": self.current_file, "current_row": self.current_row,
                "file_order": self.file_order, "row_order": self.row_order}

    def load_state_dict(self, state):
        self.file_order = numpy.asarray(state["file_order"], dtype=numpy.int64)
        self.current_file = int(state["current_file"])
        if int(self.file_order[self.current_file]) != self.loaded:
            self._load(self.file_order[self.current_file])
        self.row_order = numpy.asarray(state["row_order"], dtype=numpy.int64)
        self.current_row = int(state["current_row"])


DATASETS = ("data", "label")  # Caffe's HDF5_DATA_DATASET_NAME, HDF5_DATA_LABEL_NAME


FIELD = "hdf5_output_param.file_name"


def _legacy_4d(layer: Layer, j: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Caffe's Blob::LegacyShape view: (num, channels, height, width), missing axes as 1."""
    if len(shape) > 4:
        raise layer.error(f"bottom {j} ({DATASETS[j]}) has {len(shape)} axes {shape}; Caffe's "
                          "HDF5Output writes blobs of at most 4 axes")
    return tuple(shape) + (1,) * (4 - len(shape))


@register("HDF5Output")
class HDF5Output(Layer):
    """Writes bottoms ``data`` and ``label`` to ``hdf5_output_param.file_name``; see the module
    docstring for Caffe's format and the one-batch-per-file rule."""

    param_block = "hdf5_output_param"
    exact_bottoms = 2
    exact_tops = 0
    has_backward = False

    def setup(self, bottom_shapes):
        self.h5py = _h5py(self, "writing", FIELD)
        name = self.p.file_name
        if not name.strip():
            raise self.spec_error("hdf5_output_param.file_name is empty: name the .h5 file to "
                                  "write", field=FIELD)
        path = Path(name).expanduser()
        if not path.is_absolute():
            path = (self.net_dir or Path.cwd()) / path
        if not path.parent.is_dir():
            raise self.error(f"cannot create '{path}': its folder does not exist", field=FIELD,
                             cls=DataError)
        self.path = path
        self.shapes = [_legacy_4d(self, j, tuple(s)) for j, s in enumerate(bottom_shapes)]
        if self.shapes[0][0] != self.shapes[1][0]:
            raise self.error(f"data and label must have the same batch size (axis 0), got "
                             f"{tuple(bottom_shapes[0])} and {tuple(bottom_shapes[1])}")
        self.written = False
        return []

    def forward(self, bottom, top):
        if self.written:
            raise self.error(
                f"'{self.path}' already holds datasets 'data' and 'label' from this layer's "
                "first forward; as in Caffe (which stops with 'Failed to make float dataset "
                "data'), an HDF5Output layer writes one batch per file. Run the net for one "
                "batch (e.g. test_iter: 1), or write each batch from Python", field=FIELD,
                cls=DataError)
        arrays = [to_numpy(b.data).reshape(s) for b, s in zip(bottom, self.shapes)]
        try:
            with self.h5py.File(self.path, "w") as f:
                for name, a in zip(DATASETS, arrays):
                    f.create_dataset(name, data=a)
        except OSError as e:
            raise self.error(f"cannot write HDF5 file '{self.path}': {e}", field=FIELD,
                             cls=DataError) from None
        self.written = True
