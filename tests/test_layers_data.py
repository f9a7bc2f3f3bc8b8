"""Data layers (netspec/layers/data.py): DummyData, MemoryData.

Top shapes (legacy and ND), fillers run once or every forward, MemoryData cycling through its
reset arrays, errors, both in a net.
"""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import make_layer, rand, run_forward
from layer_cases import F32, MEM

from netspec.errors import DataError, SpecError
from netspec.net import Net
from netspec.spec import parse_net

# -- DummyData ------------------------------------------------------------------------------------

def _dummy(param, tops=("a",)):
    return make_layer({"type": "DummyData", "top": list(tops), "dummy_data_param": param}, [])


def test_dummy_data_shapes():
    _, shapes = _dummy({"shape": {"dim": [2, 3]}}, ("a", "b"))
    assert shapes == [(2, 3), (2, 3)]
    _, shapes = _dummy({"shape": [{"dim": [2, 3]}, {"dim": [4]}]}, ("a", "b"))
    assert shapes == [(2, 3), (4,)]
    _, shapes = _dummy({"num": 5, "channels": [1, 2], "height": 3, "width": 4}, ("a", "b"))
    assert shapes == [(5, 1, 3, 4), (5, 2, 3, 4)]
    with pytest.raises(SpecError, match="legacy"):
        _dummy({"num": 5, "shape": {"dim": [2]}})
    with pytest.raises(SpecError, match="data fillers"):
        _dummy({"shape": {"dim": [2]}, "data_filler": [{"value": 1}] * 2}, ("a", "b", "c"))
    with pytest.raises(SpecError, match="shape"):
        _dummy({"shape": [{"dim": [2]}] * 2}, ("a", "b", "c"))
    with pytest.raises(SpecError, match="channels"):
        _dummy({"num": 1, "channels": [1, 2], "height": 1, "width": 1}, ("a", "b", "c"))


def test_dummy_data_constant_filled_once_random_every_time():
    layer, shapes = _dummy({"shape": {"dim": [3, 4]},
                            "data_filler": [{"type": "constant", "value": 2.5},
                                            {"type": "gaussian", "std": 1.0}]}, ("c", "g"))
    _, top = run_forward(layer, [], shapes)
    assert np.all(top[0].data == 2.5)
    first = top[1].data.copy()
    assert np.std(first) > 0
    top[0].data[...] = -1          # Caffe never refills constant tops
    layer.forward([], top)
    assert np.all(top[0].data == -1)
    assert not np.allclose(top[1].data, first)


def test_dummy_data_default_is_zero_and_in_a_net():
    net = Net(parse_net({"name": "d", "layer": [
        {"name": "d", "type": "DummyData", "top": ["x", "y"],
         "dummy_data_param": {"shape": [{"dim": [4, 3]}, {"dim": [4, 3]}],
                              "data_filler": [{"type": "uniform", "min": -1, "max": 1},
                                              {"type": "constant", "value": 0.5}]}},
        {"name": "loss", "type": "EuclideanLoss", "bottom": ["x", "y"], "top": "loss"},
    ]}), "TRAIN", F32)
    l1, l2 = net.forward(), net.forward()
    assert l1 != l2 and np.all(net.blobs["y"].data == 0.5)
    layer, shapes = _dummy({"shape": {"dim": [2]}})
    _, top = run_forward(layer, [], shapes)
    assert np.all(top[0].data == 0)


# -- MemoryData -----------------------------------------------------------------------------------

def test_memory_data_cycles_through_reset_arrays():
    layer, shapes = make_layer(MEM, [], backend=F32)
    assert shapes == [(2, 1, 2, 3), (2,)]
    x = np.arange(6 * 6, dtype=np.float64).reshape(6, 6)
    y = np.arange(6) * 10
    layer.reset(x, y)
    _, top = run_forward(layer, [], shapes)
    seen = []
    for _ in range(4):
        layer.forward([], top)
        seen.append(top[1].data.copy())
        assert top[0].data.dtype == np.float32
    np.testing.assert_array_equal(np.concatenate(seen), [20, 30, 40, 50, 0, 10, 20, 30])
    np.testing.assert_array_equal(top[0].data.reshape(2, 6), x[2:4])


def test_memory_data_errors():
    with pytest.raises(SpecError, match="positive"):
        make_layer({**MEM, "memory_data_param": {"batch_size": 2}}, [])
    layer, shapes = make_layer(MEM, [])
    with pytest.raises(DataError, match="reset"):
        run_forward(layer, [], shapes)
    with pytest.raises(DataError, match="multiple"):
        layer.reset(np.zeros((3, 6)), np.zeros(3))
    with pytest.raises(DataError, match="values"):
        layer.reset(np.zeros((4, 5)), np.zeros(4))


def test_memory_data_in_a_net():
    net = Net(parse_net({"name": "m", "layer": [
        dict(MEM, name="mem"),
        {"name": "ip", "type": "InnerProduct", "bottom": "data", "top": "ip",
         "inner_product_param": {"num_output": 3, "weight_filler": {"type": "gaussian"}}},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip", "label"], "top": "loss"},
    ]}), "TRAIN", F32)
    net.layer_by_name("mem").reset(rand((4, 1, 2, 3)), np.array([0, 1, 2, 1]))
    net.forward_backward()
    np.testing.assert_array_equal(net.blobs["label"].data, [0, 1])
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data, [2, 1])
