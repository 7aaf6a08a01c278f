"""The grid detector's output, its loss and its decoding into boxes.

The box is parametrised as in YOLOv2 with a single prior per cell (a sigmoid offset inside the
cell, the size as ``prior * exp(t)``); YOLO v1 regressed sizes directly and had no prior.

The network ends in a 1x1 convolution with ``5 + classes`` channels on an ``S x S`` grid of
cells, each ``stride`` pixels wide. Channel by channel, for the cell in row ``i``, column ``j``:

=========  =====================================================================================
channel    meaning
=========  =====================================================================================
0          objectness logit ``o``: is an object's centre in this cell?
1, 2       ``tx, ty``: the centre is at ``((j + sigmoid(tx)) * stride, (i + sigmoid(ty)) * stride)``
3, 4       ``tw, th``: the size is ``prior * exp(tw)`` by ``prior * exp(th)`` pixels
5 ...      class logits
=========  =====================================================================================

The cell that holds an object's centre is *responsible* for it; every other cell should say
"nothing here". The loss per image is

``BCE(o, responsible) summed over cells
+ box_weight * sum over responsible cells of [(sigmoid(tx) - gx)^2 + (sigmoid(ty) - gy)^2
  + (tw - log(w / prior))^2 + (th - log(h / prior))^2]
+ cross-entropy of the class logits, summed over responsible cells``

averaged over the batch, where ``(gx, gy)`` is the centre's offset inside its cell (0..1).
"""

from __future__ import annotations

import numpy as np

from ..nn.functional import log_softmax, softmax
from ..nn.loss import _Loss
from .boxes import batched_nms, clip_boxes, nms

HEAD_CHANNELS = 5          # objectness, tx, ty, tw, th; the class logits follow


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))       # stable for large |x|, exact in float64


def _softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def encode_targets(targets: np.ndarray, grid: tuple[int, int], stride: float, prior: float):
    """Turn boxes into per-cell training targets.

    Parameters
    ----------
    targets : int or float array, shape (N, K, 5)
        Rows ``(class, x0, y0, x1, y1)`` in input pixels; rows with class ``-1`` are padding.
    grid : (S_h, S_w)
    stride, prior : float
        Cell size and box-size prior, pixels.

    Returns
    -------
    responsible : bool (N, S_h, S_w)
    box : float64 (N, 4, S_h, S_w)
        ``gx, gy, log(w / prior), log(h / prior)`` at responsible cells, 0 elsewhere.
    classes : int64 (N, S_h, S_w)
        The class at responsible cells, -1 elsewhere.

    Raises
    ------
    ValueError
        For a box with no area or a centre outside the grid. When two centres fall in one
        cell the later object wins (the scenes never do that: their boxes are at least 20
        pixels wide and never overlap, so two centres are at least 20 pixels apart).
    """
    targets = np.asarray(targets)
    if targets.ndim != 3 or targets.shape[2] != 5:
        raise ValueError(f"detection targets must have shape (N, K, 5) of (class, x0, y0, "
                         f"x1, y1), got {targets.shape}")
    n = targets.shape[0]
    rows, cols = grid
    responsible = np.zeros((n, rows, cols), dtype=bool)
    box = np.zeros((n, 4, rows, cols), dtype=np.float64)
    classes = np.full((n, rows, cols), -1, dtype=np.int64)
    image, slot = np.nonzero(targets[..., 0] >= 0)
    if image.size == 0:
        return responsible, box, classes
    t = targets[image, slot].astype(np.float64)
    w, h = t[:, 3] - t[:, 1], t[:, 4] - t[:, 2]
    if np.any(w <= 0) or np.any(h <= 0):
        raise ValueError("detection targets: every box needs x1 > x0 and y1 > y0")
    cx, cy = (t[:, 1] + t[:, 3]) / 2 / stride, (t[:, 2] + t[:, 4]) / 2 / stride
    j, i = np.floor(cx).astype(np.int64), np.floor(cy).astype(np.int64)
    if np.any((i < 0) | (i >= rows) | (j < 0) | (j >= cols)):
        raise ValueError(f"detection targets: a box centre lies outside the {rows}x{cols} grid "
                         f"of {stride:g}-pixel cells")
    responsible[image, i, j] = True
    box[image, :, i, j] = np.stack([cx - j, cy - i, np.log(w / prior), np.log(h / prior)], 1)
    classes[image, i, j] = t[:, 0].astype(np.int64)
    return responsible, box, classes


