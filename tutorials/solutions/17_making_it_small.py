"""Worked solutions to tutorial 17's exercises (loaded when MINICNN_TUTORIAL_SOLUTIONS=1)."""

import numpy as np


def quantize(x, scale, zero_point, dtype):
    """q = clip(round(x / scale) + zero_point, qmin, qmax), stored as dtype."""
    info = np.iinfo(dtype)
    # Round to nearest (np.rint: ties to even) in float64; add the integer zero point; clip
    # *before* the cast, since casting an out-of-range number wraps around (or is undefined).
    q = np.rint(np.asarray(x, dtype=np.float64) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q, scale, zero_point):
    """x = scale * (q - zero_point) as float32."""
    # Widen first: in uint8, 3 - 200 would wrap around to 59.
    return (np.float32(scale) * (q.astype(np.int32) - np.int32(zero_point))).astype(np.float32)


def requantize(acc, multiplier, shift, zero_point):
    """uint8 clip(zero_point + round(acc * multiplier / 2**(31 + shift)), 0, 255), integers only."""
    total = 31 + shift
    # int32 * a 31-bit multiplier needs up to 62 bits: take the product in int64.
    product = acc.astype(np.int64) * np.int64(multiplier)
    # Adding half the divisor before the (flooring) arithmetic shift rounds to nearest.
    rounded = (product + (np.int64(1) << np.int64(total - 1))) >> np.int64(total)
    return np.clip(rounded + zero_point, 0, 255).astype(np.uint8)
