"""Per-layer shapes, parameters, multipliers, FLOPs and memory of a net (``netspec summary``).

FLOPs count one forward pass of one batch (rules in ``netspec/tools/flops.py``).
Memory: activations (the data of every blob; split tops alias their bottom), activation
gradients (the diff of every blob backward reaches; TRAIN only), parameters and parameter
gradients (TRAIN, learnable blobs only), at the net's dtype (float32: 4 bytes). The solver's
history (momentum: 1x, Adam: 2x the learnable parameters) comes on top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from rich.console import Console
from rich.table import Table

from ..backend import get_backend
from ..net import Net
from ..spec.inputs import stand_in_inputs
from ..solver_files import load_any_net
from .flops import layer_flops


def summarize(net) -> dict:
    """Rows per layer and totals (FLOPs, parameters, bytes) of a built Net."""
    itemsize = None
    rows = []
    counted: set[str] = set()       # blobs whose data is counted (in place: once)
    seen_params: set[int] = set()
    for i, (layer, d, bottoms, tops) in enumerate(zip(net.layers, net.defs, net.bottoms, net.tops)):
        if itemsize is None and tops:
            itemsize = tops[0].data.dtype.itemsize
        act = 0
        for t in tops:
            if t.name in counted:
                continue
            counted.add(t.name)
            if layer.type_name == "Split" and any(t.data is b.data for b in bottoms):
                continue  # aliases its bottom
            act += t.count * t.data.dtype.itemsize
        params = []
        for j, p in enumerate(layer.blobs):
            params.append({"blob": f"{layer.name}/{j}", "shape": list(p.shape), "count": p.count,
                           "lr_mult": p.lr_mult, "decay_mult": p.decay_mult,
                           "shared": id(p) in seen_params})
            seen_params.add(id(p))
        rows.append({
            "name": layer.name, "type": layer.type_name,
            "tops": [{"name": t.name, "shape": list(t.shape)} for t in tops],
            "params": params, "param_count": sum(p["count"] for p in params),
            "flops": layer_flops(layer, [b.shape for b in bottoms], [t.shape for t in tops]),
            "activation_bytes": act,
        })
    itemsize = itemsize or 4
    train = net.phase == "TRAIN"
    grad_blobs: dict[str, int] = {}
    if train:
        for i, (tops, bottoms) in enumerate(zip(net.tops, net.bottoms)):
            if net.layer_backward[i]:
                for t in tops:
                    grad_blobs[t.name] = t.count
                for b, prop in zip(bottoms, net.propagate[i]):
                    if prop:
                        grad_blobs[b.name] = b.count
    param_count = sum(p.count for p in net.params)
    learnable = sum(p.count for p in net.params if p.lr_mult != 0)
    batch = None
    for row in rows:
        if row["type"] in ("Data", "Input") and row["tops"] and row["tops"][0]["shape"]:
            batch = row["tops"][0]["shape"][0]
            break
    totals = {
        "flops": sum(r["flops"] for r in rows),
        "params": param_count,
        "learnable_params": learnable,
        "activation_bytes": sum(r["activation_bytes"] for r in rows),
        "activation_grad_bytes": sum(grad_blobs.values()) * itemsize,
        "param_bytes": param_count * itemsize,
        "param_grad_bytes": learnable * itemsize if train else 0,
        "batch": batch,
        "itemsize": itemsize,
    }
    totals["total_bytes"] = (totals["activation_bytes"] + totals["activation_grad_bytes"]
                             + totals["param_bytes"] + totals["param_grad_bytes"])
    return {"name": net.name, "phase": net.phase, "layers": rows, "totals": totals}


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def human_count(n: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def _fmt_mult(x: float) -> str:
    return f"{x:g}"


def print_summary(info: dict, console: Console) -> None:
    """The notes on stand-in inputs, the summary as a table, then the FLOPs and memory totals."""
    for note in info.get("notes", []):
        console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    t = info["totals"]
    table = Table(title=f"{info['name'] or 'net'} — {info['phase']}", show_footer=True)
    table.add_column("layer", footer="total")
    table.add_column("type")
    table.add_column("top shape", no_wrap=True)
    table.add_column("params", justify="right", footer=f"{t['params']:,}", no_wrap=True)
    table.add_column("lr_mult / decay_mult", no_wrap=True)
    table.add_column("FLOPs", justify="right", footer=f"{t['flops']:,}", no_wrap=True)
    table.add_column("activations", justify="right", footer=human_bytes(t["activation_bytes"]),
                     no_wrap=True)
    for r in info["layers"]:
        tops = "\n".join(f"{x['name']} {tuple(x['shape'])}" for x in r["tops"])
        mults = "\n".join(f"{p['blob'].split('/')[-1]}: {_fmt_mult(p['lr_mult'])} / "
                          f"{_fmt_mult(p['decay_mult'])}" + (" (shared)" if p["shared"] else "")
                          for p in r["params"])
        table.add_row(r["name"], r["type"], tops, f"{r['param_count']:,}" if r["param_count"] else "",
                      mults, f"{r['flops']:,}" if r["flops"] else "",
                      human_bytes(r["activation_bytes"]) if r["activation_bytes"] else "")
    console.print(table)
    per = ""
    if t["batch"]:
        per = f", {human_count(t['flops'] / t['batch'])}FLOPs per example (batch {t['batch']})"
    console.print(f"Forward: {t['flops']:,} FLOPs ({human_count(t['flops'])}FLOPs) per batch{per}."
                  + (" A training step (forward + backward) is about 3x that." if info["phase"] == "TRAIN" else ""),
                  highlight=False)
    parts = [f"activations {human_bytes(t['activation_bytes'])}"]
    if info["phase"] == "TRAIN":
        parts.append(f"activation gradients {human_bytes(t['activation_grad_bytes'])}")
    parts.append(f"parameters {human_bytes(t['param_bytes'])} ({t['params']:,})")
    if info["phase"] == "TRAIN":
        parts.append(f"parameter gradients {human_bytes(t['param_grad_bytes'])}")
    console.print(f"Memory ({t['itemsize'] * 8}-bit floats): " + " + ".join(parts)
                  + f" = {human_bytes(t['total_bytes'])}"
                  + (" (plus the solver's history: 1x learnable parameters for momentum, 2x for Adam)."
                     if info["phase"] == "TRAIN" else "."), highlight=False)


def summarize_file(path: str | Path, phase: str = "TRAIN", sets: Sequence[str] = (),
                   input_shapes: dict[str, tuple[int, ...]] | None = None,
                   no_data: bool = False) -> dict:
    """``summarize`` of the net of a net file, or of a solver file's train net, built in
    ``phase`` on the CPU with the overrides ``sets``; with ``input_shapes`` or ``no_data``,
    Input layers stand in for its data layers (``stand_in_inputs``) and ``notes`` says how."""
    param, notes = stand_in_inputs(load_any_net(path, sets), input_shapes, no_data)
    info = summarize(Net(param, phase, get_backend(False)))
    info["notes"] = notes
    return info
