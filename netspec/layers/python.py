"""Caffe's Python layer: a user class (``python_param.module``/``layer``) run as a layer, with
pycaffe's blob interface (``bottom[0].data``, ``top[0].reshape(...)``, ``self.blobs``).
``netspec.python_layer`` is the public import for user code.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
import traceback
import types
from pathlib import Path
from typing import Any

import numpy

from ..backend import to_numpy
from ..errors import NetspecError, SpecError, suggest
from ..spec.params import FillerParameter
from .base import Layer, legacy_dim
from .registry import register

TRAIN, TEST = 0, 1  # pycaffe's caffe.TRAIN / caffe.TEST (a layer's ``self.phase``)


class PythonLayerError(NetspecError):
    """A Python layer's own code failed (the message names the layer, method and line)."""


class PythonLayerBase:
    """Base class of user Python layers: pycaffe's ``caffe.Layer`` for netspec.

    Public as ``netspec.python_layer.Layer``, and as ``caffe.Layer`` where netspec stands in for
    pycaffe. Subclasses define ``setup(bottom, top)``, ``reshape(bottom, top)``,
    ``forward(bottom, top)`` and ``backward(top, propagate_down, bottom)``. Before ``setup``
    netspec sets ``self.param_str`` (``python_param.param_str``), ``self.phase`` (TRAIN = 0,
    TEST = 1) and ``self.blobs`` (learnable parameters: ``self.blobs.add_blob(*shape)`` in
    setup). ``self.layer_param`` is the layer's spec (netspec's LayerParameter).
    """

    type = "Python"

    def __init__(self, layer_param: Any = None):
        self.layer_param = layer_param

    def setup(self, bottom, top):
        """Check the bottoms, read ``self.param_str``, add parameter blobs."""

    def reshape(self, bottom, top):
        """Give every top its shape: ``top[i].reshape(*shape)``."""

    def forward(self, bottom, top):
        raise SpecError(f"Python layer class {type(self).__name__} defines no forward(bottom, top); "
                        "a Python layer must override it, as in pycaffe")

    def backward(self, top, propagate_down, bottom):
        raise SpecError(f"Python layer class {type(self).__name__} defines no backward(top, "
                        "propagate_down, bottom); override it, or set propagate_down: false")


def caffe_shim() -> types.ModuleType:
    """A module standing in for ``caffe`` (pycaffe) inside Python layer files: Layer, TRAIN, TEST."""
    mod = types.ModuleType("caffe", "netspec's stand-in for pycaffe inside Python layers")
    mod.Layer = PythonLayerBase
    mod.TRAIN, mod.TEST = TRAIN, TEST
    mod.__netspec_shim__ = True
    return mod


def _install_caffe_shim() -> None:
    """``import caffe`` works in layer files: the real pycaffe when importable, else the shim."""
    if "caffe" in sys.modules:
        return
    try:
        found = importlib.util.find_spec("caffe") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        sys.modules["caffe"] = caffe_shim()


class PyBlob:
    """pycaffe's Blob as a Python layer sees it: ``data``, ``diff`` (NumPy arrays, written in
    place), ``shape``, ``count``, ``num``/``channels``/``height``/``width``, ``reshape(*shape)``.

    On a GPU net ``data``/``diff`` are host copies, written back when the method returns.
    """

    __slots__ = ("_blob", "_data", "_diff", "_shape", "_fixed", "_host", "_label")

    def __init__(self, blob=None, *, shape=None, host: bool = False, label: str = "blob",
                 dtype=numpy.float32):
        self._blob, self._host, self._label = blob, host, label
        self._fixed = blob is not None
        self._data = self._diff = None
        self._shape = None
        if blob is None:
            self._dtype_init(shape, dtype)

    def _dtype_init(self, shape, dtype):
        self._shape = None if shape is None else tuple(int(s) for s in shape)
        self._data = numpy.zeros(self._shape or (0,), dtype=dtype)
        self._diff = numpy.zeros_like(self._data)

    @property
    def shape(self) -> tuple[int, ...]:
        if self._blob is not None:
            return tuple(self._blob.shape)
        return self._shape if self._shape is not None else (0,)

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    num = property(lambda self: legacy_dim(self.shape, 0))
    channels = property(lambda self: legacy_dim(self.shape, 1))
    height = property(lambda self: legacy_dim(self.shape, 2))
    width = property(lambda self: legacy_dim(self.shape, 3))

    def _view(self, kind: str):
        """``data``/``diff``: the blob's array, or (GPU) a host copy made on first access."""
        if self._blob is None or self._host:
            cached = getattr(self, f"_{kind}")
            if self._blob is None or cached is not None:
                return cached
            setattr(self, f"_{kind}", to_numpy(getattr(self._blob, kind)).copy())
            return getattr(self, f"_{kind}")
        return getattr(self._blob, kind)

    data = property(lambda self: self._view("data"))
    diff = property(lambda self: self._view("diff"))

    def reshape(self, *shape) -> None:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = tuple(int(s) for s in shape)
        if self._fixed:
            if shape != self.shape:
                raise ValueError(f"{self._label} has the fixed shape {self.shape} (netspec nets "
                                 f"fix shapes at setup); reshape{shape} cannot change it")
            return
        self._dtype_init(shape, self._data.dtype)

    def sync(self) -> None:
        """Write host copies back to the device (GPU nets) and drop them."""
        if self._blob is None or not self._host:
            return
        xp = self._blob._xp
        if self._data is not None:
            self._blob.data[...] = xp.asarray(self._data)
        if self._diff is not None:
            self._blob.diff[...] = xp.asarray(self._diff)
        self._data = self._diff = None

    def __repr__(self) -> str:
        return f"<Blob {self._label} {self.shape}>"


