"""Base class for Python layers (pycaffe's ``caffe.Layer``); see docs/python_layers.md."""

from .layers.catalog_b import TEST, TRAIN
from .layers.catalog_b import PythonLayerBase as Layer

__all__ = ["Layer", "TRAIN", "TEST"]
