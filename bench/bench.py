"""netspec vs PyTorch: one full training iteration of the same network, same weights, same data.

For each network the TRAIN-phase layers of its netspec YAML are taken, the Data layers replaced
by Input layers of the same top shapes (both frameworks then see one fixed synthetic batch, and
neither pays for data loading), and the same net is built twice:

* netspec: ``Solver.step_once()`` (clear diffs, forward, backward, coupled-L2 SGD-momentum update,
  finiteness check);
* PyTorch: a ``torch.nn`` module translated from the same layer list (Convolution, Pooling with
  Caffe's ceil rule as ``ceil_mode=True``, InnerProduct, ReLU, SoftmaxWithLoss as mean
  cross-entropy; Accuracy only in the test pass), with netspec's initial weights copied in, and
  ``opt.zero_grad(); loss = net(x, y); loss.backward(); opt.step(); loss.item()``.

Both use lr 0.01 (× each blob's lr_mult), momentum 0.9, weight_decay 5e-4 (× decay_mult, coupled
L2 = ``torch.optim.SGD(weight_decay=...)``), fixed lr. Caffe's v ← μv + lr·(g + λW) and
torch's b ← μb + (g + λW), W ← W − lr·b are the same update (v = lr·b) at a fixed lr, so the two
follow the same trajectory; the first loss of both and their loss after the warm-up are printed
as a check of the translation. The MLP is also timed against a hand-written NumPy float32 loop
(forward, backward, SGD momentum).

Iterations alternate between the frameworks (netspec, torch[, numpy], then the next iteration in
the reverse order), so load from elsewhere on the machine hits all of them alike; each time is
the median of ``--iterations`` timed steps after ``--warmup`` steps. Threads: torch's
``set_num_threads``, threadpoolctl's ``threadpool_limits`` (NumPy's OpenBLAS, OpenMP: the hand
NumPy loop) and netspec's ``get_backend(threads=T)``, which netspec spends its own way
(``netspec/parallel.py``: LeNet and CIFAR split each layer's batch over T threads with BLAS at
one thread, the MLP lets BLAS run T threads).
At 2 threads each framework's idle worker threads keep spinning for a while after its step
(OpenBLAS for ~0.1 s after a GEMM) and slow the other one's next step; ``--block K`` alternates
in blocks of K timed steps instead, each after a ``--settle`` pause and one untimed step: the
steady state of a run of one framework (``bench/NOTES.md`` compares the two schedules).

FLOPs: forward multiply-adds of Convolution and InnerProduct layers, × 2 (mul + add) × 3
(forward, weight gradient, input gradient: the brief's convention, which counts the input
gradient of the first layer although no framework computes it). Peak: the median time of a
1024×1024 float32 matmul through NumPy at the same thread count (4096² with CuPy on --gpu).

Memory (CPU): each framework runs a few iterations in its own fresh subprocess (same threads).
After its imports the child takes its resident set size (VmRSS) as the baseline, resets the
kernel's high-water mark (``echo 5 > /proc/self/clear_refs``), builds its net (parameters,
optimizer state, buffers), trains, and reports VmHWM − baseline: everything the framework
touches (arrays, tensors, BLAS/oneDNN scratch, Python objects), with import costs left out
on both sides. On --gpu: allocator high-water marks (CuPy's memory pool, torch's
max_memory_reserved), each allocator holding only its own framework's arrays.

    python bench/bench.py                          # all nets, 1 and 2 threads, 200 iterations
    python bench/bench.py --nets lenet --threads 1 --iterations 300 --out bench/results/x.md
    python bench/bench.py --profile                # per-layer ms (netspec time) + torch ops
    python bench/bench.py --gpu --threads 1        # CuPy vs torch CUDA
    python bench/bench.py --block 10               # alternate in blocks of 10 steps

Run it with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (``env -u OPENBLAS_CORETYPE -u
OPENBLAS_L2_SIZE python bench/bench.py``): they force an older OpenBLAS kernel. The kernel
threadpoolctl reports is printed.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NETS = {
    "lenet": ROOT / "models" / "lenet.yaml",
    "cifar10_quick": ROOT / "models" / "cifar10_quick.yaml",
    "mlp": ROOT / "models" / "mlp.yaml",
}
SOLVER = {"base_lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "regularization_type": "L2",
          "lr_policy": "fixed", "display": 0, "test_interval": 0, "random_seed": 1,
          "max_iter": 10**9}
LENET_RUN = {"iterations": 10_000, "test_interval": 500, "test_iter": 100, "test_batch": 100}


# -- the bench net: TRAIN (or TEST) layers with Input layers for data ---------------------------
def _rules(v):
    return [] if v is None else (v if isinstance(v, list) else [v])


def _included(layer: dict, phase: str) -> bool:
    inc, exc = _rules(layer.get("include")), _rules(layer.get("exclude"))
    if inc and not any(r.get("phase", phase) == phase for r in inc):
        return False
    return not any(r.get("phase") == phase for r in exc)


def bench_net(name: str, phase: str = "TRAIN", batch: int | None = None) -> dict:
    """The net's ``phase`` layers as plain dicts, Data layers replaced by Input layers."""
    from netspec.net import Net  # noqa: PLC0415
    from netspec.spec import load_net  # noqa: PLC0415
    from netspec.spec.yaml_lines import load_yaml  # noqa: PLC0415

    raw, _ = load_yaml(NETS[name])
    layers = [copy.deepcopy(lay) for lay in raw["layer"] if _included(lay, phase)]
    shapes = None
    out = []
    for lay in layers:
        if lay["type"] == "Data":
            if shapes is None:   # the data tops' shapes, from netspec's own Data layer
                net = Net(load_net(NETS[name]), phase)
                shapes = {k: b.shape for k, b in net.blobs.items()}
            tops = _rules(lay["top"])
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
            tops = _rules(lay["top"])
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


