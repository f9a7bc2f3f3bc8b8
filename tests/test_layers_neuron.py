"""Neuron layers (netspec/layers/neuron.py): ReLU, Sigmoid, TanH, Dropout, Power, AbsVal, BNLL,
ELU, PReLU, Exp, Log, Threshold, Swish, Clip; the forks' ReLU6 (its golden values from a real
fork, tests/golden/forks/layers/).

Gradient checks in float64, closed forms, in-place runs against out-of-place ones, Dropout
statistics, Caffe parity (tests/golden/layers/, recorded by BVLC Caffe, float32), PyTorch where
installed, float32 cleanliness and the GPU against the CPU. The table-driven checks (GRAD_CASES:
gradients, float32, GPU; IN_PLACE; GOLDEN_CASES) also carry their MVN and loss cases.
"""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import check_gradients, forward_backward_blobs, labels, make_layer, run_forward
from layer_cases import ACTIVATIONS, DROPOUT, F32, SHAPE, fork_golden_net, golden, in_place, run_golden
from layer_cases import forward_backward_pair as forward_backward  # (tops, bottom diffs)

from netspec.blob import Blob
from netspec.errors import NetspecError, SpecError
from netspec.net import Net
from netspec.spec import parse_net
from netspec.spec.net import LayerParameter


# gradcheck.rand with an option (without it, the same values)
def rand(shape, seed=0, away_from_zero=0.0):
    """Standard normal values; with ``away_from_zero`` d, none lies in (−d, d) (no ReLU kink)."""
    x = np.random.default_rng(seed).standard_normal(shape)
    return np.where(np.abs(x) < away_from_zero, np.sign(x + 1e-12) * away_from_zero, x) \
        if away_from_zero else x


def reseeding(layer, seed=0):
    """Make a Dropout layer draw the same mask on every forward (a fixed function to check)."""
    forward = layer.forward

    def fwd(bottom, top):
        layer.rng = np.random.default_rng(seed)
        forward(bottom, top)

    layer.forward = fwd
    return layer


def assert_in_place_matches(spec, x, phase="TRAIN", seed=0):
    """In-place forward/backward equals the out-of-place (gradient-checked) result."""
    dy = rand(x.shape, seed=7)
    ref_layer, shapes = make_layer(spec, [x.shape], phase=phase)
    if ref_layer.type_name == "Dropout":
        reseeding(ref_layer, seed)
    (y_ref,), (dx_ref,) = forward_backward(ref_layer, [x], shapes, [dy])
    layer, _ = make_layer(spec, [x.shape], phase=phase)
    if layer.type_name == "Dropout":
        reseeding(layer, seed)
    y, dx = in_place(layer, x, dy)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=0)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=0)


# -- ReLU, Sigmoid, TanH: gradients and in place --------------------------------------------------

@pytest.mark.parametrize("spec", ACTIVATIONS, ids=lambda s: str(s))
def test_activation_gradients(spec):
    x = rand(SHAPE, away_from_zero=0.05)
    layer, shapes = make_layer(spec, [SHAPE])
    check_gradients(layer, [x], shapes)


@pytest.mark.parametrize("spec", ACTIVATIONS, ids=lambda s: str(s))
def test_activation_in_place(spec):
    assert_in_place_matches(spec, rand(SHAPE, away_from_zero=0.05))


def test_relu_values():
    x = np.array([-2.0, -0.5, 0.0, 0.5, 3.0])
    layer, shapes = make_layer({"type": "ReLU", "relu_param": {"negative_slope": 0.1}}, [x.shape])
    (y,), (dx,) = forward_backward(layer, [x], shapes, [np.ones(5)])
    np.testing.assert_allclose(y, [-0.2, -0.05, 0.0, 0.5, 3.0])
    np.testing.assert_allclose(dx, [0.1, 0.1, 0.1, 1.0, 1.0])   # Caffe: x <= 0 takes the slope


def test_sigmoid_saturates_without_overflow():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=np.float32)
    layer, shapes = make_layer({"type": "Sigmoid"}, [x.shape], backend=F32)
    with np.errstate(all="raise"):
        (y,), _ = forward_backward(layer, [x], shapes, [np.ones(5)])
    np.testing.assert_allclose(y, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-7)


