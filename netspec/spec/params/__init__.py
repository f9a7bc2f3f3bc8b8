"""Caffe's layer parameter messages (``caffe.proto``), field for field, with Caffe's defaults.

One module per layer family, mirroring ``netspec/layers/``; each declares its Caffe layer types
(``TYPES``) and the blocks it adds to LayerParameter (``BLOCKS``), and they are assembled here in
one place. Each message is a strict pydantic model, so an unknown key is an error with the
file's line. ``uint32`` fields reject negative values; an ``optional`` field without a Caffe
default whose presence matters (``has_axis()``) is ``None`` when absent. Checks that need bottom
shapes are made by the layers.
"""

from __future__ import annotations

from ..base import Message
from . import (batch_norm_forks, conv, data, detection, inner_product, loss, multibox, neuron, normalization, pool,
               python, recurrent, reduction, reshape, roi, softmax, structure, yolo)
from .common import (BlobShape, Engine, FillerParameter, LossParameter, NetState, NetStateRule,
                     ParamSpec, TransformationParameter, VarianceNorm)

FAMILIES = (data, conv, pool, roi, inner_product, neuron, normalization, batch_norm_forks,
            structure, reshape, reduction, softmax, loss, detection, multibox, yolo, recurrent,
            python)


def _assemble() -> tuple[tuple[str, ...], dict[str, type[Message]]]:
    types: list[str] = []
    blocks: dict[str, type[Message]] = {}
    for family in FAMILIES:
        for t in family.TYPES:
            if t in types:
                raise RuntimeError(f"layer type {t!r} declared by two families")
            types.append(t)
        for key, msg in family.BLOCKS.items():
            if key in blocks:
                raise RuntimeError(f"parameter block {key!r} defined by two families")
            blocks[key] = msg
    return tuple(types), blocks


#: every Caffe layer type netspec implements (the layer registry must hold exactly these)
#: and every layer-specific block of LayerParameter: field name -> message class
LAYER_TYPES, LAYER_PARAM_BLOCKS = _assemble()

__all__ = ["LAYER_TYPES", "LAYER_PARAM_BLOCKS", "FAMILIES", "BlobShape", "Engine",
           "FillerParameter", "LossParameter", "NetState", "NetStateRule", "ParamSpec",
           "TransformationParameter", "VarianceNorm"]