def param_specs(lay: dict) -> list[tuple[float, float]]:
    ps = _rules(lay.get("param"))
    return [(float(p.get("lr_mult", 1)), float(p.get("decay_mult", 1))) for p in ps]


# -- netspec side ------------------------------------------------------------------------------
def make_solver(spec: dict, gpu: bool = False, threads: int | None = None):
    """The bench net's solver; on the CPU netspec runs ``threads`` threads (default: BLAS's
    thread count, i.e. the surrounding ``threadpool_limits``)."""
    from netspec.backend import get_backend  # noqa: PLC0415
    from netspec.log import CaffeLog  # noqa: PLC0415
    from netspec.solvers import Solver  # noqa: PLC0415
    from netspec.spec import parse_net  # noqa: PLC0415
    from netspec.spec.solver import SolverParameter  # noqa: PLC0415

    sp = SolverParameter.model_validate({"net": "bench", **SOLVER})
    return Solver(sp, backend=get_backend(gpu, threads=threads), net_param=parse_net(spec, spec["name"]),
                  log=CaffeLog(quiet=True))


def set_inputs(net, inputs: dict) -> None:
    for k, v in inputs.items():
        net.blobs[k].data[...] = net.backend.asarray(v)


def weights_of(net) -> dict[str, np.ndarray]:
    from netspec.backend import to_numpy  # noqa: PLC0415

    return {k: to_numpy(p.data).copy() for k, p in net.named_params().items()}


# -- PyTorch side: a small translator ---------------------------------------------------------
def _pair(p: dict, key: str, default):
    h, w = p.get(key + "_h"), p.get(key + "_w")
    if h is not None:
        return int(h), int(w)
    v = p.get(key, default)
    v = v if isinstance(v, list) else [v]
    if not v:
        v = [default]
    return int(v[0]), int(v[-1])


