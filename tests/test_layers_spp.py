"""SPP (netspec/layers/pool.py): float64 gradient checks, each pyramid level equal to Caffe's
Pooling with the level's kernel, stride and pad, and the spec errors.
"""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import check_gradients, make_layer, rand, run_forward

from netspec.errors import SpecError


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
@pytest.mark.parametrize("height, shape", [(1, (2, 3, 5, 4)), (2, (2, 2, 7, 9)),
                                           (3, (2, 2, 7, 9)), (3, (1, 2, 8, 8)),
                                           (4, (1, 1, 15, 16))])
def test_spp_gradients(pool, height, shape):
    layer, tops = make_layer({"type": "SPP", "spp_param": {"pyramid_height": height,
                                                           "pool": pool}}, [shape])
    check_gradients(layer, [rand(shape, 3)], tops)


def test_spp_shapes_and_levels_are_caffe_pooling():
    """7×9 input, 3 levels: kernels 7×9, 4×5 (pad 1×1), 2×3 (pad 1×2), each level's output is
    Caffe's Pooling with those settings (b×b bins), flattened and concatenated."""
    shape = (2, 3, 7, 9)
    layer, tops = make_layer({"type": "SPP", "spp_param": {"pyramid_height": 3}}, [shape])
    assert tops == [(2, 3 * (1 + 4 + 16))]
    x = rand(shape, 4)
    _, (y,) = run_forward(layer, [x], tops)
    parts = []
    for kh, kw, ph, pw in [(7, 9, 0, 0), (4, 5, 1, 1), (2, 3, 1, 2)]:
        pool, (out,) = make_layer({"type": "Pooling", "pooling_param": dict(
            pool="MAX", kernel_h=kh, kernel_w=kw, stride_h=kh, stride_w=kw, pad_h=ph,
            pad_w=pw)}, [shape])
        _, (t,) = run_forward(pool, [x], [out])
        parts.append(t.data.reshape(2, -1))
    np.testing.assert_array_equal(y.data, np.concatenate(parts, axis=1))
    one, tops1 = make_layer({"type": "SPP", "spp_param": {"pyramid_height": 1}}, [shape])
    assert tops1 == [(2, 3, 1, 1)]                   # height 1: Caffe's pooling top itself


def test_spp_level_pad_not_below_kernel_is_an_error():
    """13 rows in 8 bins: kernel 2, pad (2·8 − 13 + 1) // 2 = 2, which Caffe's Pooling refuses
    (CHECK_LT(pad_h, kernel_h)); so does netspec's."""
    with pytest.raises(SpecError, match="smaller than the kernel"):
        make_layer({"type": "SPP", "spp_param": {"pyramid_height": 4}}, [(1, 1, 13, 16)])


@pytest.mark.parametrize("p, words", [({}, "pyramid_height"),
                                      ({"pyramid_height": 2, "pool": "STOCHASTIC"},
                                       "STOCHASTIC")])
def test_spp_errors(p, words):
    with pytest.raises(SpecError, match=words):
        make_layer({"type": "SPP", "spp_param": p}, [(1, 1, 4, 4)])
