"""Draw a net as a graph (``netspec draw``), like Caffe's ``python/draw_net.py``.

Layers are boxes (name, type, key parameters, parameter count); blobs are edges labelled with
their name and shape, and a blob no layer reads ends in an oval. Shapes come from building the
net on the CPU; when a data source is missing, the graph is drawn from the file alone. The
Split layers netspec inserts are hidden unless asked for. Needs the ``graphviz`` package and
Graphviz's ``dot`` program, except for ``.dot``/``.gv`` output (the graph source).
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import Any

from .. import graph
from ..backend import get_backend
from ..errors import DataError, NetspecError
from ..layers.registry import LAYERS
from ..net import Net
from ..spec import load_net
from ..spec.overrides import split_sets
from ..spec.params import NetState
from ..spec.params.conv import spatial_pair

INSTALL_HINT = ("pip install 'netspec[draw]' (the graphviz Python package) and Graphviz's dot "
                "program: apt-get install graphviz (Debian/Ubuntu), brew install graphviz "
                "(macOS) or conda install graphviz")

# Caffe's draw.py colours for the common types, softer ones for the rest
LAYER_COLORS = {
    "Convolution": "#FF8080", "Pooling": "#FFB347", "InnerProduct": "#D98CFF",
    "Data": "#9FE2BF", "Input": "#9FE2BF",
    "ReLU": "#B0C4DE", "Sigmoid": "#B0C4DE", "TanH": "#B0C4DE", "Dropout": "#D3D3D3",
    "BatchNorm": "#F0E68C", "Scale": "#F0E68C",
    "SoftmaxWithLoss": "#FFD700", "EuclideanLoss": "#FFD700", "Softmax": "#FFE4B5",
    "Accuracy": "#FFE4B5", "Split": "#EEEEEE", "Concat": "#ADD8E6", "Eltwise": "#ADD8E6",
    "Flatten": "#EEEEEE",
}
DEFAULT_COLOR = "#87CEFA"
FORMATS = {"svg", "png", "pdf", "jpg", "jpeg", "gif", "ps", "eps", "dot", "gv"}


def _graphviz():
    try:
        import graphviz  # noqa: PLC0415 - optional: the 'draw' extra
    except ModuleNotFoundError:
        raise NetspecError(f"drawing needs the graphviz Python package, which is not installed: "
                           f"{INSTALL_HINT}") from None
    return graphviz


def _pair(values, h, w, default):
    """Caffe's (h, w) of a size field (``spatial_pair``; a scalar form yields to its _h/_w
    pair, as Pooling reads it), or None when the forms are mixed: a drawing shows any net."""
    try:
        return spatial_pair(None if h is not None and not isinstance(values, list) else values,
                            h, w, "size", default)
    except ValueError:
        return None


def _kernel(pair) -> str:
    return "?" if pair is None else f"{pair[0]}×{pair[1]}"


def _hw(pair) -> str:
    if pair is None:
        return "?"
    a, b = pair
    return f"{a}" if a == b else f"{a}×{b}"


def layer_details(lp: Any) -> list[str]:
    """Short text lines with a layer's key parameters (from the file)."""
    t = lp.type
    out: list[str] = []
    if t in ("Convolution", "DepthwiseConvolution", "ConvolutionDepthwise") \
            and lp.convolution_param is not None:
        p = lp.convolution_param
        k = _pair(p.kernel_size, p.kernel_h, p.kernel_w, None)
        s = _pair(p.stride, p.stride_h, p.stride_w, 1)
        pad = _pair(p.pad, p.pad_h, p.pad_w, 0)
        out.append(f"kernel {_kernel(k)}  stride {_hw(s)}  pad {_hw(pad)}")
        extra = f"{p.num_output} outputs"
        if p.group != 1:
            extra += f"  group {p.group}"
        d = _pair(p.dilation, None, None, 1)
        if d != (1, 1):
            extra += f"  dilation {_hw(d)}"
        if not p.bias_term:
            extra += "  no bias"
        out.append(extra)
    elif t == "Pooling":
        p = lp.pooling_param
        if p is None:
            return out
        if p.global_pooling:
            out.append(f"{p.pool} global")
        else:
            k = _pair(p.kernel_size, p.kernel_h, p.kernel_w, None)
            s = _pair(p.stride, p.stride_h, p.stride_w, 1)
            line = f"{p.pool} {_kernel(k)}  stride {_hw(s)}"
            pad = _pair(p.pad, p.pad_h, p.pad_w, 0)
            if pad not in ((0, 0), None):
                line += f"  pad {_hw(pad)}"
            out.append(line)
    elif t == "InnerProduct" and lp.inner_product_param is not None:
        p = lp.inner_product_param
        out.append(f"{p.num_output} outputs" + ("  no bias" if not p.bias_term else "")
                   + ("  transpose" if p.transpose else ""))
    elif t == "Data" and lp.data_param is not None:
        p = lp.data_param
        out.append(f"{p.source}  batch {p.batch_size}" + (f"  ({p.split})" if p.source.startswith("builtin:") else ""))
    elif t == "Input" and lp.input_param is not None:
        out.append("  ".join("×".join(map(str, s.dim)) for s in lp.input_param.shape))
    elif t == "Dropout":
        ratio = lp.dropout_param.dropout_ratio if lp.dropout_param is not None else 0.5
        out.append(f"ratio {ratio:g}")
    elif t == "ReLU" and lp.relu_param is not None and lp.relu_param.negative_slope:
        out.append(f"negative_slope {lp.relu_param.negative_slope:g}")
    elif t == "Eltwise" and lp.eltwise_param is not None:
        out.append(lp.eltwise_param.operation)
    elif t == "Concat" and lp.concat_param is not None and lp.concat_param.axis != 1:
        out.append(f"axis {lp.concat_param.axis}")
    elif t == "Accuracy" and lp.accuracy_param is not None and lp.accuracy_param.top_k != 1:
        out.append(f"top_k {lp.accuracy_param.top_k}")
    elif t == "BatchNorm" and lp.batch_norm_param is not None \
            and lp.batch_norm_param.use_global_stats is not None:
        out.append(f"use_global_stats {lp.batch_norm_param.use_global_stats}")
    elif t == "Scale" and lp.scale_param is not None and lp.scale_param.bias_term:
        out.append("with bias")
    return out


