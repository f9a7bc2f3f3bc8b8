"""Layers, one class per Caffe type, registered by type name (``registry.LAYERS``)."""

from . import registry
from .base import Layer

registry._load_all()

__all__ = ["Layer", "registry"]
