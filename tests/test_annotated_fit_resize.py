"""SSD's FIT_LARGE_SIZE_AND_PAD and FIT_SMALL_SIZE resize policies in AnnotatedData.

References that are not the code under test: SSD's ``ApplyResize`` (im_transforms.cpp) written
here per image with cv2.resize and cv2.copyMakeBorder, SSD's ``UpdateBBoxByResizePolicy`` and
``ExtrapolateBBox`` written here box by box in float32 scalars, and white rectangles whose boxes
must follow their pixels.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from netspec.data.ssd_augment import resize_boxes, resize_policy
from netspec.errors import DataError, SpecError
from netspec.spec.params.common import ResizeParameter

from test_layers_annotated_data import data_net, write_npz

cv2 = pytest.importorskip("cv2", reason="the reference resize is OpenCV's")
F = np.float32
BORDER = {"CONSTANT": 0, "MIRRORED": 4, "REPEAT_NEAREST": 1}   # cv2.BORDER_* values
INTERP = {"LINEAR": 1, "NEAREST": 0, "CUBIC": 2, "AREA": 3, "LANCZOS4": 4}


def ssd_apply_resize(img: np.ndarray, r: ResizeParameter, interp: str = "LINEAR") -> np.ndarray:
    """SSD's ApplyResize of one uint8 (C, h, w) image, as im_transforms.cpp: returns (C, H, W)."""
    c, h, w = img.shape
    x = np.ascontiguousarray(img.transpose(1, 2, 0))
    aspect, new_aspect = F(w) / F(h), F(r.width) / F(r.height)
    mode = INTERP[interp]
    if r.resize_mode == "FIT_SMALL_SIZE":
        if aspect < new_aspect:
            size = (r.width, int(np.floor(F(r.width) / aspect)))
        else:
            size = (int(np.floor(aspect * F(r.height))), r.height)
        out = cv2.resize(x, size, interpolation=mode)
    else:                                               # FIT_LARGE_SIZE_AND_PAD
        values = list(r.pad_value) or [0.0]
        value = [float(v) for v in (values * 3 if len(values) == 1 else values)][:3] + [0.0]
        if aspect > new_aspect:
            height = int(np.floor(F(r.width) / aspect))
            out = cv2.resize(x, (r.width, height), interpolation=mode)
            top = int(np.floor((r.height - height) / 2.0))
            out = cv2.copyMakeBorder(out, top, r.height - height - top, 0, 0,
                                     BORDER[r.pad_mode], value=value)
        else:
            width = int(np.floor(aspect * F(r.height)))
            out = cv2.resize(x, (width, r.height), interpolation=mode)
            left = int(np.floor((r.width - width) / 2.0))
            out = cv2.copyMakeBorder(out, 0, 0, left, r.width - width - left,
                                     BORDER[r.pad_mode], value=value)
    return out.reshape(out.shape[:2] + (c,)).transpose(2, 0, 1)


def ssd_box(b, old_w: int, old_h: int, r: ResizeParameter) -> list:
    """UpdateBBoxByResizePolicy of one box, line by line in float32 scalars."""
    nh, nw = F(r.height), F(r.width)
    orig, new = F(old_w) / F(old_h), nw / nh
    x0, y0, x1, y1 = (F(b[0]) * F(old_w), F(b[1]) * F(old_h), F(b[2]) * F(old_w),
                      F(b[3]) * F(old_h))
    if r.resize_mode == "FIT_LARGE_SIZE_AND_PAD":
        if orig > new:
            p = (nh - nw / orig) / F(2)
            x0, x1 = max(F(0), x0 * nw / F(old_w)), min(nw, x1 * nw / F(old_w))
            y0 = p + max(F(0), y0 * (nh - F(2) * p) / F(old_h))
            y1 = p + min(nh, y1 * (nh - F(2) * p) / F(old_h))
        else:
            p = (nw - orig * nh) / F(2)
            x0 = p + max(F(0), x0 * (nw - F(2) * p) / F(old_w))
            x1 = p + min(nw, x1 * (nw - F(2) * p) / F(old_w))
            y0, y1 = max(F(0), y0 * nh / F(old_h)), min(nh, y1 * nh / F(old_h))
    else:
        if r.resize_mode == "FIT_SMALL_SIZE":
            if orig < new:
                nh = nw / orig
            else:
                nw = orig * nh
        x0, x1 = max(F(0), x0 * nw / F(old_w)), min(nw, x1 * nw / F(old_w))
        y0, y1 = max(F(0), y0 * nh / F(old_h)), min(nh, y1 * nh / F(old_h))
    return [x0 / nw, y0 / nh, x1 / nw, y1 / nh]


