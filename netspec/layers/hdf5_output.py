"""``HDF5Output``: write a net's blobs to an HDF5 file (BVLC Caffe's HDF5OutputLayer).

Caffe (``src/caffe/layers/hdf5_output_layer.cpp``, ``util/hdf5.cpp``):

* bottoms ``data`` and ``label``, exactly two, with the same number of rows (axis 0); no tops;
* ``hdf5_output_param.file_name``: the file, created (truncated) by the layer;
* forward writes the bottoms as datasets ``"data"`` and ``"label"``, each with the blob's
  legacy 4-D shape (num, channels, height, width): missing trailing axes count as 1, so an
  N × D blob is written as N × D × 1 × 1 and an N-vector as N × 1 × 1 × 1; more than 4 axes is
  an error. Values in the net's dtype (float32, float64 in gradient checks);
* backward does nothing: no gradient reaches the bottoms through this layer.

A second forward of the same layer makes Caffe stop (``H5LTmake_dataset`` cannot create the
datasets again: "Failed to make float dataset data"), so a Caffe HDF5Output file holds exactly
one batch. netspec keeps that contract and says so: the second forward raises a DataError that
names the layer and the file, which keeps the first batch.

netspec differs in two documented ways: a relative ``file_name`` is relative to the net file's
folder (the working directory for a net without a file; Caffe: the working directory), and the
file is created at the first forward rather than when the net is built, so building a net
(``netspec validate``, ``draw``) writes nothing. Building checks that h5py is installed and that
the file's folder exists. Needs ``h5py`` (``pip install 'netspec[caffe]'``).
"""

from __future__ import annotations

from pathlib import Path

from ..backend import to_numpy
from ..errors import DataError
from .base import Layer
from .catalog_b import _net_dir
from .registry import register

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
        self.h5py = self._h5py()
        name = self.p.file_name
        if not name.strip():
            raise self.spec_error("hdf5_output_param.file_name is empty: name the .h5 file to "
                                  "write", field=FIELD)
        path = Path(name).expanduser()
        if not path.is_absolute():
            path = (_net_dir(self.where) or Path.cwd()) / path
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

    def _h5py(self):
        try:
            import h5py  # noqa: PLC0415
        except ImportError:
            raise self.error("writing HDF5 files needs the 'h5py' package: pip install h5py",
                             field=FIELD, cls=DataError) from None
        return h5py

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