def torch_model(spec: dict, weights: dict[str, np.ndarray], device: str = "cpu"):
    """A torch.nn.Module computing the same blobs as the netspec net ``spec`` (same weights).

    forward(inputs: dict) -> (loss, blobs). Unsupported layer types raise NotImplementedError.
    """
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415

    class Flatten(nn.Module):
        """InnerProduct: flatten the axes from ``axis`` on, then Linear."""

        def __init__(self, lin, axis):
            super().__init__()
            self.lin, self.axis = lin, axis

        def forward(self, x):
            return self.lin(x.flatten(self.axis) if x.dim() > self.axis + 1 else x)

    def cross_entropy(x, label):
        return F.cross_entropy(x, label.long())

    def accuracy(x, label):
        return (x.argmax(1) == label.long()).float().mean()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.mods = nn.ModuleDict()
            self.steps = []          # (fn, bottoms, tops)
            self.mults = []          # (param, lr_mult, decay_mult)
            for lay in spec["layer"]:
                self._add(lay)

        def _add(self, lay):
            t, name = lay["type"], lay["name"]
            bottoms, tops = _rules(lay.get("bottom")), _rules(lay.get("top"))
            mults = param_specs(lay) + [(1.0, 1.0)] * 2
            if t == "Input":
                return
            if t == "Convolution":
                p = lay.get("convolution_param", {})
                w = weights[f"{name}/0"]
                m, cg, kh, kw = w.shape
                g = int(p.get("group", 1))
                bias = p.get("bias_term", True)
                mod = nn.Conv2d(cg * g, m, (kh, kw), stride=_pair(p, "stride", 1),
                                padding=_pair(p, "pad", 0), dilation=_pair(p, "dilation", 1),
                                groups=g, bias=bias)
                self._load(mod, name, bias, transpose=False, mults=mults)
                fn = mod
            elif t == "Pooling":
                p = lay.get("pooling_param", {})
                if p.get("global_pooling"):
                    fn = (nn.AdaptiveMaxPool2d(1) if p.get("pool", "MAX") == "MAX"
                          else nn.AdaptiveAvgPool2d(1))
                else:
                    k, s, pad = _pair(p, "kernel_size", None), _pair(p, "stride", 1), _pair(p, "pad", 0)
                    ceil = p.get("round_mode", "CEIL") == "CEIL"
                    if p.get("pool", "MAX") == "MAX":
                        fn = nn.MaxPool2d(k, s, pad, ceil_mode=ceil)
                    elif p.get("pool") == "AVE":
                        # torch's divisor in ceil mode = Caffe's pool_size (window clipped at
                        # H + pad, padding counted): count_include_pad=True
                        fn = nn.AvgPool2d(k, s, pad, ceil_mode=ceil, count_include_pad=True)
                    else:
                        raise NotImplementedError(f"pool {p.get('pool')}")
            elif t == "InnerProduct":
                p = lay.get("inner_product_param", {})
                w = weights[f"{name}/0"]
                tr = bool(p.get("transpose", False))
                k, n = (w.shape if tr else w.shape[::-1])
                bias = p.get("bias_term", True)
                lin = nn.Linear(k, n, bias=bias)
                self._load(lin, name, bias, transpose=tr, mults=mults)
                axis = int(p.get("axis", 1))
                fn = Flatten(lin, axis)
            elif t == "ReLU":
                slope = float(lay.get("relu_param", {}).get("negative_slope", 0.0))
                inplace = bottoms == tops
                fn = (nn.ReLU(inplace=inplace) if slope == 0
                      else nn.LeakyReLU(slope, inplace=inplace))
            elif t == "SoftmaxWithLoss":
                extra = {k for k in ("loss_param", "softmax_param", "loss_weight") if lay.get(k)}
                if extra:
                    raise NotImplementedError(f"SoftmaxWithLoss with {sorted(extra)}")
                fn = cross_entropy
            elif t == "Accuracy":
                fn = accuracy
            else:
                raise NotImplementedError(f"layer type {t} in the torch translator")
            if isinstance(fn, nn.Module):
                self.mods[name] = fn
            self.steps.append((fn, bottoms, tops, t))

        def _load(self, mod, name, bias, transpose, mults):
            w = weights[f"{name}/0"]
            w = w.T if transpose else w
            with torch.no_grad():
                mod.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)).reshape(mod.weight.shape))
                if bias:
                    mod.bias.copy_(torch.from_numpy(weights[f"{name}/1"]))
            self.mults.append((mod.weight, *mults[0]))
            if bias:
                self.mults.append((mod.bias, *mults[1]))

        def forward(self, inputs, train=True):
            blobs = dict(inputs)
            loss = None
            for fn, bottoms, tops, t in self.steps:
                if t == "Accuracy" and train:
                    continue
                y = fn(*(blobs[b] for b in bottoms))
                blobs[tops[0]] = y
                if t == "SoftmaxWithLoss":
                    loss = y if loss is None else loss + y
            return loss, blobs

    model = Net().to(device)
    return model


def torch_optimizer(model):
    import torch  # noqa: PLC0415

    groups = [{"params": [p], "lr": SOLVER["base_lr"] * lr, "weight_decay": SOLVER["weight_decay"] * dm}
              for p, lr, dm in model.mults if lr != 0]
    for p, lr, _ in model.mults:
        if lr == 0:
            p.requires_grad_(False)
    return torch.optim.SGD(groups, lr=SOLVER["base_lr"], momentum=SOLVER["momentum"])


def torch_inputs(inputs: dict, device: str = "cpu") -> dict:
    import torch  # noqa: PLC0415

    return {k: torch.from_numpy(v.copy()).to(device) for k, v in inputs.items()}


