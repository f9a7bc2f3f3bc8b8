"""Graph passes and Net construction: phases, splits for fan-out, in place, sharing, backward plan."""

from __future__ import annotations

import numpy as np
import pytest

from netspec import graph
from netspec.backend import Backend
from netspec.errors import SpecError
from netspec.net import Net
from netspec.spec import parse_net
from netspec.spec.params import NetState

F64 = Backend(np, np.float64)


def inp(name, shape):
    return {"name": name, "type": "Input", "top": name, "input_param": {"shape": {"dim": list(shape)}}}


def ip(name, bottom, n, **kw):
    return {"name": name, "type": "InnerProduct", "bottom": bottom, "top": kw.pop("top", name),
            "inner_product_param": {"num_output": n, "weight_filler": {"type": "gaussian", "std": 0.5},
                                    "bias_filler": {"type": "gaussian", "std": 0.5}}, **kw}


def net_of(layers, **kw):
    return parse_net({"name": "t", "layer": layers, **kw})


def test_phase_stage_level_filtering():
    layers = [inp("x", (1, 2)),
              {**ip("a", "x", 2), "include": {"phase": "TRAIN"}},
              {**ip("b", "x", 2), "include": {"phase": "TEST"}},
              {**ip("c", "x", 2), "include": {"stage": "deploy"}},
              {**ip("d", "x", 2), "exclude": {"phase": "TEST"}},
              {**ip("e", "x", 2), "include": {"min_level": 2}},
              {**ip("f", "x", 2), "include": [{"phase": "TEST", "stage": "val"}, {"phase": "TRAIN"}]}]
    p = net_of(layers)

    def names(**state):
        return [d.lp.name for d in graph.filter_phase(p, NetState(**state))]

    assert names(phase="TRAIN") == ["x", "a", "d", "f"]
    assert names(phase="TEST") == ["x", "b"]
    assert names(phase="TEST", stage=["deploy", "val"]) == ["x", "b", "c", "f"]
    assert names(phase="TEST", level=3) == ["x", "b", "e"]


def test_split_inserted_for_fan_out_and_gradient_accumulates():
    layers = [inp("x", (3, 4)), inp("t", (3, 2)), ip("a", "x", 5),
              ip("b", "a", 2), ip("c", "a", 2),
              {"name": "sum", "type": "Eltwise", "bottom": ["b", "c"], "top": "s"},
              {"name": "loss", "type": "EuclideanLoss", "bottom": ["s", "t"], "top": "loss"}]
    net = Net(net_of(layers, force_backward=True), "TRAIN", F64)
    types = [l.type_name for l in net.layers]
    assert types.count("Split") == 1
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((3, 4)), rng.standard_normal((3, 2))

    def loss_at(xv):
        net.blobs["x"].data[...] = xv
        net.blobs["t"].data[...] = t
        return net.forward()

    loss_at(x)
    net.clear_param_diffs()
    net.backward()
    analytic = net.blobs["x"].diff.copy()
    numeric = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = 1e-6
        numeric[idx] = (loss_at(x + e) - loss_at(x - e)) / 2e-6
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)
    # parameter gradient of 'a' sums both paths too
    a = net.layer_by_name("a").blobs[0]
    w0 = a.data.copy()
    e = np.zeros_like(w0)
    e[1, 2] = 1e-6
    a.data[...] = w0 + e
    lp = loss_at(x)
    a.data[...] = w0 - e
    lm = loss_at(x)
    a.data[...] = w0
    loss_at(x)
    net.clear_param_diffs()
    net.backward()
    np.testing.assert_allclose(a.diff[1, 2], (lp - lm) / 2e-6, rtol=1e-6)


def test_in_place_shares_the_blob():
    layers = [inp("x", (2, 3)), ip("a", "x", 4), {"name": "r", "type": "ReLU", "bottom": "a", "top": "a"}]
    net = Net(net_of(layers), "TRAIN", F64)
    assert net.tops[2][0] is net.bottoms[2][0]


