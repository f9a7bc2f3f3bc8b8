"""SSD's detection test phase: average precision over DetectionEvaluate rows.

A test net of a solver with ``eval_type: detection`` ends in DetectionEvaluate layers whose tops
hold rows [−1, label, number of ground-truth boxes, −1, −1] and [image, label, score, tp, fp]
(``netspec/layers/detection.py``). Over the ``test_iter`` batches of a test, ``DetectionTally``
sums each label's ground-truth count and collects its (score, tp, fp) triples (rows with
tp = fp = 0, detections of difficult boxes not evaluated, are left out); then per label

    detections sorted by descending score (ties in the order they came), cumulative TP_k, FP_k,
    precision_k = TP_k / (TP_k + FP_k),  recall_k = TP_k / num_pos   (float32, as SSD)

and the average precision (``ap_version``, SSD's ComputeAP):

    11point      (1/11) Σ_{t = 0, 0.1, …, 1} max{precision_k : recall_k ≥ t}  (0 where none;
                 recall in float32 against t in double, so a recall of exactly 0.7 or 0.9
                 counts as below t: SSD's comparison)
    MaxIntegral  Σ over the recall steps of the step times the largest precision at that
                 recall or beyond (VOC2010+ / ILSVRC)
    Integral     Σ_k precision_k · (recall_k − recall_{k−1}) over the steps (> 1e-6)

The output's mAP is the mean over every label that had a class row (SSD divides by the number
of labels, so a label without detections counts 0); SSD's Solver::TestDetection.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
AP_VERSIONS = ("11point", "MaxIntegral", "Integral")
EPS = 1e-6


def precision_recall(scores, tp, fp, num_pos: int) -> tuple[np.ndarray, np.ndarray]:
    """SSD's precision and recall (float32) after each detection, by descending score."""
    order = np.argsort(-np.asarray(scores, dtype=F32), kind="stable")
    tp_sum = np.cumsum(np.asarray(tp, dtype=np.int64)[order])
    fp_sum = np.cumsum(np.asarray(fp, dtype=np.int64)[order])
    prec = tp_sum.astype(F32) / (tp_sum + fp_sum).astype(F32)
    rec = tp_sum.astype(F32) / F32(num_pos)
    return prec.astype(F32), rec.astype(F32)


def average_precision(scores, tp, fp, num_pos: int, version: str = "Integral") -> float:
    """SSD's ComputeAP of one label's detections (see the module docstring); 0 with no
    detection or no ground truth."""
    if version not in AP_VERSIONS:
        raise ValueError(f"ap_version must be one of {', '.join(AP_VERSIONS)}, got {version!r}")
    if len(scores) == 0 or num_pos == 0:
        return 0.0
    prec, rec = precision_recall(scores, tp, fp, num_pos)
    if (np.cumsum(np.asarray(tp)) > num_pos).any():
        raise ValueError(f"{int(np.sum(tp))} true positives for {num_pos} ground-truth boxes")
    ap = F32(0)
    if version == "11point":
        rec64 = rec.astype(np.float64)
        for j in range(10, -1, -1):
            above = prec[rec64 >= j / 10.0]
            ap = F32(ap + (above.max() if len(above) else F32(0)) / F32(11))
    elif version == "MaxIntegral":
        envelope = np.maximum.accumulate(prec[::-1])[::-1]      # max precision from k on
        cur_rec = rec[-1]
        for k in range(len(rec) - 2, -1, -1):
            step = abs(cur_rec - rec[k])
            if step > EPS:
                ap = F32(ap + envelope[k] * step)
            cur_rec = rec[k]
        ap = F32(ap + cur_rec * envelope[0])
    else:
        prev = F32(0)
        for k in range(len(rec)):
            step = abs(rec[k] - prev)
            if step > EPS:
                ap = F32(ap + prec[k] * step)
            prev = rec[k]
    return float(ap)


class DetectionTally:
    """The rows of one DetectionEvaluate output summed over a test's batches."""

    def __init__(self) -> None:
        self.num_pos: dict[int, int] = {}
        self.rows: dict[int, list[np.ndarray]] = {}

    def add(self, top: np.ndarray) -> None:
        """Add one forward's top (…, 5)."""
        rows = np.asarray(top, dtype=F32).reshape(-1, 5)
        item, label = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64)
        for c, n in zip(label[item == -1], rows[item == -1, 2].astype(np.int64)):
            self.num_pos[int(c)] = self.num_pos.get(int(c), 0) + int(n)
        det = rows[(item != -1) & ((rows[:, 3] != 0) | (rows[:, 4] != 0))]
        for c in np.unique(det[:, 1].astype(np.int64)):
            self.rows.setdefault(int(c), []).append(det[det[:, 1].astype(np.int64) == c])

    def average_precisions(self, version: str) -> tuple[dict[int, float], list[int]]:
        """Per label with a class row, its AP (labels without detections: 0), and the labels
        that had no detection (SSD warns 'Missing true_pos for label')."""
        aps, missing = {}, []
        for c in sorted(self.num_pos):
            if c not in self.rows:
                aps[c] = 0.0
                missing.append(c)
                continue
            r = np.concatenate(self.rows[c])
            aps[c] = average_precision(r[:, 2], r[:, 3].astype(np.int64),
                                       r[:, 4].astype(np.int64), self.num_pos[c], version)
        return aps, missing



def mean_ap(aps: dict[int, float]) -> float:
    """The mean of the labels' APs, summed in label order in float32 as SSD; 0 for none."""
    total = F32(0)
    for c in sorted(aps):
        total = F32(total + F32(aps[c]))
    return float(total / F32(len(aps))) if aps else 0.0
