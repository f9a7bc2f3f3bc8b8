"""BatchNorm (global statistics) + Scale folded into the Convolution before them, for nets that
run forward only (a TEST net with no backward, as a deploy net), as OpenCV's dnn does.

With μ = mean_sum / factor, σ² = var_sum / factor (0 for a zero factor, as BatchNorm), ε,
and the Scale's γ (and β) per channel, the three layers compute

    y = ((conv(x) + b − μ) / sqrt(σ² + ε)) · γ + β = conv(x) · s + t,
    s = γ / sqrt(σ² + ε),   t = (b − μ) · s + β,

so the Convolution writes conv(x) without its bias and applies s and t in place (two passes
over its top instead of the seven passes and four temporaries of BatchNorm's and Scale's
forwards), and the folded BatchNorm and Scale do nothing. s and t are recomputed from the
current blobs at every forward (C values each): changed weights or statistics are always
used, nothing is cached. Folded only where the BatchNorm runs in place on the Convolution's
only top right after it (and the Scale in place right after the BatchNorm, per channel), with
no backward through the three layers; ``ConvTuning.fold_batch_norm`` turns it off.

A ReLU (negative_slope 0) in place right after such a run, or right after a Convolution
itself, is folded too (``fold_relu``): y = max(conv(x)·s + t, 0) (s = 1 and t = b without a
BatchNorm), by the compiled kernels' one pass when numba imports
(``conv_compiled``: inside the depthwise kernel, or after a GEMM), else by NumPy's maximum as
the ReLU would compute it; the ReLU layer then does nothing. Both give the same floats as the
unfolded layers' passes (a multiply, an add, a maximum, in that order). A partial pass of the
net (a start or end layer) runs every layer itself (``unfolded``).
"""

from __future__ import annotations

import contextlib


#: the layer types whose forward applies a fold (``Convolution.forward``)
CONVOLUTIONS = ("Convolution", "DepthwiseConvolution", "ConvolutionDepthwise")


def _in_place(k, blob, bottoms, tops) -> bool:
    """Layer k reads and writes only ``blob``."""
    return len(bottoms[k]) == 1 and bottoms[k][0] is blob and tops[k] == [blob]


def fold_into_convolutions(layers, bottoms, tops, layer_backward, batch_norm: bool = True,
                           relu: bool = True) -> list[str]:
    """Fold each Convolution [→ BatchNorm(global) [→ Scale], when ``batch_norm``] [→ ReLU,
    when ``relu``] run of a net's layer lists (in order, with their bottom/top blob lists and
    backward flags) into the Convolution; returns the names of those with something folded."""
    folded = []
    n = len(layers)
    for i, conv in enumerate(layers[:-1]):
        if conv.type_name not in CONVOLUTIONS or len(tops[i]) != 1:
            continue
        blob = tops[i][0]
        run = [conv]
        bn = layers[i + 1]
        if (batch_norm and bn.type_name == "BatchNorm" and bn.use_global_stats
                and _in_place(i + 1, blob, bottoms, tops)):
            run.append(bn)
            sc = layers[i + 2] if i + 2 < n else None
            if (sc is not None and sc.type_name == "Scale" and sc.learned_scale
                    and sc.axis == 1 and sc.scale_shape == (blob.shape[1],)
                    and _in_place(i + 2, blob, bottoms, tops)):
                run.append(sc)
        k = i + len(run)
        if (relu and k < n and layers[k].type_name == "ReLU" and layers[k].slope == 0.0
                and _in_place(k, blob, bottoms, tops)):
            run.append(layers[k])
        if len(run) == 1 or any(layer_backward[i:i + len(run)]):
            continue
        conv.folded = [layer for layer in run[1:] if layer.type_name != "ReLU"]
        conv.folded_relu = run[-1].type_name == "ReLU"
        for layer in run[1:]:
            layer.folded_into = conv.name
        folded.append(conv.name)
    return folded


@contextlib.contextmanager
def unfolded(layers):
    """While inside, every layer of ``layers`` computes its own forward (the folds undone, and
    restored after): a partial pass may start or stop inside a folded run, and Caffe's
    ``forward(end=conv)`` leaves the convolution's top as it was before its in-place
    BatchNorm, Scale and ReLU."""
    convs = [(c, c.folded, c.folded_relu) for c in layers if getattr(c, "folded", None) is not None]
    into = [(x, x.folded_into) for x in layers if getattr(x, "folded_into", None)]
    for c, _, _ in convs:
        c.folded, c.folded_relu = None, False
    for x, _ in into:
        x.folded_into = None
    try:
        yield
    finally:
        for c, f, r in convs:
            c.folded, c.folded_relu = f, r
        for x, name in into:
            x.folded_into = name


def folded_affine(conv, bias):
    """(s, t) of the module doc, each (M,), from the current blobs of ``conv.folded`` and the
    convolution's ``bias`` (None without one), in the layer's dtype."""
    xp = conv.xp
    bn = conv.folded[0]
    factor = bn.blobs[2].data
    nonzero = factor != 0
    inv = xp.where(nonzero, 1 / xp.where(nonzero, factor, 1), 0).astype(conv.dtype)
    mean = bn.blobs[0].data * inv
    s = 1 / xp.sqrt(bn.blobs[1].data * inv + bn.eps)
    t = -mean if bias is None else bias - mean
    sc = conv.folded[1] if len(conv.folded) > 1 else None
    if sc is not None:
        s = s * sc.blobs[0].data.reshape(-1)
    t = t * s
    if sc is not None and sc.bias_index is not None:
        t = t + sc.blobs[sc.bias_index].data.reshape(-1)
    return s.astype(conv.dtype, copy=False), t.astype(conv.dtype, copy=False)
