"""R-FCN's online hard example mining (py-R-FCN's Caffe, Microsoft/caffe; daijifeng001/caffe-rfcn):
SmoothL1LossOHEM and SoftmaxWithLossOHEM (losses with a per-RoI loss top), BoxAnnotatorOHEM
(keeps the hardest RoIs of each image), and the PRE_FIXED loss normalization.

OpenCV implements none of them: forward against NumPy references written here from the fork's
C++ (element loops of ``smooth_L1_loss_ohem_layer``, ``softmax_loss_ohem_layer`` and the CUDA
``box_annotator_ohem_layer`` forward), backward against float64 finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck import blobs_for, check_gradients, labels, make_layer, rand, run_forward
from netspec.errors import NetspecError


# -- SmoothL1LossOHEM --------------------------------------------------------------------------
def smooth_l1_ohem_loop(x, y, w, mode, pre_fixed):
    """The fork's forward, one element at a time: (loss, per-position loss (N, 1, H, W))."""
    n, c, h, wd = x.shape
    errors = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        d = (x[idx] - y[idx]) * (w[idx] if w is not None else 1.0)
        errors[idx] = 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5
    normalizer = {"FULL": n * h * wd, "VALID": n * h * wd, "BATCH_SIZE": n,
                  "PRE_FIXED": pre_fixed, "NONE": 1}[mode]
    per = np.zeros((n, 1, h, wd))
    for i, j, k in np.ndindex(n, h, wd):
        per[i, 0, j, k] = sum(errors[i, ch, j, k] for ch in range(c))
    return errors.sum() / max(normalizer, 1.0), per


def ohem_bottoms(shape, three, seed=0):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=shape) * 2, rng.normal(size=shape) * 2
    bottoms = [x, y]
    if three:
        bottoms.append((rng.random(shape) < 0.6).astype(float))   # R-FCN's 0/1 weights
    d = (x - y) * (bottoms[2] if three else 1)
    bottoms[0] = np.where(np.abs(np.abs(d) - 1) < 0.02, x + 0.05, x)   # away from the kink
    return bottoms


@pytest.mark.parametrize("mode", ["FULL", "VALID", "BATCH_SIZE", "PRE_FIXED", "NONE"])
@pytest.mark.parametrize("three", [False, True])
def test_smooth_l1_loss_ohem_matches_the_forks_loop_and_its_gradient(mode, three):
    shape = (3, 8, 2, 2)
    bottoms = ohem_bottoms(shape, three)
    spec = {"type": "SmoothL1LossOHEM", "top": ["loss", "per_roi"],
            "loss_param": {"normalization": mode, "pre_fixed_normalizer": 5}}
    layer, tops = make_layer(spec, [shape] * len(bottoms))
    assert tops == [(), (3, 1, 2, 2)] and layer.is_loss
    _, top = run_forward(layer, bottoms, tops)
    want, per = smooth_l1_ohem_loop(*bottoms[:2], bottoms[2] if three else None, mode, 5)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12)
    np.testing.assert_allclose(top[1].data, per, rtol=1e-12)
    # the per-RoI top passes no gradient (its loss_weight is 0): weight it 0 here
    check_gradients(layer, bottoms, tops, check_bottoms=[0, 1],
                    top_weights=[np.array(1.7), np.zeros(tops[1])])


def test_smooth_l1_loss_ohem_reads_rfcns_shapes_and_leaves_the_weights_out_of_its_backward():
    """py-R-FCN's bottoms: bbox_pred (R, 8) and 4-D targets (R, 8, 1, 1); the default
    normalization VALID divides by R. As in the fork, backward does not multiply by w: for a
    weight of 2 the gradient is f'(d), not 2·f'(d)."""
    x, y = rand((5, 8), 0) * 0.1, rand((5, 8, 1, 1), 1) * 0.1
    w = np.full((5, 8, 1, 1), 2.0)
    layer, tops = make_layer({"type": "SmoothL1LossOHEM"}, [x.shape, y.shape, w.shape])
    assert tops == [()]
    bottom, top = run_forward(layer, [x, y, w], tops)
    d = 2 * (x - y.reshape(5, 8))                  # all |d| < 1 here
    np.testing.assert_allclose(top[0].data, (0.5 * d * d).sum() / 5, rtol=1e-12)
    top[0].diff = np.ones(())
    layer.backward(top, [True, False, False], bottom)
    np.testing.assert_allclose(bottom[0].diff, d / 5, rtol=1e-12)


