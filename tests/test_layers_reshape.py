"""Reshape layers (netspec/layers/reshape.py): Flatten, Reshape, Crop, Tile.

Gradient checks in float64, shapes worked out by hand, Caffe parity for Flatten
(tests/golden/layers/, float32), spec errors; and two checks of parameter messages across
families (Caffe's defaults, unknown keys refused): LRN, Crop, Slice, Reshape, Tile, Reduction,
ArgMax, SPP, Embed, Parameter and Bias.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from gradcheck import check_gradients, forward_backward, make_layer, rand, run_forward
from layer_cases import F32, GAUSS, SHAPE, forward_backward_pair, golden

from netspec.blob import Blob
from netspec.errors import NetspecError, SpecError
from netspec.spec.params import LAYER_PARAM_BLOCKS
from netspec.spec.params.inner_product import EmbedParameter
from netspec.spec.params.normalization import BiasParameter, LRNParameter
from netspec.spec.params.pool import SPPParameter
from netspec.spec.params.reduction import ArgMaxParameter, ReductionParameter
from netspec.spec.params.reshape import CropParameter, ReshapeParameter, TileParameter
from netspec.spec.params.structure import SliceParameter

# -- Flatten --------------------------------------------------------------------------------------

@pytest.mark.parametrize("param, want", [
    ({}, (2, 60)),
    ({"axis": 2}, (2, 3, 20)),
    ({"axis": 1, "end_axis": 2}, (2, 12, 5)),
    ({"axis": -2, "end_axis": -1}, (2, 3, 20)),
    ({"axis": 0}, (120,)),
])
def test_flatten_shapes_and_gradient(param, want):
    layer, shapes = make_layer({"type": "Flatten", "flatten_param": param}, [SHAPE])
    assert shapes == [want]
    x = rand(SHAPE)
    _, top = run_forward(layer, [x], shapes)
    np.testing.assert_array_equal(top[0].data, x.reshape(want))
    check_gradients(layer, [x], shapes)


def test_flatten_refuses_in_place():
    layer, _ = make_layer({"type": "Flatten"}, [SHAPE])
    blob = Blob("x", rand(SHAPE), np)
    with pytest.raises(NetspecError, match="in place"):
        layer.forward([blob], [blob])


def test_flatten_bad_axes():
    with pytest.raises(NetspecError, match="end_axis"):
        make_layer({"type": "Flatten", "flatten_param": {"axis": 2, "end_axis": 1}}, [SHAPE])


def test_caffe_flatten_axis2():
    g = golden("flatten_axis2")
    x, dy = g["input/x"], g["topdiff/y"]
    layer, shapes = make_layer({"name": "l", "type": "Flatten", "bottom": "x", "top": "y",
                                "flatten_param": {"axis": 2}}, [x.shape], backend=F32)
    assert shapes == [g["top/y"].shape]
    (y,), (dx,) = forward_backward_pair(layer, [x], shapes, [dy])
    np.testing.assert_allclose(y, g["top/y"], rtol=1e-5)
    np.testing.assert_allclose(dx, g["bottomdiff/x"], rtol=1e-5)


# -- Crop -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("p, shapes, want_index", [
    ({}, [(2, 3, 8, 9), (1, 1, 5, 4)], np.s_[:, :, 0:5, 0:4]),
    ({"offset": 2}, [(2, 3, 8, 9), (1, 1, 5, 4)], np.s_[:, :, 2:7, 2:6]),
    ({"axis": 1, "offset": [1, 3, 4]}, [(2, 3, 8, 9), (5, 2, 5, 4)], np.s_[:, 1:3, 3:8, 4:8]),
    ({"axis": -1, "offset": 1}, [(2, 3, 4), (9, 9, 2)], np.s_[:, :, 1:3]),
    ({"axis": 0}, [(3, 4), (2, 2)], np.s_[0:2, 0:2]),
])
def test_crop(p, shapes, want_index):
    layer, tops = make_layer({"type": "Crop", "crop_param": p}, shapes)
    x = rand(shapes[0])
    _, (y,) = run_forward(layer, [x, np.zeros(shapes[1])], tops)
    np.testing.assert_array_equal(y.data, x[want_index])
    check_gradients(layer, [x, rand(shapes[1])], tops)
    (_,), (dx, none), _ = forward_backward(layer, [x, np.zeros(shapes[1])], tops,
                                           [np.ones(tops[0])])
    assert none is None and dx.sum() == math.prod(tops[0])


@pytest.mark.parametrize("p, shapes, words", [
    ({"offset": 4}, [(1, 1, 8, 8), (1, 1, 5, 5)], "out of bounds"),
    ({"offset": [1, 2, 3]}, [(1, 1, 8, 8), (1, 1, 5, 5)], "offsets"),
    ({"axis": 4}, [(1, 1, 8, 8), (1, 1, 5, 5)], "out of range"),
])
def test_crop_errors(p, shapes, words):
    with pytest.raises(NetspecError, match=words):
        make_layer({"type": "Crop", "crop_param": p}, shapes)


# -- Reshape --------------------------------------------------------------------------------------

@pytest.mark.parametrize("p, shape, want", [
    ({"shape": {"dim": [0, -1]}}, (2, 3, 4, 5), (2, 60)),
    ({"shape": {"dim": [0, 0, -1, 1]}}, (2, 3, 4), (2, 3, 4, 1)),
    ({"shape": {"dim": [2, 2]}, "axis": 1, "num_axes": 1}, (3, 4, 5), (3, 2, 2, 5)),
    ({"shape": {"dim": [-1]}, "axis": 1}, (3, 4, 5), (3, 20)),
    ({"shape": {"dim": [1, 1]}, "axis": -1, "num_axes": 0}, (3, 4), (3, 4, 1, 1)),
    ({"shape": {"dim": [1]}, "axis": 0, "num_axes": 0}, (3, 4), (1, 3, 4)),
    ({"shape": {"dim": [0, 6, -1]}, "axis": 1}, (2, 3, 12), (2, 3, 6, 2)),  # 0: axis 1
    ({"shape": {"dim": [-1, 0]}, "axis": 0}, (4, 6), (4, 6)),
])
def test_reshape_shapes(p, shape, want):
    layer, tops = make_layer({"type": "Reshape", "reshape_param": p}, [shape])
    assert tops == [want]
    x = rand(shape)
    bottom, (y,) = run_forward(layer, [x], tops)
    assert np.shares_memory(y.data, bottom[0].data)          # Caffe's ShareData
    np.testing.assert_array_equal(y.data, x.reshape(want))
    check_gradients(layer, [x], tops)


@pytest.mark.parametrize("p, words", [
    ({"shape": {"dim": [-1, -1]}}, "multiple -1"),
    ({"shape": {"dim": [5, -1]}}, "divisible"),
    ({"shape": {"dim": [7]}}, "cannot reshape"),
    ({"shape": {"dim": [0, 0, 0, 0]}}, "no corresponding"),
    ({"shape": {"dim": [2]}, "axis": 4}, "out of range"),
    ({"shape": {"dim": [2]}, "axis": 1, "num_axes": 3}, "out of range"),
    ({"shape": {"dim": [-2, 3]}}, ">= -1"),
])
def test_reshape_errors(p, words):
    with pytest.raises(NetspecError, match=words):
        make_layer({"type": "Reshape", "reshape_param": p}, [(2, 3, 4)])


def test_reshape_refuses_in_place():
    with pytest.raises(SpecError, match="in place"):
        make_layer({"type": "Reshape", "bottom": "x", "top": "x",
                    "reshape_param": {"shape": {"dim": [0, -1]}}}, [(2, 3, 4)])


# -- Tile -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("axis, tiles, shape", [(1, 3, (2, 3, 4)), (0, 2, (2, 3)),
                                                (-1, 4, (2, 3, 2)), (2, 1, (2, 2, 3))])
def test_tile(axis, tiles, shape):
    layer, tops = make_layer({"type": "Tile", "tile_param": {"axis": axis, "tiles": tiles}},
                             [shape])
    x = rand(shape)
    _, (y,) = run_forward(layer, [x], tops)
    reps = [1] * len(shape)
    reps[axis] = tiles
    np.testing.assert_array_equal(y.data, np.tile(x, reps))
    check_gradients(layer, [x], tops)


@pytest.mark.parametrize("p, words", [({"axis": 1}, "must be specified"),
                                      ({"tiles": 0}, "positive"),
                                      ({"tiles": 2, "axis": 3}, "out of range")])
def test_tile_errors(p, words):
    with pytest.raises(SpecError, match=words):
        make_layer({"type": "Tile", "tile_param": p}, [(2, 3, 4)])


# -- parameter messages, across families ----------------------------------------------------------

def test_messages_have_caffe_defaults():
    lrn = LRNParameter()
    assert (lrn.local_size, lrn.alpha, lrn.beta, lrn.k, lrn.norm_region) == \
        (5, 1.0, 0.75, 1.0, "ACROSS_CHANNELS")
    assert (CropParameter().axis, CropParameter().offset) == (2, [])
    assert (SliceParameter().axis, SliceParameter().slice_point) == (1, [])
    r = ReshapeParameter()
    assert (r.shape, r.axis, r.num_axes) == (None, 0, -1)
    assert (TileParameter().axis, TileParameter().tiles) == (1, None)
    red = ReductionParameter()
    assert (red.operation, red.axis, red.coeff) == ("SUM", 0, 1.0)
    am = ArgMaxParameter()
    assert (am.out_max_val, am.top_k, am.axis) == (False, 1, None)
    assert (SPPParameter().pool, SPPParameter().pyramid_height) == ("MAX", None)
    e = EmbedParameter()
    assert (e.bias_term, e.weight_filler.type, e.bias_filler.type) == (True, "constant",
                                                                        "constant")
    b = BiasParameter()
    assert (b.axis, b.num_axes, b.filler) == (1, 1, None)
    assert {"lrn_param", "crop_param", "slice_param", "reshape_param", "tile_param",
            "reduction_param", "argmax_param", "spp_param", "embed_param", "parameter_param",
            "bias_param", "recurrent_param"} <= set(LAYER_PARAM_BLOCKS)


@pytest.mark.parametrize("spec", [
    {"type": "LRN", "lrn_param": {"local_sise": 5}},
    {"type": "LRN", "lrn_param": {"norm_region": "ACROSS"}},
    {"type": "Crop", "crop_param": {"offset": [-1]}},
    {"type": "Slice", "slice_param": {"slice_points": [1]}},
    {"type": "Reshape", "reshape_param": {"shape": {"dims": [1]}}},
    {"type": "Reduction", "reduction_param": {"operation": "MAX"}},
    {"type": "ArgMax", "argmax_param": {"top_k": -1}},
    {"type": "SPP", "spp_param": {"pyramid_height": 2, "method": "MAX"}},
    {"type": "Embed", "embed_param": {"num_output": 2, "input_dim": 2, "filler": GAUSS}},
    {"type": "Bias", "bias_param": {"bias_term": True}},
    {"type": "Tile", "tile_param": {"tile": 2}},
    {"type": "Parameter", "parameter_param": {"dim": [1]}},
])
def test_unknown_or_invalid_fields_refused(spec):
    from pydantic import ValidationError
    with pytest.raises(ValidationError):
        make_layer(spec, [(2, 3, 4, 5)])


# -- Permute (SSD) ---------------------------------------------------------------------------------

@pytest.mark.parametrize("order,expect", [([0, 2, 3, 1], (0, 2, 3, 1)), ([3, 2], (3, 2, 0, 1)),
                                          ([], (0, 1, 2, 3))])
def test_permute_forward_gradient(order, expect):
    x = rand((2, 3, 4, 5), seed=8)
    layer, shapes = make_layer({"type": "Permute", "permute_param": {"order": order}}, [x.shape])
    assert layer.order == expect and shapes == [tuple(x.shape[a] for a in expect)]
    _, (y,) = run_forward(layer, [x], shapes)
    np.testing.assert_array_equal(y.data, x.transpose(expect))
    check_gradients(layer, [x], shapes)


@pytest.mark.parametrize("order,match", [([0, 4], "order 4 is not an axis"),
                                         ([1, 1], "order lists axis 1 twice")])
def test_permute_refuses_bad_orders(order, match):
    with pytest.raises(SpecError, match=match):
        make_layer({"type": "Permute", "permute_param": {"order": order}}, [(2, 3, 4, 5)])


def test_fork_golden_permute_0231():
    from layer_cases import fork_golden_net, run_golden
    net, g = fork_golden_net("permute_0231")
    assert run_golden(net, g) == ["x"]


# -- Upsample (the YOLO forks' nearest neighbour) --------------------------------------------------

@pytest.mark.parametrize("scale", [1, 2, 3])
def test_upsample_nearest_forward_gradient(scale):
    x = rand((2, 3, 4, 5), seed=13)
    layer, shapes = make_layer({"type": "Upsample", "upsample_param": {"scale": scale}}, [x.shape])
    assert shapes == [(2, 3, 4 * scale, 5 * scale)]
    _, (y,) = run_forward(layer, [x], shapes)
    np.testing.assert_array_equal(y.data, x.repeat(scale, axis=2).repeat(scale, axis=3))
    check_gradients(layer, [x], shapes)


def test_fork_golden_upsample_2():
    from layer_cases import fork_golden_net, run_golden
    net, g = fork_golden_net("upsample_2")
    assert run_golden(net, g) == ["x"]


# -- Upsample with two bottoms: SegNet's max-unpooling (alexgkendall/caffe-segnet) ---------------

def _pooled(shape, kernel=2, stride=2, seed=21):
    """A random bottom max-pooled by netspec's Pooling: (pooled, mask, pooled's shape)."""
    x = rand(shape, seed=seed)
    pool, pshapes = make_layer({"type": "Pooling", "top": ["p", "m"], "pooling_param":
                                {"pool": "MAX", "kernel_size": kernel, "stride": stride}}, [shape])
    _, (p, m) = run_forward(pool, [x], pshapes)
    return p.data.copy(), m.data.copy(), pshapes[0]


def _unpool(param, shapes):
    return make_layer({"type": "Upsample", "bottom": ["x", "mask"], "upsample_param": param},
                      shapes)


def _unpool_loop(x, mask, H, W):
    """The fork's UpsampleLayer::Forward_cpu, literally: per plane, top[mask[i]] = x[i]."""
    N, C = x.shape[:2]
    y = np.zeros((N, C, H * W))
    for n in range(N):
        for c in range(C):
            for i in range(x.shape[2] * x.shape[3]):
                y[n, c, int(mask[n, c].flat[i])] = x[n, c].flat[i]
    return y.reshape(N, C, H, W)


