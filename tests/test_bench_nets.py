"""The bench net (bench/nets.py) keeps the layers netspec itself builds for a phase: the engine's
include/exclude rules (phase, level, stages, with the file's ``state``), not a copy of them."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

from netspec.net import Net
from netspec.spec import load_net

ROOT = Path(__file__).resolve().parents[1]

NET = """
name: rules
state: {level: 1, stage: [deploy]}
layer:
  - {name: data, type: Input, top: [data, label],
     input_param: {shape: [{dim: [4, 6]}, {dim: [4]}]}}
  - {name: fc, type: InnerProduct, bottom: data, top: fc, inner_product_param: {num_output: 3}}
  - {name: fc_deploy, type: InnerProduct, bottom: data, top: fc_deploy,
     include: {phase: TRAIN, stage: deploy}, inner_product_param: {num_output: 3}}
  - {name: fc_not_deploy, type: InnerProduct, bottom: data, top: fc_not_deploy,
     exclude: {stage: deploy}, inner_product_param: {num_output: 3}}
  - {name: fc_level2, type: InnerProduct, bottom: data, top: fc_level2,
     include: {min_level: 2}, inner_product_param: {num_output: 3}}
  - {name: fc_test, type: InnerProduct, bottom: data, top: fc_test,
     include: {phase: TEST}, inner_product_param: {num_output: 3}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [fc, label], top: loss}
"""


@pytest.fixture(scope="module")
def nets():
    with pytest.MonkeyPatch.context() as mp:   # bench/ is a package at the checkout's root
        mp.syspath_prepend(str(ROOT))
        return importlib.import_module("bench.nets")


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_bench_net_keeps_what_netspec_builds(nets, tmp_path, monkeypatch, phase):
    path = tmp_path / "rules.yaml"
    path.write_text(NET)
    monkeypatch.setitem(nets.NETS, "rules", path)
    spec = nets.bench_net("rules", phase)
    built = [layer.name for layer in Net(load_net(path), phase).layers if layer.type_name != "Split"]
    assert [lay["name"] for lay in spec["layer"]] == built
    assert "fc_deploy" in built if phase == "TRAIN" else "fc_test" in built
    assert "fc_not_deploy" not in built and "fc_level2" not in built
    # the kept layers carry no rules: the bench builds them without the file's state
    solver = nets.make_solver(spec, threads=1)
    assert [layer.name for layer in solver.net.layers if layer.type_name != "Split"] == built


def test_bench_net_replaces_data_by_input(nets):
    spec = nets.bench_net("lenet")
    assert [lay["type"] for lay in spec["layer"]][:2] == ["Input", "Convolution"]
    assert nets.input_shapes(spec) == {"data": (64, 1, 28, 28), "label": (64,)}
    test = nets.bench_net("lenet", "TEST", batch=100)
    assert "accuracy" in [lay["name"] for lay in test["layer"]]
    assert nets.input_shapes(test)["data"] == (100, 1, 28, 28)


#: every layer type the big-net translator knows, on small shapes: grouped and depthwise
#: convolutions, MAX/AVE pooling with Caffe's ceil rule and padding, global pooling, LRN,
#: Concat, Eltwise SUM (coefficients) / PROD / MAX, BatchNorm + Scale, Dropout, InnerProduct,
#: Softmax
SMALL = {"name": "small", "layer": [
    {"name": "data", "type": "Input", "top": "data", "input_param": {"shape": {"dim": [2, 3, 11, 10]}}},
    {"name": "c1", "type": "Convolution", "bottom": "data", "top": "c1",
     "convolution_param": {"num_output": 8, "kernel_size": 3, "stride": 2, "pad": 1}},
    {"name": "bn1", "type": "BatchNorm", "bottom": "c1", "top": "c1"},
    {"name": "sc1", "type": "Scale", "bottom": "c1", "top": "c1", "scale_param": {"bias_term": True}},
    {"name": "r1", "type": "ReLU", "bottom": "c1", "top": "c1"},
    {"name": "lrn", "type": "LRN", "bottom": "c1", "top": "lrn",
     "lrn_param": {"local_size": 3, "alpha": 0.5, "beta": 0.75}},
    {"name": "pmax", "type": "Pooling", "bottom": "lrn", "top": "pmax",
     "pooling_param": {"pool": "MAX", "kernel_size": 3, "stride": 2, "pad": 1}},
    {"name": "pave", "type": "Pooling", "bottom": "lrn", "top": "pave",
     "pooling_param": {"pool": "AVE", "kernel_size": 3, "stride": 2, "pad": 1}},
    {"name": "g2", "type": "Convolution", "bottom": "pave", "top": "g2",
     "convolution_param": {"num_output": 8, "kernel_size": 1, "group": 2}},
    {"name": "dw", "type": "Convolution", "bottom": "pmax", "top": "dw",
     "convolution_param": {"num_output": 8, "kernel_size": 3, "pad": 1, "group": 8,
                           "bias_term": False}},
    {"name": "cat", "type": "Concat", "bottom": ["g2", "dw"], "top": "cat"},
    {"name": "sum", "type": "Eltwise", "bottom": ["g2", "dw"], "top": "sum",
     "eltwise_param": {"operation": "SUM", "coeff": [1.0, -0.5]}},
    {"name": "prod", "type": "Eltwise", "bottom": ["g2", "dw"], "top": "prod",
     "eltwise_param": {"operation": "PROD"}},
    {"name": "max", "type": "Eltwise", "bottom": ["sum", "prod"], "top": "max",
     "eltwise_param": {"operation": "MAX"}},
    {"name": "cat2", "type": "Concat", "bottom": ["cat", "max"], "top": "cat2"},
    {"name": "gp", "type": "Pooling", "bottom": "cat2", "top": "gp",
     "pooling_param": {"pool": "AVE", "global_pooling": True}},
    {"name": "drop", "type": "Dropout", "bottom": "gp", "top": "gp"},
    {"name": "fc", "type": "InnerProduct", "bottom": "gp", "top": "fc",
     "inner_product_param": {"num_output": 5}},
    {"name": "prob", "type": "Softmax", "bottom": "fc", "top": "prob"}]}


@pytest.fixture(scope="module")
def zoo():
    pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'netspec[compare]')")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT))
        return importlib.import_module("bench.zoo"), importlib.import_module("bench.torch_model")


def test_torch_translation_equals_netspec_on_every_layer_type(zoo):
    """Inference: every blob of the translated PyTorch module equals netspec's (TEST phase,
    same seeded weights and statistics, standard-normal input)."""
    import torch

    zoo_mod, tm = zoo
    net, weights = zoo_mod.inference_net(SMALL, 1)
    x = zoo_mod.zoo_inputs(SMALL)
    net.blobs["data"].data[...] = x["data"]
    net.forward()
    model = tm.torch_model(SMALL, weights)
    with torch.no_grad():
        _, blobs = model(tm.torch_inputs(x), train=False)
    for name in ("c1", "lrn", "pmax", "pave", "g2", "dw", "cat", "sum", "prod", "max", "gp", "fc", "prob"):
        ours = net.blobs[name].data
        np.testing.assert_allclose(blobs[name].numpy(), ours, rtol=1e-4,
                                   atol=1e-5 * max(1.0, np.abs(ours).max()), err_msg=name)


def test_torch_translation_equals_netspec_sharing_blob_memory(zoo):
    """The same with netspec's blobs sharing memory (``--reuse-blobs``): the kept pre-Softmax
    blob and the output still equal PyTorch's, and the plan did share."""
    import torch

    zoo_mod, tm = zoo
    net, weights = zoo_mod.inference_net(SMALL, 1, keep_blobs=("fc",))
    assert net.blobs_shared and net.shared_bytes > 0
    x = zoo_mod.zoo_inputs(SMALL)
    net.blobs["data"].data[...] = x["data"]
    net.forward()
    with torch.no_grad():
        _, blobs = tm.torch_model(SMALL, weights)(tm.torch_inputs(x), train=False)
    for name in ("fc", "prob"):
        ours = net.blobs[name].data
        np.testing.assert_allclose(blobs[name].numpy(), ours, rtol=1e-4,
                                   atol=1e-5 * max(1.0, np.abs(ours).max()), err_msg=name)


