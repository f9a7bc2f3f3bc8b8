"""CUDA kernels for Pooling on the GPU: one thread per output cell forward, one per input cell
backward (no atomics, so results do not depend on scheduling).

Same semantics as the NumPy path in ``pool.py`` (Caffe's ``pooling_layer.cu``): windows start
at ``o·stride − pad``; MAX scans the window clipped to the image row by row and keeps the first
maximum (strict ``>``), recording its flat index h·W + w; AVE divides the clipped window's sum by
the pool size counted up to ``size + pad`` (padding included, ceil overhang not). Backward sums,
for each input cell, the top diffs of the windows that routed to it (MAX) or cover it (AVE).

Written as ``cupy.ElementwiseKernel``s (templated on the float type ``T``); compiled on first
use by ``netspec.backend.elementwise_kernel``.
"""

from __future__ import annotations

from ..backend import elementwise_kernel

_GEOMETRY = ("int32 H, int32 W, int32 Ho, int32 Wo, int32 kh, int32 kw, int32 sh, int32 sw, "
             "int32 ph, int32 pw")

_MAX_FORWARD = """
    const int wo = i % Wo, ho = (i / Wo) % Ho, plane = i / (Wo * Ho);
    int hs = ho * sh - ph, ws = wo * sw - pw;
    const int he = min(hs + kh, H), we = min(ws + kw, W);
    hs = max(hs, 0); ws = max(ws, 0);
    const int base = plane * H * W;
    int arg = hs * W + ws;
    T best = x[base + arg];
    for (int h = hs; h < he; ++h) {
        for (int w = ws; w < we; ++w) {
            const T v = x[base + h * W + w];
            if (v > best) { best = v; arg = h * W + w; }
        }
    }
    y = best;
    mask = arg;
"""

_AVE_FORWARD = """
    const int wo = i % Wo, ho = (i / Wo) % Ho, plane = i / (Wo * Ho);
    int hs = ho * sh - ph, ws = wo * sw - pw;
    int he = min(hs + kh, H + ph), we = min(ws + kw, W + pw);
    const T pool_size = (T)((he - hs) * (we - ws));
    hs = max(hs, 0); ws = max(ws, 0); he = min(he, H); we = min(we, W);
    const int base = plane * H * W;
    T sum = 0;
    for (int h = hs; h < he; ++h)
        for (int w = ws; w < we; ++w)
            sum += x[base + h * W + w];
    y = sum / pool_size;
"""

# the windows (qh, qw) covering input cell (h, w): qh in [first(h), last(h)), as Caffe computes
_COVERING = """
    const int w = i % W, h = (i / W) % H, plane = i / (W * H);
    const int hp = h + ph, wp = w + pw;
    const int qh0 = hp < kh ? 0 : (hp - kh) / sh + 1, qh1 = min(hp / sh + 1, Ho);
    const int qw0 = wp < kw ? 0 : (wp - kw) / sw + 1, qw1 = min(wp / sw + 1, Wo);
    const int base = plane * Ho * Wo;
    T grad = 0;
"""

_MAX_BACKWARD = _COVERING + """
    const int cell = h * W + w;
    for (int qh = qh0; qh < qh1; ++qh)
        for (int qw = qw0; qw < qw1; ++qw)
            if (mask[base + qh * Wo + qw] == cell) grad += dy[base + qh * Wo + qw];
    dx = grad;
"""

_AVE_BACKWARD = _COVERING + """
    for (int qh = qh0; qh < qh1; ++qh) {
        for (int qw = qw0; qw < qw1; ++qw) {
            const int hs = qh * sh - ph, ws = qw * sw - pw;
            const int he = min(hs + kh, H + ph), we = min(ws + kw, W + pw);
            grad += dy[base + qh * Wo + qw] / (T)((he - hs) * (we - ws));
        }
    }
    dx = grad;
"""

#: kernel name -> (parameters, outputs, body) of its ElementwiseKernel
_SPECS = {
    "max_forward": (f"raw T x, {_GEOMETRY}", "T y, int32 mask", _MAX_FORWARD),
    "ave_forward": (f"raw T x, {_GEOMETRY}", "T y", _AVE_FORWARD),
    "max_backward": (f"raw T dy, raw int32 mask, {_GEOMETRY}", "T dx", _MAX_BACKWARD),
    "ave_backward": (f"raw T dy, {_GEOMETRY}", "T dx", _AVE_BACKWARD),
}


def _kernel(name: str):
    return elementwise_kernel(f"netspec_pool_{name}", *_SPECS[name])


def pool_forward(layer, x, y, mask=None) -> None:
    """y (N, C, Ho, Wo) from x (N, C, H, W); MAX also writes ``mask`` (int32 flat argmax)."""
    if mask is not None:
        _kernel("max_forward")(x, *_geometry(layer), y, mask)
    else:
        _kernel("ave_forward")(x, *_geometry(layer), y)


def pool_backward(layer, dy, dx, mask=None) -> None:
    """dx (N, C, H, W) from dy (N, C, Ho, Wo) (and the MAX ``mask`` of the forward)."""
    if mask is not None:
        _kernel("max_backward")(dy, mask, *_geometry(layer), dx)
    else:
        _kernel("ave_backward")(dy, *_geometry(layer), dx)


def _geometry(layer) -> tuple[int, ...]:
    return (layer.H, layer.W, layer.Ho, layer.Wo, layer.kh, layer.kw, layer.stride_h,
            layer.stride_w, layer.pad_h, layer.pad_w)