def assert_near_opencv(got, want, interp, what=""):
    """NEAREST equal; LINEAR and CUBIC within 1 on a few pixels (the shared resize's bound,
    tests/test_ssd_augment.py; padding copies a border pixel's difference)."""
    assert got.shape == want.shape, what
    diff = np.abs(got.astype(int) - want)
    if interp == "NEAREST":
        assert diff.max() == 0, what
    assert diff.max() <= 1 and (diff > 0).mean() < 0.05, what


def mixed_images(rng, sizes, c=3):
    """uint8 noise images of ``sizes`` (n, 2) at the top left of one (n, C, Hm, Wm) array."""
    hm, wm = sizes.max(0)
    out = np.zeros((len(sizes), c, hm, wm), np.uint8)
    for k, (h, w) in enumerate(sizes):
        out[k, :, :h, :w] = rng.integers(0, 256, (c, h, w))
    return out


@pytest.mark.parametrize("pad_mode,pad_value", [("CONSTANT", []), ("CONSTANT", [10, 20.6, 300]),
                                                ("CONSTANT", [77]), ("MIRRORED", []),
                                                ("REPEAT_NEAREST", [])])
@pytest.mark.parametrize("interp", ["LINEAR", "NEAREST", "CUBIC"])
def test_fit_large_size_and_pad_is_opencvs_resize_and_border(pad_mode, pad_value, interp):
    rng = np.random.default_rng(0)
    sizes = np.array([[20, 50], [50, 20], [30, 30], [2, 40], [40, 3], [30, 50], [20, 50]])
    images = mixed_images(rng, sizes)
    r = ResizeParameter(resize_mode="FIT_LARGE_SIZE_AND_PAD", height=24, width=32,
                        pad_mode=pad_mode, pad_value=pad_value)
    rect = np.concatenate([np.zeros_like(sizes), sizes], 1)
    out = resize_policy(images, sizes, np.zeros_like(sizes), rect, r,
                        np.zeros(3, np.int32), np.full(len(sizes), interp))
    assert out.shape == (len(sizes), 3, 24, 32)
    for k, (h, w) in enumerate(sizes):
        want = ssd_apply_resize(images[k, :, :h, :w], r, interp)
        assert_near_opencv(out[k], want, interp, f"image {k} ({h} × {w})")


def test_fit_small_size_covers_the_size_keeping_the_aspect():
    rng = np.random.default_rng(1)
    for h, w in ((20, 50), (50, 20), (33, 17)):
        sizes = np.array([[h, w]])
        images = mixed_images(rng, sizes, 1)
        r = ResizeParameter(resize_mode="FIT_SMALL_SIZE", height=24, width=32)
        rect = np.array([[0, 0, h, w]])
        out = resize_policy(images, sizes, np.zeros_like(sizes), rect, r, np.zeros(1, np.int32))
        want = ssd_apply_resize(images[0], r)
        assert out.shape[1:] == want.shape and min(want.shape[1] / 24, want.shape[2] / 32) >= 1
        assert_near_opencv(out[0], want, "LINEAR", f"{h} × {w}")


@pytest.mark.parametrize("mode", ["WARP", "FIT_LARGE_SIZE_AND_PAD", "FIT_SMALL_SIZE"])
def test_resize_boxes_follow_ssds_update_bbox_by_resize_policy(mode):
    rng = np.random.default_rng(2)
    xy = rng.uniform(-0.2, 1.2, (400, 2, 2)).astype(F)
    b = np.concatenate([xy.min(1), xy.max(1)], 1)
    old = rng.integers(5, 700, (400, 2))
    r = ResizeParameter(resize_mode=mode, height=300, width=200)
    out = resize_boxes(b, old, r)
    want = [ssd_box(b[k], old[k, 1], old[k, 0], r) for k in range(400)]
    np.testing.assert_array_equal(out, np.array(want, F))


