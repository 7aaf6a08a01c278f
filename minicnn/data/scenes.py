"""Scenes of several objects on one canvas, made from a classification data set's images.

``mnist-scenes``: 96x96 black canvases holding 1 to 4 MNIST digits, each cropped to its ink,
resized so that its longer side is 20 to 40 pixels, and placed where it overlaps no other
digit. The boxes are the pasted ink's tight bounds in pixels, ``(x0, y0, x1, y1)`` with
``x1``/``y1`` exclusive (a digit covering columns 10..29 has ``x0 = 10, x1 = 30``), so a box's
width is ``x1 - x0``. Train scenes use only the train split's digits, test scenes only the test
split's, and the same seed always makes the same scenes; nothing is written to disk.

The targets of a scene data set are one int64 array ``(N, MAX_OBJECTS, 5)`` of rows
``(class, x0, y0, x1, y1)``, padded with rows of ``-1``: the same kind of array the
:class:`~minicnn.data.DataLoader` batches for classification labels, so detection trains
through the same loader and ``fit``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .dataset import Dataset
from .errors import DataError

MAX_OBJECTS = 4
PAD = -1


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a uint8 ``(h, w)`` image with Pillow's antialiased bilinear filter."""
    from PIL import Image

    out = Image.fromarray(np.ascontiguousarray(image)).resize((width, height),
                                                              Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8)


def ink_crop(digit: np.ndarray, threshold: int = 0) -> np.ndarray:
    """``digit`` (h, w) uint8 cropped to the pixels brighter than ``threshold``."""
    rows = np.flatnonzero((digit > threshold).any(axis=1))
    cols = np.flatnonzero((digit > threshold).any(axis=0))
    if rows.size == 0:
        return digit
    return digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _overlaps(box, boxes, gap: int) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < bx1 + gap and bx0 < x1 + gap and y0 < by1 + gap and by0 < y1 + gap
               for bx0, by0, bx1, by1 in boxes)


def make_scenes(images: np.ndarray, labels: np.ndarray, count: int, rng,
                canvas: int = 96, objects: tuple[int, int] = (1, MAX_OBJECTS),
                sizes: tuple[int, int] = (20, 40), gap: int = 1, tries: int = 100):
    """Compose ``count`` scenes from single-object images.

    Parameters
    ----------
    images : ndarray, uint8, shape (M, 1, h, w) or (M, h, w)
        Light objects on black (MNIST-like).
    labels : ndarray, int, shape (M,)
    count : int
        Number of scenes.
    rng : numpy.random.Generator or seed
    canvas : int
        Side of the square canvas in pixels.
    objects : (low, high)
        Objects per scene, drawn uniformly from ``low..high`` (inclusive).
    sizes : (low, high)
        Longer side of each resized object's ink, uniformly from ``low..high`` pixels.
    gap : int
        Pixels kept free between two boxes.
    tries : int
        Random places tried per object; an object that finds no free place is left out, so
        a scene may hold fewer objects than drawn (about one four-object scene in twelve).

    Returns
    -------
    scenes : ndarray, uint8, shape (count, 1, canvas, canvas)
    targets : ndarray, int64, shape (count, MAX_OBJECTS, 5)
        Rows ``(class, x0, y0, x1, y1)``, padding rows all ``-1``.
    """
    rng = np.random.default_rng(rng)
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[:, 0]
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"make_scenes: images must be uint8 (M, h, w) or (M, 1, h, w), got "
                        f"{images.dtype} {images.shape}")
    low, high = objects
    if not 1 <= low <= high <= MAX_OBJECTS:
        raise DataError(f"make_scenes: objects must satisfy 1 <= low <= high <= {MAX_OBJECTS},"
                        f" got {objects}")
    if not 1 <= sizes[0] <= sizes[1] <= canvas:
        raise DataError(f"make_scenes: sizes must satisfy 1 <= low <= high <= {canvas}, got "
                        f"{sizes}")
    scenes = np.zeros((count, 1, canvas, canvas), dtype=np.uint8)
    targets = np.full((count, MAX_OBJECTS, 5), PAD, dtype=np.int64)
    for n in range(count):
        boxes: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(low, high + 1))):
            index = int(rng.integers(len(images)))
            crop = ink_crop(images[index])
            side = int(rng.integers(sizes[0], sizes[1] + 1))
            scale = side / max(crop.shape)
            h = max(1, round(crop.shape[0] * scale))
            w = max(1, round(crop.shape[1] * scale))
            for _ in range(tries):
                x0 = int(rng.integers(0, canvas - w + 1))
                y0 = int(rng.integers(0, canvas - h + 1))
                box = (x0, y0, x0 + w, y0 + h)
                if not _overlaps(box, boxes, gap):
                    break
            else:
                continue
            patch = _resize(crop, h, w)
            region = scenes[n, 0, y0:y0 + h, x0:x0 + w]
            np.maximum(region, patch, out=region)
            targets[n, len(boxes)] = (int(labels[index]), *box)
            boxes.append(box)
    return scenes, targets


class SceneDataset(Dataset):
    """Scenes and their boxes in memory; batches like a classification data set.

    Parameters
    ----------
    images : ndarray, uint8, shape (N, C, H, W)
    targets : ndarray, int64, shape (N, MAX_OBJECTS, 5)
        Rows ``(class, x0, y0, x1, y1)`` in pixels, padding rows ``-1``.
    classes : sequence of str
    mean, std : sequence of float, one per channel, [0, 1] units
    name, split, source : str
        As :class:`minicnn.data.Dataset`, which this is, with box rows for labels.

    Attributes
    ----------
    labels
        The targets under the name the :class:`~minicnn.data.DataLoader` batches.
    """

    task = "detection"
    _kind = "scene data set"

    def __init__(self, images: np.ndarray, targets: np.ndarray, classes: Sequence[str],
                 mean: Sequence[float], std: Sequence[float], name: str = "",
                 split: str = "", source: str | None = None):
        super().__init__(images, targets, classes, mean, std, name=name, split=split,
                         source=source)

    @staticmethod
    def _checked_labels(targets: np.ndarray, n: int, classes: list, what: str) -> np.ndarray:
        """The box rows as int64 after checking their shape and classes."""
        if targets.ndim != 3 or targets.shape[0] != n or targets.shape[2] != 5:
            raise DataError(f"{what}: targets must have shape ({n}, K, 5), got "
                            f"{targets.shape}")
        if not np.issubdtype(targets.dtype, np.integer):
            raise DataError(f"{what}: targets must be integers, got {targets.dtype}")
        real = targets[..., 0] >= 0
        if np.any(targets[..., 0][real] >= len(classes)) or np.any(targets[..., 0] < PAD):
            raise DataError(f"{what}: classes must lie in 0..{len(classes) - 1} (or -1 for "
                            "padding)")
        return targets.astype(np.int64, copy=False)

    @property
    def targets(self) -> np.ndarray:
        return self.labels

    def boxes(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Scene ``index``'s ``(boxes float (k, 4), classes int (k,))`` without padding."""
        rows = self.labels[index]
        rows = rows[rows[:, 0] >= 0]
        return rows[:, 1:].astype(np.float64), rows[:, 0].copy()