# -- Dropout --------------------------------------------------------------------------------------

def test_dropout_gradient_fixed_mask():
    x = rand(SHAPE)
    layer, shapes = make_layer(DROPOUT, [SHAPE])
    check_gradients(reseeding(layer), [x], shapes)


def test_dropout_in_place():
    assert_in_place_matches(DROPOUT, rand(SHAPE), phase="TRAIN")
    assert_in_place_matches(DROPOUT, rand(SHAPE), phase="TEST")


def test_dropout_test_phase_is_identity():
    x, dy = rand(SHAPE), rand(SHAPE, seed=1)
    layer, shapes = make_layer(DROPOUT, [SHAPE], phase="TEST")
    (y,), (dx,) = forward_backward(layer, [x], shapes, [dy])
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(dx, dy)


def test_dropout_train_statistics():
    r, n = 0.3, 1_000_000
    p = 1.0 - r
    x = np.random.default_rng(1).uniform(0.5, 1.5, n).astype(np.float32)
    layer, shapes = make_layer(DROPOUT, [(n,)], backend=F32, seed=3)
    dy = np.ones(n, dtype=np.float32)
    (y,), (dx,) = forward_backward(layer, [x], shapes, [dy])
    assert y.dtype == np.float32 and dx.dtype == np.float32
    kept = y != 0
    # keep rate ~ Binomial(n, p)/n: 6 standard deviations
    assert abs(kept.mean() - p) < 6 * np.sqrt(p * (1 - p) / n)
    # kept values are x / (1 - r) (float32), dropped ones exactly 0, backward uses the same mask
    np.testing.assert_allclose(y[kept], x[kept] * np.float32(1 / p), rtol=1e-6)
    np.testing.assert_array_equal(dx, np.where(kept, np.float32(1 / p), np.float32(0)))
    # E[y | x] = x with Var[y_i | x] = x_i² (1 − p)/p: mean(y) − mean(x) has sd sqrt(Σx²(1−p)/p)/n
    sd = np.sqrt(np.sum(x.astype(np.float64) ** 2) * (1 - p) / p) / n
    assert abs(y.mean(dtype=np.float64) - x.mean(dtype=np.float64)) < 6 * sd


def test_dropout_scale_train_false():
    """py-faster-rcnn's ``scale_train: false``: training keeps x·m (no 1/(1 − r)), so
    E[y | x] = (1 − r)·x, and testing multiplies by (1 − r) to match; backward the same."""
    r, n = 0.3, 1_000_000
    p = 1.0 - r
    spec = {"type": "Dropout", "dropout_param": {"dropout_ratio": r, "scale_train": False}}
    x = np.random.default_rng(2).uniform(0.5, 1.5, n).astype(np.float32)
    dy = np.ones(n, dtype=np.float32)
    layer, shapes = make_layer(spec, [(n,)], backend=F32, seed=4)
    (y,), (dx,) = forward_backward(layer, [x], shapes, [dy])
    kept = y != 0
    assert abs(kept.mean() - p) < 6 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_array_equal(y[kept], x[kept])
    np.testing.assert_array_equal(dx, kept.astype(np.float32))
    sd = np.sqrt(np.sum(x.astype(np.float64) ** 2) * p * (1 - p)) / n   # Var[x·m] = x²p(1−p)
    assert abs(y.mean(dtype=np.float64) - p * x.mean(dtype=np.float64)) < 6 * sd
    test, shapes = make_layer(spec, [(n,)], backend=F32, phase="TEST")
    (yt,), (dxt,) = forward_backward(test, [x], shapes, [dy])
    factor = np.float32(1.0 / float(np.float32(1.0 / np.float32(p))))   # the fork's 1/scale_
    np.testing.assert_array_equal(yt, x * factor)
    np.testing.assert_array_equal(dxt, dy * factor)
    np.testing.assert_allclose(factor, p, rtol=1e-7)
    assert_in_place_matches(spec, rand(SHAPE), phase="TEST")
    assert_in_place_matches(spec, rand(SHAPE), phase="TRAIN")


