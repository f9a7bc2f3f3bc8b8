"""Parameter gradients the solver has just zeroed are written by the first layer that produces
them (``Param.diff_is_zero``) and accumulated by every later one: shared weights, iter_size."""

from __future__ import annotations

import numpy as np
import pytest

from netspec.backend import Backend
from netspec.log import CaffeLog
from netspec.solvers import Solver
from netspec.spec import parse_net
from netspec.spec.solver import SolverParameter

F64 = Backend(np, np.float64)
N, K, M = 3, 4, 5


def shared_net():
    """Two InnerProduct layers sharing weight and bias on one input, each with its own
    EuclideanLoss: dW = Σ_layers (1/N) Σ_n (y_n − t_n) x_nᵀ."""
    share = [{"name": "w"}, {"name": "b"}]
    filler = {"weight_filler": {"type": "gaussian", "std": 1},
              "bias_filler": {"type": "gaussian", "std": 1}}

    def inp(name, dims):
        return {"name": name, "type": "Input", "top": name,
                "input_param": {"shape": {"dim": list(dims)}}}

    def ip(name):
        return {"name": name, "type": "InnerProduct", "bottom": "x", "top": name, "param": share,
                "inner_product_param": {"num_output": M, **filler}}

    def loss(name, y, t):
        return {"name": name, "type": "EuclideanLoss", "bottom": [y, t], "top": name}

    return {"name": "shared", "layer": [inp("x", (N, K)), inp("t1", (N, M)), inp("t2", (N, M)),
                                        ip("a"), ip("b"), loss("la", "a", "t1"),
                                        loss("lb", "b", "t2")]}


@pytest.mark.parametrize("iter_size", [1, 2])
def test_shared_weights_and_iter_size_accumulate(iter_size):
    """One SGD step (lr 1, no momentum, no decay) moves W by exactly the summed gradient of both
    layers; with iter_size 2 the two passes add up and are averaged (the same gradient)."""
    sp = SolverParameter.model_validate({"net": "x", "base_lr": 1.0, "lr_policy": "fixed",
                                         "momentum": 0.0, "weight_decay": 0.0, "random_seed": 5,
                                         "iter_size": iter_size})
    s = Solver(sp, backend=F64, net_param=parse_net(shared_net()), log=CaffeLog(quiet=True))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, K))
    t1, t2 = rng.standard_normal((N, M)), rng.standard_normal((N, M))
    for name, v in (("x", x), ("t1", t1), ("t2", t2)):
        s.net.blobs[name].data[...] = v
    a, b = s.net.layer_by_name("a"), s.net.layer_by_name("b")
    assert a.blobs[0] is b.blobs[0] and a.blobs[1] is b.blobs[1]
    W, bias = a.blobs[0].data.copy(), a.blobs[1].data.copy()
    y = x @ W.T + bias
    dW = ((y - t1).T @ x + (y - t2).T @ x) / N
    db = ((y - t1).sum(axis=0) + (y - t2).sum(axis=0)) / N
    s.step_once()
    np.testing.assert_allclose(a.blobs[0].data, W - dW, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.blobs[1].data, bias - db, rtol=1e-12, atol=1e-12)
    assert not any(p.diff_is_zero for p in s.net.params)


def test_backward_outside_the_solver_accumulates():
    """A plain Net.backward (no solver zeroing: ``diff_is_zero`` False) adds to the diffs."""
    sp = SolverParameter.model_validate({"net": "x", "base_lr": 1.0, "random_seed": 5})
    s = Solver(sp, backend=F64, net_param=parse_net(shared_net()), log=CaffeLog(quiet=True))
    rng = np.random.default_rng(1)
    for name, shape in (("x", (N, K)), ("t1", (N, M)), ("t2", (N, M))):
        s.net.blobs[name].data[...] = rng.standard_normal(shape)
    s.net.clear_param_diffs()
    s.net.forward_backward()
    once = s.net.params[0].diff.copy()
    s.net.forward_backward()
    np.testing.assert_allclose(s.net.params[0].diff, 2 * once, rtol=1e-12)


def bias_shared_net():
    """x → InnerProduct a (weight w, bias bb) → Bias layer sharing bb → EuclideanLoss: in
    backward order the Bias layer (which adds) produces bb's gradient first, the InnerProduct
    (which writes) w's. c = x Wᵀ + 2·bb."""
    def inp(name, dims):
        return {"name": name, "type": "Input", "top": name,
                "input_param": {"shape": {"dim": list(dims)}}}
    return {"name": "bias_shared", "layer": [
        inp("x", (N, K)), inp("t", (N, M)),
        {"name": "a", "type": "InnerProduct", "bottom": "x", "top": "a",
         "param": [{"name": "w"}, {"name": "bb"}],
         "inner_product_param": {"num_output": M, "weight_filler": {"type": "gaussian", "std": 1},
                                 "bias_filler": {"type": "gaussian", "std": 1}}},
        {"name": "bl", "type": "Bias", "bottom": "a", "top": "c", "param": [{"name": "bb"}]},
        {"name": "loss", "type": "EuclideanLoss", "bottom": ["c", "t"], "top": "loss"}]}


