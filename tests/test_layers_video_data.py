"""SSD's VideoData layer: frames of a video file read with OpenCV.

References that are not the code under test: OpenCV's own decoding of the video the test
writes (cv2.VideoCapture read frame by frame), SSD's ApplyResize written with cv2.resize
(tests/test_annotated_fit_resize.py), and the frame counts and orders worked out here.
"""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from netspec.backend import Backend
from netspec.cli import main
from netspec.errors import DataError, SpecError
from netspec.net import Net
from netspec.spec import parse_net
from netspec.spec.params.common import ResizeParameter

cv2 = pytest.importorskip("cv2", reason="VideoData reads frames with OpenCV")

from test_annotated_fit_resize import assert_near_opencv, ssd_apply_resize  # noqa: E402

F = np.float32
FRAMES, H, W = 7, 24, 40


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """An MJPG .avi of FRAMES frames (each a different pattern) and OpenCV's decoding of it:
    (path, uint8 (FRAMES, 3, H, W))."""
    path = tmp_path_factory.mktemp("video") / "v.avi"
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    assert out.isOpened()
    yy, xx = np.mgrid[0:H, 0:W]
    for k in range(FRAMES):
        frame = np.stack([(xx * 6 + k * 30) % 256, (yy * 9 + k * 50) % 256,
                          np.full((H, W), k * 35)], -1).astype(np.uint8)
        out.write(frame)
    out.release()
    cap = cv2.VideoCapture(str(path))
    decoded = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        decoded.append(frame.transpose(2, 0, 1))
    assert len(decoded) == FRAMES
    return str(path), np.stack(decoded)


def video_net(path, batch=2, transform=None, skip=0, tops=("data", "label")):
    layer = {"name": "data", "type": "VideoData", "top": list(tops),
             "data_param": {"batch_size": batch},
             "video_data_param": {"video_type": "VIDEO", "video_file": path,
                                  "skip_frames": skip}}
    if transform is not None:
        layer["transform_param"] = transform
    return Net(parse_net({"name": "v", "layer": [layer]}), "TEST", Backend(np, np.float32),
               np.random.default_rng(0))


def test_frames_are_opencvs_decoding_in_order_with_mean_and_scale(video):
    path, frames = video
    net = video_net(path, batch=2, transform={"mean_value": [104, 117, 123], "scale": 0.5})
    assert net.blobs["data"].data.shape == (2, 3, H, W)
    mean = np.array([104, 117, 123], F)[:, None, None]
    for first in (0, 2, 4):
        net.forward()
        want = (frames[first:first + 2].astype(F) - mean) * F(0.5)
        np.testing.assert_array_equal(net.blobs["data"].data, want)
        np.testing.assert_array_equal(net.blobs["label"].data, [0, 0])


def test_skip_frames_skips_before_each_frame(video):
    path, frames = video
    net = video_net(path, batch=1, skip=2, tops=("data",))
    for k in (2, 5):                      # frames 0, 1 skipped, 2 read; 3, 4 skipped, 5 read
        net.forward()
        np.testing.assert_array_equal(net.blobs["data"].data[0], frames[k].astype(F))
    with pytest.raises(DataError, match=re.escape("the video's 7 frames are all read")):
        net.forward()                     # frame 6 skipped, then the end


def test_the_end_of_the_video_stops_as_ssd(video):
    path, _ = video
    net = video_net(path, batch=3)
    net.forward()
    net.forward()                         # frames 0–5
    with pytest.raises(DataError) as e:
        net.forward()                     # frame 6, then none left
    assert "7 frames are all read" in str(e.value) and "video_data_param.video_file" in str(e.value)