def _shape_text(shape) -> str:
    if shape is None:
        return ""
    return "×".join(str(s) for s in shape) if len(shape) else "scalar"


def _defs_without_net(net_param, phase: str):
    """The phase's layer list from the file alone (when the net cannot be built)."""
    state = NetState(phase=phase, level=net_param.state.level, stage=list(net_param.state.stage))
    defs = graph.legacy_inputs(net_param) + graph.filter_phase(net_param, state)
    graph.resolve(defs, net_param)

    def loss_weight(d, k):
        if d.loss_weights:
            w = d.loss_weights[k] if k < len(d.loss_weights) else 0.0
            return float(w or 0.0)
        return 1.0 if (k == 0 and LAYERS[d.lp.type].is_loss) else 0.0
    return graph.insert_splits(defs, loss_weight)


def build_graph(net_param, phase: str = "TRAIN", rankdir: str = "LR", show_splits: bool = False,
                title: str | None = None):
    """A graphviz.Digraph of ``net_param`` in ``phase``; returns (graph, warning or None)."""
    graphviz = _graphviz()
    warning = None
    shapes: dict[str, tuple] = {}
    counts: dict[str, int] = {}
    try:
        net = Net(net_param, phase, get_backend(False))
        defs = net.defs
        shapes = {name: tuple(b.shape) for name, b in net.blobs.items()}
        counts = {layer.name: sum(p.count for p in layer.blobs) for layer in net.layers}
    except DataError as e:
        warning = f"drawn without blob shapes: the net cannot be built ({e})"
        defs = _defs_without_net(net_param, phase)

    g = graphviz.Digraph(name=net_param.name or "net")
    g.attr(rankdir=rankdir, fontname="Helvetica", fontsize="11",
           label=title if title is not None else f"{net_param.name or 'net'} ({phase})",
           labelloc="t")
    g.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="10",
           color="#555555")
    g.attr("edge", fontname="Helvetica", fontsize="8", color="#444444", fontcolor="#333333")

    source: dict[str, tuple[str, str]] = {}  # blob name -> (node id of its producer, shown name)
    consumed: set[str] = set()
    for d in defs:
        consumed.update(d.bottoms)
    node_of: dict[str, str] = {}   # layer name -> node id (ids avoid ':' which dot reads as a port)
    for i, d in enumerate(defs):
        lp = d.lp
        auto_split = lp.type == "Split" and d.index is None
        if auto_split and not show_splits:
            src = source.get(d.bottoms[0])
            for t in d.tops:
                if src is not None:
                    source[t] = src
            continue
        node = node_of[lp.name] = f"layer{i}"
        rows = [f"<b>{html.escape(lp.name)}</b>", html.escape(lp.type)]
        rows += [html.escape(r) for r in layer_details(lp)]
        if counts.get(lp.name):
            rows.append(f"<font point-size=\"8\">{counts[lp.name]:,} params</font>")
        g.node(node, label="<" + "<br/>".join(rows) + ">",
               fillcolor=LAYER_COLORS.get(lp.type, DEFAULT_COLOR))
        for b in d.bottoms:
            src = source.get(b)
            if src is None:
                continue
            shown = src[1]
            label = shown + (f"\n{_shape_text(shapes.get(b))}" if b in shapes else "")
            g.edge(src[0], node, label=label)
        for t in d.tops:
            source[t] = (node, t)
    # blobs nobody reads (net outputs): an oval each
    k = 0
    for d in defs:
        node = node_of.get(d.lp.name)
        for t in d.tops:
            if node is None or t in consumed or source.get(t, (None,))[0] != node:
                continue
            blob_node = f"blob{k}"
            k += 1
            g.node(blob_node, label=t, shape="ellipse", style="filled", fillcolor="#EEEEEE",
                   fontsize="9")
            g.edge(node, blob_node,
                   label=_shape_text(shapes.get(t)) if t in shapes else "")
    return g, warning


