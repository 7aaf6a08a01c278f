"""Batch transforms: callables ``t(x, rng) -> x`` on float32 NCHW batches.

Every transform takes the batch ``x`` of shape ``(N, C, H, W)`` and a
``numpy.random.Generator`` ``rng`` (which deterministic transforms ignore) and returns a new
array; the input is never modified. The :class:`~minicnn.data.loader.DataLoader` passes its
own generator, so a seeded loader gives the same augmented batches on every run.

Transforms with ``moves_pixels = True`` (crops, flips) only move pixel values or put zeros
in, so they give the same result on the raw ``uint8`` pixels as on the float ones; the
loader runs them on ``uint8`` (a quarter of the bytes) and converts and normalises once
after them (:meth:`Normalize.apply_to_uint8`), bit-identical to the float path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import DataError


def _pair(v, name: str) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    try:
        a, b = (int(x) for x in v)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be an int or a pair of ints, got {v!r}") from None
    return a, b


def _check_batch(x: np.ndarray, who: str):
    if x.ndim != 4:
        raise DataError(f"{who}: expected a batch of shape (N, C, H, W), got shape {x.shape}")


class Normalize:
    """``(x - mean[c]) / std[c]`` per channel.

    Parameters
    ----------
    mean, std : float or sequence of float (one per channel), in the batch's units
    """

    def __init__(self, mean, std):
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float32))
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float32))
        if self.mean.ndim != 1 or self.std.shape != self.mean.shape:
            raise DataError(f"Normalize: mean and std must be equal-length 1-D, got "
                            f"{self.mean.shape} and {self.std.shape}")
        if np.any(self.std <= 0):
            raise DataError(f"Normalize: std must be positive, got {self.std.tolist()}")
        self._scale = (1.0 / self.std).astype(np.float32)

    def __call__(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """x : (N, C, H, W) -> (N, C, H, W), same dtype."""
        _check_batch(x, "Normalize")
        c = x.shape[1]
        if self.mean.size not in (1, c):
            raise DataError(f"Normalize: {self.mean.size} channel statistics for a batch with "
                            f"{c} channels")
        m = self.mean.reshape(1, -1, 1, 1).astype(x.dtype, copy=False)
        s = self._scale.reshape(1, -1, 1, 1).astype(x.dtype, copy=False)
        return (x - m) * s

    def apply_to_uint8(self, pixels: np.ndarray, divisor: float = 255.0) -> np.ndarray:
        """``self(pixels.astype(float32) / divisor)`` in one new array (the same float32
        operations in the same order, done in place: bit-identical, two fewer copies)."""
        _check_batch(pixels, "Normalize")
        c = pixels.shape[1]
        if self.mean.size not in (1, c):
            raise DataError(f"Normalize: {self.mean.size} channel statistics for a batch with "
                            f"{c} channels")
        x = pixels.astype(np.float32)
        x /= np.float32(divisor)
        x -= self.mean.reshape(1, -1, 1, 1)
        x *= self._scale.reshape(1, -1, 1, 1)
        return x

    def __repr__(self):
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class RandomCrop:
    """Zero-pad by ``padding`` on every side, then crop a random ``size`` window per image.

    Parameters
    ----------
    size : int or (H, W)
        Output size.
    padding : int
        Zeros added on each side before cropping (4 is the usual CIFAR-10 setting).
    """

    moves_pixels = True

    def __init__(self, size, padding: int = 0):
        self.size = _pair(size, "RandomCrop size")
        self.padding = int(padding)
        if self.padding < 0 or min(self.size) < 1:
            raise DataError(f"RandomCrop: need size >= 1 and padding >= 0, got "
                            f"size={self.size}, padding={padding}")

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """x : (N, C, H, W) -> (N, C, size_h, size_w)."""
        _check_batch(x, "RandomCrop")
        n, c, h, w = x.shape
        p = self.padding
        oh, ow = self.size
        hp, wp = h + 2 * p, w + 2 * p
        if oh > hp or ow > wp:
            raise DataError(f"RandomCrop: crop {self.size} larger than the padded image "
                            f"({hp}, {wp})")
        padded = np.zeros((n, c, hp, wp), dtype=x.dtype)
        padded[:, :, p:p + h, p:p + w] = x
        top = rng.integers(0, hp - oh + 1, size=n)
        left = rng.integers(0, wp - ow + 1, size=n)
        # Every (oh, ow) window of each padded image, as a view; picking window (top, left)
        # per image copies whole rows (8x faster than indexing every pixel).
        windows = np.lib.stride_tricks.sliding_window_view(padded, (oh, ow), axis=(2, 3))
        return windows[np.arange(n), :, top, left]                    # (N, C, oh, ow)

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p``."""

    moves_pixels = True

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise DataError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """x : (N, C, H, W) -> (N, C, H, W)."""
        _check_batch(x, "RandomHorizontalFlip")
        flip = rng.random(x.shape[0]) < self.p
        return np.where(flip[:, None, None, None], x[..., ::-1], x)

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class Compose:
    """Apply transforms in order, all with the same generator."""

    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        for t in self.transforms:
            x = t(x, rng)
        return x

    def __repr__(self):
        return "Compose([" + ", ".join(map(repr, self.transforms)) + "])"


def default_transform(dataset, augment: bool = False) -> Compose:
    """The usual transform for ``dataset`` (anything with ``mean``, ``std``, ``images``).

    Always normalises with the data set's mean and std. With ``augment``: colour (3-channel)
    images get a random crop with 4 pixels of padding and a random horizontal flip (the
    standard CIFAR-10 recipe); grayscale images a random crop with 2 pixels of padding only,
    since mirrored digits and letters are different symbols. Augmentation happens before
    normalisation, so padding is black.

    Returns
    -------
    Compose
    """
    c, h, w = dataset.images.shape[1:]
    steps = []
    if augment:
        if c == 3:
            steps += [RandomCrop((h, w), padding=4), RandomHorizontalFlip(0.5)]
        else:
            steps += [RandomCrop((h, w), padding=2)]
    steps.append(Normalize(dataset.mean, dataset.std))
    return Compose(steps)