UNPOOL_CASES = [   # (bottom of the pooling, upsample_param, top H×W)
    ((2, 3, 6, 8), {"scale": 2}, (6, 8)),
    ((2, 3, 6, 8), {}, (6, 8)),                                    # scale: the fork's default 2
    ((1, 2, 5, 7), {"scale": 2, "pad_out_h": True, "pad_out_w": True}, (5, 7)),
    ((1, 2, 5, 4), {"scale": 2, "pad_out_h": True}, (5, 4)),        # SegNet basic's upsample4
    ((1, 2, 5, 7), {"upsample_h": 5, "upsample_w": 7}, (5, 7)),     # SegNet's upsample_h/_w
    ((2, 2, 6, 9), {"scale_h": 2, "scale_w": 3}, (6, 9)),
]


@pytest.mark.parametrize("shape, param, out", UNPOOL_CASES)
def test_segnet_upsample_unpools_like_the_forks_loop(shape, param, out):
    kernel = (2, 3) if param.get("scale_w") == 3 else 2
    if kernel == 2:
        x, mask, pshape = _pooled(shape)
    else:
        pool, pshapes = make_layer({"type": "Pooling", "top": ["p", "m"], "pooling_param": {
            "pool": "MAX", "kernel_h": 2, "kernel_w": 3, "stride_h": 2, "stride_w": 3}}, [shape])
        _, (p, m) = run_forward(pool, [rand(shape, seed=22)], pshapes)
        x, mask, pshape = p.data.copy(), m.data.copy(), pshapes[0]
    layer, shapes = _unpool(param, [pshape, pshape])
    assert type(layer).__name__ == "MaxUnpool" and shapes == [shape[:2] + out]
    _, (y,) = run_forward(layer, [x, mask], shapes)
    np.testing.assert_array_equal(y.data, _unpool_loop(x, mask, *out))
    check_gradients(layer, [x, mask], shapes)       # bottom 0; the mask has no gradient


