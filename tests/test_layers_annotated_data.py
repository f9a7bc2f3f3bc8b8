"""SSD's AnnotatedData layer: images and their boxes from a .npz or an LMDB of AnnotatedDatum.

References that are not the code under test: the boxes written into the sources by the test
(their rows, item by item, worked out here), SSD's rules for a whole-image transform (clip to
the image, drop boxes outside it, emit constraints, mirror x → 1 − x) applied by hand, and
OpenCV-equivalent resizing through ``netspec.data.image_list.resize_linear`` (itself checked
against cv2.resize in tests/test_caffe_data.py).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from detection_data import annotated_lmdb

from netspec.errors import NetspecError, SpecError
from netspec.net import Net
from netspec.spec import parse_net

F = np.float32


def write_npz(path, images, rows):
    np.savez(path, data=np.asarray(images), annotation=np.asarray(rows, np.float32))
    return str(path)


def data_net(source, phase="TRAIN", batch=2, transform=None, extra=None, backend=None):
    layer = {"name": "data", "type": "AnnotatedData", "top": ["data", "label"],
             "data_param": {"source": source, "batch_size": batch, **(backend or {})}}
    if transform is not None:
        layer["transform_param"] = transform
    layer.update(extra or {})
    from netspec.backend import Backend
    return Net(parse_net({"name": "a", "layer": [layer]}), phase, Backend(np, np.float32),
               np.random.default_rng(0))


def images(n, h=4, w=6):
    return (np.arange(n * h * w, dtype=np.uint8).reshape(n, 1, h, w) * 3) % 251


ROWS = [[0, 1, 0, 0.1, 0.1, 0.4, 0.5, 0],
        [0, 2, 1, 0.5, 0.5, 0.9, 0.9, 1],
        [2, 1, 0, 0.2, 0.2, 0.3, 0.3, 0]]          # record 1 has no box


def test_batches_give_images_and_their_boxes_in_record_order(tmp_path):
    src = write_npz(tmp_path / "a.npz", images(3), ROWS)
    net = data_net(src, batch=2, transform={"scale": 0.5})
    assert net.blobs["label"].data.shape == (1, 1, 1, 8)      # SSD's shape at setup
    net.forward()                                              # records 0, 1
    np.testing.assert_array_equal(net.blobs["data"].data, images(3)[:2].astype(F) * 0.5)
    np.testing.assert_allclose(net.blobs["label"].data.reshape(-1, 8), ROWS[:2])
    net.forward()                                              # records 2, 0 (wraps)
    want = [[0] + ROWS[2][1:], [1] + ROWS[0][1:], [1] + ROWS[1][1:]]
    np.testing.assert_allclose(net.blobs["label"].data.reshape(-1, 8), want)


def test_a_batch_without_boxes_is_one_row_of_minus_one(tmp_path):
    src = write_npz(tmp_path / "a.npz", images(3), ROWS)
    net = data_net(src, batch=1)
    net.forward()
    net.forward()                                              # record 1: no box
    np.testing.assert_array_equal(net.blobs["label"].data, np.full((1, 1, 1, 8), -1))


def test_boxes_are_clipped_and_those_outside_dropped_as_ssd(tmp_path):
    rows = [[0, 1, 0, -0.2, 0.1, 0.4, 1.3, 0],     # clipped to [0, 0.1, 0.4, 1]
            [0, 1, 1, 1.0, 0.2, 1.5, 0.6, 0],      # outside (xmin >= 1): dropped
            [0, 1, 2, 0.7, -0.5, 1.4, 0.1, 0],     # centre (1.05, -0.2) outside, overlaps
            [0, 1, 3, 0.3, 0.3, 0.3, 0.8, 0]]      # empty: dropped
    src = write_npz(tmp_path / "a.npz", images(1), rows)
    net = data_net(src, batch=1)
    net.forward()
    np.testing.assert_allclose(net.blobs["label"].data.reshape(-1, 8),
                               [[0, 1, 0, 0, 0.1, 0.4, 1, 0], [0, 1, 2, 0.7, 0, 1, 0.1, 0]])
    net = data_net(src, batch=1, transform={"emit_constraint": {"emit_type": "CENTER"}})
    net.forward()
    np.testing.assert_allclose(net.blobs["label"].data.reshape(-1, 8),
                               [[0, 1, 0, 0, 0.1, 0.4, 1, 0]])
    # MIN_OVERLAP: the image covers box 0 by 0.4·0.9/(0.6·1.2) = 0.5 and box 2 by 0.3·0.1/0.42
    net = data_net(src, batch=1, transform={"emit_constraint": {"emit_type": "MIN_OVERLAP",
                                                                "emit_overlap": 0.3}})
    net.forward()
    np.testing.assert_allclose(net.blobs["label"].data.reshape(-1, 8)[:, 2], [0])


def test_mirror_flips_images_and_boxes_together(tmp_path):
    imgs = images(8)
    rows = [[i, 1, 0, 0.1, 0.2, 0.3 + 0.05 * i, 0.6, 0] for i in range(8)]
    src = write_npz(tmp_path / "a.npz", imgs, rows)
    net = data_net(src, batch=8, transform={"mirror": True})
    net.forward()
    x, lab = net.blobs["data"].data, net.blobs["label"].data.reshape(-1, 8)
    flipped = [not np.array_equal(x[i], imgs[i]) for i in range(8)]
    assert 0 < sum(flipped) < 8
    for i in range(8):
        np.testing.assert_array_equal(x[i], imgs[i][..., ::-1] if flipped[i] else imgs[i])
        want = [1 - rows[i][5], 0.2, 1 - 0.1, 0.6] if flipped[i] else rows[i][3:7]
        np.testing.assert_allclose(lab[i, 3:7], want, rtol=1e-6)
    test_net = data_net(src, phase="TEST", batch=8, transform={"mirror": True})
    test_net.forward()                                        # TEST: never mirrored
    np.testing.assert_array_equal(test_net.blobs["data"].data, imgs)


def test_lmdb_of_annotated_datum_with_warp_resize(tmp_path):
    from netspec.data.image_list import resize_linear
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (3, h, w), dtype=np.uint8) for h, w in ((20, 30), (16, 16))]
    src = annotated_lmdb(tmp_path / "db", [
        (imgs[0], [(3, [(0, (0.1, 0.2, 0.5, 0.6), False), (1, (0.6, 0.1, 0.9, 0.4), True)]),
                   (7, [(0, (0.0, 0.0, 1.0, 1.0), False)])]),
        (imgs[1], [(5, [(4, (0.25, 0.25, 0.75, 0.5), False)])])])
    net = data_net(src, batch=2, backend={"backend": "LMDB"},
                   transform={"resize_param": {"height": 12, "width": 10, "resize_mode": "WARP"}})
    net.forward()
    want = np.stack([resize_linear(im, 12, 10) for im in imgs]).astype(F)
    np.testing.assert_array_equal(net.blobs["data"].data, want)
    np.testing.assert_allclose(net.blobs["label"].data.reshape(-1, 8), [
        [0, 3, 0, 0.1, 0.2, 0.5, 0.6, 0], [0, 3, 1, 0.6, 0.1, 0.9, 0.4, 1],
        [0, 7, 0, 0, 0, 1, 1, 0], [1, 5, 4, 0.25, 0.25, 0.75, 0.5, 0]], rtol=1e-6)
    with pytest.raises(NetspecError, match="resize_param"):    # two sizes, no resize
        data_net(src, batch=2, backend={"backend": "LMDB"})


@pytest.mark.parametrize("transform,extra,field", [
    ({"noise_param": {"prob": 0.1}}, None, "transform_param.noise_param"),
    ({"crop_size": 2}, None, "transform_param.crop_size"),
    ({"resize_param": {"height": 4, "width": 4, "resize_mode": "FIT_SMALL_SIZE"}}, None,
     "transform_param.resize_param.resize_mode"),
    (None, {"annotated_data_param": {"yolo_data_type": 1}},
     "annotated_data_param.yolo_data_jitter"),                     # no resize_param
    # SSD's random transform, set in ways SSD cannot run
    ({"expand_param": {"prob": 0.5, "max_expand_ratio": 4}}, None,
     "transform_param.expand_param"),                              # no resize_param
    (None, {"annotated_data_param": {"batch_sampler": [
        {"max_sample": 1, "max_trials": 1},
        {"sampler": {"min_scale": 0.3, "max_scale": 1.0}, "max_trials": 50}]}},
     "annotated_data_param.batch_sampler"),                        # no resize_param
    ({"resize_param": {"height": 4, "width": 4}}, {"annotated_data_param": {"batch_sampler": [
        {"sampler": {"min_scale": 0.5, "max_scale": 0.3}}]}},
     "annotated_data_param.batch_sampler[0].sampler"),
    ({"resize_param": {"height": 4, "width": 4}}, {"annotated_data_param": {"batch_sampler": [
        {"sampler": {"min_aspect_ratio": 0}}]}}, "annotated_data_param.batch_sampler[0].sampler"),
    ({"distort_param": {"contrast_prob": 0.5, "contrast_lower": 1.5, "contrast_upper": 0.5}},
     None, "transform_param.distort_param.contrast_lower"),
    ({"distort_param": {"brightness_prob": 0.5, "brightness_delta": -3}}, None,
     "transform_param.distort_param.brightness_delta"),
    ({"expand_param": {"max_expand_ratio": 0.5}}, None,
     "transform_param.expand_param.max_expand_ratio"),
    ({"mean_file": "m.binaryproto", "resize_param": {"height": 4, "width": 4},
      "expand_param": {"prob": 0.5, "max_expand_ratio": 2}}, None,
     "transform_param.expand_param"),
])
def test_random_parts_of_ssds_transform_are_refused_naming_the_field(tmp_path, transform, extra,
                                                                     field):
    src = write_npz(tmp_path / "a.npz", images(2), ROWS[:2])
    with pytest.raises(SpecError) as e:
        data_net(src, transform=transform, extra=extra)
    assert e.value.field == field


def test_distortions_of_colour_on_grey_images_are_refused(tmp_path):
    src = write_npz(tmp_path / "a.npz", images(2), ROWS[:2])
    with pytest.raises(NetspecError, match="3-channel") as e:
        data_net(src, transform={"distort_param": {"hue_prob": 0.5, "hue_delta": 18}})
    assert e.value.field == "transform_param.distort_param"
    net = data_net(src, transform={"distort_param": {"brightness_prob": 1,
                                                     "brightness_delta": 10}})
    net.forward()                                     # brightness works on any channels
    assert np.abs(net.blobs["data"].data - images(2)).max() > 0


def test_identity_settings_of_the_random_fields_are_accepted(tmp_path):
    src = write_npz(tmp_path / "a.npz", images(2), ROWS[:2])
    net = data_net(src, transform={"distort_param": {"brightness_delta": 32},
                                   "expand_param": {"prob": 0.0, "max_expand_ratio": 4},
                                   "noise_param": {"prob": 0.0, "hist_eq": True},
                                   "emit_constraint": {"emit_type": "CENTER"}},
                   extra={"annotated_data_param": {"batch_sampler": [{"max_sample": 1,
                                                                      "max_trials": 1}],
                                                   "label_map_file": "labelmap.prototxt"}})
    net.forward()
    np.testing.assert_allclose(net.blobs["label"].data.reshape(-1, 8), ROWS[:2])


def test_other_data_layers_refuse_ssds_transform_fields(tmp_path):
    np.savez(tmp_path / "d.npz", data=images(2), label=np.zeros(2))
    layer = {"name": "d", "type": "Data", "top": ["data", "label"],
             "data_param": {"source": str(tmp_path / "d.npz"), "batch_size": 1},
             "transform_param": {"resize_param": {"height": 4, "width": 4}}}
    from netspec.backend import Backend
    with pytest.raises(SpecError, match="AnnotatedData layer only") as e:
        Net(parse_net({"name": "a", "layer": [layer]}), "TRAIN", Backend(np, np.float32),
            np.random.default_rng(0))
    assert e.value.field == "transform_param.resize_param"


def test_bad_npz_sources_are_named(tmp_path):
    np.savez(tmp_path / "a.npz", data=images(2), label=np.zeros(2))
    with pytest.raises(NetspecError, match="lacks array"):
        data_net(str(tmp_path / "a.npz"))
    np.savez(tmp_path / "b.npz", data=images(2), annotation=np.array([[5, 1, 0, 0, 0, 1, 1, 0]]))
    with pytest.raises(NetspecError, match="record index"):
        data_net(str(tmp_path / "b.npz"))


# -- SSD's random transform, end to end -------------------------------------------------------

SSD_SHAPE = {"min_scale": 0.3, "max_scale": 1.0, "min_aspect_ratio": 0.5, "max_aspect_ratio": 2.0}
SSD_SAMPLERS = [{"max_sample": 1, "max_trials": 1}] + [
    {"sampler": SSD_SHAPE, "sample_constraint": {"min_jaccard_overlap": j}, "max_sample": 1,
     "max_trials": 50} for j in (0.1, 0.3, 0.5, 0.7, 0.9)] + [
    {"sampler": SSD_SHAPE, "sample_constraint": {"max_jaccard_overlap": 1.0}, "max_sample": 1,
     "max_trials": 50}]
SSD_DISTORT = {"brightness_prob": 0.5, "brightness_delta": 32, "contrast_prob": 0.5,
               "contrast_lower": 0.5, "contrast_upper": 1.5, "hue_prob": 0.5, "hue_delta": 18,
               "saturation_prob": 0.5, "saturation_lower": 0.5, "saturation_upper": 1.5,
               "random_order_prob": 0.0}


def rectangles_lmdb(path, n=8, seed=0):
    """Records of different sizes (80–120 px), black, with 1–2 white rectangles, their boxes."""
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(80, 121, 2))
        img = np.zeros((3, h, w), np.uint8)
        annos = []
        for k in range(int(rng.integers(1, 3))):
            x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
            x1, y1 = x0 + int(rng.integers(12, w // 2)), y0 + int(rng.integers(12, h // 2))
            img[:, y0:y1, x0:x1] = 255
            annos.append((k, (x0 / w, y0 / h, x1 / w, y1 / h), False))
        records.append((img, [(1, annos)]))
    return annotated_lmdb(path, records)


def ssd_net(src, seed=0, batch=4, size=32, distort=False, emit=None, samplers=SSD_SAMPLERS,
            mirror=True):
    transform = {"mirror": mirror, "mean_value": [0, 0, 0],
                 "resize_param": {"height": size, "width": size, "resize_mode": "WARP"},
                 "expand_param": {"prob": 0.5, "max_expand_ratio": 3.0}}
    if distort:
        transform["distort_param"] = SSD_DISTORT
    if emit:
        transform["emit_constraint"] = emit
    layer = {"name": "data", "type": "AnnotatedData", "top": ["data", "label"],
             "data_param": {"source": src, "batch_size": batch, "backend": "LMDB"},
             "transform_param": transform,
             "annotated_data_param": {"batch_sampler": samplers}}
    from netspec.backend import Backend
    return Net(parse_net({"name": "a", "layer": [layer]}), "TRAIN", Backend(np, np.float32),
               np.random.default_rng(seed))


def test_random_transform_boxes_follow_the_pixels(tmp_path):
    """Expansion, SSD's seven samplers, the WARP resize and mirror on white rectangles: every
    white pixel of a batch lies in one of its boxes and every box is white inside (3 px
    tolerance: a crop's pixels are truncated to whole canvas pixels, its boxes are not)."""
    net = ssd_net(rectangles_lmdb(tmp_path / "db"), batch=8)
    cropped = expanded = 0
    for _ in range(6):
        net.forward()
        x = net.blobs["data"].data
        rows = net.blobs["label"].data.reshape(-1, 8)
        assert x.shape == (8, 3, 32, 32)
        for i in range(8):
            white = x[i, 0] > 128
            mine = rows[rows[:, 0] == i]
            assert ((mine[:, 3:7] >= 0) & (mine[:, 3:7] <= 1)).all()
            yy, xx = np.mgrid[0:32, 0:32] + 0.5
            near = np.zeros((32, 32), bool)
            for b in mine[:, 3:7] * 32:
                near |= (xx > b[0] - 3) & (xx < b[2] + 3) & (yy > b[1] - 3) & (yy < b[3] + 3)
                inside = (xx > b[0] + 3) & (xx < b[2] - 3) & (yy > b[1] + 3) & (yy < b[3] - 3)
                assert white[inside].all()
            assert not (white & ~near).any()
            cropped += len(mine) and bool((mine[:, 3:7] == 0).any() or
                                          (mine[:, 3:7] == 1).any())
            expanded += int(white.mean() < 0.1)
    assert cropped > 0 and expanded > 0


def test_an_image_whose_crop_keeps_no_box_is_kept_without_boxes(tmp_path):
    """A sampler that must miss every object (max_jaccard_overlap 0): the images stay in the
    batch, their boxes go, and a batch left without boxes gives SSD's row of −1."""
    src = annotated_lmdb(tmp_path / "db", [
        (np.full((3, 60, 60), 50, np.uint8), [(1, [(0, (0.0, 0.0, 0.1, 0.1), False)])])] * 2)
    miss = [{"sampler": SSD_SHAPE, "sample_constraint": {"max_jaccard_overlap": 0.0},
             "max_sample": 1, "max_trials": 50}]
    net = ssd_net(src, batch=2, samplers=miss)
    for _ in range(3):
        net.forward()
        np.testing.assert_array_equal(net.blobs["label"].data, np.full((1, 1, 1, 8), -1))
        assert net.blobs["data"].data.shape == (2, 3, 32, 32)


def test_random_transform_is_reproducible_from_the_seed_and_resumes(tmp_path):
    """Every draw comes from the net's generator: the same seed gives the same batches, and
    a layer restored with the generator's state continues the same stream (as a snapshot
    resumes)."""
    src = rectangles_lmdb(tmp_path / "db")

    def batches(net, k):
        out = []
        for _ in range(k):
            net.forward()
            out.append((net.blobs["data"].data.copy(), net.blobs["label"].data.copy()))
        return out

    a, b = ssd_net(src, 0, distort=True), ssd_net(src, 0, distort=True)
    for (xa, la), (xb, lb) in zip(batches(a, 3), batches(b, 3)):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(la, lb)
    c = ssd_net(src, 1, distort=True)
    assert not np.array_equal(batches(c, 1)[0][0], batches(ssd_net(src, 0, distort=True), 1)[0][0])
    first = ssd_net(src, 5, distort=True)
    batches(first, 2)
    state = first.rng.bit_generator.state
    layer_state = first.layers[0].state_dict()
    rest = batches(first, 2)
    resumed = ssd_net(src, 99, distort=True)
    resumed.rng.bit_generator.state = state
    resumed.layers[0].load_state_dict(layer_state)
    for (xa, la), (xb, lb) in zip(rest, batches(resumed, 2)):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(la, lb)


def test_distortion_changes_colours_not_boxes(tmp_path):
    src = rectangles_lmdb(tmp_path / "db")
    plain = ssd_net(src, 3, samplers=[], mirror=False)
    plain.layers[0].expand_p = None
    distorted = ssd_net(src, 3, samplers=[], distort=True, mirror=False)
    distorted.layers[0].expand_p = None
    plain.forward()
    distorted.forward()
    np.testing.assert_array_equal(plain.blobs["label"].data, distorted.blobs["label"].data)
    assert not np.array_equal(plain.blobs["data"].data, distorted.blobs["data"].data)


def test_expansion_fills_the_canvas_with_the_mean_values(tmp_path):
    """A grey 50 image expanded 4× at most: after the mean is taken off, the canvas is 0 and
    the image 50 − mean, per channel (values between only where the resize blends them)."""
    src = write_npz(tmp_path / "a.npz", np.full((2, 3, 20, 20), 50, np.uint8),
                    [[0, 1, 0, 0.2, 0.2, 0.8, 0.8, 0], [1, 1, 0, 0.2, 0.2, 0.8, 0.8, 0]])
    mean = [10, 20, 130]
    net = data_net(src, transform={"mean_value": mean, "resize_param": {"height": 40, "width": 40},
                                   "expand_param": {"prob": 1, "max_expand_ratio": 4}})
    net.forward()
    x = net.blobs["data"].data
    for c, m in enumerate(mean):
        v = x[:, c]
        assert (v == 0).mean() > 0.01 and (v == 50 - m).mean() > 0.01
        assert v.min() >= min(0, 50 - m) and v.max() <= max(0, 50 - m)
    rows = net.blobs["label"].data.reshape(-1, 8)
    width = rows[:, 5] - rows[:, 3]                           # the boxes shrink with the image
    assert (width <= 0.6 + 1e-6).all() and (width < 0.6 - 1e-3).any()


def test_training_with_the_random_transform_resumes_bit_for_bit(tmp_path):
    """A tiny SSD trained 6 iterations on augmented batches equals one trained 3, snapshotted,
    restored and trained 3 more: the transform's draws resume with the solver's generator."""
    from detection_data import boxes_on_noise, tiny_ssd

    from netspec.backend import Backend
    from netspec.log import CaffeLog
    from netspec.solvers import Solver
    from netspec.spec.solver import SolverParameter

    data, rows = boxes_on_noise(24, 0)
    np.savez(tmp_path / "train.npz", data=data, annotation=rows)
    spec = tiny_ssd(str(tmp_path / "train.npz"), str(tmp_path / "train.npz"), batch=4)
    spec["layer"] = [layer for layer in spec["layer"]
                     if layer.get("include", {}).get("phase") != "TEST"]
    spec["layer"][0]["transform_param"].update({
        "resize_param": {"height": 32, "width": 32, "interp_mode": ["LINEAR", "CUBIC"]},
        "mirror": True, "mean_value": [40], "emit_constraint": {"emit_type": "CENTER"},
        "expand_param": {"prob": 0.5, "max_expand_ratio": 2.0},
        "distort_param": {"brightness_prob": 0.5, "brightness_delta": 32, "contrast_prob": 0.5,
                          "contrast_lower": 0.5, "contrast_upper": 1.5}})
    spec["layer"][0]["annotated_data_param"] = {"batch_sampler": SSD_SAMPLERS}

    def make():
        sp = SolverParameter.model_validate({
            "net": "x", "type": "Adam", "base_lr": 0.003, "momentum": 0.9, "lr_policy": "fixed",
            "random_seed": 3, "snapshot_prefix": str(tmp_path / "snap"), "max_iter": 6})
        return Solver(sp, backend=Backend(np, np.float32), net_param=parse_net(spec),
                      log=CaffeLog(quiet=True))

    def weights(s):
        return {k: p.data.copy() for k, p in s.net.named_params().items()}

    straight = make()
    straight.solve(max_iter=6)
    first = make()
    first.solve(max_iter=3)
    state = first.snapshot()
    resumed = make()
    resumed.restore(state)
    resumed.solve(max_iter=6)
    for k, w in weights(straight).items():
        np.testing.assert_array_equal(weights(resumed)[k], w, err_msg=k)
    assert not all(np.array_equal(w, weights(first)[k]) for k, w in weights(straight).items())


# -- the MobileNet-YOLO fork's YOLO labels (yolo_data_type: 1) and jitter -----------------------

def test_yolo_labels_are_centre_size_rows_per_image(tmp_path):
    """yolo_data_type 1 without a random transform (jitter 0): (N, 1, 300, 5) rows [label − 1,
    x, y, w, h] per image in record order, zeros after; train_diffcult false drops the
    difficult box."""
    src = write_npz(tmp_path / "a.npz", images(3), ROWS)
    ap = {"yolo_data_type": 1, "yolo_data_jitter": 0}
    net = data_net(src, batch=3, extra={"annotated_data_param": ap})
    assert net.blobs["label"].data.shape == (3, 1, 300, 5)
    net.forward()
    got = net.blobs["label"].data
    want = np.zeros((3, 1, 300, 5), F)
    want[0, 0, 0] = [0, 0.25, 0.3, 0.3, 0.4]
    want[0, 0, 1] = [1, 0.7, 0.7, 0.4, 0.4]
    want[2, 0, 0] = [0, 0.25, 0.25, 0.1, 0.1]
    np.testing.assert_allclose(got, want, atol=1e-7)
    net = data_net(src, batch=3, extra={"annotated_data_param": {**ap, "train_diffcult": False}})
    net.forward()
    want[0, 0, 1] = 0
    np.testing.assert_allclose(net.blobs["label"].data, want, atol=1e-7)


def test_jitter_crops_follow_the_forks_draws():
    """GenerateJitterSamples: 20 % whole images, the rest sides in [1 − j, 1] (a fifth of all
    in [1 − j/2, 1]), inside the image."""
    from netspec.data.ssd_augment import jitter_crops
    c = jitter_crops(np.random.default_rng(0), 0.3, 20000)
    w, h = c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]
    whole = (c == [0, 0, 1, 1]).all(1)
    assert abs(whole.mean() - 0.2) < 0.015
    assert (c >= 0).all() and (c <= 1 + 1e-6).all()
    assert (w[~whole] >= 0.7 - 1e-6).all() and (h[~whole] >= 0.7 - 1e-6).all()
    assert abs((w[~whole] >= 0.85).mean() - (0.2 + 0.6 / 2) / 0.8) < 0.02


