"""OpenCV's 8-bit BGR ↔ HSV conversions (``cv::cvtColor`` COLOR_BGR2HSV / COLOR_HSV2BGR, H in
0…179), as its vectorised path computes them (OpenCV 4.x on x86-64, fused multiply-adds); arrays
are channels-first (..., 3, H, W). OpenCV converts the last (width mod 4·SIMD lanes) pixels of
each row on a scalar path whose HSV → BGR rounds where the vector path truncates: those can
differ by 1.

BGR → HSV is integer arithmetic with 12-bit reciprocal tables:
  v = max(b, g, r), δ = v − min(b, g, r), s = (δ·⌊255·2¹²/v⌉ + 2¹¹) >> 12,
  h = (h₀·⌊180·2¹²/(6δ)⌉ + 2¹¹) >> 12 (+180 if negative), with h₀ = g − b when v = r,
  b − r + 2δ when v = g, else r − g + 4δ.
HSV → BGR is float32: h·(6/180) split into sector k (mod 6) and fraction f, s and v scaled by
1/255, the sector's pick of v, v(1 − s), v(1 − s·f), v(1 − s(1 − f)), times 255 truncated.
H above 179 (a hue shifted past the end) wraps around through the sector's mod 6.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
_SHIFT = 12
_i = np.arange(1, 256, dtype=np.float64)
_SDIV = np.concatenate([[0], np.rint((255 << _SHIFT) / _i)]).astype(np.int32)
_HDIV = np.concatenate([[0], np.rint((180 << _SHIFT) / (6 * _i))]).astype(np.int32)


def bgr_to_hsv(x: np.ndarray) -> np.ndarray:
    """uint8 BGR (..., 3, H, W) -> uint8 HSV (H in 0…179)."""
    b, g, r = (x[..., k, :, :].astype(np.int32) for k in range(3))
    v = np.maximum(np.maximum(b, g), r)
    diff = v - np.minimum(np.minimum(b, g), r)
    s = (diff * _SDIV[v] + (1 << (_SHIFT - 1))) >> _SHIFT
    h0 = np.where(v == r, g - b, np.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h0 * _HDIV[diff] + (1 << (_SHIFT - 1))) >> _SHIFT
    h = np.where(h < 0, h + 180, h)
    return np.stack([h, s, v], -3).clip(0, 255).astype(np.uint8)


def _fnmadd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 − a·b rounded once to float32, as the fused multiply-add OpenCV's SIMD code gets."""
    return (1 - a.astype(np.float64) * b.astype(np.float64)).astype(F32)


def hsv_to_bgr(x: np.ndarray) -> np.ndarray:
    """uint8 HSV (..., 3, H, W) (H in 0…179; larger values wrap) -> uint8 BGR."""
    h = x[..., 0, :, :].astype(F32) * F32(6.0 / 180)
    s = x[..., 1, :, :].astype(F32) * F32(1.0 / 255)
    v = x[..., 2, :, :].astype(F32) * F32(1.0 / 255)
    pre = np.trunc(h)
    f = h - pre
    one = F32(1)
    tab = [v, v * (one - s), v * _fnmadd(s, f), v * _fnmadd(s, one - f)]
    sector = pre - np.trunc(pre * F32(1.0 / 6)) * F32(6)
    # per sector 0…5, which of tab each of b, g, r takes
    pick = np.array([[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]])
    which = np.moveaxis(pick[sector.astype(np.int64)], -1, 0)      # (3, ..., H, W)
    bgr = np.moveaxis(np.take_along_axis(np.stack(tab), which, 0), 0, -3) * F32(255)
    return np.clip(np.trunc(bgr), 0, 255).astype(np.uint8)
