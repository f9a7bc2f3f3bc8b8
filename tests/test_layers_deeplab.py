"""DeepLab v2's layers (deeplab-public-ver2, as hszhao/PSPNet carries them): ImageSegData with
DeepLab's transform, SegAccuracy, MatWrite and MatRead.

References: ImageSegData against a per-image loop written from the fork's
``DataTransformer::TransformImgAndSeg`` with OpenCV's own imread/resize (the same random draws
in the fork's order); SegAccuracy against a confusion matrix counted pixel by pixel and the
fork's ``ConfusionMatrix`` formulas; MatWrite against ``scipy.io.loadmat``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from gradcheck import make_layer, run_forward

from netspec.backend import Backend
from netspec.errors import DataError, NetspecError, SpecError

F32 = Backend(np, np.float32)
MEAN = [104.0, 117.0, 123.0]


def write_pairs(folder, sizes, seed=0, classes=5):
    """PNG images (colour) and label images (grey, values < classes or 255) of ``sizes``
    (H, W) in ``folder``; returns the list lines 'image label'."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    lines = []
    for k, (h, w) in enumerate(sizes):
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        seg = rng.integers(0, classes, (h, w), dtype=np.uint8)
        seg[rng.random((h, w)) < 0.1] = 255
        Image.fromarray(rgb).save(folder / f"img{k}.png")
        Image.fromarray(seg).save(folder / f"seg{k}.png")
        lines.append(f"img{k}.png seg{k}.png")
    return lines


def seg_layer(tmp_path, lines, phase="TRAIN", tops=("data", "label", "data_dim"), **fields):
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(lines) + "\n")
    image = {"source": str(listing), "root_folder": f"{tmp_path}/",
             "batch_size": fields.pop("batch_size", 2), "label_type": fields.pop("label_type", "PIXEL")}
    image.update(fields.pop("image", {}))
    spec = {"type": "ImageSegData", "top": list(tops), "transform_param": fields,
            "image_data_param": image}
    return make_layer(spec, [], phase=phase, backend=F32)


def reference_batch(tmp_path, lines, rng, phase, crop, factors, mirror, mean, scale,
                    ignore=255, label_type="PIXEL"):
    """The fork's TransformImgAndSeg per image, with OpenCV: (data, label, data_dim)."""
    cv2 = pytest.importorskip("cv2")
    data, labels, dims = [], [], []
    for line in lines:
        words = line.split()
        img = cv2.imread(str(tmp_path / words[0]), cv2.IMREAD_COLOR)
        if label_type == "PIXEL":
            seg = cv2.imread(str(tmp_path / words[1]), cv2.IMREAD_GRAYSCALE)
        else:
            value = ignore if label_type == "NONE" else int(words[1])
            seg = np.full(img.shape[:2], value, np.uint8)
        dims.append([min(crop[0], img.shape[0]), min(crop[1], img.shape[1])])
        do_mirror = mirror and rng.integers(2)
        if factors:
            s = factors[rng.integers(len(factors))]
            if s != 1:
                h, w = int(img.shape[0] * s), int(img.shape[1] * s)
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
                seg = cv2.resize(seg, (w, h), interpolation=cv2.INTER_NEAREST)
        img = img.astype(np.float64)
        ph, pw = max(crop[0] - img.shape[0], 0), max(crop[1] - img.shape[1], 0)
        img = np.stack([np.pad(img[:, :, c], ((0, ph), (0, pw)), constant_values=mean[c])
                        for c in range(3)], axis=2)
        seg = np.pad(seg, ((0, ph), (0, pw)), constant_values=ignore)
        if phase == "TRAIN":
            h0 = rng.integers(img.shape[0] - crop[0] + 1)
            w0 = rng.integers(img.shape[1] - crop[1] + 1)
        else:
            h0, w0 = (img.shape[0] - crop[0]) // 2, (img.shape[1] - crop[1]) // 2
        img = img[h0:h0 + crop[0], w0:w0 + crop[1]]
        seg = seg[h0:h0 + crop[0], w0:w0 + crop[1]]
        out = np.empty((3,) + crop, np.float32)
        lab = np.empty((1,) + crop, np.float32)
        for h in range(crop[0]):
            for w in range(crop[1]):
                tw = crop[1] - 1 - w if do_mirror else w
                for c in range(3):
                    out[c, h, tw] = (np.float32(img[h, w, c]) - np.float32(mean[c])) * np.float32(scale)
                lab[0, h, tw] = seg[h, w]
        data.append(out)
        labels.append(lab)
    return np.stack(data), np.stack(labels), np.asarray(dims, np.float32).reshape(-1, 1, 1, 2)


