"""Weight decay as small hooks with a declared timing (Chainer's optimizer hooks).

For a parameter blob W with ``decay_mult`` m, global ``weight_decay`` λ, learning rate lr_t
and ``base_lr``:

==========  ======  =====================================================================
type        timing  effect
==========  ======  =====================================================================
L2          pre     g ← g + λ·m·W            (Caffe's coupled L2; ½λ‖W‖² in the loss)
L1          pre     g ← g + λ·m·sign(W)      (Caffe's coupled L1; λ‖W‖₁ in the loss)
decoupled   post    W ← W·(1 − λ·m·lr_t/base_lr)   after the update (Loshchilov & Hutter)
==========  ======  =====================================================================

"pre" hooks run before the update rule sees the gradient, "post" hooks after the update
has been subtracted. Blobs with ``lr_mult == 0`` are frozen and never decayed.
"""

from __future__ import annotations

from typing import ClassVar


class Regularizer:
    timing: ClassVar[str] = "pre"
    name: ClassVar[str] = ""

    def __init__(self, weight_decay: float):
        self.weight_decay = weight_decay

    def __call__(self, xp, param, lr_t: float, base_lr: float) -> None:
        raise TypeError("use a concrete regularizer")

    def per_step(self, param, lr_t: float, base_lr: float) -> float:
        """The effective decay this blob sees per step (for logs and ``netspec validate``):
        the fraction by which W shrinks in one step from decay alone (plain SGD for L2/L1)."""
        return 0.0


class L2(Regularizer):
    timing = "pre"
    name = "L2"

    def __call__(self, xp, param, lr_t, base_lr):
        local = self.weight_decay * param.decay_mult
        if local:
            param.diff += param.data.dtype.type(local) * param.data

    def per_step(self, param, lr_t, base_lr):
        return lr_t * param.lr_mult * self.weight_decay * param.decay_mult


class L1(Regularizer):
    timing = "pre"
    name = "L1"

    def __call__(self, xp, param, lr_t, base_lr):
        local = self.weight_decay * param.decay_mult
        if local:
            param.diff += param.data.dtype.type(local) * xp.sign(param.data)

    def per_step(self, param, lr_t, base_lr):
        return lr_t * param.lr_mult * self.weight_decay * param.decay_mult


class Decoupled(Regularizer):
    timing = "post"
    name = "decoupled"

    def __call__(self, xp, param, lr_t, base_lr):
        shrink = self.per_step(param, lr_t, base_lr)
        if shrink:
            # W -= d*W rather than W *= (1 - d): rounding (1 - d) to float32 would quantise d
            # to multiples of 2^-24 (a shrink of 2e-8 would vanish entirely)
            param.data -= param.data.dtype.type(shrink) * param.data

    def per_step(self, param, lr_t, base_lr):
        if param.lr_mult == 0:
            return 0.0
        return self.weight_decay * param.decay_mult * lr_t / base_lr


REGULARIZERS = {"L2": L2, "L1": L1, "decoupled": Decoupled}


def make_regularizer(kind: str | None, weight_decay: float) -> Regularizer | None:
    if not weight_decay:
        return None
    return REGULARIZERS[kind](weight_decay)
