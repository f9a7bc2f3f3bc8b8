"""Pooling layers: MAX and AVE (by taps and by the pooling matrix).

* float64 gradient checks for every method; forward against a literal loop implementation of
  Caffe's ``pooling_layer.cpp``; output sizes by hand; chunks and ties;
* Caffe parity (tests/golden/layers/, float32); PyTorch parity (float64).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gradcheck import check_gradients, forward_backward, make_layer, rand, run_forward
from netspec.backend import Backend, cupy_available, get_backend
from netspec.errors import SpecError
from netspec.layers.pool import pooled_size
from conv_pool_cases import POOL_CASES, pool_reference, pool_spec

F32 = Backend(np, np.float32)
GOLDEN = Path(__file__).parent / "golden" / "layers"


# -- Pooling --------------------------------------------------------------------------------
@pytest.fixture(params=["MAX", "AVE", "AVE_taps"])
def method(request, pool_tuning):
    """The pooling method of a test: MAX, AVE (as the pooling matrix wherever the planes are
    small enough, as in these cases) or AVE computed tap by tap (``AVE_taps``)."""
    if request.param == "AVE_taps":
        pool_tuning(ave_matrix_max_cells_per_tap=0)
        return "AVE"
    return request.param


def _pool_ref(shape, p, x, method):
    if "kernel_h" in p:
        k, s, pad = (p["kernel_h"], p["kernel_w"]), (p["stride_h"], p["stride_w"]), \
            (p["pad_h"], p["pad_w"])
    else:
        k = (p.get("kernel_size", 0),) * 2
        s, pad = (p.get("stride", 1),) * 2, (p.get("pad", 0),) * 2
    return pool_reference(x, k, s, pad, method, ceil=p.get("round_mode", "CEIL") == "CEIL",
                          global_pooling=p.get("global_pooling", False))


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pool_forward_matches_reference(case, method):
    shape, p = POOL_CASES[case]
    x = rand(shape, 11)
    want, want_mask = _pool_ref(shape, p, x, method)
    top = ["y", "mask"] if method == "MAX" else None
    layer, tops = make_layer(pool_spec(pool=method, top=top, **p), [shape])
    _, got = run_forward(layer, [x], tops)
    assert got[0].shape == want.shape
    np.testing.assert_allclose(got[0].data, want, rtol=1e-12, atol=1e-12)
    if method == "MAX":
        np.testing.assert_array_equal(got[1].data, want_mask)


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pool_gradients(case, method):
    shape, p = POOL_CASES[case]
    layer, tops = make_layer(pool_spec(pool=method, **p), [shape])
    check_gradients(layer, [rand(shape, 12)], tops)


def _random_pool_geometries(count, seed):
    """Random pooling geometries (bottom shape, pooling_param): kernel, stride, pad and
    rounding per dim, kept to Caffe's constraints (pad < kernel, the window fits)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        kh, kw = (int(v) for v in rng.integers(1, 5, 2))
        sh, sw = (int(v) for v in rng.integers(1, 4, 2))
        ph, pw = int(rng.integers(0, kh)), int(rng.integers(0, kw))
        H, W = (int(v) for v in rng.integers(3, 13, 2))
        if H + 2 * ph < kh or W + 2 * pw < kw:
            continue
        shape = (int(rng.integers(1, 4)), int(rng.integers(1, 4)), H, W)
        out.append((shape, dict(kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, pad_h=ph,
                                pad_w=pw, round_mode=str(rng.choice(["CEIL", "FLOOR"])))))
    return out


