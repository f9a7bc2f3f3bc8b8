"""A netspec net in OpenCV's dnn module: ``export_net`` writes its prototxt and .caffemodel, and
``cv2.dnn.readNetFromCaffe`` reads them back, as a user deploying an exported model would. The
OpenCV parity tests and the big-net bench (``bench/big_nets.py``) both run nets this way. Needs
opencv-python-headless (the ``compare`` extra) and protobuf."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from .export import export_net

#: layer types OpenCV's Caffe importer does not know, written as this equivalent type
OPENCV_AS = {"DepthwiseConvolution": "Convolution"}
#: layer types whose bottoms OpenCV's importer reads in another order: SENet's Axpy is
#: a·x + y over bottoms (a, x, y) (hujie-frank/SENet axpy_layer.cpp); OpenCV's importer
#: (modules/dnn/src/caffe/caffe_importer.cpp) scales bottom 2 and adds bottom 1, a·y + x
OPENCV_BOTTOM_ORDER = {"Axpy": (0, 2, 1)}


def _for_opencv(spec: dict) -> dict:
    """``spec`` with the bottoms of the layers in ``OPENCV_BOTTOM_ORDER`` reordered so that
    OpenCV computes the fork's function."""
    out = dict(spec)
    out["layer"] = [dict(lp, bottom=[lp["bottom"][k] for k in OPENCV_BOTTOM_ORDER[lp["type"]]])
                    if lp.get("type") in OPENCV_BOTTOM_ORDER else lp for lp in spec.get("layer", [])]
    return out


def opencv_net(spec: dict, weights: dict[str, np.ndarray], workdir: str | Path,
               threads: int | None = None):
    """``cv2.dnn.Net`` of the net mapping ``spec`` with ``weights`` ('layer/i' -> array),
    through files written in ``workdir`` (net.yaml, w.npz, net.prototxt, net.caffemodel), on
    OpenCV's own CPU backend; ``threads`` sets ``cv2.setNumThreads`` (process-wide)."""
    # OpenCV is optional (the `compare` extra): loaded when used
    import cv2  # noqa: PLC0415

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    net_yaml, proto, model = work / "net.yaml", work / "net.prototxt", work / "net.caffemodel"
    net_yaml.write_text(yaml.safe_dump(_for_opencv(spec), sort_keys=False))
    np.savez(work / "w.npz", **weights)
    for p in (proto, model):
        p.unlink(missing_ok=True)
    export_net(net_yaml, proto, weights=work / "w.npz", caffemodel=model)
    text = proto.read_text()
    for fork, bvlc in OPENCV_AS.items():   # OpenCV lacks the type: same layer under its name
        text = text.replace(f'type: "{fork}"', f'type: "{bvlc}"')
    proto.write_text(text)
    if threads is not None:
        cv2.setNumThreads(threads)
    net = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return net
