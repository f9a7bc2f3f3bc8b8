"""Pydantic model of a solver file: SolverParameter (Caffe's names and defaults)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from .base import FieldError, Message, Repeated
from .params import NetState

SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam", "AdamW")
LEGACY_SOLVER_TYPE = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad",
                      "RMSPROP": "RMSProp", "ADADELTA": "AdaDelta", "ADAM": "Adam"}
LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


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
    test_interval: int = Field(default=0, ge=0)
    test_compute_loss: bool = False
    test_initialization: bool = True
    base_lr: float = Field(default=0.01, gt=0)
    display: int = Field(default=0, ge=0)
    average_loss: int = Field(default=1, ge=1)
    max_iter: int = Field(default=0, ge=0)
    iter_size: int = Field(default=1, ge=1)
    lr_policy: Literal[LR_POLICIES] = "fixed"  # type: ignore[valid-type]
    gamma: Optional[float] = None
    power: Optional[float] = None
    momentum: float = Field(default=0.0, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    regularization_type: Optional[Literal["L2", "L1", "decoupled"]] = None
    stepsize: Optional[int] = Field(default=None, gt=0)
    stepvalue: Repeated[int] = Field(default_factory=list)
    clip_gradients: float = -1.0
    snapshot: int = Field(default=0, ge=0)
    snapshot_prefix: Optional[str] = None
    snapshot_diff: bool = False
    snapshot_format: Literal["BINARYPROTO", "HDF5", "NPZ"] = "NPZ"
    solver_mode: Literal["CPU", "GPU"] = "CPU"
    device_id: int = 0
    random_seed: int = -1
    type: Literal[SOLVER_TYPES] = "SGD"  # type: ignore[valid-type]
    solver_type: Optional[Literal[tuple(LEGACY_SOLVER_TYPE)]] = None  # type: ignore[valid-type]
    delta: float = 1e-8
    momentum2: float = 0.999
    rms_decay: float = 0.99
    debug_info: bool = False
    snapshot_after_train: bool = True
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
        needs = {"step": ("gamma", "stepsize"), "exp": ("gamma",), "inv": ("gamma", "power"),
                 "multistep": ("gamma", "stepvalue"), "poly": ("power",),
                 "sigmoid": ("gamma", "stepsize")}
        for field in needs.get(self.lr_policy, ()):
            if getattr(self, field) in (None, []):
                raise FieldError("lr_policy", f"lr_policy '{self.lr_policy}' needs '{field}'")
        if self.test_net and len(self.test_iter) not in (len(self.test_net),):
            raise FieldError("test_iter", "give one test_iter per test_net")
        return self
