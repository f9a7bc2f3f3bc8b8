"""Pydantic model of a solver file: SolverParameter (Caffe's names and defaults)."""

from __future__ import annotations

import math
import sys
from typing import Literal, Optional

from pydantic import Field, model_validator

from .base import FieldError, Message, Repeated
from .params import NetState

SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam", "AdamW")
LEGACY_SOLVER_TYPE = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad",
                      "RMSPROP": "RMSProp", "ADADELTA": "AdaDelta", "ADAM": "Adam"}
LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid", "multifixed",
               "plateau")

#: the largest log(rate) a float64 holds: a schedule that grows past it overflows to inf
_LOG_MAX = math.log(sys.float_info.max)


def _range(**bounds) -> dict:
    """A field's range for the JSON Schema only (``minimum``, ``exclusiveMaximum`` ...): the
    ranges are checked by ``SolverParameter._check_ranges``, whose messages say why."""
    return {"json_schema_extra": bounds}


def _finite_in(lo: float, hi: float | None = None, lo_open: bool = False):
    """A test: a finite number above ``lo`` (strictly with ``lo_open``) and below ``hi``."""
    def test(v) -> bool:
        return (math.isfinite(v) and (v > lo if lo_open else v >= lo)
                and (hi is None or v < hi))
    return test


#: field -> (test, what the value must be, why): every numeric field's range, from Caffe's
#: solver.proto semantics (and the CHECKs of its solvers), checked when the file is read
RANGES: dict[str, tuple] = {
    "base_lr": (_finite_in(0, lo_open=True), "a finite number > 0", ""),
    "momentum": (_finite_in(0, 1), "in [0, 1)",
                 "it scales the history kept from earlier steps (Adam's beta1, AdaDelta's "
                 "decay rate): below 0 that history flips sign every step, at 1 or more it "
                 "never fades and the steps grow without bound"),
    "momentum2": (_finite_in(0, 1), "in [0, 1)",
                  "Adam's beta2, the decay of its squared-gradient history: below 0 that "
                  "history flips sign, at 1 or more its bias correction sqrt(1 - beta2^t) is 0 "
                  "or undefined"),
    "rms_decay": (_finite_in(0, 1), "in [0, 1)", "RMSProp's decay rate (Caffe refuses other "
                  "values too)"),
    "delta": (_finite_in(0, lo_open=True), "a finite number > 0",
              "it keeps AdaGrad, RMSProp, AdaDelta and Adam from dividing by zero where a "
              "blob's gradient history is still 0"),
    "weight_decay": (_finite_in(0), "a finite number >= 0", ""),
    "clip_gradients": (lambda v: v < 0 and not math.isnan(v) or math.isfinite(v) and v > 0,
                       "> 0, or negative (the default, -1) for no clipping",
                       "0 would scale every gradient to 0, so nothing would learn"),
    "gamma": (lambda v: v is None or math.isfinite(v), "a finite number", ""),
    "power": (lambda v: v is None or math.isfinite(v), "a finite number", ""),
    "max_iter": (lambda v: v >= 0, ">= 0", ""),
    "iter_size": (lambda v: v >= 1, ">= 1", ""),
    "display": (lambda v: v >= 0, ">= 0 (0: no display)", ""),
    "average_loss": (lambda v: v >= 1, ">= 1", ""),
    "test_interval": (lambda v: v >= 0, ">= 0 (0: no periodic testing)", ""),
    "snapshot": (lambda v: v >= 0, ">= 0 (0: no periodic snapshots)", ""),
    "stepsize": (lambda v: v is None or v > 0, "> 0", ""),
    "device_id": (lambda v: v >= 0, ">= 0", ""),
}


