"""CuPy backend: the same nets and solvers give the same numbers on the GPU as on the CPU.

Marked ``gpu``: skipped where CuPy or a CUDA device is absent (see conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netspec.backend import Backend, get_backend, to_numpy
from netspec.log import CaffeLog
from netspec.net import Net
from netspec.solvers import RULES, Solver
from netspec.spec import load_solver, parse_net
from netspec.spec.solver import SolverParameter

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[1]


def _lenet_deploy(batch):
    from test_lenet_caffe import deploy_lenet

    return parse_net(deploy_lenet(batch))


def test_lenet_forward_backward_gpu_equals_cpu():
    cpu, gpu = Backend(np, np.float32), get_backend(True, "float32")
    nets = [Net(_lenet_deploy(8), "TEST", b, np.random.default_rng(0)) for b in (cpu, gpu)]
    x = np.random.default_rng(1).random((8, 1, 28, 28)).astype(np.float32)
    dprob = np.random.default_rng(2).standard_normal((8, 10)).astype(np.float32)
    outs = []
    for net in nets:
        net.blobs["data"].data[...] = net.backend.asarray(x)
        net.forward()
        net.clear_param_diffs()
        net.blobs["prob"].diff[...] = net.backend.asarray(dprob)
        for i in range(len(net.layers) - 1, -1, -1):
            net.layers[i].backward(net.tops[i], [True] * len(net.bottoms[i]), net.bottoms[i])
        outs.append({"prob": to_numpy(net.blobs["prob"].data),
                     **{k: to_numpy(p.diff) for k, p in net.named_params().items()}})
    for key in outs[0]:
        np.testing.assert_allclose(outs[1][key], outs[0][key], rtol=1e-4, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_gpu_equals_cpu(rule):
    import tempfile

    from test_resume import data_net

    with tempfile.TemporaryDirectory() as tmp:
        settings = {"net": "x", "type": rule, "base_lr": 0.05, "momentum": 0.9,
                    "weight_decay": 1e-3, "regularization_type": "decoupled" if rule == "AdamW" else "L2",
                    "random_seed": 3, "max_iter": 5}
        results = []
        for backend in (Backend(np, np.float64), get_backend(True, "float64")):
            sp = SolverParameter.model_validate(settings)
            s = Solver(sp, backend=backend, net_param=parse_net(data_net(Path(tmp))), log=CaffeLog(quiet=True))
            s.solve()
            results.append({k: to_numpy(p.data) for k, p in s.net.named_params().items()})
        for key in results[0]:
            np.testing.assert_allclose(results[1][key], results[0][key], rtol=1e-9, atol=1e-12)


def test_lenet_trains_on_gpu(tmp_path):
    sp = load_solver(ROOT / "solvers" / "lenet.yaml")
    sp = sp.model_copy(update={"solver_mode": "GPU", "max_iter": 300, "test_interval": 300,
                               "test_initialization": False, "snapshot": 0,
                               "snapshot_prefix": str(tmp_path / "g")})
    s = Solver(sp, log=CaffeLog(quiet=True))
    assert s.backend.is_gpu
    s.solve()
    assert s.test_history[-1][1]["accuracy"] > 0.9
