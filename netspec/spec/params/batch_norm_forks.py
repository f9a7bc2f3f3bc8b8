"""The forks' ``BN`` layer message: PSPNet's (hszhao/PSPNet, after yjxiong/caffe), with the
fields of SegNet's same-named layer (alexgkendall/caffe-segnet) accepted so that the layer can
name that fork when it refuses it.

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
    share a wire format; SegNet's fields are carried here (101–103) only to be refused by name.
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
