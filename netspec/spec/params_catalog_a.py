"""Parameter messages of the layer catalog, part a (Caffe's names, numbers and defaults).

Field for field as in ``caffe.proto``. ``uint32`` fields reject negative values here; an
``optional`` field without a Caffe default whose presence matters (``has_axis()``,
``has_tiles()``, ``has_slice_dim()``) is ``None`` when absent. Semantic checks (odd
``local_size``, ``top_k`` >= 1, ...) are made by the layers, which know the bottom shapes.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, NonNegativeInt

from .base import Message, Repeated
from .params import BlobShape, Engine, FillerParameter


class LRNParameter(Message):
    """Local response normalisation (``LRN`` layer)."""

    local_size: NonNegativeInt = 5
    alpha: float = 1.0
    beta: float = 0.75
    norm_region: Literal["ACROSS_CHANNELS", "WITHIN_CHANNEL"] = "ACROSS_CHANNELS"
    k: float = 1.0
    engine: Engine = "DEFAULT"


class CropParameter(Message):
    """``Crop``: crop bottom 0 to bottom 1's shape from ``axis`` on, at ``offset``."""

    axis: int = 2
    offset: Repeated[NonNegativeInt] = Field(default_factory=list)


class SliceParameter(Message):
    """``Slice``: split along ``axis`` (or the legacy ``slice_dim``) at ``slice_point``."""

    axis: int = 1
    slice_point: Repeated[NonNegativeInt] = Field(default_factory=list)
    slice_dim: Optional[NonNegativeInt] = None   # Caffe's default 1 only matters when set


class ReshapeParameter(Message):
    """``Reshape``: new ``shape`` for axes [axis, axis + num_axes) (0 = copy, -1 = infer)."""

    shape: Optional[BlobShape] = None
    axis: int = 0
    num_axes: int = -1


class TileParameter(Message):
    """``Tile``: repeat the blob ``tiles`` times along ``axis``."""

    axis: int = 1
    tiles: Optional[int] = None


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


class SPPParameter(Message):
    """``SPP``: spatial pyramid pooling with ``pyramid_height`` levels."""

    pyramid_height: Optional[NonNegativeInt] = None
    pool: Literal["MAX", "AVE", "STOCHASTIC"] = "MAX"
    engine: Engine = "DEFAULT"


class EmbedParameter(Message):
    """``Embed``: a learned lookup table of ``input_dim`` rows of ``num_output`` values."""

    num_output: Optional[NonNegativeInt] = None
    input_dim: Optional[NonNegativeInt] = None
    bias_term: bool = True
    weight_filler: FillerParameter = Field(default_factory=FillerParameter)
    bias_filler: FillerParameter = Field(default_factory=FillerParameter)


class ParameterParameter(Message):
    """``Parameter``: a learned blob of ``shape`` exposed as the layer's top."""

    shape: Optional[BlobShape] = None


class BiasParameter(Message):
    """``Bias``: add a bias (learned, or bottom 1) broadcast along [axis, axis + num_axes)."""

    axis: int = 1
    num_axes: int = 1
    filler: Optional[FillerParameter] = None


class RecurrentParameter(Message):
    """``RNN`` and ``LSTM``: ``num_output`` hidden units (must be set, > 0), fillers for the
    weights and biases, and ``expose_hidden`` (the initial state as extra bottoms, the final
    state as extra tops). ``debug_info`` is accepted and has no effect."""

    num_output: NonNegativeInt = 0
    weight_filler: FillerParameter = Field(default_factory=FillerParameter)
    bias_filler: FillerParameter = Field(default_factory=FillerParameter)
    debug_info: bool = False
    expose_hidden: bool = False


#: layer-specific blocks this module adds to LayerParameter: field name -> message class
BLOCKS: dict[str, type[Message]] = {
    "lrn_param": LRNParameter,
    "crop_param": CropParameter,
    "slice_param": SliceParameter,
    "reshape_param": ReshapeParameter,
    "tile_param": TileParameter,
    "reduction_param": ReductionParameter,
    "argmax_param": ArgMaxParameter,
    "spp_param": SPPParameter,
    "embed_param": EmbedParameter,
    "parameter_param": ParameterParameter,
    "bias_param": BiasParameter,
    "recurrent_param": RecurrentParameter,
}
