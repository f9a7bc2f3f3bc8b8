"""A trained net from Python: ``netspec.load`` and the ``Model`` it returns.

``load`` reads a net from YAML or a Caffe ``.prototxt`` (converted in memory), copies weights
from ``.npz`` or ``.caffemodel`` and can set the batch size of its inputs. A ``Model`` gives
named access to blobs (``model.blobs[name].data`` / ``.diff``) and parameters
(``model.params[layer][i]``), runs ``forward(**inputs)`` and ``backward(**top_diffs)`` (whole
net or from/to named layers) and saves its weights.

On the CPU ``.data`` and ``.diff`` are the very arrays the net computes with: writing into them
changes the net. On a GPU they are NumPy copies kept until the next forward, backward, save or
reshape, which first copies those written to back onto the device (so ``blob.data[...] = x``
works there too).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .backend import Backend, get_backend, to_numpy
from .blob import Blob
from .caffe import prototxt as ptx
from .caffe.port import net_yaml
from .errors import DataError, NetspecError, ShapeError, SpecError
from .layers.data import MemoryData
from .net import Net
from .onnx_export.convert import OnnxExportError, net_to_onnx
from .snapshot import load_weights, save_weights
from .spec import load_net, loads_net
from .spec.net import NetParameter
from .spec.overrides import split_sets
from .spec.inputs import with_input_shapes

PHASES = ("TRAIN", "TEST")


def is_prototxt(path: str | Path) -> bool:
    """A Caffe text file (by its suffix: .prototxt, .pbtxt, .pt)."""
    return Path(path).suffix.lower() in (".prototxt", ".pbtxt", ".pt")


def read_net_param(model: str | Path, sets: Sequence[str] = ()) -> NetParameter:
    """The NetParameter of a YAML net file, or of a Caffe net ``.prototxt`` converted in
    memory (as ``netspec convert`` would write it); ``sets``: ``layer.NAME.…`` overrides
    (YAML only)."""
    _, net_sets = split_sets(list(sets))
    if not is_prototxt(model):
        return load_net(model, net_sets)
    if net_sets:
        raise SpecError("overrides (--set) apply to YAML nets; convert the .prototxt first "
                        "(netspec convert)", file=str(model))
    kind, msg, _ = ptx.read(Path(model))
    if kind != "net":
        raise SpecError("this is a solver file, not a net: use netspec.solver() for it",
                        file=str(model))
    text, _, _, _ = net_yaml(msg, str(model), out_name=str(model))
    return loads_net(text, str(model))


def check_phase(phase: Any) -> str:
    """'TRAIN' or 'TEST' from a name or pycaffe's 0/1 (TRAIN = 0, TEST = 1)."""
    if phase in (0, 1) and not isinstance(phase, str):
        return PHASES[int(phase)]
    if isinstance(phase, str) and phase.upper() in PHASES:
        return phase.upper()
    raise SpecError(f"phase must be 'TRAIN' or 'TEST' (or caffe.TRAIN / caffe.TEST), not {phase!r}")


