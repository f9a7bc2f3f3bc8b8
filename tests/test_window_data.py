"""Caffe's WindowData layer: window files, fg/bg sampling, warping (context_pad, square,
mirror), mean subtraction, labels and errors.

Every test writes its own images (Pillow) and window file in tmp_path. The warped windows are
checked against a crop + bilinear resize computed here in float64 NumPy (OpenCV's geometry:
pixel centres aligned, edges clamped), to within 1 grey level (netspec follows OpenCV's
fixed-point rounding, the reference rounds the exact value).
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from netspec.backend import Backend
from netspec.errors import DataError, SpecError
from netspec.net import Net
from netspec.spec import load_net

Image = pytest.importorskip("PIL.Image", reason="images need Pillow: pip install 'netspec[caffe]'")

F32 = Backend(np, np.float32)


# -- helpers ---------------------------------------------------------------------------------
def _save(path, rgb: np.ndarray) -> np.ndarray:
    """Write an RGB image; return what Caffe (OpenCV) reads: B, G, R planes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return rgb[:, :, ::-1].transpose(2, 0, 1)


def _random_image(path, h, w, seed=0) -> np.ndarray:
    return _save(path, np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _window_file(path, images: list[tuple[str, int, int, list[tuple]]]) -> None:
    """images: (path, height, width, [(class, overlap, x1, y1, x2, y2), ...])."""
    lines = []
    for i, (name, h, w, windows) in enumerate(images):
        lines += [f"# {i}", name, "3", str(h), str(w), str(len(windows))]
        lines += [" ".join(str(v) for v in win) for win in windows]
    path.write_text("\n".join(lines) + "\n")


def _layer(source="windows.txt", batch=4, crop=8, transform=None, **param):
    tp = {"crop_size": crop, **(transform or {})}
    return {"name": "win", "type": "WindowData", "top": ["data", "label"],
            "transform_param": tp,
            "window_data_param": {"source": str(source), "batch_size": batch, **param}}


def _net(folder, layer, phase="TRAIN", seed=0, name="net.yaml") -> Net:
    path = folder / name
    path.write_text(yaml.safe_dump({"name": "n", "layer": [layer]}))
    return Net(load_net(path), phase, F32, np.random.default_rng(seed))


def _batch(net):
    net.forward()
    return net.blobs["data"].data.copy(), net.blobs["label"].data.copy()


def _bilinear(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """(C, H, W) -> (C, height, width), OpenCV INTER_LINEAR geometry, exact float64, rounded."""
    def taps(src, dst):
        f = (np.arange(dst) + 0.5) * (src / dst) - 0.5
        f = np.clip(f, 0, src - 1)
        i0 = np.floor(f).astype(int)
        return i0, np.minimum(i0 + 1, src - 1), f - i0

    x = a.astype(np.float64)
    y0, y1, ty = taps(a.shape[1], height)
    x0, x1, tx = taps(a.shape[2], width)
    rows = x[:, y0] * (1 - ty)[None, :, None] + x[:, y1] * ty[None, :, None]
    out = rows[:, :, x0] * (1 - tx) + rows[:, :, x1] * tx
    return np.floor(out + 0.5)


def _close(got, want):
    assert got.shape == want.shape
    assert np.abs(got.astype(np.float64) - want).max() <= 1.0


# -- sampling ----------------------------------------------------------------------------------
def _solid_windows(tmp_path):
    """One solid-colour image per window, so an output tells which window was drawn."""
    spec = {  # grey level: (class index, overlap)
        10: (1, 0.9), 20: (2, 0.5), 30: (3, 0.75),       # foreground (overlap >= 0.5)
        40: (0, 0.1), 50: (7, 0.0),                       # background: label forced to 0
        60: (4, 0.3), 70: (5, 0.45),                      # between the thresholds: never drawn
    }
    images = []
    for v, (cls, ov) in spec.items():
        _save(tmp_path / f"im{v}.png", np.full((6, 6, 3), v, np.uint8))
        images.append((f"im{v}.png", 6, 6, [(cls, ov, 1, 1, 4, 4)]))
    _window_file(tmp_path / "windows.txt", images)
    return spec


def test_each_batch_is_background_then_foreground_in_caffes_proportion(tmp_path):
    spec = _solid_windows(tmp_path)
    net = _net(tmp_path, _layer(batch=10, crop=4, fg_threshold=0.5, bg_threshold=0.3,
                                fg_fraction=0.25))
    assert net.blobs["data"].shape == (10, 3, 4, 4) and net.blobs["label"].shape == (10,)
    drawn = set()
    for _ in range(30):
        data, labels = _batch(net)
        grey = data[:, 0, 0, 0].astype(int)
        assert (data == grey[:, None, None, None]).all()      # solid windows stay solid
        n_fg = 2                                               # int(10 · 0.25), as Caffe
        assert all(spec[g][1] < 0.3 for g in grey[:-n_fg])     # background first ...
        assert all(spec[g][1] >= 0.5 for g in grey[-n_fg:])    # ... then foreground
        np.testing.assert_array_equal(labels[:-n_fg], 0)
        np.testing.assert_array_equal(labels[-n_fg:], [spec[g][0] for g in grey[-n_fg:]])
        drawn.update(grey.tolist())
    assert drawn == {10, 20, 30, 40, 50}                     # every fg/bg window, never 60, 70


def test_fg_fraction_counts(tmp_path):
    _solid_windows(tmp_path)
    for batch, fraction, n_fg in ((8, 0.25, 2), (5, 0.5, 2), (4, 0.0, 0), (3, 1.0, 3)):
        net = _net(tmp_path, _layer(batch=batch, crop=2, fg_fraction=fraction))
        _, labels = _batch(net)
        assert int((labels > 0).sum()) == n_fg, (batch, fraction)


def test_sampling_follows_the_seed_and_the_saved_generator(tmp_path):
    _solid_windows(tmp_path)
    layer = _layer(batch=6, crop=2, fg_fraction=0.5, transform={"mirror": True})
    a = [_batch(_net(tmp_path, layer, seed=5))[1] for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])
    net = _net(tmp_path, layer, seed=5)
    for _ in range(3):
        net.forward()
    state = net.rng.bit_generator.state      # what a snapshot keeps (the layer has no cursor)
    assert net.layer_by_name("win").state_dict() == {}
    expect = [_batch(net) for _ in range(3)]
    other = _net(tmp_path, layer, seed=99)
    other.rng.bit_generator.state = state
    for data, labels in expect:
        got = _batch(other)
        np.testing.assert_array_equal(got[0], data)
        np.testing.assert_array_equal(got[1], labels)


def test_test_phase_samples_and_mirrors_too(tmp_path):
    """Caffe's WindowData has no TEST mode: it draws windows and mirrors at random in both."""
    img = _random_image(tmp_path / "a.png", 10, 10)
    _window_file(tmp_path / "windows.txt", [("a.png", 10, 10, [(1, 0.9, 0, 0, 9, 9)])])
    net = _net(tmp_path, _layer(batch=1, crop=10, fg_fraction=1, transform={"mirror": True}),
               phase="TEST")
    seen = set()
    for _ in range(12):
        data, _ = _batch(net)
        seen.add("plain" if np.array_equal(data[0], img) else
                 "flipped" if np.array_equal(data[0], img[:, :, ::-1]) else "other")
    assert seen == {"plain", "flipped"}


# -- warping ---------------------------------------------------------------------------------
def _one_window(tmp_path, h, w, box, seed=0, name="a.png"):
    img = _random_image(tmp_path / name, h, w, seed)
    _window_file(tmp_path / "windows.txt", [(name, h, w, [(1, 0.9, *box)])])
    return img


def _warp(tmp_path, crop, mirror=False, **param):
    """The one window, warped; with ``mirror``, the first draw (over seeds) that the layer
    mirrors, told apart from the unmirrored warp."""
    layer = _layer(batch=1, crop=crop, fg_fraction=1, **param)
    plain = _batch(_net(tmp_path, layer))[0][0]
    if not mirror:
        return plain
    layer["transform_param"]["mirror"] = True
    for seed in range(20):
        got = _batch(_net(tmp_path, layer, seed=seed))[0][0]
        if not np.array_equal(got, plain):
            return got
    raise AssertionError("never mirrored")


def test_warp_is_crop_then_bilinear_resize(tmp_path):
    img = _one_window(tmp_path, 20, 30, (3, 4, 17, 12))        # 15 wide, 9 tall
    got = _warp(tmp_path, crop=8)
    assert got.shape == (3, 8, 8)
    _close(got, _bilinear(img[:, 4:13, 3:18], 8, 8))
    # enlarging works the same way
    img = _one_window(tmp_path, 20, 30, (10, 10, 13, 12), seed=1)
    _close(_warp(tmp_path, crop=9), _bilinear(img[:, 10:13, 10:14], 9, 9))
    # the whole image, same size: the pixels themselves
    img = _one_window(tmp_path, 6, 6, (0, 0, 5, 5))
    np.testing.assert_array_equal(_warp(tmp_path, crop=6), img)


def test_mirror_flips_the_warped_window(tmp_path):
    img = _one_window(tmp_path, 20, 30, (3, 4, 17, 12))
    _close(_warp(tmp_path, crop=8, mirror=True), _bilinear(img[:, 4:13, 3:18], 8, 8)[:, :, ::-1])


def test_context_pad_grows_the_window(tmp_path):
    # an 8×8 window centred at (12, 10); crop 10, context_pad 1: grown by 10/8 to 11×11
    img = _one_window(tmp_path, 30, 40, (8, 6, 15, 13))
    got = _warp(tmp_path, crop=10, context_pad=1)
    _close(got, _bilinear(img[:, 5:16, 7:18], 10, 10))


def test_context_cut_by_the_border_is_zero_padding(tmp_path):
    # the window at the top-left corner grows to -1..9: one column and row are outside the
    # image; the 10 inside pixels warp to round(10 · 10/11) = 9, after round(1 · 10/11) = 1
    # pixel of padding (on the right instead when mirrored)
    img = _one_window(tmp_path, 30, 40, (0, 0, 7, 7))
    got = _warp(tmp_path, crop=10, context_pad=1)
    want = np.zeros((3, 10, 10))
    want[:, 1:, 1:] = _bilinear(img[:, 0:10, 0:10], 9, 9)
    _close(got, want)
    assert (got[:, 0, :] == 0).all() and (got[:, :, 0] == 0).all()
    mirrored = _warp(tmp_path, crop=10, mirror=True, context_pad=1)
    want_m = np.zeros((3, 10, 10))
    want_m[:, 1:, :9] = _bilinear(img[:, 0:10, 0:10], 9, 9)[:, :, ::-1]
    _close(mirrored, want_m)
    assert (mirrored[:, :, 9] == 0).all()


def test_square_mode_widens_the_shorter_side(tmp_path):
    # 4 wide, 8 tall, centre (12, 9): square 8×8 about the centre -> columns 8..16, rows 5..13
    img = _one_window(tmp_path, 30, 40, (10, 5, 13, 12))
    got = _warp(tmp_path, crop=8, crop_mode="square")
    _close(got, _bilinear(img[:, 5:14, 8:17], 8, 8))
    warped = _warp(tmp_path, crop=8)                          # warp: the window alone
    _close(warped, _bilinear(img[:, 5:13, 10:14], 8, 8))


def test_warp_geometry_matches_caffes_float32_rounding():
    from netspec.layers.window_data import warp_geometry

    # crop 227, context_pad 16 (the pascal fine-tuning net) on a 500×375 image
    g = warp_geometry((100, 50, 299, 249), 375, 500, 227, 16)
    # context_scale = 227/195; half = 100; centre 200, 150 -> 200 ± 116.41 -> 84..316, 34..266
    assert (g.x1, g.y1, g.x2, g.y2) == (84, 34, 316, 266)
    assert (g.height, g.width, g.pad_h, g.pad_w) == (227, 227, 0, 0)
    # C's round: halves away from zero
    from netspec.layers.window_data import _round
    assert [_round(v) for v in (0.5, 1.5, -0.5, -1.5, 2.4999)] == [1, 2, -1, -2, 2]


# -- mean, scale ---------------------------------------------------------------------------
def _pb2():
    pytest.importorskip("google.protobuf", reason="mean files need protobuf")
    from netspec.caffe import pb2

    return pb2()


def _mean_file(path, mean: np.ndarray):
    blob = _pb2().BlobProto()
    blob.shape.dim.extend([1, *mean.shape])
    blob.data.extend(mean.astype(np.float32).ravel().tolist())
    path.write_bytes(blob.SerializeToString())


def test_mean_file_central_crop_at_the_output_position(tmp_path):
    img = _one_window(tmp_path, 30, 40, (0, 0, 7, 7))
    mean = np.random.default_rng(3).uniform(0, 255, (3, 14, 14)).astype(np.float32)
    _mean_file(tmp_path / "mean.binaryproto", mean)
    crop = mean[:, 2:12, 2:12]                               # (14 - 10) / 2 = 2
    tp = {"mean_file": "mean.binaryproto"}
    net = _net(tmp_path, {**_layer(batch=1, crop=10, fg_fraction=1, context_pad=1, scale=0.5),
                          "transform_param": {"crop_size": 10, **tp}})
    got = _batch(net)[0][0]
    warped = np.zeros((3, 10, 10), np.float32)
    warped[:, 1:, 1:] = _bilinear(img[:, 0:10, 0:10], 9, 9)
    # padding stays 0 (not −mean); elsewhere (pixel − mean) · scale in float32
    assert (got[:, 0, :] == 0).all() and (got[:, :, 0] == 0).all()
    inner = got[:, 1:, 1:]
    want = (warped[:, 1:, 1:] - crop[:, 1:, 1:]) * np.float32(0.5)
    assert np.abs(inner - want).max() <= 0.5 + 1e-4
    # the exact float32 arithmetic, given the layer's own warped pixels
    pixels = inner / np.float32(0.5) + crop[:, 1:, 1:]
    np.testing.assert_array_equal((np.rint(pixels) - crop[:, 1:, 1:]) * np.float32(0.5), inner)


def test_mean_is_not_mirrored_with_the_window(tmp_path):
    img = _one_window(tmp_path, 12, 12, (0, 0, 7, 7))
    mean = np.random.default_rng(4).uniform(0, 255, (3, 8, 8)).astype(np.float32)
    _mean_file(tmp_path / "m.binaryproto", mean)
    for seed in range(20):
        net = _net(tmp_path, {**_layer(batch=1, crop=8, fg_fraction=1),
                              "transform_param": {"crop_size": 8, "mirror": True,
                                                  "mean_file": "m.binaryproto"}}, seed=seed)
        got = _batch(net)[0][0]
        flipped = img[:, :8, :8][:, :, ::-1].astype(np.float32)
        if np.array_equal(got, flipped - mean):
            return
        np.testing.assert_array_equal(got, img[:, :8, :8].astype(np.float32) - mean)
    raise AssertionError("never mirrored")


def test_mean_value_and_scale(tmp_path):
    img = _one_window(tmp_path, 8, 8, (0, 0, 7, 7))
    net = _net(tmp_path, _layer(batch=1, crop=8, fg_fraction=1, scale=0.25,
                                transform={"mean_value": [10, 20, 30]}))
    want = (img.astype(np.float32) - np.float32([10, 20, 30])[:, None, None]) * np.float32(0.25)
    np.testing.assert_array_equal(_batch(net)[0][0], want)
    one = _net(tmp_path, _layer(batch=1, crop=8, fg_fraction=1, transform={"mean_value": [7]}),
               name="one.yaml")
    np.testing.assert_array_equal(_batch(one)[0][0], img.astype(np.float32) - 7)


# -- files -----------------------------------------------------------------------------------
def test_root_folder_cache_images_and_free_layout(tmp_path):
    img = _random_image(tmp_path / "data" / "imgs" / "a.png", 9, 9)
    # tokens may be split over lines any way (C++ >>), and the list may sit in another folder
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "w.txt").write_text("# 0 a.png\n3 9 9 2\n1 0.9 0 0\n8 8 0 0.1 0 0 3 3\n")
    plain = _net(tmp_path, _layer("lists/w.txt", batch=2, crop=9, fg_fraction=0.5,
                                  root_folder="data/imgs/"))
    cached = _net(tmp_path, _layer("lists/w.txt", batch=2, crop=9, fg_fraction=0.5,
                                   root_folder="data/imgs/", cache_images=True), name="c.yaml")
    a, b = _batch(plain), _batch(cached)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], [0, 1])
    np.testing.assert_array_equal(a[0][1], img)
    _close(a[0][0], _bilinear(img[:, :4, :4], 9, 9))


