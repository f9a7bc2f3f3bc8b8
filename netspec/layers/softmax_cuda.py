"""CUDA kernels for SoftmaxWithLoss on the GPU: the softmax, the picked log-probability and the
gradient each in one launch instead of a dozen small CuPy operations.

Same semantics as the array code in ``loss.py`` (scores viewed as (outer, C, inner); labels
truncated to int; positions whose label is ``ignore_label`` are not valid):

* forward, one thread per position (o, i): p[o, :, i] = exp(x − max) / Σ exp(x − max), and
  logp = log(max(p[label], FLT_MIN)) (0 where not valid), valid = 1 or 0;
* backward, one thread per score: dx = (p − [c = label]) · valid · scale, with
  scale = loss_weight / normaliser.

Written as ``cupy.ElementwiseKernel``s (templated on the float type ``T``); compiled on first
use by ``netspec.backend.elementwise_kernel``.
"""

from __future__ import annotations

from ..backend import elementwise_kernel

_FORWARD = """
    const int o = i / inner, k = i % inner;
    const int base = o * C * inner + k;
    T m = x[base];
    for (int c = 1; c < C; ++c) m = max(m, x[base + c * inner]);
    T s = 0;
    for (int c = 0; c < C; ++c) {
        const T e = exp(x[base + c * inner] - m);
        prob[base + c * inner] = e;
        s += e;
    }
    for (int c = 0; c < C; ++c) prob[base + c * inner] /= s;
    const int lab = (int)label;
    const bool ok = !has_ignore || lab != ignore_label;
    valid = ok ? 1 : 0;
    logp = ok ? log(max(prob[base + lab * inner], (T)1.1754943508222875e-38)) : (T)0;
"""

_BACKWARD = """
    const int k = i % inner, c = (i / inner) % C, o = i / (inner * C);
    const int lab = (int)label[o * inner + k];
    const bool ok = !has_ignore || lab != ignore_label;
    dx = ok ? (prob - (c == lab ? (T)1 : (T)0)) * scale : (T)0;
"""

#: kernel name -> (parameters, outputs, body) of its ElementwiseKernel
_SPECS = {
    "forward": ("raw T x, L label, int32 C, int32 inner, bool has_ignore, int32 ignore_label",
                "raw T prob, T logp, T valid", _FORWARD),
    "backward": (("T prob, raw L label, T scale, int32 C, int32 inner, bool has_ignore, "
                  "int32 ignore_label"), "T dx", _BACKWARD),
}


def _kernel(name: str):
    return elementwise_kernel(f"netspec_softmax_loss_{name}", *_SPECS[name])


def _ignore(ignore_label) -> tuple[bool, int]:
    return ignore_label is not None, int(ignore_label or 0)


def softmax_loss_forward(x, label, prob, logp, valid, channels, inner, ignore_label) -> None:
    """Fill prob (outer, C, inner) and, per position (outer, inner), logp and valid."""
    _kernel("forward")(x, label, channels, inner, *_ignore(ignore_label), prob, logp, valid)


def softmax_loss_backward(prob, label, scale, dx, channels, inner, ignore_label) -> None:
    """dx (outer, C, inner) = (prob − onehot(label)) · valid · scale (scale a 0-d array)."""
    _kernel("backward")(prob, label, scale, channels, inner, *_ignore(ignore_label), dx)
