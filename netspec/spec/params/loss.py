"""Loss and Accuracy messages (``loss_param`` itself is common to every layer).

Field for field as in ``caffe.proto``, with Caffe's defaults."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from ..base import Message, Repeated
from .common import FillerParameter



class AccuracyParameter(Message):
    top_k: int = Field(default=1, gt=0)
    axis: int = 1
    ignore_label: Optional[int] = None


class SegAccuracyParameter(Message):
    """``seg_accuracy_param`` (DeepLab v2; 144 in the fork, where BVLC has ``crop_param``: 2144
    here). ``ignore_label``: labels whose pixels are not counted; ``reset``: start the
    confusion matrix afresh at every forward (else it accumulates). ``metric`` is declared by
    the fork and never read: the layer always gives all three measures."""

    metric: Literal["PixelAccuracy", "ClassAccuracy", "PixelIOU"] = "PixelAccuracy"
    ignore_label: Repeated[int] = Field(default_factory=list)
    reset: bool = True


class HingeLossParameter(Message):
    """``hinge_loss_param`` (114): L1 or squared (L2) hinge."""

    norm: Literal["L1", "L2"] = "L1"


class InfogainLossParameter(Message):
    """``infogain_loss_param`` (116): ``source`` = a BlobProto file holding H (C×C), when H is
    not given as a third bottom; softmax ``axis``."""

    source: str | None = None
    axis: int = 1


class ContrastiveLossParameter(Message):
    """``contrastive_loss_param`` (105)."""

    margin: float = 1.0
    legacy_version: bool = False


class SmoothL1LossParameter(Message):
    """``smooth_l1_loss_param`` (8266712, caffe-fast-rcnn): f(d) = 0.5·(σd)² where |d| < 1/σ²,
    else |d| − 0.5/σ². SSD's SmoothL1Loss has no such block (σ = 1)."""

    sigma: float = 1.0


#: the Caffe layer types of this family
class CenterLossParameter(Message):
    """``center_loss_param`` (147 in ydwen/caffe-face, where BVLC has ``swish_param``: 2147
    here): the number of classes (centers), their filler (Caffe's default: constant 0) and the
    first axis of the feature (the axes from it on are one vector)."""

    num_output: int = Field(gt=0)
    center_filler: Optional[FillerParameter] = None
    axis: int = 1


TYPES = ("EuclideanLoss", "Accuracy", "SigmoidCrossEntropyLoss", "HingeLoss", "InfogainLoss", "ContrastiveLoss", "MultinomialLogisticLoss",
         "SmoothL1Loss", "SmoothL1LossOHEM", "CenterLoss", "SegAccuracy",)

#: the layer-specific blocks this family adds to LayerParameter: field name -> message
BLOCKS: dict[str, type[Message]] = {
    "accuracy_param": AccuracyParameter,
    "seg_accuracy_param": SegAccuracyParameter,
    "center_loss_param": CenterLossParameter,
    "hinge_loss_param": HingeLossParameter,
    "infogain_loss_param": InfogainLossParameter,
    "contrastive_loss_param": ContrastiveLossParameter,
    "smooth_l1_loss_param": SmoothL1LossParameter,
}
