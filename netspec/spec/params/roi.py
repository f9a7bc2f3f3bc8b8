"""Region-of-interest layer messages: py-faster-rcnn's ROIPooling (caffe-fast-rcnn), R-FCN's
PSROIPooling and BoxAnnotatorOHEM (daijifeng001/caffe-rfcn).

Field for field as in the fork's ``caffe.proto``, with its defaults."""

from __future__ import annotations

from pydantic import NonNegativeInt, PositiveInt

from ..base import Message


class ROIPoolingParameter(Message):
    """``roi_pooling_param`` (8266711): the pooled output size (both must be > 0; the fork's
    defaults are 0) and the factor from image to feature-map coordinates."""

    pooled_h: NonNegativeInt = 0
    pooled_w: NonNegativeInt = 0
    spatial_scale: float = 1.0


class PSROIPoolingParameter(Message):
    """``psroi_pooling_param`` (10001, R-FCN): all three required, as in the fork; the score
    maps have output_dim · group_size² channels, the top group_size × group_size bins."""

    spatial_scale: float
    output_dim: int
    group_size: int


class BoxAnnotatorOHEMParameter(Message):
    """``box_annotator_ohem_param`` (10000, R-FCN): the RoIs kept per image (required, > 0, as
    in the fork) and the label given to the others."""

    roi_per_img: PositiveInt
    ignore_label: int = -1


#: the Caffe layer types of this family
TYPES = ("ROIPooling", "PSROIPooling", "BoxAnnotatorOHEM",)

#: the layer-specific blocks this family adds to LayerParameter: field name -> message
BLOCKS: dict[str, type[Message]] = {
    "roi_pooling_param": ROIPoolingParameter,
    "psroi_pooling_param": PSROIPoolingParameter,
    "box_annotator_ohem_param": BoxAnnotatorOHEMParameter,
}