class DetectionLoss(_Loss):
    """Objectness + box + class loss of a grid detector (see the module docstring).

    Parameters
    ----------
    stride : float
        Pixels per grid cell (the input size over the grid size).
    prior : float
        Box-size prior in pixels (``tw = 0`` means a ``prior``-pixel box).
    box_weight : float
        Weight of the box term against objectness and class (YOLO v1 used 5).

    Shapes
    ------
    prediction ``(N, 5 + classes, S, S)`` float; targets ``(N, K, 5)`` integer rows
    ``(class, x0, y0, x1, y1)`` in input pixels, padded with rows of -1.

    Attributes
    ----------
    parts : dict
        The last forward's ``objectness``, ``box`` and ``class`` terms (batch means).
    """

    def __init__(self, stride: float, prior: float, box_weight: float = 5.0):
        super().__init__()
        self.stride, self.prior, self.box_weight = float(stride), float(prior), float(box_weight)
        self._cache = None
        self.parts: dict[str, float] = {}

    def forward(self, prediction: np.ndarray, targets) -> float:
        name = "DetectionLoss"
        if not isinstance(prediction, np.ndarray) or prediction.ndim != 4 \
                or prediction.shape[1] < HEAD_CHANNELS + 1:
            raise ValueError(f"{name}: expected a prediction of shape (N, 5 + classes, S, S), "
                             f"got {getattr(prediction, 'shape', type(prediction).__name__)}")
        targets = np.asarray(targets)
        n, channels, rows, cols = prediction.shape
        if targets.ndim != 3 or targets.shape[0] != n or targets.shape[2] != 5:
            raise ValueError(f"{name}: expected targets of shape ({n}, K, 5) to match the "
                             f"prediction {prediction.shape}, got {targets.shape}")
        num_classes = channels - HEAD_CHANNELS
        if np.any(targets[..., 0] >= num_classes):
            raise ValueError(f"{name}: classes must be < {num_classes}, got "
                             f"{int(targets[..., 0].max())}")
        self._check_finite(name, prediction)
        responsible, box_target, classes = encode_targets(targets, (rows, cols), self.stride,
                                                          self.prior)
        p = prediction.astype(np.float64)
        mask = responsible.astype(np.float64)
        objectness = p[:, 0]
        obj_loss = (_softplus(objectness) - mask * objectness).sum()

        centre = _sigmoid(p[:, 1:3])
        size = p[:, 3:5]
        box_error = np.concatenate([centre, size], axis=1) - box_target
        box_error *= mask[:, None]
        box_loss = self.box_weight * (box_error ** 2).sum()

        logits = p[:, HEAD_CHANNELS:]
        log_probs = log_softmax(logits, axis=1)
        image, i, j = np.nonzero(responsible)
        cls_loss = -log_probs[image, classes[image, i, j], i, j].sum()

        self._cache = (prediction.dtype, mask, centre, box_error, np.exp(log_probs),
                       (image, i, j, classes[image, i, j]), objectness)
        denominator = max(n, 1)
        self.parts = {"objectness": obj_loss / denominator, "box": box_loss / denominator,
                      "class": cls_loss / denominator}
        return float((obj_loss + box_loss + cls_loss) / denominator)

    def backward(self) -> np.ndarray:
        """``d loss / d prediction``, shape ``(N, 5 + classes, S, S)``, the prediction's dtype.

        Objectness: ``sigmoid(o) - responsible``. Centre: ``2 w e s (1 - s)`` with
        ``s = sigmoid(t)`` and ``e`` its error; size: ``2 w e``. Class: ``softmax - onehot``
        at responsible cells. All over the batch size.
        """
        self._require_forward(self._cache)
        dtype, mask, centre, box_error, probs, (image, i, j, cls), objectness = self._cache
        n = mask.shape[0]
        grad = np.zeros((n, HEAD_CHANNELS + probs.shape[1], *mask.shape[1:]), dtype=np.float64)
        grad[:, 0] = _sigmoid(objectness) - mask
        grad[:, 1:3] = 2 * self.box_weight * box_error[:, :2] * centre * (1 - centre)
        grad[:, 3:5] = 2 * self.box_weight * box_error[:, 2:]
        class_grad = probs * mask[:, None]
        class_grad[image, cls, i, j] -= 1.0
        grad[:, HEAD_CHANNELS:] = class_grad
        return (grad / max(n, 1)).astype(dtype, copy=False)

    def extra_repr(self) -> str:
        return f"stride={self.stride:g}, prior={self.prior:g}, box_weight={self.box_weight:g}"


