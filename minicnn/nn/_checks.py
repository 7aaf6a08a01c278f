"""Argument parsing and input checks shared by the layers, so every error reads the same way:
the layer, what it expected, what it got."""

from __future__ import annotations

import numpy as np


def pair(value, layer: str, name: str, minimum: int = 1) -> tuple[int, int]:
    """Turn an int or a pair into a pair of ints, checking each is at least ``minimum``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        result = (int(value), int(value))
    elif (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
        result = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{layer}: {name} must be an int or a pair of ints, got {value!r}")
    if min(result) < minimum:
        raise ValueError(f"{layer}: {name} must be at least {minimum}, got {value!r}")
    return result


def check_input(layer: str, x, ndim: int | tuple[int, ...], channels: int | None = None,
                layout: str = "(N, C, H, W)") -> None:
    """Check that ``x`` is a floating ndarray with the expected rank and channel count."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{layer}: expected a NumPy array {layout}, got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{layer}: expected a floating-point array (float32 or float64), got "
                        f"dtype {x.dtype}; convert images with x.astype(np.float32) / 255")
    ranks = (ndim,) if isinstance(ndim, int) else ndim
    if x.ndim not in ranks:
        raise ValueError(f"{layer}: expected a {' or '.join(map(str, ranks))}-D input {layout}, "
                         f"got {x.ndim}-D with shape {x.shape}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{layer}: expected {channels} input channels (dim 1 of {layout}), "
                         f"got {x.shape[1]} (input shape {x.shape})")


def as_dtype(array: np.ndarray, dtype) -> np.ndarray:
    """``array`` in ``dtype`` without a copy when it already is."""
    return array if array.dtype == dtype else array.astype(dtype)