def test_grey_images_are_read_in_colour(tmp_path):
    g = np.arange(36, dtype=np.uint8).reshape(6, 6) * 7
    Image.fromarray(g).save(tmp_path / "g.png")
    _window_file(tmp_path / "windows.txt", [("g.png", 6, 6, [(2, 1.0, 0, 0, 5, 5)])])
    data, labels = _batch(_net(tmp_path, _layer(batch=1, crop=6, fg_fraction=1)))
    np.testing.assert_array_equal(data[0], np.stack([g, g, g]))
    assert labels.dtype == np.float32 and labels[0] == 2


# -- errors ----------------------------------------------------------------------------------
def _error(tmp_path, layer, cls=DataError, forward=False) -> str:
    with pytest.raises(cls) as e:
        net = _net(tmp_path, layer)
        if forward:
            net.forward()
    return str(e.value)


@pytest.mark.parametrize("text, line, words", [
    ("", None, "is empty"),
    ("# 0\na.png\n3 8 8\n1\n1 0.9 0 0 x 4\n", 5, "x2 must be an integer, got 'x'"),
    ("# 0\na.png\n3 8 8\n1\n1 high 0 0 4 4\n", 5, "overlap must be a number"),
    ("# 0\na.png\n3 8 8\n2\n1 0.9 0 0 4 4\n", 5, "ends where window 1 of image 0 needs"),
    ("# 1\na.png\n3 8 8\n0\n", 1, "numbered 0, 1, 2"),
    ("0\na.png\n3 8 8\n0\n", 1, "expected '# 0'"),
    ("# 0\na.png\n3 8 8\n1\n1 0.9 5 0 4 4\n", 5, "is empty (x2 and y2 are inclusive"),
    ("# 0\na.png\n3 8 8\n2\n1 0.9 0 0 4 4\n0 0.8 0 0 4 4\n", 6, "class index must be > 0"),
    ("# 0\na.png\n1 8 8\n1\n1 0.9 0 0 4 4\n", 2, "has 1 channels"),
    ("# 0\nmissing.png\n3 8 8\n1\n1 0.9 0 0 4 4\n", 2, "image 'missing.png' not found"),
])
def test_bad_window_file_names_file_and_line(tmp_path, text, line, words):
    _random_image(tmp_path / "a.png", 8, 8)
    (tmp_path / "windows.txt").write_text(text)
    msg = _error(tmp_path, _layer(batch=1, fg_fraction=1))
    assert "layer 'win' (WindowData)" in msg and words in msg, msg
    where = f"windows.txt:{line}:" if line else "windows.txt:"
    assert where in msg, msg


