"""PSPNet's BN (hszhao/PSPNet): a closed form in NumPy, float64 gradients, and the same
numbers as netspec's BatchNorm followed by Scale (bias_term) with the same statistics and
parameters. SegNet's same-named BN (bn_mode, scale_filler, shift_filler): its closed forms,
float64 gradients, PyTorch's batch_norm, in place."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import check_gradients, forward_backward, make_layer, rand

from netspec.errors import SpecError

SHAPE = (3, 4, 5, 2)


def _bn(phase="TRAIN", **param):
    layer, shapes = make_layer({"type": "BN", "bn_param": {"eps": 1e-4, **param}}, [SHAPE],
                               phase=phase)
    rng = np.random.default_rng(5)
    slope, bias, mean, var = (b.data for b in layer.blobs)
    slope[...] = rng.uniform(0.5, 2, slope.shape)
    bias[...] = rng.standard_normal(bias.shape)
    mean[...] = rng.standard_normal(mean.shape)
    var[...] = rng.uniform(0.5, 2, var.shape)
    return layer, shapes


def test_blobs_are_slope_bias_mean_variance_of_shape_1c11():
    layer, shapes = make_layer({"type": "BN"}, [SHAPE])
    assert shapes == [SHAPE]
    assert [b.data.shape for b in layer.blobs] == [(1, 4, 1, 1)] * 4
    assert [float(b.data.mean()) for b in layer.blobs] == [1.0, 0.0, 0.0, 1.0]
    assert [(b.lr_mult, b.decay_mult) for b in layer.blobs[2:]] == [(0, 0), (0, 0)]


@pytest.mark.parametrize("phase, frozen", [("TRAIN", False), ("TRAIN", True), ("TEST", False)])
def test_closed_form(phase, frozen):
    layer, shapes = _bn(phase, frozen=frozen, momentum=0.8)
    slope, bias, mean0, var0 = (b.data.copy() for b in layer.blobs)
    x = rand(SHAPE, seed=6)
    (y,), _, _ = forward_backward(layer, [x], shapes, [np.zeros(SHAPE)])
    if phase == "TEST" or frozen:
        mean, var = mean0, var0
        want_mean, want_var = mean0, var0
    else:
        mean = x.mean(axis=(0, 2, 3), keepdims=True)
        var = ((x - mean) ** 2).sum(axis=(0, 2, 3), keepdims=True) / (3 * 5 * 2)
        want_mean, want_var = 0.8 * mean0 + 0.2 * mean, 0.8 * var0 + 0.2 * var
    np.testing.assert_allclose(y, slope * (x - mean) / np.sqrt(var + 1e-4) + bias, atol=1e-12)
    np.testing.assert_allclose(layer.blobs[2].data, want_mean, atol=1e-12)
    np.testing.assert_allclose(layer.blobs[3].data, want_var, atol=1e-12)


@pytest.mark.parametrize("phase, frozen", [("TRAIN", False), ("TRAIN", True), ("TEST", False)])
def test_gradients(phase, frozen):
    """Parameters in TRAIN only: in TEST the output depends on the running statistics, which
    have no gradient (slope's and bias's there: test_equals_batch_norm_then_scale)."""
    layer, shapes = _bn(phase, frozen=frozen)
    check_gradients(layer, [rand(SHAPE, seed=7)], shapes,
                    check_params=phase == "TRAIN" and not frozen)


def test_frozen_learns_nothing():
    layer, shapes = _bn("TRAIN", frozen=True)
    _, _, dparams = forward_backward(layer, [rand(SHAPE, seed=8)], shapes, [rand(SHAPE, seed=9)])
    assert all(not d.any() for d in dparams)
    assert all((b.lr_mult, b.decay_mult) == (0, 0) for b in layer.blobs)


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_equals_batch_norm_then_scale(phase):
    """BN = BatchNorm (factor 1: the running sums are the statistics) + Scale with bias."""
    layer, shapes = _bn(phase)
    slope, bias, mean, var = (b.data.copy() for b in layer.blobs)
    bn, _ = make_layer({"type": "BatchNorm", "batch_norm_param": {"eps": 1e-4}}, [SHAPE],
                       phase=phase)
    bn.blobs[0].data[...] = mean.ravel()
    bn.blobs[1].data[...] = var.ravel()
    bn.blobs[2].data[...] = 1
    sc, _ = make_layer({"type": "Scale", "scale_param": {"bias_term": True}}, [SHAPE],
                       phase=phase)
    sc.blobs[0].data[...] = slope.ravel()
    sc.blobs[1].data[...] = bias.ravel()
    x, dy = rand(SHAPE, seed=10), rand(SHAPE, seed=11)
    (y,), (dx,), dparams = forward_backward(layer, [x], shapes, [dy])
    (z,), _, _ = forward_backward(bn, [x], [SHAPE], [np.zeros(SHAPE)])
    (y2,), (dz,), dscale = forward_backward(sc, [z], [SHAPE], [dy])
    (_,), (dx2,), _ = forward_backward(bn, [x], [SHAPE], [dz])
    np.testing.assert_allclose(y, y2, atol=1e-12)
    np.testing.assert_allclose(dx, dx2, atol=1e-12)
    np.testing.assert_allclose(dparams[0].ravel(), dscale[0], atol=1e-12)
    np.testing.assert_allclose(dparams[1].ravel(), dscale[1], atol=1e-12)


# -- SegNet's BN (alexgkendall/caffe-segnet): bn_mode, scale and shift ------------------------------

def _segnet_bn(mode="LEARN", phase="TRAIN", tops=1):
    spec = {"type": "BN", "top": [f"t{i}" for i in range(tops)],
            "bn_param": {"bn_mode": mode, "shift_filler": {"type": "constant", "value": 0.001}}}
    layer, shapes = make_layer(spec, [SHAPE], phase=phase)
    rng = np.random.default_rng(12)
    layer.blobs[0].data[...] = rng.uniform(0.5, 2, (1, 4, 1, 1))
    layer.blobs[1].data[...] = rng.standard_normal((1, 4, 1, 1))
    return layer, shapes


@pytest.mark.parametrize("param", [{"bn_mode": "INFERENCE"}, {"bn_mode": "LEARN"},
                                   {"scale_filler": {"type": "constant", "value": 1}},
                                   {"shift_filler": {"type": "constant", "value": 0.001}}])
def test_segnet_fields_make_segnets_bn_with_two_blobs(param):
    layer, shapes = make_layer({"type": "BN", "bn_param": param}, [SHAPE])
    assert type(layer).__name__ == "SegNetBN" and shapes == [SHAPE]
    assert [b.data.shape for b in layer.blobs] == [(1, 4, 1, 1)] * 2
    # the fork fills with Caffe's default filler (constant 0) where none is given
    want = [param.get("scale_filler", {}).get("value", 0), param.get("shift_filler", {}).get("value", 0)]
    np.testing.assert_allclose([float(b.data.mean()) for b in layer.blobs], want, rtol=1e-7)


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_segnet_learn_uses_batch_statistics_in_both_phases(phase):
    layer, shapes = _segnet_bn("LEARN", phase, tops=3)
    assert shapes == [SHAPE, (1, 4, 1, 1), (1, 4, 1, 1)]
    scale, shift = (b.data.copy() for b in layer.blobs)
    x = rand(SHAPE, seed=13)
    (y, mean, var), _, _ = forward_backward(layer, [x], shapes,
                                            [np.zeros(s) for s in shapes])
    m = x.mean(axis=(0, 2, 3), keepdims=True)
    v = (x ** 2).mean(axis=(0, 2, 3), keepdims=True) - m ** 2    # the fork's E[x²] − E[x]²
    np.testing.assert_allclose(y, scale * (x - m) / np.sqrt(v + 1e-9) + shift, atol=1e-12)
    np.testing.assert_allclose(mean, m, atol=1e-12)
    np.testing.assert_allclose(var, v, atol=1e-12)


def test_segnet_inference_is_scale_and_shift():
    layer, shapes = _segnet_bn("INFERENCE")
    scale, shift = (b.data.copy() for b in layer.blobs)
    x, dy = rand(SHAPE, seed=14), rand(SHAPE, seed=15)
    (y,), (dx,), (dscale, dshift) = forward_backward(layer, [x], shapes, [dy])
    np.testing.assert_allclose(y, scale * x + shift, atol=1e-12)
    np.testing.assert_allclose(dx, scale * dy, atol=1e-12)
    np.testing.assert_allclose(dscale, (dy * x).sum(axis=(0, 2, 3), keepdims=True), atol=1e-12)
    np.testing.assert_allclose(dshift, dy.sum(axis=(0, 2, 3), keepdims=True), atol=1e-12)


@pytest.mark.parametrize("mode", ["LEARN", "INFERENCE"])
def test_segnet_bn_gradients(mode):
    layer, shapes = _segnet_bn(mode)
    check_gradients(layer, [rand(SHAPE, seed=16)], shapes)


def test_segnet_learn_matches_torch_batch_norm():
    """LEARN: PyTorch's batch_norm in training mode (eps 1e-9) with scale as weight and shift as
    bias, forward and all three gradients."""
    torch = pytest.importorskip("torch")
    layer, shapes = _segnet_bn("LEARN")
    scale, shift = (b.data.copy() for b in layer.blobs)
    x, dy = rand(SHAPE, seed=17), rand(SHAPE, seed=18)
    (y,), (dx,), (dscale, dshift) = forward_backward(layer, [x], shapes, [dy])
    tx = torch.tensor(x, requires_grad=True)
    w = torch.tensor(scale.ravel(), requires_grad=True)
    b = torch.tensor(shift.ravel(), requires_grad=True)
    ty = torch.nn.functional.batch_norm(tx, None, None, w, b, training=True, eps=1e-9)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(dx, tx.grad.numpy(), atol=1e-9)
    np.testing.assert_allclose(dscale.ravel(), w.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(dshift.ravel(), b.grad.numpy(), atol=1e-10)


@pytest.mark.parametrize("mode", ["LEARN", "INFERENCE"])
def test_segnet_bn_in_place_is_exact(mode):
    """SegNet's files run BN in place (bottom = top): the same output, bottom and parameter
    gradients as on separate blobs (INFERENCE keeps x for its scale gradient)."""
    from layer_cases import in_place
    x, dy = rand(SHAPE, seed=19), rand(SHAPE, seed=20)
    layer, shapes = _segnet_bn(mode)
    (y,), (dx,), dparams = forward_backward(layer, [x], shapes, [dy])
    for b in layer.blobs:
        b.diff[...] = 0
    y2, dx2 = in_place(layer, x, dy)
    np.testing.assert_allclose(y2, y, atol=1e-12)
    np.testing.assert_allclose(dx2, dx, atol=1e-12)
    for b, d in zip(layer.blobs, dparams):
        np.testing.assert_allclose(b.diff, d, atol=1e-12)


def test_fields_of_both_bns_are_refused():
    with pytest.raises(SpecError, match=r"bn_mode \(SegNet's BN, alexgkendall/caffe-segnet\) "
                                        r"and momentum \(PSPNet's BN"):
        make_layer({"type": "BN", "bn_param": {"bn_mode": "LEARN", "momentum": 0.9}}, [SHAPE])


def test_segnet_bn_wrong_field_type_names_the_field():
    from netspec.spec import parse_net
    with pytest.raises(SpecError, match="bn_mode"):
        parse_net({"name": "n", "layer": [{"name": "bn", "type": "BN", "bottom": "x", "top": "x",
                                           "bn_param": {"bn_mode": "TRAIN"}}]})


def test_bn_and_interp_export_and_read_back(tmp_path):
    """netspec export writes bn_param, interp_param and BN's four (1, C, 1, 1) blobs; the
    prototxt converts back and the .caffemodel loads into it, giving the same output."""
    pytest.importorskip("google.protobuf")
    import yaml

    from netspec.backend import Backend
    from netspec.caffe import prototxt as ptx
    from netspec.caffe.export import export_net
    from netspec.caffe.port import net_yaml
    from netspec.net import Net
    from netspec.snapshot import load_weights
    from netspec.spec import load_net, loads_net

    f32 = Backend(np, np.float32)
    spec = {"name": "bn_interp", "layer": [
        {"name": "data", "type": "Input", "top": "data",
         "input_param": {"shape": {"dim": [2, 3, 4, 5]}}},
        {"name": "bn", "type": "BN", "bottom": "data", "top": "bn",
         "bn_param": {"eps": 1e-4, "momentum": 0.95}},
        {"name": "up", "type": "Interp", "bottom": "bn", "top": "up",
         "interp_param": {"zoom_factor": 2, "pad_beg": -1}}]}
    path = tmp_path / "net.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    net = Net(load_net(path), "TEST", f32, np.random.default_rng(1))
    rng = np.random.default_rng(3)
    for p in net.named_params().values():
        p.data[...] = rng.uniform(0.5, 2, p.data.shape)
    np.savez(tmp_path / "w.npz", **{k: p.data for k, p in net.named_params().items()})
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.forward()
    ours = net.blobs["up"].data.copy()
    export_net(path, tmp_path / "net.prototxt", weights=tmp_path / "w.npz",
               caffemodel=tmp_path / "net.caffemodel")
    text = (tmp_path / "net.prototxt").read_text()
    assert "bn_param" in text and "interp_param" in text
    back = Net(loads_net(net_yaml(ptx.parse_net(text, "net.prototxt"), "net.prototxt")[0],
                         "net.yaml"), "TEST", f32, np.random.default_rng(2))
    load_weights(back, tmp_path / "net.caffemodel", strict=True)
    assert [b.data.shape for b in back.layers[1].blobs] == [(1, 3, 1, 1)] * 4
    back.blobs["data"].data[...] = x
    back.forward()
    np.testing.assert_array_equal(back.blobs["up"].data, ours)
    assert back.blobs["up"].data.shape == (2, 3, 5, 7)   # 4×5 cropped to 3×4, zoomed by 2
