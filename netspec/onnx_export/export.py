"""``netspec.export_onnx``: a net file (YAML or Caffe .prototxt) or a ``Model``, with weights,
to an ONNX model (``Model.to_onnx`` does the conversion; ``netspec export --onnx`` calls
these)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..caffe.outputs import Output, write_outputs
from ..model import Model, load, read_net_param
from .convert import check_exportable


def onnx_model(model: str | Path | Model, weights: str | Path | None = None,
               batch_size: int | None = None, level: int = 0, stages: Sequence[str] = ()):
    """The ``onnx.ModelProto`` of ``model`` (a net file, read in the TEST phase with
    ``weights`` and, with ``batch_size``, that batch; or a ``Model``, which ``weights`` are
    then copied into). Layers ONNX cannot express: OnnxExportError naming them all."""
    if isinstance(model, Model):
        if weights is not None:
            model.load_weights(weights)
        if batch_size is not None:
            model.reshape(**{n: (int(batch_size), *model.blobs[n].shape[1:]) for n in model.inputs})
        return model.to_onnx()
    check_exportable(read_net_param(model), "TEST", level, stages, source=str(model))
    return load(model, weights, "TEST", batch_size=batch_size, level=level,
                stages=stages).to_onnx()


def export_onnx(model: str | Path | Model, weights: str | Path | None = None,
                path: str | Path | None = None, *, batch_size: int | None = None,
                force: bool = False, level: int = 0, stages: Sequence[str] = ()):
    """Write ``model`` with ``weights`` as the ONNX file ``path`` (default: the net file with
    .onnx) and return the ``onnx.ModelProto``. An existing file is replaced only with
    ``force`` (as ``netspec export``'s binary outputs)."""
    proto = onnx_model(model, weights, batch_size, level, stages)
    if path is None:
        if isinstance(model, Model):
            raise ValueError("give the path of the .onnx file to write")
        path = Path(model).with_suffix(".onnx")
    source = model.source if isinstance(model, Model) else model
    write_outputs([Output(Path(path), proto.SerializeToString(), text=False, option="--onnx")],
                  [source or None, weights], force)
    return proto