# -- the hand-written NumPy MLP --------------------------------------------------------------
class NumpyMLP:
    """784-200-200-10 ReLU MLP, softmax cross-entropy, SGD momentum with L2 on the weights only.

    Same layout as netspec's InnerProduct (W is (out, in)), float32 throughout, in-place where
    NumPy allows it.
    """

    def __init__(self, weights: dict, x: np.ndarray, label: np.ndarray, decay_mults):
        self.W = [weights[f"fc{i}/0"].copy() for i in (1, 2, 3)]
        self.b = [weights[f"fc{i}/1"].copy() for i in (1, 2, 3)]
        self.vW = [np.zeros_like(w) for w in self.W]
        self.vb = [np.zeros_like(b) for b in self.b]
        self.x = x.reshape(x.shape[0], -1).astype(np.float32)
        self.y = label.astype(np.int64)
        self.decay = decay_mults
        self.rows = np.arange(self.x.shape[0])

    def step(self) -> float:
        f32 = np.float32
        W, b, x, y, n = self.W, self.b, self.x, self.y, self.x.shape[0]
        h1 = x @ W[0].T
        h1 += b[0]
        np.maximum(h1, 0, out=h1)
        h2 = h1 @ W[1].T
        h2 += b[1]
        np.maximum(h2, 0, out=h2)
        s = h2 @ W[2].T
        s += b[2]
        s -= s.max(axis=1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=1, keepdims=True)
        loss = float(-np.log(np.maximum(s[self.rows, y], f32(1.1754944e-38))).mean())
        d3 = s
        d3[self.rows, y] -= 1
        d3 *= f32(1.0 / n)
        gW = [None, None, d3.T @ h2]
        gb = [None, None, d3.sum(axis=0)]
        d2 = d3 @ W[2]
        d2 *= h2 > 0
        gW[1], gb[1] = d2.T @ h1, d2.sum(axis=0)
        d1 = d2 @ W[1]
        d1 *= h1 > 0
        gW[0], gb[0] = d1.T @ x, d1.sum(axis=0)
        lr, mu, wd = f32(SOLVER["base_lr"]), f32(SOLVER["momentum"]), SOLVER["weight_decay"]
        for i in range(3):
            for p, g, v, dm in ((W[i], gW[i], self.vW[i], self.decay[i][0]),
                                (b[i], gb[i], self.vb[i], self.decay[i][1])):
                if wd * dm:
                    g += f32(wd * dm) * p
                v *= mu
                v += lr * g
                p -= v
        return loss


# -- measurement helpers ---------------------------------------------------------------------
def blas_info() -> list[dict]:
    from threadpoolctl import threadpool_info  # noqa: PLC0415

    return threadpool_info()


def kernel_line() -> str:
    parts = []
    for d in blas_info():
        if d.get("user_api") == "blas":
            parts.append(f"{d.get('internal_api')} {d.get('version')} kernel {d.get('architecture')}"
                         f" ({d.get('threading_layer')})")
    return "; ".join(parts) or "no BLAS seen by threadpoolctl"


def gemm_peak(threads: int, gpu: bool = False, n: int = 1024, reps: int = 30) -> float:
    """GFLOP/s of an n×n float32 matmul (median of ``reps``)."""
    if gpu:
        import cupy as cp  # noqa: PLC0415

        n = 4096
        a = cp.random.random((n, n), dtype=cp.float32)
        b = cp.random.random((n, n), dtype=cp.float32)
        for _ in range(3):
            a @ b
        cp.cuda.Device().synchronize()
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            cp.cuda.Device().synchronize()
            ts.append(time.perf_counter() - t)
    else:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415

        rng = np.random.default_rng(0)
        a = rng.random((n, n), dtype=np.float32)
        b = rng.random((n, n), dtype=np.float32)
        c = np.empty_like(a)
        with threadpool_limits(threads):
            for _ in range(3):
                np.matmul(a, b, out=c)
            ts = []
            for _ in range(reps):
                t = time.perf_counter()
                np.matmul(a, b, out=c)
                ts.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(ts) / 1e9


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory_child(framework: str, spec_path: str, threads: int, iters: int = 5) -> None:
    """Subprocess body for the memory column (see the module doc); prints JSON."""
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    limits = threadpool_limits(threads)
    data = np.load(spec_path.replace(".json", ".npz"))
    spec = json.loads(Path(spec_path).read_text())
    if framework == "torch":
        import torch  # noqa: PLC0415

        torch.set_num_threads(threads)
    elif framework == "netspec":
        import netspec.net  # noqa: F401, PLC0415
        import netspec.solvers  # noqa: F401, PLC0415
        import netspec.spec  # noqa: F401, PLC0415
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
        opt = torch_optimizer(model)
        tin = torch_inputs(inputs)
        for _ in range(iters):
            opt.zero_grad()
            loss, _ = model(tin)
            loss.backward()
            opt.step()
            loss.item()
    else:
        mlp = NumpyMLP(weights, inputs["data"], inputs["label"], _mlp_decay(spec))
        for _ in range(iters):
            mlp.step()
    if method == "VmHWM":
        peak = _status_kb("VmHWM")
    else:
        import resource  # noqa: PLC0415

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # code pages of the libraries first touched while training (file-backed, still resident)
    # are not working memory: take their growth out
    code = _status_kb("RssFile") + _status_kb("RssShmem") - base_file
    limits.restore_original_limits()
    print(json.dumps({"peak_mib": (peak - base - code) / 1024, "code_mib": code / 1024,
                      "method": method}))