def test_dropout_masks_differ_between_iterations_and_follow_the_seed():
    x = np.ones((1000,))
    a, shapes = make_layer(DROPOUT, [x.shape], seed=5)
    b, _ = make_layer(DROPOUT, [x.shape], seed=5)
    ya1 = run_forward(a, [x], shapes)[1][0].data.copy()
    ya2 = run_forward(a, [x], shapes)[1][0].data.copy()
    yb1 = run_forward(b, [x], shapes)[1][0].data.copy()
    assert not np.array_equal(ya1, ya2)
    np.testing.assert_array_equal(ya1, yb1)


# -- gradient checks (the table holds the MVN and loss cases too) ---------------------------------

GRAD_SHAPE = (2, 3, 4, 3)
POS = np.abs(rand(GRAD_SHAPE, 5)) + 0.3     # strictly positive inputs (Log, fractional Power)


GRAD_CASES = [  # id, spec, bottoms
    ("power_sq", {"type": "Power", "power_param": {"power": 2, "scale": 0.5, "shift": 1}},
     [rand(GRAD_SHAPE)]),
    ("power_cube", {"type": "Power", "power_param": {"power": 3, "scale": -1.5, "shift": 0.2}},
     [rand(GRAD_SHAPE)]),
    ("power_sqrt", {"type": "Power", "power_param": {"power": 0.5, "scale": 2.0, "shift": 0.5}},
     [POS]),
    ("power_noshift", {"type": "Power", "power_param": {"power": -1.5, "scale": 0.7}}, [POS]),
    ("power_linear", {"type": "Power", "power_param": {"power": 1, "scale": 2, "shift": 1}},
     [rand(GRAD_SHAPE)]),
    ("power_zero", {"type": "Power", "power_param": {"power": 0, "scale": 2}}, [rand(GRAD_SHAPE)]),
    ("absval", {"type": "AbsVal"}, [rand(GRAD_SHAPE)]),
    ("bnll", {"type": "BNLL"}, [rand(GRAD_SHAPE) * 3]),
    ("elu", {"type": "ELU", "elu_param": {"alpha": 0.5}}, [rand(GRAD_SHAPE)]),
    ("elu_default", {"type": "ELU"}, [rand(GRAD_SHAPE)]),
    ("prelu", {"type": "PReLU", "prelu_param": {"filler": {"type": "uniform", "min": -0.5, "max": 0.8}}},
     [rand(GRAD_SHAPE)]),
    ("prelu_shared", {"type": "PReLU", "prelu_param": {"channel_shared": True}}, [rand((4, 5))]),
    ("exp_e", {"type": "Exp"}, [rand(GRAD_SHAPE)]),
    ("exp_base2", {"type": "Exp", "exp_param": {"base": 2, "scale": 0.5, "shift": 0.1}},
     [rand(GRAD_SHAPE)]),
    ("log_e", {"type": "Log"}, [POS]),
    ("log_base10", {"type": "Log", "log_param": {"base": 10, "scale": 2, "shift": 0.5}}, [POS]),
    ("swish", {"type": "Swish", "swish_param": {"beta": 1.5}}, [rand(GRAD_SHAPE)]),
    ("clip", {"type": "Clip", "clip_param": {"min": -0.5, "max": 0.7}}, [rand(GRAD_SHAPE)]),
    ("mvn", {"type": "MVN"}, [rand(GRAD_SHAPE) * 2 + 1]),
    ("mvn_across", {"type": "MVN", "mvn_param": {"across_channels": True}}, [rand(GRAD_SHAPE)]),
    ("mvn_mean_only", {"type": "MVN", "mvn_param": {"normalize_variance": False}},
     [rand(GRAD_SHAPE)]),
    ("mvn_2d", {"type": "MVN", "mvn_param": {"across_channels": True}}, [rand((3, 7))]),
    ("sce_batch", {"type": "SigmoidCrossEntropyLoss"},
     [rand((3, 4)) * 3, np.random.default_rng(2).random((3, 4))]),
    ("sce_valid_ignore", {"type": "SigmoidCrossEntropyLoss",
                          "loss_param": {"ignore_label": -1, "normalization": "VALID"}},
     [rand((3, 2, 2)), np.where(labels((3, 2, 2), 3) == 2, -1, labels((3, 2, 2), 2))]),
    ("hinge_l1", {"type": "HingeLoss"}, [rand((4, 5)), labels((4,), 5)]),
    ("hinge_l2", {"type": "HingeLoss", "hinge_loss_param": {"norm": "L2"}},
     [rand((4, 5, 2)), labels((4,), 10)]),
    ("infogain", {"type": "InfogainLoss"},
     [rand((4, 5)), labels((4,), 5), np.abs(rand((1, 1, 5, 5), 3))]),
    ("infogain_axis2_ignore", {"type": "InfogainLoss", "top": ["loss", "prob"],
                               "infogain_loss_param": {"axis": 2},
                               "loss_param": {"ignore_label": 1}},
     [rand((2, 3, 4, 2)), labels((2, 3, 2), 4), np.abs(rand((4, 4), 3))]),
    ("contrastive_legacy", {"type": "ContrastiveLoss",
                            "contrastive_loss_param": {"legacy_version": True, "margin": 3}},
     [rand((6, 3)), rand((6, 3), 1), np.array([1, 0, 0, 1, 0, 0.0])]),
    ("multinomial", {"type": "MultinomialLogisticLoss"},
     [np.random.default_rng(4).random((4, 5)) + 0.05, labels((4,), 5)]),
]


