"""Shape messages: Flatten, Reshape, Crop, Tile; from the forks, SSD's Permute, the Upsample
of the YOLO forks and of SegNet, ShuffleNet's ShuffleChannel, PSPNet's (DeepLab v2's) bilinear
Interp.

Field for field as in ``caffe.proto`` (the forks': their own), with Caffe's defaults."""

from __future__ import annotations

from typing import Optional

from pydantic import Field, NonNegativeInt

from ..base import Message, Repeated
from .common import BlobShape


class FlattenParameter(Message):
    axis: int = 1
    end_axis: int = -1


class ReshapeParameter(Message):
    """``Reshape``: new ``shape`` for axes [axis, axis + num_axes) (0 = copy, -1 = infer)."""

    shape: Optional[BlobShape] = None
    axis: int = 0
    num_axes: int = -1


class CropParameter(Message):
    """``Crop``: crop bottom 0 to bottom 1's shape from ``axis`` on, at ``offset``."""

    axis: int = 2
    offset: Repeated[NonNegativeInt] = Field(default_factory=list)


class TileParameter(Message):
    """``Tile``: repeat the blob ``tiles`` times along ``axis``."""

    axis: int = 1
    tiles: Optional[int] = None


class PermuteParameter(Message):
    """``Permute`` (SSD, ``permute_param`` 202): the new order of the axes; the axes left out
    follow in increasing order."""

    order: Repeated[NonNegativeInt] = Field(default_factory=list)


class UpsampleParameter(Message):
    """``Upsample`` (``upsample_param`` 149; 137 in SegNet's fork): the YOLO forks' layer (one
    bottom) reads ``scale`` (nearest neighbour, default 1). SegNet's un-pooling layer (two
    bottoms) reads the output size ``upsample_h``/``upsample_w``, or ``scale`` (absent: 2,
    SegNet's default) or ``scale_h``/``scale_w``, less ``pad_out_h``/``pad_out_w``."""

    scale: int = 1
    scale_h: Optional[NonNegativeInt] = None
    scale_w: Optional[NonNegativeInt] = None
    pad_out_h: bool = False
    pad_out_w: bool = False
    upsample_h: Optional[NonNegativeInt] = None
    upsample_w: Optional[NonNegativeInt] = None


class InterpParameter(Message):
    """``Interp`` (PSPNet / DeepLab v2, ``interp_param``; 143 in the forks, 2143 here since
    BVLC gave 143 to ``input_param``): the output size from ``shrink_factor`` and/or
    ``zoom_factor``, or ``height`` and ``width``; ``pad_beg``/``pad_end`` (≤ 0) crop the input
    first."""

    height: Optional[int] = None
    width: Optional[int] = None
    zoom_factor: Optional[int] = None
    shrink_factor: Optional[int] = None
    pad_beg: int = 0
    pad_end: int = 0


class ShuffleChannelParameter(Message):
    """``ShuffleChannel`` (ShuffleNet, ``shuffle_channel_param`` 164): the number of groups."""

    group: NonNegativeInt = 1


#: the Caffe layer types of this family
TYPES = ("Flatten", "Reshape", "Crop", "Tile", "Permute", "Upsample", "ShuffleChannel",
         "Interp",)

#: the layer-specific blocks this family adds to LayerParameter: field name -> message
BLOCKS: dict[str, type[Message]] = {
    "flatten_param": FlattenParameter,
    "reshape_param": ReshapeParameter,
    "crop_param": CropParameter,
    "tile_param": TileParameter,
    "permute_param": PermuteParameter,
    "upsample_param": UpsampleParameter,
    "shuffle_channel_param": ShuffleChannelParameter,
    "interp_param": InterpParameter,
}