def _mlp_decay(spec) -> list[tuple[float, float]]:
    out = []
    for lay in spec["layer"]:
        if lay["type"] == "InnerProduct":
            ps = param_specs(lay) + [(1.0, 1.0)] * 2
            out.append((ps[0][1], ps[1][1]))
    return out


def memory_mib(framework: str, spec_path: str, threads: int) -> float | None:
    env = {k: v for k, v in os.environ.items()}
    r = subprocess.run([sys.executable, __file__, "--_mem-child", framework, "--_spec", spec_path,
                        "--threads", str(threads)], capture_output=True, text=True, env=env,
                       timeout=300)
    if r.returncode != 0:
        print(f"  memory child {framework} failed: {r.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])["peak_mib"]


# -- one network at one thread count -------------------------------------------------------------
def alternation(names: list[str], iters: int, block: int, settle: float):
    """The timed schedule: yields (framework, timed) pairs, ``iters`` timed steps for each.

    block 1: one step each in turn, the order reversed every round (netspec, torch, torch,
    netspec, ...). block k > 1: k timed steps of one framework, then of the next (order reversed
    every round), each block preceded by a pause of ``settle`` seconds and one untimed step, so
    that the other framework's idle worker threads (OpenBLAS's spin for ~0.1 s after a GEMM) have
    stopped and this one's are awake: the steady state of a training run of one framework."""
    done = 0
    rnd = 0
    while done < iters:
        n = min(block, iters - done)
        for k in (names if rnd % 2 == 0 else names[::-1]):
            if block > 1:
                time.sleep(settle)
                yield k, False
            for _ in range(n):
                yield k, True
        done += n
        rnd += 1


def bench_one(name: str, threads: int, iters: int, warmup: int, gpu: bool, mem: bool,
              tmpdir: str, block: int = 1, settle: float = 0.0) -> dict:
    import torch  # noqa: PLC0415
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    device = "cuda" if gpu else "cpu"
    if gpu:   # each allocator's high-water mark from here on holds this net alone
        import cupy as cp  # noqa: PLC0415

        gc.collect()
        cp.get_default_memory_pool().free_all_blocks()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    spec = bench_net(name)
    inputs = synthetic_inputs(spec)
    with threadpool_limits(threads):
        torch.set_num_threads(threads)
        s = make_solver(spec, gpu, threads)
        set_inputs(s.net, inputs)
        weights = weights_of(s.net)
        model = torch_model(spec, weights, device)
        opt = torch_optimizer(model)
        tin = torch_inputs(inputs, device)
        mlp = NumpyMLP(weights, inputs["data"], inputs["label"], _mlp_decay(spec)) \
            if name == "mlp" and not gpu else None
        if gpu:
            def sync():
                cp.cuda.Device().synchronize()
                torch.cuda.synchronize()
        else:
            def sync():
                pass

        def torch_step():
            opt.zero_grad()
            loss, _ = model(tin)
            loss.backward()
            opt.step()
            return loss.item()

        runners = {"netspec": s.step_once, "torch": torch_step}
        if mlp is not None:
            runners["numpy"] = mlp.step
        first = {k: f() for k, f in runners.items()}
        sync()
        for _ in range(warmup - 1):
            last = {k: f() for k, f in runners.items()}
        times = {k: [] for k in runners}
        cpu = {k: [] for k in runners}     # CPU time of this thread: robust to other load at 1 thread
        for k, timed in alternation(list(runners), iters, block, settle):
            sync()
            c = time.thread_time()
            t = time.perf_counter()
            runners[k]()
            sync()
            if timed:
                times[k].append(time.perf_counter() - t)
                cpu[k].append(time.thread_time() - c)
        load_during = os.getloadavg()[0]   # 1-minute load at the end of the timed loop
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        q = {k: (np.percentile(v, 25) * 1e3, np.percentile(v, 75) * 1e3) for k, v in times.items()}
        cpu_med = {k: statistics.median(v) * 1e3 for k, v in cpu.items()}
        from netspec.tools.flops import MATMUL_TYPES, net_flops  # noqa: PLC0415
        macs = net_flops(s.net, MATMUL_TYPES) // 2
        mem_mib = {}
        if gpu:
            mem_mib = {"netspec": cp.get_default_memory_pool().total_bytes() / 2**20,
                       "torch": torch.cuda.max_memory_reserved() / 2**20}
        peak = gemm_peak(threads, gpu)
    if mem and not gpu:
        spec_path = os.path.join(tmpdir, f"{name}.json")
        Path(spec_path).write_text(json.dumps(spec))
        np.savez(spec_path.replace(".json", ".npz"), **{f"w:{k}": v for k, v in weights.items()},
                 **{f"x:{k}": v for k, v in inputs.items()})
        for k in runners:
            mem_mib[k] = memory_mib(k, spec_path, threads)
    batch = input_shapes(spec)["data"][0]
    return {"net": name, "batch": batch, "threads": threads, "ms": med, "iqr": q,
            "load": load_during, "cpu_ms": cpu_med,
            "flop": 6 * macs, "peak_gflops": peak, "mem": mem_mib,
            "first_loss": first, "loss_after_warmup": last if warmup > 1 else first,
            "iters": iters}


# -- the full LeNet run, estimated -------------------------------------------------------------
def lenet_run_estimate(threads: int, iters: int, warmup: int, block: int = 1,
                       settle: float = 0.0) -> dict:
    """ms per training iteration and per test pass (test_iter batches of 100, Accuracy on),
    for torch and netspec, and the 10,000-iteration run they imply (tests at 0, 500, …, 10000)."""
    import torch  # noqa: PLC0415
    from netspec.net import Net  # noqa: PLC0415
    from netspec.spec import parse_net  # noqa: PLC0415
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    spec = bench_net("lenet")
    tspec = bench_net("lenet", "TEST", batch=LENET_RUN["test_batch"])
    inputs, tinputs = synthetic_inputs(spec), synthetic_inputs(tspec, 1)
    out = {}
    with threadpool_limits(threads):
        torch.set_num_threads(threads)
        s = make_solver(spec, threads=threads)
        set_inputs(s.net, inputs)
        weights = weights_of(s.net)
        tnet = Net(parse_net(tspec, "lenet-test"), "TEST")
        tnet.share_with(s.net)
        set_inputs(tnet, tinputs)
        model = torch_model(spec, weights)
        tmodel = torch_model(tspec, weights)
        opt = torch_optimizer(model)
        tin, ttin = torch_inputs(inputs), torch_inputs(tinputs)

        def torch_step():
            opt.zero_grad()
            loss, _ = model(tin)
            loss.backward()
            opt.step()
            return loss.item()

        def torch_test_batch():
            with torch.no_grad():
                loss, blobs = tmodel(ttin, train=False)
                return loss.item(), blobs["accuracy"].item()

        def ns_test_batch():
            loss = tnet.forward()
            return loss, float(tnet.blobs["accuracy"].data)

        for _ in range(warmup):
            s.step_once(), torch_step(), ns_test_batch(), torch_test_batch()
        tt = {"netspec": [], "torch": []}
        tb = {"netspec": [], "torch": []}
        fns = {"netspec": (s.step_once, ns_test_batch), "torch": (torch_step, torch_test_batch)}
        for k, timed in alternation(list(fns), iters, block, settle):
            step, test = fns[k]
            t = time.perf_counter()
            step()
            if timed:
                tt[k].append(time.perf_counter() - t)
            t = time.perf_counter()
            test()
            if timed:
                tb[k].append(time.perf_counter() - t)
    n_tests = LENET_RUN["iterations"] // LENET_RUN["test_interval"] + 1
    for k in tt:
        it_ms = statistics.median(tt[k]) * 1e3
        pass_ms = statistics.median(tb[k]) * 1e3 * LENET_RUN["test_iter"]
        out[k] = {"iter_ms": it_ms, "test_pass_ms": pass_ms, "n_tests": n_tests,
                  "total_s": (LENET_RUN["iterations"] * it_ms + n_tests * pass_ms) / 1e3}
    return out


# -- profile -------------------------------------------------------------------------------------
def profile(names: list[str], threads: int, iters: int) -> str:
    """Per-layer forward/backward ms of netspec (``netspec time``'s timer), the solver's update
    and check, and torch's top operators over the same number of iterations."""
    import torch  # noqa: PLC0415
    from netspec.timing import time_net  # noqa: PLC0415
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    lines = []
    with threadpool_limits(threads):
        torch.set_num_threads(threads)
        for name in names:
            spec = bench_net(name)
            inputs = synthetic_inputs(spec)
            s = make_solver(spec, threads=threads)
            set_inputs(s.net, inputs)
            t = time_net(s.net, iters, warmup=5)   # accumulates diffs: time the update on a
            s = make_solver(spec, threads=threads)  # fresh solver (same seed, same weights)
            set_inputs(s.net, inputs)
            upd, chk, clr = [], [], []
            for _ in range(iters):
                s.net.forward_backward()
                a = time.perf_counter()
                s.apply_update()
                b = time.perf_counter()
                s._check_params()
                c = time.perf_counter()
                s.net.clear_param_diffs()
                d = time.perf_counter()
                upd.append(b - a), chk.append(c - b), clr.append(d - c)
            lines += [f"### {name} (netspec, {threads} thread(s), mean of {iters})", "",
                      "| layer | type | forward ms | backward ms |", "|---|---|---:|---:|"]
            for layer in s.net.layers:
                lines.append(f"| {layer.name} | {layer.type_name} | {t.forward_ms[layer.name]:.3f} "
                             f"| {t.backward_ms[layer.name]:.3f} |")
            um, cm, zm = (statistics.mean(v) * 1e3 for v in (upd, chk, clr))
            lines += [f"| *apply_update* | solver | | {um:.3f} |",
                      f"| *_check_params* | solver | | {cm:.3f} |",
                      f"| *clear_param_diffs* | solver | | {zm:.3f} |",
                      f"| **total** | | {t.total_forward_ms:.3f} | "
                      f"{t.total_backward_ms + um + cm + zm:.3f} |", ""]
            weights = weights_of(s.net)
            model = torch_model(spec, weights)
            opt = torch_optimizer(model)
            tin = torch_inputs(inputs)
            for _ in range(5):
                opt.zero_grad(); loss, _ = model(tin); loss.backward(); opt.step()  # noqa: E702
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                for _ in range(iters):
                    opt.zero_grad(); loss, _ = model(tin); loss.backward(); opt.step(); loss.item()  # noqa: E702
            ka = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]
            lines += [f"### {name} (torch, top operators by self CPU time, ms per iteration)", "",
                      "| operator | self ms/iter | calls/iter |", "|---|---:|---:|"]
            for e in ka:
                lines.append(f"| {e.key} | {e.self_cpu_time_total / 1e3 / iters:.3f} | "
                             f"{e.count / iters:.0f} |")
            lines.append("")
    return "\n".join(lines)


