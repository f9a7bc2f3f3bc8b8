"""Per-layer timing, Caffe's ``caffe time``: forward, backward and total ms per iteration."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from rich.console import Console
from rich.table import Table

from ..backend import get_backend
from ..net import Net
from ..parallel import blas_threads
from ..spec import load_net
from ..spec.overrides import split_sets


def _sync(backend) -> None:
    if backend.is_gpu:
        backend.xp.cuda.Device().synchronize()


@dataclass
class Timing:
    iterations: int
    forward_ms: dict[str, float] = field(default_factory=dict)   # layer -> mean ms
    backward_ms: dict[str, float] = field(default_factory=dict)
    total_forward_ms: float = 0.0
    total_backward_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.total_forward_ms + self.total_backward_ms


def time_net(net, iterations: int = 50, warmup: int = 5) -> Timing:
    """Time ``iterations`` forward+backward passes of ``net`` layer by layer (after ``warmup``),
    with the net's threads as in training (``Net.pass_blas_threads``)."""
    with blas_threads(net.backend, net.pass_blas_threads()):
        return _time_layers(net, iterations, warmup)


def time_net_file(net_file: str | Path, iterations: int = 50, phase: str = "TRAIN", gpu: bool = False,
                  dtype: str = "float32", sets: Sequence[str] = ()) -> tuple[Net, Timing]:
    """Build the net of ``net_file`` in ``phase`` (layer overrides ``sets``, fillers seeded with
    0) and time it; returns (net, timing)."""
    _, net_sets = split_sets(list(sets))
    net = Net(load_net(net_file, net_sets), phase, get_backend(gpu, dtype), np.random.default_rng(0))
    return net, time_net(net, iterations)


def print_timing(net, t: Timing, title: str, console: Console | None = None) -> None:
    """The per-layer table, then the averages of a pass, Caffe's way."""
    console = console or Console()
    table = Table(title=title)
    for col in ("layer", "type", "forward ms", "backward ms"):
        table.add_column(col, justify="right" if "ms" in col else "left")
    for layer in net.layers:
        into = getattr(layer, "folded_into", None)   # computed by that convolution (conv_fold)
        kind = f"{layer.type_name} (in {into})" if into else layer.type_name
        table.add_row(layer.name, kind, f"{t.forward_ms[layer.name]:.3f}",
                      f"{t.backward_ms[layer.name]:.3f}")
    console.print(table)
    console.print(f"Average Forward pass: {t.total_forward_ms:.3f} ms.")
    console.print(f"Average Backward pass: {t.total_backward_ms:.3f} ms.")
    console.print(f"Average Forward-Backward: {t.total_ms:.3f} ms.")


def _time_layers(net, iterations: int, warmup: int) -> Timing:
    be = net.backend
    names = [layer.name for layer in net.layers]
    fwd = dict.fromkeys(names, 0.0)
    bwd = dict.fromkeys(names, 0.0)
    total_f = total_b = 0.0
    for it in range(warmup + iterations):
        record = it >= warmup
        _sync(be)
        t_pass = time.perf_counter()
        for name, layer, bottom, top in zip(names, net.layers, net.bottoms, net.tops):
            t = time.perf_counter()
            layer.forward(bottom, top)
            _sync(be)
            if record:
                fwd[name] += time.perf_counter() - t
        t_mid = time.perf_counter()
        for blob, w in net.loss_terms:
            blob.diff[...] = w
        for i in range(len(net.layers) - 1, -1, -1):
            if not net.layer_backward[i]:
                continue
            t = time.perf_counter()
            net.layers[i].backward(net.tops[i], net.propagate[i], net.bottoms[i])
            _sync(be)
            if record:
                bwd[names[i]] += time.perf_counter() - t
        t_end = time.perf_counter()
        if record:
            total_f += t_mid - t_pass
            total_b += t_end - t_mid
    scale = 1000.0 / iterations
    return Timing(iterations, {k: v * scale for k, v in fwd.items()},
                  {k: v * scale for k, v in bwd.items()}, total_f * scale, total_b * scale)
