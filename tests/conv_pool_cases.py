"""Shared cases of the Convolution and Pooling tests (and the thread tests): layer specs, the
geometries every path runs, and literal loop implementations of Caffe's ``conv_layer.cpp`` and
``pooling_layer.cpp`` written here, independent of the layers' vectorised code."""

from __future__ import annotations

import math

import numpy as np

GAUSS = {"type": "gaussian", "std": 1.0}


def conv_spec(**conv_param):
    conv_param.setdefault("weight_filler", GAUSS)
    conv_param.setdefault("bias_filler", GAUSS)
    return {"type": "Convolution", "name": "conv", "convolution_param": conv_param}


def pool_spec(top=None, **pool_param):
    spec = {"type": "Pooling", "name": "pool", "pooling_param": pool_param}
    if top:
        spec["top"] = top
    return spec


# -- literal references (Caffe's loops) ---------------------------------------------------
def conv_reference(x, w, b, stride, pad, dilation, group):
    """Caffe's convolution, one output pixel at a time."""
    N, _, H, W = x.shape
    M, Cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    Ho = (H + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    Wo = (W + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = np.zeros((N, M, Ho, Wo))
    Mg = M // group
    for g in range(group):
        xs, ws = xpad[:, g * Cg:(g + 1) * Cg], w[g * Mg:(g + 1) * Mg]
        for ho in range(Ho):
            for wo in range(Wo):
                patch = xs[:, :, ho * sh:ho * sh + dh * (kh - 1) + 1:dh,
                           wo * sw:wo * sw + dw * (kw - 1) + 1:dw]
                y[:, g * Mg:(g + 1) * Mg, ho, wo] = np.einsum("ncij,mcij->nm", patch, ws)
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def pool_reference(x, kernel, stride, pad, method, ceil=True, global_pooling=False):
    """Caffe's pooling_layer.cpp Forward_cpu, literally; returns (top, mask)."""
    N, C, H, W = x.shape
    if global_pooling:
        kernel, stride, pad = (H, W), (1, 1), (0, 0)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    rnd = math.ceil if ceil else math.floor
    Ho = int(rnd((H + 2 * ph - kh) / sh)) + 1
    Wo = int(rnd((W + 2 * pw - kw) / sw)) + 1
    if ph or pw:
        Ho -= (Ho - 1) * sh >= H + ph
        Wo -= (Wo - 1) * sw >= W + pw
    y = np.zeros((N, C, Ho, Wo))
    mask = np.full((N, C, Ho, Wo), -1.0)
    for i in range(Ho):
        for j in range(Wo):
            hs, ws = i * sh - ph, j * sw - pw
            he, we = min(hs + kh, H + ph), min(ws + kw, W + pw)
            pool_size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, H), min(we, W)
            win = x[:, :, hs:he, ws:we].reshape(N, C, -1)
            if method == "MAX":
                a = win.argmax(axis=2)                # first maximum in scan order
                y[:, :, i, j] = win.max(axis=2)
                mask[:, :, i, j] = (hs + a // (we - ws)) * W + ws + a % (we - ws)
            else:
                y[:, :, i, j] = win.sum(axis=2) / pool_size
    return y, mask


# -- Convolution ----------------------------------------------------------------------------
CONV_CASES = {
    "pad_stride": ((2, 3, 7, 7), dict(num_output=4, kernel_size=3, pad=1, stride=2)),
    "group2": ((2, 4, 6, 6), dict(num_output=6, kernel_size=3, group=2)),
    "dilation": ((2, 3, 9, 9), dict(num_output=3, kernel_size=3, pad=2, dilation=2)),
    "hw_fields": ((2, 3, 7, 6), dict(num_output=4, kernel_h=3, kernel_w=2, pad_h=1, pad_w=0,
                                     stride_h=2, stride_w=1)),
    "repeated_hw": ((2, 2, 8, 7), dict(num_output=2, kernel_size=[3, 2], pad=[1, 2],
                                       stride=[2, 1], dilation=[1, 2])),
    "no_bias": ((2, 3, 6, 6), dict(num_output=5, kernel_size=2, stride=2, bias_term=False)),
    # stride 1, one group: transposed-convolution or col2im bottom diffs (by layout)
    "same_pad": ((2, 3, 6, 6), dict(num_output=4, kernel_size=3, pad=1)),
    "unpadded": ((2, 4, 7, 9), dict(num_output=3, kernel_h=2, kernel_w=4)),
    "wide_kernel": ((2, 2, 5, 11), dict(num_output=2, kernel_h=1, kernel_w=5, pad_h=0, pad_w=2)),
    # 3x3 stride 1, one group, odd output (9x3), unequal pads: Winograd's forward (by layout)
    "odd_3x3": ((3, 3, 7, 5), dict(num_output=4, kernel_size=3, pad_h=2, pad_w=0)),
    # conv_direct's shapes: 1x1 stride 1 unpadded (one group, two), depthwise (group = C = M)
    "pointwise": ((3, 5, 4, 3), dict(num_output=6, kernel_size=1)),
    "pointwise_group2": ((2, 4, 3, 5), dict(num_output=6, kernel_size=1, group=2)),
    "depthwise": ((3, 4, 7, 7), dict(num_output=4, kernel_size=3, pad=1, stride=2, group=4)),
    "depthwise_dilation": ((2, 3, 8, 9), dict(num_output=3, kernel_h=3, kernel_w=2, pad_h=2,
                                              pad_w=1, stride_h=1, stride_w=2, dilation=2,
                                              group=3)),
}


#: name -> (bottom shape, pooling_param); covers direct (tiling, gaps) and phased layouts,
#: ceil overhang, padding, the "last window starts inside" rule, FLOOR, global, h/w fields
POOL_CASES = {
    "k2s2_tiles": ((2, 3, 6, 8), dict(kernel_size=2, stride=2)),
    "k2s3_gaps": ((2, 3, 8, 8), dict(kernel_size=2, stride=3)),
    "k3s2_ceil_overhang": ((2, 3, 8, 8), dict(kernel_size=3, stride=2)),
    "k3s2_pad1": ((2, 3, 7, 7), dict(kernel_size=3, stride=2, pad=1)),
    "k2s2_pad1_rule": ((2, 3, 5, 5), dict(kernel_size=2, stride=2, pad=1)),
    "k3s1_pad1": ((2, 2, 5, 6), dict(kernel_size=3, stride=1, pad=1)),
    "k3s2_floor_uncovered": ((2, 3, 8, 8), dict(kernel_size=3, stride=2, round_mode="FLOOR")),
    "hw_fields": ((2, 3, 7, 6), dict(kernel_h=3, kernel_w=2, stride_h=2, stride_w=1,
                                     pad_h=1, pad_w=0)),
    "k4s3_pad2": ((2, 2, 9, 10), dict(kernel_size=4, stride=3, pad=2)),
    "global": ((2, 3, 5, 4), dict(global_pooling=True)),
}