class SolverParameter(Message):
    """A solver file. ``net`` is resolved relative to the solver file by the loader.

    ``regularization_type``: ``L2``/``L1`` (Caffe, coupled: added to the gradient before the
    update rule) or ``decoupled`` (W <- W*(1 - weight_decay*decay_mult*lr_t/base_lr) after it).
    It is required whenever ``weight_decay`` != 0, because "weight decay" means different
    things in different frameworks.
    """

    net: Optional[str] = None
    train_net: Optional[str] = None
    test_net: Repeated[str] = Field(default_factory=list)
    train_state: NetState = Field(default_factory=lambda: NetState(phase="TRAIN"))
    test_state: Repeated[NetState] = Field(default_factory=list)
    test_iter: Repeated[int] = Field(default_factory=list)
    test_interval: int = Field(default=0, **_range(minimum=0))
    test_compute_loss: bool = False
    test_initialization: bool = True
    base_lr: float = Field(default=0.01, **_range(exclusiveMinimum=0))
    display: int = Field(default=0, **_range(minimum=0))
    average_loss: int = Field(default=1, **_range(minimum=1))
    max_iter: int = Field(default=0, **_range(minimum=0))
    iter_size: int = Field(default=1, **_range(minimum=1))
    lr_policy: Literal[LR_POLICIES] = "fixed"  # type: ignore[valid-type]
    gamma: Optional[float] = None
    power: Optional[float] = None
    momentum: float = Field(default=0.0, **_range(minimum=0, exclusiveMaximum=1))
    weight_decay: float = Field(default=0.0, **_range(minimum=0))
    regularization_type: Optional[Literal["L2", "L1", "decoupled"]] = None
    stepsize: Optional[int] = Field(default=None, **_range(exclusiveMinimum=0))
    stepvalue: Repeated[int] = Field(default_factory=list)
    #: lr_policy multifixed (MobileNet-YOLO's fork): the rate stagelr[k] up to stageiter[k]
    stagelr: Repeated[float] = Field(default_factory=list)
    stageiter: Repeated[int] = Field(default_factory=list)
    #: lr_policy plateau (Intel Caffe's): base_lr·gamma^k, k + 1 once the smoothed loss has
    #: made no new minimum for plateau_winsize[k] iterations
    plateau_winsize: Repeated[int] = Field(default_factory=list)
    clip_gradients: float = -1.0
    snapshot: int = Field(default=0, **_range(minimum=0))
    snapshot_prefix: Optional[str] = None
    snapshot_diff: bool = False
    snapshot_format: Literal["BINARYPROTO", "HDF5", "NPZ"] = "NPZ"
    solver_mode: Literal["CPU", "GPU"] = "CPU"
    device_id: int = Field(default=0, **_range(minimum=0))
    random_seed: int = -1
    type: Literal[SOLVER_TYPES] = "SGD"  # type: ignore[valid-type]
    solver_type: Optional[Literal[tuple(LEGACY_SOLVER_TYPE)]] = None  # type: ignore[valid-type]
    delta: float = Field(default=1e-8, **_range(exclusiveMinimum=0))
    momentum2: float = Field(default=0.999, **_range(minimum=0, exclusiveMaximum=1))
    rms_decay: float = Field(default=0.99, **_range(minimum=0, exclusiveMaximum=1))
    debug_info: bool = False
    snapshot_after_train: bool = True
    #: SSD's detection test phase (netspec/solvers/detection_test.py): "detection" turns each
    #: test output of DetectionEvaluate rows into a mean average precision
    eval_type: Literal["classification", "detection"] = "classification"
    ap_version: Literal["11point", "MaxIntegral", "Integral"] = "Integral"
    show_per_class_result: bool = False
    weights: Optional[str] = None

    @model_validator(mode="after")
    def _check(self) -> "SolverParameter":
        if self.solver_type is not None:
            if "type" in self.model_fields_set:
                raise FieldError("solver_type", "the old solver_type field (enum) and the new type "
                                 "field (string) cannot both be given (Caffe refuses it too); "
                                 "keep 'type'")
            object.__setattr__(self, "type", LEGACY_SOLVER_TYPE[self.solver_type])
        if self.weight_decay != 0 and self.regularization_type is None:
            raise FieldError(
                "weight_decay", "weight_decay is set but regularization_type is not. 'weight_decay' means "
                "different things in different tools, so say which one you mean: L2 (Caffe/"
                "PyTorch SGD: lambda*W added to the gradient), L1 (lambda*sign(W) added to the "
                "gradient) or decoupled (W <- W*(1 - lambda*lr_t/base_lr) after each step, "
                "as in AdamW). Caffe's own default is L2.")
        self._check_ranges()
        needs = {"step": ("gamma", "stepsize"), "exp": ("gamma",), "inv": ("gamma", "power"),
                 "multistep": ("gamma", "stepvalue"), "poly": ("power",),
                 "sigmoid": ("gamma", "stepsize"), "multifixed": ("stagelr", "stageiter"),
                 "plateau": ("gamma", "plateau_winsize")}
        for field in needs.get(self.lr_policy, ()):
            if getattr(self, field) in (None, []):
                raise FieldError("lr_policy", f"lr_policy '{self.lr_policy}' needs '{field}'")
        self._check_schedule()
        if self.test_net and len(self.test_iter) not in (len(self.test_net),):
            raise FieldError("test_iter", "give one test_iter per test_net")
        return self

    def _check_ranges(self) -> None:
        """Every numeric field within its range (``RANGES``); test_iter entries >= 1."""
        for field, (test, must, why) in RANGES.items():
            value = getattr(self, field)
            if not test(value):
                raise FieldError(field, f"must be {must}, got {value!r}" + (f": {why}" if why else ""))
        for i, n in enumerate(self.test_iter):
            if n < 1:
                raise FieldError("test_iter", f"entry {i} is {n}; each test_iter must be >= 1 "
                                 "(the number of batches a test averages)")

    def _check_stages(self) -> None:
        """multifixed's stages: one rate per stage end, rates > 0 and finite, ends increasing."""
        if len(self.stagelr) != len(self.stageiter):
            raise FieldError("stagelr", f"give one stagelr per stageiter: {len(self.stagelr)} "
                             f"rates for {len(self.stageiter)} stages")
        for i, lr in enumerate(self.stagelr):
            if not (lr > 0 and math.isfinite(lr)):
                raise FieldError("stagelr", f"entry {i} is {lr!r}; each stage's rate must be > 0 "
                                 "and finite")
        ends = self.stageiter
        for i in range(len(ends)):
            if ends[i] < 0 or (i and ends[i] <= ends[i - 1]):
                raise FieldError("stageiter", f"must be increasing iterations >= 0, got "
                                 f"{list(ends)} (stage k lasts up to stageiter[k])")

    def _check_schedule(self) -> None:
        """lr_policy's gamma, power, stepvalue and max_iter keep the rate positive and finite
        at every iteration from 0 to max_iter (each policy is monotonic in the iteration, so
        checking the rate at max_iter is enough)."""
        p, gamma, power, it = self.lr_policy, self.gamma, self.power, self.max_iter
        if p in ("step", "exp", "multistep", "plateau") and gamma <= 0:
            raise FieldError("gamma", f"must be > 0 for lr_policy '{p}', got {gamma!r}: the rate "
                             "is multiplied by gamma at each step, so a negative gamma makes it "
                             "alternate in sign and 0 makes it 0")
        if p == "inv" and gamma < 0:
            raise FieldError("gamma", f"must be >= 0 for lr_policy 'inv', got {gamma!r}: the rate "
                             "is base_lr*(1 + gamma*iter)^(-power), and with a negative gamma "
                             "1 + gamma*iter reaches 0 and goes negative (an infinite, then "
                             "undefined rate)")
        if p == "poly":
            if power < 0:
                raise FieldError("power", f"must be >= 0 for lr_policy 'poly', got {power!r}: the "
                                 "rate is base_lr*(1 - iter/max_iter)^power, infinite at max_iter "
                                 "for a negative power")
            if it <= 0:
                raise FieldError("max_iter", "lr_policy 'poly' decays the rate to 0 at max_iter, "
                                 "so max_iter must be > 0")
        if p == "multistep":
            steps = self.stepvalue
            for i in range(len(steps)):
                if steps[i] < 0 or (i and steps[i] <= steps[i - 1]):
                    raise FieldError("stepvalue", f"must be increasing iterations >= 0, got "
                                     f"{list(steps)} (the rate moves to the next stepvalue when "
                                     "the iteration reaches it, in order)")
        if self.stagelr or self.stageiter:
            self._check_stages()
        for i, n in enumerate(self.plateau_winsize):
            if n < 1:
                raise FieldError("plateau_winsize", f"entry {i} is {n}; each window must be at "
                                 "least 1 iteration")
        log_rate = {"step": lambda: (it // self.stepsize) * math.log(gamma),
                    "exp": lambda: it * math.log(gamma),
                    "multistep": lambda: sum(v <= it for v in self.stepvalue) * math.log(gamma),
                    "inv": lambda: -power * math.log1p(gamma * it)}.get(p)
        if log_rate is not None and math.log(self.base_lr) + log_rate() > _LOG_MAX:
            field = "power" if p == "inv" else "gamma"
            raise FieldError(field, f"with lr_policy '{p}', base_lr {self.base_lr!r}, "
                             f"{field} {getattr(self, field)!r} and max_iter {it}, the rate "
                             f"overflows to inf before iteration {it}")
