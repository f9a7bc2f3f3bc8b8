"""Timing: the order the frameworks' steps run in (``alternation``), one network at one thread
count (``bench_one``), the full LeNet run estimated from measured steps (``lenet_run_estimate``)
and the GEMM peak the GFLOP/s are set against (``gemm_peak``)."""

from __future__ import annotations

import gc
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from netspec.net import Net
from netspec.spec import parse_net
from netspec.tools.flops import MATMUL_TYPES, net_flops

from bench.memory import memory_mib
from bench.nets import bench_net, input_shapes, make_solver, set_inputs, synthetic_inputs, weights_of
from bench.shared import LENET_RUN
from bench.numpy_mlp import NumpyMLP, mlp_decay
from bench.torch_model import torch_inputs, torch_model, torch_optimizer, torch_train_step


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
    """Net ``name`` at ``threads`` threads: median, IQR and thread CPU ms per step of each
    framework, the losses that check the translation, FLOPs, the GEMM peak and peak memory."""
    # torch is optional (the `compare` extra): loaded when used, not when bench modules are imported
    import torch  # noqa: PLC0415

    device = "cuda" if gpu else "cpu"
    if gpu:   # each allocator's high-water mark from here on holds this net alone
        # CuPy: the optional `gpu` extra, needed on --gpu only
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
        mlp = NumpyMLP(weights, inputs["data"], inputs["label"], mlp_decay(spec)) \
            if name == "mlp" and not gpu else None
        if gpu:
            def sync():
                cp.cuda.Device().synchronize()
                torch.cuda.synchronize()
        else:
            def sync():
                pass

        torch_step = torch_train_step(model, opt, tin)

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


def lenet_run_estimate(threads: int, iters: int, warmup: int, block: int = 1,
                       settle: float = 0.0) -> dict:
    """ms per training iteration and per test pass (test_iter batches of 100, Accuracy on),
    for torch and netspec, and the 10,000-iteration run they imply (tests at 0, 500, …, 10000)."""
    # torch is optional (the `compare` extra): loaded when used, not when bench modules are imported
    import torch  # noqa: PLC0415

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

        torch_step = torch_train_step(model, opt, tin)

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


def gemm_peak(threads: int, gpu: bool = False, n: int = 1024, reps: int = 30) -> float:
    """GFLOP/s of an n×n float32 matmul (median of ``reps``)."""
    if gpu:
        # CuPy: the optional `gpu` extra, needed on --gpu only
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