def draw_net(net_file: str | Path, out: str | Path, phase: str = "TRAIN", rankdir: str = "LR",
             show_splits: bool = False, sets=()) -> tuple[Path, str | None]:
    """Render the net in ``net_file`` to ``out`` (format from its suffix); (path, warning)."""
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise NetspecError(f"unknown image format '{out.suffix}'; use one of "
                           f"{', '.join('.' + f for f in sorted(FORMATS))}", file=str(out))
    _, net_sets = split_sets(list(sets))
    net_param = load_net(net_file, net_sets)
    g, warning = build_graph(net_param, phase, rankdir, show_splits)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt in ("dot", "gv"):
        out.write_text(g.source, encoding="utf-8")
        return out, warning
    graphviz = _graphviz()
    if shutil.which("dot") is None:
        raise NetspecError(f"drawing needs Graphviz's 'dot' program, which is not on PATH: {INSTALL_HINT}. "
                           f"(A .dot output needs no Graphviz: netspec draw NET -o net.dot)")
    try:
        data = g.pipe(format="jpg" if fmt == "jpeg" else fmt)
    except graphviz.ExecutableNotFound:
        raise NetspecError(f"drawing needs Graphviz's 'dot' program: {INSTALL_HINT}") from None
    except graphviz.CalledProcessError as e:
        stderr = (e.stderr or b"").decode(errors="replace").strip()
        raise NetspecError(f"Graphviz's dot failed: {stderr or e}") from None
    out.write_bytes(data)
    return out, warning
