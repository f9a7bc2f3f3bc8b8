"""Element-wise layer messages: ReLU, Sigmoid, TanH, Dropout, Power, ELU, PReLU, Exp, Log,
Threshold, Swish, Clip (AbsVal, BNLL and the forks' ReLU6 have none).

Field for field as in ``caffe.proto``, with Caffe's defaults."""

from __future__ import annotations

from pydantic import Field

from ..base import Message
from .common import Engine, FillerParameter


class ReLUParameter(Message):
    negative_slope: float = 0.0
    engine: Engine = "DEFAULT"


class SigmoidParameter(Message):
    engine: Engine = "DEFAULT"


class TanHParameter(Message):
    engine: Engine = "DEFAULT"


class DropoutParameter(Message):
    dropout_ratio: float = Field(default=0.5, ge=0.0, lt=1.0)
    #: FORK (caffe-fast-rcnn, field 2): false = training does not scale the kept values by
    #: 1/(1 − r) and testing multiplies by (1 − r) instead
    scale_train: bool = True


class PowerParameter(Message):
    """``power_param`` (122): y = (shift + scale·x)^power."""

    power: float = 1.0
    scale: float = 1.0
    shift: float = 0.0


class ELUParameter(Message):
    """``elu_param`` (140): y = x if x > 0 else alpha·(exp(x) − 1)."""

    alpha: float = 1.0


class PReLUParameter(Message):
    """``prelu_param`` (131): learnable negative slopes, one per channel or one shared.

    ``filler`` defaults (when absent) to constant 0.25, as in Caffe.
    """

    filler: FillerParameter | None = None
    channel_shared: bool = False


class ExpParameter(Message):
    """``exp_param`` (111): y = base^(shift + scale·x); base −1 means e."""

    base: float = -1.0
    scale: float = 1.0
    shift: float = 0.0


class LogParameter(Message):
    """``log_param`` (134): y = log_base(shift + scale·x); base −1 means e."""

    base: float = -1.0
    scale: float = 1.0
    shift: float = 0.0


class ThresholdParameter(Message):
    """``threshold_param`` (128): y = 1 if x > threshold else 0."""

    threshold: float = 0.0


class SwishParameter(Message):
    """``swish_param`` (147): y = x·sigmoid(beta·x)."""

    beta: float = 1.0


class ClipParameter(Message):
    """``clip_param`` (148): y = max(min, min(x, max)). Both bounds are required (Caffe)."""

    min: float
    max: float


#: the Caffe layer types of this family
TYPES = ("ReLU", "Sigmoid", "TanH", "Dropout", "Power", "AbsVal", "BNLL", "ELU", "PReLU", "Exp", "Log", "Threshold", "Swish", "Clip", "ReLU6",)

#: the layer-specific blocks this family adds to LayerParameter: field name -> message
BLOCKS: dict[str, type[Message]] = {
    "relu_param": ReLUParameter,
    "sigmoid_param": SigmoidParameter,
    "tanh_param": TanHParameter,
    "dropout_param": DropoutParameter,
    "power_param": PowerParameter,
    "elu_param": ELUParameter,
    "prelu_param": PReLUParameter,
    "exp_param": ExpParameter,
    "log_param": LogParameter,
    "threshold_param": ThresholdParameter,
    "swish_param": SwishParameter,
    "clip_param": ClipParameter,
}
