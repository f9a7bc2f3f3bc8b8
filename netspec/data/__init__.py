"""Data sources: the built-in MNIST, MNIST IDX files anywhere, and ``.npz`` arrays."""

from .sources import Dataset, open_source

__all__ = ["Dataset", "open_source"]