def test_image_seg_data_train_scales_pads_crops_and_mirrors_as_the_fork(tmp_path):
    """TRAIN: random scale (0.5, 0.75, 1), padding to the 24 × 24 crop (image with the mean,
    label with 255), random crop and mirror; images of three sizes, batches wrapping around."""
    lines = write_pairs(tmp_path, [(30, 26), (20, 40), (36, 36)])
    factors = [0.5, 0.75, 1.0]
    layer, shapes = seg_layer(tmp_path, lines, crop_height=24, crop_width=24, mirror=True,
                              mean_value=MEAN, scale=0.5, scale_factors=factors)
    assert shapes == [(2, 3, 24, 24), (2, 1, 24, 24), (2, 1, 1, 2)]
    rng = copy.deepcopy(layer.rng)
    for batch in ([lines[0], lines[1]], [lines[2], lines[0]], [lines[1], lines[2]]):
        _, top = run_forward(layer, [], shapes)
        want = reference_batch(tmp_path, batch, rng, "TRAIN", (24, 24), factors, True, MEAN, 0.5)
        for got, ref in zip(top, want):
            np.testing.assert_allclose(got.data, ref, rtol=0, atol=1e-5)
    assert (top[1].data == 255).any()            # padding and ignored pixels reach the label


@pytest.mark.parametrize("label_type", ["NONE", "IMAGE"])
def test_image_seg_data_test_takes_the_centre_and_labels_without_label_images(tmp_path, label_type):
    """TEST: the centre crop of the padded image; label_type NONE gives ignore_label
    everywhere, IMAGE the line's class."""
    write_pairs(tmp_path, [(30, 16), (12, 40)])
    lines = [f"img0.png {3 if label_type == 'IMAGE' else ''}", "img1.png 7"]
    layer, shapes = seg_layer(tmp_path, lines, phase="TEST", label_type=label_type,
                              crop_size=20, mean_value=MEAN, image={"ignore_label": 254})
    _, top = run_forward(layer, [], shapes)
    want = reference_batch(tmp_path, lines, np.random.default_rng(0), "TEST", (20, 20), [],
                           False, MEAN, 1.0, ignore=254, label_type=label_type)
    for got, ref in zip(top, want):
        np.testing.assert_allclose(got.data, ref, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(top[2].data.reshape(2, 2), [[20, 16], [12, 20]])
    assert top[0].data[0, :, :, 16:].max() == 0 and top[1].data[0, 0, :, 16:].min() == 254


def test_image_seg_data_without_a_crop_needs_images_of_one_size(tmp_path):
    lines = write_pairs(tmp_path, [(10, 12), (10, 12), (11, 12)])
    layer, shapes = seg_layer(tmp_path, lines, tops=("data", "label"), mean_value=MEAN)
    assert shapes == [(2, 3, 10, 12), (2, 1, 10, 12)]
    run_forward(layer, [], shapes)
    with pytest.raises(DataError, match="first one's size"):
        run_forward(layer, [], shapes)


@pytest.mark.parametrize("fields, match", [
    ({"crop_size": 8, "crop_height": 8, "crop_width": 8}, "crop_size, or both"),
    ({"crop_height": 8}, "crop_size, or both"),
    ({"scale_factors": [0.5, 0]}, "scale_factors must be positive"),
    ({"mean_file": "mean.binaryproto"}, "does not support a mean file"),
    ({"image": {"crop_size": 8}}, "reads transform_param.crop_size"),
])
def test_image_seg_data_refuses_what_the_fork_refuses(tmp_path, fields, match):
    lines = write_pairs(tmp_path, [(10, 12)])
    with pytest.raises(SpecError, match=match):
        seg_layer(tmp_path, lines, **fields)


def test_deeplab_fields_are_refused_by_other_data_layers(tmp_path):
    """label_type on ImageData and scale_factors on Data would be ignored: refused."""
    (tmp_path / "l.txt").write_text("a.png 0\n")
    with pytest.raises(SpecError, match="ImageSegData"):
        make_layer({"type": "ImageData", "top": ["d", "l"], "image_data_param": {
            "source": str(tmp_path / "l.txt"), "label_type": "PIXEL"}}, [])
    with pytest.raises(SpecError, match="scale_factors is a field of DeepLab"):
        make_layer({"type": "Data", "top": ["d", "l"], "transform_param": {"scale_factors": [1]},
                    "data_param": {"source": "builtin:mnist", "batch_size": 2}}, [])


# -- SegAccuracy -----------------------------------------------------------------------------

def confusion_reference(scores, labels, ignore):
    n, c, h, w = scores.shape
    m = np.zeros((c, c), np.int64)
    for i in range(n):
        for y in range(h):
            for x in range(w):
                t = int(labels[i, 0, y, x])
                if t in ignore:
                    continue
                best = max(range(c), key=lambda k: (scores[i, k, y, x], k))
                m[t, best] += 1
    return m


def fork_measures(m):
    """The fork's ConfusionMatrix: accuracy(), avgRecall(false), avgJaccard()."""
    c = len(m)
    total = m.sum()
    acc = np.trace(m) / total if total else 0.0
    recalls = [m[i, i] / m[i].sum() for i in range(c) if m[i].sum() > 0]
    recall = sum(recalls) / len(recalls) if recalls else 0.0
    jac = 0.0
    for i in range(c):
        inter, union = m[i, i], m[i].sum() + m[:, i].sum() - m[i, i]
        jac += 1.0 if inter == union else inter / union
    return [acc, recall, jac / c]


def test_seg_accuracy_matches_a_pixel_by_pixel_confusion_matrix():
    """Accuracy, mean recall over present classes, mean IoU (absent classes count 1); ties go
    to the highest class; ignored labels are skipped; reset: false accumulates."""
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, (2, 5, 4, 6)).astype(np.float32)    # many ties
    labels = rng.integers(0, 4, (2, 1, 4, 6)).astype(np.float32)    # class 4 never a label
    labels[0, 0, 0, :3] = 255
    labels[1, 0, 2, 1] = 254
    spec = {"type": "SegAccuracy", "seg_accuracy_param": {"ignore_label": [255, 254]}}
    layer, shapes = make_layer(spec, [scores.shape, labels.shape], backend=F32)
    assert shapes == [(1, 1, 1, 3)]
    m = confusion_reference(scores, labels, {255, 254})
    _, top = run_forward(layer, [scores, labels], shapes)
    np.testing.assert_allclose(top[0].data.reshape(3), fork_measures(m), rtol=1e-6)
    _, top = run_forward(layer, [scores, labels], shapes)           # reset: the same again
    np.testing.assert_allclose(top[0].data.reshape(3), fork_measures(m), rtol=1e-6)
    spec["seg_accuracy_param"]["reset"] = False
    layer, shapes = make_layer(spec, [scores.shape, labels.shape], backend=F32)
    labels2 = rng.integers(0, 5, labels.shape).astype(np.float32)
    run_forward(layer, [scores, labels], shapes)
    _, top = run_forward(layer, [scores, labels2], shapes)
    m2 = m + confusion_reference(scores, labels2, {255, 254})
    np.testing.assert_allclose(top[0].data.reshape(3), fork_measures(m2), rtol=1e-6)


