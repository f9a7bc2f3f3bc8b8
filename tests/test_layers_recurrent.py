"""Recurrent layers (netspec/layers/recurrent.py): RNN, LSTM and LSTMUnit.

* Caffe parity: tests/golden/layers/{lstm,rnn}.{prototxt,npz} (recorded by BVLC Caffe, float32),
  each built as a net from its prototxt through the converter;
* forward against a literal per-stream, per-step implementation of Caffe's unrolled nets
  written here (sigmoid as 1/(1+e^-x), fractional cont included);
* float64 gradient checks with sequences that restart mid-batch, with x_static and with
  expose_hidden;
* PyTorch parity (float64) where installed: torch.nn.LSTM / nn.RNN with the weights mapped;
* Caffe's state semantics: the state carries over between forwards, cont = 0 restarts it,
  the exposed state takes and gives no gradient; blob order, fillers, spec errors;
* a tiny LSTM net trains through the solver; float32 end to end; the GPU against the CPU.
* LSTMUnit: forward and backward against Caffe's per-element formulas written here
  (``lstm_unit_layer.cpp``, fractional cont included); float64 gradient checks; one step of
  the LSTM layer (T = 1, exposed state) equals LSTMUnit fed with that step's gate inputs; shape
  and in-place errors; the GPU against the CPU.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from gradcheck import F64, check_gradients, forward_backward, make_layer, rand, run_forward
from layer_cases import F32, GOLDEN, close

from netspec.backend import Backend, cupy_available, get_backend, to_numpy
from netspec.errors import NetspecError, ShapeError, SpecError

GAUSS = {"type": "gaussian", "std": 0.6}


def spec(kind, H, *, expose=False, n_bottoms=2, rp=None, **extra):
    tops = {"LSTM": ["h", "h_T", "c_T"], "RNN": ["o", "h_T"]}[kind]
    bottoms = ["x", "cont", "x_static", "h_0", "c_0"][:n_bottoms]
    p = {"num_output": H, "weight_filler": GAUSS, "bias_filler": GAUSS, **(rp or {})}
    if expose:
        p["expose_hidden"] = True
    return {"name": "l", "type": kind, "bottom": bottoms, "top": tops if expose else tops[:1],
            "recurrent_param": p, **extra}


def build(kind, H, x, cont, x_static=None, state=(), backend=None, seed=0, **kw):
    """A layer for these bottoms (x_static and exposed state optional) and its bottom list."""
    bottoms = [x, cont] + ([x_static] if x_static is not None else []) + list(state)
    s = spec(kind, H, expose=bool(state), **kw)
    s["bottom"] = (["x", "cont"] + (["x_static"] if x_static is not None else [])
                   + ["h_0", "c_0"][:len(state)])
    layer, tops = make_layer(s, [np.shape(b) for b in bottoms], backend=backend or
                             Backend(np, np.float64), seed=seed)
    return layer, tops, bottoms


# -- a literal implementation of Caffe's unrolled nets -------------------------------------
def _sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def lstm_reference(x, cont, W, x_static=None, h0=None, c0=None):
    """Caffe's LSTM, one stream and one step at a time: returns h (T, N, H), h_T, c_T.

    W = [W_xc, b_c, (W_xc_static,) W_hc] in Caffe's blob order; gates i, f, o, g."""
    T, N = cont.shape
    H = W[-1].shape[1]
    W_xc, b_c, W_hc = W[0], W[1], W[-1]
    out = np.zeros((T, N, H))
    hT, cT = np.zeros((N, H)), np.zeros((N, H))
    for n in range(N):
        h = np.zeros(H) if h0 is None else h0.reshape(-1, H)[n]
        c = np.zeros(H) if c0 is None else c0.reshape(-1, H)[n]
        for t in range(T):
            gate_in = W_xc @ x[t, n].ravel() + b_c + W_hc @ (cont[t, n] * h)
            if x_static is not None:
                gate_in = gate_in + W[2] @ x_static[n].ravel()
            new_c, new_h = np.zeros(H), np.zeros(H)
            for d in range(H):
                i = _sig(gate_in[d])
                f = 0.0 if cont[t, n] == 0 else cont[t, n] * _sig(gate_in[H + d])
                o = _sig(gate_in[2 * H + d])
                g = math.tanh(gate_in[3 * H + d])
                new_c[d] = f * c[d] + i * g
                new_h[d] = o * math.tanh(new_c[d])
            h, c = new_h, new_c
            out[t, n] = h
        hT[n], cT[n] = h, c
    return out, hT, cT


