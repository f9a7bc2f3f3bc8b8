"""Import every layer family so each registers its Caffe type names."""

from . import activation, conv, data, dense, loss, norm, pool, structure  # noqa: F401
