"""pycaffe's ``caffe.Net`` on netspec's engine (BVLC ``python/caffe/pycaffe.py`` semantics).

``blob.data`` / ``blob.diff`` are the arrays the net computes with (on the CPU; on a GPU, NumPy
copies that go back onto the device before the next forward or backward), so
``net.blobs["data"].data[...] = x`` feeds the net as in pycaffe. ``forward`` and ``backward``
return those arrays, not copies, as pycaffe does.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..backend import get_backend, to_numpy
from ..caffe.caffemodel import attach_blobs, write_caffemodel
from ..caffe.export import net_message
from ..errors import NetspecError, ShapeError
from ..model import BlobView, Model, check_phase, read_net_param
from ..snapshot import load_weights, weights_dict
from . import mode


class PycaffeUnsupported(NetspecError, NotImplementedError):
    """A pycaffe feature that netspec does not provide."""


def unsupported(feature: str, instead: str = "") -> PycaffeUnsupported:
    return PycaffeUnsupported(f"pycaffe's {feature} is not supported by netspec.pycaffe"
                              + (f"; {instead}" if instead else ""))


class Blob(BlobView):
    """pycaffe's Blob: ``data``, ``diff``, ``shape``, ``count``, ``num`` … ``reshape``."""

    @property
    def num(self) -> int:
        return self._legacy(0)

    @property
    def channels(self) -> int:
        return self._legacy(1)

    @property
    def height(self) -> int:
        return self._legacy(2)

    @property
    def width(self) -> int:
        return self._legacy(3)

    def _legacy(self, axis: int) -> int:
        shape = self.shape
        if len(shape) > 4:
            raise ShapeError(f"blob '{self.name}' has {len(shape)} axes; num/channels/height/width "
                             "need at most 4 (use .shape)")
        return int((shape + (1,) * 4)[axis])

    def reshape(self, *shape) -> None:
        if self._param is None and self.name not in self._model.inputs:
            raise unsupported(f"Blob.reshape of '{self.name}'",
                              "only the inputs (tops of Input layers) can be reshaped")
        super().reshape(*shape)


class Layer:
    """pycaffe's view of one layer: ``type``, ``blobs`` (its parameter blobs), ``name``."""

    def __init__(self, net: Net, index: int):
        self._net = net
        self._index = index

    @property
    def name(self) -> str:
        return self._net.net.layers[self._index].name

    @property
    def type(self) -> str:
        return self._net.net.layers[self._index].type_name

    @property
    def blobs(self) -> list[Blob]:
        layer = self._net.net.layers[self._index]
        return [Blob(self._net, f"{layer.name}/{i}", (layer.name, i)) for i in range(len(layer.blobs))]

    def reshape(self, bottom, top) -> None:
        raise unsupported("Layer.reshape", "reshape an input blob instead")

    def __repr__(self) -> str:
        return f"<caffe layer {self.name!r} ({self.type})>"