def test_setup_errors(tmp_path):
    _random_image(tmp_path / "a.png", 8, 8)
    _window_file(tmp_path / "windows.txt", [("a.png", 8, 8, [(1, 0.9, 0, 0, 4, 4)])])
    msg = _error(tmp_path, _layer(batch=4))                   # fg_fraction 0.25: 3 bg needed
    assert "no background windows (overlap < bg_threshold 0.5)" in msg and "takes 3" in msg
    assert "window file not found" in _error(tmp_path, _layer("nope.txt"))

    no_crop = _layer(batch=1, fg_fraction=1)
    no_crop["transform_param"] = {}
    assert "crop_size > 0" in _error(tmp_path, no_crop, SpecError)
    msg = _error(tmp_path, _layer(batch=1, fg_fraction=1, transform={"scale": 0.5}), SpecError)
    assert "transform_param.scale" in msg and "window_data_param.scale" in msg
    msg = _error(tmp_path, _layer(batch=1, crop=8, fg_fraction=1, context_pad=4), SpecError)
    assert "context_pad 4" in msg
    _mean_file(tmp_path / "small.binaryproto", np.zeros((3, 6, 6)))
    msg = _error(tmp_path, _layer(batch=1, fg_fraction=1, transform={
        "mean_file": "small.binaryproto"}))
    assert "the mean image is 3×6×6" in msg
    msg = _error(tmp_path, _layer(batch=1, fg_fraction=1, transform={
        "mean_file": "small.binaryproto", "mean_value": [1]}), SpecError)
    assert "not both" in msg
    msg = _error(tmp_path, _layer(batch=1, fg_fraction=1, transform={"mean_value": [1, 2]}),
                 SpecError)
    assert "2 mean_value(s)" in msg


