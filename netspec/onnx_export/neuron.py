"""Element-wise layers: ReLU (leaky), PReLU, Sigmoid, TanH, AbsVal, Power, Exp, Log, BNLL,
ELU, Threshold, Clip, ReLU6, Swish, Dropout (TEST: identity, or × (1 − r) for
py-faster-rcnn's ``scale_train: false``)."""

from __future__ import annotations

import numpy as np

from .builder import Site, translates


def _affine(g, x: str, scale: float, shift: float, base: str) -> str:
    """shift + scale·x (no node for scale 1 or shift 0)."""
    if scale != 1.0:
        x = g.node("Mul", [x, g.const(scale, f"{base}/scale")], base=f"{base}/scaled")
    if shift != 0.0:
        x = g.node("Add", [x, g.const(shift, f"{base}/shift")], base=f"{base}/shifted")
    return x


def _scaled(g, x: str, factor: float, y: str, base: str) -> None:
    """y = factor·x (an Identity for factor 1)."""
    if factor == 1.0:
        g.identity(x, y)
    else:
        g.node("Mul", [x, g.const(factor, f"{base}/factor")], y)


@translates("ReLU")
def relu(g, s: Site) -> None:
    slope = s.layer.slope
    if slope == 0.0:
        g.node("Relu", s.bottoms, s.tops)
    else:
        g.node("LeakyRelu", s.bottoms, s.tops, alpha=slope)


@translates("PReLU")
def prelu(g, s: Site) -> None:
    a = s.blob(0)
    rank = len(s.bottom_shapes[0])
    a = a.reshape(1) if s.layer.channel_shared else a.reshape((-1,) + (1,) * (rank - 2))
    g.node("PRelu", [s.bottoms[0], g.const(a, f"{s.name}/slope")], s.tops)


#: Caffe neuron types that are one ONNX operator without attributes
ONE_OPERATOR = {"Sigmoid": "Sigmoid", "TanH": "Tanh", "AbsVal": "Abs", "BNLL": "Softplus"}


def _one_operator(op: str):
    def translate(g, s: Site) -> None:
        g.node(op, s.bottoms, s.tops)
    return translate


for _caffe, _onnx in ONE_OPERATOR.items():
    translates(_caffe)(_one_operator(_onnx))


@translates("ELU")
def elu(g, s: Site) -> None:
    g.node("Elu", s.bottoms, s.tops, alpha=s.layer.alpha)


@translates("Power")
def power(g, s: Site) -> None:
    """y = (shift + scale·x)^power; a constant when power·scale = 0 (Caffe's special case)."""
    L, x = s.layer, s.bottoms[0]
    if L.diff_scale == 0.0:
        with np.errstate(all="ignore"):
            value = 1.0 if L.power == 0.0 else float(np.power(np.float32(L.shift),
                                                               np.float32(L.power)))
        g.node("Expand", [g.const(value, f"{s.name}/value"),
                          g.shape_const(s.top_shapes[0], f"{s.name}/shape")], s.tops)
        return
    base = _affine(g, x, L.scale, L.shift, s.name)
    if L.power == 1.0:
        g.identity(base, s.tops[0])
    else:
        g.node("Pow", [base, g.const(L.power, f"{s.name}/power")], s.tops)


@translates("Exp")
def exp(g, s: Site) -> None:
    """y = outer·exp(inner·x), inner = ln(base)·scale, outer = base^shift (as netspec)."""
    L = s.layer
    e = g.node("Exp", [_affine(g, s.bottoms[0], L.inner, 0.0, s.name)], base=f"{s.name}/exp")
    _scaled(g, e, L.outer, s.tops[0], s.name)


@translates("Log")
def log(g, s: Site) -> None:
    """y = ln(scale·x + shift) / ln(base)."""
    L = s.layer
    ln = g.node("Log", [_affine(g, s.bottoms[0], L.scale, L.shift, s.name)], base=f"{s.name}/ln")
    _scaled(g, ln, L.base_scale, s.tops[0], s.name)


@translates("Threshold")
def threshold(g, s: Site) -> None:
    above = g.node("Greater", [s.bottoms[0], g.const(s.layer.threshold, f"{s.name}/threshold")],
                   base=f"{s.name}/above")
    g.node("Cast", [above], s.tops, to=1)      # 1: FLOAT


@translates("Clip", "ReLU6")
def clip(g, s: Site) -> None:
    lo, hi = (s.layer.lo, s.layer.hi) if s.layer.type_name == "Clip" else (0.0, 6.0)
    g.node("Clip", [s.bottoms[0], g.const(lo, f"{s.name}/min"), g.const(hi, f"{s.name}/max")],
           s.tops)


@translates("Swish")
def swish(g, s: Site) -> None:
    """y = x·sigmoid(β·x)."""
    x = s.bottoms[0]
    sig = g.node("Sigmoid", [_affine(g, x, s.layer.beta, 0.0, s.name)], base=f"{s.name}/sigmoid")
    g.node("Mul", [x, sig], s.tops)


@translates("Dropout")
def dropout(g, s: Site) -> None:
    _scaled(g, s.bottoms[0], s.layer.test_scale, s.tops[0], s.name)
