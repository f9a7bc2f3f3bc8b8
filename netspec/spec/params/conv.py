"""Convolution messages: Convolution, Deconvolution, Im2col and the forks' depthwise
convolutions (DepthwiseConvolution, ConvolutionDepthwise) share ``convolution_param``.

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
TYPES = ("Convolution", "Deconvolution", "Im2col", "DepthwiseConvolution", "ConvolutionDepthwise",)

#: the layer-specific blocks this family adds to LayerParameter: field name -> message
BLOCKS: dict[str, type[Message]] = {
    "convolution_param": ConvolutionParameter,
}


def spatial_pair(values, h, w, name: str, default: int | None) -> tuple[int, int]:
    """Caffe's (h, w) of a 2-D size field (Convolution's and Pooling's kernel_size, pad, stride,
    dilation): one value for both dims (a scalar or a 1-list), h then w (a 2-list), or the
    field's ``_h``/``_w`` pair; ``default`` for both when nothing is set (None: required).
    Raises ValueError naming the field when the forms are mixed or incomplete."""
    if values is None:
        values = []
    elif not isinstance(values, (list, tuple)):
        values = [values]
    values = [int(v) for v in values]
    if h is not None or w is not None:
        if values:
            raise ValueError(f"either {name} or its _h/_w pair should be specified; not both")
        if h is None or w is None:
            raise ValueError(f"the _h and _w forms of {name} must be given together")
        return int(h), int(w)
    if not values:
        if default is None:
            raise ValueError(f"{name} (or its _h and _w pair) is required")
        return default, default
    if len(values) in (1, 2):
        return values[0], values[-1]
    raise ValueError(f"{name} takes 1 or 2 values for 2-D blobs, got {len(values)}")
