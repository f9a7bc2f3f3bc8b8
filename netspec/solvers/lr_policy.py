"""Learning-rate policies (Caffe's ``SGDSolver::GetLearningRate``).

=========  ====================================================================
policy     lr(it)  with base_lr, gamma, power, stepsize, stepvalue, max_iter
=========  ====================================================================
fixed      base_lr
step       base_lr · gamma ^ floor(it / stepsize)
exp        base_lr · gamma ^ it
inv        base_lr · (1 + gamma · it) ^ (−power)
multistep  base_lr · gamma ^ k,  k = number of stepvalue entries ≤ it
poly       base_lr · (1 − it / max_iter) ^ power
sigmoid    base_lr · 1 / (1 + exp(−gamma · (it − stepsize)))
multifixed stagelr[k], k the first stage with it ≤ stageiter[k], else the last
           (MobileNet-YOLO's fork; base_lr does not enter)
plateau    base_lr · gamma ^ k, k from the smoothed loss (``Plateau``; Intel Caffe)
=========  ====================================================================
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

#: Intel Caffe's starting minimum loss (``std::numeric_limits<float>::max()``)
FLT_MAX = float(3.4028234663852886e38)


@dataclass
class Plateau:
    """lr_policy plateau's state. Each iteration, after the smoothed loss L (``average_loss``
    window) and before the update: L < ``minimum_loss`` makes it the minimum and the iteration
    an event; while k < len(plateau_winsize), an iteration ≥ ``iter_last_event`` +
    plateau_winsize[k] moves k on and is an event. The rate is base_lr·gamma^k. Snapshots
    keep the three numbers."""

    minimum_loss: float = FLT_MAX
    iter_last_event: int = 0
    current_step: int = 0

    def update(self, it: int, smoothed_loss: float, winsize) -> bool:
        """Advance to iteration ``it``; True when k moved on."""
        if smoothed_loss < self.minimum_loss:
            self.minimum_loss = smoothed_loss
            self.iter_last_event = it
        if self.current_step < len(winsize) and \
                it >= self.iter_last_event + winsize[self.current_step]:
            self.current_step += 1
            self.iter_last_event = it
            return True
        return False


def learning_rate(s, it: int, plateau: Plateau | None = None) -> float:
    """The rate at iteration ``it`` for SolverParameter ``s`` (lr_policy plateau: from its
    state ``plateau``, whatever ``it``).

    Python's float power and exp raise OverflowError where Caffe's double arithmetic gives inf;
    here too the rate becomes inf (a growing schedule) or 0 (sigmoid's far tail). The solver
    file's checks keep a schedule finite up to max_iter, so this matters only past it.
    """
    try:
        if s.lr_policy == "plateau":
            return s.base_lr * s.gamma ** (plateau.current_step if plateau else 0)
        return _rate(s, it)
    except OverflowError:
        return 0.0 if s.lr_policy == "sigmoid" else math.inf
    except ZeroDivisionError:       # inv/poly at a base of exactly 0 with a negative exponent
        return math.inf


def _rate(s, it: int) -> float:
    p = s.lr_policy
    if p == "fixed":
        return s.base_lr
    if p == "step":
        return s.base_lr * s.gamma ** (it // s.stepsize)
    if p == "exp":
        return s.base_lr * s.gamma ** it
    if p == "inv":
        return s.base_lr * (1.0 + s.gamma * it) ** (-s.power)
    if p == "multistep":
        return s.base_lr * s.gamma ** bisect.bisect_right(sorted(s.stepvalue), it)
    if p == "poly":
        return s.base_lr * (1.0 - it / s.max_iter) ** s.power
    if p == "sigmoid":
        return s.base_lr / (1.0 + math.exp(-s.gamma * (it - s.stepsize)))
    if p == "multifixed":
        k = bisect.bisect_left(s.stageiter, it)
        return s.stagelr[min(k, len(s.stagelr) - 1)]
    raise ValueError(f"unknown lr_policy {p!r}")
