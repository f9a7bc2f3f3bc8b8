"""A built netspec ``Net`` (TEST phase, weights loaded) -> an ``onnx.ModelProto``.

* Graph inputs are the tops of the Input layers (and of the legacy ``input:`` header), graph
  outputs the net's outputs (blobs no layer consumes), each named after its Caffe blob with the
  net's static shape. A blob written several times (in-place layers) is a new tensor each time;
  the last write carries the blob's name, the earlier ones ``<blob>/<layer>`` (so do the
  writes to an input blob: the graph input has its name).
* Split layers (netspec's fan-out) are aliases: their tops are the bottom's tensor.
* What ONNX cannot express is refused before anything is written, all at once, in one
  ``OnnxExportError`` naming every such layer with its type and the reason: data layers (an
  ONNX graph takes its inputs from the caller: export the deploy net, whose Input layers stand
  for them), training layers (losses, Accuracy), types without an ONNX form, and settings of
  supported types that have none (``Unsupported`` from a translation).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import SpecError
from ..graph import filter_phase, legacy_inputs
from ..net import Net
from ..spec.net import NetParameter
from ..spec.params import NetState
from . import linear, neuron, normalization, pool, reduction, shape, structure  # noqa: F401 - register
from .builder import IR_VERSION, OPSET, TRANSLATIONS, GraphBuilder, Site, Unsupported

#: layers that read their data themselves; an ONNX graph is given its inputs
DATA_LAYERS = {"Data", "ImageData", "WindowData", "HDF5Data", "MemoryData", "DummyData",
               "ImageSegData", "MatRead"}
#: layers that exist for training only
TRAINING_LAYERS = {"Accuracy", "HDF5Output", "SegAccuracy", "MatWrite"}
#: the input layer types (graph inputs)
INPUT_LAYERS = {"Input"}
#: layers whose tops are their bottom's tensor
ALIASES = {"Split"}
#: why a known type has no translation
NO_ONNX = {
    "SPP": "its pyramid of poolings with Caffe's per-level sizes is not translated",
    "ROIPooling": "ONNX's MaxRoiPool rounds the box coordinates differently from Caffe's",
    "PriorBox": "SSD's prior boxes have no ONNX operator",
    "DetectionOutput": "SSD's decoding and NMS have no exact ONNX form",
    "Python": "a Python layer runs Python code",
    "LSTM": "Caffe's recurrent layers (continuation flags, exposed hidden states) are not "
            "translated", "RNN": "Caffe's recurrent layers are not translated",
    "LSTMUnit": "Caffe's recurrent layers are not translated",
    "Im2col": "not translated", "Filter": "its output size depends on the data",
    "BatchReindex": "not translated", "Embed": "not translated", "Parameter": "not translated",
}


class OnnxExportError(SpecError):
    """The net has layers ONNX cannot express (listed in the message); nothing was written."""


def refusal(lp) -> str | None:
    """Why a layer of this type is never exported; None when it may be."""
    t = lp.type
    if t in DATA_LAYERS:
        return ("a data layer: an ONNX graph takes its inputs from the caller; export the deploy "
                "net, whose Input layers stand for the data")
    if t in TRAINING_LAYERS or t.endswith("Loss"):
        return "a training layer (losses and Accuracy are not part of a deployed net)"
    if t in TRANSLATIONS or t in INPUT_LAYERS or t in ALIASES:
        return None
    return NO_ONNX.get(t, "ONNX export has no translation for this type")


def _listing(problems: list[tuple[str, str, str]], source: str) -> OnnxExportError:
    lines = "; ".join(f"'{name}' ({type_}): {why}" for name, type_, why in problems)
    n = len(problems)
    return OnnxExportError(f"{n} layer{'s' if n > 1 else ''} cannot be exported to ONNX, so "
                           f"nothing was written: {lines}", file=source or None)


def check_exportable(param: NetParameter, phase: str = "TEST", level: int = 0,
                     stages=(), source: str = "") -> None:
    """OnnxExportError naming every layer of ``param`` in ``phase`` whose type cannot be
    exported (before the net is built: a data layer's source need not exist)."""
    state = NetState(phase=phase, level=level or param.state.level,
                     stage=list(stages) or list(param.state.stage))
    defs = legacy_inputs(param) + filter_phase(param, state)
    problems = [(d.lp.name, d.lp.type, why) for d in defs if (why := refusal(d.lp)) is not None]
    if problems:
        raise _listing(problems, source)


def _tensor_names(net: Net) -> list[list[str]]:
    """The tensor name of every top of every layer: the blob's name for its last write and for
    an input, ``<blob>/<layer>`` for the other writes (an input changed in place keeps its
    name for the graph input; the changed values are ``<blob>/<layer>``)."""
    last: dict[str, int] = {}
    inputs = set()
    for i, (d, layer) in enumerate(zip(net.defs, net.layers)):
        for t in d.tops:
            last[t] = i
            if layer.type_name in INPUT_LAYERS:
                inputs.add(t)
    names = []
    for i, (d, layer) in enumerate(zip(net.defs, net.layers)):
        own = layer.type_name in INPUT_LAYERS
        names.append([t if own or (last[t] == i and t not in inputs) else f"{t}/{d.lp.name}"
                      for t in d.tops])
    return names


def net_to_onnx(net: Net, source: str = "", outputs: Sequence[str] = ()):
    """The ``onnx.ModelProto`` of ``net`` (checked by ``onnx.checker``, full check); its graph
    outputs are the net's outputs, then the blobs named in ``outputs`` (their final values)."""
    try:
        import onnx  # noqa: PLC0415 - optional: onnx
        from onnx import TensorProto, helper  # noqa: PLC0415 - optional: onnx
    except ImportError:
        raise OnnxExportError("ONNX export needs the 'onnx' package, which is not installed: "
                              "pip install 'netspec[onnx]'") from None

    problems = []
    g = GraphBuilder()
    inputs, current = [], {}
    planned = _tensor_names(net)
    for names in planned:
        for n in names:
            g.reserve(n)
    for d, layer, tops, names in zip(net.defs, net.layers, net.tops, planned):
        if layer.type_name in INPUT_LAYERS:
            for blob, n in zip(tops, names):
                inputs.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, list(blob.shape)))
                current[blob.name] = n
            continue
        why = refusal(d.lp)
        if why is not None:     # listed; its tops stand in so that the rest is still checked
            problems.append((d.lp.name, d.lp.type, why))
            current.update(zip(d.tops, names))
            continue
        bottoms = [current[b] for b in d.bottoms]
        if layer.type_name in ALIASES:
            for t in d.tops:
                current[t] = bottoms[0]
            continue
        site = Site(layer, bottoms, names, [tuple(net.blobs[b].shape) for b in d.bottoms],
                    [tuple(t.shape) for t in tops])
        try:
            TRANSLATIONS[layer.type_name](g, site)
        except Unsupported as e:
            problems.append((d.lp.name, d.lp.type, str(e)))
        current.update(zip(d.tops, names))
    if problems:
        raise _listing(problems, source)
    unknown = [o for o in outputs if o not in current]
    if unknown:
        raise OnnxExportError(f"no blob named {', '.join(unknown)} in the net "
                              f"(blobs: {', '.join(current)})", file=source or None)
    wanted: dict[str, str] = {}             # tensor -> blob (split tops share a tensor)
    for o in [*net.output_names, *outputs]:
        wanted.setdefault(current[o], o)
    values = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(net.blobs[o].shape))
              for n, o in wanted.items()]
    graph = helper.make_graph(g.nodes, net.name or "netspec", inputs, values, g.initializers)
    model = helper.make_model(graph, producer_name="netspec",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model