class BlobView:
    """One blob by name: ``data``, ``diff`` (NumPy), ``shape``, ``count``, ``reshape``."""

    def __init__(self, model: Model, name: str, param: tuple[str, int] | None = None):
        self._model = model
        self.name = name
        self._param = param  # (layer, index) for a parameter blob

    def _blob(self) -> Blob:
        m = self._model
        if self._param is None:
            return m.net.blobs[self.name]
        layer, i = self._param
        return m.net.layer_by_name(layer).blobs[i]

    @property
    def data(self):
        return self._model._host(self, "data")

    @data.setter
    def data(self, value) -> None:
        self._model._host(self, "data")[...] = value

    @property
    def diff(self):
        return self._model._host(self, "diff")

    @diff.setter
    def diff(self, value) -> None:
        self._model._host(self, "diff")[...] = value

    @property
    def shape(self) -> tuple[int, ...]:
        return self._blob().shape

    @property
    def count(self) -> int:
        return self._blob().count

    def reshape(self, *shape) -> None:
        """Give this input blob a new shape (the net is rebuilt, its weights kept)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if self._param is not None:
            raise ShapeError(f"parameter blob {self._param[0]}/{self._param[1]} cannot be reshaped")
        self._model.reshape(**{self.name: tuple(int(s) for s in shape)})

    def __repr__(self) -> str:
        return f"<blob {self.name!r} {self.shape}>"


class Model:
    """A net ready to run from Python (see the module docstring); ``net``: the engine's Net."""

    def __init__(self, net_param: NetParameter, phase: str = "TEST", *, gpu: bool = False,
                 backend: Backend | None = None, net: Net | None = None, level: int = 0,
                 stages: Sequence[str] = (), source: str = "",
                 keep_blobs: Sequence[str] | None = None):
        self.param = net_param
        self.phase = check_phase(phase)
        self.source = source
        self._level, self._stages = level, tuple(stages)
        #: None: every blob keeps its values (Caffe); else a forward-only net's blobs share
        #: memory but the inputs', outputs' and these (``Net(reuse_blobs=True)``)
        self._keep = None if keep_blobs is None else tuple(keep_blobs)
        self.net = net if net is not None else self._new_net(net_param, backend or get_backend(gpu))
        #: a solver owns this net's parameter buffers: it cannot be rebuilt (reshaped)
        self.fixed = net is not None
        #: GPU only: (blob name, parameter, data/diff) -> (host copy handed out, as copied)
        self._mirror: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        #: of the last ``load_weights``: the net's blobs the file lacked, the file's unused arrays
        self.missing: list[str] = []
        self.unused: list[str] = []

    @classmethod
    def wrap(cls, net: Net, source: str = "") -> Model:
        """A model over an existing engine net (a solver's), which it cannot rebuild."""
        self = cls.__new__(cls)
        Model.__init__(self, net.param, net.phase, net=net, source=source)
        return self

    # -- host copies (GPU) -------------------------------------------------------------------
    def _host(self, view: BlobView, which: str) -> np.ndarray:
        blob = view._blob()
        arr = getattr(blob, which)
        if isinstance(arr, np.ndarray):
            return arr
        key = (view.name, view._param, which)
        if key not in self._mirror:
            host = to_numpy(arr)
            self._mirror[key] = (host, host.copy())
        return self._mirror[key][0]

    def sync(self) -> None:
        """Copy the NumPy copies handed out on a GPU that were written to back onto it, and
        forget them all (one read in a callback while a solver ran is stale: it is not
        copied back unless written)."""
        for (name, param, which), (host, seen) in self._mirror.items():
            if not np.array_equal(host, seen, equal_nan=True):
                blob = BlobView(self, name, param)._blob()
                getattr(blob, which)[...] = self.net.backend.asarray(host, host.dtype)
        self._mirror.clear()

    # -- names -------------------------------------------------------------------------------
    @property
    def blobs(self) -> dict[str, BlobView]:
        """Every blob of the net by name, in the order they are produced."""
        return {name: BlobView(self, name) for name in self.net.blobs}

    @property
    def params(self) -> dict[str, list[BlobView]]:
        """Layer name -> its parameter blobs (0: weights, 1: bias …), for layers that have any."""
        return {layer.name: [BlobView(self, f"{layer.name}/{i}", (layer.name, i))
                             for i in range(len(layer.blobs))]
                for layer in self.net.layers if layer.blobs}

    @property
    def inputs(self) -> list[str]:
        """The blobs set from outside: the tops of Input layers."""
        return [t.name for layer, tops in zip(self.net.layers, self.net.tops)
                if layer.type_name == "Input" for t in tops]

    @property
    def outputs(self) -> list[str]:
        """Blobs no layer consumes (Caffe's net outputs)."""
        return list(self.net.output_names)

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.net.layers]

    def layer_index(self, name: str) -> int:
        names = self.layer_names
        if name not in names:
            raise KeyError(f"the net has no layer '{name}' (layers: {', '.join(names)})")
        return names.index(name)

    # -- running -----------------------------------------------------------------------------
    def _set(self, arrays: dict[str, Any], which: str, allowed: Iterable[str], what: str) -> None:
        allowed = list(allowed)
        for name, value in arrays.items():
            if name not in allowed:
                raise KeyError(f"'{name}' is not {what} of the net ({', '.join(allowed) or 'none'})")
            blob = self.net.blobs[name]
            value = np.asarray(to_numpy(value))
            if value.shape != blob.shape:
                if value.size == blob.count and value.shape[:1] == blob.shape[:1]:
                    value = value.reshape(blob.shape)
                else:
                    raise ShapeError(f"'{name}' has shape {blob.shape}; got an array of shape "
                                     f"{value.shape} (reshape the input first: "
                                     f"reshape({name}=...))")
            getattr(blob, which)[...] = self.net.backend.asarray(value, blob.data.dtype)

    def _copy_out(self, names: Iterable[str], which: str = "data") -> dict[str, np.ndarray]:
        return {n: np.array(to_numpy(getattr(self.net.blobs[n], which))) for n in names}

    def forward(self, start: str | None = None, end: str | None = None,
                blobs: Sequence[str] = (), **inputs) -> dict[str, np.ndarray]:
        """Set ``inputs`` (input blob name -> array), run the layers from ``start`` to ``end``
        (layer names, both included; default all) and return copies of the outputs (the tops
        of ``end`` when it is given) and of ``blobs``."""
        self.sync()
        self._check_readable(start, blobs)
        self._set(inputs, "data", self.inputs, "an input")
        first = self.layer_index(start) if start else 0
        last = self.layer_index(end) if end else len(self.net.layers) - 1
        self.net.forward(first, last + 1)
        outs = [t.name for t in self.net.tops[last]] if end else self.outputs
        return self._copy_out(dict.fromkeys([*outs, *blobs]))

    def forward_all(self, blobs: Sequence[str] = (), **inputs) -> dict[str, np.ndarray]:
        """Forward any number of items (input blob name -> N×… array, N the same for all) in
        batches of the inputs' first dimension, the last batch padded with zeros; returns
        every output (and ``blobs``) for the N items."""
        outs = list(dict.fromkeys([*self.outputs, *blobs]))
        if not inputs:
            return self.forward(blobs=blobs)
        n = len(next(iter(inputs.values())))
        batch = self.net.blobs[next(iter(inputs))].shape[0]
        got: dict[str, list] = {name: [] for name in outs}
        for i in range(0, n, batch):
            chunk = {}
            for name, arr in inputs.items():
                part = np.asarray(arr[i:i + batch])
                if len(part) < batch:
                    pad = np.zeros((batch - len(part), *part.shape[1:]), part.dtype)
                    part = np.concatenate([part, pad])
                chunk[name] = part
            res = self.forward(blobs=blobs, **chunk)
            for name in outs:
                got[name].append(np.array(res[name]))
        return {name: np.concatenate(v)[:n] for name, v in got.items()}

    def backward(self, start: str | None = None, end: str | None = None,
                 blobs: Sequence[str] = (), **diffs) -> dict[str, np.ndarray]:
        """Seed the loss tops with their weights and the given ``diffs`` (output blob -> top
        gradient), run backward from layer ``start`` down to layer ``end`` (default: all) and
        return copies of the diffs of the bottoms of ``end`` (default: the inputs) and ``blobs``.
        Layers run backward where Caffe would (under a loss, or all with ``force_backward``)."""
        self.sync()
        first = self.layer_index(start) if start else len(self.net.layers) - 1
        last = self.layer_index(end) if end else 0
        if not any(self.net.layer_backward[last:first + 1]):
            raise SpecError("no layer of this net runs backward: it has no loss under which "
                            "to compute gradients. Add 'force_backward: true' to the net "
                            "file to get gradients of any output (e.g. of a deploy net)")
        self.net.seed_loss_diffs()
        self._set(diffs, "diff", self.net.blobs if start else self.outputs, "an output")
        self.net.backward(first, last, seed=False)
        if end:
            outs = [b.name for b in self.net.bottoms[last]]
        else:
            outs = self.inputs
        return self._copy_out(dict.fromkeys([*outs, *blobs]), "diff")

    def clear_param_diffs(self) -> None:
        """Zero the parameter gradients (backward adds to them, as in Caffe)."""
        self.sync()
        self.net.clear_param_diffs()

    def _new_net(self, param: NetParameter, backend: Backend) -> Net:
        return Net(param, self.phase, backend, level=self._level, stages=self._stages,
                   reuse_blobs=self._keep is not None, keep_blobs=self._keep or ())

    def _check_readable(self, start: str | None, blobs: Sequence[str]) -> None:
        """With shared blob memory only inputs, outputs and kept blobs hold their values, and
        only whole forwards from the first layer are valid."""
        if not self.net.blobs_shared:
            return
        readable = {*self.inputs, *self.outputs, *self._keep}
        lost = [b for b in blobs if b not in readable]
        if start or lost:
            what = f"blob '{lost[0]}'" if lost else f"a forward from layer '{start}'"
            raise SpecError(f"{what} needs the net's blobs kept: this Model shares blob memory "
                            "(keep_blobs); load it without keep_blobs, or list the blob in it")

    def reshape(self, **shapes) -> None:
        """Give input blobs new shapes (``data=(1, 3, 227, 227)``): the net is rebuilt for them
        with the same parameter blobs (their shapes must not change)."""
        if not shapes:
            return
        if self.fixed:
            raise ShapeError("the net of a solver cannot be reshaped (its parameters live in the "
                             "solver's buffers); reshape a net from netspec.load instead")
        self.sync()
        param = with_input_shapes(self.param, {k: tuple(v) for k, v in shapes.items()})
        net = self._new_net(param, self.net.backend)
        try:
            net.share_with(self.net)
        except NetspecError as e:
            raise ShapeError(f"cannot reshape {', '.join(shapes)}: {e.message} (a layer's "
                             "parameters would change shape)") from None
        self.param, self.net = param, net

    def set_input_arrays(self, data, labels, layer: str | None = None) -> None:
        """Hand ``data`` (n items) and ``labels`` (n values) to the MemoryData layer ``layer``
        (default: the net's first): each forward then takes the next batch of them, cycling
        (pycaffe's ``net.set_input_arrays``). The position is not part of a solver state."""
        layers = [x for x in self.net.layers if isinstance(x, MemoryData)]
        if layer is not None:
            layers = [x for x in layers if x.name == layer]
        if not layers:
            raise DataError("set_input_arrays needs a MemoryData layer"
                            + (f" named '{layer}'" if layer else "") + " in the net")
        self.sync()
        layers[0].reset(data, labels)

    # -- weights -----------------------------------------------------------------------------
    def load_weights(self, path: str | Path, allow_partial: bool = False) -> tuple[list, list]:
        """Copy weights from an ``.npz`` or ``.caffemodel``: (missing, unused) blob keys."""
        self.sync()
        self.missing, self.unused = load_weights(self.net, path, allow_partial=allow_partial)
        return self.missing, self.unused

    def save(self, path: str | Path) -> Path:
        """Write the weights as ``.npz`` (``layer/i`` keys, as netspec's snapshots)."""
        self.sync()
        save_weights(self.net, path)
        return Path(path)

    def to_onnx(self, blobs: Sequence[str] = ()):
        """This net as an ``onnx.ModelProto`` (TEST phase; its current weights and input
        shapes; ``docs/onnx.md``), with the net's outputs and ``blobs`` as graph outputs.
        Layers ONNX cannot express: OnnxExportError naming them all. Write it with
        ``onnx.save`` or ``netspec.export_onnx``."""
        if self.phase != "TEST":
            raise OnnxExportError("ONNX export takes the TEST phase of a net (a deployed net); "
                                  "load it with phase='TEST'", file=self.source or None)
        self.sync()
        return net_to_onnx(self.net, self.source, blobs)

    def __repr__(self) -> str:
        return (f"<netspec.Model {self.net.name or self.source!r} {self.phase}: "
                f"inputs {self.inputs}, outputs {self.outputs}>")