@pytest.mark.parametrize("shape, out", [((2, 3, 6, 8), None), ((1, 4, 9, 11), (9, 11))])
def test_segnet_upsample_matches_torch_max_unpool2d(shape, out):
    """Forward and backward against PyTorch's max_unpool2d, with the indices of torch's own
    max_pool2d(return_indices=True) (flat h·W + w per plane, Caffe's mask) as the mask."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    xin = torch.tensor(rand(shape, seed=23))
    pooled, idx = F.max_pool2d(xin, 2, 2, ceil_mode=True, return_indices=True)
    H, W = shape[2:]
    param = ({"upsample_h": H, "upsample_w": W} if out else {"scale": 2})
    layer, shapes = _unpool(param, [tuple(pooled.shape)] * 2)
    assert shapes == [shape]
    dy = rand(shape, seed=24)
    (y,), (dx, _), _ = forward_backward(layer, [pooled.numpy(), idx.numpy().astype(np.float64)],
                                        shapes, [dy])
    p = pooled.clone().requires_grad_(True)
    want = F.max_unpool2d(p, idx, 2, 2, output_size=(H, W))
    want.backward(torch.tensor(dy))
    np.testing.assert_array_equal(y, want.detach().numpy())
    np.testing.assert_array_equal(dx, p.grad.numpy())


def test_segnet_upsample_inverts_the_pooling_in_a_net():
    """Pooling (with its mask top) then Upsample: each window's maximum back at its place, zeros
    elsewhere; the gradient reaches the pooling's bottom at the maxima only."""
    from netspec.net import Net
    from netspec.spec import parse_net
    net = Net(parse_net({"name": "n", "force_backward": True, "layer": [
        {"name": "x", "type": "Input", "top": "x", "input_param": {"shape": {"dim": [2, 3, 7, 6]}}},
        {"name": "pool", "type": "Pooling", "bottom": "x", "top": ["p", "mask"],
         "pooling_param": {"pool": "MAX", "kernel_size": 2, "stride": 2}},
        {"name": "up", "type": "Upsample", "bottom": ["p", "mask"], "top": "y",
         "upsample_param": {"scale": 2, "pad_out_h": True}}]}), "TRAIN", F32)
    x = rand((2, 3, 7, 6), seed=25).astype(np.float32)
    net.blobs["x"].data[...] = x
    net.forward()
    y = net.blobs["y"].data
    assert y.shape == x.shape
    windows = np.pad(x, ((0, 0), (0, 0), (0, 1), (0, 0)), constant_values=-np.inf)
    windows = windows.reshape(2, 3, 4, 2, 3, 2).max(axis=(3, 5))
    kept = y != 0
    np.testing.assert_array_equal(y[kept], x[kept])
    assert kept.sum() == windows.size
    np.testing.assert_array_equal(np.sort(y[kept]), np.sort(windows.ravel()))
    net.blobs["y"].diff[...] = 1
    net.backward()
    np.testing.assert_array_equal(net.blobs["x"].diff, kept.astype(np.float32))


