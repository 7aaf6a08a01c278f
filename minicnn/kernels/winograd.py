"""Winograd's minimal filtering F(2x2, 3x3): a 3x3, stride-1 convolution's forward with 2.25x
fewer multiplies.

A 2x2 block of outputs of a 3x3 convolution reads a 4x4 block of input. Written directly it
takes 4 x 9 = 36 multiplies per input channel; Winograd (Lavin and Gray, 2016) finds the same
four numbers with 16:

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A

where ``d`` is the 4x4 input tile, ``g`` the 3x3 filter, ``⊙`` the elementwise product and

    Bᵀ = [1  0 -1  0]     G = [ 1    0    0 ]     Aᵀ = [1  1  1  0]
         [0  1  1  0]         [1/2  1/2  1/2]          [0  1 -1 -1]
         [0 -1  1  0]         [1/2 -1/2  1/2]
         [0  1  0 -1]         [ 0    0    1 ]

Over many channels the elementwise products become 16 matrix products, one per position
``ξ`` of the 4x4 transformed tile: ``M[ξ] (C_out, tiles) = U[ξ] (C_out, C_in) @ V[ξ]ᵀ``,
where ``U = G g Gᵀ`` (the filters, transformed once per call) and ``V = Bᵀ d B`` (every input
tile). Those 16 GEMMs carry ``16 / 36`` of the direct convolution's multiply-adds; the
transforms are additions only.

The rounding differs from the direct sum's (the transforms add and subtract inputs before
they are multiplied), by a few units in the last place for float32 at these sizes: the tests
hold it to the same float32 tolerance as every other backend, and to float64 gradient checks.
For the same reason a NaN or an infinity in the input reaches all four outputs of each 2x2
tile whose 4x4 input block holds it, where the direct sum confines it to the windows that
contain it (as with any Winograd convolution; finite inputs give finite outputs unless the
sums of up to four inputs overflow).

Only the *forward* runs this way (:func:`minicnn.kernels.onepool.conv2d_forward` picks it);
backward keeps the shift path, which computes the gradient of the same convolution.

Layout, per thread and per group of samples (:func:`forward_chunk`). Each padded input
plane is split into its four *phases* (even and odd rows times even and odd columns): then
every cell of every 4x4 tile is a contiguous shift of one phase, and each step of the input
transform is one long loop over all of a plane's tiles with two loads and one store, which
LLVM vectorises. (Written as one loop with 16 loads and 16 stores per tile it vectorises
nothing: too many possible overlaps to check at run time; written per tile row, its loops
are 7 tiles long.) Planes of 8 or more tiles a row skip the phases: each is copied into a
zero-padded plane and float32 register blocks read 8 tiles of one row of tiles from it, the
even and odd columns taken apart by shuffles in registers (:data:`PADDED_MIN_TILES`; the
same ``V`` bit for bit, one pass over memory fewer). Tiles are numbered on a *wide* grid of
``tw + 1`` per row, whose last column is garbage, as the shift path's grid has garbage
columns. ``V`` is ``(16, C_in, tiles)``, so the 16 GEMMs are plain ``U[ξ] @ V[ξ]``: on MNIST conv2's shape that ran at the
core's GEMM peak, against 65 % with channels-last tiles (``V[ξ]ᵀ``). The output transform
runs along the tiles of one output channel and writes each tile's two columns side by side,
so that output row ``2*ty + a`` comes out in order, ready to copy into ``y`` and to pool.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, types

from . import blas
from .blas import gemm as _gemm
from .contracts import PLAIN, RELU_MAXPOOL, RELU_MAXPOOL_VALUES
from .maxpool2x2 import max_pool_plane, pool_scratch
from . import parallel
from .claims import claim
from .winograd_blocks import TILES as BLOCK_TILES
from .winograd_blocks import input_tiles, input_tiles_padded, products, spread_columns
from .direct_blocks import POSITIONS as PRODUCT_TILES

_JIT = dict(cache=True, nogil=True)

#: Tiles per GEMM: a thread transforms this many wide-grid tiles' worth of whole samples (at
#: least one sample) before the 16 GEMMs, so that ``V`` and ``M`` stay near its L2 cache while
#: the GEMMs are long enough. Measured on MNIST conv2 (32->64 at 14x14, 56 wide-grid tiles per
#: sample), forward at 1 thread: 112 and 196 equally fast (4.0-4.3 ms), 392 4.4-4.8, 784 5.1.
TILES_PER_GROUP = 196


def transform_weights(weight):
    """``U = G g Gᵀ`` for every (output, input) channel pair: ``(C_out, C_in, 3, 3)`` ->
    ``(16, C_out, C_in)``, C-contiguous, position ``ξ = 4*i + j`` of the 4x4 tile first
    (:func:`filters_into`)."""
    c_out, c_in = weight.shape[0], weight.shape[1]
    u = np.empty((16, c_out, c_in), dtype=weight.dtype)
    filters_into(np.ascontiguousarray(weight).reshape(-1), c_out, c_in, u.reshape(-1))
    return u


@njit(**_JIT)
def filters_into(weight, c_out, c_in, u):
    """``U = G g Gᵀ`` of every filter, flat: ``weight`` (C_out * C_in * 9, as (C_out, C_in, 3,
    3)) -> ``u`` (16 * C_out * C_in, as (16, C_out, C_in)). ``G g`` takes each column of a
    filter ``g`` (three taps ``g0, g1, g2`` down it) to ``g0, (g0 + g1 + g2) / 2, (g0 - g1 +
    g2) / 2, g2``; ``(G g) Gᵀ`` does the same along each row.

    Each filter's 16 values are first written together (one cache line), then copied out to
    the 16 planes a plane at a time: written straight to 16 planes 16 KB apart (as NumPy's
    version did, slice by slice) 64 x 64 filters took 0.19 ms against 0.08, and ResNet-20's
    training step makes 32 such transforms (each Winograd forward and input gradient
    transforms the live weights)."""
    plane = c_out * c_in
    half = u.dtype.type(0.5)
    by_filter = np.empty((plane, 16), dtype=u.dtype)
    for k in range(plane):
        at = k * 9
        t = by_filter[k]
        for j in range(3):          # G g, column j: rows g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2
            g0, g1, g2 = weight[at + j], weight[at + 3 + j], weight[at + 6 + j]
            t[j] = g0
            t[4 + j] = (g0 + g1 + g2) * half
            t[8 + j] = (g0 - g1 + g2) * half
            t[12 + j] = g2
        for i in range(4):          # (G g) Gᵀ, row i, in place (its column 3 is free)
            c0, c1, c2 = t[4 * i], t[4 * i + 1], t[4 * i + 2]
            t[4 * i + 1] = (c0 + c1 + c2) * half
            t[4 * i + 2] = (c0 - c1 + c2) * half
            t[4 * i + 3] = c2
    out = u[:16 * plane].reshape((16, plane))
    for xi in range(16):
        row = out[xi]
        for k in range(plane):
            row[k] = by_filter[k, xi]


@njit(**_JIT)
def _split_phases(x, n, c, top, left, phases):
    """The zero-padded plane ``P`` of sample ``n``, channel ``c`` of ``x`` as its four
    *phases*: ``phases[2*a + b, h, k] = P[2*h + a, 2*k + b]`` (``phases`` is (4, th + 2,
    tw + 1), a zero row more than ``P`` needs; its border cells are zero and stay zero)."""
    height, width = x.shape[2], x.shape[3]
    for h in range(height):
        row = h + top
        src = x[n, c, h]
        even = phases[2 * (row % 2), row // 2]
        odd = phases[2 * (row % 2) + 1, row // 2]
        # Padded column p = w + left goes to phase p % 2, column p // 2: input columns 2k
        # and 2k + 1 land in the two phases, the first in phase ``left % 2``.
        first = (even if left % 2 == 0 else odd)[left // 2:]
        second = (odd if left % 2 == 0 else even)[(left + 1) // 2:]
        for k in range(width // 2):
            first[k] = src[2 * k]
            second[k] = src[2 * k + 1]
        if width % 2:
            first[width // 2] = src[width - 1]


@njit(**_JIT)
def _input_transform(phases, c, tile0, rows, v):
    """``V[4*i + j, c, tile0 + t] = (Bᵀ d B)[i, j]`` for every tile of one sample's channel,
    ``d`` the 4x4 block at rows ``2*ty``, columns ``2*tx`` of the padded plane, given as its
    phases (:func:`_split_phases`). Tiles are numbered on a *wide* grid, ``t = ty*(tw + 1) +
    tx``: tile ``t``'s cell ``(r, q)`` is phase ``(r % 2, q % 2)`` at flat position ``t +
    (r // 2)*(tw + 1) + q // 2``, a contiguous shift, so every loop below runs over all the
    tiles at once (the last tile of each row, ``tx = tw``, is garbage and never read back).
    ``rows`` (8, length) is scratch for ``Bᵀ d`` on the even and odd columns."""
    pitch = phases.shape[2]
    flat = phases.reshape(4, phases.shape[1] * pitch)
    length = rows.shape[1]
    tiles = length - 1
    for b in range(2):          # Bᵀ d, on the even (b = 0) and odd (b = 1) columns
        upper, lower = flat[b], flat[2 + b]     # rows 2h and 2h + 1 of the padded plane
        r0, r2 = upper[:length], upper[pitch:pitch + length]
        r1, r3 = lower[:length], lower[pitch:pitch + length]
        e0, e1, e2, e3 = rows[b], rows[2 + b], rows[4 + b], rows[6 + b]
        for k in range(length):
            e0[k] = r0[k] - r2[k]
        for k in range(length):
            e1[k] = r1[k] + r2[k]
        for k in range(length):
            e2[k] = r2[k] - r1[k]
        for k in range(length):
            e3[k] = r1[k] - r3[k]
    for i in range(4):          # (Bᵀ d) B: columns q = 0, 1, 2, 3 are even[t], odd[t],
        even, odd = rows[2 * i], rows[2 * i + 1]        # even[t + 1], odd[t + 1]
        even1, odd1 = even[1:], odd[1:]
        out = v[4 * i, c, tile0:tile0 + tiles]
        for t in range(tiles):
            out[t] = even[t] - even1[t]
        out = v[4 * i + 1, c, tile0:tile0 + tiles]
        for t in range(tiles):
            out[t] = odd[t] + even1[t]
        out = v[4 * i + 2, c, tile0:tile0 + tiles]
        for t in range(tiles):
            out[t] = even1[t] - odd[t]
        out = v[4 * i + 3, c, tile0:tile0 + tiles]
        for t in range(tiles):
            out[t] = odd[t] - odd1[t]


@njit(**_JIT)
def _input_transform_blocks(phases, c, tile0, rows, v):
    """:func:`_input_transform` for float32, 8 tiles a register block
    (:func:`minicnn.kernels.winograd_blocks.input_tiles`): the same ``V``, bit for bit, with
    no ``Bᵀ d`` rows in memory (``rows`` unused)."""
    th2, pitch = phases.shape[1], phases.shape[2]
    channels, capacity = v.shape[1], v.shape[2]
    input_tiles(phases.reshape(4 * th2 * pitch), th2 * pitch, pitch, rows.shape[1] - 1,
                v.reshape(16 * channels * capacity), c * capacity + tile0, channels * capacity)


#: Planes with at least this many tiles per row (``(W_out + 1) // 2``; ResNet-20's 16x16 and
#: 32x32 layers, not the MNIST CNN's 14x14) are transformed straight from a zero-padded copy
#: of the plane (:func:`_pad_plane`, then :func:`_input_rows` or, for float32,
#: :func:`minicnn.kernels.winograd_blocks.input_tiles_padded`) instead of through its phases:
#: a register block takes 8 tiles of one row of tiles, so a row needs 8 of them.
PADDED_MIN_TILES = BLOCK_TILES


@njit(**_JIT)
def _pad_plane(x, n, c, top, left, padded, pitch):
    """Plane ``x[n, c]`` into the zero-padded plane ``padded`` (flat, rows of ``pitch``),
    ``top`` rows down and ``left`` columns in. Only the plane's own cells are written: the
    border, zeroed when ``padded`` was made, stays zero."""
    height, width = x.shape[2], x.shape[3]
    for h in range(height):
        src, dest = x[n, c, h], padded[(h + top) * pitch + left:]
        for w in range(width):
            dest[w] = src[w]


@njit(**_JIT)
def _input_rows(padded, pitch, tiles_h, tiles_w, wide, v, v_at, v_stride):
    """``V = Bᵀ d B`` of every tile of a zero-padded plane (``padded``, flat, rows of
    ``pitch``), tile by tile: tile ``(ty, tx)``'s cell ``(r, q)`` is ``padded[(2 ty + r) *
    pitch + 2 tx + q]``, and its 16 values go to column ``v_at + ty * wide + tx`` of the rows
    ``ξ * v_stride`` of ``v`` (flat), numbered on the wide grid as :func:`_input_transform`
    numbers them (its last column, garbage, zeros). The same operations in the same order as
    :func:`_input_transform` (and as the float32 blocks,
    :func:`minicnn.kernels.winograd_blocks.input_tiles_padded`, which run this for float32)."""
    e = np.empty((4, 4), dtype=v.dtype)       # Bᵀ d of one tile
    for ty in range(tiles_h):
        for tx in range(tiles_w):
            at = 2 * ty * pitch + 2 * tx
            for q in range(4):      # Bᵀ d, column q: rows 0 - 2, 1 + 2, 2 - 1, 1 - 3
                d0, d1 = padded[at + q], padded[at + pitch + q]
                d2, d3 = padded[at + 2 * pitch + q], padded[at + 3 * pitch + q]
                e[0, q], e[1, q], e[2, q], e[3, q] = d0 - d2, d1 + d2, d2 - d1, d1 - d3
            t = v_at + ty * wide + tx
            for i in range(4):      # (Bᵀ d) B, row i: columns 0 - 2, 1 + 2, 2 - 1, 1 - 3
                v[t + 4 * i * v_stride] = e[i, 0] - e[i, 2]
                v[t + (4 * i + 1) * v_stride] = e[i, 1] + e[i, 2]
                v[t + (4 * i + 2) * v_stride] = e[i, 2] - e[i, 1]
                v[t + (4 * i + 3) * v_stride] = e[i, 1] - e[i, 3]
        for xi in range(16):
            v[v_at + xi * v_stride + ty * wide + tiles_w] = 0


@njit(**_JIT)
def transform_columns(m, co, count, sums):
    """``Aᵀ M`` of tiles ``t < count`` of channel ``co`` (``m`` is (16, C_out, tiles)), the
    first half of the output transform: ``sums[j]`` and ``sums[4 + j]`` (``sums`` is (8,
    tiles)) are rows 0 and 1 of column ``j``, ``Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]``. Each
    loop has few loads and stores, so LLVM vectorises them."""
    for j in range(4):
        m0, m1, m2, m3 = m[j, co], m[4 + j, co], m[8 + j, co], m[12 + j, co]
        top, bottom = sums[j], sums[4 + j]
        for t in range(count):
            top[t] = m0[t] + m1[t] + m2[t]
        for t in range(count):
            bottom[t] = m1[t] - m2[t] - m3[t]


@njit(**_JIT)
def _output_transform(m, co, count, bias, rectify, sums, image):
    """The 2x2 outputs ``(Aᵀ M A)[a, b] + bias`` of tiles ``t < count`` of channel ``co`` (``m``
    is (16, C_out, tiles)), with a ReLU when ``rectify``, written as ``image[a, 2*t + b]``:
    with the wide grid's ``pitch = tw + 1`` tiles per row, output row ``2*ty + a`` of a
    sample starting at tile ``t0`` is ``image[a, 2*(t0 + ty*pitch):][:W_out]``, in order.
    ``sums`` (8, tiles) is scratch for ``Aᵀ M`` (:func:`transform_columns`); the two stores
    of the last loop interleave."""
    transform_columns(m, co, count, sums)
    zero = image.dtype.type(0)
    for a in range(2):
        s0, s1, s2, s3 = sums[4 * a], sums[4 * a + 1], sums[4 * a + 2], sums[4 * a + 3]
        row = image[a]
        if rectify:     # the ReLU's rule: max(value, 0), NaN kept
            for t in range(count):
                left = (s0[t] + s1[t] + s2[t]) + bias
                right = (s1[t] - s2[t] - s3[t]) + bias
                row[2 * t] = left if not left < zero else zero
                row[2 * t + 1] = right if not right < zero else zero
        else:
            for t in range(count):
                row[2 * t] = (s0[t] + s1[t] + s2[t]) + bias
                row[2 * t + 1] = (s1[t] - s2[t] - s3[t]) + bias


@njit(**_JIT)
def _write_rows(image, tile0, pitch, plane, epilogue, pooled, argmax, cells, codes):
    """One sample's output rows from :func:`_output_transform`'s ``image`` into its (H_out,
    W_out) ``plane`` (a last odd row or column of tiles is dropped), and for ``epilogue``
    :data:`~minicnn.kernels.contracts.RELU_MAXPOOL` or ``RELU_MAXPOOL_VALUES`` its 2x2 max
    pooling into ``pooled`` (with the winners into ``argmax`` for ``RELU_MAXPOOL``), from the
    plane just written (in cache) with the pooling layer's rule
    (:func:`~minicnn.kernels.maxpool2x2.max_pool_plane`; ``cells`` and ``codes`` its working
    space)."""
    out_h, out_w = plane.shape
    for row in range(out_h):
        start = 2 * (tile0 + (row // 2) * pitch)
        src, dest = image[row % 2, start:start + out_w], plane[row]
        for ow in range(out_w):
            dest[ow] = src[ow]
    if epilogue == RELU_MAXPOOL or epilogue == RELU_MAXPOOL_VALUES:
        max_pool_plane(plane.reshape(plane.size), 0, out_h, out_w, pooled.reshape(pooled.size),
                       0, argmax.reshape(argmax.size), 0, cells, codes)


class WinogradForwardArgs(NamedTuple):
    """``args`` of :func:`forward_chunk` (built by :func:`arguments`): the one-pool forward's
    arrays and epilogue (:class:`minicnn.kernels.onepool.ConvForwardArgs`), the transformed
    filters for the weights, and the four passes as function pointers."""

    x: np.ndarray           #: (N, C_in, H, W) input, C-contiguous
    u: np.ndarray           #: (16, C_out, C_in) transformed filters (:func:`transform_weights`)
    bias: np.ndarray        #: (C_out,), or (1,) unused when not ``has_bias``
    has_bias: bool
    y: np.ndarray           #: (N, C_out, H_out, W_out) output, written
    epilogue: int           #: an epilogue mode of :mod:`minicnn.kernels.contracts`
    pooled: np.ndarray      #: (N, C_out, H_out//2, W_out//2) pooled output, or empty
    argmax: np.ndarray      #: int32 winners of the pooling, or empty
    #: (1,) int64, zero: the counter the threads claim groups of samples from (a fresh one
    #: each call, as :func:`arguments` makes: a used one hands out nothing)
    claims: np.ndarray
    columns: int            #: of each row of ``V`` and ``M`` (:func:`columns`)
    #: whether each plane is transformed from a padded copy (:data:`PADDED_MIN_TILES`) or
    #: through its phases
    padded_rows: bool
    products: object        #: :func:`_products_blocks` (float32) or :func:`_products_gemm`
    split_phases: object    #: :func:`_split_phases`, a pointer
    input_transform: object     #: :func:`_input_transform`, a pointer
    #: :func:`_input_rows`, or for float32 :func:`minicnn.kernels.winograd_blocks.
    #: input_tiles_padded`, a pointer
    input_rows: object
    output_transform: object    #: :func:`_output_transform`, a pointer
    write_rows: object      #: :func:`_write_rows`, a pointer


@njit(**_JIT)
def _products_gemm(v, u, m, tiles):
    """``M[ξ] (C_out, tiles) = U[ξ] (C_out, C_in) @ V[ξ] (C_in, tiles)``, 16 GEMMs (float64)."""
    channels, capacity, c_out = v.shape[1], v.shape[2], m.shape[1]
    for xi in range(16):
        _gemm(blas.NO_TRANS, blas.NO_TRANS, c_out, tiles, channels, u[xi], channels, v[xi],
              capacity, 0.0, m[xi], capacity)


@njit(**_JIT)
def _products_blocks(v, u, m, tiles):
    """:func:`_products_gemm` for float32, in register blocks
    (:func:`minicnn.kernels.winograd_blocks.products`; OpenBLAS ran these thin products at
    about a third of the blocks' speed). The columns of ``m`` past ``tiles`` up to the next
    multiple of 8 are written with garbage, never read."""
    channels, capacity, c_out = v.shape[1], v.shape[2], m.shape[1]
    products(v.reshape(v.size), u.reshape(u.size), m.reshape(m.size), channels, c_out,
             capacity, tiles, 0, c_out, 16)


@njit(**_JIT)
def forward_chunk(args, plan, thread, n_threads):
    """One thread's groups of samples, claimed one at a time (:mod:`minicnn.kernels.claims`:
    a thread slowed by a busy neighbour core takes fewer; each group's outputs are its own and
    come out the same whichever thread computes them, so ``y`` is the same bit for bit at any
    thread count): transform every tile of each channel (from a padded copy of the plane, or
    through its phases: ``args.padded_rows``), 16 GEMMs ``M[ξ] = U[ξ] @ V[ξ]``, then per
    output channel the output transform, the bias (and ReLU, and 2x2 max pooling) and the
    tiles into ``y``.

    ``args`` is a :class:`WinogradForwardArgs`, ``plan`` the layer's
    :class:`~minicnn.kernels.contracts.ConvPlan` (only the padding's ``top`` and ``left`` are
    read; the output sizes come from ``y``). The passes are called through pointers
    (:func:`minicnn.kernels.parallel.pointer`), so each is compiled once and not optimised
    again inside this kernel: 1.5 s less in a cold start."""
    x, u, bias, has_bias, y = args.x, args.u, args.bias, args.has_bias, args.y
    epilogue, pooled, argmax = args.epilogue, args.pooled, args.argmax
    top, left = plan.top, plan.left
    no_pooled = np.empty((0, 0), dtype=x.dtype)     # write_rows' pooling arrays, unused
    no_argmax = np.empty((0, 0), dtype=np.int32)
    cells, codes = pool_scratch(y.shape[2], y.shape[3], x.dtype)
    channels = x.shape[1]
    c_out, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
    pitch = tiles_w + 1
    per_sample = tiles_h * pitch            # wide-grid tiles of one sample
    group = max(1, TILES_PER_GROUP // per_sample)
    capacity = args.columns
    # One zero row more than the padded plane needs: the loads for the last wide-grid tile
    # (garbage) run one element past the plane's last row (:func:`_input_transform`). Only
    # where the planes go through their phases.
    through_phases = not args.padded_rows
    phases = np.zeros((4, tiles_h + 2, pitch) if through_phases else (4, 0, pitch),
                      dtype=x.dtype)
    rows = np.empty((8, per_sample + 1 if through_phases else 0), dtype=x.dtype)
    # The padded copy of one plane (its border zero from here on), rows of two cells per
    # wide-grid tile: 2 * tiles_h + 2 rows cover every tile's 4x4 cells.
    padded_pitch = 2 * pitch
    padded = np.zeros((2 * tiles_h + 2) * padded_pitch if args.padded_rows else 0,
                      dtype=x.dtype)
    v = np.empty((16, channels, capacity), dtype=x.dtype)
    v_flat = v.reshape(v.size)
    m = np.empty((16, c_out, capacity), dtype=x.dtype)
    sums = np.empty((8, capacity), dtype=x.dtype)
    image = np.empty((2, 2 * capacity), dtype=x.dtype)
    zero = x.dtype.type(0)
    rectify = epilogue != PLAIN
    n_samples = x.shape[0]
    n_groups = -(-n_samples // group)
    while True:
        k = claim(args.claims, 0)
        if k >= n_groups:
            break
        n0 = k * group
        count = min(group, n_samples - n0)
        tiles = count * per_sample
        for slot in range(count):
            for c in range(channels):
                if args.padded_rows:
                    _pad_plane(x, n0 + slot, c, top, left, padded, padded_pitch)
                    args.input_rows(padded, padded_pitch, tiles_h, tiles_w, pitch, v_flat,
                                    c * capacity + slot * per_sample, channels * capacity)
                else:
                    args.split_phases(x, n0 + slot, c, top, left, phases)
                    args.input_transform(phases, c, slot * per_sample, rows, v)
        args.products(v, u, m, tiles)       # M[ξ] (C_out, tiles) = U[ξ] @ V[ξ]
        for co in range(c_out):
            b = bias[co] if has_bias else zero
            args.output_transform(m, co, tiles, b, rectify, sums, image)
            for slot in range(count):
                n = n0 + slot
                tile0 = slot * per_sample
                if epilogue == RELU_MAXPOOL:
                    args.write_rows(image, tile0, pitch, y[n, co], epilogue, pooled[n, co],
                                    argmax[n, co], cells, codes)
                elif epilogue == RELU_MAXPOOL_VALUES:
                    args.write_rows(image, tile0, pitch, y[n, co], epilogue, pooled[n, co],
                                    no_argmax, cells, codes)
                else:
                    args.write_rows(image, tile0, pitch, y[n, co], epilogue, no_pooled,
                                    no_argmax, cells, codes)


@functools.lru_cache(maxsize=None)
def _pointers(dtype):
    """The six passes of :func:`forward_chunk` for ``dtype``, as function pointers, in the
    order of :class:`WinogradForwardArgs`' fields from ``products`` on."""
    real = numba.from_dtype(dtype)
    array = {ndim: types.Array(real, ndim, "C") for ndim in (1, 2, 3, 4)}
    winners = types.Array(types.int32, 2, "C")
    intp = types.intp
    # float32 transforms its tiles and multiplies in register blocks
    # (minicnn.kernels.winograd_blocks: the same transforms; the products' sums in another
    # order than OpenBLAS's); float64, the reference dtype of the gradient checks, in the
    # loops above and OpenBLAS
    transform = _input_transform_blocks if dtype == np.float32 else _input_transform
    rows = input_tiles_padded if dtype == np.float32 else _input_rows
    product = _products_blocks if dtype == np.float32 else _products_gemm
    return (
        parallel.pointer(product, (array[3], array[3], array[3], intp)),
        parallel.pointer(_split_phases, (array[4], intp, intp, intp, intp, array[3])),
        parallel.pointer(transform, (array[3], intp, intp, array[2], array[3])),
        parallel.pointer(rows, (array[1], intp, intp, intp, intp, array[1], intp, intp)),
        parallel.pointer(_output_transform, (array[3], intp, intp, real, types.boolean,
                                             array[2], array[2])),
        parallel.pointer(_write_rows, (array[2], intp, intp, array[2], intp, array[2],
                                       winners, array[2], types.Array(types.int32, 1, "C"))))


