"""``image_data_param`` (Caffe's ImageDataParameter, field 115 of LayerParameter).

Merged into LayerParameter through ``params_catalog_b.BLOCKS``.
"""

from __future__ import annotations

from typing import Optional

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
