"""The forks' batch normalization with its own scale and shift, two layers under the type name
``BN``: PSPNet's (hszhao/PSPNet, after yjxiong/caffe; four blobs, running statistics) and
SegNet's (alexgkendall/caffe-segnet; two blobs, ``bn_mode``). A layer is SegNet's when its
``bn_param`` sets one of SegNet's fields (``bn_mode``, ``scale_filler``, ``shift_filler``),
PSPNet's otherwise; setting fields of both is an error.
"""

from __future__ import annotations

from ..spec.params import FillerParameter
from .base import Layer, add_param_diff
from .registry import register

#: SegNet's BN reads these; PSPNet's reads slope_filler, bias_filler, momentum, eps, frozen
SEGNET_BN_FIELDS = ("bn_mode", "scale_filler", "shift_filler")
PSPNET_BN_FIELDS = ("slope_filler", "bias_filler", "momentum", "eps", "frozen", "engine")


def _is_segnet(lp) -> bool:
    p = lp.bn_param
    return p is not None and any(f in p.model_fields_set for f in SEGNET_BN_FIELDS)


@register("BN")
class BN(Layer):
    """PSPNet's ``BNLayer``: y = slope · (x − mean) / sqrt(var + eps) + bias per channel of a
    4-D (N, C, H, W) bottom.

    Blobs, each (1, C, 1, 1): 0 = slope (``slope_filler``, default constant 1), 1 = bias
    (``bias_filler``, default constant 0), 2 = running mean, 3 = running variance (statistics,
    not learned: lr_mult = decay_mult = 0).

    * TEST, or ``frozen``: mean and var are the running statistics; the layer is the affine map
      x·slope/sqrt(var + eps) + (bias − slope·mean/sqrt(var + eps)); ``frozen`` learns nothing
      (no parameter gradient), as the fork freezes all four blobs.
    * TRAIN: the batch mean and biased variance over N·H·W normalise x, and the running
      statistics move: r ← momentum·r + (1 − momentum)·batch value (mean and variance).
      Backward is BatchNorm's followed by Scale's: ∂slope = Σ ∂y·x̂, ∂bias = Σ ∂y,
      ∂x = slope·(∂y − mean(∂y) − mean(∂y·x̂)·x̂) / sqrt(var + eps).

    A ``bn_param`` with SegNet's fields makes the layer SegNet's (``SegNetBN``).
    """

    writes_bottom_diffs = True

    allows_in_place = True
    param_block = "bn_param"
    exact_bottoms = 1
    exact_tops = 1

    def __new__(cls, lp, *args, **kwargs):
        if cls is BN and _is_segnet(lp):
            cls = SegNetBN
        return super().__new__(cls)

    def weights_hint(self, arrays):
        n = sum(f"{self.name}/{i}" in arrays for i in range(4))
        if n == 2:
            return ("BN with 4 blobs here, as PSPNet's BN; the file has 2, as SegNet's BN "
                    "(alexgkendall/caffe-segnet). netspec builds SegNet's BN when bn_param sets "
                    "bn_mode, scale_filler or shift_filler (e.g. bn_mode: LEARN)")
        return None

    def setup(self, bottom_shapes):
        N, C, H, W = self.nchw(bottom_shapes[0])
        p = self.p
        self.frozen = p.frozen
        self.use_running = self.phase == "TEST" or p.frozen
        self.momentum = p.momentum
        self.eps = p.eps
        one = FillerParameter(type="constant", value=1)
        zero = FillerParameter(type="constant", value=0)
        shape = (1, C, 1, 1)
        self.add_param(shape, p.slope_filler or one, "slope")
        self.add_param(shape, p.bias_filler or zero, "bias")
        for suffix, filler in (("mean", zero), ("variance", one)):
            stat = self.add_param(shape, filler, suffix)
            stat.lr_mult = 0
            stat.decay_mult = 0
        if self.frozen:
            for param in self.blobs[:2]:
                param.lr_mult = 0
                param.decay_mult = 0
        return [(N, C, H, W)]

    def forward(self, bottom, top):
        xp = self.xp
        x = bottom[0].data
        slope, bias, run_mean, run_var = (b.data for b in self.blobs)
        if self.use_running:
            mean, var = run_mean, run_var
        else:
            mean = x.mean(axis=(0, 2, 3), keepdims=True)
            var = ((x - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
            m = self.momentum
            run_mean *= m
            run_mean += (1 - m) * mean
            run_var *= m
            run_var += (1 - m) * var
        self.std = xp.sqrt(var + self.eps)
        self.x_norm = (x - mean) / self.std
        top[0].data[...] = slope * self.x_norm + bias

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        slope = self.blobs[0].data
        if not self.frozen:
            add_param_diff(self.blobs[0], (dy * self.x_norm).sum(axis=(0, 2, 3), keepdims=True))
            add_param_diff(self.blobs[1], dy.sum(axis=(0, 2, 3), keepdims=True))
        if not propagate_down[0]:
            return
        if self.use_running:
            dx = dy * (slope / self.std)
        else:
            y = self.x_norm
            dx = (dy - dy.mean(axis=(0, 2, 3), keepdims=True)
                  - (dy * y).mean(axis=(0, 2, 3), keepdims=True) * y) * (slope / self.std)
        bottom[0].diff[...] = dx


class SegNetBN(BN):
    """SegNet's ``BNLayer`` (alexgkendall/caffe-segnet) on a 4-D (N, C, H, W) bottom.

    Blobs, each (1, C, 1, 1): 0 = scale (``scale_filler``), 1 = shift (``shift_filler``); both
    fillers default to Caffe's default filler, constant 0, as in the fork. No running statistics
    (SegNet's ``compute_bn_statistics.py`` folds them into scale and shift afterwards).

    * ``bn_mode: LEARN`` (default), in both phases: the batch mean and biased variance over
      N·H·W, x̂ = (x − mean) / sqrt(var + 1e-9) (the fork's fixed epsilon), y = scale·x̂ + shift.
      ∂scale = Σ ∂y·x̂, ∂shift = Σ ∂y, ∂x = scale·(∂y − mean(∂y) − mean(∂y·x̂)·x̂) / sqrt(var + ε).
      Optional tops 1 and 2 (each (1, C, 1, 1)): the batch mean and variance.
    * ``bn_mode: INFERENCE``: y = scale·x + shift; ∂scale = Σ ∂y·x, ∂shift = Σ ∂y,
      ∂x = scale·∂y. (The fork's CPU backward reads x from the bottom, which holds y when the
      layer runs in place; netspec keeps x.) Tops 1 and 2 stay zero.

    The fork computes the variance as E[x²] − E[x]²; netspec as E[(x − mean)²] (the same value,
    without the float32 cancellation).
    """

    exact_tops = None
    min_tops = 1
    max_tops = 3
    eps = 1e-9

    def check_arity(self, n_bottoms, n_tops):
        both = [f for f in PSPNET_BN_FIELDS if f in self.p.model_fields_set]
        if both:
            segnet = next(f for f in SEGNET_BN_FIELDS if f in self.p.model_fields_set)
            raise self.spec_error(
                f"bn_param sets {segnet} (SegNet's BN, alexgkendall/caffe-segnet) and {both[0]} "
                "(PSPNet's BN, hszhao/PSPNet): the two layers share the type name, not their "
                "fields. SegNet's reads bn_mode, scale_filler, shift_filler; PSPNet's "
                "slope_filler, bias_filler, momentum, eps, frozen", field=f"bn_param.{both[0]}")
        Layer.check_arity(self, n_bottoms, n_tops)

    def weights_hint(self, arrays):
        if f"{self.name}/2" in arrays:
            return ("SegNet's BN here (bn_param sets bn_mode, scale_filler or shift_filler), "
                    "with 2 blobs; the file has 4, as PSPNet's BN (hszhao/PSPNet): give such a "
                    "layer PSPNet's fields only")
        return None

    def setup(self, bottom_shapes):
        N, C, H, W = self.nchw(bottom_shapes[0])
        p = self.p
        self.learn = p.bn_mode != "INFERENCE"
        shape = (1, C, 1, 1)
        self.add_param(shape, p.scale_filler or FillerParameter(), "scale")
        self.add_param(shape, p.shift_filler or FillerParameter(), "shift")
        return [(N, C, H, W)] + [shape] * (max(len(self.lp.top), 1) - 1)

    def forward(self, bottom, top):
        xp = self.xp
        x = bottom[0].data
        scale, shift = self.blobs[0].data, self.blobs[1].data
        if not self.learn:
            self.x = x.copy() if top[0] is bottom[0] else x   # in place, y overwrites x
            top[0].data[...] = scale * x + shift
            return
        mean = x.mean(axis=(0, 2, 3), keepdims=True)
        var = ((x - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
        if len(top) > 1:
            top[1].data[...] = mean
        if len(top) > 2:
            top[2].data[...] = var
        self.std = xp.sqrt(var + self.eps)
        self.x_norm = (x - mean) / self.std
        top[0].data[...] = scale * self.x_norm + shift

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        scale = self.blobs[0].data
        x_hat = self.x_norm if self.learn else self.x
        add_param_diff(self.blobs[0], (dy * x_hat).sum(axis=(0, 2, 3), keepdims=True))
        add_param_diff(self.blobs[1], dy.sum(axis=(0, 2, 3), keepdims=True))
        if not propagate_down[0]:
            return
        if self.learn:
            dx = (dy - dy.mean(axis=(0, 2, 3), keepdims=True)
                  - (dy * x_hat).mean(axis=(0, 2, 3), keepdims=True) * x_hat) * (scale / self.std)
        else:
            dx = dy * scale
        bottom[0].diff[...] = dx
