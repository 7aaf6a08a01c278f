"""The 2x2, stride-2 max-pooling rule, shared by the pooling layer and the fused convolution.

:func:`max_row_pair` pools one pair of input rows. The pooling layer's kernel
(:func:`minicnn.kernels.numba_backend._maxpool_2x2_planes`) calls it for every row pair of a
plane; the one-pool convolution (:mod:`minicnn.kernels.onepool`) calls it from its output pass
when a ``Conv2d -> ReLU -> MaxPool2d(2)`` block runs fused, on the two rows it has just written,
while they are still in cache. One function means one rule: both give the same maximum and
the same winning position, bit for bit.

Editing this file: Numba's disk cache keys a compiled kernel on the file that defines it, so
kernels that inline these functions (in ``numba_backend.py`` and ``onepool.py``) keep their
cached machine code after a change here. Clear the ``__pycache__`` folder next to them (or
touch their files) before measuring a change to the pooling rule.
"""

from __future__ import annotations

from numba import njit

_JIT = dict(cache=True, nogil=True)


@njit(inline="always", **_JIT)
def max_row_pair(top_row, bottom_row, best_row, index_row, base, width):
    """``best_row[ow]`` = the maximum of the 2x2 window at columns ``2*ow, 2*ow + 1`` of
    ``top_row`` and ``bottom_row``, and ``index_row[ow]`` its flat position in the input plane
    (``base`` is the top row's, ``base + width`` the bottom row's).

    Cells are taken in row-major order; a later cell wins only if it is larger, so ties go to
    the first, and a NaN wins and sticks (the last one), as in PyTorch and
    :func:`minicnn.kernels.reference.pool_argmax`. Written over row slices with the four cells
    unrolled (no index can be negative, so Numba adds no wrap-around checks)."""
    for ow in range(best_row.size):
        best = top_row[2 * ow]
        index = base + 2 * ow
        value = top_row[2 * ow + 1]
        if value > best or value != value:
            best, index = value, base + 2 * ow + 1
        value = bottom_row[2 * ow]
        if value > best or value != value:
            best, index = value, base + width + 2 * ow
        value = bottom_row[2 * ow + 1]
        if value > best or value != value:
            best, index = value, base + width + 2 * ow + 1
        best_row[ow] = best
        index_row[ow] = index


@njit(inline="always", **_JIT)
def max_row_pair_values(top_row, bottom_row, best_row):
    """:func:`max_row_pair` without the winners' positions: the same comparisons in the same
    order, so the same maxima bit for bit (-0.0 against 0.0 and NaN included). Used where no
    backward needs the positions yet (a fused block in eval mode); keeping the position of
    each cell's candidate is most of the work (MNIST conv1's 64 x 32 x 28 x 28 output: 0.44
    ms with positions, 0.12 without, at one thread)."""
    for ow in range(best_row.size):
        best = top_row[2 * ow]
        value = top_row[2 * ow + 1]
        if value > best or value != value:
            best = value
        value = bottom_row[2 * ow]
        if value > best or value != value:
            best = value
        value = bottom_row[2 * ow + 1]
        if value > best or value != value:
            best = value
        best_row[ow] = best
