"""Peak memory of one framework training a bench net, each in its own fresh subprocess.

The child (``python -m bench.memory FRAMEWORK SPEC THREADS``, same threads) imports its own
framework only, takes its resident set size (VmRSS) as the baseline, resets the kernel's
high-water mark (``echo 5 > /proc/self/clear_refs``), builds its net (parameters, optimizer
state, buffers), trains a few iterations, and reports VmHWM − baseline: everything the
framework touches (arrays, tensors, BLAS/oneDNN scratch, Python objects), with import costs
left out on both sides.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory_child(framework: str, spec_path: str, threads: int, iters: int = 5) -> None:
    """Subprocess body for the memory column (see the module doc); prints JSON."""
    limits = threadpool_limits(threads)
    data = np.load(spec_path.replace(".json", ".npz"))
    spec = json.loads(Path(spec_path).read_text())
    # each child imports its own framework only, before the baseline: netspec loaded in the
    # NumPy child too lowered the hand MLP's measured peak from 4.7-5.0 to 3.1-3.3 MiB
    if framework == "netspec":
        from bench.nets import make_solver, set_inputs  # noqa: PLC0415
    elif framework == "torch":
        import torch  # noqa: PLC0415

        from bench.torch_model import torch_inputs, torch_model, torch_optimizer, torch_train_step  # noqa: PLC0415

        torch.set_num_threads(threads)
    else:
        from bench.numpy_mlp import NumpyMLP, mlp_decay  # noqa: PLC0415
    gc.collect()
    base = _status_kb("VmRSS")
    base_file = _status_kb("RssFile") + _status_kb("RssShmem")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        method = "VmHWM"
    except OSError:
        method = "ru_maxrss (clear_refs refused: includes the import peak)"
    weights = {k[2:]: data[k] for k in data.files if k.startswith("w:")}
    inputs = {k[2:]: data[k] for k in data.files if k.startswith("x:")}
    if framework == "netspec":
        s = make_solver(spec, threads=threads)
        set_inputs(s.net, inputs)
        for _ in range(iters):
            s.step_once()
    elif framework == "torch":
        model = torch_model(spec, weights)
        step = torch_train_step(model, torch_optimizer(model), torch_inputs(inputs))
        for _ in range(iters):
            step()
    else:
        mlp = NumpyMLP(weights, inputs["data"], inputs["label"], mlp_decay(spec))
        for _ in range(iters):
            mlp.step()
    if method == "VmHWM":
        peak = _status_kb("VmHWM")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # code pages of the libraries first touched while training (file-backed, still resident)
    # are not working memory: take their growth out
    code = _status_kb("RssFile") + _status_kb("RssShmem") - base_file
    limits.restore_original_limits()
    print(json.dumps({"peak_mib": (peak - base - code) / 1024, "code_mib": code / 1024,
                      "method": method}))


def memory_mib(framework: str, spec_path: str, threads: int) -> float | None:
    """Peak MiB of ``framework`` training the net saved at ``spec_path`` (None if the child failed)."""
    env = {k: v for k, v in os.environ.items()}
    r = subprocess.run([sys.executable, "-m", "bench.memory", framework, spec_path, str(threads)],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    if r.returncode != 0:
        print(f"  memory child {framework} failed: {r.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])["peak_mib"]


def zoo_memory_child(framework: str, name: str, batch: int, threads: int, mode: str,
                     iters: int = 3, reuse_blobs: bool = False) -> None:
    """Subprocess body of ``big_nets.py --memory``: the peak of ``framework`` (netspec, torch,
    opencv) running big net ``name`` (``mode`` infer: forward passes; train: training steps),
    measured as ``memory_child`` does; the spec, weights and input are made before the
    baseline (the same arrays in every child), prints JSON. ``reuse_blobs``: netspec's
    inference net shares blob memory (``Net(reuse_blobs=True)``)."""
    limits = threadpool_limits(threads)
    from bench.big_nets import TRAIN_LR  # noqa: PLC0415
    from bench.zoo import inference_net, random_weights, zoo_inputs, zoo_spec  # noqa: PLC0415

    spec = zoo_spec(name, batch, train=mode == "train")
    inputs = zoo_inputs(spec)
    # weights drawn from a deploy net built before the baseline, then dropped
    deploy, weights = inference_net(zoo_spec(name, batch), threads)
    del deploy
    if framework == "torch":
        import torch  # noqa: PLC0415

        from bench.torch_model import torch_inputs, torch_model, torch_optimizer, torch_train_step  # noqa: PLC0415

        torch.set_num_threads(threads)
    elif framework == "opencv":
        import cv2  # noqa: PLC0415

        from netspec.caffe.opencv import opencv_net  # noqa: PLC0415
    else:
        from bench.nets import make_solver, set_inputs  # noqa: PLC0415
        from bench.zoo import set_weights  # noqa: PLC0415
        from netspec.backend import get_backend  # noqa: PLC0415
        from netspec.layers.conv_direct import compiled_kernels  # noqa: PLC0415
        from netspec.net import Net  # noqa: PLC0415
        from netspec.spec import parse_net  # noqa: PLC0415

        compiled_kernels()   # numba's import (the fast extra), an import like torch's above
    gc.collect()
    base = _status_kb("VmRSS")
    base_file = _status_kb("RssFile") + _status_kb("RssShmem")
    Path("/proc/self/clear_refs").write_text("5")
    if framework == "netspec":
        if mode == "train":
            s = make_solver(spec, threads=threads, base_lr=TRAIN_LR)
            set_weights(s.net, random_weights(s.net))
            set_inputs(s.net, inputs)
            step = s.step_once
        else:
            net = Net(parse_net(spec, spec["name"]), "TEST", get_backend(threads=threads),
                      reuse_blobs=reuse_blobs)
            set_weights(net, weights)
            set_inputs(net, inputs)
            step = net.forward
    elif framework == "torch":
        model = torch_model(spec, weights)
        tin = torch_inputs(inputs)
        if mode == "train":
            step = torch_train_step(model, torch_optimizer(model, TRAIN_LR), tin)
        else:
            def step():
                with torch.no_grad():
                    model(tin, train=False)
    else:
        import tempfile  # noqa: PLC0415

        with tempfile.TemporaryDirectory() as work:
            cv_net = opencv_net(spec, weights, work, threads)
        for k, x in inputs.items():
            cv_net.setInput(x, k)
        cv2.setNumThreads(threads)
        step = cv_net.forward
    for _ in range(iters):
        step()
    peak = _status_kb("VmHWM")
    code = _status_kb("RssFile") + _status_kb("RssShmem") - base_file
    limits.restore_original_limits()
    print(json.dumps({"peak_mib": (peak - base - code) / 1024, "code_mib": code / 1024}))


def zoo_memory_mib(framework: str, name: str, batch: int, threads: int, mode: str,
                   reuse_blobs: bool = False) -> float | None:
    """Peak MiB of ``zoo_memory_child`` in a fresh process (None if the child failed)."""
    r = subprocess.run([sys.executable, "-m", "bench.memory", "zoo", framework, name, str(batch),
                        str(threads), mode] + (["reuse"] if reuse_blobs else []), cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        print(f"  memory child {framework} {name} failed: {r.stderr.strip()[-500:]}",
              file=sys.stderr)
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])["peak_mib"]


#: fork training nets (tests/zoo_forks/) that ``fork_memory_child`` measures, by short name
FORK_NETS = {
    "ssdlite": "eric612__MobileNet-YOLO__models__mobilenetv2_voc__ssd_lite__train.prototxt",
    "mobilenet_ssd": "chuanqi305__MobileNet-SSD__voc__MobileNetSSD_train.prototxt",
}


def fork_net_param(name: str, batch: int):
    """Fork training net ``name`` (``FORK_NETS``) with its AnnotatedData layer stood in by an
    Input of ``batch`` images at the file's size and labels (1, 1, batch, 8)."""
    from netspec.caffe import prototxt as ptx  # noqa: PLC0415
    from netspec.caffe.port import net_yaml  # noqa: PLC0415
    from netspec.spec import loads_net  # noqa: PLC0415
    from netspec.spec.inputs import declared_shapes, stand_in_inputs  # noqa: PLC0415

    file = FORK_NETS[name]
    text = (ROOT / "tests" / "zoo_forks" / file).read_text()
    param = loads_net(net_yaml(ptx.parse_net(text, file), file)[0], file)
    index = next(i for i, lp in enumerate(param.layer) if "data" in lp.top and "label" in lp.top)
    data_shape = declared_shapes(param, index)[0]["data"]
    return stand_in_inputs(param, {"data": (batch,) + tuple(data_shape[1:])})[0]


