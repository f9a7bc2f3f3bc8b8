"""Solver trajectories against real Caffe runs (../shared/golden/solvers, copied to tests/golden).

Each case trains a tiny Input→IP→ReLU→IP→EuclideanLoss net for 5 steps from recorded weights
on recorded data; netspec must reproduce Caffe's weights after every step and the losses.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from netspec.backend import Backend
from netspec.solvers import Solver
from netspec.spec import parse_net
from netspec.spec.solver import SolverParameter

GOLDEN = Path(__file__).parent / "golden" / "solvers"
CASES = json.loads((GOLDEN / "cases.json").read_text())
RTOL = 1e-5


def _ip(name, bottom, n, params):
    return {"name": name, "type": "InnerProduct", "bottom": bottom, "top": name, "param": params,
            "inner_product_param": {"num_output": n, "weight_filler": {"type": "gaussian", "std": 0.5},
                                    "bias_filler": {"type": "constant", "value": 0.1}}}


def tiny_net(kind: str) -> dict:
    """The golden nets (net_plain/net_mults/net_shared.prototxt) in netspec YAML form."""
    w, b = {"lr_mult": 1, "decay_mult": 1}, {"lr_mult": 2, "decay_mult": 0}
    layers = [
        {"name": "data", "type": "Input", "top": "data", "input_param": {"shape": {"dim": [4, 10]}}},
        {"name": "target", "type": "Input", "top": "target", "input_param": {"shape": {"dim": [4, 3]}}},
    ]
    if kind == "plain":
        layers += [_ip("ip1", "data", 5, [w, b]), {"name": "relu1", "type": "ReLU", "bottom": "ip1", "top": "ip1"},
                   _ip("ip2", "ip1", 3, [w, b])]
    elif kind == "mults":
        layers += [_ip("ip1", "data", 5, [{"lr_mult": 0}, {"lr_mult": 0}]),
                   {"name": "relu1", "type": "ReLU", "bottom": "ip1", "top": "ip1"},
                   _ip("ip2", "ip1", 3, [{"lr_mult": 3, "decay_mult": 2}, {"lr_mult": 1, "decay_mult": 1}])]
    elif kind == "shared":
        sw, sb = {"name": "sw", "lr_mult": 1}, {"name": "sb", "lr_mult": 2, "decay_mult": 0}
        layers += [_ip("ip1", "data", 5, [{"lr_mult": 1}, b]),
                   {"name": "relu1", "type": "ReLU", "bottom": "ip1", "top": "ip1"},
                   _ip("ipa", "ip1", 5, [sw, sb]), {"name": "relua", "type": "ReLU", "bottom": "ipa", "top": "ipa"},
                   _ip("ipb", "ipa", 5, [sw, sb]), _ip("ip2", "ipb", 3, [{"lr_mult": 1}, b])]
    layers.append({"name": "loss", "type": "EuclideanLoss", "bottom": ["ip2", "target"], "top": "loss"})
    return {"name": "tiny", "layer": layers}


def parse_solver_text(text: str) -> dict:
    """The prototxt ``key: value`` pairs of cases.json as a dict (the fixture's own format)."""
    out = {}
    for key, raw in re.findall(r'(\w+):\s*("[^"]*"|\S+)', text):
        value = raw.strip('"')
        for conv in (int, float):
            try:
                value = conv(value)
                break
            except ValueError:
                pass
        out[key] = value
    return out


def make_solver(case: str, dtype=np.float32) -> Solver:
    info = CASES[case]
    settings = parse_solver_text(info["solver"])
    settings.update(net="unused.yaml", max_iter=5, random_seed=1)
    sp = SolverParameter.model_validate(settings)
    net_param = parse_net(tiny_net(info["net"]))
    solver = Solver(sp, backend=Backend(np, dtype), net_param=net_param)
    init = np.load(GOLDEN / f"init_{info['net']}.npz")
    for key, p in solver.net.named_params().items():
        p.data[...] = init[key]
    return solver


def run_case(case: str, steps: int = 5, dtype=np.float32):
    solver = make_solver(case, dtype)
    data = np.load(GOLDEN / "data.npz")
    weights, losses = [], []
    for t in range(steps):
        solver.net.blobs["data"].data[...] = data["data"][t]
        solver.net.blobs["target"].data[...] = data["target"][t]
        losses.append(solver.step_once())
        weights.append({k: p.data.copy() for k, p in solver.net.named_params().items()})
    return weights, np.array(losses)


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_caffe(case):
    expected = np.load(GOLDEN / f"{case}.npz")
    weights, losses = run_case(case)
    for k in range(1, 6):
        for key, value in weights[k - 1].items():
            gold = expected[f"step{k}/{key}"]
            np.testing.assert_allclose(value, gold, rtol=RTOL, atol=RTOL * 1e-2,
                                       err_msg=f"{case}: {key} after step {k}")
    np.testing.assert_allclose(losses, expected["loss"], rtol=RTOL)


def test_frozen_blob_never_moves():
    weights, _ = run_case("SGD_mults_frozen")
    init = np.load(GOLDEN / "init_mults.npz")
    for k in range(5):
        np.testing.assert_array_equal(weights[k]["ip1/0"], init["ip1/0"])
        np.testing.assert_array_equal(weights[k]["ip1/1"], init["ip1/1"])


def test_shared_blob_is_one_array():
    solver = make_solver("SGD_shared")
    a, b = solver.net.layer_by_name("ipa"), solver.net.layer_by_name("ipb")
    assert a.blobs[0] is b.blobs[0] and a.blobs[1] is b.blobs[1]
    assert len(solver.params) == 6  # ip1 (2) + shared (2) + ip2 (2)


def test_iter_size_two_equals_one_with_same_data():
    w1, l1 = run_case("SGD_L2")
    w2, l2 = run_case("SGD_iter_size2")
    for a, b in zip(w1, w2):
        for key in a:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6)
    np.testing.assert_allclose(l1, l2, rtol=1e-6)


