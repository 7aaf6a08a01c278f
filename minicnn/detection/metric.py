"""Mean average precision (mAP) of detections at one IoU threshold, as PASCAL VOC (2010 on)
defines it (COCO's AP differs: precision interpolated at 101 recall points, averaged over
IoU thresholds 0.5 to 0.95; its AP50 is this metric at IoU 0.5, up to that interpolation).

For one class, every detection of that class over all images is sorted by score (highest
first). Walking down that list, a detection is a *true positive* when its IoU with a ground
truth box of its class in its image is at least the threshold and that box was not matched by
a higher-scoring detection already; otherwise it is a *false positive* (a second detection of
an already found object counts against precision). After each detection,

    precision = TP / (TP + FP)        recall = TP / (number of ground-truth boxes)

Average precision is the area under the precision-recall curve after making precision
monotone (each point takes the best precision at that recall or beyond: "all-point
interpolation")::

    AP = sum over k of (r_k - r_{k-1}) * max_{j >= k} p_j      with r_0 = 0

mAP is the mean of AP over the classes that have ground-truth boxes. A class with
ground-truth boxes but no detections has AP 0; a class with no ground truth is left out of
the mean (its AP is undefined, and is reported as NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .boxes import box_iou


@dataclass
class ClassCurve:
    """Precision and recall after each detection of one class, by decreasing score."""

    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray
    ground_truths: int
    average_precision: float


def average_precision(precision, recall) -> float:
    """All-point interpolated AP of a precision-recall curve (VOC 2010+).

    Parameters
    ----------
    precision, recall : (K,)
        After each of K detections, by decreasing score (recall never decreases).
    """
    precision = np.asarray(precision, dtype=np.float64)
    recall = np.asarray(recall, dtype=np.float64)
    if precision.shape != recall.shape or precision.ndim != 1:
        raise ValueError(f"precision and recall must be 1-D of one length, got "
                         f"{precision.shape} and {recall.shape}")
    if precision.size == 0:
        return 0.0
    # The envelope: precision at recall r is the best precision at any recall >= r.
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(steps * envelope))


def _check_image(entry, what: str, index: int, scored: bool):
    boxes = np.asarray(entry["boxes"], dtype=np.float64).reshape(-1, 4)
    classes = np.asarray(entry["classes"]).reshape(-1)
    if len(classes) != len(boxes):
        raise ValueError(f"{what}[{index}]: {len(boxes)} boxes but {len(classes)} classes")
    scores = None
    if scored:
        scores = np.asarray(entry["scores"], dtype=np.float64).reshape(-1)
        if len(scores) != len(boxes):
            raise ValueError(f"{what}[{index}]: {len(boxes)} boxes but {len(scores)} scores")
    return boxes, classes, scores


def class_curves(detections, ground_truth, num_classes: int,
                 iou_threshold: float = 0.5) -> list[ClassCurve]:
    """Precision-recall curve and AP of every class.

    Parameters
    ----------
    detections : list (one per image) of dicts with ``boxes`` (k, 4), ``scores`` (k,),
        ``classes`` (k,)
    ground_truth : list (one per image, same order) of dicts with ``boxes`` (g, 4) and
        ``classes`` (g,)
    num_classes : int
    iou_threshold : float
        A match needs IoU >= this (0.5: PASCAL VOC's criterion, COCO's AP50).

    Returns
    -------
    list of ClassCurve, one per class (``average_precision`` NaN for a class without ground
    truth).
    """
    if len(detections) != len(ground_truth):
        raise ValueError(f"{len(detections)} images of detections but {len(ground_truth)} of "
                         "ground truth")
    dets = [_check_image(d, "detections", i, True) for i, d in enumerate(detections)]
    truths = [_check_image(g, "ground_truth", i, False) for i, g in enumerate(ground_truth)]
    curves = []
    for c in range(num_classes):
        gt_boxes = [b[k == c] for b, k, _ in truths]
        total = sum(len(b) for b in gt_boxes)
        image = np.concatenate([np.full(np.count_nonzero(k == c), i)
                                for i, (_, k, _) in enumerate(dets)]).astype(np.int64)
        boxes = np.concatenate([b[k == c] for b, k, _ in dets]).reshape(-1, 4)
        scores = np.concatenate([s[k == c] for _, k, s in dets])
        order = np.argsort(-scores, kind="stable")
        image, boxes, scores = image[order], boxes[order], scores[order]
        matched = [np.zeros(len(b), dtype=bool) for b in gt_boxes]
        hit = np.zeros(len(scores), dtype=bool)
        for d in range(len(scores)):
            candidates = gt_boxes[image[d]]
            if len(candidates) == 0:
                continue
            overlaps = box_iou(boxes[d:d + 1], candidates)[0]
            best = int(np.argmax(overlaps))
            # VOC: the detection goes to the ground truth it overlaps most; if that one is
            # already taken, the detection is a duplicate (a false positive).
            if overlaps[best] >= iou_threshold and not matched[image[d]][best]:
                matched[image[d]][best] = True
                hit[d] = True
        tp = np.cumsum(hit)
        precision = tp / np.arange(1, len(hit) + 1)
        recall = tp / total if total else np.zeros(len(hit))
        ap = average_precision(precision, recall) if total else float("nan")
        curves.append(ClassCurve(precision, recall, scores, total, ap))
    return curves


def mean_average_precision(detections, ground_truth, num_classes: int,
                           iou_threshold: float = 0.5) -> tuple[float, np.ndarray]:
    """``(mAP, per-class AP (num_classes,))``; see :func:`class_curves`. The mean skips
    classes without ground truth (NaN in the per-class array); with no ground truth at all
    the mAP is NaN."""
    curves = class_curves(detections, ground_truth, num_classes, iou_threshold)
    per_class = np.array([c.average_precision for c in curves])
    valid = ~np.isnan(per_class)
    return (float(per_class[valid].mean()) if valid.any() else float("nan")), per_class


def precision_recall_at(detections, ground_truth, score_threshold: float,
                        iou_threshold: float = 0.5) -> tuple[float, float]:
    """Precision and recall of the detections scoring at least ``score_threshold``, a match
    needing the right class and IoU >= ``iou_threshold`` (each ground truth matched once)."""
    tp = fp = total = 0
    for i, (d, g) in enumerate(zip(detections, ground_truth)):
        boxes, classes, scores = _check_image(d, "detections", i, True)
        gt_boxes, gt_classes, _ = _check_image(g, "ground_truth", i, False)
        total += len(gt_boxes)
        keep = scores >= score_threshold
        boxes, classes, scores = boxes[keep], classes[keep], scores[keep]
        matched = np.zeros(len(gt_boxes), dtype=bool)
        for k in np.argsort(-scores, kind="stable"):
            overlaps = box_iou(boxes[k:k + 1], gt_boxes)[0] if len(gt_boxes) else np.zeros(0)
            overlaps = np.where((gt_classes == classes[k]) & ~matched, overlaps, -1.0)
            best = int(np.argmax(overlaps)) if len(overlaps) else -1
            if best >= 0 and overlaps[best] >= iou_threshold:
                matched[best] = True
                tp += 1
            else:
                fp += 1
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / total if total else 1.0
    return precision, recall