# -- report --------------------------------------------------------------------------------------
def _fmt_mem(v):
    return "—" if v is None else f"{v:.1f}"


def table(rows: list[dict], gpu: bool) -> str:
    head = ("| network | batch | threads | netspec ms | PyTorch ms | ratio | netspec GFLOP/s "
            "(% peak) | PyTorch GFLOP/s (% peak) | GEMM peak GFLOP/s | netspec MiB | PyTorch MiB |")
    out = [head, "|" + "---|" * 2 + "---:|" * 9]
    for r in rows:
        ms = r["ms"]
        g = {k: r["flop"] / (v / 1e3) / 1e9 for k, v in ms.items()}
        pk = r["peak_gflops"]
        out.append(f"| {r['net']} | {r['batch']} | {r['threads']} | {ms['netspec']:.2f} | "
                   f"{ms['torch']:.2f} | {ms['netspec'] / ms['torch']:.2f} | "
                   f"{g['netspec']:.1f} ({100 * g['netspec'] / pk:.0f} %) | "
                   f"{g['torch']:.1f} ({100 * g['torch'] / pk:.0f} %) | {pk:.0f} | "
                   f"{_fmt_mem(r['mem'].get('netspec'))} | {_fmt_mem(r['mem'].get('torch'))} |")
        if "numpy" in ms:
            out.append(f"| {r['net']} vs hand NumPy | {r['batch']} | {r['threads']} | "
                       f"{ms['netspec']:.2f} | NumPy {ms['numpy']:.2f} | "
                       f"{ms['netspec'] / ms['numpy']:.2f} | | NumPy {g['numpy']:.1f} "
                       f"({100 * g['numpy'] / pk:.0f} %) | | | NumPy {_fmt_mem(r['mem'].get('numpy'))} |")
    return "\n".join(out)


