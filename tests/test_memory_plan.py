"""Top blobs sharing arrays in forward-only nets (netspec/memory_plan.py, ``Net(reuse_blobs=
True)``): outputs and kept blobs equal the non-sharing net's (float64 and float32, two forwards,
fan-out through Split, in-place layers, Concat, a Flatten that rebinds its top); blobs with
overlapping lives never share; nets with a backward, inputs and outputs are left alone."""

from __future__ import annotations

import numpy as np
import pytest

from netspec.backend import Backend
from netspec.errors import SpecError
from netspec.memory_plan import plan_groups
from netspec.net import Net
from netspec.spec import parse_net

GAUSS = {"type": "gaussian", "std": 0.3}


def _conv(name, bottom, M, k=3):
    return {"name": name, "type": "Convolution", "bottom": bottom, "top": name,
            "convolution_param": {"num_output": M, "kernel_size": k, "pad": k // 2,
                                  "weight_filler": GAUSS, "bias_filler": GAUSS}}


def _spec(loss=False):
    """conv → BatchNorm/Scale/ReLU in place → pool → fan-out (Split) into two branches →
    Eltwise → Concat with a third branch → Flatten (rebinds its top) → InnerProduct → Softmax."""
    layers = [
        {"name": "data", "type": "Input", "top": "data",
         "input_param": {"shape": {"dim": [2, 3, 9, 8]}}},
        _conv("c1", "data", 6),
        {"name": "bn1", "type": "BatchNorm", "bottom": "c1", "top": "c1"},
        {"name": "sc1", "type": "Scale", "bottom": "c1", "top": "c1",
         "scale_param": {"bias_term": True}},
        {"name": "r1", "type": "ReLU", "bottom": "c1", "top": "c1"},
        {"name": "p1", "type": "Pooling", "bottom": "c1", "top": "p1",
         "pooling_param": {"pool": "MAX", "kernel_size": 2, "stride": 2}},
        _conv("a", "p1", 6, 1), _conv("b1", "p1", 4), _conv("b2", "b1", 6),
        {"name": "sum", "type": "Eltwise", "bottom": ["a", "b2"], "top": "sum"},
        {"name": "r2", "type": "ReLU", "bottom": "sum", "top": "sum"},
        _conv("c3", "p1", 3, 1),
        {"name": "cat", "type": "Concat", "bottom": ["sum", "c3"], "top": "cat"},
        _conv("c4", "cat", 5),
        {"name": "flat", "type": "Flatten", "bottom": "c4", "top": "flat"},
        {"name": "fc", "type": "InnerProduct", "bottom": "flat", "top": "fc",
         "inner_product_param": {"num_output": 7, "weight_filler": GAUSS}},
        {"name": "prob", "type": "Softmax", "bottom": "fc", "top": "prob"}]
    if loss:
        layers[0]["top"] = ["data", "label"]
        layers[0]["input_param"] = {"shape": [{"dim": [2, 3, 9, 8]}, {"dim": [2]}]}
        layers.append({"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["fc", "label"],
                       "top": "loss"})
    return {"name": "plan", "layer": layers}


def _net(dtype, reuse, keep=(), phase="TEST", loss=False):
    net = Net(parse_net(_spec(loss), "plan"), phase, Backend(np, dtype),
              np.random.default_rng(3), reuse_blobs=reuse, keep_blobs=keep)
    rng = np.random.default_rng(5)
    for key, p in net.named_params().items():
        p.data[...] = rng.uniform(0.5, 1.5, p.shape) if key.startswith("bn1") else \
            rng.standard_normal(p.shape) * 0.3
    return net


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_outputs_and_kept_blobs_equal_the_non_sharing_net(dtype):
    plain, shared = _net(dtype, False), _net(dtype, True, keep=("b1",))
    assert shared.blobs_shared and not plain.blobs_shared and plain.shared_bytes == 0
    assert 0 < shared.shared_bytes
    for seed in (7, 8):                                  # twice: arrays reused between passes
        x = np.random.default_rng(seed).standard_normal((2, 3, 9, 8))
        for net in (plain, shared):
            net.blobs["data"].data[...] = x
            net.forward()
        np.testing.assert_array_equal(shared.blobs["prob"].data, plain.blobs["prob"].data)
        np.testing.assert_array_equal(shared.blobs["b1"].data, plain.blobs["b1"].data)
        np.testing.assert_array_equal(shared.blobs["data"].data, x.astype(dtype))
    assert shared.output_names == ["prob"]


def test_blobs_that_live_together_never_share():
    """Every pair of shared blobs whose layer ranges overlap has distinct arrays; some blobs
    do share (the plan saves memory); the Split's fan-out tops alias its bottom."""
    net = _net(np.float64, True)
    groups = plan_groups(net.layers, net.bottoms, net.tops, set(net.output_names))
    names = {m.name for g in groups for m in g["members"]}
    assert {"c1", "a", "b1", "b2", "sum", "c3", "cat"} <= names
    assert not names & {"data", "prob", "c4", "flat"}      # input, output, Flatten's
    split_groups = [g for g in groups if len(g["members"]) > 1]
    assert split_groups                                     # p1 with its Split's tops
    shared_any = False
    for i, g in enumerate(groups):
        for h in groups[i + 1:]:
            same = np.shares_memory(g["members"][0].data, h["members"][0].data)
            overlap = g["first"] <= h["last"] and h["first"] <= g["last"]
            assert not (same and overlap), (g["members"][0].name, h["members"][0].name)
            shared_any |= same
    assert shared_any


def test_nets_with_backward_share_nothing():
    net = _net(np.float64, True, phase="TRAIN", loss=True)
    assert not net.blobs_shared and net.shared_bytes == 0


def test_unknown_kept_blob_is_an_error():
    with pytest.raises(SpecError, match="keep_blobs.*'nope'"):
        _net(np.float64, True, keep=("nope",))


def test_model_with_keep_blobs(tmp_path):
    """``netspec.load(..., keep_blobs=[...])``: outputs and kept blobs equal the plain Model's,
    also after a reshape; reading a shared blob or a forward from a later layer is refused."""
    import yaml

    import netspec
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(_spec()))
    plain = netspec.load(path)
    shared = netspec.load(path, keep_blobs=["b1"])
    shared.load_weights(plain.save(tmp_path / "w.npz"))
    assert shared.net.blobs_shared and not plain.net.blobs_shared
    x = np.random.default_rng(9).standard_normal((2, 3, 9, 8))
    want = plain.forward(data=x, blobs=["b1"])
    got = shared.forward(data=x, blobs=["b1"])
    for k in ("prob", "b1"):
        np.testing.assert_array_equal(got[k], want[k])
    with pytest.raises(SpecError, match="blob 'c1' needs the net's blobs kept"):
        shared.forward(data=x, blobs=["c1"])
    with pytest.raises(SpecError, match="a forward from layer 'c3'"):
        shared.forward(start="c3")
    shared.reshape(data=(1, 3, 9, 8))
    plain.reshape(data=(1, 3, 9, 8))
    assert shared.net.blobs_shared
    np.testing.assert_array_equal(shared.forward(data=x[:1])["prob"],
                                  plain.forward(data=x[:1])["prob"])
