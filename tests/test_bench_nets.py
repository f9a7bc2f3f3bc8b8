"""The bench net (bench/nets.py) keeps the layers netspec itself builds for a phase: the engine's
include/exclude rules (phase, level, stages, with the file's ``state``), not a copy of them."""

from __future__ import annotations

import importlib
from pathlib import Path

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
