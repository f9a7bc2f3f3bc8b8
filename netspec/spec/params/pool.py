"""Pooling messages: Pooling and SPP.

Field for field as in ``caffe.proto``, with Caffe's defaults."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import NonNegativeInt, model_validator

from ..base import FieldError, Message
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
    #: FORK (BVLC pull request 3057, carried by many forks): true = CEIL, false = FLOOR. The
    #: forks number it 13, BVLC's round_mode; netspec's caffe.proto gives it 1013 (text files
    #: read it by name).
    ceil_mode: Optional[bool] = None

    @model_validator(mode="after")
    def _check_ceil_mode(self) -> "PoolingParameter":
        if (self.ceil_mode is not None and "round_mode" in self.model_fields_set
                and self.ceil_mode != (self.round_mode == "CEIL")):
            raise FieldError("ceil_mode", f"ceil_mode {str(self.ceil_mode).lower()} (a fork's "
                             f"field) contradicts round_mode {self.round_mode}; give one of them")
        return self

    @property
    def ceil(self) -> bool:
        """Whether the output size rounds up: ``ceil_mode`` when given, else ``round_mode``."""
        return self.ceil_mode if self.ceil_mode is not None else self.round_mode == "CEIL"


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
