"""Pooling messages: Pooling and SPP.

Field for field as in ``caffe.proto``, with Caffe's defaults."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import NonNegativeInt

from ..base import Message
from .common import Engine


class PoolingParameter(Message):
    pool: Literal["MAX", "AVE", "STOCHASTIC"] = "MAX"
    pad: int = 0
    pad_h: Optional[int] = None
    pad_w: Optional[int] = None
    kernel_size: Optional[int] = None
    kernel_h: Optional[int] = None
    kernel_w: Optional[int] = None
    stride: int = 1
    stride_h: Optional[int] = None
    stride_w: Optional[int] = None
    engine: Engine = "DEFAULT"
    global_pooling: bool = False
    round_mode: Literal["CEIL", "FLOOR"] = "CEIL"


class SPPParameter(Message):
    """``SPP``: spatial pyramid pooling with ``pyramid_height`` levels."""

    pyramid_height: Optional[NonNegativeInt] = None
    pool: Literal["MAX", "AVE", "STOCHASTIC"] = "MAX"
    engine: Engine = "DEFAULT"


#: the Caffe layer types of this family
TYPES = ("Pooling", "SPP",)

#: the layer-specific blocks this family adds to LayerParameter: field name -> message
BLOCKS: dict[str, type[Message]] = {
    "pooling_param": PoolingParameter,
    "spp_param": SPPParameter,
}