def rnn_reference(x, cont, W, x_static=None, h0=None):
    """Caffe's RNN: returns o (T, N, H) and h_T. W = [W_xh, b_h, (W_xh_static,) W_hh, W_ho, b_o]."""
    T, N = cont.shape
    W_xh, b_h, W_hh, W_ho, b_o = W[0], W[1], W[-3], W[-2], W[-1]
    H = W_hh.shape[0]
    out, hT = np.zeros((T, N, H)), np.zeros((N, H))
    for n in range(N):
        h = np.zeros(H) if h0 is None else h0.reshape(-1, H)[n]
        for t in range(T):
            pre = W_xh @ x[t, n].ravel() + b_h + W_hh @ (cont[t, n] * h)
            if x_static is not None:
                pre = pre + W[2] @ x_static[n].ravel()
            h = np.tanh(pre)
            out[t, n] = np.tanh(W_ho @ h + b_o)
        hT[n] = h
    return out, hT


def params(layer):
    return [np.array(to_numpy(p.data), dtype=np.float64) for p in layer.blobs]


#: cont with sequences restarting mid-batch (T = 5, N = 3); every stream starts at t = 0
CONT = np.array([[0, 0, 0], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=np.float64)


# -- Caffe parity (golden, float32) --------------------------------------------------------
def golden_net(case):
    pytest.importorskip("google.protobuf", reason="protobuf is not installed")
    from netspec.caffe.prototxt import read
    from netspec.caffe.to_yaml import to_python
    from netspec.net import Net
    from netspec.spec import parse_net

    _, msg, _ = read(GOLDEN / f"{case}.prototxt")
    return Net(parse_net(to_python(msg)), "TRAIN", F32), dict(np.load(GOLDEN / f"{case}.npz"))


@pytest.mark.parametrize("case", ["lstm", "rnn"])
def test_caffe_golden(case):
    net, g = golden_net(case)
    layer = net.layer_by_name("l")
    assert [p.shape for p in layer.blobs] == [g[f"param/l/{i}"].shape
                                              for i in range(len(layer.blobs))]
    net.blobs["x"].data[...] = g["input/x"]
    net.blobs["cont"].data[...] = g["input/cont"]
    for i, p in enumerate(layer.blobs):
        p.data[...] = g[f"param/l/{i}"]
    net.forward()
    assert net.blobs["h"].data.dtype == np.float32
    close(net.blobs["h"].data, g["top/h"])
    net.clear_param_diffs()
    net.blobs["h"].diff = g["topdiff/h"].copy()
    net.backward()
    assert net.propagate[-1] == [True, False]          # x, not cont (as in Caffe)
    close(net.blobs["x"].diff, g["bottomdiff/x"])
    assert not g["bottomdiff/cont"].any()
    for i, p in enumerate(layer.blobs):
        close(p.diff, g[f"paramdiff/l/{i}"])
        np.testing.assert_array_equal(p.data, g[f"param_after/l/{i}"])


def test_convert_keeps_recurrent_param(tmp_path):
    """prototxt -> YAML -> net with Caffe's blob shapes; YAML -> prototxt is the same net."""
    pytest.importorskip("google.protobuf", reason="protobuf is not installed")
    from click.testing import CliRunner

    from netspec.caffe.prototxt import read
    from netspec.cli import main
    from netspec.net import Net
    from netspec.spec import load_net

    out = tmp_path / "lstm.yaml"
    r = CliRunner().invoke(main, ["convert", str(GOLDEN / "lstm.prototxt"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    lp = load_net(out).layer[-1]
    rp = lp.recurrent_param
    assert (lp.type, rp.num_output, rp.expose_hidden) == ("LSTM", 5, False)
    wf = rp.weight_filler
    assert (wf.type, wf.min, wf.max) == ("uniform", -0.1, 0.1)
    net = Net(load_net(out), "TRAIN", F32)
    assert [p.shape for p in net.layer_by_name("l").blobs] == [(20, 4), (20,), (20, 5)]
    assert net.blobs["h"].shape == (3, 2, 5)
    r = CliRunner().invoke(main, ["export", str(out), "-o", str(tmp_path / "back.prototxt")])
    assert r.exit_code == 0, r.output
    assert read(tmp_path / "back.prototxt")[1] == read(GOLDEN / "lstm.prototxt")[1]


# -- forward against the literal implementation --------------------------------------------
def _cases():
    x, xs = rand((5, 3, 2, 2)), rand((3, 3), 1)
    frac = CONT * np.array([1.0, 0.5, 1.0])          # fractional cont scales as Caffe does
    h0, c0 = rand((1, 3, 4), 2), rand((1, 3, 4), 3)
    cont1 = CONT.copy()
    cont1[0] = [1, 0, 1]                               # the exposed state matters at t = 0
    return [("plain", x, CONT, None, ()), ("fractional", x, frac, None, ()),
            ("static", x, CONT, xs, ()), ("exposed", x, cont1, None, (h0, c0)),
            ("exposed_static", x, cont1, xs, (h0, c0))]


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("case,x,cont,xs,state", _cases(), ids=[c[0] for c in _cases()])
def test_forward_matches_caffes_unrolled_net(kind, case, x, cont, xs, state):
    state = state if kind == "LSTM" else state[:1]
    layer, tops, bottoms = build(kind, 4, x, cont, xs, state)
    _, top = run_forward(layer, bottoms, tops)
    W = params(layer)
    if kind == "LSTM":
        want, hT, cT = lstm_reference(x, cont, W, xs, *state)
        finals = [hT, cT]
    else:
        want, hT = rnn_reference(x, cont, W, xs, *state)
        finals = [hT]
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12, atol=1e-14)
    for t, f in zip(top[1:], finals if state else []):
        assert t.shape == (1, 3, 4)
        np.testing.assert_allclose(t.data[0], f, rtol=1e-12, atol=1e-14)


def test_blob_order_shapes_fillers_and_multipliers():
    H, x, xs = 3, rand((2, 4, 5, 2)), rand((4, 2, 3))
    cont = np.ones((2, 4))
    fill = {"weight_filler": {"type": "constant", "value": 0.25},
            "bias_filler": {"type": "constant", "value": -0.5}}
    mults = [{"lr_mult": k + 1, "decay_mult": 0} for k in range(4)]
    lstm, _, _ = build("LSTM", H, x, cont, xs, rp=fill, param=mults)
    # Caffe's unrolled LSTM creates W_xc, b_c, then W_xc_static, then W_hc
    assert [p.shape for p in lstm.blobs] == [(12, 10), (12,), (12, 6), (12, 3)]
    assert [float(p.data.flat[0]) for p in lstm.blobs] == [0.25, -0.5, 0.25, 0.25]
    assert [p.lr_mult for p in lstm.blobs] == [1, 2, 3, 4]
    rnn, _, _ = build("RNN", H, x, cont, xs)
    assert [p.shape for p in rnn.blobs] == [(3, 10), (3,), (3, 6), (3, 3), (3, 3), (3,)]
    rnn, tops, _ = build("RNN", H, x[:, :, 0, 0], cont)   # T × N input: one feature
    assert [p.shape for p in rnn.blobs] == [(3, 1), (3,), (3, 3), (3, 3), (3,)]
    assert tops == [(2, 4, 3)]


# -- float64 gradient checks ----------------------------------------------------------------
GRAD_CASES = [c for c in _cases() if c[0] != "fractional"]  # Caffe's ∂f' is exact for binary cont


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("case,x,cont,xs,state", GRAD_CASES, ids=[c[0] for c in GRAD_CASES])
def test_gradients(kind, case, x, cont, xs, state):
    state = state if kind == "LSTM" else state[:1]
    layer, tops, bottoms = build(kind, 4, x, cont, xs, state)
    rng = np.random.default_rng(7)
    # Caffe passes no gradient from the exposed final state: weight those tops 0
    weights = [rng.standard_normal(tops[0])] + [np.zeros(s) for s in tops[1:]]
    check_gradients(layer, bottoms, tops, top_weights=weights, directions=6)


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_gradient_of_each_parameter(kind):
    """Each parameter blob alone (a direction over all of them can hide one wrong blob)."""
    x, xs = rand((5, 3, 2)), rand((3, 2), 1)
    layer, tops, bottoms = build(kind, 3, x, CONT, xs)
    w = rand(tops[0], 9)
    bottom, top = run_forward(layer, bottoms, tops)
    top[0].diff = w
    for p in layer.blobs:
        p.diff[...] = 0
    layer.backward(top, [True, False, True], bottom)
    eps = 1e-6
    for k, p in enumerate(layer.blobs):
        d = rand(p.shape, 20 + k)
        p.data += eps * d
        fp = float(np.sum(run_forward(layer, bottoms, tops)[1][0].data * w))
        p.data -= 2 * eps * d
        fm = float(np.sum(run_forward(layer, bottoms, tops)[1][0].data * w))
        p.data += eps * d
        assert (fp - fm) / (2 * eps) == pytest.approx(float(np.sum(p.diff * d)), rel=1e-6), k


# -- Caffe's state semantics ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_state_carries_over_between_forwards(kind):
    """Caffe's TestForward: a sequence fed one step per forward gives the same outputs as the
    whole sequence in one forward; cont = 0 at every step gives a fresh state each time."""
    T, N = 4, 3
    x = rand((T, N, 2))
    cont = np.ones((T, N))
    cont[0] = 0
    whole, tops, _ = build(kind, 5, x, cont)
    want = run_forward(whole, [x, cont], tops)[1][0].data
    step, step_tops, _ = build(kind, 5, x[:1], cont[:1])
    for t in range(T):
        got = run_forward(step, [x[t:t + 1], cont[t:t + 1]], step_tops)[1][0].data
        np.testing.assert_allclose(got[0], want[t], rtol=1e-13)
    fresh, fresh_tops, _ = build(kind, 5, x[:1], cont[:1])
    for t in range(T):
        got = run_forward(step, [x[t:t + 1], np.zeros((1, N))], step_tops)[1][0].data
        first = run_forward(fresh, [x[t:t + 1], np.zeros((1, N))], fresh_tops)[1][0].data
        np.testing.assert_array_equal(got, first)
    # snapshots carry the state; reset() zeroes it
    state = step.state_dict()
    again, _, _ = build(kind, 5, x[:1], cont[:1])
    again.load_state_dict(state)
    ones = np.ones((1, N))
    np.testing.assert_array_equal(run_forward(again, [x[:1], ones], step_tops)[1][0].data,
                                  run_forward(step, [x[:1], ones], step_tops)[1][0].data)
    step.reset()
    assert not any(np.any(v) for v in step.state_dict().values())


def test_exposed_state_takes_and_gives_no_gradient():
    """Caffe shares only the data of the exposed h_0/c_0 bottoms and h_T/c_T tops."""
    x, h0, c0 = rand((3, 2, 3)), rand((1, 2, 4), 1), rand((1, 2, 4), 2)
    cont = np.ones((3, 2))
    layer, tops, bottoms = build("LSTM", 4, x, cont, None, (h0, c0))
    assert layer.no_grad_bottoms == (1, 2, 3) and layer.state_dict() == {}
    dy = rand(tops[0], 3)
    a = forward_backward(layer, bottoms, tops, [dy, np.zeros(tops[1]), np.zeros(tops[2])])
    for p in layer.blobs:
        p.diff[...] = 0
    b = forward_backward(layer, bottoms, tops, [dy, rand(tops[1], 4), rand(tops[2], 5)])
    np.testing.assert_array_equal(a[1][0], b[1][0])
    for pa, pb in zip(a[2], b[2]):
        np.testing.assert_array_equal(pa, pb)
    np.testing.assert_array_equal(a[0][1][0], a[0][0][-1])     # h_T is the last output
    # the exposed initial state is used: a different h_0 changes the output
    layer2, _, _ = build("LSTM", 4, x, cont, None, (h0 * 0, c0))
    assert not np.allclose(run_forward(layer2, [x, cont, h0 * 0, c0], tops)[1][0].data, a[0][0])


def test_spec_errors():
    x, cont = (3, 2, 4), (3, 2)
    with pytest.raises(NetspecError, match="num_output must be set"):
        make_layer({"type": "LSTM", "bottom": ["x", "cont"], "top": "h"}, [x, cont])
    with pytest.raises(NetspecError, match=r"cont\) must be T × N"):
        make_layer(spec("LSTM", 3), [x, (2, 3)])
    with pytest.raises(NetspecError, match="at least 2 axes|T × N × ..."):
        make_layer(spec("RNN", 3), [(3,), (3, 1)])
    with pytest.raises(NetspecError, match="x_static"):
        make_layer(spec("RNN", 3, n_bottoms=3), [x, cont, (3, 5)])
    with pytest.raises(NetspecError, match="at least 4"):
        make_layer(spec("LSTM", 3, expose=True, n_bottoms=3), [x, cont, (1, 2, 3)])
    with pytest.raises(NetspecError, match="initial state"):
        make_layer(spec("LSTM", 3, expose=True, n_bottoms=4), [x, cont, (1, 2, 3), (2, 2, 3)])
    with pytest.raises(NetspecError, match="exactly 3"):
        make_layer({**spec("LSTM", 3, expose=True, n_bottoms=4), "top": ["h", "hT"]},
                   [x, cont, (1, 2, 3), (1, 2, 3)])
    with pytest.raises(NetspecError, match="in place"):
        make_layer({**spec("RNN", 4), "top": "x"}, [x, cont])


# -- PyTorch parity (float64) ---------------------------------------------------------------
TORCH_ORDER = [0, 1, 3, 2]  # torch's gate blocks i, f, g, o taken from Caffe's i, f, o, g


def _blocks(a, H, order):
    return np.concatenate([a[k * H:(k + 1) * H] for k in order])


def torch_lstm(torch, W_xc, b_c, W_hc):
    """torch.nn.LSTM (float64) with Caffe's weights: gate blocks reordered, b_c as bias_ih,
    bias_hh zero."""
    H, I = W_hc.shape[1], W_xc.shape[1]
    lstm = torch.nn.LSTM(I, H).double()
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(_blocks(W_xc, H, TORCH_ORDER)))
        lstm.weight_hh_l0.copy_(torch.from_numpy(_blocks(W_hc, H, TORCH_ORDER)))
        lstm.bias_ih_l0.copy_(torch.from_numpy(_blocks(b_c, H, TORCH_ORDER)))
        lstm.bias_hh_l0.zero_()
    return lstm


def test_lstm_matches_torch():
    torch = pytest.importorskip("torch")
    T, N, I, H = 6, 3, 4, 5
    x = rand((T, N, I))
    cont = np.ones((T, N))                # Caffe's state starts at zero, as torch's does
    layer, tops, bottoms = build("LSTM", H, x, cont)
    W_xc, b_c, W_hc = params(layer)
    dy = rand((T, N, H), 1)
    (y,), (dx, _), dW = forward_backward(layer, bottoms, tops, [dy])

    lstm = torch_lstm(torch, W_xc, b_c, W_hc)
    xt = torch.from_numpy(x).requires_grad_()
    out, _ = lstm(xt)
    out.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, out.detach().numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-13)
    back = [0, 1, 3, 2]           # Caffe's blocks from torch's (the swap is its own inverse)
    grads = [lstm.weight_ih_l0.grad, lstm.bias_ih_l0.grad, lstm.weight_hh_l0.grad]
    for mine, theirs in zip(dW, grads):
        np.testing.assert_allclose(mine, _blocks(theirs.numpy(), H, back), rtol=1e-10, atol=1e-13)


def test_lstm_restarts_match_torch_segments():
    """cont = 0 at step t equals starting a fresh torch.nn.LSTM there (each stream its own)."""
    torch = pytest.importorskip("torch")
    T, N, I, H = 5, 3, 2, 4
    x = rand((T, N, I))
    layer, tops, bottoms = build("LSTM", H, x, CONT)
    W_xc, b_c, W_hc = params(layer)
    (y,), _, _ = forward_backward(layer, bottoms, tops, [np.zeros((T, N, H))])
    lstm = torch_lstm(torch, W_xc, b_c, W_hc)
    for n in range(N):
        starts = [t for t in range(T) if CONT[t, n] == 0] + [T]
        for a, b in itertools.pairwise(starts):
            seg, _ = lstm(torch.from_numpy(x[a:b, n:n + 1]))
            np.testing.assert_allclose(y[a:b, n], seg.detach().numpy()[:, 0],
                                       rtol=1e-10, atol=1e-13)


def test_rnn_matches_torch():
    torch = pytest.importorskip("torch")
    T, N, I, H = 6, 3, 4, 5
    x = rand((T, N, I))
    cont = np.ones((T, N))
    layer, tops, bottoms = build("RNN", H, x, cont)
    W_xh, b_h, W_hh, W_ho, b_o = params(layer)
    dy = rand((T, N, H), 1)
    (y,), (dx, _), dW = forward_backward(layer, bottoms, tops, [dy])
    rnn, lin = torch.nn.RNN(I, H).double(), torch.nn.Linear(H, H).double()
    with torch.no_grad():
        for p, v in [(rnn.weight_ih_l0, W_xh), (rnn.weight_hh_l0, W_hh), (rnn.bias_ih_l0, b_h),
                     (lin.weight, W_ho), (lin.bias, b_o)]:
            p.copy_(torch.from_numpy(v))
        rnn.bias_hh_l0.zero_()
    xt = torch.from_numpy(x).requires_grad_()
    out = torch.tanh(lin(rnn(xt)[0]))
    out.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, out.detach().numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-13)
    theirs = [rnn.weight_ih_l0, rnn.bias_ih_l0, rnn.weight_hh_l0, lin.weight, lin.bias]
    for mine, p in zip(dW, theirs):
        np.testing.assert_allclose(mine, p.grad.numpy(), rtol=1e-10, atol=1e-13)


