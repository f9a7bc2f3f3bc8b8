"""Recurrent messages: LSTM and RNN share ``recurrent_param``; LSTMUnit has none.

Field for field as in ``caffe.proto``, with Caffe's defaults."""

from __future__ import annotations

from pydantic import Field, NonNegativeInt

from ..base import Message
from .common import FillerParameter


class RecurrentParameter(Message):
    """``RNN`` and ``LSTM``: ``num_output`` hidden units (must be set, > 0), fillers for the
    weights and biases, and ``expose_hidden`` (the initial state as extra bottoms, the final
    state as extra tops). ``debug_info`` is accepted and has no effect."""

    num_output: NonNegativeInt = 0
    weight_filler: FillerParameter = Field(default_factory=FillerParameter)
    bias_filler: FillerParameter = Field(default_factory=FillerParameter)
    debug_info: bool = False
    expose_hidden: bool = False


#: the Caffe layer types of this family
TYPES = ("LSTM", "RNN", "LSTMUnit",)

#: the layer-specific blocks this family adds to LayerParameter: field name -> message
BLOCKS: dict[str, type[Message]] = {
    "recurrent_param": RecurrentParameter,
}