LR = json.loads((GOLDEN / "lr_policies.json").read_text())["lr"]
LR_SETTINGS = {
    "fixed": {}, "step": {"gamma": 0.5, "stepsize": 3}, "exp": {"gamma": 0.95},
    "inv": {"gamma": 0.1, "power": 0.75}, "multistep": {"gamma": 0.3, "stepvalue": [2, 5, 11]},
    "poly": {"power": 2}, "sigmoid": {"gamma": 0.5, "stepsize": 10},
}


@pytest.mark.parametrize("policy", sorted(LR))
def test_lr_policy_matches_caffe_log(policy):
    from netspec.solvers import learning_rate

    sp = SolverParameter.model_validate({"net": "x", "base_lr": 0.1, "lr_policy": policy,
                                         "max_iter": 20, **LR_SETTINGS[policy]})
    got = [learning_rate(sp, it) for it in range(20)]
    np.testing.assert_allclose(got, LR[policy], rtol=5e-6)  # Caffe logs 6 significant digits


def test_multifixed_policy_follows_mobilenet_yolos_stages():
    """MobileNet-YOLO's lr_policy multifixed (its sgd_solver.cpp): the rate is stagelr[k] for
    the first stage k with iter <= stageiter[k], the last stage's past them; base_lr does not
    enter. No Caffe log recorded it: the stages below are worked by hand."""
    from netspec.errors import SpecError
    from netspec.solvers import learning_rate
    from netspec.spec.load import validate_model
    from netspec.spec.yaml_lines import loads_yaml

    sp = SolverParameter.model_validate({
        "net": "x", "base_lr": 0.1, "lr_policy": "multifixed", "max_iter": 400,
        "stagelr": [1e-6, 1e-5, 1e-4, 1e-3], "stageiter": [50, 100, 200, 300]})
    rates = {it: learning_rate(sp, it) for it in (0, 50, 51, 100, 101, 200, 201, 300, 301, 400)}
    assert rates == {0: 1e-6, 50: 1e-6, 51: 1e-5, 100: 1e-5, 101: 1e-4, 200: 1e-4,
                     201: 1e-3, 300: 1e-3, 301: 1e-3, 400: 1e-3}
    for bad, field in [({"stagelr": [1e-3]}, "stagelr"), ({"stageiter": [50, 50, 200, 300]}, "stageiter"),
                       ({"stagelr": [1e-6, 0.0, 1e-4, 1e-3]}, "stagelr"), ({"stageiter": []}, "lr_policy")]:
        with pytest.raises(SpecError) as e:
            data, lines = loads_yaml(yaml.safe_dump({**sp.model_dump(exclude_unset=True), **bad}),
                                     "s.yaml")
            validate_model(SolverParameter, data, "s.yaml", lines)
        assert e.value.field == field, e.value
