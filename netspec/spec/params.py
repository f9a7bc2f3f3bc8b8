"""Caffe's layer parameter messages (``caffe.proto``), field for field, with Caffe's defaults.

Only the messages of layers netspec implements live here; each is a strict pydantic model,
so an unknown key is an error with the file's line.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from .base import Message, Repeated

VarianceNorm = Literal["FAN_IN", "FAN_OUT", "AVERAGE"]
Engine = Literal["DEFAULT", "CAFFE", "CUDNN"]


class FillerParameter(Message):
    """How a parameter blob is initialised (``netspec.fillers``)."""

    type: str = "constant"
    value: float = 0.0
    min: float = 0.0
    max: float = 1.0
    mean: float = 0.0
    std: float = 1.0
    sparse: int = -1
    variance_norm: VarianceNorm = "FAN_IN"


class BlobShape(Message):
    dim: Repeated[int] = Field(default_factory=list)


class ParamSpec(Message):
    """Per-parameter-blob settings: sharing name and learning-rate / decay multipliers."""

    name: Optional[str] = None
    share_mode: Literal["STRICT", "PERMISSIVE"] = "STRICT"
    lr_mult: float = 1.0
    decay_mult: float = 1.0


class NetStateRule(Message):
    """include/exclude rule: a layer is in the net when every set condition holds."""

    phase: Optional[Literal["TRAIN", "TEST"]] = None
    min_level: Optional[int] = None
    max_level: Optional[int] = None
    stage: Repeated[str] = Field(default_factory=list)
    not_stage: Repeated[str] = Field(default_factory=list)


class NetState(Message):
    phase: Literal["TRAIN", "TEST"] = "TEST"
    level: int = 0
    stage: Repeated[str] = Field(default_factory=list)


class TransformationParameter(Message):
    scale: float = 1.0
    mirror: bool = False
    crop_size: int = 0
    mean_file: Optional[str] = None
    mean_value: Repeated[float] = Field(default_factory=list)
    force_color: bool = False
    force_gray: bool = False


class LossParameter(Message):
    ignore_label: Optional[int] = None
    normalization: Literal["FULL", "VALID", "BATCH_SIZE", "NONE"] = "VALID"
    normalize: Optional[bool] = None


class InputParameter(Message):
    shape: Repeated[BlobShape] = Field(default_factory=list)


class DataParameter(Message):
    """Caffe's DataParameter plus netspec's ``split`` and ``shuffle`` for built-in/npz sources.

    ``source``: ``builtin:mnist``, a ``.npz`` with arrays ``data`` and ``label``, a directory
    holding MNIST IDX files, or a Caffe LevelDB or LMDB of Datum records (``backend``).
    ``shuffle`` (netspec): reshuffle the order every epoch (Caffe's Data layer reads in file
    order, which is the default here too).
    """

    source: str
    batch_size: int = Field(gt=0)
    rand_skip: int = 0
    backend: Literal["LEVELDB", "LMDB"] = "LEVELDB"
    scale: float = 1.0
    mean_file: Optional[str] = None
    crop_size: int = 0
    mirror: bool = False
    force_encoded_color: bool = False
    prefetch: int = 4
    split: Literal["train", "test"] = "train"
    shuffle: bool = False
    limit: int = Field(default=0, ge=0, description="netspec: use only the first N records (0 = all)")
    offset: int = Field(default=0, ge=0, description="netspec: skip the first N records")


class ConvolutionParameter(Message):
    num_output: Optional[int] = Field(default=None, gt=0)  # required by Convolution/Deconvolution
    bias_term: bool = True
    pad: Repeated[int] = Field(default_factory=list)
    kernel_size: Repeated[int] = Field(default_factory=list)
    stride: Repeated[int] = Field(default_factory=list)
    dilation: Repeated[int] = Field(default_factory=list)
    pad_h: Optional[int] = None
    pad_w: Optional[int] = None
    kernel_h: Optional[int] = None
    kernel_w: Optional[int] = None
    stride_h: Optional[int] = None
    stride_w: Optional[int] = None
    group: int = Field(default=1, gt=0)
    weight_filler: FillerParameter = Field(default_factory=FillerParameter)
    bias_filler: FillerParameter = Field(default_factory=FillerParameter)
    engine: Engine = "DEFAULT"
    axis: int = 1
    force_nd_im2col: bool = False


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


class InnerProductParameter(Message):
    num_output: int = Field(gt=0)
    bias_term: bool = True
    weight_filler: FillerParameter = Field(default_factory=FillerParameter)
    bias_filler: FillerParameter = Field(default_factory=FillerParameter)
    axis: int = 1
    transpose: bool = False


class ReLUParameter(Message):
    negative_slope: float = 0.0
    engine: Engine = "DEFAULT"


class SigmoidParameter(Message):
    engine: Engine = "DEFAULT"


class TanHParameter(Message):
    engine: Engine = "DEFAULT"


class DropoutParameter(Message):
    dropout_ratio: float = Field(default=0.5, ge=0.0, lt=1.0)


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


class SoftmaxParameter(Message):
    engine: Engine = "DEFAULT"
    axis: int = 1


class AccuracyParameter(Message):
    top_k: int = Field(default=1, gt=0)
    axis: int = 1
    ignore_label: Optional[int] = None


class ConcatParameter(Message):
    axis: int = 1
    concat_dim: Optional[int] = None


class EltwiseParameter(Message):
    operation: Literal["PROD", "SUM", "MAX"] = "SUM"
    coeff: Repeated[float] = Field(default_factory=list)
    stable_prod_grad: bool = True


class FlattenParameter(Message):
    axis: int = 1
    end_axis: int = -1


# The layer-specific blocks a LayerParameter may carry: field name -> message class.
LAYER_PARAM_BLOCKS: dict[str, type[Message]] = {
    "input_param": InputParameter,
    "data_param": DataParameter,
    "convolution_param": ConvolutionParameter,
    "pooling_param": PoolingParameter,
    "inner_product_param": InnerProductParameter,
    "relu_param": ReLUParameter,
    "sigmoid_param": SigmoidParameter,
    "tanh_param": TanHParameter,
    "dropout_param": DropoutParameter,
    "batch_norm_param": BatchNormParameter,
    "scale_param": ScaleParameter,
    "softmax_param": SoftmaxParameter,
    "accuracy_param": AccuracyParameter,
    "concat_param": ConcatParameter,
    "eltwise_param": EltwiseParameter,
    "flatten_param": FlattenParameter,
}


def _merge_catalog_blocks() -> None:
    from .params_catalog_a import BLOCKS as blocks_a  # noqa: PLC0415
    from .params_catalog_b import BLOCKS as blocks_b  # noqa: PLC0415

    for blocks in (blocks_a, blocks_b):
        for key, msg in blocks.items():
            if key in LAYER_PARAM_BLOCKS:
                raise RuntimeError(f"parameter block {key!r} defined twice")
            LAYER_PARAM_BLOCKS[key] = msg


_merge_catalog_blocks()