def test_window_outside_the_image_is_an_error_naming_its_line(tmp_path):
    _random_image(tmp_path / "a.png", 8, 8)
    _window_file(tmp_path / "windows.txt", [("a.png", 8, 8, [(1, 0.9, 2, 2, 8, 5)])])
    msg = _error(tmp_path, _layer(batch=1, fg_fraction=1), forward=True)
    assert "windows.txt:7:" in msg and "the window 2 2 8 5 does not fit image" in msg
    assert "(8×8" in msg
    # with context padding the grown window is clipped to the image instead
    _net(tmp_path, _layer(batch=1, fg_fraction=1, crop=8, context_pad=1),
         name="pad.yaml").forward()


def test_corrupt_image_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    _window_file(tmp_path / "windows.txt", [("bad.png", 8, 8, [(1, 0.9, 0, 0, 4, 4)])])
    msg = _error(tmp_path, _layer(batch=1, fg_fraction=1), forward=True)
    assert "cannot read image" in msg and "bad.png" in msg and "line 2" in msg


def test_converted_v1_window_data_layer(tmp_path):
    """A V1 WINDOW_DATA layer converts; the det_* style fields land in window_data_param."""
    _pb2()
    from netspec.caffe import prototxt as ptx
    from netspec.caffe.port import net_yaml
    from netspec.spec import loads_net

    img = _one_window(tmp_path, 10, 10, (0, 0, 9, 9))
    src = tmp_path / "net.prototxt"
    src.write_text('name: "x" layers { name: "w" type: WINDOW_DATA top: "data" top: "label" '
                   'window_data_param { source: "windows.txt" batch_size: 1 fg_fraction: 1 '
                   'crop_size: 10 context_pad: 0 crop_mode: "warp" } }')
    _, msg, _ = ptx.read(src)
    text, data, _, _ = net_yaml(msg, str(src))
    assert data["layer"][0]["transform_param"] == {"crop_size": 10}
    net = Net(loads_net(text, str(tmp_path / "net.yaml")), "TRAIN", F32)
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data[0], img)
