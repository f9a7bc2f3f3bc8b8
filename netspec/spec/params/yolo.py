"""The YOLO messages of the MobileNet-YOLO fork (eric612/MobileNet-YOLO): the detection
outputs and the YOLOv2 and YOLOv3 losses.

Field for field as in that fork's ``caffe.proto`` (its field numbers: ``region_loss_param``
600, ``yolo_detection_output_param`` 601, ``yolov3_detection_output_param`` 602,
``yolov3_param`` 603), with its defaults."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, NonNegativeInt

from ..base import Message, Repeated


class RegionLossParameter(Message):
    """``RegionLoss`` (YOLOv2's loss): ``num`` anchors per cell, sizes the first 2·num
    ``biases`` (w, h pairs, in cells). Unused, as in the fork: ``side`` (read from the
    bottom), ``softmax`` (the classes are always a softmax), ``jitter``, ``absolute``,
    ``random``, ``softmax_tree`` and ``class_map`` (the fork reads that file into a map it
    never uses)."""

    side: NonNegativeInt = 13
    num_class: NonNegativeInt = 20
    bias_match: NonNegativeInt = 1
    coords: NonNegativeInt = 4
    num: NonNegativeInt = 5
    softmax: NonNegativeInt = 1
    jitter: float = 0.2
    rescore: NonNegativeInt = 1
    object_scale: float = 1.0
    class_scale: float = 1.0
    noobject_scale: float = 0.5
    coord_scale: float = 5.0
    absolute: NonNegativeInt = 1
    thresh: float = 0.2
    random: NonNegativeInt = 1
    biases: Repeated[float] = Field(default_factory=list)
    softmax_tree: Optional[str] = None
    class_map: Optional[str] = None


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


class Yolov3Parameter(Message):
    """``Yolov3`` (YOLOv3's loss at one output scale): ``num`` anchors per cell, anchors
    ``mask`` of the ``biases`` (w, h pairs, in pixels of an input of the map's size times
    ``anchors_scale``). ``side`` is read from the bottom and ``noobject_scale`` is unused, as
    in the fork; ``max_delta`` and ``accumulate`` belong to the IoU losses, which netspec
    refuses (see the layer)."""

    side: NonNegativeInt = 13
    num_class: NonNegativeInt = 20
    num: NonNegativeInt = 5
    object_scale: float = 1.0
    class_scale: float = 1.0
    noobject_scale: float = 0.5
    coord_scale: float = 5.0
    thresh: float = 0.2
    anchors_scale: NonNegativeInt = 32
    biases: Repeated[float] = Field(default_factory=list)
    mask: Repeated[NonNegativeInt] = Field(default_factory=list)
    use_logic_gradient: bool = False
    use_focal_loss: bool = False
    iou_loss: Literal["IOU", "GIOU", "MSE", "DIOU", "CIOU"] = "MSE"
    iou_normalizer: float = 0.25
    iou_thresh: float = 0.5
    max_delta: float = 10.0
    accumulate: bool = True
    label_smooth_eps: float = 0.1


#: the Caffe layer types of this family
TYPES = ("YoloDetectionOutput", "Yolov3DetectionOutput", "Yolov3", "RegionLoss")

#: the layer-specific blocks this family adds to LayerParameter: field name -> message
BLOCKS: dict[str, type[Message]] = {
    "region_loss_param": RegionLossParameter,
    "yolo_detection_output_param": YoloDetectionOutputParameter,
    "yolov3_detection_output_param": Yolov3DetectionOutputParameter,
    "yolov3_param": Yolov3Parameter,
}
