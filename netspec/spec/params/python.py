"""The Python layer's message.

Field for field as in ``caffe.proto``, with Caffe's defaults."""

from __future__ import annotations

from ..base import Message


class PythonParameter(Message):
    """``python_param`` (130): a layer written in Python (pycaffe's interface)."""

    module: str
    layer: str
    param_str: str = ""
    share_in_parallel: bool = False


#: the Caffe layer types of this family
TYPES = ("Python",)

#: the layer-specific blocks this family adds to LayerParameter: field name -> message
BLOCKS: dict[str, type[Message]] = {
    "python_param": PythonParameter,
}
