"""Inner-product family (netspec/layers/inner_product.py): Embed, Parameter.

Forward and parameter gradients against index arithmetic, float64 gradient checks, spec and
index errors, Caffe's golden embed case (tests/golden/layers/).
"""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import check_gradients, forward_backward, make_layer, rand, run_forward
from layer_cases import embed_spec, golden_net

from netspec.errors import NetspecError, SpecError

# -- Embed ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
def test_embed(bias):
    idx = np.array([[0.0, 5.0, 2.0], [3.0, 3.0, 1.0]])
    layer, tops = make_layer(embed_spec(num_output=4, input_dim=6, bias_term=bias), [idx.shape])
    assert tops == [(2, 3, 4)]
    assert [b.shape for b in layer.blobs] == [(6, 4), (4,)][:1 + bias]
    dy = rand((2, 3, 4), 1)
    (y,), (none,), pdiffs = forward_backward(layer, [idx], tops, [dy])
    assert none is None
    w = layer.blobs[0].data
    want = w[idx.astype(int)] + (layer.blobs[1].data if bias else 0)
    np.testing.assert_allclose(y, want, rtol=1e-15)
    dw = np.zeros_like(w)
    for n, r in enumerate(idx.astype(int).ravel()):
        dw[r] += dy.reshape(-1, 4)[n]
    np.testing.assert_allclose(pdiffs[0], dw, rtol=1e-15)
    if bias:
        np.testing.assert_allclose(pdiffs[1], dy.reshape(-1, 4).sum(0), rtol=1e-14)
    check_gradients(layer, [idx], tops)


def test_embed_errors():
    with pytest.raises(SpecError, match="num_output"):
        make_layer({"type": "Embed", "embed_param": {"input_dim": 3}}, [(2,)])
    with pytest.raises(SpecError, match="input_dim"):
        make_layer({"type": "Embed", "embed_param": {"num_output": 3}}, [(2,)])
    layer, tops = make_layer(embed_spec(num_output=2, input_dim=3), [(2,)])
    for bad in ([0.0, 3.0], [-1.0, 0.0], [0.5, 1.0]):
        with pytest.raises(NetspecError, match="embedding indices"):
            run_forward(layer, [np.array(bad)], tops)


def test_caffe_golden_embed_without_force_backward_runs_no_backward():
    """Caffe ran the embed case without force_backward and without a loss: its backward never
    ran, so the recorded parameter diffs are zero. netspec's backward plan agrees."""
    net, g = golden_net("embed")
    assert not any(net.layer_backward)
    assert not g["paramdiff/l/0"].any() and not g["paramdiff/l/1"].any()


# -- Parameter ------------------------------------------------------------------------------------

def test_parameter_layer():
    layer, tops = make_layer({"type": "Parameter", "parameter_param": {"shape": {"dim": [2, 3]}}},
                             [])
    assert tops == [(2, 3)] and layer.blobs[0].shape == (2, 3)
    assert not layer.blobs[0].data.any()                # Caffe runs no filler: zeros
    layer.blobs[0].data[...] = rand((2, 3))
    dy = rand((2, 3), 1)
    (y,), _, (dp,) = forward_backward(layer, [], tops, [dy])
    np.testing.assert_array_equal(y, layer.blobs[0].data)
    np.testing.assert_array_equal(dp, dy)
    check_gradients(layer, [], tops)


# -- MarginInnerProduct (SphereFace's A-Softmax, wy1iu/sphereface) --------------------------------

MARGIN_TYPES = ["SINGLE", "DOUBLE", "TRIPLE", "QUADRUPLE"]


def _margin(kind, M=6, K=5, N=4, **param):
    spec = {"type": "MarginInnerProduct", "top": ["y", "lambda"], "margin_inner_product_param": {
        "num_output": N, "type": kind, "weight_filler": {"type": "gaussian"}, **param}}
    return make_layer(spec, [(M, K), (M,)])


def _psi(theta, m):
    """The paper's ψ(θ) = (−1)^k cos(mθ) − 2k on [kπ/m, (k+1)π/m]."""
    k = np.minimum(np.floor(theta * m / np.pi), m - 1)
    return (-1.0) ** k * np.cos(m * theta) - 2 * k