def cpu_col(r: dict) -> str:
    """Median CPU time of the calling thread per iteration: at 1 thread all the work runs on
    it, so this is the iteration's cost without the time other processes took the core."""
    if r["threads"] != 1:
        return "— (work on other threads)"
    c = r["cpu_ms"]
    extra = f"; NumPy {c['numpy']:.2f}" if "numpy" in c else ""
    return f"{c['netspec']:.2f} / {c['torch']:.2f} ({c['netspec'] / c['torch']:.2f}){extra}"


def checks(rows: list[dict]) -> str:
    out = ["| network | threads | first loss netspec / torch | loss after warm-up netspec / torch "
           "| IQR ms netspec | IQR ms torch | thread CPU ms netspec / torch (ratio) "
           "| 1-min load after timing |",
           "|---|---:|---|---|---|---|---|---:|"]
    for r in rows:
        f, la, q = r["first_loss"], r["loss_after_warmup"], r["iqr"]
        out.append(f"| {r['net']} | {r['threads']} | {f['netspec']:.6f} / {f['torch']:.6f} | "
                   f"{la['netspec']:.6f} / {la['torch']:.6f} | "
                   f"{q['netspec'][0]:.2f}–{q['netspec'][1]:.2f} | {q['torch'][0]:.2f}–{q['torch'][1]:.2f} | {cpu_col(r)} | {r['load']:.2f} |")
    return "\n".join(out)