@pytest.mark.parametrize("param, words", [
    ({"scale_h": 2}, "scale_h and scale_w together"),
    ({"scale": 2, "scale_h": 2, "scale_w": 2}, "not with scale"),
    ({"upsample_h": 8}, "upsample_h and upsample_w together"),
    ({"upsample_h": 1, "upsample_w": 8}, "upsample_h must be greater than 1"),
    ({"scale": 1}, "scale must be greater than 1"),
    ({"scale_h": 3, "scale_w": 2, "pad_out_h": True}, "pad_out_h needs a scale of 2"),
])
def test_segnet_upsample_contradicting_fields(param, words):
    with pytest.raises(SpecError, match=words) as e:
        _unpool(param, [(1, 2, 4, 4)] * 2)
    assert "upsample_param." in e.value.format()


def test_segnet_upsample_bad_bottoms():
    with pytest.raises(NetspecError, match=r"the mask \(bottom 1, shape \(1, 2, 4, 3\)\)"):
        _unpool({"scale": 2}, [(1, 2, 4, 4), (1, 2, 4, 3)])
    layer, shapes = _unpool({"scale": 2}, [(1, 1, 2, 2)] * 2)
    with pytest.raises(NetspecError, match="mask index 16 is outside the 16 positions"):
        run_forward(layer, [np.ones((1, 1, 2, 2)), np.array([[[[0, 1], [2, 16]]]])], shapes)


