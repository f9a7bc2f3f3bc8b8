"""In-place computation (a layer's top named as its bottom) is allowed only for the layer types
that declare it (``Layer.allows_in_place``), and each declaration is true: in place, every such
type computes the top and the bottom diff of its out-of-place run."""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck import forward_backward, make_layer
from layer_cases import in_place
from netspec.backend import get_backend
from netspec.errors import SpecError
from netspec.layers import registry
from netspec.net import Net
from netspec.spec import load_net, loads_net

SHAPE = (2, 3, 4, 5)
#: parameter blocks some in-place types need to be set up on SHAPE
SETTINGS = {"Scale": {"scale_param": {"bias_term": True, "filler": {"type": "gaussian"},
                                      "bias_filler": {"type": "gaussian"}}},
            "Bias": {"bias_param": {"filler": {"type": "gaussian"}}},
            "Power": {"power_param": {"power": 2.0, "scale": 0.5, "shift": 1.0}},
            "Log": {"log_param": {"shift": 10.0}},
            "Clip": {"clip_param": {"min": -1.0, "max": 1.5}},
            "Dropout": {"dropout_param": {"dropout_ratio": 0.0}}}
IN_PLACE = sorted(t for t, cls in registry.LAYERS.items() if cls.allows_in_place and t != "Python")


def test_the_in_place_types_are_caffes_element_wise_and_normalization_layers():
    assert IN_PLACE == ["BN", "BNLL", "BatchNorm", "Bias", "Clip", "Dropout", "ELU", "Exp", "Log",
                        "MVN", "PReLU", "Power", "ReLU", "ReLU6", "Scale", "Sigmoid", "Softmax",
                        "Swish", "TanH", "Threshold"]


#: a second layer under one type name, chosen by its fields: SegNet's BN (PSPNet's is "BN")
VARIANTS = {"BN (SegNet, LEARN)": {"type": "BN", "bn_param": {
                "bn_mode": "LEARN", "scale_filler": {"type": "gaussian"}}},
            "BN (SegNet, INFERENCE)": {"type": "BN", "bn_param": {
                "bn_mode": "INFERENCE", "scale_filler": {"type": "gaussian"}}}}


@pytest.mark.parametrize("type_name", IN_PLACE + sorted(VARIANTS))
def test_in_place_equals_out_of_place(type_name):
    spec = VARIANTS.get(type_name) or {"type": type_name, **SETTINGS.get(type_name, {})}
    rng = np.random.default_rng(3)
    x = rng.uniform(0.1, 2.0, SHAPE) * rng.choice([-1, 1], SHAPE)
    dy = rng.standard_normal(SHAPE)
    ref, shapes = make_layer(spec, [SHAPE], seed=5)
    (y_ref,), (dx_ref,), _ = forward_backward(ref, [x], shapes, [dy])
    layer, _ = make_layer(dict(spec, bottom=["x"], top=["x"]), [SHAPE], seed=5)
    y, dx = in_place(layer, x, dy)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-14)
    if layer.has_backward:      # Threshold has none: gradients stop there
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-14)


MLP_IN_PLACE = """\
name: mlp
layer:
  - {name: data, type: Input, top: [x], input_param: {shape: [{dim: [4, 6]}]}}
  - name: fc1
    type: InnerProduct
    bottom: x
    top: x
    inner_product_param: {num_output: 6}
"""


def test_an_inner_product_in_place_is_a_spec_error_naming_file_line_and_field(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text(MLP_IN_PLACE)
    with pytest.raises(SpecError) as e:
        Net(load_net(str(path)), "TRAIN", get_backend(dtype="float64"))
    msg = str(e.value)
    assert msg.startswith(f"{path}:5: top: layer 'fc1' (InnerProduct): cannot run in place")
    assert "Give the top its own name" in msg
    fine = loads_net(MLP_IN_PLACE.replace("    top: x\n", "    top: y\n"))   # its own top
    assert Net(fine, "TRAIN", get_backend(dtype="float64")).blobs["y"].shape == (4, 6)


def test_segnets_upsample_cannot_run_in_place():
    """SegNet's two-bottom Upsample changes the blob's size: its top cannot be its bottom."""
    net = loads_net("""\
name: unpool
layer:
  - {name: data, type: Input, top: [x, mask], input_param: {shape: [{dim: [1, 2, 3, 3]}]}}
  - {name: up, type: Upsample, bottom: [x, mask], top: x, upsample_param: {scale: 2}}
""")
    with pytest.raises(SpecError, match="'up' \\(Upsample\\): cannot run in place"):
        Net(net, "TRAIN", get_backend(dtype="float64"))


def test_a_blob_rewritten_in_place_last_is_an_output():
    """Caffe's net outputs: a layer's bottoms leave the available blobs and its tops enter
    them, so a net ending in an in-place ReLU outputs that blob (and in the order Caffe's
    available set leaves it: rewritten blobs last)."""
    text = """name: t
layer:
  - {name: data, type: Input, top: data, input_param: {shape: {dim: [2, 3]}}}
  - {name: fc, type: InnerProduct, bottom: data, top: fc, inner_product_param: {num_output: 4}}
  - {name: relu, type: ReLU, bottom: fc, top: fc}
  - {name: fc2, type: InnerProduct, bottom: data, top: h, inner_product_param: {num_output: 2}}
  - {name: sig, type: Sigmoid, bottom: h, top: h}
  - {name: fc3, type: InnerProduct, bottom: data, top: g, inner_product_param: {num_output: 2}}
"""
    net = Net(loads_net(text, "t"), "TEST", get_backend(dtype="float64"), np.random.default_rng(0))
    assert net.output_names == ["fc", "h", "g"]
    net.forward()
    assert (net.blobs["fc"].data >= 0).all()
