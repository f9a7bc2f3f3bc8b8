"""BatchNorm, the forks' BN, Scale, Bias, LRN, MVN and SSD's Normalize.

BatchNorm with global statistics is (x − mean) / sqrt(var + eps) with mean and var the stored
sums times 1/scale_factor (0 for a zero factor), computed in float32 as netspec does and
applied by Sub and Div; with batch statistics (``use_global_stats: false``) the mean and biased
variance over every axis but the channels are computed in the graph (ReduceMean).
"""

from __future__ import annotations

import numpy as np

from .builder import Site, broadcast_shape, translates
from .pool import caffe_ave


def _channel_shape(rank: int, channels: int) -> tuple[int, ...]:
    """(C,) placed on axis 1 of a ``rank``-D tensor for broadcasting ((C,) for rank ≤ 2)."""
    return (channels,) + (1,) * max(rank - 2, 0)


def _batch_centred_std(g, s: Site, x: str, axes: list[int], eps: float) -> tuple[str, str]:
    """(x − mean, sqrt(var + eps)) over ``axes`` of this batch (biased variance), as tensors."""
    mean = g.node("ReduceMean", [x], base=f"{s.name}/mean", axes=axes, keepdims=1)
    xc = g.node("Sub", [x, mean], base=f"{s.name}/centred")
    sq = g.node("Mul", [xc, xc], base=f"{s.name}/squares")
    var = g.node("ReduceMean", [sq], base=f"{s.name}/var", axes=axes, keepdims=1)
    plus = g.node("Add", [var, g.const(eps, f"{s.name}/eps")], base=f"{s.name}/var_eps")
    return xc, g.node("Sqrt", [plus], base=f"{s.name}/std")


@translates("BatchNorm")
def batch_norm(g, s: Site) -> None:
    L, x = s.layer, s.bottoms[0]
    shape = s.bottom_shapes[0]
    rank = len(shape)
    if not L.use_global_stats:
        axes = [a for a in range(rank) if a != 1] if rank > 1 else [0]
        xc, std = _batch_centred_std(g, s, x, axes, L.eps)
        g.node("Div", [xc, std], s.tops)
        return
    factor = s.blob(2)
    nonzero = factor != 0
    scale = np.where(nonzero, 1 / np.where(nonzero, factor, 1), 0).astype(np.float32)
    mean = s.blob(0) * scale
    std = np.sqrt(s.blob(1) * scale + np.float32(L.eps))
    cs = _channel_shape(rank, L.channels) if rank > 1 else (1,)
    xc = g.node("Sub", [x, g.const(mean.reshape(cs), f"{s.name}/mean")], base=f"{s.name}/centred")
    g.node("Div", [xc, g.const(std.reshape(cs), f"{s.name}/std")], s.tops)


@translates("BN")
def bn_fork(g, s: Site) -> None:
    """PSPNet's BN at test time: slope·(x − mean)/sqrt(var + eps) + bias (running statistics)."""
    L, x = s.layer, s.bottoms[0]
    if not L.use_running:
        xc, std = _batch_centred_std(g, s, x, [0, 2, 3], L.eps)
    else:
        xc = g.node("Sub", [x, g.const(s.blob(2), f"{s.name}/mean")], base=f"{s.name}/centred")
        std = g.const(np.sqrt(s.blob(3) + np.float32(L.eps)), f"{s.name}/std")
    xn = g.node("Div", [xc, std], base=f"{s.name}/normalised")
    scaled = g.node("Mul", [xn, g.const(s.blob(0), f"{s.name}/slope")], base=f"{s.name}/scaled")
    g.node("Add", [scaled, g.const(s.blob(1), f"{s.name}/bias")], s.tops)


def _operand(g, s: Site, shape: tuple[int, ...], learned: bool, index: int, what: str) -> str:
    """The scale or bias as a tensor that broadcasts over bottom 0 from the layer's axis."""
    rank = len(s.bottom_shapes[0])
    target = broadcast_shape(shape, s.layer.axis, rank)
    if learned:
        return g.const(s.blob(index).reshape(target), f"{s.name}/{what}")
    if tuple(s.bottom_shapes[1]) == target:
        return s.bottoms[1]
    return g.reshape(s.bottoms[1], target, base=f"{s.name}/{what}")


