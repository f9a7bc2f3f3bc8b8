"""Data sources: the built-in MNIST, MNIST IDX files anywhere, and ``.npz`` arrays."""

from .dataset import Dataset
from .sources import open_source

__all__ = ["Dataset", "open_source"]
