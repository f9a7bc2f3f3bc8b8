"""Detection data for tests: a synthetic set (1–3 bright rectangles on noise), a tiny SSD that
trains on it, and LMDBs of SSD's AnnotatedDatum records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SIZE = 32


def boxes_on_noise(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images (n, 1, SIZE, SIZE) of noise with 1–3 bright axis-aligned rectangles
    (sides 8–16 pixels, not overlapping), and their annotation rows [record, 1, instance,
    xmin, ymin, xmax, ymax, 0] normalised to the image."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 80, (n, 1, SIZE, SIZE)).astype(np.uint8)
    rows = []
    for i in range(n):
        placed: list[tuple[int, int, int, int]] = []
        for k in range(int(rng.integers(1, 4))):
            for _ in range(50):
                w, h = rng.integers(8, 17, 2)
                x, y = rng.integers(0, SIZE - w + 1), rng.integers(0, SIZE - h + 1)
                if all(x + w <= a or a + c <= x or y + h <= b or b + d <= y
                       for a, b, c, d in placed):
                    break
            else:
                continue
            placed.append((x, y, w, h))
            data[i, 0, y:y + h, x:x + w] = rng.integers(180, 256, (h, w))
            rows.append([i, 1, k, x / SIZE, y / SIZE, (x + w) / SIZE, (y + h) / SIZE, 0])
    return data, np.asarray(rows, np.float32)


def _conv(name, bottom, n, **extra):
    return {"name": name, "type": "Convolution", "bottom": bottom, "top": name,
            "convolution_param": {"num_output": n, "kernel_size": 3, "pad": 1,
                                  "weight_filler": {"type": "xavier"},
                                  "bias_filler": {"type": "constant"}, **extra}}


def _relu(name):
    return {"name": f"{name}_relu", "type": "ReLU", "bottom": name, "top": name}


def _trunk() -> list[dict]:
    """The tiny detectors' shared trunk: two 3×3 convolution + ReLU + 2×2 max-pool stages and
    a third convolution, 32×32 input to conv3 (32, 8, 8)."""
    pool = {"pool": "MAX", "kernel_size": 2, "stride": 2}
    return [
        _conv("conv1", "data", 16), _relu("conv1"),
        {"name": "pool1", "type": "Pooling", "bottom": "conv1", "top": "pool1",
         "pooling_param": pool},
        _conv("conv2", "pool1", 32), _relu("conv2"),
        {"name": "pool2", "type": "Pooling", "bottom": "conv2", "top": "pool2",
         "pooling_param": pool},
        _conv("conv3", "pool2", 32), _relu("conv3"),                        # 8×8
    ]


def _head(fmap, min_size, max_size):
    """loc/conf convolutions, their permuted-flattened forms and the priors of ``fmap``."""
    out = []
    for kind, n in (("loc", 4 * 4), ("conf", 4 * 2)):
        name = f"{fmap}_mbox_{kind}"
        out += [_conv(name, fmap, n),
                {"name": f"{name}_perm", "type": "Permute", "bottom": name,
                 "top": f"{name}_perm", "permute_param": {"order": [0, 2, 3, 1]}},
                {"name": f"{name}_flat", "type": "Flatten", "bottom": f"{name}_perm",
                 "top": f"{name}_flat", "flatten_param": {"axis": 1}}]
    out.append({"name": f"{fmap}_mbox_priorbox", "type": "PriorBox", "bottom": [fmap, "data"],
                "top": f"{fmap}_mbox_priorbox",
                "prior_box_param": {"min_size": min_size, "max_size": max_size,
                                    "aspect_ratio": 2, "flip": True, "clip": False,
                                    "variance": [0.1, 0.1, 0.2, 0.2]}})
    return out


def tiny_ssd(train_source: str, test_source: str, batch: int = 16) -> dict:
    """Two conv stages, SSD heads on an 8×8 and a 4×4 map (4 priors per cell: 80 priors),
    MultiBoxLoss in TRAIN; DetectionOutput and DetectionEvaluate in TEST."""
    test = {"include": {"phase": "TEST"}}
    train = {"include": {"phase": "TRAIN"}}
    data = [{"name": "data", "type": "AnnotatedData", "top": ["data", "label"], **phase,
             "transform_param": {"scale": 1 / 255},
             "data_param": {"source": src, "batch_size": batch, "shuffle": shuffle}}
            for phase, src, shuffle in ((train, train_source, True), (test, test_source, False))]
    layers = data + [
        *_trunk(),
        _conv("conv4", "conv3", 32, stride=2), _relu("conv4"),              # 4×4
        *_head("conv3", 9, 14), *_head("conv4", 14, 20)]
    for kind in ("loc", "conf", "priorbox"):
        bottoms = [f"{m}_mbox_{kind}" + ("" if kind == "priorbox" else "_flat")
                   for m in ("conv3", "conv4")]
        layers.append({"name": f"mbox_{kind}", "type": "Concat", "bottom": bottoms,
                       "top": f"mbox_{kind}", "concat_param": {"axis": 2 if kind == "priorbox"
                                                                else 1}})
    layers += [
        {"name": "mbox_loss", "type": "MultiBoxLoss", **train,
         "bottom": ["mbox_loc", "mbox_conf", "mbox_priorbox", "label"], "top": "mbox_loss",
         "propagate_down": [True, True, False, False],
         "loss_param": {"normalization": "VALID"},
         "multibox_loss_param": {"loc_loss_type": "SMOOTH_L1", "conf_loss_type": "SOFTMAX",
                                 "loc_weight": 1.0, "num_classes": 2, "share_location": True,
                                 "match_type": "PER_PREDICTION", "overlap_threshold": 0.5,
                                 "use_prior_for_matching": True, "background_label_id": 0,
                                 "use_difficult_gt": True, "neg_pos_ratio": 3.0,
                                 "neg_overlap": 0.5, "code_type": "CENTER_SIZE",
                                 "mining_type": "MAX_NEGATIVE"}},
        {"name": "mbox_conf_reshape", "type": "Reshape", "bottom": "mbox_conf", **test,
         "top": "mbox_conf_reshape", "reshape_param": {"shape": {"dim": [0, -1, 2]}}},
        {"name": "mbox_conf_softmax", "type": "Softmax", "bottom": "mbox_conf_reshape", **test,
         "top": "mbox_conf_softmax", "softmax_param": {"axis": 2}},
        {"name": "mbox_conf_flatten", "type": "Flatten", "bottom": "mbox_conf_softmax", **test,
         "top": "mbox_conf_flatten", "flatten_param": {"axis": 1}},
        {"name": "detection_out", "type": "DetectionOutput", **test,
         "bottom": ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"], "top": "detection_out",
         "detection_output_param": {"num_classes": 2, "share_location": True,
                                    "background_label_id": 0, "code_type": "CENTER_SIZE",
                                    "keep_top_k": 20, "confidence_threshold": 0.05,
                                    "nms_param": {"nms_threshold": 0.45, "top_k": 40}}},
        {"name": "detection_eval", "type": "DetectionEvaluate", **test,
         "bottom": ["detection_out", "label"], "top": "detection_eval",
         "detection_evaluate_param": {"num_classes": 2, "background_label_id": 0,
                                      "overlap_threshold": 0.5}},
    ]
    return {"name": "tiny_ssd", "layer": layers}


def write_tiny_ssd(folder: Path, train_images: int = 256, test_images: int = 64,
                   net=None, **solver) -> Path:
    """The data sets, net (``tiny_ssd``, or ``net``) and solver YAMLs in ``folder``; returns
    the solver's path."""
    import yaml

    for name, n, seed in (("train", train_images, 0), ("test", test_images, 1)):
        data, rows = boxes_on_noise(n, seed)
        np.savez(folder / f"{name}.npz", data=data, annotation=rows)
    (folder / "net.yaml").write_text(yaml.safe_dump((net or tiny_ssd)("train.npz", "test.npz"),
                                                    sort_keys=False))
    settings = {"net": "net.yaml", "type": "Adam", "base_lr": 0.003, "momentum": 0.9,
                "lr_policy": "fixed", "max_iter": 300, "display": 50, "test_iter": 4,
                "test_interval": 100, "test_initialization": False, "random_seed": 1,
                "snapshot_after_train": False, "eval_type": "detection",
                "ap_version": "11point", **solver}
    (folder / "solver.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return folder / "solver.yaml"


#: the tiny YOLOv3's anchors, in pixels of the 32×32 input (the boxes' sides are 8–16)
YOLO_BIASES = [9, 9, 14, 10, 10, 14, 15, 15]


def _yolo_trunk(train_source: str, test_source: str, batch: int, anchors: int) -> list:
    """AnnotatedData (YOLO's labels in TRAIN: ``yolo_data_type: 1`` with the fork's random crop
    ``yolo_data_jitter``; SSD's rows in TEST, for DetectionEvaluate), two conv stages and a
    1×1 head on an 8×8 map, ``anchors`` anchors per cell and 1 class."""
    test = {"include": {"phase": "TEST"}}
    train = {"include": {"phase": "TRAIN"}}
    warp = {"resize_param": {"resize_mode": "WARP", "height": SIZE, "width": SIZE}}
    data = [
        {"name": "data", "type": "AnnotatedData", "top": ["data", "label"], **train,
         "transform_param": {"scale": 1 / 255, **warp},
         "data_param": {"source": train_source, "batch_size": batch, "shuffle": True},
         "annotated_data_param": {"yolo_data_type": 1, "yolo_data_jitter": 0.2}},
        {"name": "data", "type": "AnnotatedData", "top": ["data", "label"], **test,
         "transform_param": {"scale": 1 / 255},
         "data_param": {"source": test_source, "batch_size": batch}}]
    return data + [
        *_trunk(),
        {"name": "head", "type": "Convolution", "bottom": "conv3", "top": "head",
         "convolution_param": {"num_output": anchors * 6, "kernel_size": 1,
                               "weight_filler": {"type": "xavier"},
                               "bias_filler": {"type": "constant"}}}]


def _evaluate() -> dict:
    return {"name": "detection_eval", "type": "DetectionEvaluate",
            "include": {"phase": "TEST"}, "bottom": ["detection_out", "label"],
            "top": "detection_eval",
            "detection_evaluate_param": {"num_classes": 2, "background_label_id": 0,
                                         "overlap_threshold": 0.5}}


def tiny_yolov3(train_source: str, test_source: str, batch: int = 16) -> dict:
    """``_yolo_trunk`` with 4 anchors per cell: the MobileNet-YOLO fork's Yolov3 loss in TRAIN;
    Yolov3DetectionOutput and DetectionEvaluate in TEST."""
    test = {"include": {"phase": "TEST"}}
    train = {"include": {"phase": "TRAIN"}}
    anchors = {"biases": YOLO_BIASES, "mask": [0, 1, 2, 3]}
    layers = _yolo_trunk(train_source, test_source, batch, 4) + [
        {"name": "yolo_loss", "type": "Yolov3", **train, "bottom": ["head", "label"],
         "top": "yolo_loss",
         "yolov3_param": {"num_class": 1, "num": 4, "object_scale": 5.0, "noobject_scale": 1.0,
                          "class_scale": 1.0, "coord_scale": 1.0, "thresh": 0.6,
                          "anchors_scale": 4, **anchors}},
        {"name": "detection_out", "type": "Yolov3DetectionOutput", **test, "bottom": "head",
         "top": "detection_out",
         "yolov3_detection_output_param": {"num_classes": 1, "num_box": 4,
                                           "confidence_threshold": 0.05, "nms_threshold": 0.45,
                                           "anchors_scale": [4], "mask_group_num": 1,
                                           **anchors}},
        _evaluate()]
    return {"name": "tiny_yolov3", "layer": layers}


#: the tiny YOLOv2's anchors, in cells of its 8×8 map (4 pixels; the boxes' sides are 2–4 cells)
YOLO2_BIASES = [2.25, 2.25, 3.5, 2.5, 2.5, 3.5, 3.75, 3.75, 3.0, 3.0]


def tiny_yolov2(train_source: str, test_source: str, batch: int = 16) -> dict:
    """``_yolo_trunk`` with 5 anchors per cell: the MobileNet-YOLO fork's RegionLoss (YOLOv2's
    loss, rescore and bias_match on) in TRAIN; YoloDetectionOutput and DetectionEvaluate in
    TEST."""
    test = {"include": {"phase": "TEST"}}
    train = {"include": {"phase": "TRAIN"}}
    layers = _yolo_trunk(train_source, test_source, batch, 5) + [
        {"name": "region_loss", "type": "RegionLoss", **train, "bottom": ["head", "label"],
         "top": "region_loss",
         "region_loss_param": {"num_class": 1, "num": 5, "object_scale": 5.0,
                               "noobject_scale": 1.0, "class_scale": 1.0, "coord_scale": 1.0,
                               "thresh": 0.6, "rescore": 1, "bias_match": 1,
                               "biases": YOLO2_BIASES}},
        {"name": "detection_out", "type": "YoloDetectionOutput", **test, "bottom": "head",
         "top": "detection_out",
         "yolo_detection_output_param": {"num_classes": 1, "num_box": 5,
                                         "confidence_threshold": 0.05, "nms_threshold": 0.45,
                                         "biases": YOLO2_BIASES}},
        _evaluate()]
    return {"name": "tiny_yolov2", "layer": layers}


def annotated_lmdb(path, records):
    """An LMDB of SSD AnnotatedDatum records (uint8 C×H×W image, [(label, [(instance, box,
    difficult)])]) as SSD's create_annoset writes them, keys in order."""
    lmdb = pytest.importorskip("lmdb", reason="lmdb is not installed")
    pytest.importorskip("google.protobuf", reason="protobuf is not installed")
    from netspec.caffe import pb2
    P = pb2()
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for k, (img, groups) in enumerate(records):
            a = P.AnnotatedDatum(type=P.AnnotatedDatum.BBOX)
            a.datum.channels, a.datum.height, a.datum.width = img.shape
            a.datum.data = img.tobytes()
            for label, annos in groups:
                g = a.annotation_group.add(group_label=label)
                for inst, box, diff in annos:
                    an = g.annotation.add(instance_id=inst)
                    an.bbox.xmin, an.bbox.ymin, an.bbox.xmax, an.bbox.ymax = box
                    an.bbox.difficult = diff
            txn.put(f"{k:08d}".encode(), a.SerializeToString())
    env.close()
    return str(path)
