"""Integer Winograd F(2x2, 3x3) for the int8 path's 3x3 convolutions: exact, 2.25x fewer
multiplies.

Winograd's minimal filtering computes a 2x2 tile of a 3x3 convolution's output from a 4x4
patch ``d`` of its input with 16 multiplies instead of 36 (:mod:`minicnn.kernels.winograd`
explains the float version)::

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A

``Bᵀ`` and ``Aᵀ`` hold only 0 and ±1, so on integers the input and output transforms are
exact. ``G`` holds halves; ``2G`` does not, so the filters are transformed as ``U = (2G) g
(2G)ᵀ = 4 G g Gᵀ`` (exact integers, :func:`filter_transform`) and the output comes out as
exactly ``4 Y``: the shift right by 2 at the end is exact, and the result is the direct
convolution's int32 sum **bit for bit** (the tests hold this kernel to the reference loops).

Sizes: centred inputs ``|x - zero| <= 255`` give ``|V| <= 4 * 255`` (four terms); ``|U| <= 9 *
127``; a product fits int32 many times over, and ``pack`` checks (:func:`fits_int32`) that the
sums over the input channels and the output transform's sums cannot overflow int32, so that
the kernel computes integers, not wrapped ones (a conv that fails it runs direct).

Per sample and conv (channels last, :mod:`minicnn.kernels.int8`'s padded int16 input):

1. :func:`pad_phases` and :func:`input_tiles`: the padded input split by column parity,
   then ``V = Bᵀ d B`` of every tile, laid out ``(16, tiles, C)``, in long vector loops;
2. :func:`tile_products`: for each of the 16 positions, ``M[t] (tiles, C_out) = V[t] (tiles,
   C) @ U[t] (C, C_out)`` in int32, through the same ``vpmaddwd`` register blocks as the
   direct convolution (4 tiles x 16 channels);
3. :func:`output_tiles`: ``Aᵀ M A / 4`` of every tile into the conv's accumulator layout
   ``acc[(y * W + x) * rows + co]``, where the usual requantization (and fused pooling) takes
   over.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .int8_blocks import block_1x8, block_1x16, block_4x8, block_4x16

#: Positions of a transformed 4x4 tile.
POSITIONS = 16
#: Integer ``2G`` (F(2x2, 3x3)'s filter transform, doubled so that it has no halves).
G2 = np.array([[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]], dtype=np.int64)
#: The largest |value| of a transformed centred input: four terms of at most 255.
MAX_INPUT = 4 * 255

_at = np.uint64          # unsigned indices vectorise (see minicnn.kernels.int8)


def filter_transform(weight: np.ndarray) -> np.ndarray:
    """``U = (2G) g (2G)ᵀ`` of every filter, exactly: int ``(C_out, C_in, 3, 3)`` -> int64
    ``(16, C_out, C_in)``, position ``t = 4 * row + column`` of the transformed tile."""
    w = np.asarray(weight, dtype=np.int64)
    u = np.einsum("ai,ocij,bj->aboc", G2, w, G2)
    return u.reshape(POSITIONS, w.shape[0], w.shape[1])


def fits_int32(u: np.ndarray) -> bool:
    """Whether every sum the kernel forms for filters ``u`` (``(16, C_out, C_in)``, from
    :func:`filter_transform`) stays inside int32, whatever the input: an output channel's
    products over the input channels and the output transform's sums of them are bounded
    by ``MAX_INPUT`` times the channel's sum of ``|U|`` (every filter at +-127: about 250
    input channels; real filters allow many more)."""
    return MAX_INPUT * int(np.abs(u).sum(axis=(0, 2)).max(initial=0)) < 2 ** 31


@njit(cache=True, nogil=True, boundscheck=False)
def pad_phases(src, layer, phases):
    """One sample's conv input (uint8 channels last, ``src[(y * W + x) * C + c]``) as int16
    with the zero point subtracted, inside its border of zeros, split by column parity:
    ``phases[((b * Hp + y) * (Wp / 2) + x2) * Cp + c]`` holds padded column ``x = 2 * x2 + b``
    (``Wp`` even; ``Cp`` is ``C``, or ``C + 1`` with a channel of zeros). Tile ``tx`` starts at column ``2 * tx``: its columns are phase 0 and 1 at
    ``x2 = tx`` and ``tx + 1``, so :func:`input_tiles` runs over all the tiles of a row in one
    contiguous loop per output."""
    c, h, w = layer.in_c, layer.in_h, layer.in_w
    top, left, zero = layer.pad_top, layer.pad_left, layer.in_zero
    hp, half, cp = layer.padded_h, layer.padded_w // 2, layer.padded_c
    for k in range(2 * hp * half * cp):
        phases[_at(k)] = 0
    for y in range(h):
        for x in range(w):
            column = x + left
            at_out = (((column % 2) * hp + y + top) * half + column // 2) * cp
            at_in = (y * w + x) * c
            for ch in range(c):
                phases[_at(at_out + ch)] = np.int16(np.int32(src[_at(at_in + ch)]) - zero)


@njit(cache=True, nogil=True, boundscheck=False)
def input_tiles(phases, layer, rows, tiles):
    """``tiles[(t * T + tile) * C + c] = (Bᵀ d B)[t]`` for every tile of one sample, ``d``
    the 4x4 patch at ``(2 * ty, 2 * tx)`` of the padded input given as :func:`pad_phases`,
    ``T = tiles_h * tiles_w``, ``Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0,
    -1]]``. ``rows`` (int32, 8 x Wp / 2 x C) is scratch for ``Bᵀ d`` of one row of tiles.

    Every loop runs over one contiguous range with two inputs and one output: with more,
    LLVM needs more run-time overlap checks between the arrays than it allows, and leaves
    the loop scalar (a first version, all 16 outputs in one loop over the channels, took
    1.4 ms for the MNIST CNN's second conv at batch 64)."""
    c, hp, half = layer.padded_c, layer.padded_h, layer.padded_w // 2
    tiles_h, tiles_w = layer.tiles_h, layer.tiles_w
    count = tiles_h * tiles_w
    length = half * c                           # one phase of one padded row
    run = tiles_w * c                           # one row of tiles, one position
    for ty in range(tiles_h):
        for b in range(2):                      # Bᵀ d on the even (b = 0) and odd columns
            plane = b * hp * length
            r0 = phases[_at(plane + 2 * ty * length):]
            r1 = phases[_at(plane + (2 * ty + 1) * length):]
            r2 = phases[_at(plane + (2 * ty + 2) * length):]
            r3 = phases[_at(plane + (2 * ty + 3) * length):]
            e0, e1 = rows[_at(b * length):], rows[_at((2 + b) * length):]
            e2, e3 = rows[_at((4 + b) * length):], rows[_at((6 + b) * length):]
            for k in range(length):
                e0[k] = np.int32(r0[k]) - np.int32(r2[k])
            for k in range(length):
                e1[k] = np.int32(r1[k]) + np.int32(r2[k])
            for k in range(length):
                e2[k] = np.int32(r2[k]) - np.int32(r1[k])
            for k in range(length):
                e3[k] = np.int32(r1[k]) - np.int32(r3[k])
        first = ty * tiles_w * c
        for i in range(4):                      # (Bᵀ d) B: columns 2tx .. 2tx + 3 are
            even = rows[_at(2 * i * length):]   # even[tx], odd[tx], even[tx + 1], odd[tx + 1]
            odd = rows[_at((2 * i + 1) * length):]
            even1, odd1 = even[c:], odd[c:]
            out = tiles[_at((4 * i * count) * c + first):]
            for k in range(run):
                out[k] = np.int16(even[k] - even1[k])
            out = tiles[_at(((4 * i + 1) * count) * c + first):]
            for k in range(run):
                out[k] = np.int16(odd[k] + even1[k])
            out = tiles[_at(((4 * i + 2) * count) * c + first):]
            for k in range(run):
                out[k] = np.int16(even1[k] - odd[k])
            out = tiles[_at(((4 * i + 3) * count) * c + first):]
            for k in range(run):
                out[k] = np.int16(odd[k] - odd1[k])


def _make_products(block_4, block_1, width: int):
    """A compiled function computing output channels ``[co, co + width)`` of every position's
    product (see :func:`tile_products`)."""
    @njit(cache=True, nogil=True, boundscheck=False)
    def products(weights, tiles, products_out, c, rows, count, co):
        i64 = np.int64
        matrix = c * rows                     # int16 values of one position's packed U
        for t in range(POSITIONS):
            first = t * count
            for j in range(0, count - 3, 4):
                block_4(weights, i64(t * matrix + 2 * co), i64(rows), tiles,
                        i64((first + j) * c), i64(c), i64(c), i64(1), i64(0), i64(0),
                        products_out, i64((first + j) * rows + co), i64(rows))
            for j in range(count - count % 4, count):
                block_1(weights, i64(t * matrix + 2 * co), i64(rows), tiles,
                        i64((first + j) * c), i64(c), i64(c), i64(1), i64(0), i64(0),
                        products_out, i64((first + j) * rows + co), i64(rows))
    products.__doc__ = f"Channels ``[co, co + {width})`` of :func:`tile_products`."
    return products


_products_16 = _make_products(block_4x16, block_1x16, 16)
_products_8 = _make_products(block_4x8, block_1x8, 8)


@njit(cache=True, nogil=True, boundscheck=False)
def tile_products(weights, tiles, products_out, layer, rows):
    """``products_out[(t * T + tile) * rows + co] = sum_c tiles[(t * T + tile) * C + c] *
    U[t, co, c]`` (int32) for the 16 positions ``t``; ``weights`` holds the 16 matrices ``U[t]``
    one after another, each packed ``(C / 2, rows, 2)`` like a direct convolution's."""
    c = layer.padded_c
    count = layer.tiles_h * layer.tiles_w
    wide = rows - rows % 16
    for co in range(0, wide, 16):
        _products_16(weights, tiles, products_out, c, rows, count, co)
    if wide < rows:
        _products_8(weights, tiles, products_out, c, rows, count, wide)


@njit(cache=True, nogil=True, boundscheck=False)
def output_tiles(products_in, layer, rows, sums, acc):
    """``acc[(y * W + x) * rows + co] = (Aᵀ M A)[y, x] / 4`` for every tile (an exact
    division: the filters were transformed times 4), ``M`` the tile's 16 products,
    ``Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]``; a last odd row or column of tiles keeps only the
    outputs inside the conv's ``out_h x out_w``. ``sums`` (int32, 8 x tiles_w x rows) is
    scratch for ``Aᵀ M`` of one row of tiles; loops as in :func:`input_tiles`."""
    out_h, out_w = layer.out_h, layer.out_w
    tiles_h, tiles_w = layer.tiles_h, layer.tiles_w
    count = tiles_h * tiles_w
    run = tiles_w * rows                          # one row of tiles, one position
    for ty in range(tiles_h):
        first = ty * tiles_w * rows
        for j in range(4):                        # Aᵀ M, column j: s[a][j]
            m0 = products_in[_at(j * count * rows + first):]
            m1 = products_in[_at((4 + j) * count * rows + first):]
            m2 = products_in[_at((8 + j) * count * rows + first):]
            m3 = products_in[_at((12 + j) * count * rows + first):]
            upper, lower = sums[_at(j * run):], sums[_at((4 + j) * run):]
            for k in range(run):
                upper[k] = m0[k] + m1[k] + m2[k]
            for k in range(run):
                lower[k] = m1[k] - m2[k] - m3[k]
        for a in range(2):                        # (Aᵀ M) A, then / 4, row 2 ty + a
            y = 2 * ty + a
            if y >= out_h:
                break
            s0, s1 = sums[_at(4 * a * run):], sums[_at((4 * a + 1) * run):]
            s2, s3 = sums[_at((4 * a + 2) * run):], sums[_at((4 * a + 3) * run):]
            for tx in range(tiles_w):
                x, at = 2 * tx, tx * rows
                left = (y * out_w + x) * rows
                for co in range(rows):
                    acc[_at(left + co)] = (s0[_at(at + co)] + s1[_at(at + co)]
                                           + s2[_at(at + co)]) >> 2
                if x + 1 < out_w:
                    right = left + rows
                    for co in range(rows):
                        acc[_at(right + co)] = (s1[_at(at + co)] - s2[_at(at + co)]
                                                - s3[_at(at + co)]) >> 2