# -- float32, training, GPU -----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_float32_end_to_end(kind):
    x, xs = rand((5, 3, 2)).astype(np.float32), rand((3, 2), 1).astype(np.float32)
    layer, tops, bottoms = build(kind, 4, x, CONT.astype(np.float32), xs, backend=F32)
    out, diffs, pdiffs = forward_backward(layer, bottoms, tops, [np.ones(tops[0], np.float32)])
    arrays = out + [d for d in diffs if d is not None] + pdiffs + [p.data for p in layer.blobs]
    arrays += [v for v in vars(layer).values() if isinstance(v, np.ndarray)] + layer.carry
    assert all(a.dtype == np.float32 for a in arrays), [a.dtype for a in arrays]


def test_tiny_lstm_net_trains():
    """LSTM → InnerProduct → EuclideanLoss learns a running mean through the SGD solver."""
    from netspec.log import CaffeLog
    from netspec.solvers import Solver
    from netspec.spec import parse_net
    from netspec.spec.solver import SolverParameter

    T, N = 6, 8
    net_param = parse_net({"name": "tiny", "layer": [
        {"name": "in", "type": "Input", "top": ["x", "cont", "target"],
         "input_param": {"shape": [{"dim": [T, N, 2]}, {"dim": [T, N]}, {"dim": [T, N, 1]}]}},
        {"name": "lstm", "type": "LSTM", "bottom": ["x", "cont"], "top": "h",
         "recurrent_param": {"num_output": 8, "weight_filler": {"type": "uniform", "min": -0.3,
                                                                "max": 0.3}}},
        {"name": "fc", "type": "InnerProduct", "bottom": "h", "top": "y",
         "inner_product_param": {"num_output": 1, "axis": 2, "weight_filler": {"type": "xavier"}}},
        {"name": "loss", "type": "EuclideanLoss", "bottom": ["y", "target"], "top": "loss"}]})
    sp = SolverParameter.model_validate({"net": "x", "base_lr": 0.2, "momentum": 0.9,
                                         "lr_policy": "fixed", "max_iter": 150, "random_seed": 3})
    solver = Solver(sp, backend=F32, net_param=net_param, log=CaffeLog(quiet=True))
    rng = np.random.default_rng(0)
    cont = np.ones((T, N), np.float32)
    cont[0] = 0
    losses = []
    for _ in range(150):
        x = rng.uniform(-1, 1, (T, N, 2)).astype(np.float32)
        target = np.cumsum(x[..., :1], axis=0) / np.arange(1, T + 1)[:, None, None]
        solver.net.blobs["x"].data[...] = x
        solver.net.blobs["cont"].data[...] = cont
        solver.net.blobs["target"].data[...] = target
        losses.append(solver.step_once())
    assert np.isfinite(losses).all()
    assert np.mean(losses[-10:]) < 0.3 * np.mean(losses[:10]), (losses[:10], losses[-10:])


