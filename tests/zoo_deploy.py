"""The zoo's deploy nets as runnable netspec nets with random, well-scaled weights: the input
of the differential tests against other runtimes (OpenCV dnn, ONNX Runtime).

``deploy_net(name)`` converts ``tests/golden/caffe/zoo/<name>`` with its data layers replaced by
Input layers of batch 1 (shapes from real Caffe's record in ``golden/caffe/shapes``) and fills
every parameter so activations stay of order one through deep nets (``fill_well_scaled``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.zoo import random_weights, set_weights
from netspec.backend import Backend
from netspec.caffe import pb2
from netspec.caffe import prototxt as ptx
from netspec.caffe.port import net_yaml
from netspec.caffe.upgrade import upgrade_net
from netspec.net import Net
from netspec.spec import loads_net

G = Path(__file__).parent / "golden" / "caffe"
ZOO, SHAPES = G / "zoo", G / "shapes"
F32 = Backend(np, np.float32)
DATA_LAYERS = {"Data", "ImageData", "WindowData", "HDF5Data", "MemoryData"}
#: deploy nets whose forward takes seconds (fcn8s: a 500x500 input)
HEAVY_DEPLOY = ("fcn8s",)


def zoo_nets() -> list[str]:
    """Every net (not solver) file of the zoo."""
    return sorted(p.name for p in ZOO.glob("*.prototxt")
                  if ptx.kind_of(p.read_text()) == "net")


def deploy_names() -> list[str]:
    return [n for n in zoo_nets() if "deploy" in n]


def substitute_inputs(net, blobs: dict):
    """Replace data layers by Input layers with the tops' shapes (as the golden shapes did)."""
    up, _ = upgrade_net(net)
    for lp in up.layer:
        if lp.type in DATA_LAYERS or (lp.type == "Python" and not len(lp.bottom)):
            keep = pb2().LayerParameter(name=lp.name, type="Input", top=list(lp.top))
            keep.include.extend(lp.include)
            keep.exclude.extend(lp.exclude)
            for t in lp.top:
                keep.input_param.shape.add().dim.extend(blobs.get(t, [1]))
            lp.CopyFrom(keep)
    return up


def deploy_yaml(name: str, batch: int = 1) -> tuple[str, str]:
    """(net YAML text, phase) of the zoo deploy net ``name`` with Input layers of ``batch``."""
    golden = json.loads((SHAPES / f"{name}.json").read_text())
    phase_key, gp = next(iter(golden["phases"].items()))
    blobs = {k: [batch] + v[1:] for k, v in gp["blobs"].items()}
    text = net_yaml(substitute_inputs(ptx.parse_net((ZOO / name).read_text(), name), blobs), name)[0]
    return text, phase_key.partition("/")[0]


def fill_well_scaled(net: Net, seed: int = 0, gain: float = 2.0) -> None:
    """Random parameters that keep activations of order one (``bench.zoo.random_weights``)."""
    set_weights(net, random_weights(net, seed, gain))


def deploy_net(name: str, batch: int = 1, backend: Backend = F32, seed: int = 0) -> tuple[Net, str]:
    """(the net with well-scaled random weights and uniform [0, 1) inputs, its YAML text)."""
    text, phase = deploy_yaml(name, batch)
    net = Net(loads_net(text, name), phase, backend, np.random.default_rng(seed))
    fill_well_scaled(net, seed)
    rng = np.random.default_rng(seed + 1)
    for i, layer in enumerate(net.layers):
        if layer.type_name == "Input":
            for blob in net.tops[i]:
                blob.data[...] = rng.random(blob.shape)
    return net, text


def without_last_layer(text: str, type_name: str) -> str:
    """The prototxt text up to the layer of type ``type_name``, which must be the last one (a
    detection layer another runtime lacks)."""
    at = text.index(f'type: "{type_name}"')
    start = text.rindex("layer {", 0, at)
    assert "layer {" not in text[at:], "the detection layer is not the last one"
    return text[:start]


def detection_rows(top: np.ndarray) -> np.ndarray:
    """A DetectionOutput top (1, 1, R, 7) as its rows in one order for comparing runtimes
    (OpenCV orders them by score, SSD by image and label): by image and label, then score
    rounded to 1e-4 (a float-level score difference cannot swap two rows), then the box."""
    return np.array(sorted(top[0, 0].tolist(), key=lambda r: (r[:2], round(r[2], 4), r[3:])))