def decode(prediction: np.ndarray, stride: float, prior: float, score_threshold: float = 0.05,
           iou_threshold: float = 0.5, class_agnostic: bool = True, image_size=None):
    """Boxes, scores and classes for each image of a batch of grid predictions.

    A cell's score is ``sigmoid(objectness) * max softmax(class logits)``; cells scoring
    above ``score_threshold`` become boxes, clipped to the image, and non-maximum suppression
    removes the duplicates that neighbouring cells give for one object (across classes when
    ``class_agnostic``, the default: two objects of the scenes never overlap, so two boxes on
    one place are one object however they are labelled).

    Parameters
    ----------
    prediction : (N, 5 + classes, S_h, S_w)
    stride, prior : float
        As in :class:`DetectionLoss`.
    image_size : (height, width), optional
        Where boxes are clipped; default the grid times the stride.

    Returns
    -------
    list of N dicts with ``boxes`` float64 ``(k, 4)``, ``scores`` ``(k,)`` and ``classes``
    int64 ``(k,)``, by decreasing score, in the input's pixels.
    """
    p = np.asarray(prediction, dtype=np.float64)
    if p.ndim != 4 or p.shape[1] < HEAD_CHANNELS + 1:
        raise ValueError(f"decode: expected a prediction of shape (N, 5 + classes, S, S), got "
                         f"{p.shape}")
    n, _, rows, cols = p.shape
    height, width = image_size if image_size is not None else (rows * stride, cols * stride)
    logits = p[:, HEAD_CHANNELS:]
    probs = softmax(logits, axis=1)
    scores = _sigmoid(p[:, 0]) * probs.max(axis=1)
    classes = probs.argmax(axis=1)
    ii, jj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    cx = (jj + _sigmoid(p[:, 1])) * stride
    cy = (ii + _sigmoid(p[:, 2])) * stride
    w = prior * np.exp(np.clip(p[:, 3], -10, 10))     # clip: a wild logit must not overflow
    h = prior * np.exp(np.clip(p[:, 4], -10, 10))
    results = []
    for k in range(n):
        chosen = scores[k] > score_threshold
        boxes = np.stack([cx[k] - w[k] / 2, cy[k] - h[k] / 2, cx[k] + w[k] / 2,
                          cy[k] + h[k] / 2], axis=-1)[chosen]
        boxes = clip_boxes(boxes.reshape(-1, 4), width, height)
        s, c = scores[k][chosen], classes[k][chosen]
        keep = (nms(boxes, s, iou_threshold) if class_agnostic
                else batched_nms(boxes, s, c, iou_threshold))
        results.append({"boxes": boxes[keep], "scores": s[keep], "classes": c[keep]})
    return results