def fork_training_solver(param, threads: int, reuse_diffs: bool):
    """The bench solver (``SOLVER``) of ``fork_net_param``'s net, its inputs set: seeded
    normal images, one box per image."""
    from bench.shared import SOLVER  # noqa: PLC0415
    from netspec.backend import get_backend  # noqa: PLC0415
    from netspec.log import CaffeLog  # noqa: PLC0415
    from netspec.solvers.solver import Solver  # noqa: PLC0415
    from netspec.spec.solver import SolverParameter  # noqa: PLC0415

    sp = SolverParameter.model_validate({"net": param.name or "fork", **SOLVER})
    s = Solver(sp, backend=get_backend(threads=threads), net_param=param,
               log=CaffeLog(quiet=True), reuse_diffs=reuse_diffs)
    batch = s.net.blobs["data"].shape[0]
    rng = np.random.default_rng(0)
    s.net.blobs["data"].data[...] = rng.standard_normal(s.net.blobs["data"].shape)
    x0, y0 = rng.uniform(0, 0.5, (2, batch))
    w, h = rng.uniform(0.2, 0.5, (2, batch))
    rows = np.stack([np.arange(batch), rng.integers(1, 21, batch), np.zeros(batch), x0, y0,
                     x0 + w, y0 + h, np.zeros(batch)], 1)
    s.net.blobs["label"].data[...] = rows.reshape(s.net.blobs["label"].shape)
    return s


