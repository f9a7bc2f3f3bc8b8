"""The forks' ``BN`` layer message: the fields of PSPNet's (hszhao/PSPNet, after yjxiong/caffe)
and of SegNet's same-named layer (alexgkendall/caffe-segnet); the fields a layer sets say which
of the two it is (``netspec.layers.batch_norm_forks``).

Field for field as in the forks' ``caffe.proto``, with their defaults."""

from __future__ import annotations

from typing import Literal, Optional

from ..base import Message
from .common import Engine, FillerParameter


class BNParameter(Message):
    """``bn_param`` (137 in PSPNet / yjxiong/caffe, where BVLC has ``embed_param``: 1137 here).

    PSPNet: ``slope_filler`` (1), ``bias_filler`` (2), ``momentum`` (3), ``eps`` (4),
    ``frozen`` (5), ``engine`` (6). SegNet numbers ``scale_filler`` 1, ``shift_filler`` 2 and
    ``bn_mode`` 3 — an enum where PSPNet has the float ``momentum`` — so the two messages do not
    share a wire format; SegNet's fields are numbered 101–103 here (its ``bn_param`` is
    LayerParameter's field 45). ``bn_mode``: LEARN (batch statistics) or INFERENCE (scale and
    shift only); absent, LEARN.
    """

    slope_filler: Optional[FillerParameter] = None
    bias_filler: Optional[FillerParameter] = None
    momentum: float = 0.9
    eps: float = 1e-5
    frozen: bool = False
    engine: Engine = "DEFAULT"
    scale_filler: Optional[FillerParameter] = None
    shift_filler: Optional[FillerParameter] = None
    bn_mode: Optional[Literal["LEARN", "INFERENCE"]] = None


#: the Caffe layer types of this family
TYPES = ("BN",)

#: the layer-specific blocks this family adds to LayerParameter: field name -> message
BLOCKS: dict[str, type[Message]] = {
    "bn_param": BNParameter,
}
