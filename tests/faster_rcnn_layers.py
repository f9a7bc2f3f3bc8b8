"""Test doubles of py-faster-rcnn's four Python layers (rbgirshick/py-faster-rcnn, ``lib/``),
written as a user's modules would be laid out: ``roi_data_layer/layer.py`` (RoIDataLayer),
``rpn/anchor_target_layer.py``, ``rpn/proposal_layer.py``, ``rpn/proposal_target_layer.py``.

Each gives its tops the shapes py-faster-rcnn's layer gives them at forward time for the
configuration the nets were trained with (``experiments/cfgs/faster_rcnn_end2end.yml`` and
``lib/fast_rcnn/config.py``: one image per batch end to end, two for Fast R-CNN; 128 sampled
RoIs; 2000 proposals after NMS when training, 300 when testing; 9 anchors), and fills them with
random data of the right kind (boxes inside the image, batch indices, class labels, 0/1
weights). They do not compute py-faster-rcnn's values: no anchor matching, no NMS. netspec fixes
shapes when it builds a net, so the shapes are given in setup, not only in forward.
"""

from __future__ import annotations

from pathlib import Path

#: the image every double produces (py-faster-rcnn scales to 600 × 1000; small keeps tests fast)
IMAGE = (128, 192)

SOURCES = {
    "roi_data_layer/__init__.py": "",
    "rpn/__init__.py": "",
    "fake_cfg.py": f'''
import numpy as np
import yaml

IMAGE = {IMAGE!r}
A = 9                    # anchors per position (3 scales x 3 ratios)
BATCH_SIZE = 128         # cfg.TRAIN.BATCH_SIZE: RoIs per minibatch
FG_FRACTION = 0.25
POST_NMS = {{0: 2000, 1: 300}}   # cfg.TRAIN / TEST.RPN_POST_NMS_TOP_N, by phase
FOUR_D = False           # py-R-FCN's proposal targets: 4-D tops (R, 5, 1, 1), (R, 1, 1, 1) ...


def params(param_str):
    return yaml.safe_load(param_str) or {{}}


def boxes(rng, n, height, width):
    """n random boxes [x1, y1, x2, y2] inside a height x width image."""
    x = np.sort(rng.uniform(0, width - 1, (n, 2)), axis=1)
    y = np.sort(rng.uniform(0, height - 1, (n, 2)), axis=1)
    return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)


def targets(rng, labels, num_classes):
    """bbox_targets and the inside/outside weights of sampled RoIs: 4 values per class, set
    for each foreground RoI's class only (proposal_target_layer's layout)."""
    n = len(labels)
    t = np.zeros((n, 4 * num_classes), np.float32)
    inside = np.zeros_like(t)
    for i, c in enumerate(labels.astype(int)):
        if c > 0:
            t[i, 4 * c:4 * c + 4] = rng.normal(size=4)
            inside[i, 4 * c:4 * c + 4] = 1.0
    return t, inside, (inside > 0).astype(np.float32)


def sampled_labels(rng, num_classes):
    fg = int(round(FG_FRACTION * BATCH_SIZE))
    labels = np.zeros(BATCH_SIZE, np.float32)
    labels[:fg] = rng.integers(1, num_classes, fg)
    return labels
''',
    "roi_data_layer/layer.py": '''
import caffe
import numpy as np

import fake_cfg as cfg


class RoIDataLayer(caffe.Layer):
    """Three tops (end to end: data, im_info, gt_boxes) or six (Fast R-CNN: data, rois,
    labels, bbox_targets, bbox_inside_weights, bbox_outside_weights)."""

    def setup(self, bottom, top):
        self.num_classes = cfg.params(self.param_str)["num_classes"]
        self.rng = np.random.default_rng(0)
        h, w = cfg.IMAGE
        self.rpn = len(top) == 3
        ims = 1 if self.rpn else 2            # cfg.TRAIN.IMS_PER_BATCH
        top[0].reshape(ims, 3, h, w)
        if self.rpn:
            top[1].reshape(1, 3)              # im_info: height, width, scale
            top[2].reshape(4, 5)              # gt_boxes: x1, y1, x2, y2, class (4 objects here)
        else:
            k = 4 * self.num_classes
            for i, shape in enumerate([(cfg.BATCH_SIZE, 5), (cfg.BATCH_SIZE,),
                                       (cfg.BATCH_SIZE, k), (cfg.BATCH_SIZE, k),
                                       (cfg.BATCH_SIZE, k)], 1):
                top[i].reshape(*shape)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        rng = self.rng
        h, w = cfg.IMAGE
        top[0].data[...] = rng.normal(size=top[0].shape) * 50
        if self.rpn:
            top[1].data[...] = [[h, w, 1.0]]
            gt = top[2].data
            gt[:, :4] = cfg.boxes(rng, gt.shape[0], h, w)
            gt[:, 4] = rng.integers(1, self.num_classes, gt.shape[0])
            return
        rois = top[1].data
        rois[:, 0] = rng.integers(0, top[0].shape[0], cfg.BATCH_SIZE)
        rois[:, 1:] = cfg.boxes(rng, cfg.BATCH_SIZE, h, w)
        labels = cfg.sampled_labels(rng, self.num_classes)
        top[2].data[...] = labels
        for blob, value in zip(top[3:], cfg.targets(rng, labels, self.num_classes)):
            blob.data[...] = value

    def backward(self, top, propagate_down, bottom):
        pass
''',
    "rpn/anchor_target_layer.py": '''
import caffe
import numpy as np

import fake_cfg as cfg


class AnchorTargetLayer(caffe.Layer):
    """Bottoms rpn_cls_score (1, 2A, H, W), gt_boxes, im_info, data; tops rpn_labels
    (1, 1, A*H, W) in {-1, 0, 1}, rpn_bbox_targets, inside and outside weights (1, 4A, H, W)."""

    def setup(self, bottom, top):
        self.feat_stride = cfg.params(self.param_str)["feat_stride"]
        self.rng = np.random.default_rng(1)
        height, width = bottom[0].shape[-2:]
        top[0].reshape(1, 1, cfg.A * height, width)
        for t in top[1:]:
            t.reshape(1, cfg.A * 4, height, width)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        rng = self.rng
        labels = rng.choice([-1.0, 0.0, 1.0], size=top[0].shape, p=[0.7, 0.2, 0.1])
        top[0].data[...] = labels
        top[1].data[...] = rng.normal(size=top[1].shape)
        per_anchor = labels.reshape(1, cfg.A, 1, *top[1].shape[2:])   # channel = 4·anchor + j
        top[2].data[...] = np.repeat(per_anchor == 1, 4, axis=2).reshape(top[2].shape)
        sampled = np.repeat(per_anchor >= 0, 4, axis=2).reshape(top[3].shape)
        top[3].data[...] = sampled / max(int((labels >= 0).sum()), 1)   # uniform weighting

    def backward(self, top, propagate_down, bottom):
        pass
''',
    "rpn/proposal_layer.py": '''
import caffe
import numpy as np

import fake_cfg as cfg


class ProposalLayer(caffe.Layer):
    """Bottoms rpn_cls_prob_reshape (1, 2A, H, W), rpn_bbox_pred, im_info; top rois (R, 5),
    R = the phase's post-NMS count (at most A*H*W), batch index 0; optional scores (R, 1)."""

    def setup(self, bottom, top):
        self.feat_stride = cfg.params(self.param_str)["feat_stride"]
        self.rng = np.random.default_rng(2)
        height, width = bottom[0].shape[-2:]
        self.count = min(cfg.POST_NMS[self.phase], cfg.A * height * width)
        top[0].reshape(self.count, 5)
        if len(top) > 1:
            top[1].reshape(self.count, 1)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        h, w = bottom[2].data[0, :2]
        scores = bottom[0].data[:, cfg.A:].ravel()
        order = np.argsort(-scores, kind="stable")[:self.count]
        rois = top[0].data
        rois[:, 0] = 0
        rois[:, 1:] = cfg.boxes(self.rng, self.count, int(h), int(w))
        if len(top) > 1:
            top[1].data[:, 0] = scores[order]

    def backward(self, top, propagate_down, bottom):
        pass
''',
    "rpn/proposal_target_layer.py": '''
import caffe
import numpy as np

import fake_cfg as cfg


class ProposalTargetLayer(caffe.Layer):
    """Bottoms rpn_rois (R, 5), gt_boxes (G, 5); tops rois (128, 5), labels (128,),
    bbox_targets, bbox_inside_weights, bbox_outside_weights (128, 4·num_classes)."""

    def setup(self, bottom, top):
        self.num_classes = cfg.params(self.param_str)["num_classes"]
        self.rng = np.random.default_rng(3)
        k = 4 * self.num_classes
        for t, shape in zip(top, [(cfg.BATCH_SIZE, 5), (cfg.BATCH_SIZE,), (cfg.BATCH_SIZE, k),
                                  (cfg.BATCH_SIZE, k), (cfg.BATCH_SIZE, k)]):
            t.reshape(*shape, *(1,) * (4 - len(shape) if cfg.FOUR_D else 0))

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        rng = self.rng
        gt = bottom[1].data
        pool = np.vstack([bottom[0].data, np.hstack([np.zeros((len(gt), 1)), gt[:, :4]])])
        pick = rng.choice(len(pool), cfg.BATCH_SIZE, replace=len(pool) < cfg.BATCH_SIZE)
        top[0].data[...] = pool[pick].reshape(top[0].shape)
        labels = cfg.sampled_labels(rng, self.num_classes)
        top[1].data[...] = labels.reshape(top[1].shape)
        for blob, value in zip(top[2:], cfg.targets(rng, labels, self.num_classes)):
            blob.data[...] = value.reshape(blob.shape)

    def backward(self, top, propagate_down, bottom):
        pass
''',
}


def write_modules(folder: Path, four_d: bool = False) -> None:
    """The doubles' modules in ``folder``; ``four_d``: the proposal targets with py-R-FCN's 4-D
    shapes (its ``proposal_target_layer.py`` reshapes them (R, ·, 1, 1))."""
    for rel, text in SOURCES.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if four_d:
            text = text.replace("FOUR_D = False", "FOUR_D = True")
        path.write_text(text.lstrip())
