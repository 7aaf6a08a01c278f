"""Boxes ``(x0, y0, x1, y1)`` in pixels: intersection over union and non-maximum suppression.

A box covers ``x0 <= x < x1`` and ``y0 <= y < y1`` (so its width is ``x1 - x0``), as in
torchvision's ``box_iou`` and ``nms``, whose names and arguments these follow.
"""

from __future__ import annotations

import numpy as np


def _as_boxes(boxes, name: str) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (K, 4) of (x0, y0, x1, y1), got "
                         f"{boxes.shape}")
    return boxes


def box_area(boxes) -> np.ndarray:
    """Areas ``(K,)`` of boxes ``(K, 4)``; a box with ``x1 < x0`` (or ``y1 < y0``) has 0."""
    boxes = _as_boxes(boxes, "boxes")
    return (np.clip(boxes[:, 2] - boxes[:, 0], 0, None)
            * np.clip(boxes[:, 3] - boxes[:, 1], 0, None))


def box_iou(boxes1, boxes2) -> np.ndarray:
    """Intersection over union of every pair: ``(K, 4), (L, 4) -> (K, L)``.

    ``IoU = area(A ∩ B) / (area(A) + area(B) - area(A ∩ B))``; two empty boxes have IoU 0.
    """
    a, b = _as_boxes(boxes1, "boxes1"), _as_boxes(boxes2, "boxes2")
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 2], b[None, :, 2])
    bottom = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes, scores, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    Take the highest-scoring box, drop every remaining box that overlaps it with IoU
    *greater than* ``iou_threshold``, repeat with what is left (torchvision's rule).

    Parameters
    ----------
    boxes : (K, 4)
    scores : (K,)
    iou_threshold : float in [0, 1]

    Returns
    -------
    ndarray, int64, shape (k,)
        Indices of the kept boxes, by decreasing score (ties: the earlier box first).
    """
    boxes = _as_boxes(boxes, "boxes")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(boxes),):
        raise ValueError(f"scores must have shape ({len(boxes)},) to match the boxes, got "
                         f"{scores.shape}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold!r}")
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best = order[0]
        keep.append(best)
        overlap = box_iou(boxes[best:best + 1], boxes[order[1:]])[0]
        order = order[1:][overlap <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes, scores, classes, iou_threshold: float) -> np.ndarray:
    """:func:`nms` within each class separately (boxes of different classes never suppress
    each other). Returns the kept indices by decreasing score."""
    boxes = _as_boxes(boxes, "boxes")
    scores = np.asarray(scores, dtype=np.float64)
    classes = np.asarray(classes)
    keep = [np.flatnonzero(classes == c)[nms(boxes[classes == c], scores[classes == c],
                                             iou_threshold)]
            for c in np.unique(classes)]
    keep = np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)
    return keep[np.argsort(-scores[keep], kind="stable")]


def clip_boxes(boxes, width: float, height: float) -> np.ndarray:
    """Boxes moved inside the image ``[0, width] x [0, height]`` (a copy)."""
    boxes = _as_boxes(boxes, "boxes").copy()
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    return boxes