def arguments(x, u, bias, has_bias, y, epilogue, pooled, argmax) -> WinogradForwardArgs:
    """:func:`forward_chunk`'s ``args`` (for :func:`minicnn.kernels.parallel.run`), with the
    six passes compiled for ``x``'s dtype."""
    padded_rows = (y.shape[3] + 1) // 2 >= PADDED_MIN_TILES
    return WinogradForwardArgs(x, u, bias, has_bias, y, epilogue, pooled, argmax,
                               np.zeros(1, dtype=np.int64),
                               columns(y.shape[2], y.shape[3], x.shape[1], y.shape[1]),
                               padded_rows, *_pointers(x.dtype))


def columns(out_h: int, out_w: int, c_in: int, c_out: int) -> int:
    """Columns of each row of :func:`forward_chunk`'s ``V`` and ``M``: a group's wide-grid
    tiles (:data:`TILES_PER_GROUP`, whole samples) rounded up to whole register blocks of
    tiles (the products'), spread over the L1 cache's sets
    (:func:`minicnn.kernels.winograd_blocks.spread_columns`)."""
    tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
    per_sample = tiles_h * (tiles_w + 1)
    group = max(1, TILES_PER_GROUP // per_sample)
    return spread_columns(-(-group * per_sample // PRODUCT_TILES) * PRODUCT_TILES, c_in,
                          c_out, 16)
