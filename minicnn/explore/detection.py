"""What the page shows for a detection run: the boxes, every layer, and why the top box is there.

:class:`DetectionExplorer` is an :class:`~minicnn.explore.analysis.Explorer` for a run of a grid
detector (``minicnn train --model tiny-detector``). The boxes come from
:func:`minicnn.detection.inference.detect_image`, the very function ``minicnn detect`` calls on
a file, so the page shows what ``minicnn detect --json`` prints for the same image. The layer
outputs come from running the same network input through the layers one by one, and the
saliency of a box is the gradient of its score through the layers' own ``backward``.

A box's score is ``sigmoid(objectness) * softmax(class logits)[class]`` of the grid cell that
made it (:func:`minicnn.detection.head.decode`), so

``d score / d objectness = score * (1 - sigmoid(objectness))``
``d score / d logit_k = score * (1[k == class] - softmax_k)``

at that cell, and 0 for every other output of the head.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..detection.evaluation import detector_geometry
from ..detection.head import HEAD_CHANNELS
from ..detection.inference import (DEFAULT_THRESHOLD, Detections, detect_image, fit_to_input,
                                   gray_image)
from ..nn.functional import softmax
from ..preprocess import ink_on_black
from .analysis import Analysis, Explorer, ExploreError, decode_upload


def cell_scores(head: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every grid cell's box score, class and class probabilities, as ``decode`` rates them.

    Parameters
    ----------
    head : ndarray (5 + classes, S_h, S_w)
        The detector's output for one image.

    Returns
    -------
    scores : float64 (S_h, S_w)
    classes : int64 (S_h, S_w)
    probabilities : float64 (classes, S_h, S_w)
        Softmax of the class logits.
    """
    p = np.asarray(head, dtype=np.float64)
    logits = p[HEAD_CHANNELS:]
    probabilities = softmax(logits, axis=0)
    objectness = 0.5 * (1.0 + np.tanh(0.5 * p[0]))
    return objectness * probabilities.max(axis=0), probabilities.argmax(axis=0), probabilities


def score_gradient(head: np.ndarray, row: int, col: int) -> np.ndarray:
    """d(score of cell ``(row, col)``) / d(head output), same shape as ``head``, float32."""
    p = np.asarray(head, dtype=np.float64)
    scores, classes, probabilities = cell_scores(p)
    score, chosen = scores[row, col], classes[row, col]
    gradient = np.zeros(p.shape, dtype=np.float64)
    objectness = 0.5 * (1.0 + np.tanh(0.5 * p[0, row, col]))
    gradient[0, row, col] = score * (1.0 - objectness)
    one_hot = np.zeros(p.shape[0] - HEAD_CHANNELS)
    one_hot[chosen] = 1.0
    gradient[HEAD_CHANNELS:, row, col] = score * (one_hot - probabilities[:, row, col])
    return gradient.astype(np.float32)


