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
