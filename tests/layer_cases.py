"""Helpers and cases that the layer test files share (tests/test_layers_*.py).

gradcheck.py holds the gradient checker and the basic builders (make_layer, run_forward,
forward_backward, rand, labels); this module holds what more than one layer family's tests use:
the float32 backend, the golden cases' folder and readers (tests/golden/layers/, recorded by
BVLC Caffe), the shared layer specs and case shapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conv_pool_cases import GAUSS  # the Convolution cases' filler: Deconvolution, Embed, Bias
from gradcheck import run_forward

from netspec.backend import Backend
from netspec.blob import Blob

F32 = Backend(np, np.float32)
GOLDEN = Path(__file__).parent / "golden" / "layers"
#: single fork layers recorded by a real Caffe fork (eric612/MobileNet-YOLO; README there)
FORK_GOLDEN = Path(__file__).parent / "golden" / "forks" / "layers"
#: the bottom shape of the ReLU/Sigmoid/TanH/Dropout, Split/Concat/Eltwise and Flatten tests
SHAPE = (2, 3, 4, 5)


# -- comparisons and golden cases (float32, recorded by Caffe) ------------------------------------

def close(actual, expected):
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=1e-5,
                               atol=1e-6 * max(1.0, float(np.abs(expected).max(initial=0))))


def golden(case):
    return dict(np.load(GOLDEN / f"{case}.npz"))


def golden_net(case, backend=F32, folder=GOLDEN):
    """The golden case's prototxt as a netspec Net, and its arrays (``folder``: GOLDEN, or
    FORK_GOLDEN for the fork's cases)."""
    from netspec.caffe.prototxt import read
    from netspec.caffe.to_yaml import to_python
    from netspec.net import Net
    from netspec.spec import parse_net

    _, msg, _ = read(folder / f"{case}.prototxt")
    net = Net(parse_net(to_python(msg)), "TRAIN", backend)
    return net, dict(np.load(folder / f"{case}.npz"))


def fork_golden_net(case, backend=F32):
    """A fork golden case (tests/golden/forks/layers/) as a netspec Net, and its arrays."""
    return golden_net(case, backend, FORK_GOLDEN)


def run_golden(net, g):
    """Feed inputs and parameters, forward, compare tops; seed top diffs, backward, compare
    bottom and parameter diffs (as in the recording: parameter diffs zeroed first)."""
    def entries(kind):
        return [(k.split("/", 1)[1], v) for k, v in g.items() if k.split("/", 1)[0] == kind]

    def param(key):
        layer, i = key.rsplit("/", 1)
        return net.layer_by_name(layer).blobs[int(i)]

    for name, v in entries("input"):
        net.blobs[name].data[...] = v
    for key, v in entries("param"):
        param(key).data[...] = v
    net.forward()
    for name, v in entries("top"):
        assert net.blobs[name].shape == v.shape, name
        close(net.blobs[name].data, v)
    net.clear_param_diffs()
    for name, v in entries("topdiff"):
        net.blobs[name].diff = v.copy()
    net.backward()
    # bottoms the net back-propagates into (Caffe records zeros for the others)
    propagated = {b.name for blobs, prop in zip(net.bottoms, net.propagate)
                  for b, p in zip(blobs, prop) if p}
    compared = []
    for name, v in entries("bottomdiff"):
        if name in propagated:
            close(net.blobs[name].diff, v)
            compared.append(name)
    for key, v in entries("paramdiff"):
        close(param(key).diff, v)
        compared.append(key)
    return compared


# -- forward/backward helpers ---------------------------------------------------------------------

def forward_backward_pair(layer, bottoms, top_shapes, top_diffs, xp=np):
    """Out-of-place forward then backward into every bottom; returns (tops, bottom diffs).
    (gradcheck.forward_backward also returns parameter diffs and honours no_grad_bottoms.)"""
    bottom, top = run_forward(layer, bottoms, top_shapes, xp)
    for t, d in zip(top, top_diffs):
        t.diff = xp.array(d, dtype=layer.dtype)
    layer.backward(top, [True] * len(bottom), bottom)
    return [t.data.copy() for t in top], [b.diff.copy() for b in bottom]


def in_place(layer, x, dy, xp=np):
    """Forward and backward with the same Blob as bottom and top; returns (y, dx)."""
    blob = Blob("x", xp.array(x, dtype=layer.dtype), xp)
    layer.forward([blob], [blob])
    blob.diff = xp.array(dy, dtype=layer.dtype)   # top diff and bottom diff: one array
    layer.backward([blob], [True], [blob])
    return blob.data, blob.diff


# -- layer specs ----------------------------------------------------------------------------------

#: neuron specs the neuron tests and the cross-family checks of test_layers_structure.py share
ACTIVATIONS = [
    {"type": "ReLU"},
    {"type": "ReLU", "relu_param": {"negative_slope": 0.1}},
    {"type": "ReLU", "relu_param": {"negative_slope": -0.3}},
    {"type": "Sigmoid"},
    {"type": "TanH"},
]

DROPOUT = {"type": "Dropout", "dropout_param": {"dropout_ratio": 0.3}}


def deconv_spec(**p):
    p.setdefault("weight_filler", GAUSS)
    p.setdefault("bias_filler", GAUSS)
    return {"type": "Deconvolution", "name": "deconv", "convolution_param": p}


def im2col_spec(**p):
    return {"type": "Im2col", "convolution_param": dict(num_output=1, **p)}


def embed_spec(**p):
    p.setdefault("weight_filler", GAUSS)
    p.setdefault("bias_filler", GAUSS)
    return {"type": "Embed", "embed_param": p}


#: the MemoryData spec of the data and Python-layer tests
MEM = {"type": "MemoryData", "top": ["data", "label"],
       "memory_data_param": {"batch_size": 2, "channels": 1, "height": 2, "width": 3}}
