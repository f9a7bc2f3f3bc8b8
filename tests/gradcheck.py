"""Float64 finite-difference gradient checker (directional, Chainer-style, kink-aware).

For a layer L, random bottoms x, random top weights w and the scalar
    f(x, θ) = Σ_i <w_i, top_i(x, θ)>,
the analytic gradient from ``backward`` (bottom diffs, parameter diffs) is compared with a
centred difference of f along random unit directions d over all checked inputs:
    (f(v + εd) − f(v − εd)) / 2ε  ≈  <∇f, d>.
A kink (ReLU at 0, max-pool ties) shows as one-sided differences that disagree; such a draw is
rejected and the check retried with a fresh direction.
"""

from __future__ import annotations

import numpy as np

from netspec.backend import Backend
from netspec.blob import Blob

F64 = Backend(np, np.float64)


def make_layer(spec: dict, bottom_shapes, *, phase: str = "TRAIN", backend: Backend = F64, seed: int = 0):
    """Build and set up one layer from a dict in the YAML vocabulary; returns (layer, top_shapes)."""
    from netspec.layers import registry
    from netspec.spec.net import LayerParameter

    spec = dict(spec)
    spec.setdefault("name", spec["type"].lower())
    lp = LayerParameter.model_validate(spec)
    layer = registry.get(lp.type)(lp, phase, backend, np.random.default_rng(seed))
    n_tops = len(lp.top) if lp.top else 1 if layer.exact_tops is None else layer.exact_tops
    layer.check_arity(len(bottom_shapes), n_tops)
    tops = layer.setup([tuple(s) for s in bottom_shapes])
    return layer, tops


def blobs_for(arrays, xp=np, prefix="b"):
    return [Blob(f"{prefix}{i}", xp.asarray(a), xp) for i, a in enumerate(arrays)]


def run_forward(layer, bottom_arrays, top_shapes, xp=np):
    bottom = blobs_for(bottom_arrays, xp)
    top = [Blob(f"t{i}", xp.zeros(s, dtype=layer.dtype), xp) for i, s in enumerate(top_shapes)]
    layer.forward(bottom, top)
    return bottom, top


def _objective(layer, bottoms, top_shapes, weights):
    _, top = run_forward(layer, bottoms, top_shapes)
    return float(sum(np.sum(t.data * w) for t, w in zip(top, weights)))


def check_gradients(layer, bottom_arrays, top_shapes, *, check_bottoms=None, check_params=True,
                    eps=1e-4, rtol=1e-4, atol=1e-6, directions=4, seed=0, top_weights=None):
    """Assert ``layer.backward`` agrees with centred differences along random directions.

    ``check_bottoms``: indices of bottoms to differentiate (default: all but the layer's
    ``no_grad_bottoms``). Parameter gradients are checked when ``check_params``.
    """
    rng = np.random.default_rng(seed)
    bottoms = [np.array(b, dtype=np.float64) for b in bottom_arrays]
    if check_bottoms is None:
        check_bottoms = [i for i in range(len(bottoms)) if i not in layer.no_grad_bottoms]
    weights = top_weights or [rng.standard_normal(s) for s in top_shapes]
    # analytic
    for p in layer.blobs:
        p.diff[...] = 0
    bottom, top = run_forward(layer, bottoms, top_shapes)
    for t, w in zip(top, weights):
        t.diff = np.array(w, dtype=np.float64)
    prop = [i in check_bottoms for i in range(len(bottoms))]
    layer.backward(top, prop, bottom)
    params = list(layer.blobs) if check_params else []
    analytic = [bottom[i].diff.copy() for i in check_bottoms] + [p.diff.copy() for p in params]
    values = [bottoms[i] for i in check_bottoms] + [p.data for p in params]

    def f_at(step, d):
        for v, dv in zip(values, d):
            v += step * dv
        try:
            return _objective(layer, bottoms, top_shapes, weights)
        finally:
            for v, dv in zip(values, d):
                v -= step * dv

    checked = 0
    for _ in range(directions * 5):
        d = [rng.standard_normal(v.shape) for v in values]
        norm = np.sqrt(sum(float(np.sum(x * x)) for x in d)) or 1.0
        d = [x / norm for x in d]
        f0, fp, fm = f_at(0.0, d), f_at(eps, d), f_at(-eps, d)
        right, left = (fp - f0) / eps, (f0 - fm) / eps
        scale = max(abs(right), abs(left), 1.0)
        if abs(right - left) > 1e3 * eps * scale + 1e-7 * scale:
            continue  # a kink lies within eps along d: not differentiable here, redraw
        numeric = (fp - fm) / (2 * eps)
        exact = sum(float(np.sum(a * x)) for a, x in zip(analytic, d))
        assert abs(numeric - exact) <= atol + rtol * max(abs(numeric), abs(exact)), (
            f"{layer.type_name} '{layer.name}': directional derivative {exact!r} (backward) "
            f"!= {numeric!r} (finite difference)")
        checked += 1
        if checked == directions:
            return
    raise AssertionError(f"{layer.type_name}: every direction crossed a kink; cannot check")


# -- helpers the layer test files share -----------------------------------------------------
def rand(shape, seed=0):
    """Standard normal float64 values (seeded)."""
    return np.random.default_rng(seed).standard_normal(shape)


def labels(shape, classes, seed=1):
    """Integer class labels in [0, classes) stored as float64, as Caffe's label blobs hold them."""
    return np.random.default_rng(seed).integers(0, classes, shape).astype(np.float64)


def _propagate(layer, bottom, propagate):
    return propagate or [i not in layer.no_grad_bottoms for i in range(len(bottom))]


def forward_backward_blobs(layer, bottoms, top_shapes, top_diffs, propagate=None):
    """Forward then backward on NumPy blobs; returns the live (bottom blobs, top blobs).
    ``propagate`` defaults to every bottom the layer can back-propagate to."""
    bottom, top = run_forward(layer, bottoms, top_shapes)
    for t, d in zip(top, top_diffs):
        t.diff = np.array(d, dtype=layer.dtype)
    layer.backward(top, _propagate(layer, bottom, propagate), bottom)
    return bottom, top


def forward_backward(layer, xs, top_shapes, dys, propagate=None, xp=np):
    """Forward then backward with bottoms and top diffs in the layer's dtype on ``xp``; returns
    host copies (tops, bottom diffs — None where not propagated —, parameter diffs)."""
    from netspec.backend import to_numpy

    xs = [xp.asarray(x, dtype=layer.dtype) for x in xs]
    bottom, top = run_forward(layer, xs, top_shapes, xp)
    for t, d in zip(top, dys):
        t.diff = xp.asarray(d, dtype=layer.dtype)
    propagate = _propagate(layer, bottom, propagate)
    layer.backward(top, propagate, bottom)

    def host(a):  # snapshots, not live buffers
        return np.array(to_numpy(a))
    return ([host(t.data) for t in top],
            [host(b.diff) if p else None for b, p in zip(bottom, propagate)],
            [host(p.diff) for p in layer.blobs])