@pytest.mark.parametrize("case,spec,bottoms", GRAD_CASES, ids=[c[0] for c in GRAD_CASES])
def test_gradients(case, spec, bottoms):
    spec = dict(spec)
    spec.setdefault("top", ["y"])
    layer, tops = make_layer(spec, [np.shape(b) for b in bottoms])
    weights = None
    if layer.is_loss:  # the loss weight seeds backward; as in Caffe, no gradient flows back
        weights = [np.asarray(1.7)] + [np.zeros(s) for s in tops[1:]]  # from a prob top
    check_gradients(layer, bottoms, tops, top_weights=weights)


# -- Power, AbsVal, BNLL, ELU, PReLU, Exp, Log, Threshold, Swish, Clip ----------------------------

def test_power_special_cases():
    x = rand((3, 4))
    layer, tops = make_layer({"type": "Power", "power_param": {"power": 0, "scale": 2}}, [x.shape])
    bottom, top = forward_backward_blobs(layer, [x], tops, [rand((3, 4), 1)])
    assert np.all(top[0].data == 1) and np.all(bottom[0].diff == 0)
    layer, tops = make_layer({"type": "Power", "power_param": {"power": 3, "scale": 0, "shift": 2}},
                             [x.shape])
    bottom, top = forward_backward_blobs(layer, [x], tops, [rand((3, 4), 1)])
    assert np.all(top[0].data == 8) and np.all(bottom[0].diff == 0)
    layer, tops = make_layer({"type": "Power", "power_param": {"power": 2.5, "scale": 1.5, "shift": 4}},
                             [x.shape])
    _, top = run_forward(layer, [x], tops)
    np.testing.assert_allclose(top[0].data, (4 + 1.5 * x) ** 2.5, rtol=1e-12)


def test_neuron_closed_forms():
    x = rand((5, 6)) * 3
    cases = [
        ({"type": "BNLL"}, np.log1p(np.exp(x))),
        ({"type": "ELU", "elu_param": {"alpha": 0.3}}, np.where(x > 0, x, 0.3 * np.expm1(x))),
        ({"type": "Exp", "exp_param": {"base": 3, "scale": 0.25, "shift": -1}}, 3.0 ** (-1 + 0.25 * x)),
        ({"type": "Log", "log_param": {"base": 2, "scale": 0.5, "shift": 10}}, np.log2(10 + 0.5 * x)),
        ({"type": "Swish"}, x / (1 + np.exp(-x))),
        ({"type": "Clip", "clip_param": {"min": -1, "max": 2}}, np.clip(x, -1, 2)),
        ({"type": "Threshold", "threshold_param": {"threshold": 0.5}}, (x > 0.5).astype(float)),
        ({"type": "AbsVal"}, np.abs(x)),
    ]
    for spec, want in cases:
        layer, tops = make_layer(spec, [x.shape])
        _, top = run_forward(layer, [x], tops)
        np.testing.assert_allclose(top[0].data, want, rtol=1e-7, atol=1e-12, err_msg=spec["type"])