def fork_memory_child(name: str, batch: int, threads: int, reuse_diffs: bool,
                      iters: int = 3) -> None:
    """Subprocess body: netspec's peak training fork net ``name`` (``fork_net_param``,
    ``fork_training_solver``), measured as ``zoo_memory_child`` does, the net's spec made
    before the baseline (PyTorch has no model of these nets here); prints JSON with the
    blob diffs' distinct MiB after the last step."""
    limits = threadpool_limits(threads)
    param = fork_net_param(name, batch)
    from netspec.solvers.solver import Solver  # noqa: F401, PLC0415 - imported before the baseline
    gc.collect()
    base = _status_kb("VmRSS")
    base_file = _status_kb("RssFile") + _status_kb("RssShmem")
    Path("/proc/self/clear_refs").write_text("5")
    s = fork_training_solver(param, threads, reuse_diffs)
    for _ in range(iters):
        s.step_once()
    peak = _status_kb("VmHWM")
    code = _status_kb("RssFile") + _status_kb("RssShmem") - base_file
    limits.restore_original_limits()
    print(json.dumps({"peak_mib": (peak - base - code) / 1024, "code_mib": code / 1024,
                      "shared_diff_mib": s.net.shared_diff_bytes / 2**20,
                      "diff_mib": _distinct_mib(b._diff for b in s.net.blobs.values())}))


def _distinct_mib(arrays) -> float:
    """MiB of the distinct memory behind ``arrays`` (views of one base counted once)."""
    bases = {}
    for a in arrays:
        if a is not None:
            base = a if a.base is None else a.base
            bases[id(base)] = base.nbytes
    return sum(bases.values()) / 2**20


if __name__ == "__main__":
    if sys.argv[1] == "fork":         # python -m bench.memory fork NAME BATCH THREADS [noreuse]
        fork_memory_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                          reuse_diffs=sys.argv[5:] != ["noreuse"])
    elif sys.argv[1] == "zoo":
        zoo_memory_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6],
                         reuse_blobs=sys.argv[7:] == ["reuse"])
    else:
        memory_child(sys.argv[1], sys.argv[2], int(sys.argv[3]))
