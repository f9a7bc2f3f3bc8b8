"""What every framework's side of the bench shares: the solver and LeNet-run settings and the
helpers that read a layer dict. No framework is imported here, so that each memory child loads
only its own (``memory.py``)."""

from __future__ import annotations

#: both frameworks: lr × lr_mult, momentum, coupled L2 × decay_mult, fixed lr
SOLVER = {"base_lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "regularization_type": "L2",
          "lr_policy": "fixed", "display": 0, "test_interval": 0, "random_seed": 1,
          "max_iter": 10**9}
#: the full LeNet solver run that ``schedule.lenet_run_estimate`` estimates
LENET_RUN = {"iterations": 10_000, "test_interval": 500, "test_iter": 100, "test_batch": 100}


def as_list(v) -> list:
    """A YAML field given as one value or a list of them, as a list."""
    return [] if v is None else (v if isinstance(v, list) else [v])


def param_specs(lay: dict) -> list[tuple[float, float]]:
    """(lr_mult, decay_mult) of each ``param`` entry of a layer dict."""
    ps = as_list(lay.get("param"))
    return [(float(p.get("lr_mult", 1)), float(p.get("decay_mult", 1))) for p in ps]
