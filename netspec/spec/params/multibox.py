"""SSD's training loss message (weiliu89/caffe): MultiBoxLoss.

Field for field as in SSD's ``caffe.proto`` (its field number: ``multibox_loss_param`` 201), with
SSD's defaults."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import NonNegativeInt

from ..base import Message
from .detection import CodeType, NonMaximumSuppressionParameter


class MultiBoxLossParameter(Message):
    """``MultiBoxLoss``: match priors to ground truth, mine negatives, loc + conf losses.
    ``do_neg_mining`` is SSD's deprecated switch (it must agree with ``mining_type``)."""

    loc_loss_type: Literal["L2", "SMOOTH_L1"] = "SMOOTH_L1"
    conf_loss_type: Literal["SOFTMAX", "LOGISTIC"] = "SOFTMAX"
    loc_weight: float = 1.0
    num_classes: Optional[NonNegativeInt] = None
    share_location: bool = True
    match_type: Literal["BIPARTITE", "PER_PREDICTION"] = "PER_PREDICTION"
    overlap_threshold: float = 0.5
    use_prior_for_matching: bool = True
    background_label_id: NonNegativeInt = 0
    use_difficult_gt: bool = True
    do_neg_mining: Optional[bool] = None
    neg_pos_ratio: float = 3.0
    neg_overlap: float = 0.5
    code_type: CodeType = "CORNER"
    encode_variance_in_target: bool = False
    map_object_to_agnostic: bool = False
    ignore_cross_boundary_bbox: bool = False
    bp_inside: bool = False
    mining_type: Literal["NONE", "MAX_NEGATIVE", "HARD_EXAMPLE"] = "MAX_NEGATIVE"
    nms_param: Optional[NonMaximumSuppressionParameter] = None
    sample_size: int = 64
    use_prior_for_nms: bool = False


#: the Caffe layer types of this family
TYPES = ("MultiBoxLoss",)

#: the layer-specific blocks this family adds to LayerParameter: field name -> message
BLOCKS: dict[str, type[Message]] = {
    "multibox_loss_param": MultiBoxLossParameter,
}