def test_clip_with_min_above_max_gives_min():
    layer, tops = make_layer({"type": "Clip", "clip_param": {"min": 1, "max": -1}}, [(4,)])
    _, top = run_forward(layer, [np.array([-2.0, 0, 0.5, 3])], tops)
    np.testing.assert_array_equal(top[0].data, [1, 1, 1, 1])


def test_prelu_blob_shapes_and_default_filler():
    layer, _ = make_layer({"type": "PReLU"}, [(2, 3, 4)])
    assert layer.blobs[0].shape == (3,) and np.all(layer.blobs[0].data == 0.25)
    layer, _ = make_layer({"type": "PReLU", "prelu_param": {"channel_shared": True}}, [(2, 3, 4)])
    assert layer.blobs[0].shape == () and float(layer.blobs[0].data) == 0.25
    with pytest.raises(NetspecError, match="at least 2 axes"):
        make_layer({"type": "PReLU"}, [(5,)])


def test_prelu_matches_leaky_relu_for_equal_slopes():
    x = rand((3, 4, 2))
    layer, tops = make_layer({"type": "PReLU", "prelu_param": {"filler": {"value": 0.1}}}, [x.shape])
    _, top = run_forward(layer, [x], tops)
    np.testing.assert_allclose(top[0].data, np.where(x > 0, x, 0.1 * x))


# -- in place -------------------------------------------------------------------------------------

IN_PLACE = [
    {"type": "Power", "power_param": {"power": 2, "scale": 0.5, "shift": 1}},
    {"type": "Power", "power_param": {"power": 3, "scale": 2}},
    {"type": "BNLL"}, {"type": "ELU", "elu_param": {"alpha": 0.4}},
    {"type": "PReLU", "prelu_param": {"filler": {"value": -0.3}}},
    {"type": "Exp", "exp_param": {"base": 2, "scale": 0.5}},
    {"type": "Log", "log_param": {"shift": 5}},
    {"type": "Swish", "swish_param": {"beta": 0.7}},
    {"type": "Clip", "clip_param": {"min": -0.5, "max": 0.5}},
    {"type": "MVN"}, {"type": "MVN", "mvn_param": {"normalize_variance": False}},
]


@pytest.mark.parametrize("spec", IN_PLACE, ids=[s["type"] + str(i) for i, s in enumerate(IN_PLACE)])
def test_in_place_equals_out_of_place(spec):
    x, dy = rand((3, 4, 2, 2)), rand((3, 4, 2, 2), 1)
    x[0, 0, 0, :] = [-0.5, 0.5]  # Clip's boundaries
    results = []
    for shared in (False, True):
        layer, tops = make_layer(dict(spec, bottom="x", top="x" if shared else "y"), [x.shape])
        if shared:
            y, dx = in_place(layer, x, dy)
            results.append((y, dx, [p.diff.copy() for p in layer.blobs]))
        else:
            bottom, top = forward_backward_blobs(layer, [x], tops, [dy])
            results.append((top[0].data, bottom[0].diff, [p.diff.copy() for p in layer.blobs]))
    (y0, dx0, p0), (y1, dx1, p1) = results
    np.testing.assert_allclose(y1, y0, rtol=1e-14)
    np.testing.assert_allclose(dx1, dx0, rtol=1e-12)
    for a, b in zip(p0, p1):
        np.testing.assert_allclose(b, a, rtol=1e-12)


def test_absval_refuses_in_place():
    with pytest.raises(SpecError, match="cannot run in place"):
        make_layer({"type": "AbsVal", "bottom": "x", "top": "x"}, [(2, 3)])


