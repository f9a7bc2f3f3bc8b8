"""Messages every layer or net may carry: fillers, blob shapes, ``param`` specs, phase rules,
``transform_param`` and ``loss_param`` (Caffe's names and defaults)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from ..base import Message, Repeated

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
    """``loss_param``. ``weight_by_label_freqs`` and ``class_weighting`` (one weight per class)
    are SegNet's (alexgkendall/caffe-segnet; read by SoftmaxWithLoss)."""

    ignore_label: Optional[int] = None
    normalization: Literal["FULL", "VALID", "BATCH_SIZE", "NONE"] = "VALID"
    normalize: Optional[bool] = None
    weight_by_label_freqs: bool = False
    class_weighting: Repeated[float] = Field(default_factory=list)
