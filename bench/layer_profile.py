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


def conv_kind(layer) -> str:
    """A Convolution's family for the profile: depthwise (group = channels = num_output), 1x1
    (stride 1, pad 0), grouped, or k×k."""
    if layer.type_name != "Convolution":
        return layer.type_name
    M, Cg = layer.blobs[0].shape[:2]
    g = layer.p.group
    if g > 1 and Cg == 1 and M == g:
        return "Convolution depthwise"
    if g > 1:
        return "Convolution grouped"
    if (layer.kh, layer.kw, layer.stride_h, layer.stride_w, layer.pad_h, layer.pad_w) == (1, 1, 1, 1, 0, 0):
        return "Convolution 1x1"
    return f"Convolution {layer.kh}x{layer.kw}"


def forward_profile(name: str, batch: int, threads: int, iters: int,
                    tuning: dict | None = None) -> str:
    """``bench/big_nets.py``'s deploy net ``name``: forward ms per layer family (``netspec
    time``'s per-layer timer, summed) and the ten slowest layers; ``tuning``: ConvTuning
    fields to build it with."""
    from bench.big_nets import conv_tuning  # noqa: PLC0415  (bench.zoo: protobuf)
    from bench.zoo import inference_net, zoo_inputs, zoo_spec  # noqa: PLC0415

    with threadpool_limits(threads), conv_tuning(tuning):
        spec = zoo_spec(name, batch)
        net, _ = inference_net(spec, threads)
        set_inputs(net, zoo_inputs(spec))
        t = time_net(net, iters, warmup=2)
    fam: dict[str, list[float]] = {}
    for layer in net.layers:
        fam.setdefault(conv_kind(layer), []).append(t.forward_ms[layer.name])
    lines = [f"### {name}, batch {batch}, {threads} thread(s), forward, mean of {iters}: "
             f"{t.total_forward_ms:.1f} ms" + (f" (ConvTuning {tuning})" if tuning else ""), "", "| family | layers | ms | share |",
             "|---|---:|---:|---:|"]
    for k, v in sorted(fam.items(), key=lambda kv: -sum(kv[1])):
        lines.append(f"| {k} | {len(v)} | {sum(v):.2f} | {sum(v) / t.total_forward_ms:.0%} |")
    lines += ["", "| slowest layers | type | ms |", "|---|---|---:|"]
    for layer in sorted(net.layers, key=lambda L: -t.forward_ms[L.name])[:10]:
        lines.append(f"| {layer.name} | {conv_kind(layer)} | {t.forward_ms[layer.name]:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    # python -m bench.layer_profile NET[,NET] BATCH THREADS ITERS [FIELD=VALUE,...]
    import sys

    from bench.big_nets import parse_baseline

    for n in sys.argv[1].split(","):
        print(forward_profile(n, *(int(v) for v in sys.argv[2:5]),
                              parse_baseline(sys.argv[5] if len(sys.argv) > 5 else None)))