def environment(gpu: bool) -> str:
    import torch  # noqa: PLC0415

    load = os.getloadavg()
    env = {k: os.environ.get(k, "unset") for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                   "OMP_NUM_THREADS")}
    lines = [f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
             f"load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}",
             f"- Python {platform.python_version()}, NumPy {np.__version__}, torch {torch.__version__}",
             f"- NumPy BLAS: {kernel_line()}",
             "- env: " + ", ".join(f"{k}={v}" for k, v in env.items())]
    if gpu:
        import cupy as cp  # noqa: PLC0415

        lines.append(f"- GPU: {torch.cuda.get_device_name()}, CuPy {cp.__version__}, "
                     "TF32 off in torch (cuDNN and matmul) to match CuPy's float32")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=200, help="timed iterations per framework")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--block", type=int, default=1,
                    help="timed steps per framework before switching (1: alternate every step)")
    ap.add_argument("--settle", type=float, default=0.2,
                    help="seconds of pause before each block when --block > 1")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--nets", default="lenet,cifar10_quick,mlp")
    ap.add_argument("--gpu", action="store_true", help="CuPy vs torch CUDA")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    ap.add_argument("--no-lenet-run", action="store_true", help="skip the full-LeNet-run estimate")
    ap.add_argument("--profile", action="store_true", help="print per-layer profiles instead")
    ap.add_argument("--out", help="also write the report to this Markdown file")
    ap.add_argument("--_mem-child", dest="mem_child", help=argparse.SUPPRESS)
    ap.add_argument("--_spec", dest="spec", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    threads = [int(t) for t in a.threads.split(",")]
    if a.mem_child:
        memory_child(a.mem_child, a.spec, threads[0])
        return 0
    names = [n.strip() for n in a.nets.split(",") if n.strip()]
    for n in names:
        if n not in NETS:
            ap.error(f"unknown net {n!r}; choose from {', '.join(NETS)}")
    if any(os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")):
        print("warning: OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE are set and pin an older OpenBLAS "
              "kernel; rerun with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`", file=sys.stderr)
    if a.gpu:
        import torch  # noqa: PLC0415

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
    report = ["# netspec vs PyTorch, one training iteration", "", environment(a.gpu), ""]
    print("\n".join(report), flush=True)
    if a.profile:
        text = profile(names, threads[0], a.iterations)
        print(text)
        report.append(text)
    else:
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for n in names:
                for t in threads:
                    r = bench_one(n, t, a.iterations, a.warmup, a.gpu, not a.no_memory, tmp,
                                  a.block, a.settle)
                    rows.append(r)
                    print(f"  {n} threads={t}: netspec {r['ms']['netspec']:.2f} ms, "
                          f"torch {r['ms']['torch']:.2f} ms"
                          + (f", numpy {r['ms']['numpy']:.2f} ms" if "numpy" in r["ms"] else ""),
                          file=sys.stderr, flush=True)
        tbl = table(rows, a.gpu)
        sched = ("the frameworks alternating every iteration" if a.block <= 1 else
                 f"the frameworks alternating in blocks of {a.block} (each after a {a.settle:g} s "
                 "pause and one untimed iteration)")
        report += [f"Median ms per training iteration of {a.iterations} (after {a.warmup} warm-up), "
                   f"{sched}, "
                   f"{'GPU' if a.gpu else 'CPU'}, float32. GFLOP/s = 6 × forward multiply-adds of "
                   "conv/IP layers / time; peak = NumPy 1024² float32 matmul at the same threads"
                   + (" (CuPy 4096² on GPU)" if a.gpu else "") + ". MiB = peak memory of a "
                   + ("CuPy pool / torch reserved (GPU)" if a.gpu else
                      "fresh subprocess beyond its imports (VmHWM − VmRSS − growth of "
                      "file-backed pages)") + ".", "", tbl, "",
                   "Checks (same weights, same batch, same update):", "", checks(rows), ""]
        print(tbl + "\n\n" + checks(rows), flush=True)
        if "lenet" in names and not a.gpu and not a.no_lenet_run:
            t = threads[0]
            est = lenet_run_estimate(t, max(a.iterations // 2, 50), 5, a.block, a.settle)
            lines = [f"Full LeNet solver run (10,000 iterations, a test pass of 100 × batch 100 every "
                     f"500 and at 0 and 10,000 = {est['torch']['n_tests']} passes), **estimated** from "
                     f"measured medians at {t} thread(s), not run; Input layers (no data loading):", "",
                     "| framework | ms / iteration | ms / test pass | estimated run s |",
                     "|---|---:|---:|---:|"]
            for k in ("netspec", "torch"):
                e = est[k]
                lines.append(f"| {k} | {e['iter_ms']:.2f} | {e['test_pass_ms']:.0f} | {e['total_s']:.0f} |")
            print("\n".join(lines), flush=True)
            report += lines + [""]
    report.append(f"Load average at end: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text("\n".join(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
