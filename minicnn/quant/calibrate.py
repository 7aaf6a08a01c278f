"""Calibration: what range of reals each quantised tensor must cover.

The float model is run layer by layer over calibration images (training images, normalised as
training feeds them) and every tensor that will be stored as uint8 is recorded: the model's
input and the output of each conv / linear block (after its BatchNorm and ReLU). An
*observer* turns all the values a tensor took into a range ``(low, high)``:

``minmax``
    The smallest and largest values seen. Nothing saturates on the calibration set, but one
    outlier stretches the scale and every other value loses precision.
``percentile``
    The ``100 - p`` and ``p`` percentiles of the values (``p = 99.99`` by default): the rare
    extremes saturate, the rest get a finer step.
``entropy``
    TensorRT's method: the clipping threshold whose quantised histogram is closest to the
    original one in Kullback-Leibler divergence (for a non-negative tensor, as after ReLU;
    for one with negative values it keeps minmax's low end).

Memory: every recorded tensor is kept for the whole calibration set (512 MNIST images: about
80 MB for the MNIST CNN), which keeps each observer an exact function of all the values.
"""

from __future__ import annotations

import numpy as np

METHODS = ("minmax", "percentile", "entropy")


def minmax(values: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of ``values``."""
    return float(values.min()), float(values.max())


def percentile(values: np.ndarray, p: float = 99.99) -> tuple[float, float]:
    """The ``100 - p`` and ``p`` percentiles (each tail cut separately)."""
    if not 50.0 < p <= 100.0:
        raise ValueError(f"percentile: p must lie in (50, 100], got {p}")
    low, high = np.percentile(values, [100.0 - p, p])
    return float(low), float(high)


def entropy(values: np.ndarray, bins: int = 2048, levels: int = 255) -> tuple[float, float]:
    """The KL-divergence threshold (TensorRT's calibration) for the positive side.

    A histogram of the positive values in ``bins`` bins; for each candidate threshold (a bin
    edge from ``levels`` bins up) the histogram clipped there (the outliers added to the last
    bin) is compared with the same histogram merged into ``levels`` levels and expanded back;
    the threshold of the smallest divergence wins. The low end is the minimum (0 after ReLU).
    """
    low = float(min(values.min(), 0.0))
    positive = values[values > 0]
    if positive.size == 0:
        return low, 0.0
    top = float(positive.max())
    hist, edges = np.histogram(positive, bins=bins, range=(0.0, top))
    hist = hist.astype(np.float64)
    best, best_kl = bins, np.inf
    for stop in range(levels, bins + 1, 8):
        reference = hist[:stop].copy()
        reference[-1] += hist[stop:].sum()          # clipped outliers land in the last bin
        # Merge `stop` bins into `levels` groups; spread each group's count over its non-empty
        # bins.
        groups = np.linspace(0, stop, levels + 1).astype(int)
        candidate = np.zeros(stop)
        for g in range(levels):
            a, b = groups[g], max(groups[g + 1], groups[g] + 1)
            part = hist[a:b]
            nonzero = part > 0
            if nonzero.any():
                candidate[a:b][nonzero] = part.sum() / nonzero.sum()
        p = reference / reference.sum()
        q_total = candidate.sum()
        if q_total == 0:
            continue
        q = candidate / q_total
        mask = p > 0
        q_safe = np.where(q[mask] > 0, q[mask], 1e-12)
        kl = float(np.sum(p[mask] * np.log(p[mask] / q_safe)))
        if kl < best_kl:
            best, best_kl = stop, kl
    return low, float(edges[best])


def observe(values: np.ndarray, method: str, p: float = 99.99) -> tuple[float, float]:
    """The range ``method`` picks for ``values`` (all the values one tensor took)."""
    values = np.asarray(values, dtype=np.float32).ravel()
    if values.size == 0:
        raise ValueError("calibration: no values recorded")
    if method == "minmax":
        return minmax(values)
    if method == "percentile":
        return percentile(values, p)
    if method == "entropy":
        return entropy(values)
    raise ValueError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")


def record_ranges(modules, images: np.ndarray, points, method: str = "minmax",
                  p: float = 99.99, batch_size: int = 256) -> dict:
    """Run the float layers ``modules`` (in order, eval mode) over ``images`` and return the
    range of the input and of each recorded layer output.

    Parameters
    ----------
    modules : list of Module
        The float model's layers, in order.
    images : float32 (N, C, H, W), normalised
    points : iterable of int
        Indices into ``modules`` whose outputs are quantised tensors.

    Returns
    -------
    dict
        ``"input"`` and each index in ``points`` -> ``(low, high)``.
    """
    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {', '.join(METHODS)}, "
                         f"got {method!r}")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"calibration images must be float32 (N, C, H, W) with N >= 1, got "
                         f"shape {images.shape}")
    points = sorted(set(points))
    seen = {"input": [images]}
    seen.update({index: [] for index in points})
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size]
        for index, module in enumerate(modules):
            x = module(x)
            if index in seen:
                seen[index].append(np.asarray(x, dtype=np.float32))
    return {key: observe(np.concatenate([v.ravel() for v in values]), method, p)
            for key, values in seen.items()}