@pytest.mark.parametrize("shape, p", _random_pool_geometries(12, 2027))
def test_pool_random_geometries_float32_and_float64(shape, p, method):
    """Random kernel/stride/pad/rounding: float64 forward = Caffe's loop to 1e-12, float64
    gradients = finite differences, float32 top and bottom diff = float64's."""
    spec = pool_spec(pool=method, **p)
    layer64, tops = make_layer(spec, [shape])
    layer32, _ = make_layer(spec, [shape], backend=F32)
    x, dy = rand(shape, 17), rand(tops[0], 18)
    want, _ = pool_reference(x, (p["kernel_h"], p["kernel_w"]), (p["stride_h"], p["stride_w"]),
                             (p["pad_h"], p["pad_w"]), method, ceil=p["round_mode"] == "CEIL")
    r64 = forward_backward(layer64, [x], tops, [dy])
    np.testing.assert_allclose(r64[0][0], want, rtol=1e-12, atol=1e-12)
    check_gradients(layer64, [x], tops)
    r32 = forward_backward(layer32, [x.astype(np.float32)], tops, [dy])
    for a32, a64 in ((r32[0][0], r64[0][0]), (r32[1][0], r64[1][0])):
        assert a32.dtype == np.float32
        np.testing.assert_allclose(a32, a64, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pool_max_in_test_phase_keeps_maxima_only_and_backward_still_works(case):
    """A TEST-phase MAX layer without the mask top skips the winners in its forward; a backward
    after it (``netspec time --phase TEST``) recomputes them: both passes equal TRAIN's."""
    shape, p = POOL_CASES[case]
    x = rand(shape, 13)
    x[..., 0, 1] = x[..., 0, 0]                       # a tie: the first in scan order wins
    train, tops = make_layer(pool_spec(pool="MAX", **p), [shape])
    test, _ = make_layer(pool_spec(pool="MAX", **p), [shape], phase="TEST")
    dy = [rand(tops[0], 14)]
    want = forward_backward(train, [x], tops, dy)
    _, top = run_forward(test, [x], tops)
    np.testing.assert_array_equal(top[0].data, want[0][0])
    assert test._argmax_stale == ("global_pooling" not in p)     # the maxima-only path ran
    got = forward_backward(test, [x], tops, dy)
    np.testing.assert_array_equal(got[0][0], want[0][0])
    np.testing.assert_array_equal(got[1][0], want[1][0])
    assert not test._argmax_stale


@pytest.mark.parametrize("case", ["k2s2_tiles", "k3s2_pad1", "global"])
def test_pool_max_ties_go_to_first_in_scan_order(case):
    """All-equal windows: Caffe's strict '>' scan sends the gradient to the first cell only."""
    shape, p = POOL_CASES[case]
    layer, tops = make_layer(pool_spec(pool="MAX", top=["y", "mask"], **p), [shape])
    (_, mask), (dx,), _ = forward_backward(layer, [np.ones(shape)], tops,
                                           [np.ones(tops[0]), np.zeros(tops[1])])
    _, want_mask = _pool_ref(shape, p, np.ones(shape), "MAX")
    np.testing.assert_array_equal(mask, want_mask)
    want_dx = np.zeros(shape).reshape(shape[0], shape[1], -1)
    for n in range(shape[0]):
        for c in range(shape[1]):
            np.add.at(want_dx[n, c], want_mask[n, c].astype(int).ravel(), 1.0)
    np.testing.assert_array_equal(dx, want_dx.reshape(shape))


def test_pool_backward_repeatable_and_overwrites():
    """Buffers are reused across iterations: a second forward/backward gives the same result
    and the bottom diff is overwritten, not accumulated."""
    for method in ("MAX", "AVE"):
        shape, p = POOL_CASES["k3s2_pad1"]
        layer, tops = make_layer(pool_spec(pool=method, **p), [shape])
        x, dy = rand(shape, 13), rand(tops[0], 14)
        bottom, top = run_forward(layer, [x], tops)
        top[0].diff = dy
        layer.backward(top, [True], bottom)
        first = bottom[0].diff.copy()
        layer.forward(bottom, top)
        layer.backward(top, [True], bottom)
        np.testing.assert_array_equal(bottom[0].diff, first)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pool_work_arrays_in_dirty_thread_scratch(case, method, pool_tuning):
    """The phases and wide rows live in the thread's scratch, which other layers leave
    dirty: filled with NaN (and huge values) before each call, every case gives bit for bit
    the results of a clean first call (the fill cells are rewritten, nothing stale is read)."""
    from netspec.layers.base import thread_scratch
    pool_tuning(ave_matrix_max_cells_per_tap=0)
    shape, p = POOL_CASES[case]
    layer, tops = make_layer(pool_spec(pool=method, **p), [shape])
    x, dy = rand(shape, 17), rand(tops[0], 18)
    clean = forward_backward(layer, [x], tops, [dy])
    for value in (np.nan, 1e30):
        for name in ("phases", "top", "top_diff", "phase_diffs"):
            thread_scratch(layer.backend, ("pool", name), 1 << 16).fill(value)
        dirty = forward_backward(layer, [x], tops, [dy])
        for a, b in zip(clean[:2], dirty[:2]):
            np.testing.assert_array_equal(a[0], b[0])


def test_pool_ave_matrix_for_small_planes_only():
    """CPU AVE pooling is one GEMM with the pooling matrix when the planes hold at most
    AVE_MATRIX_MAX_CELLS_PER_TAP cells per kernel tap (CIFAR-10 quick's pool2 and pool3),
    else tap by tap (a 32×32 plane, 3×3: 1024 > 288 cells); never MAX or global pooling.
    The matrix holds 1/pool_size at each window's image cells: a column sums to the share of
    its window's pool_size inside the image."""
    def matrix(shape, **p):
        return make_layer(pool_spec(**p), [shape], backend=F32)[0]._matrix
    ave = dict(pool="AVE", kernel_size=3, stride=2)
    pool2, pool3 = matrix((100, 32, 16, 16), **ave), matrix((100, 64, 8, 8), **ave)
    assert pool2.shape == (256, 64) and pool3.shape == (64, 16)
    assert pool2.dtype == np.float32
    assert matrix((1, 2, 32, 32), **ave) is None
    assert matrix((100, 32, 16, 16), pool="MAX", kernel_size=3, stride=2) is None
    assert matrix((2, 3, 5, 4), pool="AVE", global_pooling=True) is None
    # a window with no image cell (stride > kernel, ceil): Caffe's 0/0, NaN -- tap by tap
    assert matrix((1, 1, 4, 4), pool="AVE", kernel_size=1, stride=2) is None
    # the ceil overhang does not count in pool_size: every window of pool2 averages its cells
    np.testing.assert_allclose(pool2.sum(axis=0), 1.0, rtol=1e-6)
    # padding does: 7×7, 3×3/2, pad 1 -> 4×4 windows whose first/last rows and columns hold
    # 2 image rows/columns of 3
    cover = np.array([2 / 3, 1, 1, 2 / 3])
    padded = matrix((1, 1, 7, 7), pad=1, **ave)
    np.testing.assert_allclose(padded.sum(axis=0), np.outer(cover, cover).ravel(), rtol=1e-6)


@pytest.mark.parametrize("size, k, pad, stride, ceil, want", [
    (24, 2, 0, 2, True, 12),     # LeNet's pool1: 24x24, 2x2/2 -> 12x12
    (8, 2, 0, 2, True, 4),       # LeNet's pool2
    (8, 3, 0, 2, True, 4),       # ceil((8-3)/2)+1 = ceil(2.5)+1: the last window overhangs
    (8, 3, 0, 2, False, 3),      # FLOOR: floor(2.5)+1
    (7, 3, 1, 2, True, 4),       # ceil((7+2-3)/2)+1 = 4; (4-1)*2 = 6 < 7+1: kept
    (5, 2, 1, 2, True, 3),       # ceil((5+2-2)/2)+1 = 4, but (4-1)*2 = 6 >= 5+1: -> 3
    (6, 3, 1, 3, True, 3),       # ceil((6+2-3)/3)+1 = 3; (3-1)*3 = 6 < 7: kept
    (112, 3, 0, 2, True, 56),    # GoogLeNet pool1 (after conv1: 112 -> 56)
    (32, 3, 0, 2, True, 16),     # CIFAR-10 quick pool1
])
def test_pooled_size(size, k, pad, stride, ceil, want):
    assert pooled_size(size, k, pad, stride, ceil, any_pad=pad > 0) == want
    p = dict(pool="AVE", kernel_size=k, pad=pad, stride=stride,
             round_mode="CEIL" if ceil else "FLOOR")
    assert make_layer(pool_spec(**p), [(1, 2, size, size)])[1] == [(1, 2, want, want)]


def test_pool_rule_applies_to_both_dims_when_either_pads():
    """Caffe checks the 'last window starts inside' rule in both dims when pad_h or pad_w > 0:
    W = 5, k 1, s 3, pad_w 0 gives ceil(4/3)+1 = 3, and (3-1)*3 = 6 >= 5 drops one."""
    p = dict(pool="MAX", kernel_h=3, kernel_w=1, stride_h=1, stride_w=3, pad_h=1, pad_w=0)
    assert make_layer(pool_spec(**p), [(1, 1, 4, 5)])[1] == [(1, 1, 4, 2)]


@pytest.mark.parametrize("p, top, words", [
    (dict(pool="STOCHASTIC", kernel_size=2), None, "STOCHASTIC"),
    (dict(pool="AVE", kernel_size=2), ["y", "mask"], "second"),
    (dict(kernel_size=3, kernel_h=3, kernel_w=3), None, "not both"),
    (dict(stride=2), None, "required"),
    (dict(global_pooling=True, kernel_size=2), None, "global_pooling"),
    (dict(global_pooling=True, stride=2), None, "global_pooling"),
    (dict(kernel_size=2, pad=2), None, "smaller than the kernel"),
    (dict(kernel_size=2, pad_h=1), None, "together"),
])
def test_pool_spec_errors(p, top, words):
    with pytest.raises(SpecError, match=words):
        make_layer(pool_spec(top=top, **p), [(1, 1, 6, 6)])


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pool_in_sample_chunks(case, method, pool_tuning):
    """Chunks of 2 samples of a batch of 3 (the last chunk partial) give bit for bit the top,
    argmax mask and bottom diff of the whole batch at once (phase buffers, argmax slices and
    the MAX scatter per chunk; AVE tap by tap)."""
    pool_tuning(ave_matrix_max_cells_per_tap=0)
    shape, p = POOL_CASES[case]
    shape = (3,) + shape[1:]
    top = ["y", "mask"] if method == "MAX" else None
    layer, tops = make_layer(pool_spec(pool=method, top=top, **p), [shape])
    assert layer._chunk == 3
    x, dy = rand(shape, 15), rand(tops[0], 16)
    dys = [dy] + ([np.zeros(tops[1])] if top else [])
    whole_tops, (whole,), _ = forward_backward(layer, [x], tops, dys)
    pool_tuning(chunk_bytes=2 * 8 * int(np.prod(shape[1:])))
    layer, _ = make_layer(pool_spec(pool=method, top=top, **p), [shape])
    assert layer._chunk == 2 or case == "global"
    chunked_tops, (chunked,), _ = forward_backward(layer, [x], tops, dys)
    for got, want in zip(chunked_tops, whole_tops):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(chunked, whole)


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pool_float32_matches_float64(case, method):
    """Every layout in float32: same top and bottom diff as float64, float32 throughout."""
    shape, p = POOL_CASES[case]
    spec = pool_spec(pool=method, **p)
    layer32, tops = make_layer(spec, [shape], backend=F32)
    layer64, _ = make_layer(spec, [shape])
    x, dy = rand(shape, 13), rand(tops[0], 14)
    (y32,), (dx32,), _ = forward_backward(layer32, [x.astype(np.float32)], tops, [dy])
    (y64,), (dx64,), _ = forward_backward(layer64, [x.astype(np.float32)], tops, [dy])
    assert y32.dtype == dx32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx32, dx64, rtol=1e-6, atol=1e-6)


