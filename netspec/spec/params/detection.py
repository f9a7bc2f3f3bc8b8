"""Detection messages, from SSD's fork (weiliu89/caffe): PriorBox, DetectionOutput and
DetectionEvaluate.

Field for field as in SSD's ``caffe.proto`` (its field numbers: ``prior_box_param`` 203,
``detection_output_param`` 204, ``detection_evaluate_param`` 205), with SSD's defaults."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, NonNegativeInt

from ..base import Message, Repeated
from .common import ResizeParameter

CodeType = Literal["CORNER", "CENTER_SIZE", "CORNER_SIZE"]


class PriorBoxParameter(Message):
    """``PriorBox``: the priors of one feature map. Sizes in pixels of the image; without
    ``step`` the step is the image's size over the feature map's."""

    min_size: Repeated[float] = Field(default_factory=list)
    max_size: Repeated[float] = Field(default_factory=list)
    aspect_ratio: Repeated[float] = Field(default_factory=list)
    flip: bool = True
    clip: bool = False
    variance: Repeated[float] = Field(default_factory=list)
    img_size: Optional[NonNegativeInt] = None
    img_h: Optional[NonNegativeInt] = None
    img_w: Optional[NonNegativeInt] = None
    step: Optional[float] = None
    step_h: Optional[float] = None
    step_w: Optional[float] = None
    offset: float = 0.5


class NonMaximumSuppressionParameter(Message):
    """``nms_param``: overlap above which a box is suppressed, how many boxes per class enter
    NMS (``top_k``; absent: all) and the adaptive factor ``eta``."""

    nms_threshold: float = 0.3
    top_k: Optional[int] = None
    eta: float = 1.0


class SaveOutputParameter(Message):
    """``save_output_param``: where SSD writes its detections to files. netspec accepts the
    block and writes nothing (the detections are the layer's top). SSD's ``resize_param`` is
    not modelled."""

    output_directory: Optional[str] = None
    output_name_prefix: Optional[str] = None
    output_format: Optional[str] = None
    label_map_file: Optional[str] = None
    name_size_file: Optional[str] = None
    num_test_image: Optional[NonNegativeInt] = None


class DetectionOutputParameter(Message):
    """``DetectionOutput``: decode, per-class NMS, keep the best ``keep_top_k`` per image."""

    num_classes: Optional[NonNegativeInt] = None
    share_location: bool = True
    background_label_id: int = 0
    nms_param: Optional[NonMaximumSuppressionParameter] = None
    save_output_param: Optional[SaveOutputParameter] = None
    code_type: CodeType = "CORNER"
    variance_encoded_in_target: bool = False
    keep_top_k: int = -1
    confidence_threshold: Optional[float] = None
    visualize: bool = False
    visualize_threshold: Optional[float] = None
    save_file: Optional[str] = None


class DetectionEvaluateParameter(Message):
    """``DetectionEvaluate``: each detection a true or false positive (overlap with an unmatched
    ground-truth box of its class at least ``overlap_threshold``). With ``name_size_file``
    (lines ``name height width``, one per image in the order of the test images) boxes are
    compared in pixels of the original image."""

    num_classes: Optional[NonNegativeInt] = None
    background_label_id: NonNegativeInt = 0
    overlap_threshold: float = 0.5
    evaluate_difficult_gt: bool = True
    name_size_file: Optional[str] = None
    resize_param: Optional[ResizeParameter] = None


#: the Caffe layer types of this family
TYPES = ("PriorBox", "DetectionOutput", "DetectionEvaluate",)

#: the layer-specific blocks this family adds to LayerParameter: field name -> message
BLOCKS: dict[str, type[Message]] = {
    "prior_box_param": PriorBoxParameter,
    "detection_output_param": DetectionOutputParameter,
    "detection_evaluate_param": DetectionEvaluateParameter,
}
