"""Worked solutions to tutorial 09's exercises (loaded when MINICNN_TUTORIAL_SOLUTIONS=1).

The tutorial compiles ``bias_relu`` with ``numba.njit(parallel=True)``; ``prange`` is
``range`` outside Numba, so this file imports without compiling anything.
"""

import numpy as np
from numba import prange


def bias_relu(x, bias):
    """y[n, c, h, w] = max(x[n, c, h, w] + bias[c], 0) in a new array of x's dtype.

    x (N, C, H, W), bias (C,) -> y (N, C, H, W).
    """
    n_images, channels, height, width = x.shape
    y = np.empty_like(x)
    # One task per (image, channel) plane: N*C tasks keep every thread busy even for a batch
    # of one, and each plane is a contiguous block that a thread streams through.
    for plane in prange(n_images * channels):
        n = plane // channels
        c = plane % channels
        b = bias[c]
        for h in range(height):
            for w in range(width):
                value = x[n, c, h, w] + b
                y[n, c, h, w] = value if value > 0 else 0
    return y


def arithmetic_floor_us(flops, gflops):
    """Microseconds that ``flops`` FLOPs take at ``gflops`` GFLOP/s.

    flops: float or ndarray (any shape); gflops: float -> float or ndarray (flops' shape).
    """
    # gflops * 1e9 FLOP per second gives seconds; a microsecond is 1e-6 s, hence the 1e6.
    return flops / (gflops * 1e9) * 1e6
