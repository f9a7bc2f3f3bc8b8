"""Base class for Python layers (pycaffe's ``caffe.Layer``); see docs/python_layers.md."""

from .layers.python import TEST, TRAIN
from .layers.python import PythonLayerBase as Layer

__all__ = ["Layer", "TRAIN", "TEST"]