def test_smooth_l1_loss_ohem_refuses_bottoms_of_other_shapes():
    with pytest.raises(NetspecError, match=r"bottom 1 \(3, 7\) must have the shape of bottom 0"):
        make_layer({"type": "SmoothL1LossOHEM"}, [(3, 8), (3, 7)])


# -- SoftmaxWithLossOHEM ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["VALID", "PRE_FIXED"])
def test_softmax_with_loss_ohem_per_instance_loss_and_gradient(mode):
    """Tops: SoftmaxWithLoss's loss (normalised; PRE_FIXED by pre_fixed_normalizer), the
    probabilities and each RoI's −log p[label] (0 where the label is ignored), as the fork's
    loop writes them; the gradient is SoftmaxWithLoss's."""
    x = rand((6, 4), 0)
    lab = labels((6,), 4)
    lab[2] = -1
    spec = {"type": "SoftmaxWithLossOHEM", "top": ["loss", "prob", "per_roi"],
            "loss_param": {"ignore_label": -1, "normalization": mode, "pre_fixed_normalizer": 3}}
    layer, tops = make_layer(spec, [x.shape, lab.shape])
    assert tops == [(), (6, 4), (6,)]
    _, top = run_forward(layer, [x, lab], tops)
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    per = np.array([0.0 if lab[i] == -1 else -np.log(p[i, int(lab[i])]) for i in range(6)])
    np.testing.assert_allclose(top[1].data, p, rtol=1e-12)
    np.testing.assert_allclose(top[2].data, per, rtol=1e-12)
    np.testing.assert_allclose(top[0].data, per.sum() / (5 if mode == "VALID" else 3), rtol=1e-12)
    check_gradients(layer, [x, lab], tops, check_bottoms=[0],
                    top_weights=[np.array(0.8), np.zeros(tops[1]), np.zeros(tops[2])])


def test_ohem_losses_refuse_a_loss_weight_on_their_extra_tops():
    """The fork passes gradient from the loss only: a weighted per-RoI top is an error."""
    spec = {"type": "SoftmaxWithLossOHEM", "top": ["loss", "prob", "per_roi"],
            "loss_weight": [1, 0, 0.5]}
    with pytest.raises(NetspecError, match=r"top 2 \('per_roi'\) passes no gradient back"):
        make_layer(spec, [(6, 4), (6,)])
    spec = {"type": "SmoothL1LossOHEM", "top": ["loss", "per_roi"], "loss_weight": [1, 1]}
    with pytest.raises(NetspecError, match="loss_weight must be 0"):
        make_layer(spec, [(6, 4), (6, 4)])


def test_pre_fixed_is_refused_by_the_layers_that_do_not_read_it():
    """PRE_FIXED is read by R-FCN's OHEM losses only; elsewhere one message naming the fork."""
    for spec in ({"type": "SoftmaxWithLoss"}, {"type": "SigmoidCrossEntropyLoss"}):
        spec["loss_param"] = {"normalization": "PRE_FIXED"}
        with pytest.raises(NetspecError, match="normalization PRE_FIXED is R-FCN's .*caffe-rfcn"):
            make_layer(spec, [(4, 3), (4,) if spec["type"] == "SoftmaxWithLoss" else (4, 3)])


