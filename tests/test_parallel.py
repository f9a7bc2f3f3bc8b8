"""CPU threads (netspec/parallel.py): the batch split over T threads computes what one thread
computes.

* the split, the hand-off and the BLAS limit themselves;
* each layer that splits its work (Convolution under every code path, Deconvolution, Pooling
  in every layout, InnerProduct, ReLU) at T = 2 and 3 against the same layer at T = 1: equal
  where every sample is computed alone (pooling, ReLU: bit for bit), to float64 rounding where
  partial sums over samples are added in range order (weight gradients);
* a whole solver step (the update split too) at T = 2 against T = 1, and twice at T = 2
  (deterministic);
* how the thread count is chosen: argument, ``set_num_threads``/``--threads``,
  ``NETSPEC_NUM_THREADS``, BLAS's count; a bad value is a clear error.

Sizes are small, so the tests lower the split thresholds to 0 (every layer splits).
"""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck import forward_backward, make_layer, rand
from netspec import parallel
from netspec.backend import Backend, get_backend
from netspec.errors import NetspecError
from netspec.layers.conv_columns import SplitColumns
from conv_pool_cases import CONV_CASES, POOL_CASES, conv_spec, pool_spec

N = 5          # uneven ranges for 2 and 3 threads


@pytest.fixture(autouse=True)
def split_everything(monkeypatch):
    monkeypatch.setattr(parallel, "SPLIT_MIN_MACS", 0)
    monkeypatch.setattr(parallel, "SPLIT_MIN_ELEMENTS", 0)


def f64(threads):
    return Backend(np, np.float64, threads)


def both(spec, shape, threads, seed=3, n_tops=1):
    """forward_backward of the same layer (same weights) at 1 and at ``threads`` threads."""
    out = []
    for t in (1, threads):
        layer, tops = make_layer(spec, [shape], backend=f64(t), seed=seed)
        x = rand(shape, seed=5)
        dys = [rand(s, seed=6 + k) for k, s in enumerate(tops[:n_tops])]
        out.append((layer, forward_backward(layer, [x], tops[:n_tops], dys)))
    return out


# -- the machinery ------------------------------------------------------------------------------
@pytest.mark.parametrize("n, parts", [(5, 2), (5, 3), (2, 4), (64, 2), (1, 1), (7, 7)])
def test_split_covers_every_item_once_in_order(n, parts):
    ranges = parallel.split(n, parts)
    assert len(ranges) == min(n, parts)
    assert [a for a, _ in ranges] == list(np.cumsum([0] + [c for _, c in ranges[:-1]]))
    assert sum(c for _, c in ranges) == n and min(c for _, c in ranges) >= 1
    assert max(c for _, c in ranges) - min(c for _, c in ranges) <= 1


def test_run_keeps_item_order_and_uses_other_threads():
    import threading

    names = parallel.run(lambda k: (k, threading.current_thread().name), [(k,) for k in range(3)])
    assert [k for k, _ in names] == [0, 1, 2]
    assert names[0][1] == threading.current_thread().name      # item 0 on the caller
    assert all(n.startswith("netspec") for _, n in names[1:])


def test_run_reraises_a_workers_error_after_all_finish():
    done = []

    def work(k):
        if k == 1:
            raise ValueError("boom in 1")
        done.append(k)
    with pytest.raises(ValueError, match="boom in 1"):
        parallel.run(work, [(0,), (1,), (2,)])
    assert sorted(done) == [0, 2]


def _split_job_in_child(queue):
    queue.put(parallel.run(lambda k: k * 10, [(1,), (2,), (3,)]))


def test_a_forked_child_starts_its_own_workers():
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    assert parallel.run(lambda k: k, [(0,), (1,)]) == [0, 1]     # the parent has workers now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_split_job_in_child, args=(queue,), daemon=True)
    child.start()
    child.join(timeout=30)
    if child.exitcode is None:
        child.kill()
    assert child.exitcode == 0, "the child hung or failed handing work to the parent's threads"
    assert queue.get(timeout=5) == [10, 20, 30]


@pytest.mark.parametrize("accumulate", [False, True])
def test_matmul_rows_split_equals_one_product(accumulate):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((7, 5)), rng.standard_normal((5, 3))
    start = rng.standard_normal((7, 3))
    out = start.copy() if accumulate else np.empty((7, 3))
    parallel.matmul(a, b, out, threads=3, accumulate=accumulate)
    np.testing.assert_allclose(out, (start if accumulate else 0) + a @ b, rtol=1e-13)


