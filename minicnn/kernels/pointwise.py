"""Element-wise kernels in Numba's pool: ReLU forward and backward over the whole array.

NumPy runs ``np.maximum(x, 0)`` on one thread and allocates a mask for backward; these
kernels split the flat array across Numba's threads (the same pool the convolutions use, so
nothing wakes a second pool) and backward reads the sign from the saved output instead of a
mask. Arrays smaller than :data:`PARALLEL_MIN_SIZE` are not worth waking the pool for.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .threads import threads_for

_JIT = dict(cache=True, nogil=True)

#: Elements below which one thread does the whole pass (a parallel region costs ~10 us).
PARALLEL_MIN_SIZE = 1 << 16


# The loops run over slices from 0, not over ``range(first, last)``: an index that might be
# negative makes Numba check for wrap-around on every access, and then LLVM does not vectorise
# the loop (measured 10x slower).
@njit(**_JIT)
def _relu_forward_range(flat_x, flat_y, first, last):
    x, y = flat_x[first:last], flat_y[first:last]
    zero = x.dtype.type(0)
    for i in range(x.size):
        value = x[i]
        # ``not (value < 0)`` keeps NaN, as np.maximum and PyTorch do.
        y[i] = value if not value < zero else zero


@njit(**_JIT)
def _relu_backward_range(flat_dy, flat_y, flat_dx, first, last):
    dy, y, dx = flat_dy[first:last], flat_y[first:last], flat_dx[first:last]
    zero = dy.dtype.type(0)
    for i in range(dy.size):
        # Blocked where the output is <= 0; passes elsewhere, at a NaN too (as PyTorch's
        # threshold_backward does).
        dx[i] = zero if y[i] <= zero else dy[i]


@njit(parallel=True, **_JIT)
def _parallel_relu_forward(flat_x, flat_y, n_threads):
    size = flat_x.size
    for t in prange(n_threads):
        _relu_forward_range(flat_x, flat_y, t * size // n_threads, (t + 1) * size // n_threads)


@njit(parallel=True, **_JIT)
def _parallel_relu_backward(flat_dy, flat_y, flat_dx, n_threads):
    size = flat_dy.size
    for t in prange(n_threads):
        _relu_backward_range(flat_dy, flat_y, flat_dx, t * size // n_threads,
                             (t + 1) * size // n_threads)


def _n_threads(size: int) -> int:
    return threads_for(size) if size >= PARALLEL_MIN_SIZE else 1


def relu_forward(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)`` element-wise, NaN kept; any shape, float32 or float64."""
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    n_threads = _n_threads(x.size)
    if n_threads == 1:
        _relu_forward_range(x.reshape(-1), y.reshape(-1), 0, x.size)
    else:
        _parallel_relu_forward(x.reshape(-1), y.reshape(-1), n_threads)
    return y


def relu_backward(dy: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``dy`` where the forward output ``y`` was positive (or NaN), 0 elsewhere."""
    dy = np.ascontiguousarray(dy)
    y = np.ascontiguousarray(y)
    dx = np.empty_like(dy)
    n_threads = _n_threads(dy.size)
    if n_threads == 1:
        _relu_backward_range(dy.reshape(-1), y.reshape(-1), dx.reshape(-1), 0, dy.size)
    else:
        _parallel_relu_backward(dy.reshape(-1), y.reshape(-1), dx.reshape(-1), n_threads)
    return dx
