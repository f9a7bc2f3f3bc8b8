"""SSD's training loss (weiliu89/caffe): ``MultiBoxLoss``.

Matching, mining and the scatter of the gradients are small and branchy, so they run on the
host in NumPy (one short loop over images and, in bipartite matching, over ground truths; none
over priors); the arrays are copied back to the backend. Boxes are normalised to the image:
[xmin, ymin, xmax, ymax].
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import to_numpy
from ..errors import DataError
from .base import Layer
from .detection import decode_boxes, iou_matrix
from .loss import Normalizer, normalization_of
from .registry import register
from .softmax import FLT_MIN, softmax

F32 = np.float32
#: SSD's smallest overlap that counts as one (``MatchBBox``)
MIN_OVERLAP = 1e-6


def match_boxes(gt: np.ndarray, pred: np.ndarray, match_type: str, overlap_threshold: float,
                ignore_cross_boundary: bool) -> tuple[np.ndarray, np.ndarray]:
    """SSD's ``MatchBBox`` of the ground truths ``gt`` (G, 4) against the boxes ``pred`` (P, 4).

    Returns (match (P,) int: the gt index, -1 none, -2 a cross-boundary box left out when
    ``ignore_cross_boundary``; overlap (P,) float32). Overlaps ≤ 1e-6 do not count. Bipartite
    first: repeatedly the largest overlap of a free box with a free ground truth (ties: lowest
    box, then lowest gt) pairs them; PER_PREDICTION then gives every free box its best ground
    truth with overlap ≥ ``overlap_threshold``. A free box's overlap is its largest with any
    ground truth."""
    P, G = len(pred), len(gt)
    match = np.full(P, -1, dtype=np.intp)
    overlap = np.zeros(P, dtype=F32)
    if G == 0:
        return match, overlap
    ov = iou_matrix(pred.astype(F32), gt.astype(F32))                        # (P, G)
    if ignore_cross_boundary:
        cross = ((pred < 0) | (pred > 1)).any(axis=1)
        match[cross] = -2
        ov[cross] = 0
    counted = ov > MIN_OVERLAP
    overlap[:] = np.where(counted, ov, 0).max(axis=1)
    free = np.where(counted, ov, -1.0).astype(F32)
    for _ in range(G):                                                        # bipartite
        k = int(np.argmax(free))
        i, j = divmod(k, G)
        if free[i, j] <= -1:
            break
        match[i], overlap[i] = j, free[i, j]
        free[i, :] = -1
        free[:, j] = -1
    if match_type == "PER_PREDICTION":
        rest = np.flatnonzero(match == -1)
        cand = np.where(counted[rest] & (ov[rest] >= F32(overlap_threshold)), ov[rest], -1.0)
        best = np.argmax(cand, axis=1)
        ok = cand[np.arange(len(rest)), best] > -1
        match[rest[ok]] = best[ok]
        overlap[rest[ok]] = ov[rest[ok], best[ok]]
    return match, overlap


def encode_boxes(gt: np.ndarray, prior: np.ndarray, var: np.ndarray, code_type: str,
                 variance_in_target: bool) -> np.ndarray:
    """SSD's ``EncodeBBox``: the offsets (..., 4) of boxes ``gt`` from their priors, divided by
    the variances unless ``variance_in_target``; the inverse of ``decode_boxes``."""
    dt = gt.dtype
    one = np.ones_like(var) if variance_in_target else var
    if code_type == "CORNER":
        return (gt - prior) / one
    pw = prior[..., 2] - prior[..., 0]
    ph = prior[..., 3] - prior[..., 1]
    if code_type == "CORNER_SIZE":
        size = np.stack([pw, ph, pw, ph], axis=-1)
        return (gt - prior) / size / one
    out = np.empty(np.broadcast_shapes(gt.shape, prior.shape), dtype=dt)
    pcx, pcy = (prior[..., 0] + prior[..., 2]) / 2, (prior[..., 1] + prior[..., 3]) / 2
    bw, bh = gt[..., 2] - gt[..., 0], gt[..., 3] - gt[..., 1]
    bcx, bcy = (gt[..., 0] + gt[..., 2]) / 2, (gt[..., 1] + gt[..., 3]) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        out[..., 0] = (bcx - pcx) / pw / one[..., 0]
        out[..., 1] = (bcy - pcy) / ph / one[..., 1]
        out[..., 2] = np.log(bw / pw) / one[..., 2]
        out[..., 3] = np.log(bh / ph) / one[..., 3]
    return out


def softmax_loss_rows(x: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of scores x (R, C): −log max(p_label, FLT_MIN) and the gradient p − onehot."""
    p = softmax(np, x)
    rows = np.arange(len(x))
    loss = -np.log(np.maximum(p[rows, label], FLT_MIN))
    p[rows, label] -= 1
    return loss, p