def _upsample_net(bottoms, param):
    from netspec.spec import parse_net
    layers = [{"name": b, "type": "Input", "top": b,
               "input_param": {"shape": {"dim": [1, 2, 4, 4]}}} for b in bottoms]
    layers.append({"name": "up", "type": "Upsample", "bottom": bottoms, "top": "y",
                   "upsample_param": param})
    return parse_net({"name": "n", "layer": layers})


@pytest.mark.parametrize("bottoms, param, words", [
    (["pool"], {"scale": 2, "upsample_h": 8, "upsample_w": 8},
     r"upsample_param.upsample_h is a field of SegNet's un-pooling Upsample .*caffe-segnet"),
    (["a", "b", "c"], {"scale": 2}, "takes at most 2 bottom"),
])
def test_upsample_arity_and_segnet_fields_on_one_bottom(bottoms, param, words):
    from netspec.net import Net
    with pytest.raises(SpecError, match=words):
        Net(_upsample_net(bottoms, param), "TEST", F32)


# -- ShuffleChannel (ShuffleNet) -------------------------------------------------------------------

@pytest.mark.parametrize("group", [1, 2, 3])
def test_shuffle_channel_forward_gradient(group):
    x = rand((2, 6, 3, 2), seed=14)
    layer, shapes = make_layer({"type": "ShuffleChannel",
                                "shuffle_channel_param": {"group": group}}, [x.shape])
    _, (y,) = run_forward(layer, [x], shapes)
    k = 6 // group
    for i in range(group):
        for j in range(k):
            np.testing.assert_array_equal(y.data[:, j * group + i], x[:, i * k + j])
    check_gradients(layer, [x], shapes)


