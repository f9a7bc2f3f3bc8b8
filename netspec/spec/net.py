"""Pydantic models of a network file: NetParameter and LayerParameter (Caffe's names)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, create_model, field_validator

from ..errors import suggest
from .base import Message, Repeated
from .params import (LAYER_PARAM_BLOCKS, LAYER_TYPES, BlobShape, LossParameter, NetState,
                     NetStateRule, ParamSpec, TransformationParameter)


class _LayerParameterBase(Message):
    """One ``layer`` entry. Layer-specific blocks (``convolution_param`` ...) are added below."""

    name: str
    type: str
    bottom: Repeated[str] = Field(default_factory=list)
    top: Repeated[str] = Field(default_factory=list)
    phase: Optional[Literal["TRAIN", "TEST"]] = None
    loss_weight: Repeated[float] = Field(default_factory=list)
    param: Repeated[ParamSpec] = Field(default_factory=list)
    propagate_down: Repeated[bool] = Field(default_factory=list)
    include: Repeated[NetStateRule] = Field(default_factory=list)
    exclude: Repeated[NetStateRule] = Field(default_factory=list)
    transform_param: Optional[TransformationParameter] = None
    loss_param: Optional[LossParameter] = None

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if v not in LAYER_TYPES:
            raise ValueError(f"unknown layer type '{v}'.{suggest(v, LAYER_TYPES)} "
                             f"Known types: {', '.join(sorted(LAYER_TYPES))}")
        return v


LayerParameter = create_model(
    "LayerParameter",
    __base__=_LayerParameterBase,
    __doc__=_LayerParameterBase.__doc__,
    **{key: (Optional[msg], None) for key, msg in LAYER_PARAM_BLOCKS.items()},
)


class NetParameter(Message):
    """A network file: ``name``, optional legacy ``input`` header, and the ``layer`` list."""

    name: str = ""
    input: Repeated[str] = Field(default_factory=list)
    input_shape: Repeated[BlobShape] = Field(default_factory=list)
    input_dim: Repeated[int] = Field(default_factory=list)
    force_backward: bool = False
    state: NetState = Field(default_factory=NetState)
    debug_info: bool = False
    layer: Repeated[LayerParameter] = Field(default_factory=list)  # type: ignore[valid-type]
