"""Convolution messages: Convolution, Deconvolution and Im2col share ``convolution_param``.

Field for field as in ``caffe.proto``, with Caffe's defaults."""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from ..base import Message, Repeated
from .common import Engine, FillerParameter


class ConvolutionParameter(Message):
    num_output: Optional[int] = Field(default=None, gt=0)  # required by Convolution/Deconvolution
    bias_term: bool = True
    pad: Repeated[int] = Field(default_factory=list)
    kernel_size: Repeated[int] = Field(default_factory=list)
    stride: Repeated[int] = Field(default_factory=list)
    dilation: Repeated[int] = Field(default_factory=list)
    pad_h: Optional[int] = None
    pad_w: Optional[int] = None
    kernel_h: Optional[int] = None
    kernel_w: Optional[int] = None
    stride_h: Optional[int] = None
    stride_w: Optional[int] = None
    group: int = Field(default=1, gt=0)
    weight_filler: FillerParameter = Field(default_factory=FillerParameter)
    bias_filler: FillerParameter = Field(default_factory=FillerParameter)
    engine: Engine = "DEFAULT"
    axis: int = 1
    force_nd_im2col: bool = False


#: the Caffe layer types of this family
TYPES = ("Convolution", "Deconvolution", "Im2col",)

#: the layer-specific blocks this family adds to LayerParameter: field name -> message
BLOCKS: dict[str, type[Message]] = {
    "convolution_param": ConvolutionParameter,
}
