"""Messages every layer or net may carry: fillers, blob shapes, ``param`` specs, phase rules,
``transform_param`` and ``loss_param`` (Caffe's names and defaults)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, NonNegativeInt

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


class ResizeParameter(Message):
    """SSD's ``resize_param``: how an image was resized. DetectionEvaluate reads
    ``resize_mode``, ``height``/``width`` and ``height_scale``/``width_scale`` to map boxes back
    to the original image; the other fields describe the resizing itself."""

    prob: float = 1.0
    resize_mode: Literal["WARP", "FIT_SMALL_SIZE", "FIT_LARGE_SIZE_AND_PAD"] = "WARP"
    height: NonNegativeInt = 0
    width: NonNegativeInt = 0
    height_scale: NonNegativeInt = 0
    width_scale: NonNegativeInt = 0
    pad_mode: Literal["CONSTANT", "MIRRORED", "REPEAT_NEAREST"] = "CONSTANT"
    pad_value: Repeated[float] = Field(default_factory=list)
    interp_mode: Repeated[Literal["LINEAR", "AREA", "NEAREST", "CUBIC", "LANCZOS4"]] = Field(
        default_factory=list)


class SaltPepperParameter(Message):
    fraction: float = 0.0
    value: Repeated[float] = Field(default_factory=list)


class NoiseParameter(Message):
    """SSD's ``noise_param``: random noise effects, applied with probability ``prob``."""

    prob: float = 0.0
    hist_eq: bool = False
    inverse: bool = False
    decolorize: bool = False
    gauss_blur: bool = False
    jpeg: float = -1.0
    posterize: bool = False
    erode: bool = False
    saltpepper: bool = False
    saltpepper_param: Optional[SaltPepperParameter] = None
    clahe: bool = False
    convert_to_hsv: bool = False
    convert_to_lab: bool = False


class DistortionParameter(Message):
    """SSD's ``distort_param``: random brightness, contrast, hue, saturation, channel order,
    each applied with its probability."""

    brightness_prob: float = 0.0
    brightness_delta: float = 0.0
    contrast_prob: float = 0.0
    contrast_lower: float = 0.0
    contrast_upper: float = 0.0
    hue_prob: float = 0.0
    hue_delta: float = 0.0
    saturation_prob: float = 0.0
    saturation_lower: float = 0.0
    saturation_upper: float = 0.0
    random_order_prob: float = 0.0


class ExpansionParameter(Message):
    """SSD's ``expand_param``: with probability ``prob``, the image placed at random in a
    canvas up to ``max_expand_ratio`` times larger."""

    prob: float = 1.0
    max_expand_ratio: float = 1.0


class EmitConstraint(Message):
    """SSD's ``emit_constraint``: which boxes of a cropped image are kept."""

    emit_type: Literal["CENTER", "MIN_OVERLAP"] = "CENTER"
    emit_overlap: Optional[float] = None


class TransformationParameter(Message):
    """``transform_param``. ``resize_param`` … ``expand_param`` are SSD's (weiliu89/caffe),
    read by AnnotatedData only; ``scale_factors``, ``crop_width``, ``crop_height`` are DeepLab
    v2's, read by ImageSegData only; the other data layers refuse them. ``resize_param`` is
    repeated as in the MobileNet-YOLO fork (eric612/MobileNet-YOLO), whose AnnotatedData
    draws one of several resize policies every 10 batches (multi-scale training); SSD's one
    block is a one-element list."""

    scale: float = 1.0
    mirror: bool = False
    crop_size: int = 0
    mean_file: Optional[str] = None
    mean_value: Repeated[float] = Field(default_factory=list)
    force_color: bool = False
    force_gray: bool = False
    resize_param: Repeated[ResizeParameter] = Field(default_factory=list)
    noise_param: Optional[NoiseParameter] = None
    emit_constraint: Optional[EmitConstraint] = None
    distort_param: Optional[DistortionParameter] = None
    expand_param: Optional[ExpansionParameter] = None
    #: DeepLab v2's (8, 9, 10 in the fork; 2008 … 2010 here), read by ImageSegData only
    scale_factors: Repeated[float] = Field(default_factory=list)
    crop_width: int = Field(default=0, ge=0)
    crop_height: int = Field(default=0, ge=0)


#: the fields of transform_param only SSD's AnnotatedData reads
SSD_TRANSFORM_FIELDS = ("resize_param", "noise_param", "emit_constraint", "distort_param",
                        "expand_param")
#: the fields of transform_param only DeepLab's ImageSegData reads
DEEPLAB_TRANSFORM_FIELDS = ("scale_factors", "crop_width", "crop_height")


class LossParameter(Message):
    """``loss_param``. ``weight_by_label_freqs`` and ``class_weighting`` (one weight per class)
    are SegNet's (alexgkendall/caffe-segnet; read by SoftmaxWithLoss); normalization
    ``PRE_FIXED``, dividing by ``pre_fixed_normalizer``, is R-FCN's (daijifeng001/caffe-rfcn)."""

    ignore_label: Optional[int] = None
    normalization: Literal["FULL", "VALID", "BATCH_SIZE", "NONE", "PRE_FIXED"] = "VALID"
    normalize: Optional[bool] = None
    pre_fixed_normalizer: float = 1.0
    weight_by_label_freqs: bool = False
    class_weighting: Repeated[float] = Field(default_factory=list)