def test_resume_continues_the_carried_state(tmp_path):
    """Batches that continue each other (cont = 1 throughout): a resumed run equals a straight
    one because the snapshot holds the LSTM's carried state; without it, it would not."""
    from netspec.log import CaffeLog
    from netspec.solvers import Solver
    from netspec.spec import parse_net
    from netspec.spec.solver import SolverParameter

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", data=rng.standard_normal((30, 6)).astype(np.float32),
             label=rng.integers(0, 3, 30))
    net = {"name": "r", "layer": [
        {"name": "d", "type": "Data", "top": ["x", "y"],
         "data_param": {"source": str(tmp_path / "d.npz"), "batch_size": 8, "shuffle": True}},
        {"name": "c", "type": "Input", "top": "cont", "input_param": {"shape": {"dim": [8, 6]}}},
        {"name": "lstm", "type": "LSTM", "bottom": ["x", "cont"], "top": "h",
         "recurrent_param": {"num_output": 4, "weight_filler": {"type": "xavier"}}},
        {"name": "fc", "type": "InnerProduct", "bottom": "h", "top": "z",
         "inner_product_param": {"num_output": 3, "weight_filler": {"type": "xavier"}}},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["z", "y"], "top": "loss"}]}

    def make():
        sp = SolverParameter.model_validate({
            "net": "x", "base_lr": 0.1, "momentum": 0.9, "lr_policy": "fixed", "random_seed": 7,
            "snapshot_prefix": str(tmp_path / "snap"), "max_iter": 6})
        s = Solver(sp, backend=F32, net_param=parse_net(net), log=CaffeLog(quiet=True))
        s.net.blobs["cont"].data[...] = 1
        return s

    def weights(s):
        return {k: p.data.copy() for k, p in s.net.named_params().items()}

    straight = make()
    straight.solve(max_iter=6)
    first = make()
    first.solve(max_iter=3)
    state = first.snapshot()
    resumed, lost = make(), make()
    resumed.restore(state)
    lost.restore(state)
    lost.net.layer_by_name("lstm").reset()
    resumed.solve(max_iter=6)
    lost.solve(max_iter=6)
    for key, value in weights(straight).items():
        np.testing.assert_array_equal(weights(resumed)[key], value, err_msg=key)
    assert not np.array_equal(weights(lost)["lstm/0"], weights(straight)["lstm/0"])


