"""Forward FLOPs of a layer and of a net, for one batch.

* Convolution: 2 x multiply-adds = 2 * top.count * (C/group * kh * kw) per top (bias adds not
  counted); InnerProduct: 2 * M * K * N;
* Pooling: top.count * kh * kw (one comparison or add per window element);
* elementwise layers (ReLU, Sigmoid, TanH, Dropout, Scale, Eltwise ...): about one operation
  per element (BatchNorm two; Softmax and the losses three);
* Data, Input, Split, Flatten, Concat: 0 (they copy or alias).

A training step (forward + backward) costs about three times the forward FLOPs.
"""

from __future__ import annotations

import math

ELEMENTWISE_OPS = {"ReLU": 1, "Sigmoid": 1, "TanH": 1, "Dropout": 1, "BatchNorm": 2, "Scale": 1,
                   "Softmax": 3, "SoftmaxWithLoss": 3, "EuclideanLoss": 3, "Accuracy": 1}
NO_FLOPS = {"Data", "Input", "Split", "Flatten", "Concat"}


def layer_flops(layer, bottom_shapes: list[tuple], top_shapes: list[tuple]) -> int:
    """Forward FLOPs of one layer for one batch (see the module docstring for the rules)."""
    t = layer.type_name
    if t in NO_FLOPS:
        return 0
    if t in ("Convolution", "DepthwiseConvolution", "ConvolutionDepthwise"):
        per_output = math.prod(layer.blobs[0].shape[1:])   # C/group * kh * kw
        return sum(2 * math.prod(s) * per_output for s in top_shapes)
    if t == "InnerProduct":
        return 2 * layer.M * layer.K * layer.N
    if t == "Pooling":
        return math.prod(top_shapes[0]) * layer.kh * layer.kw
    if t == "Eltwise":
        n = len(bottom_shapes)
        return max(n - 1, 1) * math.prod(top_shapes[0])
    if t == "Scale":
        return math.prod(top_shapes[0]) * (2 if getattr(layer, "bias_index", None) is not None else 1)
    ops = ELEMENTWISE_OPS.get(t, 1)
    return ops * math.prod(bottom_shapes[0]) if bottom_shapes else ops * math.prod(top_shapes[0])


MATMUL_TYPES = ("Convolution", "InnerProduct")


def net_flops(net, types: tuple[str, ...] | None = None) -> int:
    """Forward FLOPs of a built Net for one batch: every layer, or only the layers of ``types``
    (``MATMUL_TYPES``: the Convolution and InnerProduct products, 2 x their multiply-adds)."""
    return sum(layer_flops(layer, [b.shape for b in bottoms], [t.shape for t in tops])
               for layer, bottoms, tops in zip(net.layers, net.bottoms, net.tops)
               if types is None or layer.type_name in types)