@pytest.mark.parametrize("mode", ["WARP", "FIT_LARGE_SIZE_AND_PAD", "FIT_SMALL_SIZE"])
def test_resize_param_is_ssds_apply_resize(video, mode):
    path, frames = video
    r = {"resize_mode": mode, "height": 32, "width": 32, "pad_value": [9, 8, 7]}
    net = video_net(path, batch=2, transform={"resize_param": r})
    net.forward()
    p = ResizeParameter(**r)
    for k in range(2):
        if mode == "WARP":
            want = cv2.resize(frames[k].transpose(1, 2, 0), (32, 32)).transpose(2, 0, 1)
        else:
            want = ssd_apply_resize(frames[k], p)
        assert_near_opencv(net.blobs["data"].data[k].astype(np.uint8), want, "LINEAR", mode)
    want_hw = (32, 53) if mode == "FIT_SMALL_SIZE" else (32, 32)     # 40 / 24 · 32 = 53.3
    assert net.blobs["data"].data.shape == (2, 3) + want_hw


def test_refusals_name_the_field(video, tmp_path, monkeypatch):
    path, _ = video
    layer = {"name": "data", "type": "VideoData", "top": ["data"], "data_param": {"batch_size": 1},
             "video_data_param": {"video_type": "VIDEO"}}

    def build(**update):
        lp = {**layer, **update}
        return Net(parse_net({"name": "v", "layer": [lp]}), "TEST", Backend(np, np.float32),
                   np.random.default_rng(0))

    with pytest.raises(SpecError, match="video_type VIDEO needs video_file") as e:
        build()
    assert "video_data_param.video_file" in str(e.value)
    with pytest.raises(DataError, match="cannot open video") as e:
        build(video_data_param={"video_type": "VIDEO", "video_file": str(tmp_path / "no.avi")})
    assert "video_data_param.video_file" in str(e.value)
    vp = {"video_type": "VIDEO", "video_file": path}
    with pytest.raises(SpecError, match="read by SSD's AnnotatedData only") as e:
        build(video_data_param=vp, transform_param={"distort_param": {"brightness_prob": 0.5}})
    assert "transform_param.distort_param" in str(e.value)
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(DataError, match=re.escape("pip install 'netspec[compare]'")):
        build(video_data_param=vp)


WEBCAM_DEMO = """name: "VGG_VOC0712_SSD_300x300_test"
layer {
  name: "data"
  type: "VideoData"
  top: "data"
  transform_param {
    mean_value: 104
    mean_value: 117
    mean_value: 123
    resize_param {
      prob: 1
      resize_mode: WARP
      height: 300
      width: 300
      interp_mode: LINEAR
    }
  }
  data_param {
    batch_size: 1
  }
  video_data_param {
    video_type: WEBCAM
    device_id: 0
  }
}
layer {
  name: "conv1_1"
  type: "Convolution"
  bottom: "data"
  top: "conv1_1"
  convolution_param {
    num_output: 4
    pad: 1
    kernel_size: 3
  }
}
layer {
  name: "relu1_1"
  type: "ReLU"
  bottom: "conv1_1"
  top: "conv1_1"
}
"""


def test_ssds_webcam_demo_converts_and_builds_without_data(tmp_path):
    pytest.importorskip("google.protobuf", reason="converting .prototxt files needs protobuf")
    src = tmp_path / "webcam.prototxt"
    src.write_text(WEBCAM_DEMO)
    runner = CliRunner()
    r = runner.invoke(main, ["convert", str(src)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["summary", "--json", "--phase", "TEST", "--no-data",
                             str(src.with_suffix(".yaml"))])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    shapes = {layer["name"]: [t["shape"] for t in layer["tops"]] for layer in info["layers"]}
    assert shapes["data"] == [[1, 3, 300, 300]] and shapes["conv1_1"] == [[1, 4, 300, 300]]
    assert "assumed" not in info["notes"][0]


@pytest.mark.parametrize("type_name", ["Data", "AnnotatedData"])
def test_data_layers_other_than_video_data_need_a_source(type_name):
    """data_param.source is optional in the schema (VideoData does not read it); the layers
    that read records say it is missing."""
    layer = {"name": "d", "type": type_name, "top": ["data"], "data_param": {"batch_size": 1}}
    with pytest.raises(SpecError, match="reads its records from data_param.source") as e:
        Net(parse_net({"name": "n", "layer": [layer]}), "TEST", Backend(np, np.float32),
            np.random.default_rng(0))
    assert "data_param.source" in str(e.value)
