"""Winograd's F(4x4, 3x3) for the inference plan: a 3x3, stride-1 convolution with 4x fewer
multiplies than the direct sum (F(2x2, 3x3), :mod:`minicnn.kernels.winograd`, saves 2.25x).

A 4x4 block of outputs reads a 6x6 block of input ``d``; with the 3x3 filter ``g``,

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A

where (interpolation points 0, ±1, ±2 and ∞; Lavin and Gray, 2016)

    Bᵀ = [4  0 -5  0  1  0]    G = [ 1/4     0     0  ]    Aᵀ = [1  1  1  1  1  0]
         [0 -4 -4  1  1  0]        [-1/6  -1/6  -1/6  ]         [0  1 -1  2 -2  0]
         [0  4 -4 -1  1  0]        [-1/6   1/6  -1/6  ]         [0  1  1  4  4  0]
         [0 -2 -1  2  1  0]        [1/24  1/12   1/6  ]         [0  1 -1  8 -8  1]
         [0  2 -1 -2  1  0]        [1/24 -1/12   1/6  ]
         [0  4  0 -5  0  1]        [ 0     0     1    ]

Over many channels the 36 elementwise products become 36 GEMMs ``M[ξ] (C_out, tiles) = U[ξ]
(C_out, C_in) @ V[ξ] (C_in, tiles)``: 36 multiply-adds per 16 outputs and channel pair where
the direct sum takes 144 and F(2x2, 3x3) 64. The price is rounding: the transforms multiply
by up to 8 and divide by 24, so float32 results differ from the direct sum by more than
F(2x2, 3x3)'s (measured on ResNet-20's convolutions: about 1e-6 of the output's scale against
2e-7), well inside the float32 tolerance every backend is held to.

Layout, as F(2x2, 3x3)'s (:mod:`minicnn.kernels.winograd`, read that first): each padded
input plane is split into *phases*, here 16 (rows and columns modulo 4), so that cell ``(i,
j)`` of every tile is one contiguous shift of one phase: tile ``t = ty * pitch + tx`` on the
*wide* grid of ``pitch = tw + 1`` tiles a row reads phase ``(i % 4, j % 4)`` at ``t + (i //
4) * pitch + j // 4``. Each register block (:func:`input_block`, :func:`output_block`) takes 8
consecutive tiles as the 8 lanes of a vector. The output transform writes the four columns of
each tile's output rows side by side, so that output row ``4 ty + a`` comes out in order on a
grid of ``4 * pitch`` columns (the last four garbage).

Where there are eight samples, they are laid side by side instead (:func:`sample_tiles`):
the phases of 8 planes interleaved cell by cell, so that a block's 8 lanes are the 8
samples' tiles at one position. There is no wide grid then: on an 8x8 output (2x2 tiles,
ResNet-20's last stage) the wide grid has 6 tiles a sample of which 2 are garbage, a third of
the products and transforms. Each tile's arithmetic is the same either way (the same bits).

The arithmetic uses FMAs (``contract``), in the transforms' usual factored form (the rows of
``Bᵀ`` share ``d3 - 4 d1`` and ``d4 - 4 d2``, ``d3 - d1`` and ``d4 - d2``; those of ``Aᵀ``
share ``m1 ± m2`` and ``m3 ± m4``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .ir_helpers import load_vector, store_positions, store_vector
from .claims import claim
from .winograd_blocks import products, spread_columns


#: Tiles per register block (float32 lanes of a 256-bit vector).
TILES = 8
#: Positions ξ of a transformed tile (6 x 6), each one GEMM.
POSITIONS = 36
#: Phases of a padded plane (rows and columns modulo 4).
PHASES = 16

_CONTRACT = ("contract",)


def tiles_of(out_h: int, out_w: int) -> tuple[int, int, int]:
    """``(tiles_h, tiles_w, pitch)`` of an ``out_h x out_w`` output: 4x4 tiles, and the wide
    grid's tiles per row (one garbage column)."""
    tiles_h, tiles_w = -(-out_h // 4), -(-out_w // 4)
    return tiles_h, tiles_w, tiles_w + 1


@njit(cache=True, nogil=True)
def phases_size(tiles_h, pitch):
    """Floats the phases of a step take (:func:`split_phases`): the 16 phases of one plane,
    ``tiles_h + 2`` rows of ``pitch`` each, and one block's slack after the last (a block of 8
    tiles on a plane of fewer reads past it; those lanes are garbage, never read back); or
    the phases of 8 planes side by side (:func:`sample_tiles`), whichever is more."""
    return max(PHASES * (tiles_h + 2) * pitch + TILES + pitch,
               TILES * PHASES * (tiles_h + 2) * pitch)


def capacity(chunk: int, per_sample: int, positions: int, c_in: int, c_out: int) -> int:
    """Columns of a row of ``V`` and ``M``: a chunk of ``chunk`` samples' wide-grid tiles
    (``per_sample`` each) and a block's slack (a plane of fewer than 8 tiles is transformed
    as one whole block), or 8 samples' tiles at every one of ``positions`` (:func:`
    sample_tiles`) where they are at most :data:`OCTET_MAX_TILES`, whichever is more, rounded
    up to the products' blocks of 24, then spread over the L1 cache's sets for ``c_in`` input
    and ``c_out`` output channels (:func:`minicnn.kernels.winograd_blocks.spread_columns`).
    Plain Python: the kernels are handed it (:class:`ForwardArgs`, the plan's steps)."""
    wide = chunk * per_sample + TILES
    octet = TILES * positions
    blocks = -(-max(wide, octet if octet <= OCTET_MAX_TILES else 0) // 24) * 24
    return spread_columns(blocks, c_in, c_out, POSITIONS)


#: ``G``'s fractions as float64 multipliers (no divisions in the filter transform; a product
#: differs from the quotient by at most a float64 unit in the last place, far below the
#: float32 rounding that follows).
_SIXTH, _TWELFTH, _TWENTY_FOURTH = 1.0 / 6.0, 1.0 / 12.0, 1.0 / 24.0
#: Filters transformed into a local block before their 36 positions are stored.
FILTER_BLOCK = 16


@njit(inline="always")
def _g_times(g0, g1, g2):
    """``G @ (g0, g1, g2)``: the six rows of ``G`` applied to a column (or row) of three."""
    return (g0 * 0.25, -(g0 + g1 + g2) * _SIXTH, -(g0 - g1 + g2) * _SIXTH,
            g0 * _TWENTY_FOURTH + g1 * _TWELFTH + g2 * _SIXTH,
            g0 * _TWENTY_FOURTH - g1 * _TWELFTH + g2 * _SIXTH, g2)


@njit(cache=True, nogil=True)
def filters_into(weight, c_out, c_in, u):
    """``U = G g Gᵀ`` of every filter, flat: ``weight`` (C_out * C_in * 9, as (C_out, C_in,
    3, 3)) -> ``u`` (36 * C_out * C_in, as (36, C_out, C_in)). Computed in float64 and rounded
    once (the sixths and twenty-fourths are not exact in float32).

    :data:`FILTER_BLOCK` filters at a time go into a local block, then each position's run
    of them into its row of ``u``: storing each filter's 36 values straight into 36 rows
    ``C_out * C_in`` floats apart (16 KB for 64 x 64 filters, so all in the same few L1 sets)
    took 0.66 ms for ResNet-20's 64-channel layers, on every training forward and input
    gradient; by blocks, 0.12."""
    plane = c_out * c_in
    out = u[:36 * plane].reshape((36, plane))
    block = np.empty((36, FILTER_BLOCK))
    for k0 in range(0, plane, FILTER_BLOCK):
        count = min(FILTER_BLOCK, plane - k0)
        for kk in range(count):
            w = weight[(k0 + kk) * 9:(k0 + kk) * 9 + 9]
            # G g: its three columns, six rows each; then each row times Gᵀ
            a = _g_times(np.float64(w[0]), np.float64(w[3]), np.float64(w[6]))
            b = _g_times(np.float64(w[1]), np.float64(w[4]), np.float64(w[7]))
            c = _g_times(np.float64(w[2]), np.float64(w[5]), np.float64(w[8]))
            for i in range(6):
                row = _g_times(a[i], b[i], c[i])
                for j in range(6):
                    block[6 * i + j, kk] = row[j]
        for xi in range(36):
            run = out[xi, k0:k0 + count]
            for kk in range(count):
                run[kk] = block[xi, kk]


@njit(cache=True, nogil=True)
def split_phases(plane, top, left, phases, phase_size, pitch, samples, sample):
    """The zero-padded plane ``P`` of one input ``plane`` (H, W) as its 16 phases: cell ``k =
    (4 r + q) * phase_size + a * pitch + b`` holds ``P[4 a + r, 4 b + q]``, at
    ``phases[samples * k + sample]`` (``samples = 1``: one plane; 8: eight samples' planes
    side by side, :func:`sample_tiles`). Writes only the cells that hold an input value: the
    others (the padding, the slack) must be zero before the first call and stay so."""
    height, width = plane.shape[0], plane.shape[1]
    whole = width // 4
    for h in range(height):
        row = h + top
        base = (row % 4) * 4 * phase_size + (row // 4) * pitch
        src = plane[h]
        # input column 4 b + j is padded column 4 b + j + left: phase (j + left) % 4, phase
        # column b + (j + left) // 4. One loop over b with the four streams, which LLVM
        # vectorises as one interleaved group (a loop per stream, or one along the row
        # with the phase computed per value, stays scalar)
        d0 = base + (left % 4) * phase_size + left // 4
        d1 = base + ((1 + left) % 4) * phase_size + (1 + left) // 4
        d2 = base + ((2 + left) % 4) * phase_size + (2 + left) // 4
        d3 = base + ((3 + left) % 4) * phase_size + (3 + left) // 4
        if samples == 1:
            for b in range(whole):
                phases[d0 + b] = src[4 * b]
                phases[d1 + b] = src[4 * b + 1]
                phases[d2 + b] = src[4 * b + 2]
                phases[d3 + b] = src[4 * b + 3]
        else:
            for b in range(whole):
                phases[samples * (d0 + b) + sample] = src[4 * b]
                phases[samples * (d1 + b) + sample] = src[4 * b + 1]
                phases[samples * (d2 + b) + sample] = src[4 * b + 2]
                phases[samples * (d3 + b) + sample] = src[4 * b + 3]
        for w in range(4 * whole, width):
            column = w + left
            at = base + (column % 4) * phase_size + column // 4
            phases[samples * at + sample] = src[w]


def _input_rows(builder, d):
    """``Bᵀ d`` of one column ``d`` (6 vectors), factored: 6 rows."""
    fadd = lambda a, b: builder.fadd(a, b, flags=_CONTRACT)
    fsub = lambda a, b: builder.fsub(a, b, flags=_CONTRACT)
    fmul = lambda a, k: builder.fmul(a, ir.Constant(a.type, [ir.Constant(ir.FloatType(), k)]
                                                    * a.type.count), flags=_CONTRACT)
    d0, d1, d2, d3, d4, d5 = d
    minus_4d1, minus_4d2 = fmul(d1, -4.0), fmul(d2, -4.0)
    a = fadd(d3, minus_4d1)               # d3 - 4 d1
    b = fadd(d4, minus_4d2)               # d4 - 4 d2
    c = fsub(d3, d1)
    e = fsub(d4, d2)
    two_c = fmul(c, 2.0)
    return (fadd(fadd(fmul(d0, 4.0), fmul(d2, -5.0)), d4),
            fadd(b, a), fsub(b, a),
            fadd(e, two_c), fsub(e, two_c),
            fadd(fadd(fmul(d1, 4.0), fmul(d3, -5.0)), d5))


@intrinsic
def input_block(typingctx, phases, phase_size, row_step, column_step, src, v, v_at, v_stride,
                dst):
    """``v[v_at + (6 i + j) * v_stride + dst + l] = (Bᵀ d B)[i, j]`` for 8 tiles (``l < 8``),
    ``d`` the 6x6 cells of tile ``l``: cell ``(r, q)`` is ``phases[(4 (r % 4) + q % 4) *
    phase_size + src + l + (r // 4) * row_step + (q // 4) * column_step]``
    (:func:`split_phases`). On the wide grid (one sample a plane) the 8 tiles are consecutive
    tiles, ``column_step`` 1 and ``row_step`` the grid's pitch; with the samples innermost
    (:func:`sample_tiles`) they are 8 samples' tiles at one position. ``phases`` and ``v``
    are 1-D C float32 arrays, the rest int64."""
    sig = types.void(phases, phase_size, row_step, column_step, src, v, v_at, v_stride, dst)

    def codegen(context, builder, signature, args):
        (phases_arr, phase_size, row_step, column_step, src, v_arr, v_at, v_stride,
         dst) = args
        phases_ptr = context.make_array(signature.args[0])(context, builder, phases_arr).data
        v_ptr = context.make_array(signature.args[5])(context, builder, v_arr).data
        i64 = ir.IntType(64)
        vector = ir.VectorType(ir.FloatType(), TILES)

        def constant(value):
            return ir.Constant(i64, value)

        # Bᵀ d column by column (6 loads each), then (Bᵀ d) B row by row
        columns = []
        for q in range(6):
            d = []
            for r in range(6):
                at = builder.add(
                    builder.add(builder.mul(phase_size, constant(4 * (r % 4) + q % 4)), src),
                    builder.add(builder.mul(row_step, constant(r // 4)),
                                builder.mul(column_step, constant(q // 4))))
                d.append(load_vector(builder, phases_ptr, at, vector))
            columns.append(_input_rows(builder, d))
        for i in range(6):
            store_positions(builder, _input_rows(builder, [columns[q][i] for q in range(6)]),
                            v_ptr, v_at, v_stride, 6 * i, dst)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def input_tiles(phases, phase_size, pitch, tiles, v, v_at, v_stride):
    """:func:`input_block` for tiles ``[0, tiles)`` of one plane on the wide grid: blocks of
    8, the last one overlapping the block before where ``tiles`` is not a multiple of 8 (those
    tiles computed twice, the same values). Fewer than 8 tiles: one block, whose lanes past
    ``tiles`` write garbage into ``v``'s next 8 - ``tiles`` columns (the caller's next plane
    overwrites them, or they lie past the tiles it reads)."""
    i64 = np.int64
    if tiles < TILES:
        input_block(phases, i64(phase_size), i64(pitch), i64(1), i64(0), v, i64(v_at),
                    i64(v_stride), i64(0))
        return
    for t0 in range(0, tiles, TILES):
        t = i64(min(t0, tiles - TILES))
        input_block(phases, i64(phase_size), i64(pitch), i64(1), t, v, i64(v_at),
                    i64(v_stride), t)


@njit(cache=True, nogil=True)
def sample_tiles(phases, phase_size, tiles_h, tiles_w, pitch, v, v_at, v_stride):
    """:func:`input_block` for the tiles of 8 samples whose planes of one channel were split
    with the samples innermost (:func:`split_phases` with ``samples = 8``: cell ``k`` of a
    phase at ``8 k + sample``): one block per tile position ``(ty, tx)``, its 8 lanes the 8
    samples, written to ``v`` columns ``8 (ty * tiles_w + tx) + sample``. No wide grid: every
    lane of every block is a tile of the output, where one sample's 8x8 plane on the wide
    grid has 6 tiles of which 4 are."""
    i64 = np.int64
    for ty in range(tiles_h):
        for tx in range(tiles_w):
            input_block(phases, i64(TILES * phase_size), i64(TILES * pitch), i64(TILES),
                        i64(TILES * (ty * pitch + tx)), v, i64(v_at), i64(v_stride),
                        i64(TILES * (ty * tiles_w + tx)))


def _output_rows(builder, m):
    """``Aᵀ m`` of one column ``m`` (6 vectors), factored: 4 rows."""
    fadd = lambda a, b: builder.fadd(a, b, flags=_CONTRACT)
    fsub = lambda a, b: builder.fsub(a, b, flags=_CONTRACT)
    fmul = lambda a, k: builder.fmul(a, ir.Constant(a.type, [ir.Constant(ir.FloatType(), k)]
                                                    * a.type.count), flags=_CONTRACT)
    m0, m1, m2, m3, m4, m5 = m
    s12, d12 = fadd(m1, m2), fsub(m1, m2)
    s34, d34 = fadd(m3, m4), fsub(m3, m4)
    return (fadd(fadd(m0, s12), s34),
            fadd(d12, fmul(d34, 2.0)),
            fadd(s12, fmul(s34, 4.0)),
            fadd(fadd(d12, fmul(d34, 8.0)), m5))


@intrinsic
def output_block(typingctx, m, m_at, m_stride, t0, image, row_size):
    """The output transform of 8 tiles of one output channel: ``image[a * row_size + 4 (t0 +
    l) + b] = (Aᵀ M A)[a, b]`` for tiles ``t0 + l`` (``l < 8``) whose products are ``m[m_at +
    ξ * m_stride + t0 + l]``; each output row's four columns of the 8 tiles interleaved by
    shuffles into 32 consecutive floats."""
    sig = types.void(m, m_at, m_stride, t0, image, row_size)

    def codegen(context, builder, signature, args):
        m_arr, m_at, m_stride, t0, image_arr, row_size = args
        m_ptr = context.make_array(signature.args[0])(context, builder, m_arr).data
        image_ptr = context.make_array(signature.args[4])(context, builder, image_arr).data
        i32, i64 = ir.IntType(32), ir.IntType(64)
        vector = ir.VectorType(ir.FloatType(), TILES)
        # lane e of a row's 32 floats is tile e // 4, column e % 4; in the concatenation of
        # the four column vectors (column b at lanes 8 b ...), that is lane 8 (e % 4) + e // 4
        pairs = ir.Constant(ir.VectorType(i32, 2 * TILES),
                            [ir.Constant(i32, l) for l in range(2 * TILES)])
        order = ir.Constant(ir.VectorType(i32, 4 * TILES),
                            [ir.Constant(i32, TILES * (e % 4) + e // 4)
                             for e in range(4 * TILES)])

        def at_position(xi):
            return builder.add(builder.add(m_at, builder.mul(m_stride, ir.Constant(i64, xi))), t0)

        m = [load_vector(builder, m_ptr, at_position(xi), vector) for xi in range(36)]
        columns = [_output_rows(builder, [m[6 * i + j] for i in range(6)]) for j in range(6)]
        for a in range(4):
            row = _output_rows(builder, [columns[j][a] for j in range(6)])
            first = builder.shuffle_vector(row[0], row[1], pairs)
            second = builder.shuffle_vector(row[2], row[3], pairs)
            values = builder.shuffle_vector(first, second, order)
            at = builder.add(builder.mul(row_size, ir.Constant(i64, a)),
                             builder.mul(t0, ir.Constant(i64, 4)))
            store_vector(builder, values, image_ptr, at)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def output_tiles(m, m_at, m_stride, tiles, image, row_size):
    """:func:`output_block` for tiles ``[0, tiles)`` of one output channel (the last block
    overlapping the one before; fewer than 8 tiles: one block reading ``m``'s next columns,
    garbage whose outputs land past the tiles' in ``image``)."""
    if tiles < TILES:
        output_block(m, np.int64(m_at), np.int64(m_stride), np.int64(0), image,
                     np.int64(row_size))
        return
    for t0 in range(0, tiles, TILES):
        output_block(m, np.int64(m_at), np.int64(m_stride), np.int64(min(t0, tiles - TILES)),
                     image, np.int64(row_size))


# --------------------------------------------------------------------------------------------
# The one-pool forward (training): a layer's whole batch, one share of samples per thread
# --------------------------------------------------------------------------------------------
#: Wide-grid tiles per chunk of samples (the 36 GEMMs' width): each tile carries 36
#: transformed values, so a chunk's ``V`` and ``M`` (36 x channels x tiles each) stay near
#: L2's size. On ResNet-20's 64-channel steps (6 tiles a sample) 48 ran as fast as 96 or
#: faster (1 and 2 threads, batch 64, a 2-core AMD EPYC) with half the memory, 24 slower.
CHUNK_TILES = 48
#: Eight samples side by side (:func:`sample_tiles`) where their tiles are at most this many
#: (ResNet-20's 8x8 planes: 32, its 16x16 ones: 128).
OCTET_MAX_TILES = 128


def transform_weights(weight):
    """``U = G g Gᵀ`` for every (output, input) channel pair: ``(C_out, C_in, 3, 3)`` ->
    ``(36, C_out, C_in)``, C-contiguous, position ``ξ = 6 i + j`` of the 6x6 tile first
    (:func:`filters_into`)."""
    c_out, c_in = weight.shape[0], weight.shape[1]
    u = np.empty((POSITIONS, c_out, c_in), dtype=weight.dtype)
    filters_into(np.ascontiguousarray(weight).reshape(-1), c_out, c_in, u.reshape(-1))
    return u


class ForwardArgs(NamedTuple):
    """``args`` of :func:`forward_chunk` (float32 only)."""

    x: np.ndarray           #: (N, C_in, H, W) input, C-contiguous
    u: np.ndarray           #: (36, C_out, C_in) transformed filters (:func:`transform_weights`)
    bias: np.ndarray        #: (C_out,), or (1,) unused when not ``has_bias``
    has_bias: bool
    y: np.ndarray           #: (N, C_out, H_out, W_out) output, written
    rectify: bool           #: a ReLU after the bias
    #: (1,) int64, zero: the counter the threads claim groups of samples from (a fresh one
    #: each call, as :func:`arguments` makes: a used one hands out nothing)
    claims: np.ndarray
    columns: int            #: of each row of ``V`` and ``M`` (:func:`capacity`)


def arguments(x, u, bias, has_bias, y, rectify) -> ForwardArgs:
    """:func:`forward_chunk`'s ``args`` for one call (a fresh counter to claim from)."""
    tiles_h, tiles_w, pitch = tiles_of(y.shape[2], y.shape[3])
    per_sample = tiles_h * pitch
    columns = capacity(max(1, CHUNK_TILES // per_sample), per_sample, tiles_h * tiles_w,
                       x.shape[1], y.shape[1])
    return ForwardArgs(x, u, bias, has_bias, y, rectify, np.zeros(1, dtype=np.int64), columns)


@njit(cache=True, nogil=True)
def _write_plane(image, row_size, tile0, pitch, bias, rectify, plane):
    """One output plane ``plane (H_out, W_out)`` from the output transform's rows
    (:func:`output_block`: output row ``oy`` of the sample whose first tile is ``tile0``
    starts at ``image[(oy % 4) * row_size + 4 * (tile0 + (oy // 4) * pitch)]``), plus
    ``bias``, then the ReLU where ``rectify`` (``v * 0`` below zero keeps a NaN a NaN)."""
    zero = plane.dtype.type(0)
    out_w = plane.shape[1]
    for oy in range(plane.shape[0]):
        src = image[(oy % 4) * row_size + 4 * (tile0 + (oy // 4) * pitch):]
        row = plane[oy]
        if rectify:
            for ox in range(out_w):
                v = src[ox] + bias
                row[ox] = v if not v <= zero else zero * v
        else:
            for ox in range(out_w):
                row[ox] = src[ox] + bias


@njit(cache=True, nogil=True)
def _write_plane_octet(image, row_size, tiles_w, lane, bias, rectify, plane):
    """:func:`_write_plane` for the tiles of 8 samples side by side (:func:`sample_tiles`):
    output ``(oy, ox)`` of the octet's sample ``lane`` is ``image[(oy % 4) * row_size + 4 * (8
    * ((oy // 4) * tiles_w + ox // 4) + lane) + ox % 4]``."""
    zero = plane.dtype.type(0)
    out_w = plane.shape[1]
    for oy in range(plane.shape[0]):
        at = (oy % 4) * row_size + 4 * TILES * (oy // 4) * tiles_w + 4 * lane
        row = plane[oy]
        for ox in range(out_w):
            v = image[at + 4 * TILES * (ox // 4) + ox % 4] + bias
            if rectify:
                v = v if not v <= zero else zero * v
            row[ox] = v


@njit(cache=True, nogil=True)
def forward_chunk(args, plan, thread, n_threads):
    """One thread's groups of samples, claimed one at a time (:mod:`minicnn.kernels.claims`;
    each group's outputs are its own and the same bit for bit whichever thread computes them):
    the batch's first ``8 * (N // 8)`` samples eight at a time side by side
    (:func:`sample_tiles`), the rest on the wide grid a chunk of :data:`CHUNK_TILES` tiles at
    a time; each plane split into its 16 phases and its tiles transformed, 36 products ``M[ξ]
    = U[ξ] @ V[ξ]`` (:func:`minicnn.kernels.winograd_blocks.products`), then per output
    channel the output transform, the bias (and ReLU) and the rows into ``y``. ``plan`` is
    the layer's :class:`~minicnn.kernels.contracts.ConvPlan` (only ``top`` and ``left`` are
    read; the sizes come from the arrays)."""
    x, u, y = args.x, args.u, args.y
    n_samples, c_in = x.shape[0], x.shape[1]
    c_out, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    tiles_h, tiles_w = (out_h + 3) // 4, (out_w + 3) // 4
    pitch = tiles_w + 1
    per_sample = tiles_h * pitch
    positions = tiles_h * tiles_w
    chunk = max(1, CHUNK_TILES // per_sample)
    columns = args.columns
    phase_size = (tiles_h + 2) * pitch
    phases = np.zeros(phases_size(tiles_h, pitch), dtype=x.dtype)
    v = np.empty(POSITIONS * c_in * columns, dtype=x.dtype)
    m = np.empty(POSITIONS * c_out * columns, dtype=x.dtype)
    image = np.empty(16 * columns, dtype=x.dtype)
    u_flat = u.reshape(u.size)
    zero = x.dtype.type(0)
    # Items: the octets (where a sample's tiles fit eight side by side), then chunks of the
    # samples after them.
    octets = n_samples // TILES if TILES * positions <= columns else 0
    after = octets * TILES
    items = octets + -(-(n_samples - after) // chunk)
    wide = False            # the phases laid out for the wide grid yet
    while True:
        k = claim(args.claims, 0)
        if k >= items:
            break
        if k < octets:
            n0, tiles = k * TILES, TILES * positions
            for c in range(c_in):
                for lane in range(TILES):
                    split_phases(x[n0 + lane, c], plan.top, plan.left, phases, phase_size,
                                 pitch, TILES, lane)
                sample_tiles(phases, phase_size, tiles_h, tiles_w, pitch, v, c * columns,
                             c_in * columns)
            products(v, u_flat, m, c_in, c_out, columns, tiles, 0, c_out, POSITIONS)
            for co in range(c_out):
                output_tiles(m, co * columns, c_out * columns, tiles, image, 4 * columns)
                b = args.bias[co] if args.has_bias else zero
                for lane in range(TILES):
                    _write_plane_octet(image, 4 * columns, tiles_w, lane, b, args.rectify,
                                       y[n0 + lane, co])
            continue
        if not wide:        # (claims come in order: no octet after this)
            for q in range(phases.shape[0]):      # the wide grid's padding cells: zero
                phases[q] = 0
            wide = True
        n0 = after + (k - octets) * chunk
        count = min(chunk, n_samples - n0)
        tiles = count * per_sample
        for c in range(c_in):
            for slot in range(count):
                split_phases(x[n0 + slot, c], plan.top, plan.left, phases, phase_size, pitch,
                             1, 0)
                input_tiles(phases, phase_size, pitch, per_sample, v,
                            c * columns + slot * per_sample, c_in * columns)
        products(v, u_flat, m, c_in, c_out, columns, tiles, 0, c_out, POSITIONS)
        for co in range(c_out):
            output_tiles(m, co * columns, c_out * columns, tiles, image, 4 * columns)
            b = args.bias[co] if args.has_bias else zero
            for slot in range(count):
                _write_plane(image, 4 * columns, slot * per_sample, pitch, b, args.rectify,
                             y[n0 + slot, co])


def applies(x_dtype, c_in: int, out_h: int, out_w: int) -> bool:
    """Whether a 3x3, stride-1, undilated layer's forward (or its input gradient, the same
    kind of convolution) runs here rather than as F(2x2, 3x3): float32, at least
    :data:`MIN_CHANNELS` input channels, an output of at least :data:`MIN_SIZE` rows and
    columns."""
    return (np.dtype(x_dtype) == np.float32 and c_in >= MIN_CHANNELS
            and min(out_h, out_w) >= MIN_SIZE)


#: F(4x4, 3x3) for layers with at least this many input channels: with fewer its transforms
#: cost more than the products it saves (ResNet-20's 16 and 32-channel steps ran slower than
#: F(2x2, 3x3), its 64-channel ones 20 % faster).
MIN_CHANNELS = 64
#: ... and outputs of at least this many rows and columns (4x4 tiles on a plane of fewer
#: waste most of their products on the garbage column and the partial tiles).
MIN_SIZE = 8
