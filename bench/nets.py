"""The bench nets: a model YAML's layers for one phase, its Data layers replaced by Input layers
of the same top shapes (one fixed synthetic batch, no data loading), and the netspec side of the
bench built from them (solver, inputs, weights)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from netspec.backend import get_backend, to_numpy
from netspec.graph import filter_phase
from netspec.log import CaffeLog
from netspec.net import Net
from netspec.solvers import Solver
from netspec.spec import load_net, parse_net
from netspec.spec.params import NetState
from netspec.spec.solver import SolverParameter
from netspec.spec.yaml_lines import load_yaml

from bench.shared import SOLVER, as_list

ROOT = Path(__file__).resolve().parents[1]
NETS = {
    "lenet": ROOT / "models" / "lenet.yaml",
    "cifar10_quick": ROOT / "models" / "cifar10_quick.yaml",
    "mlp": ROOT / "models" / "mlp.yaml",
}


def bench_net(name: str, phase: str = "TRAIN", batch: int | None = None) -> dict:
    """The layers of net ``name`` that netspec builds for ``phase`` (its own include/exclude rules:
    phase, level, stages, with the net file's ``state``), as plain dicts, Data layers replaced by
    Input layers."""
    raw, _ = load_yaml(NETS[name])
    param = load_net(NETS[name])
    state = NetState(phase=phase, level=param.state.level, stage=list(param.state.stage))
    layers = [copy.deepcopy(raw["layer"][d.index]) for d in filter_phase(param, state)]
    for lay in layers:   # applied: the bench net is built without the file's state
        for key in ("include", "exclude", "phase"):
            lay.pop(key, None)
    shapes = None
    out = []
    for lay in layers:
        if lay["type"] == "Data":
            if shapes is None:   # the data tops' shapes, from netspec's own Data layer
                net = Net(param, phase)
                shapes = {k: b.shape for k, b in net.blobs.items()}
            tops = as_list(lay["top"])
            dims = [list(shapes[t]) for t in tops]
            lay = {"name": lay["name"], "type": "Input", "top": tops,
                   "input_param": {"shape": [{"dim": d} for d in dims]}}
        if lay["type"] == "Input" and batch is not None:
            for s in lay["input_param"]["shape"]:
                s["dim"][0] = batch
        out.append(lay)
    return {"name": raw.get("name", name), "layer": out}


def input_shapes(spec: dict) -> dict[str, tuple]:
    shapes = {}
    for lay in spec["layer"]:
        if lay["type"] == "Input":
            ss = lay["input_param"]["shape"]
            ss = ss if isinstance(ss, list) else [ss]
            tops = as_list(lay["top"])
            ss = ss * len(tops) if len(ss) == 1 else ss
            for t, s in zip(tops, ss):
                shapes[t] = tuple(s["dim"])
    return shapes


def synthetic_inputs(spec: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Uniform [0, 1) data and integer labels 0..9 (as floats, as Caffe stores them)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in input_shapes(spec).items():
        if name == "label":
            out[name] = rng.integers(0, 10, size=shape).astype(np.float32)
        else:
            out[name] = rng.random(shape, dtype=np.float32)
    return out


def make_solver(spec: dict, gpu: bool = False, threads: int | None = None,
                reuse_diffs: bool = True, **solver):
    """The bench net's solver (``SOLVER``, fields overridden by ``solver``); on the CPU netspec
    runs ``threads`` threads (default: BLAS's thread count, i.e. the surrounding
    ``threadpool_limits``). ``reuse_diffs``: blob diffs share arrays, as in ``netspec train``."""
    sp = SolverParameter.model_validate({"net": "bench", **SOLVER, **solver})
    return Solver(sp, backend=get_backend(gpu, threads=threads), net_param=parse_net(spec, spec["name"]),
                  log=CaffeLog(quiet=True), reuse_diffs=reuse_diffs)


def set_inputs(net, inputs: dict) -> None:
    for k, v in inputs.items():
        net.blobs[k].data[...] = net.backend.asarray(v)


def weights_of(net) -> dict[str, np.ndarray]:
    return {k: to_numpy(p.data).copy() for k, p in net.named_params().items()}