def load(model: str | Path, weights: str | Path | None = None, phase: str = "TEST",
         batch_size: int | None = None, gpu: bool = False, sets: Sequence[str] = (),
         allow_partial: bool = False, level: int = 0, stages: Sequence[str] = (),
         keep_blobs: Sequence[str] | None = None) -> Model:
    """A ``Model`` of the net file ``model`` (YAML or Caffe ``.prototxt``) in ``phase``, with
    ``weights`` (``.npz`` or ``.caffemodel``; ``allow_partial``: some blobs may be missing)
    and, with ``batch_size``, every input's first dimension set to it. ``keep_blobs`` (a list,
    may be empty): a forward-only net's blobs share memory, only the inputs, outputs and
    these keep their values (``Net(reuse_blobs=True)``)."""
    param = read_net_param(model, sets)
    phase = check_phase(phase)
    backend = get_backend(gpu)
    if batch_size is not None:
        probe = Net(param, phase, backend, level=level, stages=stages)
        shapes = {t.name: (int(batch_size), *t.shape[1:])
                  for layer, tops in zip(probe.layers, probe.tops)
                  if layer.type_name == "Input" for t in tops}
        if not shapes:
            raise ShapeError("batch_size needs a net with Input layers (a deploy net); this "
                             "one reads its batches from data layers: set their batch_size",
                             file=str(model))
        param = with_input_shapes(param, shapes)
    m = Model(param, phase, backend=backend, level=level, stages=stages, source=str(model),
              keep_blobs=keep_blobs)
    if weights is not None:
        m.load_weights(weights, allow_partial=allow_partial)
    return m
