"""Worked solution of tutorial 14's exercise (loaded by ``tutorial_tools.exercise`` when
``MINICNN_TUTORIAL_SOLUTIONS=1``)."""

import numpy as np


def non_max_suppression(boxes, scores, iou_threshold):
    """Greedy NMS: indices of the kept boxes, by decreasing score.

    boxes : (K, 4) ``(x0, y0, x1, y1)``; scores : (K,); a box is dropped when its IoU with an
    already kept, higher-scoring box is greater than ``iou_threshold``.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    order = list(np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"))
    keep = []
    while order:
        best = order.pop(0)
        keep.append(best)
        survivors = []
        for other in order:
            left = max(boxes[best, 0], boxes[other, 0])
            top = max(boxes[best, 1], boxes[other, 1])
            right = min(boxes[best, 2], boxes[other, 2])
            bottom = min(boxes[best, 3], boxes[other, 3])
            inter = max(right - left, 0) * max(bottom - top, 0)
            area = lambda b: (b[2] - b[0]) * (b[3] - b[1])        # noqa: E731
            union = area(boxes[best]) + area(boxes[other]) - inter
            if (inter / union if union > 0 else 0.0) <= iou_threshold:
                survivors.append(other)
        order = survivors
    return np.asarray(keep, dtype=np.int64)
