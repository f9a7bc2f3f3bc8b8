"""Dense-product messages: InnerProduct, Embed, Parameter; SphereFace's MarginInnerProduct.

Field for field as in ``caffe.proto``, with Caffe's defaults."""

from __future__ import annotations

from typing import Literal, Optional

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
class MarginInnerProductParameter(Message):
    """``margin_inner_product_param`` (SphereFace's A-Softmax, wy1iu/sphereface; 147 in the
    fork, where BVLC has ``swish_param``: 3147 here). ``type``: the margin m = 1 … 4 (SINGLE,
    DOUBLE, TRIPLE, QUADRUPLE). λ = max(base·(1 + gamma·iter)^(−power), lambda_min) blends the
    margin logit with the plain one; ``iteration`` is the count iter starts from."""

    num_output: int = Field(gt=0)
    type: Literal["SINGLE", "DOUBLE", "TRIPLE", "QUADRUPLE"] = "SINGLE"
    weight_filler: Optional[FillerParameter] = None
    axis: int = 1
    base: float = 1.0
    gamma: float = 0.0
    power: float = 1.0
    iteration: int = 0
    lambda_min: float = 0.0


TYPES = ("InnerProduct", "Embed", "Parameter", "MarginInnerProduct",)

#: the layer-specific blocks this family adds to LayerParameter: field name -> message
BLOCKS: dict[str, type[Message]] = {
    "inner_product_param": InnerProductParameter,
    "embed_param": EmbedParameter,
    "parameter_param": ParameterParameter,
    "margin_inner_product_param": MarginInnerProductParameter,
}
