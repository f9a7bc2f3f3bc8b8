"""Softmax and SoftmaxWithLoss: float64 gradient checks, closed forms (uniform logits give
log C, ignored labels, every normalization), Caffe's values and PyTorch's cross-entropy; the
GPU kernels against the CPU path."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gradcheck import check_gradients, forward_backward_blobs, labels, make_layer, rand, run_forward
from layer_cases import F32



@pytest.mark.parametrize("axis,shape", [(1, (2, 4, 3, 2)), (-1, (3, 5)), (0, (4, 3))])
def test_softmax_gradient(axis, shape):
    layer, tops = make_layer({"type": "Softmax", "softmax_param": {"axis": axis}}, [shape])
    check_gradients(layer, [rand(shape)], tops)


def test_softmax_values_and_stability():
    layer, tops = make_layer({"type": "Softmax"}, [(2, 3, 2)], backend=F32)
    x = np.float32(1000) + rand((2, 3, 2)).astype(np.float32)
    _, top = run_forward(layer, [x], tops)
    e = np.exp(x.astype(np.float64) - x.max(axis=1, keepdims=True))
    assert top[0].data.dtype == np.float32 and np.all(np.isfinite(top[0].data))
    np.testing.assert_allclose(top[0].data, e / e.sum(axis=1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(top[0].data.sum(axis=1), 1, rtol=1e-6)


# -- SoftmaxWithLoss ------------------------------------------------------------------------------

NORMALIZATIONS = ["FULL", "VALID", "BATCH_SIZE", "NONE"]


@pytest.mark.parametrize("norm", NORMALIZATIONS)
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 2, 3)])
@pytest.mark.parametrize("ignore", [None, 2])
def test_softmax_loss_gradient(norm, shape, ignore):
    lshape = (shape[0],) + shape[2:]
    spec = {"type": "SoftmaxWithLoss", "loss_param": {"normalization": norm}}
    if ignore is not None:
        spec["loss_param"]["ignore_label"] = ignore
    layer, tops = make_layer(spec, [shape, lshape])
    assert tops == [()]
    assert layer.no_grad_bottoms == (1,) and layer.is_loss
    check_gradients(layer, [rand(shape), labels(lshape, shape[1])], tops)


def _softmax_loss_reference(x, label, norm, ignore=None):
    """Cross-entropy over axis 1 by the definition, float64."""
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    lab = label.astype(int).reshape((x.shape[0],) + x.shape[2:])
    valid = np.ones(lab.shape, bool) if ignore is None else lab != ignore
    safe = np.where(valid, lab, 0)
    picked = np.take_along_axis(p, safe[:, None], axis=1)[:, 0]
    loss = -np.log(picked)[valid].sum()
    n = {"FULL": lab.size, "VALID": valid.sum(), "BATCH_SIZE": x.shape[0], "NONE": 1}[norm]
    return loss / max(n, 1)


@pytest.mark.parametrize("norm", NORMALIZATIONS)
def test_softmax_loss_value_with_ignore(norm):
    shape = (3, 4, 2, 2)
    x, lab = rand(shape), labels((3, 2, 2), 4)
    lab[0, 0, 0], lab[2, 1, 1] = 3, 3
    layer, tops = make_layer({"type": "SoftmaxWithLoss",
                              "loss_param": {"normalization": norm, "ignore_label": 3}},
                             [shape, lab.shape])
    _, top = run_forward(layer, [x, lab], tops)
    np.testing.assert_allclose(top[0].data, _softmax_loss_reference(x, lab, norm, 3), rtol=1e-12)


@pytest.mark.parametrize("norm,factor",
                         [("FULL", 1), ("VALID", 1), ("BATCH_SIZE", 6), ("NONE", 12)])
def test_softmax_loss_uniform_logits_is_log_c(norm, factor):
    """Equal logits give p = 1/C everywhere, so each position costs log C."""
    c, shape = 5, (2, 5, 2, 3)
    layer, tops = make_layer({"type": "SoftmaxWithLoss", "loss_param": {"normalization": norm}},
                             [shape, (2, 1, 2, 3)], backend=F32)
    _, top = run_forward(layer, [np.full(shape, 0.37), labels((2, 1, 2, 3), c)], tops)
    assert top[0].data.shape == () and top[0].data.dtype == np.float32
    np.testing.assert_allclose(top[0].data, factor * math.log(c), rtol=1e-6)


def test_softmax_loss_all_ignored_normalizer_is_one():
    layer, tops = make_layer({"type": "SoftmaxWithLoss", "loss_param": {"ignore_label": 0}},
                             [(3, 4), (3,)])
    bottom, top = forward_backward_blobs(layer, [rand((3, 4)), np.zeros(3)], tops, [1.0])
    assert top[0].data == 0 and np.all(bottom[0].diff == 0)


def test_softmax_loss_weight_scales_gradient_and_prob_top():
    shape = (4, 3)
    x, lab = rand(shape), labels((4,), 3)
    layer, tops = make_layer({"type": "SoftmaxWithLoss", "top": ["loss", "prob"]},
                             [shape, (4,)])
    assert tops == [(), shape]
    bottom, top = forward_backward_blobs(layer, [x, lab], tops, [2.5, np.zeros(shape)], [True, False])
    p = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(top[1].data, p, rtol=1e-12)
    np.testing.assert_allclose(bottom[0].diff, 2.5 * (p - np.eye(3)[lab.astype(int)]) / 4,
                               rtol=1e-12)
    assert np.all(bottom[1].diff == 0)  # never a gradient to the labels


def test_softmax_loss_probability_floor():
    """A label whose probability underflows costs −log(FLT_MIN), not inf."""
    layer, tops = make_layer({"type": "SoftmaxWithLoss"}, [(1, 2), (1,)], backend=F32)
    _, top = run_forward(layer, [np.array([[0.0, 200.0]]), np.array([0.0])], tops)
    np.testing.assert_allclose(top[0].data, -math.log(np.finfo(np.float32).tiny), rtol=1e-6)


@pytest.mark.parametrize("loss_param,mode", [
    ({}, "VALID"),
    ({"normalize": True}, "VALID"),
    ({"normalize": False}, "BATCH_SIZE"),
    ({"normalize": False, "normalization": "FULL"}, "FULL"),  # Caffe: normalization wins
    ({"normalization": "NONE"}, "NONE"),
])
def test_softmax_loss_legacy_normalize(loss_param, mode):
    layer, _ = make_layer({"type": "SoftmaxWithLoss", "loss_param": loss_param}, [(2, 3), (2,)])
    assert layer.normalization == mode
    assert layer.param_block is None and "softmax_param" in layer.extra_blocks


def test_softmax_loss_label_count_checked():
    with pytest.raises(Exception, match="labels"):
        make_layer({"type": "SoftmaxWithLoss"}, [(2, 3, 4), (2, 3)])


# -- EuclideanLoss --------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("norm", NORMALIZATIONS)
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 2, 3)])
@pytest.mark.parametrize("ignore", [None, 2])
def test_softmax_loss_gpu_kernels_match_cpu(norm, shape, ignore):
    """The fused CUDA forward/backward (float64) give the CPU path's loss, probabilities and
    bottom diff, with and without ignore_label, for every normalization."""
    from netspec.backend import cupy_available, get_backend, to_numpy
    if not cupy_available():
        pytest.skip("needs CuPy and a CUDA device")
    lshape = (shape[0],) + shape[2:]
    spec = {"type": "SoftmaxWithLoss", "top": ["loss", "prob"],
            "loss_param": {"normalization": norm}}
    if ignore is not None:
        spec["loss_param"]["ignore_label"] = ignore
    gpu = get_backend(gpu=True, dtype="float64")
    x, lab = rand(shape, 3), labels(lshape, shape[1], 4)
    results = []
    for backend in (None, gpu):
        kwargs = {} if backend is None else {"backend": backend}
        layer, tops = make_layer(spec, [shape, lshape], **kwargs)
        xp = np if backend is None else gpu.xp
        bottom, top = run_forward(layer, [xp.asarray(x), xp.asarray(lab)], tops, xp)
        top[0].diff = xp.full((), 1.5)
        layer.backward(top, [True, False], bottom)
        results.append([to_numpy(a) for a in (top[0].data, top[1].data, bottom[0].diff)])
    for want, got in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


# -- SegNet's class weighting (alexgkendall/caffe-segnet: loss_param.weight_by_label_freqs) -------

WEIGHTS = [0.25, 1.5, 4.0, 0.75]


def _weighted(loss_param, shape=(2, 4, 3, 2)):
    spec = {"type": "SoftmaxWithLoss", "loss_param": {"weight_by_label_freqs": True,
                                                      "class_weighting": WEIGHTS, **loss_param}}
    return make_layer(spec, [shape, (shape[0],) + shape[2:]])


@pytest.mark.parametrize("loss_param", [{}, {"ignore_label": 2}, {"normalize": False}])
def test_softmax_loss_class_weighting_matches_torch(loss_param):
    """The fork's loss: Σ w[label]·(−log p[label]) over the valid positions, divided by their
    count (normalize, the default) or by N (normalize: false) — not by Σ w as torch's 'mean'
    does: torch's cross_entropy(weight=w, reduction='sum') over the same divisor."""
    torch = pytest.importorskip("torch")
    shape = (2, 4, 3, 2)
    x, lab = rand(shape, seed=31), labels((2, 3, 2), 4, seed=32)
    layer, tops = _weighted(loss_param, shape)
    dy = 0.7
    _, top = run_forward(layer, [x, lab], tops)
    tx = torch.tensor(x, requires_grad=True)
    ignore = loss_param.get("ignore_label", -100)
    target = torch.tensor(lab).long()
    total = torch.nn.functional.cross_entropy(tx, target, weight=torch.tensor(WEIGHTS).double(),
                                              ignore_index=ignore, reduction="sum")
    valid = int((lab != ignore).sum())
    want = total / (valid if loss_param.get("normalize", True) else shape[0])
    np.testing.assert_allclose(top[0].data, want.item(), rtol=1e-6)
    (want * dy).backward()
    top[0].diff = np.array(dy)
    bottom_diff = np.zeros(shape)
    from netspec.blob import Blob
    bx, bl = Blob("x", x.copy(), np), Blob("l", lab.copy(), np)
    bx.diff = bottom_diff
    layer.backward(top, [True, False], [bx, bl])
    np.testing.assert_allclose(bx.diff, tx.grad.numpy(), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("loss_param", [{}, {"ignore_label": 1}])
def test_softmax_loss_class_weighting_gradient(loss_param):
    layer, tops = _weighted(loss_param)
    check_gradients(layer, [rand((2, 4, 3, 2), seed=33), labels((2, 3, 2), 4, seed=34)], tops)


def test_softmax_loss_class_weighting_needs_one_weight_per_class():
    from netspec.errors import SpecError
    with pytest.raises(SpecError, match="one class_weighting value per class: 5 classes, 4 "
                                        "values") as e:
        _weighted({}, (2, 5, 3, 2))
    assert "loss_param.class_weighting" in e.value.format()


def test_softmax_loss_class_weighting_without_the_switch_is_ignored():
    """As in the fork, class_weighting alone does nothing."""
    shape = (2, 4, 3, 2)
    x, lab = rand(shape, seed=35), labels((2, 3, 2), 4, seed=36)
    plain, tops = make_layer({"type": "SoftmaxWithLoss"}, [shape, lab.shape])
    only, _ = make_layer({"type": "SoftmaxWithLoss", "loss_param": {"class_weighting": WEIGHTS}},
                         [shape, lab.shape])
    assert run_forward(plain, [x, lab], tops)[1][0].data == run_forward(only, [x, lab], tops)[1][0].data
