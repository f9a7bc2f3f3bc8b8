"""Normalization messages: BatchNorm, Scale, Bias, LRN, MVN; from the forks, SSD's Normalize.

Field for field as in ``caffe.proto``, with Caffe's defaults."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import NonNegativeInt

from ..base import Message
from .common import Engine, FillerParameter


class BatchNormParameter(Message):
    use_global_stats: Optional[bool] = None
    moving_average_fraction: float = 0.999
    eps: float = 1e-5


class ScaleParameter(Message):
    axis: int = 1
    num_axes: int = 1
    filler: Optional[FillerParameter] = None
    bias_term: bool = False
    bias_filler: Optional[FillerParameter] = None


class BiasParameter(Message):
    """``Bias``: add a bias (learned, or bottom 1) broadcast along [axis, axis + num_axes)."""

    axis: int = 1
    num_axes: int = 1
    filler: Optional[FillerParameter] = None


class LRNParameter(Message):
    """Local response normalisation (``LRN`` layer)."""

    local_size: NonNegativeInt = 5
    alpha: float = 1.0
    beta: float = 0.75
    norm_region: Literal["ACROSS_CHANNELS", "WITHIN_CHANNEL"] = "ACROSS_CHANNELS"
    k: float = 1.0
    engine: Engine = "DEFAULT"


class MVNParameter(Message):
    """``mvn_param`` (120): mean (and variance) normalisation per image or per channel."""

    normalize_variance: bool = True
    across_channels: bool = False
    eps: float = 1e-9


class NormalizeParameter(Message):
    """``Normalize`` (SSD, ``norm_param`` 206): L2 norm over each image (``across_spatial``) or
    over the channels at each position, times a learned scale, one shared or one per channel.
    ``scale_filler`` defaults (when absent) to constant 1, as in SSD."""

    across_spatial: bool = True
    scale_filler: Optional[FillerParameter] = None
    channel_shared: bool = True
    eps: float = 1e-10


#: the Caffe layer types of this family
TYPES = ("BatchNorm", "Scale", "Bias", "LRN", "MVN", "Normalize",)

#: the layer-specific blocks this family adds to LayerParameter: field name -> message
BLOCKS: dict[str, type[Message]] = {
    "batch_norm_param": BatchNormParameter,
    "scale_param": ScaleParameter,
    "bias_param": BiasParameter,
    "lrn_param": LRNParameter,
    "mvn_param": MVNParameter,
    "norm_param": NormalizeParameter,
}