class DetectionExplorer(Explorer):
    """A trained detection run, ready to answer the page's questions.

    Parameters are those of :class:`Explorer`; ``threshold`` is the lowest score of a box
    shown (``minicnn detect``'s default).
    """

    task = "detection"
    #: What a saliency is asked for (``GET /api/saliency?box=N``).
    saliency_target = "box"

    def __init__(self, model, meta, name: str = "", keep: int = 32,
                 threshold: float = DEFAULT_THRESHOLD):
        try:
            self.stride, self.prior = detector_geometry(model)
        except ValueError as error:
            raise ExploreError(f"not a detection run: {error}") from None
        self.threshold = threshold
        self._cells: dict[str, list[tuple[int, int]]] = {}
        super().__init__(model, meta, name=name, keep=keep)

    def _check_output(self) -> None:
        if self.input_shape[0] != 1:    # detect_image reads pictures as gray
            raise ExploreError(f"detection runs with {self.input_shape[0]} input channels are "
                               "not supported (1)")
        shape = self._shapes[-1]
        expected = HEAD_CHANNELS + len(self.meta.classes)
        if len(shape) != 3 or shape[0] != expected:
            raise ExploreError(f"not a detection run: the network's output has shape {shape}, "
                               f"expected ({expected}, S, S) for its {len(self.meta.classes)} "
                               "classes")

    def info(self) -> dict:
        return {**super().info(), "task": "detection", "threshold": self.threshold,
                "stride": self.stride, "prior": self.prior}

    def payload(self, analysis: Analysis, found: Detections, scale: float,
                gradient: np.ndarray, top: int | None) -> dict:
        """The answer to ``POST /api/analyse``: the boxes instead of class probabilities."""
        from .payloads import detection_payload

        return detection_payload(self, analysis, found, scale, gradient, top)

    # -----------------------------------------------------------------------------------------
    def analyse(self, data: bytes, enhance: bool = True
                ) -> tuple[Analysis, Detections, float, np.ndarray, int | None]:
        """Find the boxes in an image file's bytes, run every layer, and the top box's saliency.

        Returns
        -------
        analysis : Analysis
            ``pixels`` is the detector's (1, H, W) input canvas before normalising;
            ``probabilities`` is every cell's score (S_h, S_w).
        detections : Detections
            As ``minicnn detect`` finds them (boxes in the picture's pixels).
        scale : float
            Network-input pixels per picture pixel.
        saliency : ndarray (1, H, W) float32
            d(score of the top box, or of the best cell when there is none) / d(canvas pixel).
        top : int or None
            0 when there is a box, None when none scores above the threshold.
        """
        rgba = decode_upload(data)
        _, height, width = self.input_shape
        # The steps detect_image takes, kept to show them (it returns only the last picture).
        gray = gray_image(rgba)
        steps = [("as drawn", gray)]
        ink, inverted = ink_on_black(gray) if enhance else (gray, False)
        if enhance:
            steps.append(("light on black, full contrast", ink))
        canvas, scale = fit_to_input(ink, height, width)
        steps.append((f"scaled by {scale:.3g} into {height}x{width}", canvas))
        mean, std = np.float32(self.meta.mean[0]), np.float32(self.meta.std[0])
        network_input = ((canvas - mean) / std)[None, None]     # as detect_image makes it
        key = hashlib.sha256(data).hexdigest()[:16] + ("" if enhance else "-raw")
        with self._lock:
            found = detect_image(self.model, self.meta, rgba, enhance=enhance,
                                 threshold=self.threshold)
            outputs = self._forward(network_input)
            scores, _, _ = cell_scores(outputs[-1])
            cells = [self._cell_of(scores, float(s)) for s in found.scores]
            best = cells[0] if cells else np.unravel_index(int(np.argmax(scores)), scores.shape)
            gradient = self._score_to_pixels(outputs[-1], *best)
            analysis = Analysis(key, canvas[None], network_input, outputs,
                                scores.astype(np.float32), steps, inverted)
            self._remember(analysis)
            self._cells[key] = cells
        return analysis, found, scale, gradient, (0 if cells else None)

    @staticmethod
    def _cell_of(scores: np.ndarray, score: float) -> tuple[int, int]:
        """The grid cell whose score is a box's score (decode keeps one box per cell)."""
        index = int(np.argmin(np.abs(scores - score)))
        row, col = np.unravel_index(index, scores.shape)
        return int(row), int(col)

    def _remember(self, analysis: Analysis) -> None:
        self._recent[analysis.id] = analysis
        self._recent.move_to_end(analysis.id)
        while len(self._recent) > self._keep:
            dropped, _ = self._recent.popitem(last=False)
            self._cells.pop(dropped, None)

    def _score_to_pixels(self, head: np.ndarray, row: int, col: int) -> np.ndarray:
        """d(score of cell ``(row, col)``) / d(canvas pixel) through the layers' ``backward``;
        must follow a forward of the same image."""
        dy = score_gradient(head, row, col)[None]
        self.model.zero_grad()
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        self.model.zero_grad()
        return (dy[0] / self.std).astype(np.float32)

    def saliency(self, input_id: str, box: int) -> np.ndarray:
        """d(score of box ``box``) / d(canvas pixel) for a kept analysis, shape (1, H, W)."""
        analysis = self.get(input_id)
        with self._lock:
            cells = self._cells.get(input_id, [])
            if not 0 <= box < len(cells):
                raise ExploreError(f"box must be 0..{len(cells) - 1}, got {box}" if cells else
                                   f"no box was found in this image (box {box} asked for)")
            outputs = self._forward(analysis.network_input)
            return self._score_to_pixels(outputs[-1], *cells[box])
