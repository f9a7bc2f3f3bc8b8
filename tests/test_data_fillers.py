"""Data sources (built-in MNIST, IDX, .npz), the Data layer's order/transform, and fillers."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from netspec.data.mnist import BUILTIN_DIR, load_mnist, read_idx
from netspec.errors import DataError, SpecError
from netspec.fillers import fill
from netspec.spec.params import FillerParameter
from gradcheck import make_layer, run_forward


def test_builtin_mnist_shapes_and_labels():
    x, y = load_mnist("train")
    assert x.shape == (60000, 1, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and set(np.unique(y)) == set(range(10))
    xt, yt = load_mnist("test")
    assert xt.shape == (10000, 1, 28, 28)
    # the well-known first labels of the MNIST training and test sets
    assert list(y[:8]) == [5, 0, 4, 1, 9, 2, 1, 3]
    assert list(yt[:8]) == [7, 2, 1, 0, 4, 1, 4, 9]


def _write_idx(path, arr):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_folder_source_and_corrupt_file(tmp_path):
    imgs = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([3, 1, 2]))
    x, y = load_mnist("test", str(tmp_path))
    np.testing.assert_array_equal(x[:, 0], imgs)
    assert list(y) == [3, 1, 2]
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"abc")
    with pytest.raises(DataError, match="truncated"):
        read_idx(bad)


def test_builtin_checksum_is_verified():
    assert (BUILTIN_DIR / "train-images-idx3-ubyte.gz").exists()
    from netspec.data import mnist

    assert set(mnist.SHA256) == {p.name for p in BUILTIN_DIR.glob("*.gz")}


def npz_layer(tmp_path, n=10, **data_param):
    data = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    np.savez(tmp_path / "d.npz", data=data, label=np.arange(n))
    spec = {"type": "Data", "top": ["x", "y"], "data_param": {"source": str(tmp_path / "d.npz"), **data_param}}
    return make_layer(spec, [])


def test_data_layer_reads_in_order_and_wraps_like_caffe(tmp_path):
    layer, tops = npz_layer(tmp_path, batch_size=4)
    seen = []
    for _ in range(3):
        _, top = run_forward(layer, [], tops)
        seen.append(list(top[1].data.astype(int)))
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]


def test_data_layer_shuffles_each_epoch_without_repeats(tmp_path):
    layer, tops = npz_layer(tmp_path, batch_size=5, shuffle=True)
    epochs = []
    for _ in range(2):
        labels = []
        for _ in range(2):
            _, top = run_forward(layer, [], tops)
            labels += list(top[1].data.astype(int))
        epochs.append(labels)
    assert sorted(epochs[0]) == list(range(10)) and sorted(epochs[1]) == list(range(10))
    assert epochs[0] != epochs[1]


def test_data_layer_scale_offset_limit(tmp_path):
    layer, tops = npz_layer(tmp_path, batch_size=2, offset=3, limit=4)
    layer.lp.transform_param = None
    _, top = run_forward(layer, [], tops)
    assert list(top[1].data) == [3, 4]
    spec = {"type": "Data", "top": ["x", "y"], "transform_param": {"scale": 0.5, "mean_value": [1.0]},
            "data_param": {"source": str(tmp_path / "d.npz"), "batch_size": 2}}
    layer, tops = make_layer(spec, [])
    _, top = run_forward(layer, [], tops)
    np.testing.assert_allclose(top[0].data, (np.array([[0, 1], [2, 3]]) - 1.0) * 0.5)


def test_missing_source_is_a_clear_error(tmp_path):
    spec = {"type": "Data", "top": ["x", "y"], "data_param": {"source": str(tmp_path / "nope.npz"), "batch_size": 2}}
    with pytest.raises(DataError, match="not found"):
        make_layer(spec, [])


# -- fillers: moments derived from each filler's definition ------------------------------
RNG = np.random.default_rng(0)


def f(**kw):
    return FillerParameter(**kw)


def test_constant_uniform_gaussian():
    assert np.all(fill(f(type="constant", value=0.3), (4, 5), RNG) == 0.3)
    u = fill(f(type="uniform", min=-2, max=3), (200, 500), RNG)
    assert u.min() >= -2 and u.max() <= 3 and abs(u.mean() - 0.5) < 0.02
    g = fill(f(type="gaussian", mean=1, std=2), (300, 400), RNG)
    assert abs(g.mean() - 1) < 0.02 and abs(g.std() - 2) < 0.02


def test_sparse_gaussian_keeps_sparse_over_fan_out():
    w = fill(f(type="gaussian", std=1, sparse=5), (400, 100), RNG)  # fan_out = 400*100/100 = 400
    assert abs((w != 0).mean() - 5 / 400) < 0.003


def test_xavier_and_msra_variances():
    shape = (64, 32, 3, 3)  # fan_in = 32*9, fan_out = 64*9
    for norm, n in (("FAN_IN", 288), ("FAN_OUT", 576), ("AVERAGE", 432)):
        x = fill(f(type="xavier", variance_norm=norm), shape, RNG)
        assert np.abs(x).max() <= np.sqrt(3 / n) + 1e-12
        assert abs(x.var() - 1 / n) / (1 / n) < 0.05
        m = fill(f(type="msra", variance_norm=norm), shape, RNG)
        assert abs(m.var() - 2 / n) / (2 / n) < 0.05


def test_truncated_gaussian_within_two_std():
    t = fill(f(type="truncated_gaussian", mean=0.5, std=0.1), (100, 1000), RNG)
    assert t.min() >= 0.3 and t.max() <= 0.7
    # the std of a N(0,1) truncated to [-2, 2] is 0.8796
    assert abs(t.std() - 0.1 * 0.8796) < 0.002


def test_positive_unitball_rows_sum_to_one():
    p = fill(f(type="positive_unitball"), (5, 3, 2, 2), RNG)
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.reshape(5, -1).sum(axis=1), 1.0)


def test_bilinear_kernel():
    k = fill(f(type="bilinear"), (1, 1, 4, 4), RNG)[0, 0]
    # Caffe's bilinear filler for kernel 4 (factor 2, center 1.5/2): 1-|x/2-0.75| per axis
    row = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(k, np.outer(row, row))


def test_unknown_filler_suggests():
    with pytest.raises(SpecError, match="xavier"):
        fill(f(type="xavir"), (2, 2), RNG)


def test_download_from_a_loopback_mirror(tmp_path):
    """The download path, against a local HTTP server holding the shipped files."""
    import functools
    import http.server
    import threading

    from netspec.data import mnist

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(BUILTIN_DIR))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        folder = mnist.download(tmp_path / "m", mirrors=(url,))
        x, y = load_mnist("test", str(folder))
        assert x.shape == (10000, 1, 28, 28)
        with pytest.raises(DataError, match="could not download"):
            mnist.download(tmp_path / "n", mirrors=(f"http://127.0.0.1:{server.server_address[1]}/nope/",))
    finally:
        server.shutdown()


@pytest.mark.parametrize("value", [0.0, 0.25])
def test_constant_filled_param_made_in_the_net_dtype(value):
    """A constant-filled parameter (every deploy net's weights before loading) is made in the
    net's dtype directly: the same values as the float64 fill cast, and no float64 copy (2x
    the blob) on the way."""
    import tracemalloc

    from netspec.backend import Backend

    spec = {"type": "InnerProduct", "inner_product_param": {
        "num_output": 1000, "weight_filler": {"type": "constant", "value": value}}}
    tracemalloc.start()
    try:
        layer, _ = make_layer(spec, [(1, 1000)], backend=Backend(np, np.float32))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    w = layer.blobs[0].data
    assert w.dtype == np.float32 and w.shape == (1000, 1000)
    np.testing.assert_array_equal(w, fill(FillerParameter(type="constant", value=value),
                                          (1000, 1000), np.random.default_rng(0)).astype(np.float32))
    assert peak < 1.5 * w.nbytes