# -- parameter blocks -----------------------------------------------------------------------------

def test_parameter_blocks_validate():
    with pytest.raises(Exception, match="max"):
        LayerParameter.model_validate({"name": "c", "type": "Clip", "clip_param": {"min": 0}})
    with pytest.raises(Exception, match="norm"):
        LayerParameter.model_validate({"name": "h", "type": "HingeLoss",
                                       "hinge_loss_param": {"norm": "L3"}})
    with pytest.raises(Exception, match="unknown|extra"):
        LayerParameter.model_validate({"name": "p", "type": "Power", "power_param": {"pow": 2}})
    with pytest.raises(NetspecError, match="clip_param"):
        make_layer({"type": "Clip"}, [(2,)])
    with pytest.raises(SpecError, match="base"):
        make_layer({"type": "Exp", "exp_param": {"base": -2}}, [(2,)])
    with pytest.raises(SpecError, match="base"):
        make_layer({"type": "Log", "log_param": {"base": 1}}, [(2,)])


def test_net_rejects_foreign_block():
    with pytest.raises(SpecError, match="does not read 'elu_param'"):
        Net(parse_net({"name": "n", "layer": [
            {"name": "in", "type": "Input", "top": "x", "input_param": {"shape": {"dim": [2]}}},
            {"name": "p", "type": "Power", "bottom": "x", "top": "y", "elu_param": {"alpha": 1}},
        ]}), "TRAIN", F32)


# -- Caffe parity (tests/golden/layers/, float32) -------------------------------------------------

@pytest.mark.parametrize("run_in_place", [False, True])
def test_caffe_relu_leaky(run_in_place):
    g = golden("relu_leaky")
    spec = {"name": "l", "type": "ReLU", "bottom": "x", "top": "y",
            "relu_param": {"negative_slope": 0.1}}
    x, dy = g["input/x"], g["topdiff/y"]
    layer, shapes = make_layer(spec, [x.shape], backend=F32)
    if run_in_place:
        y, dx = in_place(layer, x, dy)
    else:
        (y,), (dx,) = forward_backward(layer, [x], shapes, [dy])
    np.testing.assert_allclose(y, g["top/y"], rtol=1e-5)
    np.testing.assert_allclose(dx, g["bottomdiff/x"], rtol=1e-5)


def test_caffe_sigmoid_tanh():
    g = golden("sigmoid_tanh")
    x = g["input/x"]
    sig, s_shapes = make_layer({"name": "s", "type": "Sigmoid", "bottom": "x", "top": "s"},
                               [x.shape], backend=F32)
    tanh, t_shapes = make_layer({"name": "t", "type": "TanH", "bottom": "s", "top": "y"},
                                s_shapes, backend=F32)
    xb, sb = run_forward(sig, [x], s_shapes)
    _, yb = run_forward(tanh, [sb[0].data], t_shapes)
    np.testing.assert_allclose(sb[0].data, g["top/s"], rtol=1e-5)
    np.testing.assert_allclose(yb[0].data, g["top/y"], rtol=1e-5)
    yb[0].diff = g["topdiff/y"].copy()
    tanh.backward(yb, [True], sb)
    sig.backward(sb, [True], xb)
    np.testing.assert_allclose(xb[0].diff, g["bottomdiff/x"], rtol=1e-5, atol=1e-7)


# layer_cases.close after reshaping the actual values to the recorded shape
def close(actual, expected):
    expected = np.asarray(expected)
    np.testing.assert_allclose(np.asarray(actual).reshape(expected.shape), expected, rtol=1e-5,
                               atol=1e-6 * max(1.0, float(np.abs(expected).max(initial=0))))