def test_solver_zeroes_what_an_adding_layer_produces_first():
    """Only bb (first produced by the adding Bias layer) is zeroed before each iteration; w is
    written by InnerProduct. Three SGD steps (lr 0.1) follow the closed form, so no stale
    gradient leaks into the next step; an MLP of InnerProducts zeroes nothing."""
    sp = SolverParameter.model_validate({"net": "x", "base_lr": 0.1, "lr_policy": "fixed",
                                         "momentum": 0.0, "weight_decay": 0.0, "random_seed": 5})
    s = Solver(sp, backend=F64, net_param=parse_net(bias_shared_net()), log=CaffeLog(quiet=True))
    a, bl = s.net.layer_by_name("a"), s.net.layer_by_name("bl")
    assert a.blobs[1] is bl.blobs[0]
    assert [z.size for z in s._zeroed] == [M]
    rng = np.random.default_rng(2)
    x, t = rng.standard_normal((N, K)), rng.standard_normal((N, M))
    s.net.blobs["x"].data[...] = x
    s.net.blobs["t"].data[...] = t
    W, bb = a.blobs[0].data.copy(), a.blobs[1].data.copy()
    for _ in range(3):
        r = (x @ W.T + 2 * bb - t) / N          # dL/dc of EuclideanLoss (1/2N)·Σ‖c − t‖²
        W, bb = W - 0.1 * r.T @ x, bb - 0.1 * 2 * r.sum(axis=0)
        s.step_once()
        np.testing.assert_allclose(a.blobs[0].data, W, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(a.blobs[1].data, bb, rtol=1e-12, atol=1e-12)
    mlp = Solver(sp, backend=F64, net_param=parse_net(shared_net()), log=CaffeLog(quiet=True))
    assert mlp._zeroed == []


def test_convolution_two_bottoms_written_then_added():
    """Convolution (two bottoms, one set of weights) writes the first bottom's gradient into
    a just-zeroed diff and adds the second's: one SGD step (lr 1) moves W by the sum of both,
    computed here from the layer's own accumulate path on zeroed diffs."""
    def inp(name, dims):
        return {"name": name, "type": "Input", "top": name,
                "input_param": {"shape": {"dim": list(dims)}}}
    spec = {"name": "conv2", "layer": [
        inp("x0", (2, 2, 5, 5)), inp("x1", (2, 2, 5, 5)), inp("t0", (2, 3, 5, 5)),
        inp("t1", (2, 3, 5, 5)),
        {"name": "conv", "type": "Convolution", "bottom": ["x0", "x1"], "top": ["y0", "y1"],
         "convolution_param": {"num_output": 3, "kernel_size": 3, "pad": 1,
                               "weight_filler": {"type": "gaussian", "std": 1},
                               "bias_filler": {"type": "gaussian", "std": 1}}},
        {"name": "l0", "type": "EuclideanLoss", "bottom": ["y0", "t0"], "top": "l0"},
        {"name": "l1", "type": "EuclideanLoss", "bottom": ["y1", "t1"], "top": "l1"}]}
    sp = SolverParameter.model_validate({"net": "x", "base_lr": 1.0, "lr_policy": "fixed",
                                         "momentum": 0.0, "weight_decay": 0.0, "random_seed": 5})
    s = Solver(sp, backend=F64, net_param=parse_net(spec), log=CaffeLog(quiet=True))
    assert s._zeroed == []
    rng = np.random.default_rng(3)
    for name in ("x0", "x1", "t0", "t1"):
        s.net.blobs[name].data[...] = rng.standard_normal(s.net.blobs[name].shape)
    conv = s.net.layer_by_name("conv")
    W, b = conv.blobs[0].data.copy(), conv.blobs[1].data.copy()
    s.net.clear_param_diffs()                   # reference: flags False, every bottom adds
    s.net.forward_backward()
    dW, db = conv.blobs[0].diff.copy(), conv.blobs[1].diff.copy()
    s.net.params[0].diff[...] = 123.0           # stale values the step must overwrite
    s.step_once()
    np.testing.assert_allclose(conv.blobs[0].data, W - dW, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.blobs[1].data, b - db, rtol=1e-12, atol=1e-12)
