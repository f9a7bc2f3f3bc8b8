"""OpenCV's dnn module as an independent implementation of the forks' layers.

For a small net around each layer (random weights): netspec builds and runs it, ``netspec
export`` writes the prototxt and the .caffemodel (``export_net``), ``cv2.dnn.readNetFromCaffe``
reads them, and both run the same input; the outputs must agree to float32 precision. A layer
OpenCV's Caffe importer does not read is skipped with the reason (OPENCV_LACKS: SSD's shared
Normalize scale, a 0-d blob; the nearest Upsample; Interp's shrink_factor and crop); DepthwiseConvolution, unknown to OpenCV, is
given to it as the grouped Convolution it is (ConvolutionDepthwise OpenCV reads itself). SSD's
PriorBox and DetectionOutput are compared too (several Input layers; DetectionOutput's rows as
a sorted set, since OpenCV orders them by score and SSD by image, label and score). Needs
opencv-python-headless (the ``compare`` extra) and protobuf.
"""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (pip install 'netspec[compare]')")
pytest.importorskip("google.protobuf", reason="protobuf is not installed (pip install 'netspec[caffe]')")

from zoo_deploy import detection_rows  # noqa: E402

from netspec.backend import Backend  # noqa: E402
from netspec.caffe.opencv import opencv_net  # noqa: E402
from netspec.net import Net  # noqa: E402
from netspec.spec import parse_net  # noqa: E402

F32 = Backend(np, np.float32)
GAUSS = {"type": "gaussian", "std": 0.5}


def _conv(name, bottom, M, **extra):
    return {"name": name, "type": "Convolution", "bottom": bottom, "top": name,
            "convolution_param": {"num_output": M, "kernel_size": 1, "weight_filler": GAUSS,
                                  "bias_filler": GAUSS, **extra}}


#: DetectionOutput's case: priors and classes
DET_P, DET_C = 60, 4


def _detection_inputs(rng):
    """Offsets, softmax probabilities and random priors with SSD's variances."""
    loc = rng.standard_normal((2, DET_P * 4)).astype(np.float32) * 0.5
    logits = rng.standard_normal((2, DET_P, DET_C)) * 2
    conf = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    xy = rng.uniform(0, 0.7, (DET_P, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0.1, 0.3, (DET_P, 2))], 1)
    prior = np.stack([boxes.reshape(-1), np.tile([0.1, 0.1, 0.2, 0.2], DET_P)])[None]
    return {"loc": loc, "conf": conf.reshape(2, -1).astype(np.float32),
            "prior": prior.astype(np.float32)}


