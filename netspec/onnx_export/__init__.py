"""ONNX export of a netspec net (``netspec export --onnx``, ``netspec.export_onnx``,
``Model.to_onnx``).

``builder``: the graph under construction (tensor names, constants, nodes) and the table of
per-type translations; one module per layer family translates its Caffe types (``linear``,
``pool``, ``neuron``, ``normalization``, ``structure``, ``shape``, ``reduction``);
``convert`` walks a built ``Net`` and assembles the ``onnx.ModelProto``; ``export`` reads a
net file and weights and writes the file. The ``onnx`` package is imported only inside
functions (an optional extra: ``pip install 'netspec[onnx]'``).
"""