GPU_CASES = [("LSTM", None, ()), ("LSTM", "static", ("h0", "c0")), ("RNN", "static", ()),
             ("RNN", None, ("h0",))]


@pytest.mark.gpu
@pytest.mark.parametrize("kind,static,state", GPU_CASES,
                         ids=[f"{c[0]}-{c[1]}-{len(c[2])}" for c in GPU_CASES])
def test_gpu_matches_cpu(kind, static, state):
    if not cupy_available():
        pytest.skip("needs CuPy and a CUDA device")
    gpu = get_backend(gpu=True)
    T, N, H = 7, 4, 6
    x = rand((T, N, 3, 2)).astype(np.float32)
    xs = rand((N, 5), 1).astype(np.float32) if static else None
    cont = CONT[np.arange(T) % 5][:, np.arange(N) % 3].astype(np.float32)
    st = [rand((1, N, H), 2 + k).astype(np.float32) for k in range(len(state))]
    cpu_layer, tops, bottoms = build(kind, H, x, cont, xs, st, backend=F32, seed=5)
    gpu_layer, _, _ = build(kind, H, x, cont, xs, st, backend=gpu, seed=5)
    diffs = [rand(s, 9 + k).astype(np.float32) for k, s in enumerate(tops)]
    for _ in range(2):  # the second pass starts from the carried state
        want = forward_backward(cpu_layer, bottoms, tops, diffs)
        got = forward_backward(gpu_layer, bottoms, tops, diffs, xp=gpu.xp)
        for w_list, g_list in zip(want, got):
            for w, g in zip(w_list, g_list):
                if w is None:
                    assert g is None
                else:
                    close(g, w)


