"""Solver updates against closed forms derived here (not from netspec's own code).

A net whose input is all zeros gives its InnerProduct weights a zero data gradient, so the
weight trajectory is pure regularization: each mode's formula can be written down exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from netspec.backend import Backend
from netspec.log import CaffeLog
from netspec.solvers import Solver
from netspec.spec import parse_net
from netspec.spec.solver import SolverParameter

F64 = Backend(np, np.float64)


def zero_input_net(w_mult=None):
    w_mult = w_mult or {"lr_mult": 1, "decay_mult": 1}
    return {"name": "z", "layer": [
        {"name": "data", "type": "Input", "top": "data", "input_param": {"shape": {"dim": [2, 3]}}},
        {"name": "target", "type": "Input", "top": "target", "input_param": {"shape": {"dim": [2, 4]}}},
        {"name": "ip", "type": "InnerProduct", "bottom": "data", "top": "ip",
         "param": [w_mult, {"lr_mult": 1, "decay_mult": 0}],
         "inner_product_param": {"num_output": 4, "weight_filler": {"type": "gaussian", "std": 1}}},
        {"name": "loss", "type": "EuclideanLoss", "bottom": ["ip", "target"], "top": "loss"},
    ]}


def make(settings, w_mult=None):
    sp = SolverParameter.model_validate({"net": "x", "random_seed": 3, **settings})
    s = Solver(sp, backend=F64, net_param=parse_net(zero_input_net(w_mult)), log=CaffeLog(quiet=True))
    s.net.blobs["data"].data[...] = 0
    s.net.blobs["target"].data[...] = 0
    return s


def weights_after(s, steps):
    out = []
    for _ in range(steps):
        s.step_once()
        out.append(s.net.layer_by_name("ip").blobs[0].data.copy())
    return out


@pytest.mark.parametrize("mult", [1.0, 2.5])
def test_l2_plain_sgd_shrinks_by_lr_lambda(mult):
    s = make({"base_lr": 0.1, "weight_decay": 0.01, "regularization_type": "L2"},
             {"lr_mult": 1, "decay_mult": mult})
    w0 = s.net.layer_by_name("ip").blobs[0].data.copy()
    for t, w in enumerate(weights_after(s, 4), start=1):
        np.testing.assert_allclose(w, w0 * (1 - 0.1 * 0.01 * mult) ** t, rtol=1e-12)


def test_l2_with_momentum_recursion():
    s = make({"base_lr": 0.1, "momentum": 0.9, "weight_decay": 0.05, "regularization_type": "L2"})
    w = s.net.layer_by_name("ip").blobs[0].data.copy()
    v = np.zeros_like(w)
    for got in weights_after(s, 5):
        v = 0.9 * v + 0.1 * 0.05 * w
        w = w - v
        np.testing.assert_allclose(got, w, rtol=1e-12)


def test_l1_subtracts_sign():
    s = make({"base_lr": 0.01, "weight_decay": 0.1, "regularization_type": "L1"})
    w = s.net.layer_by_name("ip").blobs[0].data.copy()
    for got in weights_after(s, 3):
        w = w - 0.01 * 0.1 * np.sign(w)
        np.testing.assert_allclose(got, w, rtol=1e-12)


def test_decoupled_fixed_lr_is_literal_shrink():
    s = make({"base_lr": 0.1, "momentum": 0.9, "weight_decay": 0.0005, "regularization_type": "decoupled"})
    w0 = s.net.layer_by_name("ip").blobs[0].data.copy()
    for t, w in enumerate(weights_after(s, 4), start=1):
        np.testing.assert_allclose(w, w0 * (1 - 0.0005) ** t, rtol=1e-12)


def test_decoupled_follows_schedule():
    s = make({"base_lr": 0.1, "weight_decay": 0.01, "regularization_type": "decoupled",
              "lr_policy": "step", "gamma": 0.5, "stepsize": 2})
    w = s.net.layer_by_name("ip").blobs[0].data.copy()
    for it, got in enumerate(weights_after(s, 5)):
        lr = 0.1 * 0.5 ** (it // 2)
        w = w * (1 - 0.01 * lr / 0.1)
        np.testing.assert_allclose(got, w, rtol=1e-12)


def test_decoupled_shrinks_after_the_update():
    """With a data gradient, decoupled gives W' = (W - lr*g) * (1 - d), not W*(1-d) - lr*g."""
    sp = SolverParameter.model_validate({"net": "x", "base_lr": 0.1, "weight_decay": 0.2,
                                         "regularization_type": "decoupled", "random_seed": 1})
    s = Solver(sp, backend=F64, net_param=parse_net(zero_input_net()), log=CaffeLog(quiet=True))
    x = np.array([[1.0, 2.0, -1.0], [0.5, 0.0, 1.0]])
    t = np.zeros((2, 4))
    s.net.blobs["data"].data[...] = x
    s.net.blobs["target"].data[...] = t
    ip = s.net.layer_by_name("ip")
    w, b = ip.blobs[0].data.copy(), ip.blobs[1].data.copy()
    y = x @ w.T + b
    g = (y - t).T @ x / 2  # EuclideanLoss: sum((y-t)^2)/(2N), N = 2
    s.step_once()
    np.testing.assert_allclose(ip.blobs[0].data, (w - 0.1 * g) * (1 - 0.2), rtol=1e-12)


