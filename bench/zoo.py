"""The big nets of ``bench/big_nets.py``: deploy nets of ``../shared/caffe-zoo/`` (converted from
their prototxt as ``netspec convert`` does, the legacy input header as an Input layer) and the
project's own MobileNet v1 YAML, at any batch, for inference (TEST) or training (TRAIN: the
final Softmax becomes a SoftmaxWithLoss against an Input ``label``, BatchNorm uses batch
statistics), with seeded random weights (the deploy files carry no fillers)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from netspec.backend import get_backend
from netspec.net import Net
from netspec.spec import parse_net
from netspec.spec.yaml_lines import load_yaml

from bench.nets import input_shapes
from bench.shared import as_list

ROOT = Path(__file__).resolve().parents[1]
ZOO_DIR = ROOT.parent / "shared" / "caffe-zoo"
if not ZOO_DIR.is_dir():                      # a worktree beside the main checkout
    ZOO_DIR = Path("/work/shared/caffe-zoo")

#: bench name -> deploy file (.prototxt from the zoo, or a netspec YAML)
ZOO = {
    "resnet50": "KaimingHe__deep-residual-networks__prototxt__ResNet-50-deploy.prototxt",
    "resnet101": "KaimingHe__deep-residual-networks__prototxt__ResNet-101-deploy.prototxt",
    "googlenet": "BVLC__caffe__models__bvlc_googlenet__deploy.prototxt",
    "alexnet": "BVLC__caffe__models__bvlc_alexnet__deploy.prototxt",
    "caffenet": "BVLC__caffe__models__bvlc_reference_caffenet__deploy.prototxt",
    "squeezenet10": "DeepScale__SqueezeNet__SqueezeNet_v1.0__deploy.prototxt",
    "squeezenet11": "DeepScale__SqueezeNet__SqueezeNet_v1.1__deploy.prototxt",
    "mobilenet": str(ROOT / "models" / "mobilenet_v1.yaml"),
}


def zoo_path(name: str) -> Path:
    p = Path(ZOO[name])
    return p if p.is_absolute() else ZOO_DIR / p


def deploy_data(name: str) -> dict:
    """The deploy net ``name`` as a netspec net mapping (Input layer first)."""
    path = zoo_path(name)
    if path.suffix == ".yaml":
        raw, _ = load_yaml(path)
        return raw
    # the Caffe converter needs protobuf: loaded when a zoo prototxt is read
    from netspec.caffe import prototxt as ptx  # noqa: PLC0415
    from netspec.caffe.port import net_yaml  # noqa: PLC0415

    _, msg, text = ptx.read(path)
    _, data, _, _ = net_yaml(msg, str(path), input_layer=True, text=text)
    return data


def zoo_spec(name: str, batch: int = 1, train: bool = False) -> dict:
    """Net ``name`` at ``batch`` samples: deploy (Softmax output) or, with ``train``, the
    training form (SoftmaxWithLoss ``loss`` on the last Softmax's bottom and an Input
    ``label``, BatchNorm on batch statistics)."""
    data = copy.deepcopy(deploy_data(name))
    layers = data["layer"]
    for lay in layers:
        if lay["type"] == "Input":
            shapes = as_list(lay["input_param"]["shape"])
            for s in shapes:
                s["dim"][0] = batch
            lay["input_param"]["shape"] = shapes
    if train:
        for lay in layers:
            if lay["type"] == "BatchNorm":
                lay.get("batch_norm_param", {}).pop("use_global_stats", None)
        last = max(i for i, lay in enumerate(layers) if lay["type"] == "Softmax")
        sm = layers[last]
        layers[last] = {"name": "loss", "type": "SoftmaxWithLoss",
                        "bottom": [as_list(sm["bottom"])[0], "label"], "top": "loss"}
        layers.insert(1, {"name": "label", "type": "Input", "top": "label",
                          "input_param": {"shape": [{"dim": [batch]}]}})
    return {"name": data.get("name", name), "layer": layers}


def random_weights(net: Net, seed: int = 0, gain: float = 2.0) -> dict[str, np.ndarray]:
    """Seeded weights that keep activations of order one, for every parameter blob of ``net``
    ('layer/i' -> float32 array): kernels N(0, gain/fan_in) (2: He's, for ReLU nets; 1 where
    ReLU6 or exponentials, as in SSD's box decoding, would saturate), biases N(0, 0.1²),
    BatchNorm statistics of a trained net (means N(0, 0.1²), variances U(0.5, 2), factor 1),
    per-channel factors (Scale, PReLU, Normalize, the BN layers' slopes) 1 + N(0, 0.1²). The
    big-net bench and the differential tests against OpenCV and ONNX Runtime use it."""
    rng = np.random.default_rng(seed)
    out = {}
    for layer in net.layers:
        shapes = [tuple(p.shape) for p in layer.blobs]
        if not shapes:
            continue
        t = layer.type_name
        if t == "BatchNorm":
            vals = [rng.normal(0, 0.1, shapes[0]), rng.uniform(0.5, 2.0, shapes[1]),
                    np.ones(shapes[2])]
        elif t == "BN" and len(shapes) == 4:     # PSPNet's: slope, bias, mean, variance
            vals = [1 + rng.normal(0, 0.1, shapes[0]), rng.normal(0, 0.1, shapes[1]),
                    rng.normal(0, 0.1, shapes[2]), rng.uniform(0.5, 2.0, shapes[3])]
        else:
            vals = []
            for i, s in enumerate(shapes):
                if t in ("Scale", "PReLU", "Normalize", "BN") and i == 0:
                    vals.append(1 + rng.normal(0, 0.1, s))
                elif len(s) >= 2:
                    vals.append(rng.normal(0, np.sqrt(gain / max(int(np.prod(s[1:])), 1)), s))
                else:
                    vals.append(rng.normal(0, 0.1, s))
        for i, v in enumerate(vals):
            out[f"{layer.name}/{i}"] = np.asarray(v, np.float32)
    return out


def set_weights(net: Net, weights: dict[str, np.ndarray]) -> None:
    for k, p in net.named_params().items():
        p.data[...] = net.backend.asarray(weights[k])


def inference_net(spec: dict, threads: int, weights: dict | None = None, seed: int = 0,
                  keep_blobs: tuple[str, ...] | None = None):
    """(netspec TEST net of ``spec`` on ``threads`` CPU threads, its weights); with
    ``keep_blobs`` its blobs share memory (``Net(reuse_blobs=True)``) but those."""
    net = Net(parse_net(spec, spec["name"]), "TEST", get_backend(threads=threads),
              reuse_blobs=keep_blobs is not None, keep_blobs=keep_blobs or ())
    weights = random_weights(net, seed) if weights is None else weights
    set_weights(net, weights)
    return net, weights


def zoo_inputs(spec: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard normal images and labels 0..999 (floats, as Caffe stores them)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, shape in input_shapes(spec).items():
        out[k] = (rng.integers(0, 1000, size=shape).astype(np.float32) if k == "label"
                  else rng.standard_normal(shape, dtype=np.float32))
    return out
