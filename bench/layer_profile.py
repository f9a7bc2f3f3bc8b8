"""``bench.py --profile``: where each framework's iteration goes, per layer (netspec, with
``netspec time``'s timer, plus the solver's update, check and clear) and per operator (torch's
profiler)."""

from __future__ import annotations

import statistics
import time

from threadpoolctl import threadpool_limits

from netspec.tools.timing import time_net

from bench.nets import bench_net, make_solver, set_inputs, synthetic_inputs, weights_of
from bench.torch_model import torch_inputs, torch_model, torch_optimizer


def profile(names: list[str], threads: int, iters: int) -> str:
    """Per-layer forward/backward ms of netspec (``netspec time``'s timer), the solver's update
    and check, and torch's top operators over the same number of iterations."""
    # torch is optional (the `compare` extra): loaded when used, not when bench modules are imported
    import torch  # noqa: PLC0415

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
