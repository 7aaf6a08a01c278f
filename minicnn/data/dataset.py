"""The in-memory image data set every loader in :mod:`minicnn.data` returns."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import DataError


class Dataset:
    """Images and labels held in memory, plus what a training loop needs to know about them.

    Parameters
    ----------
    images : ndarray, uint8, shape (N, C, H, W)
        Pixels in 0..255, NCHW.
    labels : ndarray, integer, shape (N,)
        Class indices in ``0 .. len(classes) - 1``; stored as int64.
    classes : sequence of str
        Class names, indexed by label.
    mean, std : sequence of float, length C
        Per-channel mean and standard deviation of the *training* pixels, in [0, 1] units,
        for :class:`minicnn.data.transforms.Normalize`.
    name : str
        The data set's name (``"mnist"``, ``"cifar10"``, a folder name, ...).
    split : str
        ``"train"``, ``"test"`` or ``""``.
    source : str or None
        Where the data came from (a directory, ``"generated"``), for messages.

    Attributes
    ----------
    images, labels, classes, mean, std, name, split, source
        As given (``classes`` a list, ``mean``/``std`` tuples of float).

    Subclasses with other labels (:class:`minicnn.detection.SceneDataset`'s box rows) override
    :meth:`_checked_labels`; everything else is shared.
    """

    #: What error messages call a data set without a name.
    _kind = "data set"

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                 mean: Sequence[float], std: Sequence[float], name: str = "",
                 split: str = "", source: str | None = None):
        images = np.asarray(images)
        labels = np.asarray(labels)
        what = f"data set {name!r}" if name else self._kind
        if images.dtype != np.uint8 or images.ndim != 4:
            raise DataError(f"{what}: images must be a uint8 array of shape (N, C, H, W), "
                            f"got {images.dtype} with shape {images.shape}")
        classes = [str(c) for c in classes]
        labels = self._checked_labels(labels, images.shape[0], classes, what)
        c = images.shape[1]
        mean = tuple(float(m) for m in mean)
        std = tuple(float(s) for s in std)
        if len(mean) != c or len(std) != c:
            raise DataError(f"{what}: mean and std need one value per channel ({c}), "
                            f"got {len(mean)} and {len(std)}")
        if any(s <= 0 for s in std):
            raise DataError(f"{what}: std must be positive, got {std}")
        self.images = images
        self.labels = labels
        self.classes = classes
        self.mean = mean
        self.std = std
        self.name = name
        self.split = split
        self.source = source

    @staticmethod
    def _checked_labels(labels: np.ndarray, n: int, classes: list, what: str) -> np.ndarray:
        """``labels`` as int64 after checking them against ``n`` images and ``classes``."""
        if labels.ndim != 1 or labels.shape[0] != n:
            raise DataError(f"{what}: labels must have shape ({n},) to match the images, got "
                            f"{labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{what}: labels must be integers, got {labels.dtype}")
        labels = labels.astype(np.int64, copy=False)
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise DataError(f"{what}: labels must lie in 0..{len(classes) - 1} "
                            f"({len(classes)} classes), found {labels.min()}..{labels.max()}")
        return labels

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index):
        """``ds[i]`` -> ``(image uint8 (C, H, W), label)`` (an int for classification);
        ``ds[slice or index array]`` -> ``(images (n, C, H, W), labels (n, ...))``."""
        label = self.labels[index]
        if isinstance(index, (int, np.integer)) and label.ndim == 0:
            return self.images[index], int(label)
        return self.images[index], label

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(int(d) for d in self.images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices) -> "Dataset":
        """A new data set of the chosen samples (same class, classes, mean and std)."""
        return type(self)(self.images[indices], self.labels[indices], self.classes, self.mean,
                          self.std, name=self.name, split=self.split, source=self.source)

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        where = f", source={self.source!r}" if self.source else ""
        return (f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"image_shape=({c}, {h}, {w}), classes={len(self.classes)}{where})")