# -- LSTMUnit -------------------------------------------------------------------------------------

UNIT = {"name": "u", "type": "LSTMUnit", "bottom": ["c_prev", "x", "cont"], "top": ["c", "h"]}


def unit_reference(c_prev, x, cont, dc, dh):
    """Caffe's LSTMUnit Forward_cpu / Backward_cpu, one element at a time: c, h, ∂c_prev, ∂x."""
    _, N, H = c_prev.shape
    c, h, dc_prev, dx = (np.zeros((1, N, H)), np.zeros((1, N, H)), np.zeros((1, N, H)),
                         np.zeros((1, N, 4 * H)))
    for n in range(N):
        for d in range(H):
            X = x[0, n]
            i = _sig(X[d])
            f = 0.0 if cont[0, n] == 0 else cont[0, n] * _sig(X[H + d])
            o = _sig(X[2 * H + d])
            g = math.tanh(X[3 * H + d])
            c[0, n, d] = f * c_prev[0, n, d] + i * g
            tanh_c = math.tanh(c[0, n, d])
            h[0, n, d] = o * tanh_c
            c_term = dc[0, n, d] + dh[0, n, d] * o * (1 - tanh_c * tanh_c)
            dc_prev[0, n, d] = c_term * f
            dx[0, n, d] = c_term * g * i * (1 - i)
            dx[0, n, H + d] = c_term * c_prev[0, n, d] * f * (1 - f)
            dx[0, n, 2 * H + d] = dh[0, n, d] * tanh_c * o * (1 - o)
            dx[0, n, 3 * H + d] = c_term * i * (1 - g * g)
    return c, h, dc_prev, dx


