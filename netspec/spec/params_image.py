"""``image_data_param`` and ``window_data_param`` (Caffe's ImageDataParameter and
WindowDataParameter, fields 115 and 129 of LayerParameter).

Merged into LayerParameter through ``params_catalog_b.BLOCKS``.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from .base import Message


class ImageDataParameter(Message):
    """``image_data_param`` (115): images listed in a text file, one ``path label`` a line.

    ``source`` is required (Caffe's has no usable default). ``new_height``/``new_width``: resize
    every image (both or neither). ``is_color``: 3 planes (B, G, R) or 1 (grey). ``root_folder``
    is prepended to each listed path, as a string (Caffe: ``root_folder + path``). ``scale``,
    ``mean_file``, ``crop_size`` and ``mirror`` are Caffe's deprecated copies of
    ``transform_param``'s; netspec reads them when ``transform_param`` does not set them.
    """

    source: str
    batch_size: int = Field(default=1, gt=0)
    rand_skip: int = Field(default=0, ge=0)
    shuffle: bool = False
    new_height: int = Field(default=0, ge=0)
    new_width: int = Field(default=0, ge=0)
    is_color: bool = True
    scale: float = 1.0
    mean_file: Optional[str] = None
    crop_size: int = Field(default=0, ge=0)
    mirror: bool = False
    root_folder: str = ""


class WindowDataParameter(Message):
    """``window_data_param`` (129): windows (boxes) of images listed in an R-CNN window file.

    ``source`` (the window file) and ``batch_size`` are required. Each batch holds
    ``int(batch_size · fg_fraction)`` foreground windows (overlap ≥ ``fg_threshold``, their
    class) after the background ones (overlap < ``bg_threshold``, label 0), drawn at random.
    ``crop_mode``: ``warp`` stretches the window to crop_size×crop_size, ``square`` first
    widens its shorter side; ``context_pad`` pixels of the output are context around the
    window. ``scale`` multiplies the mean-subtracted pixels (Caffe's WindowData reads this one,
    not ``transform_param.scale``). ``cache_images`` keeps decoded images in memory.
    ``mean_file``, ``crop_size`` and ``mirror`` are Caffe's deprecated copies of
    ``transform_param``'s; netspec reads them when ``transform_param`` does not set them.
    """

    source: str
    scale: float = 1.0
    mean_file: Optional[str] = None
    batch_size: int = Field(gt=0)
    crop_size: int = Field(default=0, ge=0)
    mirror: bool = False
    fg_threshold: float = 0.5
    bg_threshold: float = 0.5
    fg_fraction: float = Field(default=0.25, ge=0, le=1)
    context_pad: int = Field(default=0, ge=0)
    crop_mode: Literal["warp", "square"] = "warp"
    cache_images: bool = False
    root_folder: str = ""
