"""Routing messages: Concat, Eltwise, Slice (Split, Silence, Filter, BatchReindex and the forks'
Axpy have none).

Field for field as in ``caffe.proto``, with Caffe's defaults."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, NonNegativeInt

from ..base import Message, Repeated


class ConcatParameter(Message):
    axis: int = 1
    concat_dim: Optional[int] = None


class EltwiseParameter(Message):
    operation: Literal["PROD", "SUM", "MAX"] = "SUM"
    coeff: Repeated[float] = Field(default_factory=list)
    stable_prod_grad: bool = True


class SliceParameter(Message):
    """``Slice``: split along ``axis`` (or the legacy ``slice_dim``) at ``slice_point``."""

    axis: int = 1
    slice_point: Repeated[NonNegativeInt] = Field(default_factory=list)
    slice_dim: Optional[NonNegativeInt] = None   # Caffe's default 1 only matters when set


#: the Caffe layer types of this family
TYPES = ("Split", "Concat", "Eltwise", "Slice", "Silence", "Filter", "BatchReindex", "Axpy",)

#: the layer-specific blocks this family adds to LayerParameter: field name -> message
BLOCKS: dict[str, type[Message]] = {
    "concat_param": ConcatParameter,
    "eltwise_param": EltwiseParameter,
    "slice_param": SliceParameter,
}
