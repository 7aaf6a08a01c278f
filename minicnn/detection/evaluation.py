"""A grid detector measured on a scene data set: its loss and mAP@0.5 over every scene.

:class:`minicnn.tasks.detection.DetectionTask` uses :func:`evaluate_detector` as the
detection task's evaluation (after each epoch on the validation scenes, at the end on the test
scenes, and for ``minicnn evaluate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data import DataLoader
from .head import DetectionLoss, decode
from .metric import ClassCurve, class_curves

#: Cells scoring below this are not boxes when mAP is measured: low enough that the
#: precision-recall curve reaches its end (COCO keeps detections down to 0.001-0.05).
EVAL_SCORE_THRESHOLD = 0.01
#: Two boxes overlapping more than this are one object (non-maximum suppression).
NMS_IOU = 0.5
#: A detection is right when its IoU with a ground-truth box of its class is at least this.
MATCH_IOU = 0.5


@dataclass
class DetectionEvaluation:
    """A detector measured on a scene data set.

    Attributes
    ----------
    map : float
        Mean average precision at IoU 0.5 over the classes that have objects.
    per_class_ap : ndarray (classes,)
        NaN for a class without objects in the data set.
    loss : float
        Mean :class:`DetectionLoss` per scene.
    curves : list of ClassCurve
        Precision and recall of each class, for the figures.
    detections : list of dict
        Per scene: ``boxes`` (k, 4), ``scores`` (k,), ``classes`` (k,), best first.
    ground_truth : list of dict
        Per scene: ``boxes`` (g, 4), ``classes`` (g,).
    """

    map: float
    per_class_ap: np.ndarray
    loss: float
    curves: list[ClassCurve] = field(repr=False)
    detections: list[dict] = field(repr=False)
    ground_truth: list[dict] = field(repr=False)


def detector_geometry(model) -> tuple[float, float]:
    """``(stride, prior)`` of a detector built by :mod:`minicnn.models`."""
    stride, prior = getattr(model, "stride", None), getattr(model, "prior", None)
    if stride is None or prior is None:
        raise ValueError("this model is not a detector (it has no stride and prior)")
    return float(stride), float(prior)


def ground_truth_of(dataset) -> list[dict]:
    """Per scene, ``{"boxes": (g, 4), "classes": (g,)}`` without the padding rows."""
    out = []
    for index in range(len(dataset)):
        boxes, classes = dataset.boxes(index)
        out.append({"boxes": boxes, "classes": classes})
    return out


def detect_batches(model, loader, score_threshold: float = EVAL_SCORE_THRESHOLD,
                   loss_fn: DetectionLoss | None = None):
    """Run ``model`` (eval mode) over ``loader``; returns ``(detections, mean loss or None)``."""
    stride, prior = detector_geometry(model)
    was_training = model.training
    model.eval()
    detections, loss_sum, seen = [], 0.0, 0
    try:
        for x, targets in loader:
            prediction = model(x)
            if loss_fn is not None:
                loss_sum += loss_fn(prediction, targets) * len(x)
            seen += len(x)
            detections += decode(prediction, stride, prior, score_threshold=score_threshold,
                                 iou_threshold=NMS_IOU, image_size=x.shape[2:])
    finally:
        model.train(was_training)
    return detections, (loss_sum / seen if loss_fn is not None and seen else None)


def evaluate_detector(model, dataset, transform=None,
                      batch_size: int = 256) -> DetectionEvaluation:
    """mAP@0.5, per-class AP, mean loss and every detection of ``model`` on ``dataset``."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, transform=transform)
    detections, loss = detect_batches(model, loader, loss_fn=detection_loss(model))
    truth = ground_truth_of(dataset)
    curves = class_curves(detections, truth, len(dataset.classes), MATCH_IOU)
    per_class = np.array([c.average_precision for c in curves])
    valid = ~np.isnan(per_class)
    mean = float(per_class[valid].mean()) if valid.any() else float("nan")
    return DetectionEvaluation(map=mean, per_class_ap=per_class, loss=float(loss),
                               curves=curves, detections=detections, ground_truth=truth)


def detection_loss(model) -> DetectionLoss:
    """The :class:`DetectionLoss` for a detector built by :mod:`minicnn.models`."""
    stride, prior = detector_geometry(model)
    return DetectionLoss(stride=stride, prior=prior)
