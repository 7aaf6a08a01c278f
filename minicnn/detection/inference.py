"""Detect objects in pictures of any size: fit them to the detector, map the boxes back.

A picture is read (any format, size, channel count or bit depth :mod:`minicnn.preprocess`
reads), made gray, and by default made light-on-black with full contrast as the scenes are
(:func:`minicnn.preprocess.ink_on_black`). It is then scaled, keeping its aspect ratio, to fit
the run's input and placed in the top-left corner of a black canvas of that size; the boxes
found are divided by the same scale, so they come back in the picture's own pixels, and are
clipped to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data import DataError
from ..inference import forward as network_forward
from ..preprocess import composite, ink_on_black, luminance, read_rgba
from .head import decode
from .evaluation import NMS_IOU, detector_geometry

#: Boxes scoring below this are not reported by ``minicnn detect`` (its ``--threshold``).
DEFAULT_THRESHOLD = 0.5


@dataclass
class Detections:
    """What was found in one picture.

    Attributes
    ----------
    boxes : ndarray float64 (k, 4)
        ``(x0, y0, x1, y1)`` in the picture's pixels, inside the picture.
    scores : ndarray (k,)
    classes : ndarray int64 (k,)
    labels : list of str
    image : ndarray float32 (H, W)
        The picture as the detector saw it (gray, light on black), at its own size.
    inverted : bool
        The picture had dark objects on a light background and was inverted.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    labels: list[str]
    image: np.ndarray
    inverted: bool = False

    def to_json(self) -> list[dict]:
        return [{"label": label, "score": round(float(score), 4),
                 "box": [round(float(v), 1) for v in box]}
                for label, score, box in zip(self.labels, self.scores, self.boxes)]


def gray_image(pixels: np.ndarray) -> np.ndarray:
    """A float picture ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` in [0, 1] as
    gray ``(H, W)`` float32 (RGB by luminance, transparency composited).

    Raises
    ------
    DataError
        For an empty picture or another shape, naming what came.
    """
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = composite(pixels)
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        pixels = luminance(pixels)
    if pixels.ndim != 2:
        raise DataError(f"expected a picture of shape (H, W) or (H, W, C) with C = 1, 3 or 4 "
                        f"channels, got shape {pixels.shape}")
    if pixels.size == 0:
        raise DataError(f"the picture is empty (shape {pixels.shape})")
    return pixels


def fit_to_input(gray: np.ndarray, height: int, width: int) -> tuple[np.ndarray, float]:
    """Scale ``gray`` (keeping its aspect ratio) to fit ``height x width`` and put it in the
    top-left corner of a black canvas; returns ``(canvas (height, width), scale)``."""
    from PIL import Image

    scale = min(height / gray.shape[0], width / gray.shape[1])
    h = min(height, max(1, round(gray.shape[0] * scale)))
    w = min(width, max(1, round(gray.shape[1] * scale)))
    resized = Image.fromarray(np.ascontiguousarray(gray, dtype=np.float32), mode="F")
    resized = np.asarray(resized.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
    canvas = np.zeros((height, width), dtype=np.float32)
    canvas[:h, :w] = np.clip(resized, 0.0, 1.0)
    return canvas, scale


def detect_image(model, meta, pixels, enhance: bool = True,
                 threshold: float = DEFAULT_THRESHOLD) -> Detections:
    """Find the objects in one picture.

    Parameters
    ----------
    model : a detector (e.g. from :func:`minicnn.train.load_run`)
    meta : RunMeta
        The run's input shape, normalisation and class names.
    pixels : ndarray (H, W) or (H, W, C), C in 1, 3, 4, values in [0, 1]
    enhance : bool
        Invert a light background and stretch the contrast (as ``minicnn predict`` does);
        False: only convert to gray and resize.
    threshold : float
        Keep boxes scoring at least this.
    """
    channels, height, width = meta.input_shape
    if channels != 1:
        raise DataError(f"detection runs with {channels} input channels are not supported (1)")
    gray = gray_image(pixels)
    inverted = False
    if enhance:
        gray, inverted = ink_on_black(gray)
    canvas, scale = fit_to_input(gray, height, width)
    mean = np.float32(meta.mean[0])
    std = np.float32(meta.std[0])
    stride, prior = detector_geometry(model)
    # One image: the whole network as one compiled call (minicnn.inference), eval mode.
    prediction = network_forward(model, ((canvas - mean) / std)[None, None].astype(np.float32))
    found = decode(prediction, stride, prior, score_threshold=threshold, iou_threshold=NMS_IOU,
                   image_size=(height, width))[0]
    boxes = found["boxes"] / scale
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, gray.shape[1])
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, gray.shape[0])
    keep = found["scores"] >= threshold
    return Detections(boxes=boxes[keep], scores=found["scores"][keep],
                      classes=found["classes"][keep],
                      labels=[meta.classes[c] for c in found["classes"][keep]],
                      image=gray, inverted=inverted)


def detect_file(model, meta, path, enhance: bool = True,
                threshold: float = DEFAULT_THRESHOLD) -> Detections:
    """:func:`detect_image` on an image file (read with :func:`minicnn.preprocess.read_rgba`)."""
    return detect_image(model, meta, read_rgba(path), enhance=enhance, threshold=threshold)
