"""BatchNorm, Scale, Softmax, SoftmaxWithLoss, EuclideanLoss and Accuracy.

Gradient checks in float64, closed forms derived here, parity with real Caffe (the golden
cases in tests/golden/layers/, float32) and with PyTorch where it is installed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from gradcheck import check_gradients, forward_backward_blobs, labels, make_layer, rand, run_forward

from netspec.backend import Backend
from netspec.blob import Blob
from netspec.errors import SpecError

F32 = Backend(np, np.float32)
GOLDEN = Path(__file__).parent / "golden" / "layers"


# -- BatchNorm -------------------------------------------------------------------------------

BN_SHAPES = [(4, 3, 5, 5), (6, 4)]


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batchnorm_train_gradient(shape):
    layer, tops = make_layer({"type": "BatchNorm"}, [shape], phase="TRAIN")
    assert not layer.use_global_stats
    check_gradients(layer, [rand(shape) * 2 + 1], tops, check_params=False)


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batchnorm_global_gradient_and_value(shape):
    layer, tops = make_layer({"type": "BatchNorm"}, [shape], phase="TEST")
    assert layer.use_global_stats
    c = shape[1]
    mean_sum, var_sum = rand(c, 1), np.abs(rand(c, 2)) + 0.5
    layer.blobs[0].data[...] = mean_sum
    layer.blobs[1].data[...] = var_sum
    layer.blobs[2].data[...] = 2.5
    x = rand(shape, 3)
    _, top = run_forward(layer, [x], tops)
    bshape = (1, c) + (1,) * (len(shape) - 2)
    want = (x - (mean_sum / 2.5).reshape(bshape)) / np.sqrt((var_sum / 2.5).reshape(bshape) + 1e-5)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12)
    check_gradients(layer, [x], tops, check_params=False)


def test_batchnorm_global_zero_factor_uses_zero_statistics():
    layer, tops = make_layer({"type": "BatchNorm", "batch_norm_param": {"use_global_stats": True}},
                             [(2, 3)], phase="TRAIN")
    layer.blobs[0].data[...] = 5.0  # ignored: factor 0 scales the sums by 0
    x = rand((2, 3))
    _, top = run_forward(layer, [x], tops)
    np.testing.assert_allclose(top[0].data, x / np.sqrt(1e-5))


def test_batchnorm_moving_averages_two_forwards():
    maf, shape = 0.9, (3, 2, 4, 2)
    layer, tops = make_layer({"type": "BatchNorm",
                              "batch_norm_param": {"moving_average_fraction": maf}},
                             [shape], phase="TRAIN")
    x1, x2 = rand(shape, 1) + 3, rand(shape, 2) * 0.5 - 1
    m = 3 * 4 * 2
    run_forward(layer, [x1], tops)
    run_forward(layer, [x2], tops)

    def stats(x):  # per channel mean and unbiased variance
        xc = x.transpose(1, 0, 2, 3).reshape(2, -1)
        return xc.mean(axis=1), xc.var(axis=1) * m / (m - 1)

    (mu1, v1), (mu2, v2) = stats(x1), stats(x2)
    np.testing.assert_allclose(layer.blobs[0].data, maf * mu1 + mu2, rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[1].data, maf * v1 + v2, rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[2].data, [maf * 1 + 1], rtol=1e-12)
    # the global estimate then is the factor-weighted average of the two batches
    np.testing.assert_allclose(layer.blobs[0].data / layer.blobs[2].data,
                               (maf * mu1 + mu2) / (maf + 1), rtol=1e-12)


def test_batchnorm_statistics_are_not_learnable():
    layer, _ = make_layer({"type": "BatchNorm"}, [(2, 3, 4, 4)])
    assert [b.shape for b in layer.blobs] == [(3,), (3,), (1,)]
    assert all(b.lr_mult == 0 and b.decay_mult == 0 for b in layer.blobs)
    assert all(np.all(b.data == 0) for b in layer.blobs)
    make_layer({"type": "BatchNorm", "param": [{"lr_mult": 0}] * 3}, [(2, 3)])
    with pytest.raises(SpecError, match="statistics"):
        make_layer({"type": "BatchNorm", "param": [{"lr_mult": 0}, {"lr_mult": 1}]}, [(2, 3)])
    with pytest.raises(SpecError):  # Caffe's lr_mult default is 1, so this is refused too
        make_layer({"type": "BatchNorm", "param": [{"decay_mult": 0}]}, [(2, 3)])


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_batchnorm_in_place_equals_out_of_place(phase):
    shape = (4, 3, 2, 2)
    x, dy = rand(shape, 1), rand(shape, 2)
    results = []
    for in_place in (False, True):
        layer, tops = make_layer({"type": "BatchNorm"}, [shape], phase=phase)
        layer.blobs[1].data[...] = 1.5
        layer.blobs[2].data[...] = 1.0
        if in_place:
            blob = Blob("x", x.copy(), np)
            layer.forward([blob], [blob])
            y = blob.data.copy()
            blob.diff = dy.copy()
            layer.backward([blob], [True], [blob])
            results.append((y, blob.diff.copy(), [b.data.copy() for b in layer.blobs]))
        else:
            bottom, top = forward_backward_blobs(layer, [x], tops, [dy])
            results.append((top[0].data, bottom[0].diff, [b.data.copy() for b in layer.blobs]))
    (y0, dx0, p0), (y1, dx1, p1) = results
    np.testing.assert_allclose(y1, y0, rtol=1e-14)
    np.testing.assert_allclose(dx1, dx0, rtol=1e-12)
    for a, b in zip(p0, p1):
        np.testing.assert_allclose(a, b, rtol=1e-14)


# -- Scale -----------------------------------------------------------------------------------

SCALE_CASES = [  # (scale_param, bottom shape, expected scale shape)
    ({}, (2, 3, 4, 5), (3,)),
    ({"bias_term": True}, (2, 3, 4, 5), (3,)),
    ({"axis": 1, "num_axes": 2, "bias_term": True}, (2, 3, 4, 5), (3, 4)),
    ({"axis": 2, "num_axes": -1}, (2, 3, 4, 5), (4, 5)),
    ({"axis": 0, "num_axes": 0, "bias_term": True}, (2, 3, 4, 5), ()),
    ({"axis": -1, "bias_term": True}, (2, 3, 4), (4,)),
    ({"axis": 0, "num_axes": -1}, (3, 4), (3, 4)),
]


@pytest.mark.parametrize("sp,shape,sshape", SCALE_CASES)
def test_scale_learned_gradient(sp, shape, sshape):
    layer, tops = make_layer({"type": "Scale", "scale_param": sp}, [shape])
    assert layer.blobs[0].shape == sshape
    assert np.all(layer.blobs[0].data == 1)  # Caffe's default filler: constant 1
    if sp.get("bias_term"):
        assert len(layer.blobs) == 2 and layer.blobs[1].shape == sshape
        assert np.all(layer.blobs[1].data == 0)
    for i, b in enumerate(layer.blobs):
        b.data[...] = rand(b.shape, 10 + i)
    check_gradients(layer, [rand(shape)], tops)


def test_scale_forward_value():
    layer, tops = make_layer({"type": "Scale", "scale_param": {"axis": 1, "num_axes": 2,
                                                               "bias_term": True}}, [(2, 3, 4, 5)])
    s, b = rand((3, 4), 1), rand((3, 4), 2)
    layer.blobs[0].data[...] = s
    layer.blobs[1].data[...] = b
    x = rand((2, 3, 4, 5))
    _, top = run_forward(layer, [x], tops)
    np.testing.assert_allclose(top[0].data, x * s[:, :, None] + b[:, :, None], rtol=1e-14)


@pytest.mark.parametrize("bias", [False, True])
def test_scale_two_bottoms_gradient(bias):
    shape, sshape = (2, 3, 4, 5), (3, 4)
    layer, tops = make_layer({"type": "Scale", "scale_param": {"bias_term": bias}},
                             [shape, sshape])
    assert len(layer.blobs) == (1 if bias else 0)
    if bias:
        layer.blobs[0].data[...] = rand(sshape, 5)
    check_gradients(layer, [rand(shape), rand(sshape, 1)], tops)


def test_scale_filler_and_shape_errors():
    layer, _ = make_layer({"type": "Scale", "scale_param": {
        "filler": {"type": "constant", "value": 3}, "bias_term": True,
        "bias_filler": {"type": "constant", "value": -2}}}, [(2, 3)])
    assert np.all(layer.blobs[0].data == 3) and np.all(layer.blobs[1].data == -2)
    with pytest.raises(Exception, match="scale"):
        make_layer({"type": "Scale", "scale_param": {"axis": 1, "num_axes": 3}}, [(2, 3)])
    with pytest.raises(Exception, match="does not match"):
        make_layer({"type": "Scale"}, [(2, 3, 4), (4,)])


def test_scale_in_place_equals_out_of_place():
    shape = (2, 3, 4)
    x, dy = rand(shape, 1), rand(shape, 2)
    spec = {"type": "Scale", "scale_param": {"bias_term": True}}
    out = []
    for in_place in (False, True):
        layer, tops = make_layer(spec, [shape])
        layer.blobs[0].data[...] = rand((3,), 3)
        layer.blobs[1].data[...] = rand((3,), 4)
        if in_place:
            blob = Blob("x", x.copy(), np)
            layer.forward([blob], [blob])
            y = blob.data.copy()
            blob.diff = dy.copy()
            layer.backward([blob], [True], [blob])
            out.append([y, blob.diff] + [b.diff for b in layer.blobs])
        else:
            bottom, top = forward_backward_blobs(layer, [x], tops, [dy])
            out.append([top[0].data, bottom[0].diff] + [b.diff for b in layer.blobs])
    for a, b in zip(*out):
        np.testing.assert_allclose(b, a, rtol=1e-14)


def test_scale_param_diffs_accumulate():
    layer, tops = make_layer({"type": "Scale", "scale_param": {"bias_term": True}}, [(2, 3)])
    x, dy = rand((2, 3)), rand((2, 3), 1)
    forward_backward_blobs(layer, [x], tops, [dy])
    forward_backward_blobs(layer, [x], tops, [dy])
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * (x * dy).sum(axis=0))
    np.testing.assert_allclose(layer.blobs[1].diff, 2 * dy.sum(axis=0))


# -- Softmax ---------------------------------------------------------------------------------

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


# -- SoftmaxWithLoss -------------------------------------------------------------------------

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


# -- EuclideanLoss ---------------------------------------------------------------------------

def test_euclidean_gradient_and_value():
    a, b = rand((4, 3, 2)), rand((4, 6), 1)
    layer, tops = make_layer({"type": "EuclideanLoss"}, [a.shape, b.shape])
    assert tops == [()] and layer.is_loss
    _, top = run_forward(layer, [a, b], tops)
    np.testing.assert_allclose(top[0].data, ((a.reshape(4, 6) - b) ** 2).sum() / 8, rtol=1e-12)
    check_gradients(layer, [a, b], tops)


# -- Accuracy --------------------------------------------------------------------------------

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


# -- float32 end to end ----------------------------------------------------------------------

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


# -- Caffe parity (golden values from real Caffe, float32) -----------------------------------

def golden(case):
    return dict(np.load(GOLDEN / f"{case}.npz"))


def close(actual, expected):
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=1e-5,
                               atol=1e-6 * max(1.0, float(np.abs(expected).max(initial=0))))


@pytest.mark.parametrize("case,bn_param", [
    ("batchnorm_train_scale", {"use_global_stats": False, "moving_average_fraction": 0.9,
                               "eps": 1e-5}),
    ("batchnorm_global_scale", {"use_global_stats": True, "eps": 1e-5}),
])
def test_caffe_batchnorm_scale(case, bn_param):
    g = golden(case)
    x = g["input/x"]
    bn, (shape,) = make_layer({"name": "bn", "type": "BatchNorm", "batch_norm_param": bn_param},
                              [x.shape], backend=F32)
    sc, _ = make_layer({"name": "scale", "type": "Scale", "scale_param": {"bias_term": True}},
                       [shape], backend=F32)
    for layer in (bn, sc):
        for i, blob in enumerate(layer.blobs):
            blob.data[...] = g[f"param/{layer.name}/{i}"]
    xb, xn, y = (Blob(n, np.zeros(shape, np.float32), np) for n in ("x", "xn", "y"))
    xb.data[...] = x
    bn.forward([xb], [xn])
    sc.forward([xn], [y])
    close(xn.data, g["top/xn"])
    close(y.data, g["top/y"])
    y.diff = g["topdiff/y"].copy()
    sc.backward([y], [True], [xn])
    bn.backward([xn], [True], [xb])
    close(xb.diff, g["bottomdiff/x"])
    for layer in (bn, sc):
        for i, blob in enumerate(layer.blobs):
            assert blob.data.dtype == np.float32
            close(blob.diff, g[f"paramdiff/{layer.name}/{i}"])
            close(blob.data, g[f"param_after/{layer.name}/{i}"])


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


def test_caffe_scale_two_bottoms():
    g = golden("scale_two_bottoms")
    layer, tops = make_layer({"name": "l", "type": "Scale", "scale_param": {"axis": 0}},
                             [g["input/x"].shape, g["input/s"].shape], backend=F32)
    bottom, top = forward_backward_blobs(layer, [g["input/x"], g["input/s"]], tops, [g["topdiff/y"]])
    close(top[0].data, g["top/y"])
    close(bottom[0].diff, g["bottomdiff/x"])
    close(bottom[1].diff, g["bottomdiff/s"])


# -- PyTorch parity --------------------------------------------------------------------------

def test_torch_batchnorm2d_training():
    torch = pytest.importorskip("torch")
    shape = (4, 3, 5, 6)
    x, dy = rand(shape), rand(shape, 1)
    layer, tops = make_layer({"type": "BatchNorm",
                              "batch_norm_param": {"moving_average_fraction": 0.0}}, [shape])
    bottom, top = forward_backward_blobs(layer, [x], tops, [dy])
    tx = torch.tensor(x, requires_grad=True)
    bn = torch.nn.BatchNorm2d(3, eps=1e-5, momentum=1.0, affine=False).double().train()
    ty = bn(tx)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(top[0].data, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bottom[0].diff, tx.grad.numpy(), rtol=1e-8, atol=1e-12)
    # momentum 1 keeps only this batch: torch's running stats = Caffe's sums with factor 1
    np.testing.assert_allclose(layer.blobs[0].data / layer.blobs[2].data,
                               bn.running_mean.numpy(), rtol=1e-10)
    np.testing.assert_allclose(layer.blobs[1].data / layer.blobs[2].data,
                               bn.running_var.numpy(), rtol=1e-10)


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