def test_in_place_on_fanned_out_blob_keeps_earlier_readers_intact():
    """'b' reads 'a' before the in-place ReLU; after split insertion the ReLU writes a new
    version of 'a', so 'b' still sees the pre-ReLU values and 'c' the post-ReLU ones."""
    layers = [inp("x", (2, 3)), ip("a", "x", 4), ip("b", "a", 2),
              {"name": "r", "type": "ReLU", "bottom": "a", "top": "a"},
              {"name": "c", "type": "Sigmoid", "bottom": "a", "top": "c"}]
    net = Net(net_of(layers), "TRAIN", F64)
    net.blobs["x"].data[...] = np.random.default_rng(0).standard_normal((2, 3))
    net.forward()
    a_layer = net.layer_by_name("a")
    pre = net.blobs["x"].data @ a_layer.blobs[0].data.T + a_layer.blobs[1].data
    b_layer = net.layer_by_name("b")
    np.testing.assert_allclose(net.blobs["b"].data, pre @ b_layer.blobs[0].data.T + b_layer.blobs[1].data)
    np.testing.assert_allclose(net.blobs["c"].data, 1 / (1 + np.exp(-np.maximum(pre, 0))))


def test_backward_plan_skips_data_and_respects_propagate_down():
    layers = [inp("x", (2, 3)), inp("t", (2, 2)), ip("a", "x", 4),
              {**ip("b", "a", 2), "propagate_down": [False]},
              {"name": "loss", "type": "EuclideanLoss", "bottom": ["b", "t"], "top": "loss"}]
    net = Net(net_of(layers), "TRAIN", F64)
    names = [l.name for l in net.layers]
    plan = dict(zip(names, net.layer_backward))
    assert plan == {"x": False, "t": False, "a": True, "b": True, "loss": True}
    assert net.propagate[names.index("a")] == [False]      # x needs no gradient
    assert net.propagate[names.index("b")] == [False]      # propagate_down: false
    assert net.propagate[names.index("loss")] == [True, False]  # target has no producer needing it


def test_loss_weight_on_any_top_and_default_for_loss_layers():
    layers = [inp("x", (2, 3)), inp("t", (2, 3)),
              {"name": "e", "type": "EuclideanLoss", "bottom": ["x", "t"], "top": "l1", "loss_weight": 3},
              {"name": "s", "type": "Sigmoid", "bottom": "x", "top": "sx", "loss_weight": 0.5}]
    net = Net(net_of(layers), "TRAIN", F64)
    x = np.random.default_rng(1).standard_normal((2, 3))
    net.blobs["x"].data[...] = x
    net.blobs["t"].data[...] = 0
    loss = net.forward()
    expected = 3 * np.sum(x ** 2) / (2 * 2) + 0.5 * np.sum(1 / (1 + np.exp(-x)))
    assert loss == pytest.approx(expected, rel=1e-12)


def test_train_and_test_nets_share_parameters_by_layer_name():
    layers = [inp("x", (2, 3)), ip("a", "x", 4), {**ip("only_test", "a", 2), "include": {"phase": "TEST"}}]
    p = net_of(layers)
    train = Net(p, "TRAIN", F64)
    test = Net(p, "TEST", F64)
    test.share_with(train)
    assert test.layer_by_name("a").blobs[0] is train.layer_by_name("a").blobs[0]


def test_shared_param_mismatch_names_both_layers():
    layers = [inp("x", (2, 3)), ip("a", "x", 3, param=[{"name": "w", "lr_mult": 1}]),
              ip("b", "a", 3, param=[{"name": "w", "lr_mult": 2}])]
    with pytest.raises(SpecError, match="'a' and 'b'"):
        Net(net_of(layers), "TRAIN", F64)


def test_wrong_param_block_for_type():
    layers = [inp("x", (2, 3)), {**ip("a", "x", 3), "pooling_param": {"pool": "MAX"}}]
    with pytest.raises(SpecError, match="does not read 'pooling_param'"):
        Net(net_of(layers), "TRAIN", F64)


def test_legacy_input_header():
    p = parse_net({"name": "t", "input": "data", "input_dim": [1, 3, 4, 4],
                   "layer": [ip("a", "data", 2)]})
    net = Net(p, "TEST", F64)
    assert net.blobs["data"].shape == (1, 3, 4, 4) and net.blobs["a"].shape == (1, 2)