@pytest.mark.parametrize("kind", MARGIN_TYPES)
def test_margin_inner_product_forward_is_sphereface_psi(kind):
    """Off the label: x·Ŵᵀ (rows of W normalised, in place); at the label: (‖x‖ψ(θ) + λ·x·Ŵ_y)
    / (1 + λ) with ψ from the angle itself (arccos), not the fork's polynomials."""
    m = MARGIN_TYPES.index(kind) + 1
    layer, tops = _margin(kind, base=3, gamma=0.5, power=1.5, lambda_min=0.2, iteration=2)
    assert tops == [(6, 4), (1,)]
    x = rand((6, 5), seed=50)
    y = np.array([0, 1, 2, 3, 1, 2], float)
    (out, lam), _, _ = forward_backward(layer, [x, y], tops, [np.zeros((6, 4)), np.zeros(1)])
    want_lam = max(np.float32(3) * np.float32(1 + 0.5 * 3) ** np.float32(-1.5), 0.2)
    np.testing.assert_allclose(lam, [want_lam], rtol=1e-7)
    w = layer.blobs[0].data
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1, rtol=1e-12)
    plain = x @ w.T
    want = plain.copy()
    if m > 1:
        rows = np.arange(6)
        xn = np.linalg.norm(x, axis=1)
        theta = np.arccos(np.clip(plain[rows, y.astype(int)] / xn, -1, 1))
        want[rows, y.astype(int)] = (xn * _psi(theta, m) + lam[0] * plain[rows, y.astype(int)]) \
            / (1 + lam[0])
    np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-12)


def test_margin_inner_product_lambda_schedule():
    """λ at forward t (iter = iteration + t): max(base·(1 + gamma·iter)^(−power), lambda_min)."""
    layer, tops = _margin("QUADRUPLE", base=1000, gamma=0.12, power=1, lambda_min=5)
    x, y = rand((6, 5), seed=51), np.zeros(6)
    seen = [float(run_forward(layer, [x, y], tops)[1][1].data[0]) for _ in range(2000)]
    want = [max(1000 / (1 + 0.12 * t), 5) for t in range(1, 2001)]
    np.testing.assert_allclose(seen, want, rtol=1e-6)
    assert layer.state_dict()["iteration"] == 2000


@pytest.mark.parametrize("kind", MARGIN_TYPES)
def test_margin_inner_product_backward(kind):
    """Off the label column the bottom diff is the exact gradient (finite differences, the
    label entries' top weights 0). At the label column the fork rescales the exact gradient's
    two coefficients: the finite-difference gradient g of y[i, label] gives (c_w, c_x) from
    (1 + λ)·g − λ·Ŵ_y = c_w·Ŵ_y + c_x·x_i, and the layer's diff must be
    ((c_w·Ŵ_y + c_x·x_i)/‖(c_w, c_x)‖ + λ·Ŵ_y) / (1 + λ). ∂W is ∂yᵀ·x."""
    layer, tops = _margin(kind, base=2.0)          # gamma 0: λ = 2 at every forward
    x = rand((6, 5), seed=52)
    y = np.array([0, 1, 2, 3, 1, 2], float)
    lab = y.astype(int)
    run_forward(layer, [x, y], tops)               # normalise W once
    weights = np.random.default_rng(53).standard_normal((6, 4))
    weights[np.arange(6), lab] = 0
    check_gradients(layer, [x, y], tops, check_params=False,
                    top_weights=[weights, np.zeros(1)])
    w = layer.blobs[0].data.copy()
    lam = 0.0 if kind == "SINGLE" else 2.0
    for i in range(6):
        dy = np.zeros((6, 4))
        dy[i, lab[i]] = 1
        layer.blobs[0].diff[...] = 0
        _, (dx, _), (dw,) = forward_backward(layer, [x, y], tops, [dy, np.zeros(1)])
        np.testing.assert_allclose(dw, dy.T @ x, rtol=1e-12)
        g = np.zeros(5)
        for k in range(5):
            step = np.zeros((6, 5))
            step[i, k] = 1e-6
            hi = run_forward(layer, [x + step, y], tops)[1][0].data[i, lab[i]]
            lo = run_forward(layer, [x - step, y], tops)[1][0].data[i, lab[i]]
            g[k] = (hi - lo) / 2e-6
        if kind == "SINGLE":
            np.testing.assert_allclose(dx[i], g, rtol=1e-6, atol=1e-8)
            continue
        v = (1 + lam) * g - lam * w[lab[i]]
        basis = np.stack([w[lab[i]], x[i]], axis=1)
        (cw, cx), *_ = np.linalg.lstsq(basis, v, rcond=None)
        np.testing.assert_allclose(basis @ [cw, cx], v, rtol=1e-5, atol=1e-7)   # in the plane
        want = ((cw * w[lab[i]] + cx * x[i]) / np.hypot(cw, cx) + lam * w[lab[i]]) / (1 + lam)
        np.testing.assert_allclose(dx[i], want, rtol=1e-5, atol=1e-7)
        assert not dx[np.arange(6) != i].any()