def test_yolo_jitter_crops_move_boxes_with_the_pixels(tmp_path):
    """White rectangles under the jitter crop and the WARP resize: each YOLO row's box is
    white inside and every white pixel is near a box (3 px tolerance, as the SSD test)."""
    from detection_data import boxes_on_noise
    data, rows = boxes_on_noise(16, 3)
    data[data < 180] = 0
    src = write_npz(tmp_path / "a.npz", data, rows)
    net = data_net(src, batch=8, transform={"resize_param": {"height": 32, "width": 32,
                                                             "resize_mode": "WARP"}},
                   extra={"annotated_data_param": {"yolo_data_type": 1, "yolo_data_jitter": 0.4}})
    moved = 0
    for _ in range(4):
        net.forward()
        x, lab = net.blobs["data"].data, net.blobs["label"].data
        for i in range(8):
            mine = lab[i, 0][lab[i, 0, :, 3] > 0]
            white = x[i, 0] > 100
            yy, xx = np.mgrid[0:32, 0:32] + 0.5
            near = np.zeros((32, 32), bool)
            for _, cx, cy, w, h in mine * [1, 32, 32, 32, 32]:
                b = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
                near |= (xx > b[0] - 3) & (xx < b[2] + 3) & (yy > b[1] - 3) & (yy < b[3] + 3)
                inside = (xx > b[0] + 3) & (xx < b[2] - 3) & (yy > b[1] + 3) & (yy < b[3] - 3)
                assert white[inside].all()
            assert not (white & ~near).any()
        moved += int(not np.allclose(lab, 0))
    assert moved


@pytest.mark.parametrize("ap,words", [
    ({"yolo_data_type": 2}, "yolo_data_type 2"),
    ({"yolo_data_type": 1, "yolo_data_jitter": 1.0}, "yolo_data_jitter 1 must be in [0, 1)"),
    ({"yolo_data_type": 1}, "give transform_param.resize_param"),       # jitter: no size
])
def test_yolo_fields_are_checked(tmp_path, ap, words):
    src = write_npz(tmp_path / "a.npz", images(2), ROWS[:2])
    with pytest.raises(SpecError, match=re.escape(words)):
        data_net(src, extra={"annotated_data_param": ap})
