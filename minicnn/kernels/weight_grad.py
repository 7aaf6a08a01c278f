"""A convolution's weight gradient on the shift path's grid, three taps of a kernel row at a
time, with no unrolled copy and no GEMM.

On the shift path (:mod:`minicnn.kernels.onepool`) a group of samples sits in a *stacked*
buffer ``xbuf (C_in, length)`` (planes padded and laid end to end with a common row pitch),
and the output gradient on the same *grid*, ``grid (C_out, span)``, zero wherever the grid
has no output. Tap ``(i, j)`` of grid position ``q`` reads ``xbuf[c, base_i + j + q]``, so

    dWᵀ[i*kW + j, c, co] += Σ_q xbuf[c, base_i + j + q] · grid[co, q].

For a kernel row of three taps at dilation 1 (3x3 convolutions), four output channels at a
time take 12 running sums: each grid position loads three neighbouring inputs and four
gradients and does 12 multiply-adds. LLVM vectorises the loop over ``q`` (eight positions a
vector, 12 vector accumulators: ``reassoc`` lets it split the sums, ``contract`` fuse the
multiply-adds), which ran at 42-48 GMAC/s on one Zen 3 core (its GEMM peak: 46.5) where the
unrolled copy and one GEMM per slab ran at 30-36, on long enough spans (:data:`MIN_SPAN`): the
GEMM's ``N = C_out`` is thin (16 on ResNet-20's first stage) and the copy is nine times the
input.

Each sum adds ``span`` products in several vector lanes and then across them: another order
than the GEMM's, equal to float32 rounding (tested against it). No other fast-math flag: a
NaN or an infinity still propagates.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

_JIT = dict(cache=True, nogil=True, fastmath={"reassoc", "contract"})

#: The shift path takes :func:`three_taps` for spans of at least this many grid positions (a
#: group's). Shorter, the horizontal sums after each pass and the loop's scalar remainder cost
#: more than the GEMM's packing. Measured on one Zen 3 core, three_taps against the unrolled
#: copy and GEMM: ResNet-20's 16 channels (span 2144) 1.60x faster, 32 channels (560) 1.16x,
#: the MNIST CNN's second conv (434) 1.01x, ResNet-20's 64 channels at 8x8 (152) 0.90x.
MIN_SPAN = 512


@njit(**_JIT)
def three_taps(xbuf, grid, span, kh, dh, row0, col0, pitch, dw_transposed):
    """Add the weight gradient of a convolution whose kernel rows are three taps wide at
    dilation 1, over grid positions ``[0, span)``, into ``dw_transposed``.

    Parameters
    ----------
    xbuf : ndarray (C_in, length), float
        The stacked input (:func:`~minicnn.kernels.contracts.with_stacked_layout`); the taps
        of position ``span - 1`` must lie inside it.
    grid : ndarray (C_out, >= span), float
        The output gradient on the grid, zero where there is no output.
    span : int
        Grid positions to sum over.
    kh, dh, row0, col0, pitch : int
        Kernel rows, their dilation, the stacked layout's offsets of tap (0, 0) and its pitch:
        tap ``(i, j)`` of position ``q`` reads ``xbuf[:, (row0 + i*dh)*pitch + col0 + j + q]``.
    dw_transposed : ndarray (kh*3, C_in, C_out), float
        Added to (``+=``): ``[i*3 + j, c, co]`` is tap ``(i, j)``'s weight from input channel
        ``c`` to output channel ``co``.
    """
    c_in, c_out = xbuf.shape[0], grid.shape[0]
    whole = c_out - c_out % 4
    zero = np.zeros(1, dtype=grid.dtype)[0]
    # Unsigned positions: a signed index might be negative as far as LLVM knows, and Numba's
    # wrap-around for negative indices would stop the loop vectorising.
    n = uint64(span)
    one, two = uint64(1), uint64(2)
    for c in range(c_in):
        for i in range(kh):
            base = (row0 + i * dh) * pitch + col0
            x = xbuf[c, base:base + span + 2]
            tap = 3 * i
            for co in range(0, whole, 4):
                g0, g1 = grid[co, :span], grid[co + 1, :span]
                g2, g3 = grid[co + 2, :span], grid[co + 3, :span]
                s00 = s01 = s02 = s10 = s11 = s12 = zero
                s20 = s21 = s22 = s30 = s31 = s32 = zero
                for q in range(n):
                    x0, x1, x2 = x[q], x[q + one], x[q + two]
                    g = g0[q]
                    s00 += g * x0
                    s01 += g * x1
                    s02 += g * x2
                    g = g1[q]
                    s10 += g * x0
                    s11 += g * x1
                    s12 += g * x2
                    g = g2[q]
                    s20 += g * x0
                    s21 += g * x1
                    s22 += g * x2
                    g = g3[q]
                    s30 += g * x0
                    s31 += g * x1
                    s32 += g * x2
                dw_transposed[tap, c, co] += s00
                dw_transposed[tap + 1, c, co] += s01
                dw_transposed[tap + 2, c, co] += s02
                dw_transposed[tap, c, co + 1] += s10
                dw_transposed[tap + 1, c, co + 1] += s11
                dw_transposed[tap + 2, c, co + 1] += s12
                dw_transposed[tap, c, co + 2] += s20
                dw_transposed[tap + 1, c, co + 2] += s21
                dw_transposed[tap + 2, c, co + 2] += s22
                dw_transposed[tap, c, co + 3] += s30
                dw_transposed[tap + 1, c, co + 3] += s31
                dw_transposed[tap + 2, c, co + 3] += s32
            for co in range(whole, c_out):
                g0 = grid[co, :span]
                s00 = s01 = s02 = zero
                for q in range(n):
                    g = g0[q]
                    s00 += g * x[q]
                    s01 += g * x[q + one]
                    s02 += g * x[q + two]
                dw_transposed[tap, c, co] += s00
                dw_transposed[tap + 1, c, co] += s01
                dw_transposed[tap + 2, c, co] += s02