@translates("Scale")
def scale(g, s: Site) -> None:
    L = s.layer
    factor = _operand(g, s, L.scale_shape, L.learned_scale, 0, "scale")
    if L.bias_index is None:
        g.node("Mul", [s.bottoms[0], factor], s.tops)
        return
    y = g.node("Mul", [s.bottoms[0], factor], base=f"{s.name}/scaled")
    bias_shape = L.scale_shape
    g.node("Add", [y, g.const(s.blob(L.bias_index).reshape(
        broadcast_shape(bias_shape, L.axis, len(s.bottom_shapes[0]))), f"{s.name}/bias")], s.tops)


@translates("Bias")
def bias(g, s: Site) -> None:
    L = s.layer
    shape = s.blob(0).shape if L.learned else tuple(s.bottom_shapes[1])
    g.node("Add", [s.bottoms[0], _operand(g, s, shape, L.learned, 0, "bias")], s.tops)


@translates("LRN")
def lrn(g, s: Site) -> None:
    """ACROSS_CHANNELS is ONNX's LRN (same window, α/n, k); WITHIN_CHANNEL is
    x · (1 + α·avg_{n×n}(x²))^(−β) with the zero-padded n×n average (divisor n²)."""
    L, x = s.layer, s.bottoms[0]
    if L.across:
        g.node("LRN", [x], s.tops, size=L.size, alpha=L.alpha, beta=L.beta, bias=L.k)
        return
    sq = g.node("Mul", [x, x], base=f"{s.name}/squares")
    n, p = L.size, L.pre_pad
    avg = g.fresh(f"{s.name}/window_mean")
    caffe_ave(g, sq, avg, s.name, (n, n), (1, 1), (p, p), (n - 1 - p, n - 1 - p), n * n)
    u = g.node("Add", [g.node("Mul", [avg, g.const(L.alpha, f"{s.name}/alpha")],
                              base=f"{s.name}/scaled"), g.const(1.0, f"{s.name}/one")],
               base=f"{s.name}/u")
    powered = g.node("Pow", [u, g.const(-L.beta, f"{s.name}/minus_beta")], base=f"{s.name}/pow")
    g.node("Mul", [x, powered], s.tops)


@translates("MVN")
def mvn(g, s: Site) -> None:
    """Per group (an image, or an image's channel): y = (x − mean) / (std + eps), std biased."""
    L = s.layer
    x = g.reshape(s.bottoms[0], L.view, base=f"{s.name}/groups")
    mean = g.node("ReduceMean", [x], base=f"{s.name}/mean", axes=[1], keepdims=1)
    y = g.node("Sub", [x, mean], base=f"{s.name}/centred")
    if L.normalize_variance:
        var = g.node("ReduceMean", [g.node("Mul", [y, y], base=f"{s.name}/squares")],
                     base=f"{s.name}/var", axes=[1], keepdims=1)
        std = g.node("Add", [g.node("Sqrt", [var], base=f"{s.name}/sqrt"),
                             g.const(L.eps, f"{s.name}/eps")], base=f"{s.name}/std")
        y = g.node("Div", [y, std], base=f"{s.name}/normalised")
    g.reshape(y, s.top_shapes[0], s.tops[0], base=s.name)


@translates("Normalize")
def normalize(g, s: Site) -> None:
    """SSD's L2 normalisation: x / sqrt(Σx² + eps) (over each image, or over the channels at
    each position) times the learned scale (one, or one per channel)."""
    L = s.layer
    x = g.reshape(s.bottoms[0], L.view, base=f"{s.name}/view")
    ss = g.node("ReduceSumSquare", [x], base=f"{s.name}/sumsq", axes=list(L.sum_axes),
                keepdims=1)
    norm = g.node("Sqrt", [g.node("Add", [ss, g.const(L.eps, f"{s.name}/eps")],
                                  base=f"{s.name}/sumsq_eps")], base=f"{s.name}/norm")
    xhat = g.node("Div", [x, norm], base=f"{s.name}/xhat")
    sc = s.blob(0).reshape(1, 1, 1) if L.channel_shared else s.blob(0).reshape(1, -1, 1)
    y = g.node("Mul", [xhat, g.const(sc, f"{s.name}/scale")], base=f"{s.name}/scaled")
    g.reshape(y, s.top_shapes[0], s.tops[0], base=s.name)
