"""Reduction messages: Reduction, ArgMax.

Field for field as in ``caffe.proto``, with Caffe's defaults."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import NonNegativeInt

from ..base import Message


class ReductionParameter(Message):
    """``Reduction``: reduce all axes from ``axis`` on with ``operation``, times ``coeff``."""

    operation: Literal["SUM", "ASUM", "SUMSQ", "MEAN"] = "SUM"
    axis: int = 0
    coeff: float = 1.0


class ArgMaxParameter(Message):
    """``ArgMax``: indices (and/or values) of the ``top_k`` largest entries."""

    out_max_val: bool = False
    top_k: NonNegativeInt = 1
    axis: Optional[int] = None


#: the Caffe layer types of this family
TYPES = ("Reduction", "ArgMax",)

#: the layer-specific blocks this family adds to LayerParameter: field name -> message
BLOCKS: dict[str, type[Message]] = {
    "reduction_param": ReductionParameter,
    "argmax_param": ArgMaxParameter,
}