#: case -> (input shape, or {input name: shape}; the layers after the Input layer(s) (one
#: 'data' when a shape); the last one's top is compared)
CASES = {
    "relu6": ((2, 3, 5, 6), [
        _conv("c", "data", 4, weight_filler={"type": "gaussian", "std": 4.0}),
        {"name": "r", "type": "ReLU6", "bottom": "c", "top": "r"}]),
    "permute": ((2, 3, 4, 5), [
        {"name": "p", "type": "Permute", "bottom": "data", "top": "p",
         "permute_param": {"order": [0, 2, 3, 1]}}]),
    "normalize_channel": ((2, 4, 3, 5), [
        {"name": "n", "type": "Normalize", "bottom": "data", "top": "n",
         "norm_param": {"across_spatial": False, "channel_shared": False,
                        "scale_filler": GAUSS}}]),
    "normalize_spatial_shared": ((2, 4, 3, 5), [
        {"name": "n", "type": "Normalize", "bottom": "data", "top": "n",
         "norm_param": {"across_spatial": True, "channel_shared": True,
                        "scale_filler": {"type": "constant", "value": 10}}}]),
    "shuffle_channel": ((2, 6, 3, 4), [
        {"name": "s", "type": "ShuffleChannel", "bottom": "data", "top": "s",
         "shuffle_channel_param": {"group": 3}}]),
    "depthwise": ((2, 4, 7, 7), [
        {"name": "dw", "type": "DepthwiseConvolution", "bottom": "data", "top": "dw",
         "convolution_param": {"num_output": 4, "group": 4, "kernel_size": 3, "pad": 1,
                               "stride": 2, "weight_filler": GAUSS, "bias_filler": GAUSS}}]),
    "convolution_depthwise": ((2, 4, 7, 7), [
        {"name": "dw", "type": "ConvolutionDepthwise", "bottom": "data", "top": "dw",
         "convolution_param": {"num_output": 4, "kernel_size": 3, "pad": 1,
                               "weight_filler": GAUSS, "bias_filler": GAUSS}}]),
    "pool_ceil_mode_false": ((2, 3, 8, 8), [
        {"name": "p", "type": "Pooling", "bottom": "data", "top": "p",
         "pooling_param": {"pool": "MAX", "kernel_size": 3, "stride": 2, "ceil_mode": False}}]),
    "pool_ceil_mode_true": ((2, 3, 8, 8), [
        {"name": "p", "type": "Pooling", "bottom": "data", "top": "p",
         "pooling_param": {"pool": "AVE", "kernel_size": 3, "stride": 2, "ceil_mode": True}}]),
    "prior_box": ((1, 3, 30, 24), [
        {"name": "c", "type": "Convolution", "bottom": "data", "top": "c",
         "convolution_param": {"num_output": 2, "kernel_size": 3, "stride": 3,
                               "weight_filler": GAUSS}},
        {"name": "pb", "type": "PriorBox", "bottom": ["c", "data"], "top": "pb",
         "prior_box_param": {"min_size": [6, 12], "max_size": [10, 20], "aspect_ratio": [2, 3],
                             "flip": True, "clip": True, "variance": [0.1, 0.1, 0.2, 0.2]}}]),
    "prior_box_step": ((1, 3, 40, 32), [
        {"name": "c", "type": "Convolution", "bottom": "data", "top": "c",
         "convolution_param": {"num_output": 2, "kernel_size": 8, "stride": 8,
                               "weight_filler": GAUSS}},
        {"name": "pb", "type": "PriorBox", "bottom": ["c", "data"], "top": "pb",
         # clip given: OpenCV clips when the field is absent (SSD's default is false)
         "prior_box_param": {"min_size": [8], "aspect_ratio": [2], "flip": False, "clip": False,
                             "step": 8, "offset": 0.25, "variance": [0.1]}}]),
    "detection_output": ({"loc": (2, DET_P * 4), "conf": (2, DET_P * DET_C),
                          "prior": (1, 2, DET_P * 4)}, [
        {"name": "det", "type": "DetectionOutput", "bottom": ["loc", "conf", "prior"],
         "top": "det", "detection_output_param": {
             "num_classes": DET_C, "share_location": True, "background_label_id": 0,
             "nms_param": {"nms_threshold": 0.45, "top_k": 100}, "code_type": "CENTER_SIZE",
             "keep_top_k": 30, "confidence_threshold": 0.1}}]),
    "upsample_nearest": ((2, 3, 4, 5), [
        {"name": "u", "type": "Upsample", "bottom": "data", "top": "u",
         "upsample_param": {"scale": 2}}]),
    "interp_zoom": ((2, 3, 5, 6), [
        {"name": "i", "type": "Interp", "bottom": "data", "top": "i",
         "interp_param": {"zoom_factor": 4}}]),
    "interp_height_width": ((2, 3, 5, 6), [
        {"name": "i", "type": "Interp", "bottom": "data", "top": "i",
         "interp_param": {"height": 13, "width": 8}}]),
    "interp_shrink_zoom": ((1, 2, 9, 8), [
        {"name": "i", "type": "Interp", "bottom": "data", "top": "i",
         "interp_param": {"shrink_factor": 2, "zoom_factor": 3}}]),
    "interp_crop": ((1, 2, 9, 8), [
        {"name": "i", "type": "Interp", "bottom": "data", "top": "i",
         "interp_param": {"zoom_factor": 2, "pad_beg": -1, "pad_end": -2}}]),
}

#: what OpenCV's Caffe importer cannot do, found by running these cases with OpenCV 4.14
OPENCV_LACKS: dict[str, str] = {
    "normalize_spatial_shared": "OpenCV cannot read a 0-d parameter blob: SSD's channel_shared "
                                "scale has shape () in the fork's caffemodel (and in netspec's)",
    "upsample_nearest": "OpenCV's Caffe importer has no Upsample layer type",
    "interp_shrink_zoom": "OpenCV's Interp reads zoom_factor, height and width only: it ignores "
                          "shrink_factor (9x8 gives 25x22, the fork 13x10)",
    "interp_crop": "OpenCV's Interp ignores pad_beg/pad_end (9x8 gives 17x15, the fork's crop "
                   "to 6x5 gives 11x9)",
}
#: cases whose inputs are not standard normal: case -> function of a Generator
INPUTS = {"detection_output": _detection_inputs}


def _run(case, tmp_path):
    shapes, layers = CASES[case]
    shapes = shapes if isinstance(shapes, dict) else {"data": shapes}
    rng = np.random.default_rng(2)
    inputs = (INPUTS[case](rng) if case in INPUTS else
              {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()})
    spec = {"name": case, "layer": [
        *({"name": k, "type": "Input", "top": k, "input_param": {"shape": {"dim": list(s)}}}
          for k, s in shapes.items()), *layers]}
    net = Net(parse_net(spec, case), "TEST", F32, np.random.default_rng(1))
    for k, x in inputs.items():
        net.blobs[k].data[...] = x
    net.forward()
    out = layers[-1]["top"]
    ours = net.blobs[out].data.copy()
    weights = {k: p.data for k, p in net.named_params().items()}
    cv_net = opencv_net(spec, weights, tmp_path)
    for k, x in inputs.items():
        cv_net.setInput(x, k)
    theirs = cv_net.forward(out)
    return ours, theirs


@pytest.mark.parametrize("case", sorted(CASES))
def test_opencv_agrees(case, tmp_path):
    if case in OPENCV_LACKS:
        pytest.skip(OPENCV_LACKS[case])
    ours, theirs = _run(case, tmp_path)
    if case == "detection_output":   # OpenCV orders the rows by score, SSD by image and label
        assert len(ours[0, 0]) > 10 and theirs.shape == ours.shape
        ours, theirs = detection_rows(ours), detection_rows(theirs)
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(theirs, ours, rtol=1e-5,
                               atol=1e-6 * max(1.0, float(np.abs(ours).max())))