def unit_bottoms(N, H, cont_values=(1.0, 0.0, 1.0, 0.5), seed=0):
    cont = np.array([[cont_values[n % len(cont_values)] for n in range(N)]])
    return [rand((1, N, H), seed), 2 * rand((1, N, 4 * H), seed + 1), cont]


def unit_forward_backward(bottoms, dc, dh, backend=F64, prop=(True, True, False)):
    xp = backend.xp
    layer, tops = make_layer(UNIT, [b.shape for b in bottoms], backend=backend)
    bottom, top = run_forward(layer, [xp.asarray(b, dtype=backend.dtype) for b in bottoms],
                              tops, xp)
    top[0].diff = xp.asarray(dc, dtype=backend.dtype)
    top[1].diff = xp.asarray(dh, dtype=backend.dtype)
    layer.backward(top, list(prop), bottom)
    return ([np.asarray(to_numpy(t.data)) for t in top],
            [np.asarray(to_numpy(b.diff)) for b in bottom])


@pytest.mark.parametrize("N,H", [(1, 1), (4, 3), (5, 7)])
def test_lstm_unit_matches_caffes_formulas(N, H):
    bottoms = unit_bottoms(N, H)
    dc, dh = rand((1, N, H), 7), rand((1, N, H), 8)
    (c, h), (dc_prev, dx, dcont) = unit_forward_backward(bottoms, dc, dh)
    want = unit_reference(*bottoms, dc, dh)
    for got, expected in zip((c, h, dc_prev, dx), want):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    assert not dcont.any()  # never a gradient to cont


def test_lstm_unit_shapes_and_arity():
    layer, tops = make_layer(UNIT, [(1, 4, 3), (1, 4, 12), (1, 4)])
    assert tops == [(1, 4, 3), (1, 4, 3)] and layer.blobs == [] and layer.no_grad_bottoms == (2,)


@pytest.mark.parametrize("N,H,cont", [(3, 2, (1.0,)), (4, 3, (1.0, 0.0)), (6, 1, (0.0,))])
def test_lstm_unit_gradients(N, H, cont):
    bottoms = unit_bottoms(N, H, cont, seed=3)
    layer, tops = make_layer(UNIT, [b.shape for b in bottoms])
    check_gradients(layer, bottoms, tops)


def test_lstm_unit_propagates_to_each_bottom_alone():
    bottoms = unit_bottoms(3, 2)
    dc, dh = rand((1, 3, 2), 7), rand((1, 3, 2), 8)
    _, (full_c, full_x, _) = unit_forward_backward(bottoms, dc, dh)
    _, (only_c, x_diff, _) = unit_forward_backward(bottoms, dc, dh, prop=(True, False, False))
    np.testing.assert_array_equal(only_c, full_c)
    assert not x_diff.any()
    _, (c_diff, only_x, _) = unit_forward_backward(bottoms, dc, dh, prop=(False, True, False))
    np.testing.assert_array_equal(only_x, full_x)
    assert not c_diff.any()


