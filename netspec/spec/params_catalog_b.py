"""Parameter messages of the layer catalog, part b (Caffe's names, numbers and defaults).

Field for field as in BVLC Caffe's ``caffe.proto``; the number after each message name is the
field number of its block in ``LayerParameter``. Where Caffe's ``optional`` field has no usable
default (a Python layer's ``module``, an HDF5 ``source``), netspec makes it required, so a missing
value is an error with the file's line instead of a crash at run time.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Message, Repeated
from .params import BlobShape, FillerParameter


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


class MVNParameter(Message):
    """``mvn_param`` (120): mean (and variance) normalisation per image or per channel."""

    normalize_variance: bool = True
    across_channels: bool = False
    eps: float = 1e-9


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


class DummyDataParameter(Message):
    """``dummy_data_param`` (109): tops of fixed shapes filled by fillers.

    ``shape`` (one for all tops or one per top), or the legacy 4-D ``num``/``channels``/
    ``height``/``width`` (each given once or once per top). ``data_filler``: none (constant 0),
    one for all tops, or one per top.
    """

    data_filler: Repeated[FillerParameter] = Field(default_factory=list)
    shape: Repeated[BlobShape] = Field(default_factory=list)
    num: Repeated[int] = Field(default_factory=list)
    channels: Repeated[int] = Field(default_factory=list)
    height: Repeated[int] = Field(default_factory=list)
    width: Repeated[int] = Field(default_factory=list)


class MemoryDataParameter(Message):
    """``memory_data_param`` (119): batches of (data, label) from arrays set in Python."""

    batch_size: int = Field(default=0, ge=0)
    channels: int = Field(default=0, ge=0)
    height: int = Field(default=0, ge=0)
    width: int = Field(default=0, ge=0)


class HDF5DataParameter(Message):
    """``hdf5_data_param`` (112): ``source`` is a text file listing .h5 files, one per line."""

    source: str
    batch_size: int = Field(gt=0)
    shuffle: bool = False


class HDF5OutputParameter(Message):
    """``hdf5_output_param`` (113): ``file_name``, the .h5 file HDF5Output writes (relative to
    the net file's folder). Caffe's field has no usable default (an empty name fails to open), so
    netspec requires it."""

    file_name: str


class PythonParameter(Message):
    """``python_param`` (130): a layer written in Python (pycaffe's interface)."""

    module: str
    layer: str
    param_str: str = ""
    share_in_parallel: bool = False


#: layer-specific blocks this module adds to LayerParameter: field name -> message class
BLOCKS: dict[str, type[Message]] = {
    "power_param": PowerParameter,
    "elu_param": ELUParameter,
    "prelu_param": PReLUParameter,
    "exp_param": ExpParameter,
    "log_param": LogParameter,
    "threshold_param": ThresholdParameter,
    "swish_param": SwishParameter,
    "clip_param": ClipParameter,
    "mvn_param": MVNParameter,
    "hinge_loss_param": HingeLossParameter,
    "infogain_loss_param": InfogainLossParameter,
    "contrastive_loss_param": ContrastiveLossParameter,
    "dummy_data_param": DummyDataParameter,
    "memory_data_param": MemoryDataParameter,
    "hdf5_data_param": HDF5DataParameter,
    "hdf5_output_param": HDF5OutputParameter,
    "python_param": PythonParameter,
}


# -- ImageData, WindowData (their messages live in params_image.py) -----------------------------
from .params_image import ImageDataParameter, WindowDataParameter  # noqa: E402

BLOCKS["image_data_param"] = ImageDataParameter
BLOCKS["window_data_param"] = WindowDataParameter
