"""The forks' batch normalization with its own scale and shift: PSPNet's ``BN`` (hszhao/PSPNet,
after yjxiong/caffe). SegNet's layer of the same name (alexgkendall/caffe-segnet) is refused by
name: its ``bn_param`` numbers its fields against PSPNet's (see the parameter family).
"""

from __future__ import annotations

from ..spec.params import FillerParameter
from .base import Layer, add_param_diff
from .registry import register

#: SegNet's BN reads these; PSPNet's reads slope_filler, bias_filler, momentum, eps, frozen
SEGNET_BN_FIELDS = ("bn_mode", "scale_filler", "shift_filler")


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
    """

    allows_in_place = True
    param_block = "bn_param"
    exact_bottoms = 1
    exact_tops = 1

    def check_arity(self, n_bottoms, n_tops):
        segnet = [f for f in SEGNET_BN_FIELDS if f in self.p.model_fields_set]
        if segnet:
            raise self.spec_error(
                f"this is SegNet's BN (bn_param.{segnet[0]}; alexgkendall/caffe-segnet), which "
                "netspec does not implement: its bn_param numbers scale_filler, shift_filler and "
                "bn_mode where PSPNet's BN has slope_filler, bias_filler and momentum. netspec's "
                "BN is PSPNet's (slope_filler, bias_filler, momentum, eps, frozen)",
                field="bn_param")
        super().check_arity(n_bottoms, n_tops)

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
