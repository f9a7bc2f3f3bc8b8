"""Update rules (Caffe's solvers). Each turns the regularised gradient g (``param.diff``)
into the step Δ that is subtracted: W ← W − Δ. ``rate`` = lr_t · lr_mult; t = iteration + 1.

==========  ===========================================================================
type        state and step (Caffe's exact order of operations)
==========  ===========================================================================
SGD         v ← μ·v + rate·g;                 Δ = v
Nesterov    v' ← μ·v + rate·g;                Δ = (1+μ)·v' − μ·v
AdaGrad     h ← h + g²;                       Δ = rate·g / (√h + δ)
RMSProp     h ← ρ·h + (1−ρ)·g²  (ρ=rms_decay) Δ = rate·g / (√h + δ)
AdaDelta    h ← μ·h + (1−μ)·g²;  u = g·√((s+δ)/(h+δ));  s ← μ·s + (1−μ)·u²;  Δ = rate·u
Adam        m ← β₁·m + (1−β₁)·g;  v ← β₂·v + (1−β₂)·g²  (β₁=momentum, β₂=momentum2)
            Δ = rate · √(1−β₂ᵗ)/(1−β₁ᵗ) · m / (√v + δ)
AdamW       Adam, with decay always decoupled
==========  ===========================================================================
"""

from __future__ import annotations

from typing import ClassVar


class UpdateRule:
    #: names of the per-parameter state arrays (saved in snapshots)
    state_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, sp, xp):
        self.sp = sp
        self.xp = xp

    def init_state(self, param) -> dict:
        return {k: self.xp.zeros_like(param.data) for k in self.state_names}

    def step(self, param, state: dict, rate: float, t: int):
        """Replace ``param.diff`` (g) by the step Δ and return None, or return a state array
        that already holds Δ (``param.diff`` is then scratch until the next clear)."""
        raise TypeError("use a concrete update rule")


class SGD(UpdateRule):
    state_names = ("history",)

    def step(self, param, state, rate, t):
        v, g = state["history"], param.diff
        dt = v.dtype.type
        v *= dt(self.sp.momentum)
        g *= dt(rate)              # in place: g is scratch from here on
        v += g
        return v                   # Δ = v: no copy into g (one pass less per update)


class Nesterov(UpdateRule):
    state_names = ("history",)

    def step(self, param, state, rate, t):
        v, g = state["history"], param.diff
        dt = v.dtype.type
        mu = self.sp.momentum
        previous = v.copy()
        v *= dt(mu)
        v += dt(rate) * g
        g[...] = dt(1 + mu) * v - dt(mu) * previous


class AdaGrad(UpdateRule):
    state_names = ("history",)

    def step(self, param, state, rate, t):
        h, g = state["history"], param.diff
        dt = h.dtype.type
        h += g * g
        g[...] = dt(rate) * (g / (self.xp.sqrt(h) + dt(self.sp.delta)))


class RMSProp(UpdateRule):
    state_names = ("history",)

    def step(self, param, state, rate, t):
        h, g = state["history"], param.diff
        dt = h.dtype.type
        rho = self.sp.rms_decay
        h *= dt(rho)
        h += dt(1 - rho) * (g * g)
        g[...] = dt(rate) * (g / (self.xp.sqrt(h) + dt(self.sp.delta)))


class AdaDelta(UpdateRule):
    state_names = ("history", "update_history")

    def step(self, param, state, rate, t):
        h, s, g = state["history"], state["update_history"], param.diff
        dt = h.dtype.type
        mu, delta = self.sp.momentum, dt(self.sp.delta)
        h *= dt(mu)
        h += dt(1 - mu) * (g * g)
        g *= self.xp.sqrt((s + delta) / (h + delta))
        s *= dt(mu)
        s += dt(1 - mu) * (g * g)
        g *= dt(rate)


class Adam(UpdateRule):
    state_names = ("m", "v")

    def step(self, param, state, rate, t):
        m, v, g = state["m"], state["v"], param.diff
        dt = m.dtype.type
        b1, b2 = self.sp.momentum, self.sp.momentum2
        m *= dt(b1)
        m += dt(1 - b1) * g
        v *= dt(b2)
        v += dt(1 - b2) * (g * g)
        correction = (1 - b2 ** t) ** 0.5 / (1 - b1 ** t)
        g[...] = dt(rate * correction) * (m / (self.xp.sqrt(v) + dt(self.sp.delta)))


class AdamW(Adam):
    """Adam whose weight decay is always decoupled (the solver enforces it)."""


RULES: dict[str, type[UpdateRule]] = {
    "SGD": SGD, "Nesterov": Nesterov, "AdaGrad": AdaGrad, "RMSProp": RMSProp,
    "AdaDelta": AdaDelta, "Adam": Adam, "AdamW": AdamW,
}
