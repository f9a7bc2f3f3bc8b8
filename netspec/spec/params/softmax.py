"""Softmax messages: Softmax and SoftmaxWithLoss share ``softmax_param``.

Field for field as in ``caffe.proto``, with Caffe's defaults."""

from __future__ import annotations

from ..base import Message
from .common import Engine


class SoftmaxParameter(Message):
    engine: Engine = "DEFAULT"
    axis: int = 1


#: the Caffe layer types of this family
TYPES = ("Softmax", "SoftmaxWithLoss", "SoftmaxWithLossOHEM")

#: the layer-specific blocks this family adds to LayerParameter: field name -> message
BLOCKS: dict[str, type[Message]] = {
    "softmax_param": SoftmaxParameter,
}
