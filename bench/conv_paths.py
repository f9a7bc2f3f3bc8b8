"""Forward micro-benchmark of convolution code paths on the shapes of the big nets (1 thread,
float32, paths alternating, medians; ratios to the column path are what count on a shared
machine).

* ``winograd``: ``conv_winograd.WinogradConv`` against ``ConvColumns`` on ResNet's, GoogLeNet's
  and SqueezeNet's 3×3 stride-1 layers;
* ``depthwise``: MobileNet's nine depthwise layers, ``ConvColumns`` (the path inference
  uses above 100 output positions) against per-tap multiply-adds over blocks of NCHW planes
  kept in cache (``plane_taps``, tried in issue 19's second round and not kept);
* ``compiled``: MobileNet's depthwise layers, the NumPy path netspec takes without numba
  (``conv_direct.DepthwiseConv``: columns, plane taps or NHWC taps by shape) against the
  compiled kernels (``CompiledDepthwiseConv``, the fast extra), forward (with bias) and
  backward (dx and dW).

    python -m bench.conv_paths --batch 1,16 --out bench/results/conv_paths.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netspec.backend import Backend  # noqa: E402
from netspec.layers.conv_columns import ConvColumns  # noqa: E402
from netspec.layers.conv_winograd import WinogradConv  # noqa: E402

from bench.report import finish, load_average  # noqa: E402

#: (C, M, H): ResNet-50's four stages, GoogLeNet's conv2 and inception 3a/4a, SqueezeNet's fires
WINOGRAD_SHAPES = [(64, 64, 56), (128, 128, 28), (256, 256, 14), (512, 512, 7), (64, 192, 56),
                   (96, 128, 28), (128, 192, 14), (16, 64, 55), (32, 128, 27), (64, 256, 13)]
#: (C, H, stride): MobileNet v1's depthwise layers
DEPTHWISE_SHAPES = [(32, 112, 1), (64, 112, 2), (128, 56, 1), (128, 56, 2), (256, 28, 1),
                    (256, 28, 2), (512, 14, 1), (512, 14, 2), (1024, 7, 1)]


def plane_taps(x, w, y, stride, block_bytes, cache):
    """Depthwise 3×3 pad 1: the N·C planes in blocks of about ``block_bytes``, each block
    copied into a zero-bordered buffer and y = Σ_taps w·x_tap accumulated in its top rows."""
    N, C, H, W = x.shape
    Ho, Wo = y.shape[2:]
    P = N * C
    xf, yf = x.reshape(P, H, W), y.reshape(P, Ho, Wo)
    wt = np.tile(w.reshape(C, 9), (N, 1)).T[:, :, None, None]     # (9, P, 1, 1)
    b = max(1, block_bytes // ((H + 2) * (W + 2) + 2 * Ho * Wo) // x.itemsize)
    if b not in cache:
        cache[b] = (np.zeros((b, H + 2, W + 2), x.dtype), np.empty((b, Ho, Wo), x.dtype))
    pbuf, tmp = cache[b]
    for p0 in range(0, P, b):
        n = min(b, P - p0)
        pb, acc, t = pbuf[:n], yf[p0:p0 + n], tmp[:n]
        pb[:, 1:1 + H, 1:1 + W] = xf[p0:p0 + n]
        for k in range(9):
            i, j = divmod(k, 3)
            v = pb[:, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride]
            if k == 0:
                np.multiply(v, wt[0, p0:p0 + n], out=acc)
            else:
                np.multiply(v, wt[k, p0:p0 + n], out=t)
                acc += t


def _alternate(fns, steps):
    times = {k: [] for k in fns}
    for _ in range(steps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) * 1e3 for k, v in times.items()}


def winograd_rows(N, steps, rng):
    be = Backend(np, np.float32, 1)
    for C, M, H in WINOGRAD_SHAPES:
        x = rng.standard_normal((N, C, H, H), dtype=np.float32)
        w = rng.standard_normal((M, C, 3, 3), dtype=np.float32)
        y0, y1 = np.empty((N, M, H, H), np.float32), np.empty((N, M, H, H), np.float32)
        cols = ConvColumns(be, N, C, H, H, M, H, H, 1, (3, 3), (1, 1), (1, 1), (1, 1))
        wino = WinogradConv(be, N, C, H, H, M, H, H, (1, 1))
        ms = _alternate({"cols": lambda: cols.forward(x, w, y0),
                         "wino": lambda: wino.forward(x, w, y1)}, steps)
        err = np.abs(y1 - y0).max() / np.abs(y0).max()
        yield (f"| {C}→{M} at {H}×{H} | {N} | {ms['cols']:.2f} | {ms['wino']:.2f} | "
               f"**{ms['wino'] / ms['cols']:.2f}** | {err:.1e} |")


def depthwise_rows(N, steps, rng, blocks=(1 << 19, 1 << 20, 1 << 21)):
    be = Backend(np, np.float32, 1)
    for C, H, s in DEPTHWISE_SHAPES:
        Ho = (H - 1) // s + 1
        x = rng.standard_normal((N, C, H, H), dtype=np.float32)
        w = rng.standard_normal((C, 1, 3, 3), dtype=np.float32)
        y0, y1 = np.empty((N, C, Ho, Ho), np.float32), np.empty((N, C, Ho, Ho), np.float32)
        cols = ConvColumns(be, N, C, H, H, C, Ho, Ho, C, (3, 3), (1, 1), (s, s), (1, 1))
        fns = {"cols": lambda: cols.forward(x, w, y0)}
        for bb in blocks:
            cache: dict = {}
            fns[bb] = (lambda bb=bb, cache=cache: plane_taps(x, w, y1, s, bb, cache))
        ms = _alternate(fns, steps)
        err = np.abs(y1 - y0).max() / np.abs(y0).max()
        yield (f"| {C} at {H}×{H}, stride {s} | {N} | {ms['cols']:.2f} | "
               + " | ".join(f"**{ms[bb] / ms['cols']:.2f}**" for bb in blocks) + f" | {err:.1e} |")


def compiled_rows(N, steps, rng):
    """MobileNet's depthwise layers: NumPy's path ÷ the compiled kernels, forward and backward."""
    from netspec.layers.conv_direct import (CompiledDepthwiseConv, DepthwiseConv,  # noqa: PLC0415
                                            compiled_kernels)

    be = Backend(np, np.float32, 1)
    for C, H, s in DEPTHWISE_SHAPES:
        Ho = (H - 1) // s + 1
        x = rng.standard_normal((N, C, H, H), dtype=np.float32)
        w = rng.standard_normal((C, 1, 3, 3), dtype=np.float32)
        b = rng.standard_normal(C, dtype=np.float32)
        dy = rng.standard_normal((N, C, Ho, Ho), dtype=np.float32)
        y0, y1 = np.empty_like(dy), np.empty_like(dy)
        dx0, dx1 = np.empty_like(x), np.empty_like(x)
        ref = DepthwiseConv(be, N, C, H, H, Ho, Ho, (3, 3), (1, 1), (s, s), (1, 1))
        fast = CompiledDepthwiseConv(be, compiled_kernels(), N, C, H, H, C, Ho, Ho, (3, 3),
                                     (1, 1), (s, s), (1, 1), numpy_backward=False)
        ms = _alternate({"f0": lambda: ref.forward(x, w, y0, b),
                         "f1": lambda: fast.forward(x, w, y1, b),
                         "b0": lambda: ref.backward(x, dy, w, dx0),
                         "b1": lambda: fast.backward(x, dy, w, dx1)}, steps)
        err = max(np.abs(y1 - y0).max() / np.abs(y0).max(),
                  np.abs(dx1 - dx0).max() / np.abs(dx0).max())
        yield (f"| {C} at {H}×{H}, stride {s} | {N} | {ms['f0']:.3f} | {ms['f1']:.3f} | "
               f"**{ms['f1'] / ms['f0']:.2f}** | {ms['b0']:.3f} | {ms['b1']:.3f} | "
               f"**{ms['b1'] / ms['b0']:.2f}** | {err:.1e} |")


#: run in a child process: numba's import, then each kernel's first call per dtype (a
#: compilation with an empty cache, a load from the disk cache otherwise), seconds
_FIRST_CALLS = """
import time, numpy as np
t0 = time.perf_counter()
from netspec.layers import conv_compiled as cc
out = ["import %.2f" % (time.perf_counter() - t0)]
for dt in (np.float32, np.float64):
    x, w, y = np.ones((1, 2, 5, 5), dt), np.ones((2, 3, 3), dt), np.empty((1, 2, 5, 5), dt)
    e, dwt, dx = np.empty(0, dt), np.zeros((2, 3, 3)), np.empty((1, 2, 5, 5), dt)
    t = [time.perf_counter()]
    cc.depthwise_forward(x, w, y, 1, 1, 1, 1, 1, 1, 1, e, e, False, 0, 1, 0, 2)
    t.append(time.perf_counter())
    cc.depthwise_backward(x, y, w, dx, dwt, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 2)
    t.append(time.perf_counter())
    cc.affine_relu(y.reshape(2, 25), 2, e, e, True, 0, 2)
    t.append(time.perf_counter())
    out.append("%s forward %.2f backward %.2f epilogue %.2f"
               % (dt.__name__, t[1] - t[0], t[2] - t[1], t[3] - t[2]))