def test_lstm_unit_is_one_step_of_lstm():
    """LSTM with T = 1 and exposed h_0, c_0: its h_T, c_T are LSTMUnit's h, c for the gate
    inputs W_xc x + b_c + W_hc (cont·h_0); its gate gradient (read from ∂b_c, ∂W_xc) is
    LSTMUnit's ∂x."""
    N, H, I = 4, 3, 5
    x = rand((1, N, I), 1)
    cont = np.array([[1.0, 0.0, 1.0, 1.0]])
    h0, c0 = rand((1, N, H), 2), rand((1, N, H), 3)
    spec = {"name": "l", "type": "LSTM", "bottom": ["x", "cont", "h_0", "c_0"],
            "top": ["y", "h_T", "c_T"],
            "recurrent_param": {"num_output": H, "expose_hidden": True,
                                "weight_filler": {"type": "gaussian", "std": 0.6},
                                "bias_filler": {"type": "gaussian", "std": 0.6}}}
    lstm, tops = make_layer(spec, [x.shape, cont.shape, h0.shape, c0.shape], seed=4)
    bottom, top = run_forward(lstm, [x, cont, h0, c0], tops)
    dh = rand((1, N, H), 9)
    top[0].diff = dh.copy()
    lstm.backward(top, [True, False, False, False], bottom)
    W_xc, b_c, W_hc = (p.data for p in lstm.blobs)
    gate_in = (x[0] @ W_xc.T + b_c + (cont[0][:, None] * h0[0]) @ W_hc.T)[None]
    (c, h), (_, dx, _) = unit_forward_backward([c0, gate_in, cont], np.zeros((1, N, H)), dh)
    np.testing.assert_allclose(top[0].data, h, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(top[1].data, h, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(top[2].data, c, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(lstm.blobs[1].diff, dx[0].sum(axis=0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(lstm.blobs[0].diff, dx[0].T @ x[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("shapes,match", [
    ([(2, 4, 3), (1, 4, 12), (1, 4)], "c_prev"),
    ([(1, 4, 3, 1), (1, 4, 12), (1, 4)], "c_prev"),
    ([(1, 4, 3), (1, 4, 9), (1, 4)], "4H"),
    ([(1, 4, 3), (1, 3, 12), (1, 4)], "4H"),
    ([(1, 4, 3), (1, 4, 12), (1, 4, 1)], "cont"),
    ([(1, 4, 3), (1, 4, 12), (4,)], "cont"),
])
def test_lstm_unit_shape_errors(shapes, match):
    with pytest.raises(ShapeError, match=match):
        make_layer(UNIT, shapes)


def test_lstm_unit_arity_and_in_place_errors():
    with pytest.raises(SpecError, match="in place"):
        make_layer({**UNIT, "top": ["c_prev", "h"]}, [(1, 4, 3), (1, 4, 12), (1, 4)])
    with pytest.raises(SpecError, match="exactly 3"):
        make_layer({**UNIT, "bottom": ["c_prev", "x"]}, [(1, 4, 3), (1, 4, 12)])
    with pytest.raises(SpecError, match="exactly 2"):
        make_layer({**UNIT, "top": ["c"]}, [(1, 4, 3), (1, 4, 12), (1, 4)])
    with pytest.raises(SpecError, match="does not read"):
        from netspec.net import Net
        from netspec.spec import parse_net
        Net(parse_net({"name": "n", "layer": [
            {"name": "in", "type": "Input", "top": ["a", "b", "k"],
             "input_param": {"shape": [{"dim": [1, 2, 3]}, {"dim": [1, 2, 12]}, {"dim": [1, 2]}]}},
            {**UNIT, "bottom": ["a", "b", "k"], "recurrent_param": {"num_output": 3}}]}),
            "TRAIN", F64)


def test_lstm_unit_in_a_net_float32():
    """Built from YAML, float32 agrees with the float64 reference; cont gets no gradient."""
    from netspec.net import Net
    from netspec.spec import parse_net

    N, H = 3, 4
    net = Net(parse_net({"name": "n", "force_backward": True, "layer": [
        {"name": "in", "type": "Input", "top": ["c_prev", "x", "cont"],
         "input_param": {"shape": [{"dim": [1, N, H]}, {"dim": [1, N, 4 * H]}, {"dim": [1, N]}]}},
        UNIT,
        {"name": "loss", "type": "EuclideanLoss", "bottom": ["h", "c"], "top": "loss"}]}),
        "TRAIN", F32)
    bottoms = unit_bottoms(N, H, (1.0, 0.0, 1.0))
    for name, b in zip(("c_prev", "x", "cont"), bottoms):
        net.blobs[name].data[...] = b
    net.forward_backward()
    c, h, _, _ = unit_reference(*bottoms, np.zeros((1, N, H)), np.zeros((1, N, H)))
    np.testing.assert_allclose(net.blobs["c"].data, c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.blobs["h"].data, h, rtol=1e-5, atol=1e-6)
    assert net.blobs["x"].diff.any() and not net.blobs["cont"].diff.any()


@pytest.mark.gpu
def test_lstm_unit_gpu_matches_cpu():
    if not cupy_available():
        pytest.skip("needs CuPy and a CUDA device")
    gpu = get_backend(gpu=True)
    N, H = 6, 5
    bottoms = [b.astype(np.float32) for b in unit_bottoms(N, H)]
    dc, dh = rand((1, N, H), 7), rand((1, N, H), 8)
    want = unit_forward_backward(bottoms, dc, dh, backend=F32)
    got = unit_forward_backward(bottoms, dc, dh, backend=gpu)
    for w_list, g_list in zip(want, got):
        for w, g in zip(w_list, g_list):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
