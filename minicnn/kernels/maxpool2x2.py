"""The 2x2, stride-2 max-pooling rule, shared by the pooling layer and the fused convolutions.

:func:`max_pool_plane` pools one plane. The pooling layer's kernel
(:func:`minicnn.kernels.numba_backend._maxpool_2x2_planes`) calls it for every (sample,
channel) plane; the one-pool convolution (:mod:`minicnn.kernels.onepool`) and the Winograd
forward (:mod:`minicnn.kernels.winograd`) call it from their output passes when a ``Conv2d ->
ReLU -> MaxPool2d(2)`` block runs fused, on each plane they have just written, while it is in
cache. One function means one rule: all give the same maximum and the same winning position,
bit for bit (tests hold the fused block and the separate layers to that).

Editing this file: Numba's disk cache keys a compiled kernel on the file that defines it, so
kernels that inline these functions (in ``numba_backend.py``, ``onepool.py`` and
``winograd.py``) keep their cached machine code after a change here. Clear the
``__pycache__`` folder next to them (or touch their files) before measuring a change to the
pooling rule.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

_JIT = dict(cache=True, nogil=True)


@njit(**_JIT)
def max_pool_plane(source, at, h, w, best, best_at, index, index_at, cells, codes):
    """2x2, stride-2 max pooling of the ``h x w`` plane ``source[at:at + h*w]`` (row-major,
    flat) into ``best[best_at:]`` (``h//2 x w//2``, row-major), and the winners' flat
    positions in the plane into ``index[index_at:]`` (``index`` empty: not kept). ``cells``
    (4, h//2 * w//2) of the source's dtype and ``codes`` (h//2 * w//2,) int32 are working
    space (:func:`pool_scratch`), allocated once by the caller, not once a plane. The rule, as
    PyTorch's and :func:`minicnn.kernels.reference.pool_argmax`: cells in row-major order, a
    later one wins only if it is larger, so ties go to the first; a NaN wins and sticks (the
    last one).

    Written without a branch on the data. The first version compared the four cells of each
    window in a row, with stride-2 loads: it stayed scalar and its comparisons branched, and
    after a ReLU half the cells are ties at 0, so the branches were unpredictable (measured
    on a 2-core AMD EPYC, AVX2: 14 ns a window, 5.8 ms for MNIST conv1's 64 x 32 x 28 x 28
    output at one thread). Here the plane's four cells of every window are first copied into
    four contiguous runs, then one loop picks each window's winner with compare-and-select
    (which LLVM vectorises) and keeps which of the four won (0-3), and a last loop turns that
    into the position: 1.9 ms, the same bits (NaN and -0.0 included)."""
    pooled_h, pooled_w = h // 2, w // 2
    count = pooled_h * pooled_w
    top_left, top_right, bottom_left, bottom_right = cells[0], cells[1], cells[2], cells[3]
    # unsigned offsets: every operand unsigned (a signed one makes Numba check for negative
    # indices, which stops LLVM vectorising; a mix of both makes a float)
    width, columns, two, one = uint64(w), uint64(pooled_w), uint64(2), uint64(1)
    for ph in range(uint64(pooled_h)):
        top = uint64(at) + two * ph * width
        row = ph * columns
        for pw in range(columns):
            top_left[row + pw] = source[top + two * pw]
            top_right[row + pw] = source[top + two * pw + one]
            bottom_left[row + pw] = source[top + width + two * pw]
            bottom_right[row + pw] = source[top + width + two * pw + one]
    out = best[best_at:best_at + count]
    for k in range(count):
        winner = top_left[k]
        code = 0
        value = top_right[k]
        take = (value > winner) | (value != value)
        winner = value if take else winner
        code = 1 if take else code
        value = bottom_left[k]
        take = (value > winner) | (value != value)
        winner = value if take else winner
        code = 2 if take else code
        value = bottom_right[k]
        take = (value > winner) | (value != value)
        winner = value if take else winner
        code = 3 if take else code
        out[k] = winner
        codes[k] = code
    if index.size > 0:
        positions = index[index_at:index_at + count]
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                code = codes[ph * pooled_w + pw]
                positions[ph * pooled_w + pw] = (2 * ph * w + 2 * pw + (code & 1)
                                                 + (code >> 1) * w)


@njit(inline="always", **_JIT)
def pool_scratch(h, w, dtype):
    """:func:`max_pool_plane`'s working space for ``h x w`` planes: ``(cells, codes)``."""
    count = (h // 2) * (w // 2)
    return np.empty((4, count), dtype=dtype), np.empty(count, dtype=np.int32)
