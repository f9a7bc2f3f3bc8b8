"""SSD's AnnotatedData layer: images and their boxes from a .npz or an LMDB of AnnotatedDatum.

References that are not the code under test: the boxes written into the sources by the test
(their rows, item by item, worked out here), SSD's rules for a whole-image transform (clip to
the image, drop boxes outside it, emit constraints, mirror x → 1 − x) applied by hand, and
OpenCV-equivalent resizing through ``netspec.data.image_list.resize_linear`` (itself checked
against cv2.resize in tests/test_caffe_data.py).
"""

from __future__ import annotations

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
    ({"distort_param": {"brightness_prob": 0.5, "brightness_delta": 32}}, None,
     "transform_param.distort_param"),
    ({"expand_param": {"prob": 0.5, "max_expand_ratio": 4}}, None, "transform_param.expand_param"),
    ({"noise_param": {"prob": 0.1}}, None, "transform_param.noise_param"),
    ({"crop_size": 2}, None, "transform_param.crop_size"),
    ({"resize_param": {"height": 4, "width": 4, "resize_mode": "FIT_SMALL_SIZE"}}, None,
     "transform_param.resize_param.resize_mode"),
    ({"resize_param": {"height": 4, "width": 4, "interp_mode": ["LINEAR", "AREA"]}}, None,
     "transform_param.resize_param.interp_mode"),
    (None, {"annotated_data_param": {"batch_sampler": [
        {"max_sample": 1, "max_trials": 1},
        {"sampler": {"min_scale": 0.3, "max_scale": 1.0}, "max_trials": 50}]}},
     "annotated_data_param.batch_sampler"),
    (None, {"annotated_data_param": {"yolo_data_type": 1}}, "annotated_data_param.yolo_data_type"),
])
def test_random_parts_of_ssds_transform_are_refused_naming_the_field(tmp_path, transform, extra,
                                                                     field):
    src = write_npz(tmp_path / "a.npz", images(2), ROWS[:2])
    with pytest.raises(SpecError) as e:
        data_net(src, transform=transform, extra=extra)
    assert e.value.field == field


def test_identity_settings_of_the_random_fields_are_accepted(tmp_path):
    src = write_npz(tmp_path / "a.npz", images(2), ROWS[:2])
    net = data_net(src, transform={"distort_param": {"brightness_delta": 32},
                                   "expand_param": {"prob": 0.0, "max_expand_ratio": 4},
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