class Net(Model):
    """``caffe.Net(model, phase, weights=…)`` or ``caffe.Net(model, weights, phase)``; the
    model is a Caffe ``.prototxt`` or a netspec YAML file, the weights ``.caffemodel`` or
    ``.npz``."""

    def __init__(self, model, *args, level: int = 0, stages=None, weights=None, phase=None):
        if len(args) == 2:
            weights, phase = args
            if isinstance(weights, int) and not isinstance(phase, int):
                phase, weights = weights, phase      # caffe.Net(model, caffe.TEST, weights)
        elif len(args) == 1:
            phase = args[0]
        elif args:
            raise TypeError("caffe.Net(model, phase) or caffe.Net(model, weights, phase)")
        if phase is None:
            raise TypeError("caffe.Net needs a phase: caffe.TRAIN or caffe.TEST")
        param = read_net_param(model)
        Model.__init__(self, param, check_phase(phase), backend=get_backend(mode.gpu, device_id=mode.device),
                       level=level, stages=list(stages or ()), source=str(model))
        if weights is not None:
            self.copy_from(weights)

    # -- named access ------------------------------------------------------------------------
    @property
    def blobs(self) -> OrderedDict[str, Blob]:
        return OrderedDict((name, Blob(self, name)) for name in self.net.blobs)

    @property
    def params(self) -> OrderedDict[str, list[Blob]]:
        return OrderedDict((layer.name, [Blob(self, f"{layer.name}/{i}", (layer.name, i))
                                         for i in range(len(layer.blobs))])
                           for layer in self.net.layers if layer.blobs)

    @property
    def blob_loss_weights(self) -> OrderedDict[str, float]:
        return OrderedDict((name, self.net.loss_weight_of(name)) for name in self.net.blobs)

    @property
    def layers(self) -> list[Layer]:
        return [Layer(self, i) for i in range(len(self.net.layers))]

    @property
    def layer_dict(self) -> OrderedDict[str, Layer]:
        return OrderedDict((layer.name, layer) for layer in self.layers)

    @property
    def _layer_names(self) -> list[str]:
        return self.layer_names

    @property
    def _blob_names(self) -> list[str]:
        return list(self.net.blobs)

    @property
    def top_names(self) -> OrderedDict[str, list[str]]:
        return OrderedDict((layer.name, [t.name for t in tops])
                           for layer, tops in zip(self.net.layers, self.net.tops))

    @property
    def bottom_names(self) -> OrderedDict[str, list[str]]:
        return OrderedDict((layer.name, [b.name for b in bottoms])
                           for layer, bottoms in zip(self.net.layers, self.net.bottoms))

    # -- running -----------------------------------------------------------------------------
    def _feed(self, arrays: dict, which: str, allowed) -> None:
        for name, value in arrays.items():
            if name not in allowed:
                raise KeyError(f"'{name}' is not one of {list(allowed)}")
            value = np.asarray(to_numpy(value))
            blob = self.net.blobs[name]
            if value.shape[:1] != blob.shape[:1]:
                raise ShapeError(f"'{name}' is not batch sized: got {value.shape[:1]}, the blob "
                                 f"has {blob.shape} (reshape it first)")
            getattr(self.blobs[name], which)[...] = value

    def forward(self, blobs=None, start=None, end=None, **kwargs) -> dict[str, np.ndarray]:
        """Set the input blobs in ``kwargs``, run from layer ``start`` to ``end``; return the
        outputs (the tops of ``end`` when given) and ``blobs``: the net's own arrays."""
        self._feed(kwargs, "data", self.inputs)
        self.sync()
        first = self.layer_index(start) if start else 0
        last = self.layer_index(end) if end else len(self.net.layers) - 1
        self.net.forward(first, last + 1)
        outs = [t.name for t in self.net.tops[last]] if end else self.outputs
        views = self.blobs
        return {n: views[n].data for n in dict.fromkeys([*outs, *(blobs or [])])}

    def backward(self, diffs=None, start=None, end=None, **kwargs) -> dict[str, np.ndarray]:
        """Set the top diffs in ``kwargs`` (outputs, or the tops of ``start``), run backward
        from ``start`` down to ``end``; return the diffs of the inputs (the bottoms of
        ``end`` when given) and of ``diffs``."""
        self.sync()
        self.net.seed_loss_diffs()
        allowed = [t.name for t in self.net.tops[self.layer_index(start)]] if start else self.outputs
        self._feed(kwargs, "diff", allowed)
        self.sync()
        first = self.layer_index(start) if start else len(self.net.layers) - 1
        last = self.layer_index(end) if end else 0
        self.net.backward(first, last, seed=False)
        outs = [b.name for b in self.net.bottoms[last]] if end else self.inputs
        views = self.blobs
        return {n: views[n].diff for n in dict.fromkeys([*outs, *(diffs or [])])}

    def forward_all(self, blobs=None, **kwargs) -> dict[str, np.ndarray]:
        """Forward any number of items in batches of the input's size (the last one padded);
        returns every output (and ``blobs``) for all the items."""
        return Model.forward_all(self, blobs=list(blobs or []), **kwargs)

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        raise unsupported("Net.forward_backward_all", "call forward and backward per batch")

    def reshape(self, **shapes) -> None:
        """pycaffe's ``net.reshape()``: the blobs reshaped with ``blob.reshape`` already are
        (the net is rebuilt at once), so this only takes netspec's ``name=shape`` form."""
        super().reshape(**shapes)

    # -- weights -----------------------------------------------------------------------------
    def copy_from(self, weights) -> None:
        """Copy the weights of the layers the file has (Caffe's CopyTrainedLayersFrom: layers
        it lacks keep their values)."""
        self.sync()
        load_weights(self.net, weights, allow_partial=True)

    def share_with(self, other: Net) -> None:
        self.net.share_with(other.net)

    def save(self, filename) -> None:
        """Write the weights: ``.caffemodel`` (Caffe's binary), or ``.npz`` (netspec's)."""
        self.sync()
        if Path(filename).suffix == ".caffemodel":
            msg, _ = net_message(self.param)
            attach_blobs(msg, {k: to_numpy(v) for k, v in weights_dict(self.net).items()})
            write_caffemodel(msg, filename)
        else:
            super().save(filename)

    def save_hdf5(self, filename) -> None:
        raise unsupported("Net.save_hdf5", "save to .caffemodel or .npz")

    def load_hdf5(self, filename) -> None:
        raise unsupported("Net.load_hdf5", "load a .caffemodel or .npz with copy_from")

    def after_forward(self, *a: Any) -> None:
        raise unsupported("Net.after_forward (layer hooks)")

    def before_forward(self, *a: Any) -> None:
        raise unsupported("Net.before_forward (layer hooks)")