print("; ".join(out))
"""


def compile_seconds() -> list[str]:
    """The compiled kernels' first calls in fresh processes: with an empty numba cache
    (compilation), then with the cache it left (what every later process pays)."""
    import subprocess  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
        for label in ("empty cache (compiles)", "cached"):
            r = subprocess.run([sys.executable, "-c", _FIRST_CALLS], env=env, check=True,
                               capture_output=True, text=True)
            rows.append(f"* {label}, seconds: {r.stdout.strip()}")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", default="1,16")
    ap.add_argument("--steps", type=int, default=9)
    ap.add_argument("--only", choices=["winograd", "depthwise", "compiled"])
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    lines = [f"# Convolution paths, forward, float32, 1 thread (median of {a.steps} alternating)",
             "", f"load average at start {load_average()}", ""]
    if a.only == "compiled":
        lines += ["Compiled kernels' first calls, fresh processes:", "", *compile_seconds()]
        print("\n".join(lines), flush=True)
    def section(header: str, rows) -> None:
        """A table: its header and rule, then each row as it is measured (printed as it goes)."""
        lines.extend(["", header, "|" + "---|" * (header.count("|") - 1)])
        print("\n".join(lines[-3:]), flush=True)
        for row in rows:
            lines.append(row)
            print(row, flush=True)

    with threadpool_limits(1):
        for N in (int(b) for b in a.batch.split(",")):
            steps = a.steps if N == 1 else max(3, a.steps // 3)
            if a.only not in ("depthwise", "compiled"):
                section("| 3×3 stride 1 | batch | columns ms | Winograd ms | ÷ columns "
                        "| max rel diff |", winograd_rows(N, steps, rng))
            if a.only == "compiled":
                section("| depthwise 3×3 | batch | NumPy forward ms | compiled ms | ÷ NumPy | "
                        "NumPy backward ms | compiled ms | ÷ NumPy | max rel diff |",
                        compiled_rows(N, steps, rng))
                continue
            if a.only != "winograd":
                section("| depthwise 3×3 | batch | columns ms | plane taps 512 KiB ÷ columns | "
                        "1 MiB | 2 MiB | max rel diff |", depthwise_rows(N, steps, rng))
    finish(lines + [""], a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
