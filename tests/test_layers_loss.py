"""Loss layers (netspec/layers/loss.py): EuclideanLoss, Accuracy, SigmoidCrossEntropyLoss,
HingeLoss, InfogainLoss, ContrastiveLoss, MultinomialLogisticLoss (Softmax and SoftmaxWithLoss:
tests/test_layers_softmax.py; the Caffe and PyTorch parity of SoftmaxWithLoss stays here, beside
the other losses' parity tests).

Gradient checks in float64, closed forms and normalisations derived here, parity with real Caffe
(tests/golden/layers/, float32) and with PyTorch where it is installed, float32 cleanliness, the
fused CUDA kernels against the CPU. (Gradient, float32 and Caffe-parity checks of the extra losses
run in tests/test_layers_neuron.py's tables.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from gradcheck import (blobs_for, check_gradients, forward_backward, forward_backward_blobs, labels,
                       make_layer, rand, run_forward)
from layer_cases import F32, close, golden

from netspec.errors import DataError, NetspecError, SpecError

# -- Softmax --------------------------------------------------------------------------------------
def test_euclidean_gradient_and_value():
    a, b = rand((4, 3, 2)), rand((4, 6), 1)
    layer, tops = make_layer({"type": "EuclideanLoss"}, [a.shape, b.shape])
    assert tops == [()] and layer.is_loss
    _, top = run_forward(layer, [a, b], tops)
    np.testing.assert_allclose(top[0].data, ((a.reshape(4, 6) - b) ** 2).sum() / 8, rtol=1e-12)
    check_gradients(layer, [a, b], tops)


# -- SmoothL1Loss (py-faster-rcnn, SSD) -------------------------------------------------------------
def smooth_l1(d, sigma):
    s2 = sigma * sigma
    return np.where(np.abs(d) < 1 / s2, 0.5 * s2 * d * d, np.abs(d) - 0.5 / s2)


def _smooth_l1_bottoms(n_bottoms, shape=(4, 12), seed=0, binary_weights=False):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=shape) * 2, rng.normal(size=shape) * 2
    # keep |w_in·(x − y)| away from the kink at 1/σ² (σ = 1, 3 below)
    extra = []
    if n_bottoms >= 3:
        w = (rng.random(shape) < 0.6).astype(float) if binary_weights else rng.uniform(0.5, 2, shape)
        extra.append(w)
    if n_bottoms == 4:
        extra.append(rng.uniform(0.0, 3.0, shape))
    return [x, y, *extra]


def _away_from_kinks(bottoms, sigma):
    x, y, *w = bottoms
    d = (x - y) * (w[0] if w else 1)
    far = np.abs(np.abs(d) - 1 / sigma ** 2) > 0.02
    return np.where(far, x, x + 0.05 * np.sign(x - y)) if not far.all() else x


@pytest.mark.parametrize("n_bottoms", [2, 4])
@pytest.mark.parametrize("sigma", [1.0, 3.0])
def test_smooth_l1_closed_form_and_gradients(n_bottoms, sigma):
    """loss = Σ w_out·f(w_in·(x − y)) / N (py-faster-rcnn), its gradient to x and −it to y."""
    bottoms = _smooth_l1_bottoms(n_bottoms)
    bottoms[0] = _away_from_kinks(bottoms, sigma)
    spec = {"type": "SmoothL1Loss", "smooth_l1_loss_param": {"sigma": sigma}}
    layer, tops = make_layer(spec, [b.shape for b in bottoms])
    assert tops == [()] and layer.is_loss
    _, top = run_forward(layer, bottoms, tops)
    x, y, *w = bottoms
    w_in, w_out = (w if w else (1.0, 1.0))
    want = (w_out * smooth_l1(w_in * (x - y), sigma)).sum() / x.shape[0]
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12)
    check_gradients(layer, bottoms, tops, check_bottoms=[0, 1])


def test_smooth_l1_ssd_three_bottoms():
    """SSD's variant: a third bottom w multiplies x − y; its backward leaves w out of the
    gradient, which is exact for the 0/1 masks SSD passes."""
    bottoms = _smooth_l1_bottoms(3, binary_weights=True)
    layer, tops = make_layer({"type": "SmoothL1Loss"}, [b.shape for b in bottoms])
    _, top = run_forward(layer, bottoms, tops)
    x, y, w = bottoms
    np.testing.assert_allclose(top[0].data, smooth_l1(w * (x - y), 1.0).sum() / 4, rtol=1e-12)
    check_gradients(layer, bottoms, tops, check_bottoms=[0, 1])
    bottoms[2] = np.full(x.shape, 2.0)                     # non-binary: SSD's gradient, not d/dx
    b = blobs_for(bottoms)
    t = blobs_for([np.zeros(())], prefix="t")
    layer.forward(b, t)
    t[0].diff[...] = 1.0
    layer.backward(t, [True, True, False], b)
    d = 2.0 * (x - y)
    g = np.where(np.abs(d) < 1, d, np.sign(d)) / 4
    np.testing.assert_allclose(b[0].diff, g, rtol=1e-12)
    np.testing.assert_allclose(b[1].diff, -g, rtol=1e-12)


def test_smooth_l1_matches_torch():
    """Unweighted, the fork's loss with σ is PyTorch's smooth_l1_loss with β = 1/σ² (0.5·d²/β
    below β, |d| − 0.5·β above), summed and divided by N; so are the gradients."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(5, 8)) * 2, rng.normal(size=(5, 8)) * 2
    for sigma in (1.0, 3.0, 0.5):
        layer, tops = make_layer({"type": "SmoothL1Loss", "smooth_l1_loss_param": {"sigma": sigma}},
                                 [x.shape, y.shape])
        b, t = run_forward(layer, [x, y], tops)
        t[0].diff[...] = 1.0
        layer.backward(t, [True, True], b)
        tx, ty = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
        loss = torch.nn.functional.smooth_l1_loss(tx, ty, beta=1.0 / sigma ** 2,
                                                  reduction="sum") / x.shape[0]
        loss.backward()
        np.testing.assert_allclose(float(t[0].data), loss.item(), rtol=1e-12)
        np.testing.assert_allclose(b[0].diff, tx.grad.numpy(), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(b[1].diff, ty.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_smooth_l1_shape_errors():
    with pytest.raises(NetspecError, match="bottom 2 \\(inside weights\\)"):
        make_layer({"type": "SmoothL1Loss"}, [(4, 8), (4, 8), (4, 7), (4, 8)])
    with pytest.raises(NetspecError, match="same first dimension"):
        make_layer({"type": "SmoothL1Loss"}, [(4, 8), (2, 16)])


# -- Accuracy -------------------------------------------------------------------------------------

SCORES = np.array([[0.1, 0.5, 0.2, 0.2],    # ranking 1 > {2, 3} > 0
                   [0.9, 0.0, 0.05, 0.05],  # 0 > {2, 3} > 1
                   [0.3, 0.3, 0.3, 0.1],    # three-way tie
                   [0.0, 0.1, 0.7, 0.2],    # 2 > 3 > 1 > 0
                   [0.25, 0.25, 0.25, 0.25]])
LABELS = np.array([1, 2, 0, 3, 1], dtype=np.float64)


@pytest.mark.parametrize("top_k,ignore,want,per_class", [
    # row 0 right; row 1 label 2 tied with 3 below 0; row 2 label 0 tied three ways; row 3 label 3
    # second; row 4 label 1 tied four ways (Caffe: ties count against the true class)
    (1, None, 1 / 5, [0, 0.5, 0, 0]),
    (2, None, 2 / 5, [0, 0.5, 0, 1]),
    (3, None, 4 / 5, [1, 0.5, 1, 1]),
    (4, None, 1.0, [1, 1, 1, 1]),
    (1, 1, 0 / 3, [0, 0, 0, 0]),
    (2, 1, 1 / 3, [0, 0, 0, 1]),
    (2, 3, 1 / 4, [0, 0.5, 0, 0]),
])
def test_accuracy_hand_made(top_k, ignore, want, per_class):
    ap = {"top_k": top_k}
    if ignore is not None:
        ap["ignore_label"] = ignore
    layer, tops = make_layer({"type": "Accuracy", "accuracy_param": ap,
                              "top": ["accuracy", "per_class"]}, [SCORES.shape, (5,)], backend=F32)
    assert tops == [(), (4,)] and not layer.has_backward and layer.no_grad_bottoms == (1,)
    _, top = run_forward(layer, [SCORES, LABELS], tops)
    assert top[0].data.dtype == np.float32
    np.testing.assert_allclose(top[0].data, want, rtol=1e-6)
    np.testing.assert_allclose(top[1].data, per_class, rtol=1e-6)


def test_accuracy_spatial_axis_and_all_ignored():
    # (N=2, C=3, H=2): scores along axis 1 at each of 2 positions
    scores = np.array([[[1, 0], [0, 1], [0, 0.5]], [[0, 0], [2, 0], [0, 3]]], dtype=np.float64)
    lab = np.array([[0, 0], [1, 2]], dtype=np.float64)
    layer, tops = make_layer({"type": "Accuracy"}, [scores.shape, lab.shape])
    _, top = run_forward(layer, [scores, lab], tops)
    assert top[0].data == pytest.approx(3 / 4)
    layer, tops = make_layer({"type": "Accuracy", "accuracy_param": {"ignore_label": 0}},
                             [(2, 3), (2,)])
    _, top = run_forward(layer, [np.ones((2, 3)), np.zeros(2)], tops)
    assert top[0].data == 0


def test_accuracy_top_k_above_classes_refused():
    with pytest.raises(SpecError, match="top_k"):
        make_layer({"type": "Accuracy", "accuracy_param": {"top_k": 5}}, [(2, 4), (2,)])


# -- SigmoidCrossEntropyLoss ----------------------------------------------------------------------

def _sce_reference(x, t, ignore=None):
    term = x * t - np.log1p(np.exp(x))
    valid = np.ones_like(x, dtype=bool) if ignore is None else (t.astype(int) != ignore)
    return -(term * valid).sum(), valid


@pytest.mark.parametrize("loss_param,norm", [
    ({}, "batch"), ({"normalize": True}, "valid"), ({"normalize": False}, "batch"),
    ({"normalization": "VALID"}, "valid"), ({"normalization": "FULL"}, "full"),
    ({"normalization": "NONE"}, "none"), ({"normalization": "BATCH_SIZE"}, "batch"),
    ({"normalization": "VALID", "ignore_label": 2}, "valid"),
    ({"ignore_label": 2}, "batch"),
    ({"normalization": "VALID", "normalize": False}, "valid"),  # normalization wins
])
def test_sigmoid_cross_entropy_normalization(loss_param, norm):
    x = rand((4, 3, 2)) * 2
    t = np.random.default_rng(3).random((4, 3, 2))
    ignore = loss_param.get("ignore_label")
    if ignore is not None:
        t[0, 0, :] = ignore
        t[2, 1, 1] = ignore
    spec = {"type": "SigmoidCrossEntropyLoss"}
    if loss_param:
        spec["loss_param"] = loss_param
    layer, tops = make_layer(spec, [x.shape, t.shape])
    bottom, top = forward_backward_blobs(layer, [x, t], tops, [2.0])
    total, valid = _sce_reference(x, t, ignore)
    n = {"batch": 4, "valid": valid.sum(), "full": x.size, "none": 1}[norm]
    assert float(top[0].data) == pytest.approx(total / n, rel=1e-12)
    sig = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(bottom[0].diff, (sig - t) * valid * 2.0 / n, rtol=1e-10, atol=1e-15)


def test_sigmoid_cross_entropy_matches_torch():
    torch = pytest.importorskip("torch")
    x, t = rand((3, 5)) * 4, np.random.default_rng(3).random((3, 5))
    layer, tops = make_layer({"type": "SigmoidCrossEntropyLoss",
                              "loss_param": {"normalization": "FULL"}}, [x.shape, t.shape])
    bottom, top = forward_backward_blobs(layer, [x, t], tops, [1.0])
    tx = torch.tensor(x, requires_grad=True)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(tx, torch.tensor(t))
    loss.backward()
    assert float(top[0].data) == pytest.approx(float(loss.detach()), rel=1e-12)
    np.testing.assert_allclose(bottom[0].diff, tx.grad.numpy(), rtol=1e-10)


def test_sigmoid_cross_entropy_count_mismatch():
    with pytest.raises(NetspecError, match="same count"):
        make_layer({"type": "SigmoidCrossEntropyLoss"}, [(2, 3), (2, 4)])


# -- HingeLoss, InfogainLoss, ContrastiveLoss, MultinomialLogisticLoss ----------------------------

def test_hinge_closed_form():
    x, lab = rand((4, 5)), labels((4,), 5)
    for norm, power in (("L1", 1), ("L2", 2)):
        layer, tops = make_layer({"type": "HingeLoss", "hinge_loss_param": {"norm": norm}},
                                 [x.shape, lab.shape])
        _, top = run_forward(layer, [x, lab], tops)
        sign = np.where(np.arange(5)[None] == lab[:, None], -1, 1)
        assert float(top[0].data) == pytest.approx((np.maximum(0, 1 + sign * x) ** power).sum() / 4)


def test_infogain_identity_equals_softmax_with_loss():
    x, lab = rand((2, 4, 3)), labels((2, 3), 4)
    lab[1, 2] = 3
    common = {"loss_param": {"ignore_label": 3, "normalization": "VALID"}}
    info, t1 = make_layer({"type": "InfogainLoss", **common}, [x.shape, lab.shape, (4, 4)])
    soft, t2 = make_layer({"type": "SoftmaxWithLoss", **common}, [x.shape, lab.shape])
    b1, top1 = forward_backward_blobs(info, [x, lab, np.eye(4)], t1, [1.3])
    b2, top2 = forward_backward_blobs(soft, [x, lab], t2, [1.3])
    assert float(top1[0].data) == pytest.approx(float(top2[0].data), rel=1e-12)
    np.testing.assert_allclose(b1[0].diff, b2[0].diff, rtol=1e-10, atol=1e-15)


def test_infogain_errors():
    with pytest.raises(SpecError, match="normalize"):
        make_layer({"type": "InfogainLoss", "loss_param": {"normalize": True}},
                   [(2, 3), (2,), (3, 3)])
    with pytest.raises(NetspecError, match="H"):
        make_layer({"type": "InfogainLoss"}, [(2, 3), (2,), (4, 4)])
    with pytest.raises(SpecError, match="source"):
        make_layer({"type": "InfogainLoss"}, [(2, 3), (2,)])
    with pytest.raises(NetspecError, match="number of labels"):
        make_layer({"type": "InfogainLoss"}, [(2, 3, 2), (2,), (3, 3)])


def test_infogain_source_blobproto(tmp_path):
    pytest.importorskip("google.protobuf")
    from netspec.caffe import pb2
    from netspec.caffe.caffemodel import array_to_blob

    h = np.abs(rand((1, 1, 5, 5), 7)).astype(np.float32)
    blob = pb2().BlobProto()
    array_to_blob(h, blob)
    path = tmp_path / "H.binaryproto"
    path.write_bytes(blob.SerializeToString())
    x, lab = rand((4, 5)), labels((4,), 5)
    src, t1 = make_layer({"type": "InfogainLoss", "infogain_loss_param": {"source": str(path)}},
                         [x.shape, lab.shape])
    three, t2 = make_layer({"type": "InfogainLoss"}, [x.shape, lab.shape, h.shape])
    b1, top1 = forward_backward_blobs(src, [x, lab], t1, [1.0])
    b2, top2 = forward_backward_blobs(three, [x, lab, h.astype(np.float64)], t2, [1.0])
    assert float(top1[0].data) == pytest.approx(float(top2[0].data), rel=1e-12)
    np.testing.assert_allclose(b1[0].diff, b2[0].diff, rtol=1e-12)
    with pytest.raises(DataError, match="cannot read"):
        make_layer({"type": "InfogainLoss", "infogain_loss_param": {"source": str(tmp_path / "no")}},
                   [x.shape, lab.shape])
    (tmp_path / "bad").write_bytes(b"\xff\xff\xff")
    with pytest.raises(DataError, match="BlobProto"):
        make_layer({"type": "InfogainLoss", "infogain_loss_param": {"source": str(tmp_path / "bad")}},
                   [x.shape, lab.shape])


def test_contrastive_gradient_is_caffes_regularised_form():
    """Non-legacy: Caffe's −α(m − d)/(d + 1e-4)·(a − b) (not the exact derivative)."""
    a, b = rand((5, 3)), rand((5, 3), 1)
    y = np.array([1, 0, 0, 1, 0.0])
    m = 4.0
    layer, tops = make_layer({"type": "ContrastiveLoss", "contrastive_loss_param": {"margin": m}},
                             [a.shape, b.shape, y.shape])
    bottom, top = forward_backward_blobs(layer, [a, b, y], tops, [1.5])
    d = np.sqrt(((a - b) ** 2).sum(1))
    loss = np.where(y == 1, d ** 2, np.maximum(m - d, 0) ** 2).sum() / 5 / 2
    assert top[0].data == pytest.approx(loss, rel=1e-12)
    alpha = 1.5 / 5
    factor = np.where(y == 1, 1.0, np.where(m - d > 0, -(m - d) / (d + 1e-4), 0.0))
    np.testing.assert_allclose(bottom[0].diff, alpha * factor[:, None] * (a - b), rtol=1e-12)
    np.testing.assert_allclose(bottom[1].diff, -alpha * factor[:, None] * (a - b), rtol=1e-12)
    # and it is close to the exact derivative (relative 1e-4 / d)
    check_gradients(layer, [a, b, y], tops, rtol=1e-3, top_weights=[np.asarray(1.5)])


def test_multinomial_clamps_tiny_probabilities():
    p = np.array([[0.0, 1.0], [0.5, 0.5]])
    layer, tops = make_layer({"type": "MultinomialLogisticLoss"}, [p.shape, (2,)])
    bottom, top = forward_backward_blobs(layer, [p, np.array([0.0, 1])], tops, [1.0])
    assert float(top[0].data) == pytest.approx((-math.log(1e-20) - math.log(0.5)) / 2)
    assert bottom[0].diff[0, 0] == pytest.approx(-0.5 / 1e-20)
    with pytest.raises(NetspecError, match="one label per item"):
        make_layer({"type": "MultinomialLogisticLoss"}, [(2, 3), (2, 3)])


def test_loss_layers_check_first_dimension():
    for spec, shapes in (({"type": "HingeLoss"}, [(3, 2), (2,)]),
                         ({"type": "SigmoidCrossEntropyLoss"}, [(3, 2), (2, 3)]),
                         ({"type": "ContrastiveLoss"}, [(3, 2), (3, 2), (2,)])):
        with pytest.raises(NetspecError):
            make_layer(spec, shapes)


# -- float32 end to end ---------------------------------------------------------------------------

F32_CASES = [  # (spec, bottom arrays, top diffs)
    ({"type": "BatchNorm"}, [rand((4, 3, 2, 2))], [rand((4, 3, 2, 2), 1)]),
    ({"type": "BatchNorm", "batch_norm_param": {"use_global_stats": True}}, [rand((4, 3))],
     [rand((4, 3), 1)]),
    ({"type": "Scale", "scale_param": {"bias_term": True}}, [rand((2, 3, 4))],
     [rand((2, 3, 4), 1)]),
    ({"type": "Scale", "scale_param": {"axis": 0}}, [rand((2, 3, 4)), rand((2, 3), 2)],
     [rand((2, 3, 4), 1)]),
    ({"type": "Softmax"}, [rand((2, 3, 4))], [rand((2, 3, 4), 1)]),
    ({"type": "SoftmaxWithLoss", "top": ["loss", "prob"], "loss_param": {"ignore_label": 0}},
     [rand((2, 3, 4)), labels((2, 4), 3)], [1.0, np.zeros((2, 3, 4))]),
    ({"type": "EuclideanLoss"}, [rand((2, 3)), rand((2, 3), 1)], [1.0]),
    ({"type": "Accuracy", "top": ["a", "b"], "accuracy_param": {"top_k": 2}},
     [rand((5, 3)), labels((5,), 3)], []),
]


@pytest.mark.parametrize("spec,bottoms,diffs", F32_CASES)
def test_float32_end_to_end(spec, bottoms, diffs):
    """Tops, diffs, parameter diffs and every array a layer caches stay float32."""
    bottoms = [np.asarray(b, dtype=np.float32) for b in bottoms]
    layer, tops = make_layer(spec, [b.shape for b in bottoms], backend=F32)
    bottom, top = run_forward(layer, bottoms, tops)
    if layer.has_backward:
        for t, d in zip(top, diffs):
            t.diff = np.asarray(d, dtype=np.float32)
        layer.backward(top, [i not in layer.no_grad_bottoms for i in range(len(bottom))], bottom)
    arrays = [t.data for t in top] + [b.data for b in layer.blobs] + [b.diff for b in layer.blobs]
    arrays += [b.diff for b in bottom if b._diff is not None]
    arrays += [v for v in vars(layer).values() if isinstance(v, np.ndarray)]
    floats = [a for a in arrays if np.issubdtype(np.asarray(a).dtype, np.floating)]
    assert floats and all(np.asarray(a).dtype == np.float32 for a in floats)
    for t, s in zip(top, tops):
        assert t.data.shape == tuple(s)


# -- Caffe parity (golden values from real Caffe, float32) ----------------------------------------

def test_caffe_euclidean_loss_weight_2():
    g = golden("euclidean")
    layer, tops = make_layer({"name": "l", "type": "EuclideanLoss", "loss_weight": 2},
                             [g["input/a"].shape, g["input/b"].shape], backend=F32)
    bottom, top = forward_backward_blobs(layer, [g["input/a"], g["input/b"]], tops, [2.0])
    close(top[0].data, g["top/loss"])
    close(bottom[0].diff, g["bottomdiff/a"])
    close(bottom[1].diff, g["bottomdiff/b"])


def test_caffe_softmax_loss_normalization_none():
    g = golden("softmax_loss_normalize_none")
    layer, tops = make_layer({"name": "l", "type": "SoftmaxWithLoss",
                              "loss_param": {"normalization": "NONE"}},
                             [g["input/x"].shape, g["input/label"].shape], backend=F32)
    bottom, top = forward_backward_blobs(layer, [g["input/x"], g["input/label"]], tops, [1.0],
                                   [True, False])
    close(top[0].data, g["top/loss"])
    close(bottom[0].diff, g["bottomdiff/x"])


# -- PyTorch parity -------------------------------------------------------------------------------

def test_torch_cross_entropy():
    torch = pytest.importorskip("torch")
    shape = (3, 5, 2, 4)
    x, lab = rand(shape), labels((3, 2, 4), 5)
    lab[0, 1, 2] = lab[2, 0, 0] = -1
    layer, tops = make_layer({"type": "SoftmaxWithLoss",
                              "loss_param": {"normalization": "VALID", "ignore_label": -1}},
                             [shape, lab.shape])
    bottom, top = forward_backward_blobs(layer, [x, lab], tops, [1.0], [True, False])
    tx = torch.tensor(x, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(tx, torch.tensor(lab).long(), ignore_index=-1)
    loss.backward()
    np.testing.assert_allclose(top[0].data, loss.item(), rtol=1e-10)
    np.testing.assert_allclose(bottom[0].diff, tx.grad.numpy(), rtol=1e-8, atol=1e-12)


# -- GPU ------------------------------------------------------------------------------------------


# -- CenterLoss (ydwen/caffe-face) -----------------------------------------------------------------

def _center_loss(shape=(6, 2, 3), classes=4, axis=1):
    layer, tops = make_layer({"type": "CenterLoss", "center_loss_param": {
        "num_output": classes, "axis": axis, "center_filler": {"type": "gaussian"}}},
        [shape, (math.prod(shape[:axis]),)])
    return layer, tops


def _center_loop(x, y, c):
    """The fork's CPU code, literally: loss, bottom diff (loss weight 1), center diff."""
    M, K = x.shape
    d = np.stack([x[i] - c[int(y[i])] for i in range(M)])
    loss = float((d * d).sum()) / M / 2
    dc = np.zeros_like(c)
    for n in range(c.shape[0]):
        count, total = 0, np.zeros(K)
        for m in range(M):
            if int(y[m]) == n:
                count += 1
                total -= d[m]
        dc[n] += total / (count + 1)
    return loss, d / M, dc


def test_center_loss_matches_the_forks_loop():
    layer, tops = _center_loss()
    assert tops == [()] and layer.blobs[0].data.shape == (4, 6)
    x = rand((6, 2, 3), seed=40)
    y = np.array([0, 2, 2, 1, 2, 0], float)                     # class 3 absent: no update
    c = layer.blobs[0].data.copy()
    (loss,), (dx, _), (dc,) = forward_backward(layer, [x, y], tops, [np.array(1.0)])
    want_loss, want_dx, want_dc = _center_loop(x.reshape(6, 6), y, c)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
    np.testing.assert_allclose(dx.reshape(6, 6), want_dx, rtol=1e-12)
    np.testing.assert_allclose(dc, want_dc, rtol=1e-12, atol=1e-15)
    assert not dc[3].any()


def test_center_loss_bottom_gradient_and_loss_weight():
    """∂x is the loss's gradient (finite differences); the centers' diff is the fork's update
    rule, not a gradient (not checked here: it ignores the loss weight by design)."""
    layer, tops = _center_loss((5, 4), 3)
    y = np.array([0, 1, 1, 2, 0], float)
    check_gradients(layer, [rand((5, 4), seed=41), y], tops, check_params=False)
    diffs = []
    for weight in (1.0, 3.0):
        layer.blobs[0].diff[...] = 0
        diffs.append(forward_backward(layer, [rand((5, 4), seed=42), y], tops,
                                      [np.array(weight)]))
    (_, (dx1, _), (dc1,)), (_, (dx3, _), (dc3,)) = diffs
    np.testing.assert_allclose(dx3, 3 * dx1, rtol=1e-12)
    np.testing.assert_allclose(dc3, dc1, rtol=1e-12)


def test_center_loss_errors():
    with pytest.raises(NetspecError, match=r"the labels must be integers in \[0, 4\); got \[4.0\]"):
        layer, tops = _center_loss()
        forward_backward(layer, [rand((6, 2, 3)), np.array([0, 1, 2, 3, 4, 0], float)],
                         tops, [np.array(1.0)])
    with pytest.raises(NetspecError, match="one label per feature vector"):
        make_layer({"type": "CenterLoss", "center_loss_param": {"num_output": 3}},
                   [(6, 4), (5,)])
    from netspec.spec import parse_net
    with pytest.raises(SpecError, match="num_output"):
        parse_net({"name": "n", "layer": [{"name": "c", "type": "CenterLoss", "bottom": ["x", "y"],
                                           "top": "l", "center_loss_param": {"axis": 1}}]})


CENTER_NET = """
name: "center"
input: "feature" input_shape { dim: 8 dim: 3 }
input: "label" input_shape { dim: 8 }
layer { name: "center_loss" type: "CenterLoss" bottom: "feature" bottom: "label"
  top: "center_loss" loss_weight: 0.01
  param { lr_mult: 1 decay_mult: 0 }
  center_loss_param { num_output: 3 center_filler { type: "xavier" } } }
"""


def test_center_loss_converts_exports_and_moves_centers_to_the_class_means(tmp_path):
    """The Caffe text converts and exports back unchanged; steps of the fork's rule
    c ← c − α·Δc (α = 0.5) take each center to its class's mean feature, at any loss weight."""
    pytest.importorskip("google.protobuf", reason="protobuf is not installed")
    from netspec.backend import Backend
    from netspec.caffe import prototxt as ptx
    from netspec.caffe.export import export_net
    from netspec.caffe.port import convert_net
    from netspec.net import Net
    from netspec.spec import load_net

    (tmp_path / "center.prototxt").write_text(CENTER_NET)
    convert_net(tmp_path / "center.prototxt", tmp_path / "center.yaml")
    export_net(tmp_path / "center.yaml", tmp_path / "back.prototxt")
    assert ptx.parse_net((tmp_path / "back.prototxt").read_text()) == ptx.parse_net(CENTER_NET)
    net = Net(load_net(tmp_path / "center.yaml"), "TRAIN", Backend(np, np.float64),
              np.random.default_rng(0))
    x = np.random.default_rng(43).normal(size=(8, 3))
    y = np.array([0, 1, 2, 0, 1, 2, 0, 0], float)
    net.blobs["feature"].data[...] = x
    net.blobs["label"].data[...] = y
    centers = net.layer_by_name("center_loss").blobs[0]
    for _ in range(60):
        centers.diff[...] = 0
        net.forward()
        net.backward()
        centers.data -= 0.5 * centers.diff
    means = np.stack([x[y == j].mean(axis=0) for j in range(3)])
    np.testing.assert_allclose(centers.data, means, atol=1e-6)


def test_accuracy_label_out_of_range_is_an_error_naming_the_layer():
    """A label ≥ the number of classes (e.g. CamVid's void 11 in SegNet's 11-class nets, whose
    Accuracy has no ignore_label) is one clear error, not an index error; ignored labels pass."""
    layer, tops = make_layer({"type": "Accuracy"}, [(2, 3, 2, 2), (2, 1, 2, 2)])
    lab = np.array([0, 1, 2, 3, 0, 1, 2, 0], float).reshape(2, 1, 2, 2)
    with pytest.raises(NetspecError, match=r"layer 'accuracy' \(Accuracy\): the labels \(but "
                                           r"ignore_label\) must be in \[0, 3\); got \[3\]"):
        run_forward(layer, [rand((2, 3, 2, 2)), lab], tops)
    layer, tops = make_layer({"type": "Accuracy", "accuracy_param": {"ignore_label": 3}},
                             [(2, 3, 2, 2), (2, 1, 2, 2)])
    run_forward(layer, [rand((2, 3, 2, 2)), lab], tops)