GOLDEN_CASES = [  # case, spec (as in <case>.prototxt), bottoms, tops
    ("absval", {"type": "AbsVal"}, ["x"], ["y"]),
    ("bnll", {"type": "BNLL"}, ["x"], ["y"]),
    ("exp_base2", {"type": "Exp", "exp_param": {"base": 2, "scale": 0.5, "shift": 0.1}}, ["x"], ["y"]),
    ("log_base10", {"type": "Log", "log_param": {"base": 10, "scale": 2, "shift": 0.5}}, ["x"], ["y"]),
    ("threshold", {"type": "Threshold", "threshold_param": {"threshold": 0.2}}, ["x"], ["y"]),
    ("swish", {"type": "Swish", "swish_param": {"beta": 1.5}}, ["x"], ["y"]),
    ("clip", {"type": "Clip", "clip_param": {"min": -0.5, "max": 0.7}}, ["x"], ["y"]),
    ("mvn_across", {"type": "MVN", "mvn_param": {"normalize_variance": True,
                                                 "across_channels": True}}, ["x"], ["y"]),
    ("mvn_mean_only", {"type": "MVN", "mvn_param": {"normalize_variance": False}}, ["x"], ["y"]),
    ("hinge_l1", {"type": "HingeLoss", "hinge_loss_param": {"norm": "L1"}}, ["x", "label"], ["loss"]),
    ("hinge_l2", {"type": "HingeLoss", "hinge_loss_param": {"norm": "L2"}}, ["x", "label"], ["loss"]),
    ("infogain_3bottoms", {"type": "InfogainLoss"}, ["x", "label", "H"], ["loss"]),
    ("multinomial_logistic", {"type": "MultinomialLogisticLoss"}, ["p", "label"], ["loss"]),
]


@pytest.mark.parametrize("case,spec,bottoms,tops", GOLDEN_CASES, ids=[c[0] for c in GOLDEN_CASES])
def test_caffe_parity(case, spec, bottoms, tops):
    g = golden(case)
    layer, shapes = make_layer({"name": "l", "bottom": bottoms, "top": tops, **spec},
                               [g[f"input/{b}"].shape for b in bottoms], backend=F32)
    bottom, top = run_forward(layer, [g[f"input/{b}"] for b in bottoms], shapes)
    for name, t in zip(tops, top):
        assert t.data.dtype == np.float32
        close(t.data, g[f"top/{name}"])
    if not layer.has_backward or not any(k.startswith("bottomdiff/") for k in g):
        return
    for name, t in zip(tops, top):
        t.diff = np.asarray(g.get(f"topdiff/{name}", 1.0), dtype=np.float32)  # losses: weight 1
    prop = [i not in layer.no_grad_bottoms for i in range(len(bottom))]
    layer.backward(top, prop, bottom)
    for name, b, p in zip(bottoms, bottom, prop):
        if p:
            assert b.diff.dtype == np.float32
            close(b.diff, g[f"bottomdiff/{name}"])


# -- PyTorch parity (skipped when torch is absent) ------------------------------------------------

@pytest.mark.parametrize("spec, fn", [
    ({"type": "ReLU", "relu_param": {"negative_slope": 0.1}},
     lambda torch, t: torch.nn.functional.leaky_relu(t, 0.1)),
    ({"type": "Sigmoid"}, lambda torch, t: torch.sigmoid(t)),
    ({"type": "TanH"}, lambda torch, t: torch.tanh(t)),
], ids=["leaky_relu", "sigmoid", "tanh"])
def test_against_torch(spec, fn):
    torch = pytest.importorskip("torch")
    x = rand(SHAPE, away_from_zero=0.01).astype(np.float32)
    dy = rand(SHAPE, seed=3).astype(np.float32)
    layer, shapes = make_layer(spec, [SHAPE], backend=F32)
    (y,), (dx,) = forward_backward(layer, [x], shapes, [dy])
    t = torch.tensor(x, requires_grad=True)
    out = fn(torch, t)
    out.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, out.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, t.grad.numpy(), rtol=1e-5, atol=1e-6)


# -- float32 end to end ---------------------------------------------------------------------------

def _f32_cases():
    out = []
    for case, spec, bottoms in GRAD_CASES:
        out.append((case, spec, bottoms))
    return out


