"""Dense-product messages: InnerProduct, Embed, Parameter.

Field for field as in ``caffe.proto``, with Caffe's defaults."""

from __future__ import annotations

from typing import Optional

from pydantic import Field, NonNegativeInt

from ..base import Message
from .common import BlobShape, FillerParameter


class InnerProductParameter(Message):
    num_output: int = Field(gt=0)
    bias_term: bool = True
    weight_filler: FillerParameter = Field(default_factory=FillerParameter)
    bias_filler: FillerParameter = Field(default_factory=FillerParameter)
    axis: int = 1
    transpose: bool = False


class EmbedParameter(Message):
    """``Embed``: a learned lookup table of ``input_dim`` rows of ``num_output`` values."""

    num_output: Optional[NonNegativeInt] = None
    input_dim: Optional[NonNegativeInt] = None
    bias_term: bool = True
    weight_filler: FillerParameter = Field(default_factory=FillerParameter)
    bias_filler: FillerParameter = Field(default_factory=FillerParameter)


class ParameterParameter(Message):
    """``Parameter``: a learned blob of ``shape`` exposed as the layer's top."""

    shape: Optional[BlobShape] = None


#: the Caffe layer types of this family
TYPES = ("InnerProduct", "Embed", "Parameter",)

#: the layer-specific blocks this family adds to LayerParameter: field name -> message
BLOCKS: dict[str, type[Message]] = {
    "inner_product_param": InnerProductParameter,
    "embed_param": EmbedParameter,
    "parameter_param": ParameterParameter,
}