def test_lr_mult_zero_freezes_and_is_never_decayed():
    for reg in ("L2", "L1", "decoupled"):
        s = make({"base_lr": 0.1, "weight_decay": 0.5, "regularization_type": reg},
                 {"lr_mult": 0, "decay_mult": 1})
        w0 = s.net.layer_by_name("ip").blobs[0].data.copy()
        for w in weights_after(s, 3):
            np.testing.assert_array_equal(w, w0)


def test_decay_mult_zero_exempts():
    for reg in ("L2", "L1", "decoupled"):
        s = make({"base_lr": 0.1, "weight_decay": 0.5, "regularization_type": reg},
                 {"lr_mult": 1, "decay_mult": 0})
        w0 = s.net.layer_by_name("ip").blobs[0].data.copy()
        for w in weights_after(s, 3):
            np.testing.assert_array_equal(w, w0)


def test_clip_gradients_scales_to_threshold():
    sp = SolverParameter.model_validate({"net": "x", "base_lr": 1.0, "clip_gradients": 0.1,
                                         "random_seed": 1})
    s = Solver(sp, backend=F64, net_param=parse_net(zero_input_net()), log=CaffeLog(quiet=True))
    s.net.blobs["data"].data[...] = 1.0
    s.net.blobs["target"].data[...] = 5.0
    before = [p.data.copy() for p in s.params]
    s.step_once()
    step = np.sqrt(sum(np.sum((p.data - b) ** 2) for p, b in zip(s.params, before)))
    np.testing.assert_allclose(step, 0.1, rtol=1e-12)  # lr 1: the step is the clipped gradient


def test_adamw_rejects_coupled_decay():
    from netspec.errors import SpecError

    with pytest.raises(SpecError, match="decoupled"):
        make({"type": "AdamW", "base_lr": 0.1, "weight_decay": 0.1, "regularization_type": "L2"})


def test_decoupled_small_decay_is_not_quantised_in_float32():
    """d = 1e-6 per step in float32: (1 - d) rounded to float32 would be off by ~3 %."""
    sp = SolverParameter.model_validate({"net": "x", "base_lr": 0.1, "weight_decay": 1e-6,
                                         "regularization_type": "decoupled", "random_seed": 2})
    s = Solver(sp, backend=Backend(np, np.float32), net_param=parse_net(zero_input_net()),
               log=CaffeLog(quiet=True))
    s.net.blobs["data"].data[...] = 0
    s.net.blobs["target"].data[...] = 0
    w0 = s.net.layer_by_name("ip").blobs[0].data.astype(np.float64)
    for _ in range(1000):
        s.step_once()
    w = s.net.layer_by_name("ip").blobs[0].data.astype(np.float64)
    shrink = 1 - np.linalg.norm(w) / np.linalg.norm(w0)
    expected = 1 - (1 - 1e-6) ** 1000
    assert abs(shrink - expected) / expected < 0.01


@pytest.mark.parametrize("rule", ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam", "AdamW"])
def test_decoupled_decay_under_every_rule(rule):
    """Zero input: the weights' data gradient is 0, so every rule's step Δ is 0 (Adam: m = 0;
    AdaGrad/RMSProp: 0/(0+δ); AdaDelta: u = 0) and only the decoupled shrink moves W."""
    s = make({"type": rule, "base_lr": 0.1, "momentum": 0.9, "weight_decay": 0.02,
              "regularization_type": "decoupled", "lr_policy": "exp", "gamma": 0.5})
    w = s.net.layer_by_name("ip").blobs[0].data.copy()
    for it, got in enumerate(weights_after(s, 4)):
        w = w * (1 - 0.02 * (0.1 * 0.5 ** it) / 0.1)
        np.testing.assert_allclose(got, w, rtol=1e-12)


def test_legacy_solver_type_enum():
    for legacy, rule in (("SGD", "SGD"), ("NESTEROV", "Nesterov"), ("ADAGRAD", "AdaGrad"),
                         ("RMSPROP", "RMSProp"), ("ADADELTA", "AdaDelta"), ("ADAM", "Adam")):
        sp = SolverParameter.model_validate({"net": "x", "solver_type": legacy})
        assert sp.type == rule
    with pytest.raises(ValueError, match="cannot both be given"):
        SolverParameter.model_validate({"net": "x", "solver_type": "ADAM", "type": "SGD"})
