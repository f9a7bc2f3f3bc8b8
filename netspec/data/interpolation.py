"""OpenCV's resize interpolations other than 8-bit INTER_LINEAR (``image_list.resize_linear``)
as per-axis tap tables, for SSD's ``resize_param.interp_mode`` (one mode drawn per image).

A table gives, for each output index of each item, K source indices and float32 weights:
out[y, x] = Σ_i Σ_j wy[y, i]·wx[x, j]·src[iy[y, i], ix[x, j]], rounded half to even and
saturated to 0…255. Source positions follow cv::resize: centres aligned, fx = (d + ½)·s − ½
with s = source size / output size, edges replicated.

* NEAREST: source index min(⌊d·s⌋, size − 1) — exactly OpenCV's.
* CUBIC: 4 taps ⌊fx⌋ − 1 … ⌊fx⌋ + 2, Keys' kernel with a = −0.75 (OpenCV's).
* LANCZOS4: 8 taps ⌊fx⌋ − 3 … ⌊fx⌋ + 4, sinc(t)·sinc(t/4) normalised to sum 1.
* AREA: when an image shrinks on both axes, each output pixel the mean of the source area it
  covers (partial pixels weighted by their share); otherwise OpenCV's bilinear variant with
  fraction ((d + 1) − (⌊d·s⌋ + 1)/s) mod 1 at ⌊d·s⌋.

``ssd_augment.render`` sums LANCZOS4 in OpenCV's 8-bit fixed point (weights rounded to
1/2048, rows then columns, the total rounded at 2⁻²²), the others in float32 rounded half to
even (AREA's 2× halving half up, as OpenCV's); tests/test_ssd_augment.py measures each against
cv2.resize.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
MODES = ("LINEAR", "AREA", "NEAREST", "CUBIC", "LANCZOS4")


def _cubic(f: np.ndarray) -> np.ndarray:
    a = F32(-0.75)
    x = f[..., None] + np.array([1, 0, -1, -2], F32)       # distances to the 4 taps
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    w = np.where(x <= 1, near, far).astype(F32)
    w[..., 3] = 1 - w[..., 0] - w[..., 1] - w[..., 2]
    return w


def _lanczos4(f: np.ndarray) -> np.ndarray:
    t = (f[..., None] + 3 - np.arange(8)).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.sinc(t) * np.sinc(t / 4)
    w = w / w.sum(-1, keepdims=True)
    return w.astype(F32)


def centred_positions(src, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """cv::resize's source position of each output index, centres aligned:
    fx = (d + ½)·src/dst − ½ in float32, as (⌊fx⌋ int64, fx − ⌊fx⌋ float32); ``src`` one size
    or sizes (n, 1)."""
    d = np.arange(dst, dtype=np.float64)
    fx = ((d + 0.5) * (src / dst) - 0.5).astype(F32)
    sx = np.floor(fx)
    return sx.astype(np.int64), (fx - sx).astype(F32)


def nearest_indices(src, dst: int) -> np.ndarray:
    """INTER_NEAREST's source index of each output index: min(⌊d·(1/(dst/src))⌋, src − 1) in
    float64, OpenCV's own arithmetic (``resizeNN``: the ratio inverted, not src/dst, which
    differs at exact multiples: 11·30/22 is 15 in OpenCV, 14 by src/dst); ``src`` one size or
    sizes (n, 1)."""
    d = np.arange(dst, dtype=np.float64)
    ratio = 1.0 / (dst / np.asarray(src, np.float64))
    return np.minimum(np.floor(d * ratio).astype(np.int64), np.asarray(src) - 1)


def taps(mode: str, src: np.ndarray, dst: int, shrink_both: np.ndarray | None = None
         ) -> tuple[np.ndarray, np.ndarray]:
    """The tap table of ``mode`` for items of source sizes ``src`` (n, 1) resized to ``dst``:
    indices (n, dst, K) and float32 weights (n, dst, K). ``shrink_both`` (n, 1): AREA's choice
    between its area mean (the image shrinks on both axes) and its bilinear variant."""
    src = np.asarray(src, np.int64)
    if mode == "NEAREST":
        i = nearest_indices(src, dst)
        return i[..., None], np.ones(i.shape + (1,), F32)
    if mode in ("CUBIC", "LANCZOS4"):
        sx, f = centred_positions(src, dst)
        k = 4 if mode == "CUBIC" else 8
        idx = sx[..., None] + np.arange(k) - (k // 2 - 1)
        w = _cubic(f) if mode == "CUBIC" else _lanczos4(f)
        return np.clip(idx, 0, src[..., None] - 1), w
    if mode == "AREA":
        return _area(src, dst, shrink_both)
    raise ValueError(f"no tap table for {mode}")


def _area(src, dst, shrink_both):
    scale = src / dst                                           # (n, 1) float64
    d = np.arange(dst, dtype=np.float64)
    # the bilinear variant (OpenCV's INTER_AREA when enlarging)
    sx = np.floor(d * scale).astype(np.int64)
    fx = ((d + 1) - (sx + 1) / scale).astype(F32)
    fx = np.where(fx <= 0, F32(0), fx - np.floor(fx)).astype(F32)
    high = sx >= src - 1
    sx, fx = np.where(high, src - 1, sx), np.where(high, F32(0), fx)
    k = int(np.ceil(scale.max(initial=1))) + 2
    lin_i = np.concatenate([sx[..., None], np.minimum(sx + 1, src - 1)[..., None]], -1)
    lin_w = np.stack([1 - fx, fx], -1).astype(F32)
    # the area mean: the overlap of source pixel p with [d·s, (d + 1)·s) over the cell width
    f1 = d * scale
    f2 = f1 + scale
    cell = np.minimum(scale, src - f1)
    p = np.ceil(f1).astype(np.int64)[..., None] - 1 + np.arange(k)
    over = np.minimum(p + 1, f2[..., None]) - np.maximum(p, f1[..., None])
    over = np.where((over > 1e-3) & (p < src[..., None]) & (p >= 0), over, 0)
    area_w = (over / cell[..., None]).astype(F32)
    area_i = np.clip(p, 0, src[..., None] - 1)
    pad = k - 2
    lin_i = np.concatenate([lin_i, np.repeat(lin_i[..., -1:], pad, -1)], -1)
    lin_w = np.concatenate([lin_w, np.zeros(lin_w.shape[:-1] + (pad,), F32)], -1)
    use_area = np.asarray(shrink_both, bool)[..., None]
    return np.where(use_area, area_i, lin_i), np.where(use_area, area_w, lin_w)