def logistic_loss_rows(x: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of logits x (R, C) and targets (R, C): Σ_c of the stable sigmoid cross-entropy
    and the gradient σ(x) − t."""
    pos = x >= 0
    err = -(x * (target - pos) - np.log1p(np.exp(x - 2 * x * pos)))
    return err.sum(axis=1), 1 / (1 + np.exp(-x)) - target


@register("MultiBoxLoss")
class MultiBoxLoss(Layer):
    """SSD's ``MultiBoxLossLayer``: loss = w·L_loc / n + L_conf / n.

    Bottoms: ``loc`` (N, P·L·4; L = 1 with ``share_location``, else num_classes), ``conf``
    (N, P·C scores), ``prior`` (1, 2, P·4: PriorBox's boxes and variances), ``label``
    (1, 1, G, 8: rows [image, label, instance, xmin, ymin, xmax, ymax, difficult]; image −1
    rows are padding). Top: the scalar loss. Per image, the ground truths (difficult ones
    only with ``use_difficult_gt``) are matched to the priors (``use_prior_for_matching``) or
    to the decoded predictions (``match_boxes``). Mining: MAX_NEGATIVE keeps the
    min(⌊pos·neg_pos_ratio⌋, eligible) unmatched boxes with overlap < ``neg_overlap`` of
    largest conf loss (as background); HARD_EXAMPLE keeps the ``sample_size`` boxes of largest
    conf + loc loss, positives not kept dropped; NONE scores every box. L_loc = Σ over matches
    of smooth L1 (or ½·squared for L2) of prediction − encoded ground truth (``code_type``);
    L_conf = Σ softmax (or per-class logistic) loss over the positives (their gt label, or 1
    with ``map_object_to_agnostic``) and chosen negatives (``background_label_id``).
    n = ``loss_param.normalization`` of (N, P, number of matches), at least 1. As in SSD, a
    term enters the top only when ``propagate_down`` (default true, true, false, false) is
    true for its bottom. Backward to loc and conf only.
    """

    writes_bottom_diffs = True

    param_block = "multibox_loss_param"
    exact_bottoms = 4
    exact_tops = 1
    is_loss = True
    no_grad_bottoms = (2, 3)

    def _check_params(self):
        p = self.p
        f = "multibox_loss_param."
        if p.num_classes is None or p.num_classes < 1:
            raise self.spec_error("needs num_classes (at least 1)", field=f + "num_classes")
        if p.do_neg_mining is not None and p.do_neg_mining != (p.mining_type != "NONE"):
            raise self.spec_error(f"do_neg_mining {str(p.do_neg_mining).lower()} contradicts "
                                  f"mining_type {p.mining_type} (do_neg_mining is deprecated: "
                                  "leave it out)", field=f + "do_neg_mining")
        if p.mining_type != "NONE" and not p.share_location:
            raise self.spec_error("negative mining needs share_location true (as in SSD); set "
                                  "mining_type NONE", field=f + "mining_type")
        if p.conf_loss_type == "SOFTMAX" and p.background_label_id >= p.num_classes:
            raise self.spec_error(f"background_label_id {p.background_label_id} must be below "
                                  f"num_classes {p.num_classes}", field=f + "background_label_id")
        if p.map_object_to_agnostic and p.num_classes != 2:
            raise self.spec_error("map_object_to_agnostic needs num_classes 2",
                                  field=f + "map_object_to_agnostic")
        if p.mining_type == "MAX_NEGATIVE" and p.neg_pos_ratio <= 0:
            raise self.spec_error("neg_pos_ratio must be positive", field=f + "neg_pos_ratio")
        if p.mining_type == "HARD_EXAMPLE":
            if p.sample_size <= 0:
                raise self.spec_error("sample_size must be positive", field=f + "sample_size")
            if p.nms_param is not None and p.nms_param.nms_threshold > 0:
                raise self.spec_error("HARD_EXAMPLE mining with an nms_param (NMS over the "
                                      "mined boxes) is not implemented in netspec; leave "
                                      "nms_param out", field=f + "nms_param")

    def setup(self, bottom_shapes):
        self._check_params()
        p = self.p
        C = p.num_classes
        self.L = 1 if p.share_location else C
        loc, conf, prior, label = (tuple(s) for s in bottom_shapes)
        if len(prior) < 3 or prior[-2] != 2 or prior[-1] % 4:
            raise self.error(f"prior must have shape (1, 2, P·4) as PriorBox gives, got {prior}")
        self.P = prior[-1] // 4
        if not loc or not conf or loc[0] != conf[0]:
            raise self.error(f"loc {loc} and conf {conf} must have the same number of images")
        if math.prod(loc[1:]) != self.P * self.L * 4:
            raise self.error(f"loc {loc} must hold {self.P} priors × {self.L} × 4 values per "
                             "image")
        if math.prod(conf[1:]) != self.P * C:
            raise self.error(f"conf {conf} must hold {self.P} priors × {C} classes per image")
        if math.prod(label) % 8:
            raise self.error(f"label {label} must hold rows of 8 values [image, label, "
                             "instance, xmin, ymin, xmax, ymax, difficult]")
        self.normalization = normalization_of(self)
        pd = list(self.lp.propagate_down) or [True, True, False, False]
        self.counts_loc, self.counts_conf = bool(pd[0]), bool(pd[1])
        return [()]

    # -- the steps of the forward ---------------------------------------------------------------

    def ground_truth(self, label: np.ndarray, N: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image: (boxes (G_i, 4), labels (G_i,)) in the order of the label rows."""
        p = self.p
        rows = label.reshape(-1, 8)
        rows = rows[rows[:, 0].astype(np.int64) != -1]
        lab = rows[:, 1].astype(np.int64)
        if (lab == p.background_label_id).any():
            raise self.error(f"a ground-truth row has the background label "
                             f"{p.background_label_id} (SSD: 'Found background label in the "
                             "dataset')", cls=DataError)
        if not p.use_difficult_gt:
            rows = rows[rows[:, 7] == 0]
        image = rows[:, 0].astype(np.int64)
        return [(rows[image == i, 3:7], rows[image == i, 1].astype(np.int64)) for i in range(N)]

    def find_matches(self, gts, loc, prior, var):
        """match (N, L, P) and overlap (N, L, P); ``active`` (N, L): which (image, loc class)
        SSD keeps a match list for (an image with ground truth; not the background class)."""
        p, N, P, L = self.p, loc.shape[0], self.P, self.L
        match = np.full((N, L, P), -1, dtype=np.intp)
        overlap = np.zeros((N, L, P), dtype=F32)
        active = np.zeros((N, L), dtype=bool)
        for i, (boxes, labels) in enumerate(gts):
            if len(boxes) == 0:
                continue
            if p.use_prior_for_matching:
                m, o = match_boxes(boxes, prior, p.match_type, p.overlap_threshold,
                                   p.ignore_cross_boundary_bbox)
                if p.share_location:
                    match[i, 0], overlap[i, 0], active[i, 0] = m, o, True
                    continue
                gl = np.where(m > -1, labels[np.maximum(m, 0)], -1)
                for c in range(L):
                    if c == p.background_label_id:
                        continue
                    match[i, c] = np.where(gl == c, m, -1)
                    overlap[i, c], active[i, c] = o, True
                continue
            for c in range(L):
                if not p.share_location and c == p.background_label_id:
                    continue
                pick = np.arange(len(labels)) if p.share_location else np.flatnonzero(labels == c)
                boxes_c = decode_boxes(loc[i, :, c], prior, var, p.code_type,
                                       p.encode_variance_in_target)
                m, o = match_boxes(boxes[pick], boxes_c, p.match_type, p.overlap_threshold,
                                   p.ignore_cross_boundary_bbox)
                match[i, c] = np.where(m > -1, pick[np.maximum(m, 0)], m)
                overlap[i, c], active[i, c] = o, True
        return match, overlap, active

    def gt_label_of(self, gts, match):
        """The ground-truth label of each match (N, L, P); the background where none."""
        p = self.p
        out = np.full(match.shape, p.background_label_id, dtype=np.intp)
        hit = match > -1
        if p.map_object_to_agnostic:
            out[hit] = p.background_label_id + 1
        elif hit.any():
            first = np.cumsum([0] + [len(lab) for _, lab in gts])
            i = np.nonzero(hit)[0]
            out[hit] = np.concatenate([lab for _, lab in gts])[first[i] + match[hit]]
        return out

    def loc_terms(self, gts, match, loc, prior, var):
        """For every match, in (image, loc class, prior) order: the prediction and encoded
        target (M, 4), and where the matches are (i, c, j)."""
        p = self.p
        i, c, j = np.nonzero(match > -1)
        gt_boxes = np.concatenate([b for b, _ in gts])
        first = np.cumsum([0] + [len(b) for b, _ in gts])
        dt = loc.dtype
        target = encode_boxes(gt_boxes[first[i] + match[i, c, j]].astype(dt), prior[j].astype(dt),
                              var[j].astype(dt), p.code_type, p.encode_variance_in_target)
        pred = loc[i, j, c].copy()
        if p.bp_inside:
            box = prior[j] if p.use_prior_for_matching else decode_boxes(
                loc[i, j, c], prior[j], var[j], p.code_type, p.encode_variance_in_target)
            outside = (box < 0) | (box > 1)
            pred[outside] = target[outside]
        if p.encode_variance_in_target:
            pred, target = pred / var[j], target / var[j]
        return pred, target, (i, c, j)

    def loc_loss(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-element loss and gradient of d = prediction − target."""
        if self.p.loc_loss_type == "L2":
            return 0.5 * d * d, d
        a = np.abs(d)
        return np.where(a < 1, 0.5 * d * d, a - 0.5), np.where(a < 1, d, np.sign(d))

    def conf_rows(self, x: np.ndarray, label: np.ndarray, logistic_hot: np.ndarray):
        """Loss and gradient per row of scores x (R, C) for the class ``label`` (R,);
        ``logistic_hot`` (R,) bool: whether a LOGISTIC row's target has its 1."""
        if self.p.conf_loss_type == "SOFTMAX":
            return softmax_loss_rows(x, label)
        t = np.zeros_like(x)
        ok = logistic_hot & (label >= 0) & (label < x.shape[1])
        t[np.flatnonzero(ok), label[ok]] = 1
        return logistic_loss_rows(x, t)

    def mine(self, conf, match, overlap, active, gt_label, loc_per_prior):
        """SSD's ``MineHardExamples``: the negatives (N, P) bool; drops the positives
        HARD_EXAMPLE does not keep (``match`` is changed in place)."""
        p = self.p
        N, P = conf.shape[:2]
        label = gt_label[:, 0].reshape(-1)
        loss, _ = self.conf_rows(conf.reshape(N * P, -1), label, np.ones(N * P, bool))
        loss = loss.reshape(N, P).astype(F32) + loc_per_prior
        m, o = match[:, 0], overlap[:, 0]
        was_positive = m > -1
        if p.mining_type == "MAX_NEGATIVE":
            eligible = (m == -1) & (o < F32(p.neg_overlap))
            num_pos = was_positive.sum(axis=1)
            num_sel = np.minimum((num_pos.astype(F32) * F32(p.neg_pos_ratio)).astype(np.int64),
                                 eligible.sum(axis=1))
        else:
            eligible = np.ones((N, P), dtype=bool)
            num_sel = np.full(N, min(p.sample_size, P), dtype=np.int64)
        eligible &= active[:, :1]
        key = np.where(eligible, loss, -np.inf)
        order = np.argsort(-key, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(P)[None, :].repeat(N, 0), axis=1)
        selected = eligible & (rank < num_sel[:, None])
        if p.mining_type == "HARD_EXAMPLE":
            m[was_positive & ~selected] = -1
            return selected & (m == -1) & ~was_positive
        return selected & (m == -1)

    # -- forward and backward ---------------------------------------------------------------

    def forward(self, bottom, top):
        p, P, L, C = self.p, self.P, self.L, self.p.num_classes
        loc = to_numpy(bottom[0].data)
        N = loc.shape[0]
        dt = loc.dtype
        loc = loc.reshape(N, P, L, 4)
        conf = to_numpy(bottom[1].data).reshape(N, P, C)
        prior = to_numpy(bottom[2].data).reshape(2, P, 4)
        prior, var = prior[0], prior[1]
        gts = self.ground_truth(to_numpy(bottom[3].data), N)
        match, overlap, active = self.find_matches(gts, loc, prior, var)
        # the loc loss of each matched prior (HARD_EXAMPLE ranks by it)
        loc_per_prior = np.zeros((N, P), dtype=dt)
        if p.mining_type == "HARD_EXAMPLE" and (match > -1).any():
            pred, target, (i, c, j) = self.loc_terms(gts, match, loc, prior, var)
            np.add.at(loc_per_prior, (i, j), self.loc_loss(pred - target)[0].sum(axis=1))
        gt_label = self.gt_label_of(gts, match)
        if p.mining_type != "NONE":
            negative = self.mine(conf, match, overlap, active, gt_label, loc_per_prior)
            if p.mining_type == "HARD_EXAMPLE":
                gt_label = self.gt_label_of(gts, match)
        num_matches = int((match > -1).sum())
        self.normalizer = float(Normalizer(np, np.float64, self.normalization, N, P)(num_matches))
        # localization
        loc_loss = 0.0
        self.loc_grad = None
        if num_matches:
            pred, target, where = self.loc_terms(gts, match, loc, prior, var)
            err, grad = self.loc_loss(pred - target)
            loc_loss = err.sum()
            self.loc_grad = (grad * dt.type(p.loc_weight), where)
        # confidence
        if p.mining_type == "NONE":
            rows_i, rows_j = np.nonzero(np.ones((N, P), dtype=bool))
            positive = match > -1
            # the label of a prior matched in several loc classes: the last class's (SSD)
            last = np.where(positive, np.arange(L)[None, :, None], -1).argmax(axis=1)
            label = np.take_along_axis(gt_label, last[:, None, :], axis=1)[:, 0]
            label = np.where(positive.any(axis=1), label, p.background_label_id).reshape(-1)
            hot = positive.any(axis=1).reshape(-1)
        else:
            positive = match[:, 0] > -1
            pi, pj = np.nonzero(positive)
            ni, nj = np.nonzero(negative)
            rows_i, rows_j = np.concatenate([pi, ni]), np.concatenate([pj, nj])
            label = np.concatenate([gt_label[pi, 0, pj],
                                    np.full(len(ni), p.background_label_id, dtype=np.intp)])
            hot = np.ones(len(rows_i), dtype=bool)
        conf_loss = 0.0
        self.conf_grad = None
        if len(rows_i):
            err, grad = self.conf_rows(conf[rows_i, rows_j], label, hot)
            conf_loss = err.sum()
            self.conf_grad = (grad, (rows_i, rows_j))
        total = 0.0
        if self.counts_loc:
            total += float(p.loc_weight) * float(loc_loss) / self.normalizer
        if self.counts_conf:
            total += float(conf_loss) / self.normalizer
        top[0].data[...] = total

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        scale = float(to_numpy(top[0].diff)) / self.normalizer
        P, L, C = self.P, self.L, self.p.num_classes
        if propagate_down[0]:
            N = bottom[0].shape[0]
            d = np.zeros((N, P, L, 4), dtype=self.dtype)
            if self.loc_grad is not None:
                grad, (i, c, j) = self.loc_grad
                d[i, j, c] = grad * scale
            bottom[0].diff[...] = xp.asarray(d.reshape(bottom[0].shape))
        if propagate_down[1]:
            N = bottom[1].shape[0]
            d = np.zeros((N, P, C), dtype=self.dtype)
            if self.conf_grad is not None:
                grad, (i, j) = self.conf_grad
                d[i, j] = grad * scale
            bottom[1].diff[...] = xp.asarray(d.reshape(bottom[1].shape))