def test_seg_accuracy_refuses_labels_outside_the_classes():
    scores = np.zeros((1, 3, 2, 2), np.float32)
    labels = np.array([[[[0, 1], [3, 255]]]], np.float32)
    layer, shapes = make_layer({"type": "SegAccuracy", "seg_accuracy_param": {
        "ignore_label": [255]}}, [scores.shape, labels.shape], backend=F32)
    with pytest.raises(NetspecError, match=r"labels \(but ignore_label\) must be in \[0, 3\); got \[3\]"):
        run_forward(layer, [scores, labels], shapes)


# -- MatWrite / MatRead --------------------------------------------------------------------------

def test_mat_write_writes_the_forks_files_and_mat_read_reads_them_back(tmp_path):
    """MatWrite: one file per bottom every `period` forwards, named from the list (strip
    characters cut), 'data' of dimensions (W, H, C, N); MatRead reads them back."""
    sio = pytest.importorskip("scipy.io")
    (tmp_path / "ids.txt").write_text("a.jpg\nb.jpg\nc.jpg\n")
    spec = {"type": "MatWrite", "mat_write_param": {
        "prefix": f"{tmp_path}/out/", "source": str(tmp_path / "ids.txt"), "strip": 4, "period": 2}}
    rng = np.random.default_rng(0)
    x = [rng.standard_normal((1, 3, 4, 5)).astype(np.float32) for _ in range(3)]
    y = rng.standard_normal((1, 2, 4, 5)).astype(np.float32)
    layer, _ = make_layer(spec, [x[0].shape, y.shape], backend=F32)
    for k in range(3):
        run_forward(layer, [x[k], y], [])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a_blob_0.mat", "a_blob_1.mat", "c_blob_0.mat", "c_blob_1.mat"]
    got = sio.loadmat(tmp_path / "out" / "c_blob_0.mat")["data"]
    assert got.dtype == np.float32 and got.shape == (5, 4, 3, 1)
    np.testing.assert_array_equal(got, x[2].transpose(3, 2, 1, 0))
    with pytest.raises(DataError, match="more iterations than the list has names"):
        run_forward(layer, [x[0], y], [])
        run_forward(layer, [x[0], y], [])

    (tmp_path / "read.txt").write_text("c\na\n")
    spec = {"type": "MatRead", "top": ["s", "t"], "mat_read_param": {
        "prefix": f"{tmp_path}/out/", "source": str(tmp_path / "read.txt"), "batch_size": 3}}
    layer, shapes = make_layer(spec, [], backend=F32)
    assert shapes == [(3, 3, 4, 5), (3, 2, 4, 5)]
    _, top = run_forward(layer, [], shapes)
    np.testing.assert_array_equal(top[0].data, np.concatenate([x[2], x[0], x[2]]))
    np.testing.assert_array_equal(top[1].data, np.concatenate([y, y, y]))