@pytest.mark.parametrize("shape", [(8, 1024), (1024, 8)])      # column / row blocks
def test_matmul_split_in_place(shape, monkeypatch):
    """out = a @ b with out the very array a (square b): every block reads a as it was."""
    monkeypatch.setattr(parallel, "SPLIT_MIN_MACS", 0)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(shape), rng.standard_normal((shape[1], shape[1]))
    want = a @ b
    parallel.matmul(a, b, a, threads=2)
    np.testing.assert_allclose(a, want, rtol=1e-12, atol=1e-12)


def test_blas_threads_sets_and_restores():
    from threadpoolctl import threadpool_info, threadpool_limits

    if not any(i["user_api"] == "blas" for i in threadpool_info()):
        pytest.skip("no BLAS library visible to threadpoolctl")

    # the BLAS libraries loaded when netspec first looked: numba's compilation may load
    # SciPy's OpenBLAS later, which NumPy's products do not use
    ours = {c.filepath for c in parallel._blas_libraries()}

    def blas_threads():
        return {i["num_threads"] for i in threadpool_info()
                if i["user_api"] == "blas" and i["filepath"] in ours}
    with threadpool_limits(2, user_api="blas"):
        with parallel.blas_threads(f64(2)):
            assert blas_threads() == {1}
            with parallel.blas_threads(f64(2)):                # re-entrant
                assert blas_threads() == {1}
            with parallel.blas_threads(f64(2), 3):
                assert blas_threads() == {3}
            assert blas_threads() == {1}
        assert blas_threads() == {2}


# -- how the count is chosen -------------------------------------------------------------------
def test_thread_count_argument_setting_env_and_blas(monkeypatch):
    from threadpoolctl import threadpool_limits

    monkeypatch.delenv(parallel.ENV, raising=False)
    monkeypatch.setattr(parallel, "_requested", None)
    assert get_backend(threads=3).threads == 3
    with threadpool_limits(1, user_api="blas"):
        assert get_backend().threads == 1                    # BLAS's own count
    with threadpool_limits(12, user_api="blas"):
        assert get_backend().threads == parallel.DEFAULT_MAX_THREADS == 8
    monkeypatch.setenv(parallel.ENV, "4")
    assert get_backend().threads == 4
    parallel.set_num_threads(2)                              # what --threads does
    try:
        assert get_backend().threads == 2
        assert get_backend(threads=1).threads == 1
    finally:
        parallel.set_num_threads(None)
    assert get_backend().threads == 4


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_thread_count_in_the_environment_is_a_clear_error(monkeypatch, value):
    monkeypatch.setattr(parallel, "_requested", None)
    monkeypatch.setenv(parallel.ENV, value)
    with pytest.raises(NetspecError, match="NETSPEC_NUM_THREADS"):
        get_backend()


def test_bad_thread_count_argument_is_an_error():
    with pytest.raises(NetspecError, match="at least 1"):
        get_backend(threads=0)
    with pytest.raises(NetspecError, match="at least 1"):
        parallel.set_num_threads(0)