def white_boxes(n, h, w, seed):
    """n black uint8 images (n, 1, h, w) with 1–2 white rectangles and their rows."""
    rng = np.random.default_rng(seed)
    data = np.zeros((n, 1, h, w), np.uint8)
    rows = []
    for i in range(n):
        for k in range(int(rng.integers(1, 3))):
            bw, bh = rng.integers(w // 4, w // 2), rng.integers(h // 4, h // 2)
            x, y = rng.integers(0, w - bw), rng.integers(0, h - bh)
            data[i, 0, y:y + bh, x:x + bw] = 255
            rows.append([i, 1, k, x / w, y / h, (x + bw) / w, (y + bh) / h, 0])
    return data, rows


def assert_boxes_on_white(x, lab, tol=1.5):
    """Every box is white inside (``tol`` pixels in from its sides) and every white pixel is
    within ``tol`` of a box."""
    n, _, hh, ww = x.shape
    yy, xx = np.mgrid[0:hh, 0:ww] + 0.5
    for i in range(n):
        white = x[i, 0] > 100
        near = np.zeros((hh, ww), bool)
        mine = lab[lab[:, 0] == i][:, 3:7] * [ww, hh, ww, hh]
        assert len(mine)
        for b in mine:
            near |= (xx > b[0] - tol) & (xx < b[2] + tol) & (yy > b[1] - tol) & (yy < b[3] + tol)
            inside = (xx > b[0] + tol) & (xx < b[2] - tol) & (yy > b[1] + tol) & (yy < b[3] - tol)
            assert inside.any() and white[inside].all()
        assert not (white & ~near).any()


@pytest.mark.parametrize("hw", [(48, 96), (96, 48)])
def test_fit_large_boxes_follow_their_pixels_with_mirror(tmp_path, hw):
    data, rows = white_boxes(6, *hw, seed=hw[0])
    src = write_npz(tmp_path / "a.npz", data, rows)
    r = {"resize_mode": "FIT_LARGE_SIZE_AND_PAD", "height": 48, "width": 48, "pad_value": [0]}
    net = data_net(src, batch=3, transform={"resize_param": r, "mirror": True})
    for _ in range(4):
        net.forward()
        x, lab = net.blobs["data"].data, net.blobs["label"].data.reshape(-1, 8)
        assert x.shape == (3, 1, 48, 48)
        assert_boxes_on_white(x, lab)
    pad = x[:, 0, :12] if hw[0] < hw[1] else x[:, 0, :, :12]      # 12 rows (columns) of 0
    assert (pad == 0).all()


def test_fit_small_size_batch_one_takes_each_images_size(tmp_path):
    data, rows = white_boxes(2, 30, 60, seed=4)
    src = write_npz(tmp_path / "a.npz", data, rows)
    r = {"resize_mode": "FIT_SMALL_SIZE", "height": 40, "width": 40}
    net = data_net(src, batch=1, transform={"resize_param": r})
    assert net.blobs["data"].data.shape == (1, 1, 40, 80)           # the first record's size
    net.forward()
    x, lab = net.blobs["data"].data, net.blobs["label"].data.reshape(-1, 8)
    assert_near_opencv(x[0], ssd_apply_resize(data[0], ResizeParameter(**r)), "LINEAR")
    assert_boxes_on_white(x, lab)


def test_fit_small_size_height_and_width_scale_extrapolate_the_boxes(tmp_path):
    data, rows = white_boxes(1, 30, 60, seed=5)
    src = write_npz(tmp_path / "a.npz", data, rows)
    r = {"resize_mode": "FIT_SMALL_SIZE", "height": 40, "width": 40,
         "height_scale": 32, "width_scale": 64}
    net = data_net(src, batch=1, transform={"resize_param": r})
    net.forward()
    lab = net.blobs["label"].data.reshape(-1, 8)
    p = ResizeParameter(**r)
    for got, row in zip(lab, rows):
        b = ssd_box(row[3:7], 60, 30, p)                # covering size 80 × 40 (w × h)
        want = [b[0] * F(80) / F(64), b[1] * F(40) / F(32), b[2] * F(80) / F(64),
                b[3] * F(40) / F(32)]
        np.testing.assert_array_equal(got[3:7], np.array(want, F))
    r.update(height_scale=50)
    net = data_net(src, batch=1, transform={"resize_param": r})
    with pytest.raises(DataError, match=re.escape("smaller than height_scale × width_scale")):
        net.forward()


@pytest.mark.parametrize("r,batch,field,words", [
    ({"resize_mode": "FIT_SMALL_SIZE", "height": 8, "width": 8}, 2,
     "resize_param.resize_mode", "batch_size 1 only, not 2"),
    ({"resize_mode": "FIT_LARGE_SIZE_AND_PAD", "height": 8}, 1,
     "resize_param.height", "FIT_LARGE_SIZE_AND_PAD needs height and width"),
    ({"resize_mode": "FIT_LARGE_SIZE_AND_PAD", "height": 8, "width": 8, "pad_value": [1, 2]}, 1,
     "resize_param.pad_value", "2 pad_value for 3-channel images"),
])
def test_fit_policies_are_checked(tmp_path, r, batch, field, words):
    src = write_npz(tmp_path / "a.npz", np.zeros((2, 3, 4, 6), np.uint8),
                    [[0, 1, 0, 0.1, 0.1, 0.5, 0.5, 0]])
    with pytest.raises(SpecError, match=re.escape(words)) as e:
        data_net(src, batch=batch, transform={"resize_param": r})
    assert field in str(e.value)


def test_jitter_crops_keep_the_aspect_under_fit_large_size_and_pad():
    from netspec.data.ssd_augment import jitter_crops
    c = jitter_crops(np.random.default_rng(0), 0.3, 2000, keep_aspect=True)
    np.testing.assert_allclose(c[:, 2] - c[:, 0], c[:, 3] - c[:, 1], atol=1e-6)
    assert ((c[:, 2] - c[:, 0]) < 0.99).mean() > 0.5