@pytest.mark.parametrize("name", ["small_train"])
def test_torch_translation_first_training_loss_equals_netspec(zoo, name):
    """Training form (SoftmaxWithLoss, BatchNorm on batch statistics), no Dropout: the first
    loss and the weight gradients of the first layers agree."""
    zoo_mod, tm = zoo
    nets = importlib.import_module("bench.nets")
    layers = [lay for lay in SMALL["layer"] if lay["type"] not in ("Dropout", "Softmax")]
    spec = {"name": name, "layer": [
        layers[0], {"name": "label", "type": "Input", "top": "label",
                    "input_param": {"shape": {"dim": [2]}}}, *layers[1:],
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["fc", "label"], "top": "loss"}]}
    s = nets.make_solver(spec, threads=1)
    zoo_mod.set_weights(s.net, zoo_mod.random_weights(s.net))
    x = zoo_mod.zoo_inputs(spec)
    x["label"] = np.array([1.0, 3.0], np.float32)
    nets.set_inputs(s.net, x)
    loss = s.net.forward_backward()
    model = tm.torch_model(spec, nets.weights_of(s.net))
    tloss, _ = model(tm.torch_inputs(x))
    tloss.backward()
    assert tloss.item() == pytest.approx(loss, rel=1e-5)
    for layer in ("c1", "g2", "fc"):
        ours = s.net.named_params()[f"{layer}/0"].diff
        mod = model.mods[layer]
        theirs = (mod.lin if hasattr(mod, "lin") else mod).weight.grad.numpy()
        np.testing.assert_allclose(theirs.reshape(ours.shape), ours, rtol=1e-3,
                                   atol=1e-4 * max(1e-3, np.abs(ours).max()), err_msg=layer)


def test_opencv_runs_the_small_net_as_netspec(zoo, tmp_path):
    """The shared OpenCV loader (netspec.caffe.opencv) on the same net: equal output."""
    pytest.importorskip("cv2", reason="OpenCV is not installed (pip install 'netspec[compare]')")
    pytest.importorskip("google.protobuf", reason="protobuf is not installed")
    from netspec.caffe.opencv import opencv_net

    zoo_mod, _ = zoo
    net, weights = zoo_mod.inference_net(SMALL, 1)
    x = zoo_mod.zoo_inputs(SMALL)
    net.blobs["data"].data[...] = x["data"]
    net.forward()
    cv_net = opencv_net(SMALL, weights, tmp_path, threads=1)
    cv_net.setInput(x["data"], "data")
    theirs = cv_net.forward(["fc", "prob"])
    for name, t in zip(("fc", "prob"), theirs):
        np.testing.assert_allclose(t, net.blobs[name].data, rtol=1e-4,
                                   atol=1e-5 * max(1.0, np.abs(net.blobs[name].data).max()))
