"""The YOLO detection-output messages of the MobileNet-YOLO fork (eric612/MobileNet-YOLO).

Field for field as in that fork's ``caffe.proto`` (its field numbers:
``yolo_detection_output_param`` 601, ``yolov3_detection_output_param`` 602), with its
defaults."""

from __future__ import annotations

from typing import Optional

from pydantic import Field, NonNegativeInt

from ..base import Message, Repeated


class YoloDetectionOutputParameter(Message):
    """``YoloDetectionOutput`` (YOLOv2's region output): ``num_box`` anchors per cell, sizes
    ``biases`` (w, h pairs, in cells). ``side`` is read from the bottom (the field is kept for
    files that give it); ``label_map_file`` is accepted and unused (netspec writes no files)."""

    side: NonNegativeInt = 13
    num_classes: NonNegativeInt = 20
    num_box: NonNegativeInt = 5
    coords: NonNegativeInt = 4
    confidence_threshold: float = 0.01
    nms_threshold: float = 0.45
    biases: Repeated[float] = Field(default_factory=list)
    label_map_file: Optional[str] = None


class Yolov3DetectionOutputParameter(Message):
    """``Yolov3DetectionOutput``: one bottom per scale (``mask_group_num`` of them), each with
    ``num_box`` anchors per cell chosen by ``mask``; anchor sizes ``biases`` (w, h pairs, in
    input pixels; the input is the map's size times its ``anchors_scale``)."""

    num_classes: NonNegativeInt = 20
    num_box: NonNegativeInt = 3
    confidence_threshold: float = 0.01
    nms_threshold: float = 0.45
    biases: Repeated[float] = Field(default_factory=list)
    anchors_scale: Repeated[NonNegativeInt] = Field(default_factory=list)
    mask_group_num: NonNegativeInt = 2
    mask: Repeated[NonNegativeInt] = Field(default_factory=list)
    gaussian_box: bool = False


#: the Caffe layer types of this family
TYPES = ("YoloDetectionOutput", "Yolov3DetectionOutput",)

#: the layer-specific blocks this family adds to LayerParameter: field name -> message
BLOCKS: dict[str, type[Message]] = {
    "yolo_detection_output_param": YoloDetectionOutputParameter,
    "yolov3_detection_output_param": Yolov3DetectionOutputParameter,
}