def test_shuffle_channel_refuses_indivisible_channels():
    with pytest.raises(SpecError, match=r"channels \(6\) must be a multiple of group \(4\)"):
        make_layer({"type": "ShuffleChannel", "shuffle_channel_param": {"group": 4}},
                   [(1, 6, 2, 2)])


# -- Interp (PSPNet / DeepLab v2 bilinear, aligned corners) ----------------------------------------

def _interp_loop(x, Ho, Wo, pad_beg=0, pad_end=0):
    """The fork's caffe_cpu_interp2 read pixel by pixel (a slow oracle for the matrices)."""
    N, C, H, W = x.shape
    He, We = H + pad_beg + pad_end, W + pad_beg + pad_end
    xc = x[:, :, -pad_beg:-pad_beg + He, -pad_beg:-pad_beg + We]
    rh = np.float32((He - 1) / (Ho - 1)) if Ho > 1 else np.float32(0)
    rw = np.float32((We - 1) / (Wo - 1)) if Wo > 1 else np.float32(0)
    y = np.zeros((N, C, Ho, Wo))
    for h2 in range(Ho):
        h1r = rh * np.float32(h2)
        h1 = int(h1r)
        hp = 1 if h1 < He - 1 else 0
        l1 = float(h1r - np.float32(h1))
        for w2 in range(Wo):
            w1r = rw * np.float32(w2)
            w1 = int(w1r)
            wp = 1 if w1 < We - 1 else 0
            m1 = float(w1r - np.float32(w1))
            y[:, :, h2, w2] = ((1 - l1) * ((1 - m1) * xc[:, :, h1, w1] + m1 * xc[:, :, h1, w1 + wp])
                               + l1 * ((1 - m1) * xc[:, :, h1 + hp, w1]
                                       + m1 * xc[:, :, h1 + hp, w1 + wp]))
    return y


