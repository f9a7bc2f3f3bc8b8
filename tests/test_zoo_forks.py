"""Real nets of Caffe's forks that need only the fork layers netspec implements (ReLU6, Permute,
Normalize, Axpy, Upsample, ShuffleChannel, the depthwise convolutions, Pooling ceil_mode).

tests/zoo_forks/ holds the prototxt files verbatim (provenance in zoo_forks/SOURCES.tsv, taken
from the shared caffe-zoo-forks set) and the trained MobileNet-YOLO lane model. The shapes a
real fork (eric612/MobileNet-YOLO, commit 69b4441) built, and that model's output on a real
image, are in tests/golden/forks/ (shapes/, tusimple_lane_00002.npz).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("google.protobuf", reason="protobuf is not installed (pip install 'netspec[caffe]')")

from netspec.backend import Backend  # noqa: E402
from netspec.caffe import prototxt as ptx  # noqa: E402
from netspec.caffe.port import net_yaml  # noqa: E402
from netspec.net import Net  # noqa: E402
from netspec.snapshot import load_weights  # noqa: E402
from netspec.spec import loads_net  # noqa: E402

ZOO = Path(__file__).parent / "zoo_forks"
GOLDEN = Path(__file__).parent / "golden" / "forks"
F32 = Backend(np, np.float32)
LANE = "eric612__MobileNet-YOLO__models__tusimple__mobilenet_yolov3_lite_deploy"
#: each net and the types it needs beyond BVLC Caffe
NETS = {
    f"{LANE}.prototxt": {"DepthwiseConvolution"},
    "farmingyard__ShuffleNet__shufflenet_1x_g3_deploy.prototxt": {"ConvolutionDepthwise",
                                                                 "ShuffleChannel"},
    "farmingyard__ShuffleNet__shufflenet_v2_1x_deploy.prototxt": {"ConvolutionDepthwise",
                                                                 "ShuffleChannel"},
}


def build(name: str, phase: str = "TEST") -> Net:
    text = net_yaml(ptx.parse_net((ZOO / name).read_text(), name), name)[0]
    return Net(loads_net(text, name), phase, F32, np.random.default_rng(0))


def test_sources_list_every_file():
    rows = (ZOO / "SOURCES.tsv").read_text().splitlines()
    listed = {r.split("\t")[0] for r in rows[1:]}
    assert listed == {p.name for p in ZOO.iterdir() if p.name != "SOURCES.tsv"}


@pytest.mark.parametrize("name", sorted(NETS))
def test_fork_net_converts_and_builds(name):
    net = build(name)
    assert NETS[name] <= {layer.type_name for layer in net.layers}
    shapes = GOLDEN / "shapes" / f"{name}.json"
    if not shapes.exists():     # the ShuffleNets: no fork recorded them; an ImageNet classifier
        assert [net.blobs[o].shape for o in net.output_names] == [(1, 1000, 1, 1)]
        return
    for phase, gp in json.loads(shapes.read_text())["phases"].items():
        built = build(name, phase)
        assert {k: list(b.shape) for k, b in built.blobs.items()} == gp["blobs"], phase
        params: dict[str, list] = {}
        for key, p in built.named_params().items():
            params.setdefault(key.rsplit("/", 1)[0], []).append(list(p.shape))
        assert params == gp["params"], phase


def test_trained_lane_model_reproduces_the_forks_output():
    """The trained MobileNet-YOLO lane model (DepthwiseConvolution, Deconvolution, BatchNorm)
    on a real image: the fork's conv16 and sigmoid outputs, float32."""
    net = build(f"{LANE}.prototxt")
    assert load_weights(net, ZOO / f"{LANE}_iter_50000.caffemodel") == ([], [])
    g = np.load(GOLDEN / "tusimple_lane_00002.npz")
    net.blobs["data"].data[...] = g["input"]
    net.forward()
    for blob in ("conv16", "sigmoid"):
        want = g[f"top/{blob}"]
        np.testing.assert_allclose(net.blobs[blob].data, want, rtol=1e-4,
                                   atol=1e-4 * float(np.abs(want).max()))
