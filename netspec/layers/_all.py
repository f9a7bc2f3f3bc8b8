"""Import every layer family so each registers its Caffe type names."""

from . import activation, catalog_a, catalog_b, conv, data, dense, loss, norm, pool, structure  # noqa: F401,E501
from . import image_data, window_data  # noqa: F401,E402
from . import hdf5_output, recurrent  # noqa: F401,E402