@pytest.mark.parametrize("param, shape, want", [
    ({"zoom_factor": 2}, (2, 3, 4, 5), (7, 9)),
    ({"zoom_factor": 8}, (1, 2, 5, 3), (33, 17)),
    ({"shrink_factor": 2}, (1, 2, 7, 8), (4, 4)),
    ({"shrink_factor": 2, "zoom_factor": 3}, (1, 2, 7, 8), (10, 10)),
    ({"height": 6, "width": 11}, (2, 2, 4, 5), (6, 11)),
    ({"height": 1, "width": 3}, (1, 2, 4, 5), (1, 3)),
    ({"height": 4, "width": 5}, (1, 2, 4, 5), (4, 5)),
    ({"zoom_factor": 2, "pad_beg": -1, "pad_end": -1}, (1, 2, 6, 7), (7, 9)),
])
def test_interp_sizes_values_gradient(param, shape, want):
    x = rand(shape, seed=21)
    layer, shapes = make_layer({"type": "Interp", "interp_param": param}, [x.shape])
    assert shapes == [shape[:2] + want]
    _, (y,) = run_forward(layer, [x], shapes)
    ref = _interp_loop(x, *want, param.get("pad_beg", 0), param.get("pad_end", 0))
    np.testing.assert_allclose(y.data, ref, rtol=0, atol=1e-12)
    check_gradients(layer, [x], shapes)


def test_interp_second_bottom_gives_size():
    x = rand((1, 3, 4, 6), seed=22)
    like = rand((1, 1, 9, 5), seed=23)
    layer, shapes = make_layer({"type": "Interp"}, [x.shape, like.shape])
    assert shapes == [(1, 3, 9, 5)]
    _, (y,) = run_forward(layer, [x, like], shapes)
    np.testing.assert_allclose(y.data, _interp_loop(x, 9, 5), rtol=0, atol=1e-12)
    check_gradients(layer, [x, like], shapes, check_bottoms=[0])


@pytest.mark.parametrize("param", [{"zoom_factor": 3}, {"height": 13, "width": 7},
                                   {"shrink_factor": 2, "zoom_factor": 4}])
def test_interp_matches_torch_align_corners(param):
    torch = pytest.importorskip("torch")
    x = rand((2, 3, 5, 6), seed=24)
    layer, shapes = make_layer({"type": "Interp", "interp_param": param}, [x.shape])
    _, (y,) = run_forward(layer, [x], shapes)
    dy = rand(shapes[0], seed=25)
    t = torch.tensor(x, requires_grad=True)
    # torch takes the coordinate ratio in float64, the fork in float32: ~1e-6 apart
    ty = torch.nn.functional.interpolate(t, size=shapes[0][2:], mode="bilinear",
                                         align_corners=True)
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=0, atol=1e-5)
    ty.backward(torch.tensor(dy))
    _, dxs, _ = forward_backward(layer, [x], shapes, [dy])
    np.testing.assert_allclose(dxs[0], t.grad.numpy(), rtol=0, atol=2e-5)


@pytest.mark.parametrize("param, bottoms, words", [
    ({}, 1, "give the output size"),
    ({"zoom_factor": 0}, 1, "zoom_factor must be at least 1"),
    ({"shrink_factor": 0}, 1, "shrink_factor must be at least 1"),
    ({"zoom_factor": 2, "pad_beg": 1}, 1, "non-positive padding"),
    ({"zoom_factor": 2, "pad_beg": -3, "pad_end": -3}, 1, "crop the 4x5 input to nothing"),
    ({"zoom_factor": 2}, 2, "second bottom gives the output size"),
])
def test_interp_errors(param, bottoms, words):
    with pytest.raises(SpecError, match=words):
        make_layer({"type": "Interp", "interp_param": param}, [(1, 2, 4, 5)] * bottoms)