def test_mat_write_names_files_by_iteration_without_a_list(tmp_path):
    sio = pytest.importorskip("scipy.io")
    spec = {"type": "MatWrite", "mat_write_param": {"prefix": f"{tmp_path}/f_"}}
    x = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    layer, _ = make_layer(spec, [x.shape], backend=F32)
    run_forward(layer, [x], [])
    run_forward(layer, [x + 1], [])
    got = sio.loadmat(tmp_path / "f_iter_1_blob_0.mat")["data"]
    np.testing.assert_array_equal(got, (x + 1).transpose(3, 2, 1, 0))


def test_label_scaling_uses_opencvs_nearest_indices():
    """ImageSegData scales label images with INTER_NEAREST; OpenCV computes the source index as
    ⌊d·(1/(dst/src))⌋, which differs from ⌊d·src/dst⌋ at exact multiples (30 → 22: row 11)."""
    cv2 = pytest.importorskip("cv2")
    from netspec.data.image_list import resize_nearest
    for src in range(1, 61):
        a = np.arange(src, dtype=np.uint8).reshape(src, 1).repeat(2, 1)
        for dst in range(1, 61):
            want = cv2.resize(a, (2, dst), interpolation=cv2.INTER_NEAREST)[:, 0]
            np.testing.assert_array_equal(resize_nearest(a[None], dst, 2)[0, :, 0], want)
