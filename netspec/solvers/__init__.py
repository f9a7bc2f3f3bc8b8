"""Solvers: update rules, regularization hooks, lr policies and the training loop."""

from .lr_policy import learning_rate
from .regularization import REGULARIZERS, make_regularizer
from .rules import RULES
from .solver import Solver

__all__ = ["learning_rate", "REGULARIZERS", "make_regularizer", "RULES", "Solver"]
