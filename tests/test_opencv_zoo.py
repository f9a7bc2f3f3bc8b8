"""OpenCV's dnn as an independent runtime for whole nets: every deploy net of the zoo, BVLC's
and the forks', with well-scaled random weights (tests/zoo_deploy.py).

netspec runs the net; ``export_net`` writes the prototxt and .caffemodel; OpenCV's Caffe importer
(``cv2.dnn.readNetFromCaffe``) reads them and runs the same input. Compared: the net's outputs and
the logits under its final Softmax (a near-uniform softmax would hide differences), to 1e-4 of
each blob's largest magnitude; for SSD's DetectionOutput also its location and confidence
inputs, and its rows as a sorted set (OpenCV orders them by score, SSD by image and label). Layers OpenCV does not read are given to it under the equivalent
type (``netspec.caffe.opencv.OPENCV_AS``) or the net is skipped with the reason (OPENCV_LACKS). Needs
opencv-python-headless (the ``compare`` extra) and protobuf.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (pip install 'netspec[compare]')")
pytest.importorskip("google.protobuf", reason="protobuf is not installed (pip install 'netspec[caffe]')")

from zoo_deploy import HEAVY_DEPLOY, deploy_names, deploy_net, detection_rows, fill_well_scaled  # noqa: E402

from netspec.caffe import prototxt as ptx  # noqa: E402
from netspec.caffe.opencv import opencv_net  # noqa: E402
from netspec.caffe.port import net_yaml  # noqa: E402
from netspec.net import Net  # noqa: E402
from netspec.spec import loads_net  # noqa: E402
from zoo_deploy import F32  # noqa: E402

FORKS = Path(__file__).parent / "zoo_forks"
#: fork deploy nets OpenCV reads (the YOLO nets end in detection layers OpenCV lacks)
FORK_DEPLOY = [
    "farmingyard__ShuffleNet__shufflenet_1x_g3_deploy.prototxt",
    "farmingyard__ShuffleNet__shufflenet_v2_1x_deploy.prototxt",
    "eric612__MobileNet-YOLO__models__mobilenetv2_voc__ssd_lite__deploy.prototxt",
    "eric612__MobileNet-YOLO__models__pelee__VOC0712__SSD_304x304__deploy.prototxt",
]
#: what OpenCV's importer cannot run, found by running these nets with OpenCV 4.x
OPENCV_LACKS: dict[str, str] = {}


def _compared_blobs(net: Net, text: str) -> dict[str, str]:
    """Blob -> the OpenCV layer that produces it: the net's outputs and the bottom of its last
    Softmax (OpenCV names a layer's output after the layer)."""
    wanted = list(net.output_names)
    for i, layer in enumerate(net.layers):   # and what a DetectionOutput decodes
        if layer.type_name == "DetectionOutput":
            wanted += [b.name for b in net.bottoms[i][:2]]
    soft = [i for i, layer in enumerate(net.layers) if layer.type_name == "Softmax"]
    if soft:
        wanted.append(net.bottoms[soft[-1]][0].name)
    producer: dict[str, str] = {}
    for i, layer in enumerate(net.layers):
        for top in net.tops[i]:
            producer[top.name] = layer.name
    return {b: producer[b] for b in dict.fromkeys(wanted)}


def _opencv_outputs(net: Net, text: str, tmp_path: Path, layers: dict[str, str]) -> dict:
    weights = {k: p.data for k, p in net.named_params().items()}
    cv_net = opencv_net(yaml.safe_load(text), weights, tmp_path)
    for i, layer in enumerate(net.layers):
        if layer.type_name == "Input":
            for blob in net.tops[i]:
                cv_net.setInput(np.ascontiguousarray(blob.data), blob.name)
    return dict(zip(layers, cv_net.forward(list(layers.values()))))


def _check(net: Net, text: str, tmp_path: Path) -> None:
    layers = _compared_blobs(net, text)
    net.forward()
    theirs = _opencv_outputs(net, text, tmp_path, layers)
    detections = {net.tops[i][0].name for i, layer in enumerate(net.layers)
                  if layer.type_name == "DetectionOutput"}
    for blob, got in theirs.items():
        ours = net.blobs[blob].data
        if blob in detections:   # OpenCV orders the rows by score, SSD by image and label
            assert got.shape == ours.shape and ours.shape[2] > 10, blob
            got, ours = detection_rows(got), detection_rows(ours)
        assert got.size == ours.size, blob
        scale = float(np.abs(ours).max())
        assert scale > 0, f"{blob} is all zeros: the comparison would say nothing"
        np.testing.assert_allclose(got.reshape(ours.shape), ours, rtol=0, atol=1e-4 * scale,
                                   err_msg=blob)


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if any(h in n for h in HEAVY_DEPLOY) else n
    for n in deploy_names()])
def test_zoo_deploy_net_equals_opencv(name, tmp_path):
    if name in OPENCV_LACKS:
        pytest.skip(OPENCV_LACKS[name])
    net, text = deploy_net(name)
    _check(net, text, tmp_path)


@pytest.mark.parametrize("name", FORK_DEPLOY)
def test_fork_deploy_net_equals_opencv(name, tmp_path):
    if name in OPENCV_LACKS:
        pytest.skip(OPENCV_LACKS[name])
    text = net_yaml(ptx.parse_net((FORKS / name).read_text(), name), name)[0]
    net = Net(loads_net(text, name), "TEST", F32, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    fill_well_scaled(net, 0, gain=1.0)   # SSD decodes exp(offsets): keep them small
    for i, layer in enumerate(net.layers):
        if layer.type_name == "Input":
            for blob in net.tops[i]:
                blob.data[...] = rng.random(blob.shape)
    _check(net, text, tmp_path)