def _assert_close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * max(np.abs(want).max(), 1.0))


CAFFE_POOL = {   # case -> pooling_param of its prototxt
    "pool_max_ceil": dict(pool="MAX", kernel_size=3, stride=2),
    "pool_max_ceil_pad": dict(pool="MAX", kernel_size=3, stride=2, pad=1),
    "pool_ave_ceil": dict(pool="AVE", kernel_size=3, stride=2),
    "pool_ave_ceil_pad": dict(pool="AVE", kernel_size=3, stride=2, pad=1),
    "pool_global_ave": dict(pool="AVE", global_pooling=True),
}


@pytest.mark.parametrize("case", list(CAFFE_POOL))
def test_caffe_pooling(case):
    d = np.load(GOLDEN / f"{case}.npz")
    layer, tops = make_layer(pool_spec(**CAFFE_POOL[case]), [d["input/x"].shape], backend=F32)
    assert tops == [d["top/y"].shape]
    (y,), (dx,), _ = forward_backward(layer, [d["input/x"]], tops, [d["topdiff/y"]])
    _assert_close(y, d["top/y"])
    _assert_close(dx, d["bottomdiff/x"])


# -- PyTorch parity (float64) ---------------------------------------------------------------
@pytest.mark.parametrize("k, s, pad, size", [(3, 2, 0, 8), (3, 2, 1, 7), (3, 2, 1, 8),
                                             (2, 2, 0, 7), (3, 1, 1, 6)])