# -- BoxAnnotatorOHEM ---------------------------------------------------------------------------
def box_annotator_loop(rois, loss, lab, weights, roi_per_img, ignore_label):
    """The fork's Forward_gpu (run on the host there), RoI by RoI in descending loss."""
    top_labels = np.full(len(loss), float(ignore_label))
    top_weights = np.zeros_like(weights)
    order = sorted(range(len(loss)), key=lambda i: -loss[i])
    left = {}
    for index in order:
        image = int(rois[index, 0])
        left.setdefault(image, roi_per_img)
        if left[image] > 0:
            left[image] -= 1
            top_labels[index] = lab[index]
            top_weights[index] = weights[index]
    return top_labels, top_weights


def test_box_annotator_ohem_keeps_the_hardest_rois_of_each_image():
    rng = np.random.default_rng(0)
    r, k = 40, 8
    rois = np.hstack([rng.integers(0, 2, (r, 1)), rng.uniform(0, 50, (r, 4))])
    loss = rng.random(r)                                     # distinct: one order
    lab = rng.integers(0, 21, r).astype(float)
    weights = (rng.random((r, k)) < 0.5).astype(float)
    spec = {"type": "BoxAnnotatorOHEM", "bottom": ["rois", "loss", "labels", "w"],
            "top": ["labels_ohem", "w_ohem"], "box_annotator_ohem_param": {"roi_per_img": 7}}
    layer, tops = make_layer(spec, [rois.shape, (r, 1, 1, 1), (r,), weights.shape])
    assert tops == [(r, 1, 1, 1), (r, k, 1, 1)] and not layer.has_backward
    _, top = run_forward(layer, [rois, loss.reshape(r, 1, 1, 1), lab, weights], tops)
    want_labels, want_weights = box_annotator_loop(rois, loss, lab, weights, 7, -1)
    np.testing.assert_array_equal(top[0].data.reshape(r), want_labels)
    np.testing.assert_array_equal(top[1].data.reshape(r, k), want_weights)
    kept = top[0].data.reshape(r) != -1
    for image in (0, 1):   # 7 per image, or all of an image that has fewer
        assert kept[rois[:, 0] == image].sum() == min(7, (rois[:, 0] == image).sum())


def test_box_annotator_ohem_errors():
    spec = {"type": "BoxAnnotatorOHEM", "box_annotator_ohem_param": {"roi_per_img": 4}}
    with pytest.raises(NetspecError, match=r"bottom 0 \(rois\) \(6, 4\) must be \(R, 5\)"):
        make_layer(spec, [(6, 4), (6,), (6,), (6, 8)])
    with pytest.raises(NetspecError, match=r"bottom 2 \(labels\) \(5,\) must hold one value per RoI"):
        make_layer(spec, [(6, 5), (6,), (5,), (6, 8)])
    with pytest.raises(Exception, match="roi_per_img"):
        make_layer({"type": "BoxAnnotatorOHEM", "box_annotator_ohem_param": {}},
                   [(6, 5), (6,), (6,), (6, 8)])
    with pytest.raises(Exception, match="roi_per_img"):
        make_layer({"type": "BoxAnnotatorOHEM", "box_annotator_ohem_param": {"roi_per_img": 0}},
                   [(6, 5), (6,), (6,), (6, 8)])


def test_box_annotator_ohem_runs_on_blobs_of_another_dtype():
    """float32 blobs (the net's dtype) give the same selection."""
    from netspec.backend import Backend
    rng = np.random.default_rng(1)
    rois = np.hstack([np.zeros((10, 1)), rng.uniform(0, 9, (10, 4))]).astype(np.float32)
    loss = rng.random(10).astype(np.float32)
    spec = {"type": "BoxAnnotatorOHEM", "box_annotator_ohem_param": {"roi_per_img": 3,
                                                                     "ignore_label": 0}}
    layer, tops = make_layer(spec, [(10, 5), (10,), (10,), (10, 4)],
                             backend=Backend(np, np.float32))
    b = blobs_for([rois, loss, np.arange(1, 11, dtype=np.float32), np.ones((10, 4), np.float32)])
    _, top = run_forward(layer, [x.data for x in b], tops)
    assert set(np.flatnonzero(top[0].data.reshape(10))) == set(np.argsort(-loss)[:3])