# -- layers: T threads compute what one computes ------------------------------------------------
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_convolution_split_over_threads(case, threads, layout):
    shape, p = CONV_CASES[case]
    shape = (N,) + shape[1:]
    (one, (y1, dx1, dp1)), (many, (yT, dxT, dpT)) = both(conv_spec(**p), shape, threads)
    assert isinstance(many.conv, SplitColumns)
    assert [n for _, n in many.conv.ranges] == [n for _, n in parallel.split(N, threads)]
    np.testing.assert_array_equal(yT[0], y1[0])            # per-sample work: same values
    np.testing.assert_array_equal(dxT[0], dx1[0])
    for a, b in zip(dpT, dp1):                              # partial sums in range order
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_deconvolution_split_over_threads():
    spec = conv_spec(num_output=3, kernel_size=3, stride=2, pad=1)
    spec["type"] = "Deconvolution"
    (one, (y1, dx1, dp1)), (many, (yT, dxT, dpT)) = both(spec, (N, 4, 4, 5), 2)
    assert isinstance(many.conv, SplitColumns)
    np.testing.assert_array_equal(yT[0], y1[0])
    np.testing.assert_array_equal(dxT[0], dx1[0])
    for a, b in zip(dpT, dp1):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk_bytes", [1, 1 << 20])       # one sample per chunk / whole range
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("method", ["MAX", "AVE", "AVE_matrix"])
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pooling_split_over_threads(case, method, threads, chunk_bytes, monkeypatch,
                                    pool_tuning):
    """Sample ranges per thread (MAX, AVE tap by tap: bit for bit) or the pooling matrix's GEMM
    split by rows (``AVE_matrix``, every product split) give the one-thread top and bottom
    diff."""
    pool_tuning(chunk_bytes=chunk_bytes)
    matrix = method == "AVE_matrix"
    pool_tuning(ave_matrix_max_cells_per_tap=10**9 if matrix else 0)
    monkeypatch.setattr(parallel, "SPLIT_MIN_MACS", 0)
    shape, p = POOL_CASES[case]
    shape = (N,) + shape[1:]
    spec = pool_spec(pool=method[:3], **p)
    (_, (y1, dx1, _)), (many, (yT, dxT, _)) = both(spec, shape, threads)
    if "global_pooling" not in p:
        assert (many._matrix is not None) == matrix
        if not matrix:
            assert len(many._ranges) == threads
    if matrix:          # each thread's GEMM sums in BLAS's order for its rows: to rounding
        np.testing.assert_allclose(yT[0], y1[0], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(dxT[0], dx1[0], rtol=1e-13, atol=1e-15)
        return
    np.testing.assert_array_equal(yT[0], y1[0])
    np.testing.assert_array_equal(dxT[0], dx1[0])


def test_pooling_mask_top_split_over_threads():
    spec = pool_spec(top=["pool", "mask"], pool="MAX", kernel_size=3, stride=2)
    (_, (y1, dx1, _)), (_, (yT, dxT, _)) = both(spec, (N, 3, 8, 8), 2, n_tops=2)
    for a, b in zip(yT, y1):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("transpose", [False, True])
def test_inner_product_split_over_threads(transpose):
    spec = {"type": "InnerProduct", "name": "ip",
            "inner_product_param": {"num_output": 7, "transpose": transpose,
                                    "weight_filler": {"type": "gaussian", "std": 1.0},
                                    "bias_filler": {"type": "gaussian", "std": 1.0}}}
    (_, (y1, dx1, dp1)), (_, (yT, dxT, dpT)) = both(spec, (N, 3, 2, 2), 2)
    np.testing.assert_allclose(yT[0], y1[0], rtol=1e-13)
    np.testing.assert_allclose(dxT[0], dx1[0], rtol=1e-13)
    for a, b in zip(dpT, dp1):
        np.testing.assert_allclose(a, b, rtol=1e-13)


@pytest.mark.parametrize("in_place", [False, True])
def test_relu_split_over_threads(in_place):
    from netspec.blob import Blob

    out = []
    for t in (1, 3):
        layer, _ = make_layer({"type": "ReLU", "name": "relu"}, [(N, 3, 4)], backend=f64(t))
        x, dy = rand((N, 3, 4), seed=1), rand((N, 3, 4), seed=2)
        bottom = Blob("x", x.copy(), np)
        top = bottom if in_place else Blob("y", np.zeros_like(x), np)
        layer.forward([bottom], [top])
        top.diff = dy.copy()
        if not in_place:
            bottom.diff = np.zeros_like(x)
        layer.backward([top], [True], [bottom])
        out.append((top.data.copy(), bottom.diff.copy()))
    np.testing.assert_array_equal(out[1][0], out[0][0])
    np.testing.assert_array_equal(out[1][1], out[0][1])
    np.testing.assert_array_equal(out[0][0], np.maximum(rand((N, 3, 4), seed=1), 0))


# -- a whole training step ---------------------------------------------------------------------
NET = {
    "name": "small",
    "layer": [
        {"name": "data", "type": "Input", "top": ["data", "label"],
         "input_param": {"shape": [{"dim": [6, 2, 9, 9]}, {"dim": [6]}]}},
        {"name": "conv", "type": "Convolution", "bottom": "data", "top": "conv",
         "convolution_param": {"num_output": 4, "kernel_size": 3, "pad": 1,
                               "weight_filler": {"type": "xavier"}}},
        {"name": "relu", "type": "ReLU", "bottom": "conv", "top": "conv"},
        {"name": "pool", "type": "Pooling", "bottom": "conv", "top": "pool",
         "pooling_param": {"pool": "MAX", "kernel_size": 3, "stride": 2}},
        {"name": "ip", "type": "InnerProduct", "bottom": "pool", "top": "ip",
         "param": [{"lr_mult": 1}, {"lr_mult": 2, "decay_mult": 0}],
         "inner_product_param": {"num_output": 3, "weight_filler": {"type": "xavier"}}},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip", "label"], "top": "loss"},
    ],
}


def _train(threads, solver_type, steps=4, regularization="L2", dtype=np.float64):
    from netspec.log import CaffeLog
    from netspec.solvers import Solver
    from netspec.spec import parse_net
    from netspec.spec.solver import SolverParameter

    sp = SolverParameter.model_validate({
        "net": "small", "type": solver_type, "base_lr": 0.05, "momentum": 0.9,
        "weight_decay": 1e-3, "regularization_type": regularization, "lr_policy": "fixed", "max_iter": steps, "random_seed": 7,
        "display": 0})
    s = Solver(sp, backend=Backend(np, dtype, threads), net_param=parse_net(NET, "small"),
               log=CaffeLog(quiet=True))
    rng = np.random.default_rng(0)
    s.net.blobs["data"].data[...] = rng.standard_normal((6, 2, 9, 9))
    s.net.blobs["label"].data[...] = rng.integers(0, 3, 6)
    losses = [s.step_once() for _ in range(steps)]
    pieces = s._update_slices()
    return losses, {k: p.data.copy() for k, p in s.net.named_params().items()}, pieces


@pytest.mark.parametrize("solver_type, regularization",
                         [("SGD", "L2"), ("AdaGrad", "L1"), ("Adam", "decoupled")])
def test_training_steps_split_over_threads(solver_type, regularization):
    losses1, params1, pieces1 = _train(1, solver_type, regularization=regularization)
    losses2, params2, pieces2 = _train(2, solver_type, regularization=regularization)
    again, params_again, _ = _train(2, solver_type, regularization=regularization)
    assert len(pieces1) == 1 and len(pieces2) == 2           # the update was split as well
    np.testing.assert_allclose(losses2, losses1, rtol=1e-12)
    for k in params1:
        np.testing.assert_allclose(params2[k], params1[k], rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(params_again[k], params2[k])   # deterministic at T = 2
    assert again == losses2


def _net(layers, threads):
    from netspec.net import Net
    from netspec.spec import parse_net

    spec = {"name": "n", "layer": [NET["layer"][0]] + layers + [NET["layer"][-1]]}
    return Net(parse_net(spec, "n"), "TRAIN", Backend(np, np.float32, threads))


def test_a_net_with_batch_splitting_layers_runs_blas_single_threaded():
    conv_net = _net(NET["layer"][1:-1], 2)
    assert (conv_net.backend.threads, conv_net.blas_threads) == (2, 1)
    assert all(layer.threads == 2 for layer in conv_net.layers)


def test_a_net_of_gemms_gives_its_threads_to_blas():
    ip = dict(NET["layer"][4], bottom="data")
    mlp = _net([ip], 3)
    assert (mlp.backend.threads, mlp.blas_threads) == (1, 3)
    assert all(layer.threads == 1 for layer in mlp.layers)
    assert (_net([ip], 1).backend.threads, _net([ip], 1).blas_threads) == (1, 1)


@pytest.mark.parametrize("blas", [True, False])
def test_a_batch_smaller_than_the_threads_gives_them_to_blas(blas, conv_tuning):
    """One sample on two threads: the batch cannot be split, so with
    ``single_sample_blas_threads`` each pass lets BLAS thread its GEMMs (and matmul does not
    split on top of it), else BLAS stays at one thread (the convolutions split their GEMMs:
    tests/test_conv_single_sample.py); two samples split as before. A training step gives
    the same result either way (float rounding apart)."""
    conv_tuning(single_sample_blas_threads=blas)
    one = _net(NET["layer"][1:-1], 2)
    assert one.pass_blas_threads() == 1                     # batch 6 on 2 threads
    small = dict(NET["layer"][0], input_param={"shape": [{"dim": [1, 2, 9, 9]}, {"dim": [1]}]})
    from netspec.net import Net
    from netspec.spec import parse_net

    nets = {T: Net(parse_net({"name": "n", "layer": [small] + NET["layer"][1:]}, "n"), "TRAIN",
                   Backend(np, np.float64, T), np.random.default_rng(3)) for T in (1, 2)}
    assert (nets[2].pass_blas_threads(), nets[1].pass_blas_threads()) == (2 if blas else 1, 1)
    x = np.random.default_rng(4).standard_normal((1, 2, 9, 9))
    for net in nets.values():
        net.blobs["data"].data[...] = x
        net.blobs["label"].data[...] = 1
        net.clear_param_diffs()
        net.forward_backward()
    for k, p in nets[1].named_params().items():
        np.testing.assert_allclose(nets[2].named_params()[k].diff, p.diff, rtol=1e-12, atol=1e-14)
    calls = []
    real_run = parallel.run
    try:
        parallel.run = lambda fn, items: calls.append(len(items)) or real_run(fn, items)
        a = np.ones((64, 800))
        with parallel.blas_threads(f64(2), 2):
            parallel.matmul(a, np.ones((800, 500)), np.empty((64, 500)), threads=2)
        parallel.matmul(a, np.ones((800, 500)), np.empty((64, 500)), threads=2)
    finally:
        parallel.run = real_run
    assert calls == [2]                      # split only outside the BLAS-threaded pass


def test_training_steps_split_over_threads_float32():
    losses1, params1, _ = _train(1, "SGD", dtype=np.float32)
    losses2, params2, _ = _train(2, "SGD", dtype=np.float32)
    np.testing.assert_allclose(losses2, losses1, rtol=1e-5)
    for k in params1:
        assert params1[k].dtype == params2[k].dtype == np.float32
        np.testing.assert_allclose(params2[k], params1[k], rtol=1e-4, atol=1e-6)


def test_update_slices_tile_the_flat_buffers():
    _, _, pieces = _train(3, "SGD", steps=1)
    sizes = [[p.count for p, _ in thread] for thread in pieces]
    assert len(pieces) == 3
    totals = [sum(s) for s in sizes]
    assert max(totals) - min(totals) <= 1                    # near-equal ranges
    flat = [p.data for thread in pieces for p, _ in thread]
    base = flat[0].base if flat[0].base is not None else flat[0]
    offsets = [(p.__array_interface__["data"][0] - base.__array_interface__["data"][0])
               // p.itemsize for p in flat]
    ends = [o + p.size for o, p in zip(offsets, flat)]
    assert offsets[0] == 0 and offsets[1:] == ends[:-1]      # contiguous, in order, no gaps


@pytest.mark.parametrize("solver_type, regularization",
                         [("SGD", "L2"), ("Nesterov", "L1"), ("AdaGrad", "L2"),
                          ("Adam", "decoupled"), ("RMSProp", "L2")])
def test_one_thread_update_in_blocks_equals_whole_buffers(solver_type, regularization,
                                                          monkeypatch):
    """On one thread the update runs block by block over the flat buffers (every pass per
    block): the pieces tile the buffers in blocks of at most UPDATE_BLOCK_ELEMENTS, cut at
    group ends, and four steps give bit for bit the parameters of whole-buffer updates."""
    from netspec.solvers import solver as solver_module

    monkeypatch.setattr(solver_module, "UPDATE_BLOCK_ELEMENTS", 10**9)
    losses, whole, pieces = _train(1, solver_type, regularization=regularization)
    assert len(pieces) == 1
    groups = len(pieces[0])
    monkeypatch.setattr(solver_module, "UPDATE_BLOCK_ELEMENTS", 7)
    losses_b, blocked, pieces_b = _train(1, solver_type, regularization=regularization)
    sizes = [p.count for p, _ in pieces_b[0]]
    assert len(pieces_b) == 1 and max(sizes) <= 7 and len(sizes) > groups
    assert sum(sizes) == sum(p.count for p, _ in pieces[0])
    flat = [p.data for p, _ in pieces_b[0]]
    base = flat[0].base
    offsets = [(p.__array_interface__["data"][0] - base.__array_interface__["data"][0])
               // p.itemsize for p in flat]
    assert offsets[0] == 0 and offsets[1:] == [o + p.size for o, p in zip(offsets, flat)][:-1]
    assert losses_b == losses
    for k in whole:
        np.testing.assert_array_equal(blocked[k], whole[k])


@pytest.mark.parametrize("threads", [1, 2])
def test_ave_pooling_matrix_in_place(threads, monkeypatch):
    """In place (top = bottom: stride 1, "same" padding), the pooling matrix's GEMM, split
    over threads by column blocks, gives the top and bottom diff of the out-of-place layer
    (each block would otherwise overwrite cells the other still reads)."""
    from netspec.blob import Blob

    monkeypatch.setattr(parallel, "SPLIT_MIN_MACS", 0)
    spec = pool_spec(pool="AVE", kernel_size=7, stride=1, pad=3)
    shape = (4, 4, 32, 32)                # N·C = 16 planes of 1024 cells: split by columns
    layer, tops = make_layer(spec, [shape], backend=f64(threads))
    assert layer._matrix is not None and tops == [shape]
    x, dy = rand(shape, 31), rand(shape, 32)
    (want_y,), (want_dx,), _ = forward_backward(layer, [x], tops, [dy])
    blob = Blob("x", x.copy(), np)
    layer.forward([blob], [blob])
    np.testing.assert_allclose(blob.data, want_y, rtol=1e-13, atol=1e-15)
    blob.diff[...] = dy
    layer.backward([blob], [True], [blob])
    np.testing.assert_allclose(blob.diff, want_dx, rtol=1e-13, atol=1e-15)