def test_torch_pooling_ceil_mode(method, k, s, pad, size):
    """torch's ceil_mode rule equals Caffe's whenever stride <= kernel, and its AVE divisor
    with count_include_pad=True is Caffe's pool_size (padding counts, the overhang does not)."""
    torch = pytest.importorskip("torch")
    shape = (2, 3, size, size + 1)
    layer, tops = make_layer(pool_spec(pool=method, kernel_size=k, stride=s, pad=pad), [shape])
    x = rand(shape, 31)
    dy = rand(tops[0], 32)
    (y,), (dx,), _ = forward_backward(layer, [x], tops, [dy])
    tx = torch.tensor(x, requires_grad=True)
    F = torch.nn.functional
    if method == "MAX":
        ty = F.max_pool2d(tx, k, s, pad, ceil_mode=True)
    else:
        ty = F.avg_pool2d(tx, k, s, pad, ceil_mode=True, count_include_pad=True)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)


# -- GPU ------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_gpu_pooling_kernels_match_cpu(case, method):
    """The CUDA pooling kernels (float64) give the CPU path's top, mask and bottom diff."""
    if not cupy_available():
        pytest.skip("needs CuPy and a CUDA device")
    shape, p = POOL_CASES[case]
    top = ["y", "mask"] if method == "MAX" else None
    spec = pool_spec(pool=method, top=top, **p)
    gpu = get_backend(gpu=True, dtype="float64")
    cpu_layer, tops = make_layer(spec, [shape])
    gpu_layer, _ = make_layer(spec, [shape], backend=gpu)
    x = rand(shape, 21)
    # distinct values except for planted ties: the first maximum in scan order must win
    x[..., 0, 1] = x[..., 0, 0]
    dys = [rand(s, 22 + i) for i, s in enumerate(tops)]
    want = forward_backward(cpu_layer, [x], tops, dys)
    got = forward_backward(gpu_layer, [x], tops, dys, xp=gpu.xp)
    for w_list, g_list in zip(want, got):
        for w, g in zip(w_list, g_list):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


