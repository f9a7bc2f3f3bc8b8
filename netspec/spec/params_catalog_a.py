"""Parameter messages of the layer catalog, part a (Caffe's names, numbers and defaults)."""

from __future__ import annotations

from .base import Message

#: layer-specific blocks this module adds to LayerParameter: field name -> message class
BLOCKS: dict[str, type[Message]] = {}
