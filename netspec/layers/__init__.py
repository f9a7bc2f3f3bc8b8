"""Layers, one class per Caffe type, registered by type name (``registry.LAYERS``).

One module per family; importing this package imports every family, which registers its
types. ``docs/architecture.md`` says which family holds which type.
"""

from . import (annotated_data, batch_norm_forks, conv, data, detection, hdf5, image_data, image_seg_data,
               inner_product, loss, mat_files, multibox, neuron, normalization, pool, python, recurrent, reduction, registry, reshape, roi, softmax,
               structure, video_data, window_data, yolo)
from .base import Layer

__all__ = ["Layer", "registry", "annotated_data", "batch_norm_forks", "conv", "data", "detection", "hdf5", "image_data",
           "image_seg_data", "inner_product", "loss", "mat_files", "multibox", "neuron", "normalization", "pool", "python", "recurrent",
           "reduction", "reshape", "roi", "softmax", "structure", "video_data", "window_data", "yolo"]
