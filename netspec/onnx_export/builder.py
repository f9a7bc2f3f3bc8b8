"""The ONNX graph under construction and the table of Caffe type -> translation.

A translation is ``fn(g: GraphBuilder, s: Site)``: it adds nodes that compute the layer's tops
``s.tops`` (tensor names chosen by ``convert``) from ``s.bottoms``, reading the layer object
``s.layer`` (set up by netspec, its parameter blobs filled) and the static shapes
``s.bottom_shapes``/``s.top_shapes``. A layer ONNX cannot express raises ``Unsupported`` with
the reason; ``convert`` gathers every such layer into one error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import to_numpy

#: the operator set the exported models use (ONNX Runtime >= 1.17 and onnx >= 1.16 read it)
OPSET = 17
#: the IR version that goes with opset 17 (newer onnx releases write a higher one by default,
#: which older ONNX Runtime releases refuse)
IR_VERSION = 8


class Unsupported(Exception):
    """This layer (with these settings) has no exact ONNX form; the message says why."""


@dataclass
class Site:
    """One layer being translated: the netspec layer object and its ONNX tensor names/shapes."""
    layer: Any
    bottoms: list[str]
    tops: list[str]
    bottom_shapes: list[tuple[int, ...]]
    top_shapes: list[tuple[int, ...]]

    @property
    def name(self) -> str:
        return self.layer.name

    def blob(self, i: int) -> np.ndarray:
        """Parameter blob ``i`` of the layer as a float32 NumPy array."""
        return np.asarray(to_numpy(self.layer.blobs[i].data), dtype=np.float32)


#: Caffe type name -> translation
TRANSLATIONS: dict[str, Callable[[GraphBuilder, Site], None]] = {}


def translates(*types: str):
    """Register a translation for the Caffe ``types``."""
    def deco(fn):
        for t in types:
            TRANSLATIONS[t] = fn
        return fn
    return deco


class GraphBuilder:
    """Nodes and initializers of one ONNX graph, with unique tensor and node names."""

    def __init__(self):
        self.nodes: list = []
        self.initializers: list = []
        self.used: set[str] = set()

    def reserve(self, name: str) -> str:
        """Mark ``name`` as taken (graph inputs, tops named after their blob)."""
        self.used.add(name)
        return name

    def fresh(self, base: str) -> str:
        """An unused tensor name starting with ``base``."""
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        return self.reserve(name)

    def const(self, value, base: str, dtype=np.float32) -> str:
        """An initializer holding ``value`` (float32 unless ``dtype``); returns its name."""
        from onnx import numpy_helper  # noqa: PLC0415 - optional: onnx

        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def shape_const(self, shape, base: str) -> str:
        return self.const(list(shape), base, np.int64)

    def node(self, op: str, inputs: list[str], outputs: list[str] | str | None = None,
             base: str = "", **attrs) -> str:
        """Add one ``op`` node; ``outputs``: names (default one fresh tensor from ``base``).
        Returns the first output's name. Empty input names stand for omitted inputs."""
        from onnx import helper  # noqa: PLC0415 - optional: onnx

        if outputs is None:
            outputs = [self.fresh(base or op)]
        elif isinstance(outputs, str):
            outputs = [outputs]
        name = self.fresh(f"{base or outputs[0]}/{op}")
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), name=name, **attrs))
        return outputs[0]

    def reshape(self, x: str, shape, out: str | None = None, base: str = "") -> str:
        """``x`` reshaped to the static ``shape``."""
        return self.node("Reshape", [x, self.shape_const(shape, f"{base}/shape")], out,
                         base=base)

    def identity(self, x: str, out: str) -> str:
        return self.node("Identity", [x], out)


def broadcast_shape(param_shape, axis: int, rank: int) -> tuple[int, ...]:
    """The shape that puts a parameter over axes [axis, axis + len(param_shape)) of a
    ``rank``-D tensor under NumPy broadcasting: ``param_shape`` + trailing 1s."""
    return tuple(param_shape) + (1,) * (rank - axis - len(param_shape))