# -- ceil_mode (a fork's field: true = round_mode CEIL, false = FLOOR) ----------------------------

@pytest.mark.parametrize("ceil_mode,round_mode", [(True, "CEIL"), (False, "FLOOR")])
def test_ceil_mode_is_round_mode(ceil_mode, round_mode):
    x = rand((2, 3, 8, 8), seed=6)
    base = {"type": "Pooling", "pooling_param": {"pool": "MAX", "kernel_size": 3, "stride": 2}}
    fork = {**base, "pooling_param": {**base["pooling_param"], "ceil_mode": ceil_mode}}
    bvlc = {**base, "pooling_param": {**base["pooling_param"], "round_mode": round_mode}}
    lf, sf = make_layer(fork, [x.shape])
    lb, sb = make_layer(bvlc, [x.shape])
    assert sf == sb == [(2, 3, 4, 4) if ceil_mode else (2, 3, 3, 3)]
    _, (yf,) = run_forward(lf, [x], sf)
    _, (yb,) = run_forward(lb, [x], sb)
    np.testing.assert_array_equal(yf.data, yb.data)
    # both given and consistent: accepted
    make_layer({**base, "pooling_param": {**fork["pooling_param"], "round_mode": round_mode}},
               [x.shape])


def test_ceil_mode_contradicting_round_mode_is_refused():
    from netspec.spec import parse_net

    with pytest.raises(SpecError, match=r"ceil_mode false .* contradicts round_mode CEIL"):
        parse_net({"name": "n", "layer": [
            {"name": "in", "type": "Input", "top": "x", "input_param": {"shape": {"dim": [1, 1, 8, 8]}}},
            {"name": "p", "type": "Pooling", "bottom": "x", "top": "y",
             "pooling_param": {"kernel_size": 3, "stride": 2, "ceil_mode": False,
                               "round_mode": "CEIL"}}]})


def test_ceil_mode_converts_from_and_exports_to_prototxt(tmp_path):
    pytest.importorskip("google.protobuf")
    from netspec.caffe.export import net_message, prototxt_text
    from netspec.caffe.prototxt import parse_net as parse_prototxt
    from netspec.caffe.to_yaml import net_to_dict
    from netspec.net import Net
    from netspec.spec import parse_net

    text = ('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 1 '
            'dim: 8 dim: 8 } } }\nlayer { name: "p" type: "Pooling" bottom: "x" top: "y" '
            'pooling_param { pool: MAX kernel_size: 3 stride: 2 ceil_mode: false } }\n')
    d, report = net_to_dict(parse_prototxt(text))
    assert not report.errors and not report.unknown_types
    assert d["layer"][1]["pooling_param"]["ceil_mode"] is False
    spec = parse_net(d)
    assert Net(spec, "TEST", F32).blobs["y"].shape == (1, 1, 3, 3)
    msg, _ = net_message(spec)
    assert "ceil_mode: false" in prototxt_text(msg)