class _ParamVec(list):
    """``self.blobs`` of a Python layer: its learnable parameter blobs (pycaffe's BlobVec)."""

    def __init__(self, owner: "Python"):
        super().__init__()
        self._owner = owner
        self._open = True

    def add_blob(self, *shape) -> None:
        """Append a zero-filled parameter blob of ``shape`` (only in setup)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if not self._open:
            raise ValueError("parameter blobs can only be added in setup()")
        o = self._owner
        o.add_param(tuple(int(s) for s in shape), FillerParameter(type="constant", value=0.0),
                    "python")
        self.append(PyBlob(o.blobs[-1], host=o.backend.is_gpu, label=f"param {len(self)}"))


@register("Python")
class Python(Layer):
    """A layer written in Python with pycaffe's interface (``python_param``).

    ``module`` is imported (search path: the net file's folder, the working directory, then
    ``sys.path``, which includes PYTHONPATH) and ``layer`` names a class in it, instantiated with
    the layer's spec. The class derives from ``netspec.python_layer.Layer`` (or ``caffe.Layer``:
    when pycaffe is not installed, ``import caffe`` in the layer file gets netspec's stand-in).
    netspec sets ``param_str``, ``phase`` and ``blobs``, calls ``setup`` then ``reshape`` once
    to learn the top shapes (which stay fixed), and before every ``forward`` calls ``reshape``
    again as Caffe does. Bottoms and tops are PyBlob objects; backward receives
    ``propagate_down``. ``share_in_parallel`` is accepted and ignored (one process).
    """

    allows_in_place = True     # as in pycaffe: the user's layer sees one blob as bottom and top
    param_block = "python_param"

    def setup(self, bottom_shapes):
        p = self.p
        cls = self._load_class()
        try:
            obj = cls(self.lp)
        except Exception as e:  # noqa: BLE001
            raise self.spec_error(f"cannot create {p.module}.{p.layer}({type(e).__name__}: {e}); "
                                  "Python layer classes take the layer's spec as their one "
                                  "argument (derive from netspec.python_layer.Layer)",
                                  field="python_param.layer") from e
        for method in ("setup", "reshape", "forward", "backward"):
            if not callable(getattr(obj, method, None)):
                raise self.spec_error(f"class {p.module}.{p.layer} has no {method}() method",
                                      field="python_param.layer")
        obj.param_str = p.param_str
        obj.phase = TRAIN if self.phase == "TRAIN" else TEST
        obj.blobs = _ParamVec(self)
        self.obj = obj
        dt = numpy.dtype(self.dtype)
        bottoms = [PyBlob(shape=s, label=f"bottom {i}", dtype=dt)
                   for i, s in enumerate(bottom_shapes)]
        tops = [PyBlob(label=f"top {i} '{name}'", dtype=dt) for i, name in enumerate(self.lp.top)]
        self._call("setup", bottoms, tops)
        self._call("reshape", bottoms, tops)
        obj.blobs._open = False
        missing = [self.lp.top[i] for i, t in enumerate(tops) if t._shape is None]
        if missing:
            raise self.error(f"{p.module}.{p.layer} gave no shape to top(s) {missing}: call "
                             "top[i].reshape(*shape) in setup() or reshape()")
        return [t.shape for t in tops]

    def reshape(self, bottom_shapes):
        """New bottom shapes: the object's ``reshape`` (not ``setup``: its blobs stay), as
        Caffe's Reshape; returns the top shapes it gives."""
        dt = numpy.dtype(self.dtype)
        bottoms = [PyBlob(shape=s, label=f"bottom {i}", dtype=dt)
                   for i, s in enumerate(bottom_shapes)]
        tops = [PyBlob(label=f"top {i} '{name}'", dtype=dt) for i, name in enumerate(self.lp.top)]
        self._call("reshape", bottoms, tops)
        missing = [self.lp.top[i] for i, t in enumerate(tops) if t._shape is None]
        if missing:
            raise self.error(f"{self.p.module}.{self.p.layer} gave no shape to top(s) "
                             f"{missing} in reshape(): call top[i].reshape(*shape)")
        return [t.shape for t in tops]

    def _load_class(self):
        p = self.p
        dirs = [d for d in (self.net_dir, Path.cwd()) if d is not None]
        added = []
        for d in reversed(dirs):
            sys.path.insert(0, str(d))
            added.append(str(d))
        field = "python_param.module"
        try:
            _install_caffe_shim()
            module = importlib.import_module(p.module)
        except ModuleNotFoundError as e:
            if e.name and (p.module == e.name or p.module.startswith(e.name + ".")):
                raise self.spec_error(
                    f"cannot find Python module '{p.module}': looked in "
                    f"{', '.join(str(d) for d in dirs)} and sys.path (PYTHONPATH)",
                    field=field) from None
            raise self.spec_error(f"importing module '{p.module}' failed: {e}", field=field) from e
        except Exception as e:  # noqa: BLE001 - the module's own code failed
            raise self.spec_error(f"importing module '{p.module}' failed: {type(e).__name__}: "
                                  f"{e}{_user_line(e)}", field=field) from e
        finally:
            for d in added:
                try:
                    sys.path.remove(d)
                except ValueError:
                    pass
        cls = getattr(module, p.layer, None)
        if cls is None:
            names = [n for n, v in vars(module).items() if isinstance(v, type)]
            raise self.spec_error(f"module '{p.module}' ({getattr(module, '__file__', '?')}) has "
                                  f"no class '{p.layer}'.{suggest(p.layer, names)}",
                                  field="python_param.layer")
        return cls

    def _call(self, method: str, *args) -> None:
        obj = self.obj
        for pb, param in zip(obj.blobs, self.blobs):
            pb._blob = param          # the net may have replaced a blob by a shared one
        try:
            getattr(obj, method)(*args)
        except NetspecError:
            raise
        except Exception as e:  # noqa: BLE001 - the user's code failed
            raise self.error(f"{self.p.module}.{self.p.layer}.{method}() raised "
                             f"{type(e).__name__}: {e}{_user_line(e)}",
                             cls=PythonLayerError) from e
        finally:
            for group in args:
                if isinstance(group, list):
                    for b in group:
                        if isinstance(b, PyBlob):
                            b.sync()
            for pb in obj.blobs:
                pb.sync()

    def _wrap(self, blobs, kind: str, seen: dict) -> list[PyBlob]:
        out = []
        for i, b in enumerate(blobs):
            if id(b) not in seen:     # in place: bottom and top share one PyBlob
                seen[id(b)] = PyBlob(b, host=self.backend.is_gpu, label=f"{kind} {i} '{b.name}'")
            out.append(seen[id(b)])
        return out

    def forward(self, bottom, top):
        seen: dict = {}
        b, t = self._wrap(bottom, "bottom", seen), self._wrap(top, "top", seen)
        self._call("reshape", b, t)
        self._call("forward", b, t)

    def backward(self, top, propagate_down, bottom):
        seen: dict = {}
        b, t = self._wrap(bottom, "bottom", seen), self._wrap(top, "top", seen)
        self._call("backward", t, [bool(x) for x in propagate_down], b)


def _user_line(e: BaseException) -> str:
    """' (at file:line)' for the innermost frame outside netspec, or ''."""
    here = str(Path(__file__).resolve().parents[1])
    for frame in reversed(traceback.extract_tb(e.__traceback__)):
        if not os.path.abspath(frame.filename).startswith(here):
            return f" (at {frame.filename}:{frame.lineno})"
    return ""