def test_margin_inner_product_errors():
    with pytest.raises(SpecError, match="weight_filler"):
        make_layer({"type": "MarginInnerProduct", "margin_inner_product_param": {"num_output": 3}},
                   [(4, 5), (4,)])
    with pytest.raises(NetspecError, match="one label per row"):
        make_layer({"type": "MarginInnerProduct", "margin_inner_product_param": {
            "num_output": 3, "weight_filler": {"type": "xavier"}}}, [(4, 5), (3,)])
    layer, tops = _margin("DOUBLE")
    with pytest.raises(NetspecError, match=r"the labels must be integers in \[0, 4\)"):
        run_forward(layer, [rand((6, 5)), np.array([0, 1, 2, 3, 4, 0], float)], tops)
    from netspec.spec import parse_net
    with pytest.raises(SpecError, match="QUINTUPLE"):
        parse_net({"name": "n", "layer": [{"name": "fc6", "type": "MarginInnerProduct",
                                           "bottom": ["x", "y"], "top": "fc6",
                                           "margin_inner_product_param": {
                                               "num_output": 3, "type": "QUINTUPLE"}}]})


SPHEREFACE_HEAD = """
name: "sphereface_head"
input: "feature" input_shape { dim: 12 dim: 6 }
input: "label" input_shape { dim: 12 }
layer { name: "fc5" type: "InnerProduct" bottom: "feature" top: "fc5"
  inner_product_param { num_output: 8 weight_filler { type: "xavier" } } }
layer { name: "fc6" type: "MarginInnerProduct" bottom: "fc5" bottom: "label" top: "fc6"
  top: "lambda" param { lr_mult: 1 decay_mult: 1 }
  margin_inner_product_param { num_output: 3 type: QUADRUPLE weight_filler { type: "xavier" }
    base: 1000 gamma: 0.12 power: 1 lambda_min: 5 iteration: 1600 } }
layer { name: "softmax_loss" type: "SoftmaxWithLoss" bottom: "fc6" bottom: "label" top: "loss" }
"""


def test_sphereface_head_converts_exports_and_trains(tmp_path):
    """A SphereFace head (InnerProduct, MarginInnerProduct with its lambda top, SoftmaxWithLoss)
    converts, exports back unchanged and learns three separable classes: the A-Softmax loss
    falls while λ decays to lambda_min (from iteration 1600 on: 1000/(1 + 0.12·1659) < 5)."""
    pytest.importorskip("google.protobuf", reason="protobuf is not installed")
    from netspec.backend import Backend
    from netspec.caffe import prototxt as ptx
    from netspec.caffe.export import export_net
    from netspec.caffe.port import convert_net
    from netspec.net import Net
    from netspec.spec import load_net

    (tmp_path / "head.prototxt").write_text(SPHEREFACE_HEAD)
    convert_net(tmp_path / "head.prototxt", tmp_path / "head.yaml")
    export_net(tmp_path / "head.yaml", tmp_path / "back.prototxt")
    assert ptx.parse_net((tmp_path / "back.prototxt").read_text()) == ptx.parse_net(SPHEREFACE_HEAD)
    net = Net(load_net(tmp_path / "head.yaml"), "TRAIN", Backend(np, np.float64),
              np.random.default_rng(0))
    rng = np.random.default_rng(54)
    label = np.arange(12) % 3
    net.blobs["feature"].data[...] = np.eye(3, 6)[label] * 3 + rng.normal(0, 0.3, (12, 6))
    net.blobs["label"].data[...] = label
    losses = []
    for _ in range(150):
        for p in net.params:
            p.diff[...] = 0
        losses.append(float(net.forward()))
        net.backward()
        for p in net.params:
            p.data -= 0.05 * p.diff
    assert float(net.blobs["lambda"].data[0]) == 5.0
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