@pytest.mark.parametrize("case,spec,bottoms", _f32_cases(), ids=[c[0] for c in GRAD_CASES])
def test_float32_end_to_end(case, spec, bottoms):
    """Tops, diffs, parameter diffs and every array a layer caches stay float32."""
    bottoms = [np.asarray(b, dtype=np.float32) for b in bottoms]
    spec = dict(spec)
    spec.setdefault("top", ["y"])
    layer, tops = make_layer(spec, [b.shape for b in bottoms], backend=F32)
    bottom, top = run_forward(layer, bottoms, tops)
    for t in top:
        t.diff = np.ones(t.shape, dtype=np.float32)
    layer.backward(top, [i not in layer.no_grad_bottoms for i in range(len(bottom))], bottom)
    arrays = [t.data for t in top] + [b.data for b in layer.blobs] + [b.diff for b in layer.blobs]
    arrays += [b.diff for b in bottom if b._diff is not None]
    arrays += [v for v in vars(layer).values() if isinstance(v, np.ndarray)]
    floats = [a for a in arrays if np.issubdtype(np.asarray(a).dtype, np.floating)]
    assert floats and all(np.asarray(a).dtype == np.float32 for a in floats), \
        [np.asarray(a).dtype for a in floats]


# -- GPU: the same numbers on CuPy ----------------------------------------------------------------

GPU_CASES = [c for c in GRAD_CASES if c[0] not in ("power_zero",)]


@pytest.mark.gpu
@pytest.mark.parametrize("case,spec,bottoms", GPU_CASES, ids=[c[0] for c in GPU_CASES])
def test_gpu_equals_cpu(case, spec, bottoms):
    from netspec.backend import get_backend, to_numpy

    gpu = get_backend(True, "float32")
    spec = dict(spec)
    spec.setdefault("top", ["y"])
    results = []
    for backend in (F32, gpu):
        layer, tops = make_layer(spec, [np.shape(b) for b in bottoms], backend=backend)
        xp = backend.xp
        bottom = [Blob(f"b{i}", xp.asarray(np.asarray(b, np.float32)), xp) for i, b in enumerate(bottoms)]
        top = [Blob(f"t{i}", backend.zeros(s), xp) for i, s in enumerate(tops)]
        layer.forward(bottom, top)
        for i, t in enumerate(top):
            t.diff = xp.asarray(np.asarray(1.0 if layer.is_loss and i == 0 else rand(t.shape, 7),
                                           np.float32))
        layer.backward(top, [i not in layer.no_grad_bottoms for i in range(len(bottom))], bottom)
        results.append([to_numpy(t.data) for t in top] + [to_numpy(b.diff) for b in bottom]
                       + [to_numpy(p.diff) for p in layer.blobs])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=2e-5, atol=1e-6)


# -- ReLU6 (the MobileNet forks) -------------------------------------------------------------------

def test_relu6_gradient_and_closed_form():
    # values on both sides of 0 and 6, none at a kink
    x = rand((2, 3, 4, 5), seed=3) * 4 + 3
    x[np.abs(x) < 0.05] = 0.5
    x[np.abs(x - 6) < 0.05] = 6.5
    layer, shapes = make_layer({"type": "ReLU6"}, [x.shape])
    check_gradients(layer, [x], shapes)
    (y,), (dx,) = forward_backward(layer, [x], shapes, [np.ones_like(x)])
    np.testing.assert_array_equal(y, np.clip(x, 0, 6))
    np.testing.assert_array_equal(dx, ((x > 0) & (x < 6)).astype(x.dtype))


def test_relu6_in_place_equals_out_of_place():
    x, dy = rand((2, 3, 4, 5), seed=4) * 5, rand((2, 3, 4, 5), seed=5)
    layer, shapes = make_layer({"type": "ReLU6"}, [x.shape])
    (y0,), (dx0,) = forward_backward(layer, [x], shapes, [dy])
    y1, dx1 = in_place(layer, x, dy)
    np.testing.assert_array_equal(y0, y1)
    np.testing.assert_array_equal(dx0, dx1)


def test_fork_golden_relu6():
    net, g = fork_golden_net("relu6")
    assert run_golden(net, g) == ["x"]   # forward and the bottom diff (no parameters)
