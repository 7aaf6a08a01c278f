"""Winograd F(2x2, 3x3)'s input transform as register blocks of 8 tiles (float32, LLVM vector code).

:func:`minicnn.kernels.winograd._input_transform` writes ``V = Bᵀ d B`` as 24 loops over a
sample's tiles with an intermediate array (``Bᵀ d`` of the even and odd columns), each loop a
few dozen values long: every loop pays its vector prologue and scalar tail, and the
intermediate goes through memory. Here one block takes 8 consecutive tiles of the wide grid
(8 lanes), loads their 16 input cells as 16 vectors (each a contiguous run of one phase,
see :func:`~minicnn.kernels.winograd._split_phases`), computes the 16 outputs in registers and
stores each as one vector. The operations and their order are those of ``_input_transform``
(``Bᵀ d`` row by row, then the columns), so ``V`` is the same, bit for bit.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .direct_blocks import CHANNELS, LANES, POSITIONS, block_1x8, block_1x24, block_4x8, block_4x24
from .ir_helpers import load_vector, python_max, splat, store_positions

#: Tiles per block (float32 lanes of a 256-bit vector).
TILES = 8

#: The L1 data cache these layouts are spread over: 64 sets of 64-byte lines (32 KB, 8 ways,
#: on every x86 core since Skylake and Zen).
L1_SETS, LINE_BYTES = 64, 64


def _most_rows_in_one_set(stride: int, rows: int, item_bytes: int) -> int:
    """The most of ``rows`` rows, ``stride`` items of ``item_bytes`` apart, whose starts fall
    in one L1 set."""
    counts = [0] * L1_SETS
    for k in range(rows):
        counts[(k * stride * item_bytes // LINE_BYTES) % L1_SETS] += 1
    return max(counts)


def spread_columns(columns: int, channels_in: int, channels_out: int, rows: int) -> int:
    """Columns for each row of a Winograd layer's ``V`` (``rows`` x ``channels_in`` x
    columns) and ``M`` (``rows`` x ``channels_out`` x columns), float32: at least
    ``columns``, and so that the ``rows`` rows ``ξ`` of one channel, ``channels * columns``
    floats apart, spread over the L1 cache's sets. Plain Python: a layout is decided once per
    layer or plan, and handed to the kernels (compiling this would add to a cold start).

    A register block reads or writes one vector in each of those rows. An L1 set is picked by
    address bits 6-11, so rows a multiple of 4 KB apart share one set of 8 lines: ResNet-20's
    16-channel F(2x2, 3x3) layers (288 columns, rows 18 KB apart) put 8 of their 16 rows in
    each of two sets, its 64-channel F(4x4, 3x3) layers (72 columns) 18 of their 36. Of
    ``columns`` plus 0, 2, ..., 14 floats (rows stay 8-byte aligned), the fewest rows in
    the busiest set, in ``V`` or ``M``, then the shortest. Measured on one Zen 3 core, batch
    64, forward: the 16-channel layer 4.5 -> 3.7 ms (290 columns), the 32-channel 3.4 -> 3.0
    (146), the 64-channel F(4x4) 2.2 -> 2.1 (74); 8 more than 72 put all 36 rows in one
    set (2.4 ms)."""
    best, fewest = columns, rows + 1
    for extra in range(0, 16, 2):
        width = columns + extra
        most = max(_most_rows_in_one_set(channels_in * width, rows, 4),
                   _most_rows_in_one_set(channels_out * width, rows, 4))
        if most < fewest:
            best, fewest = width, most
    return best


def _store_transformed(builder, d, v_ptr, v_at, v_stride, t0):
    """``V = Bᵀ d B`` of 8 tiles from their cells ``d[r][q]`` (vectors: rows ``r``, columns
    ``q`` of the tiles), stored at ``v[v_at + (4 i + j) * v_stride + t0]``: the operations and
    their order of :func:`minicnn.kernels.winograd._input_transform`."""
    # Bᵀ d: e0 = d0 - d2, e1 = d1 + d2, e2 = d2 - d1, e3 = d1 - d3
    fsub, fadd = builder.fsub, builder.fadd
    e = [[fsub(d[0][q], d[2][q]) for q in range(4)],
         [fadd(d[1][q], d[2][q]) for q in range(4)],
         [fsub(d[2][q], d[1][q]) for q in range(4)],
         [fsub(d[1][q], d[3][q]) for q in range(4)]]
    for i in range(4):
        # (Bᵀ d) B: columns 0 - 2, 1 + 2, 2 - 1, 1 - 3
        outputs = (fsub(e[i][0], e[i][2]), fadd(e[i][1], e[i][2]),
                   fsub(e[i][2], e[i][1]), fsub(e[i][1], e[i][3]))
        store_positions(builder, outputs, v_ptr, v_at, v_stride, 4 * i, t0)


@intrinsic
def input_block(typingctx, phases, phase_size, pitch, t0, v, v_at, v_stride):
    """``v[v_at + (4 i + j) * v_stride + t0 + l] = (Bᵀ d B)[i, j]`` for the 8 tiles ``t0 + l``
    (``l < 8``), ``d`` the tile's 4x4 cells: cell ``(r, q)`` of tile ``t`` is
    ``phases[(2 (r % 2) + q % 2) * phase_size + t + (r // 2) * pitch + q // 2]`` (a plane's
    phases, flattened; ``pitch`` tiles per wide-grid row). ``phases`` and ``v`` are 1-D C
    float32 arrays, the rest int64."""
    sig = types.void(phases, phase_size, pitch, t0, v, v_at, v_stride)

    def codegen(context, builder, signature, args):
        phases_arr, phase_size, pitch, t0, v_arr, v_at, v_stride = args
        phases_ptr = context.make_array(signature.args[0])(context, builder, phases_arr).data
        v_ptr = context.make_array(signature.args[4])(context, builder, v_arr).data
        f32, i64 = ir.FloatType(), ir.IntType(64)
        vector = ir.VectorType(f32, TILES)

        def constant(value):
            return ir.Constant(i64, value)

        def load(at):
            return load_vector(builder, phases_ptr, at, vector)

        # d[r][q]: rows of the tile (r), its columns (q)
        d = []
        for r in range(4):
            row = []
            for q in range(4):
                phase = 2 * (r % 2) + q % 2
                at = builder.add(builder.add(builder.mul(phase_size, constant(phase)), t0),
                                 builder.add(builder.mul(pitch, constant(r // 2)),
                                             constant(q // 2)))
                row.append(load(at))
            d.append(row)
        _store_transformed(builder, d, v_ptr, v_at, v_stride, t0)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def input_tiles(phases, phase_size, pitch, tiles, v, v_at, v_stride):
    """:func:`input_block` for tiles ``[0, tiles)`` of one plane: blocks of 8, the last one
    overlapping the block before where ``tiles`` is not a multiple of 8 (those tiles computed
    twice, the same values), and fewer than 8 tiles one at a time."""
    if tiles < TILES:
        for t in range(tiles):
            _input_tile(phases, phase_size, pitch, t, v, v_at, v_stride)
        return
    for t0 in range(0, tiles, TILES):
        input_block(phases, np.int64(phase_size), np.int64(pitch),
                    np.int64(min(t0, tiles - TILES)), v, np.int64(v_at), np.int64(v_stride))


@intrinsic
def input_block_padded(typingctx, padded, at, pitch, v, v_at, v_stride, t0):
    """:func:`input_block` for 8 tiles side by side in one row of tiles, read from the padded
    plane itself instead of its phases: ``v[v_at + (4 i + j) * v_stride + t0 + l] = (Bᵀ d
    B)[i, j]`` for ``l < 8``, ``d`` the 4x4 cells ``padded[at + r * pitch + 2 l + q]`` (``r,
    q < 4``). ``padded`` (a zero-padded plane, rows of ``pitch``) and ``v`` are 1-D C float32
    arrays, the rest int64.

    Each row ``r`` is two pairs of vector loads, at columns ``at`` and ``at + 2``, 16 floats
    each; the even and the odd floats of a pair (one shuffle each) are the cells ``q = 0, 1``
    and ``q = 2, 3`` of the 8 tiles. No phase split goes through memory first: ResNet-20's
    32-channel layer at batch 64 on one Zen 3 core, split and transform 1.2 -> 0.7 ms. The
    arithmetic is :func:`input_block`'s, in the same order: the same ``V`` bit for bit."""
    sig = types.void(padded, at, pitch, v, v_at, v_stride, t0)

    def codegen(context, builder, signature, args):
        padded_arr, at, pitch, v_arr, v_at, v_stride, t0 = args
        padded_ptr = context.make_array(signature.args[0])(context, builder, padded_arr).data
        v_ptr = context.make_array(signature.args[3])(context, builder, v_arr).data
        f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
        vector = ir.VectorType(f32, TILES)
        lanes = ir.VectorType(i32, TILES)
        evens = ir.Constant(lanes, [ir.Constant(i32, 2 * l) for l in range(TILES)])
        odds = ir.Constant(lanes, [ir.Constant(i32, 2 * l + 1) for l in range(TILES)])

        def load(row_at, column):
            return load_vector(builder, padded_ptr, builder.add(row_at, ir.Constant(i64, column)),
                               vector)

        # d[r][q]: rows of the tiles (r), their columns (q)
        d = []
        for r in range(4):
            row_at = builder.add(at, builder.mul(pitch, ir.Constant(i64, r)))
            row = []
            for start in (0, 2):        # columns 2 l + start and 2 l + start + 1
                low, high = load(row_at, start), load(row_at, start + TILES)
                row += [builder.shuffle_vector(low, high, evens),
                        builder.shuffle_vector(low, high, odds)]
            d.append(row)
        _store_transformed(builder, d, v_ptr, v_at, v_stride, t0)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def input_tiles_padded(padded, pitch, tiles_h, tiles_w, wide, v, v_at, v_stride):
    """:func:`input_block_padded` for every tile of one zero-padded plane (rows of ``pitch``
    floats, at least ``2 * tiles_h + 2`` rows and ``pitch >= 2 * tiles_w + 2``): tile ``(ty,
    tx)``, whose top-left cell is ``padded[2 ty * pitch + 2 tx]``, goes to column ``ty * wide
    + tx`` of ``V`` (the wide grid's numbering, ``wide = tiles_w + 1``), and zeros to its last
    column (garbage, never read back, but the products read it: zeros keep them from
    meeting whatever the memory held). Blocks of 8 along each row of tiles, the last one
    overlapping the block before where ``tiles_w`` is not a multiple of 8 (those tiles
    computed twice, the same values); needs ``tiles_w >= 8``."""
    i64 = np.int64
    zero = v.dtype.type(0)
    for ty in range(tiles_h):
        for start in range(0, tiles_w, TILES):
            tx = min(start, tiles_w - TILES)
            input_block_padded(padded, i64(2 * ty * pitch + 2 * tx), i64(pitch), v, i64(v_at),
                               i64(v_stride), i64(ty * wide + tx))
        for xi in range(16):
            v[v_at + xi * v_stride + ty * wide + tiles_w] = zero


@njit(cache=True, nogil=True)
def _input_tile(phases, phase_size, pitch, t, v, v_at, v_stride):
    """One tile of :func:`input_block`, with the same operations (for planes of fewer than 8
    tiles)."""
    even, odd = phase_size, 2 * phase_size      # offsets of phases (0, 1) and (1, 0)
    for b in range(2):          # Bᵀ d on the even (q = 0, 2) and odd (q = 1, 3) columns
        for shift in range(2):
            at = b * even + t + shift
            d0, d2 = phases[at], phases[at + pitch]
            d1, d3 = phases[at + odd], phases[at + odd + pitch]
            q = 2 * shift + b
            v[v_at + q * v_stride + t] = d0 - d2                 # rows of Bᵀ d in slots
            v[v_at + (4 + q) * v_stride + t] = d1 + d2           # (4 i + q) for now
            v[v_at + (8 + q) * v_stride + t] = d2 - d1
            v[v_at + (12 + q) * v_stride + t] = d1 - d3
    for i in range(4):          # (Bᵀ d) B, row i
        at = v_at + 4 * i * v_stride + t
        e0, e1 = v[at], v[at + v_stride]
        e2, e3 = v[at + 2 * v_stride], v[at + 3 * v_stride]
        v[at] = e0 - e2
        v[at + v_stride] = e1 + e2
        v[at + 2 * v_stride] = e2 - e1
        v[at + 3 * v_stride] = e1 - e3


def make_output_pooled_block(relu: bool):
    """An intrinsic for 8 tiles of one output channel: ``Aᵀ M A`` (the tile's four outputs),
    each finished (``* scale + shift``, then a ReLU where ``relu``), and their maximum, the
    2x2 pooling whose windows are the tiles::

        block(m, m_at, m_stride, t0, scale, shift, pooled)

    ``pooled[t0 + l] = max`` over the tile's outputs, for tiles ``t0 + l`` (``l < 8``) whose
    16 products are ``m[m_at + ξ * m_stride + t0 + l]``; ``scale`` and ``shift`` float32
    scalars. The same operations in the same order as
    :func:`minicnn.kernels.network._output_pooled` (``transform_columns``, the epilogue and
    Python's ``max``), in registers instead of through the 8 rows of ``Aᵀ M``.
    """
    def typer(typingctx, m, m_at, m_stride, t0, scale, shift, pooled):
        sig = types.void(m, m_at, m_stride, t0, scale, shift, pooled)

        def codegen(context, builder, signature, args):
            m_arr, m_at, m_stride, t0, scale, shift, pooled_arr = args
            m_ptr = context.make_array(signature.args[0])(context, builder, m_arr).data
            pooled_ptr = context.make_array(signature.args[6])(context, builder,
                                                                pooled_arr).data
            f32, i64 = ir.FloatType(), ir.IntType(64)
            vector = ir.VectorType(f32, TILES)
            zero = ir.Constant(vector, [ir.Constant(f32, 0.0)] * TILES)

            def load(xi):
                at = builder.add(builder.add(m_at, builder.mul(m_stride, ir.Constant(i64, xi))),
                                 t0)
                pointer = builder.bitcast(builder.gep(m_ptr, [at]), vector.as_pointer())
                value = builder.load(pointer)
                value.align = 4
                return value

            fadd, fsub = builder.fadd, builder.fsub
            m = [load(xi) for xi in range(16)]
            # transform_columns: column j's top (rows 0 + 1 + 2) and bottom (1 - 2 - 3)
            top = [fadd(fadd(m[j], m[4 + j]), m[8 + j]) for j in range(4)]
            bottom = [fsub(fsub(m[4 + j], m[8 + j]), m[12 + j]) for j in range(4)]
            scale_v, shift_v = splat(builder, scale, TILES), splat(builder, shift, TILES)

            def finish(value):
                value = fadd(builder.fmul(value, scale_v), shift_v)
                if relu:        # v if not v <= 0 else 0 * v: NaN stays NaN
                    value = builder.select(builder.fcmp_ordered("<=", value, zero),
                                           builder.fmul(zero, value), value)
                return value

            a = finish(fadd(fadd(top[0], top[1]), top[2]))
            b = finish(fsub(fsub(top[1], top[2]), top[3]))
            c = finish(fadd(fadd(bottom[0], bottom[1]), bottom[2]))
            d = finish(fsub(fsub(bottom[1], bottom[2]), bottom[3]))
            result = python_max(builder, python_max(builder, a, b), python_max(builder, c, d))
            pointer = builder.bitcast(builder.gep(pooled_ptr, [t0]), vector.as_pointer())
            store = builder.store(result, pointer)
            store.align = 4
            return context.get_dummy_value()

        return sig, codegen

    return intrinsic(typer)


output_pooled_relu = make_output_pooled_block(True)
output_pooled_plain = make_output_pooled_block(False)


@intrinsic
def output_block(typingctx, m, m_at, m_stride, t0, bias, image, row_size):
    """The output transform of 8 tiles of one output channel, as
    :func:`minicnn.kernels.winograd._output_transform` (no ReLU) writes it:
    ``image[a * row_size + 2 (t0 + l) + b] = (Aᵀ M A)[a, b] + bias`` for tiles ``t0 + l``
    (``l < 8``) whose products are ``m[m_at + ξ * m_stride + t0 + l]``; the same operations in
    the same order, the two columns of each output row interleaved by two shuffles."""
    sig = types.void(m, m_at, m_stride, t0, bias, image, row_size)

    def codegen(context, builder, signature, args):
        m_arr, m_at, m_stride, t0, bias, image_arr, row_size = args
        m_ptr = context.make_array(signature.args[0])(context, builder, m_arr).data
        image_ptr = context.make_array(signature.args[5])(context, builder, image_arr).data
        f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
        vector = ir.VectorType(f32, TILES)
        low = ir.Constant(ir.VectorType(i32, TILES),
                          [ir.Constant(i32, (l // 2) + TILES * (l % 2)) for l in range(TILES)])
        high = ir.Constant(ir.VectorType(i32, TILES), [ir.Constant(i32, TILES // 2 + (l // 2)
                                                                   + TILES * (l % 2))
                                                       for l in range(TILES)])

        def load(xi):
            at = builder.add(builder.add(m_at, builder.mul(m_stride, ir.Constant(i64, xi))), t0)
            value = builder.load(builder.bitcast(builder.gep(m_ptr, [at]), vector.as_pointer()))
            value.align = 4
            return value

        fadd, fsub = builder.fadd, builder.fsub
        m = [load(xi) for xi in range(16)]
        top = [fadd(fadd(m[j], m[4 + j]), m[8 + j]) for j in range(4)]       # Aᵀ M row 0
        bottom = [fsub(fsub(m[4 + j], m[8 + j]), m[12 + j]) for j in range(4)]  # and row 1
        bias_v = splat(builder, bias, TILES)
        for a, sums in enumerate((top, bottom)):
            left = fadd(fadd(fadd(sums[0], sums[1]), sums[2]), bias_v)
            right = fadd(fsub(fsub(sums[1], sums[2]), sums[3]), bias_v)
            row_at = builder.add(builder.mul(row_size, ir.Constant(i64, a)),
                                 builder.mul(t0, ir.Constant(i64, 2)))
            for half, lanes in enumerate((low, high)):
                at = builder.add(row_at, ir.Constant(i64, half * TILES))
                store = builder.store(builder.shuffle_vector(left, right, lanes),
                                      builder.bitcast(builder.gep(image_ptr, [at]),
                                                      vector.as_pointer()))
                store.align = 4
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def products(v, u, m, c_in, c_out, capacity, tiles, first, last, positions):
    """The ``positions`` products ``M[ξ] (C_out, tiles) = U[ξ] (C_out, C_in) @ V[ξ] (C_in,
    tiles)`` (16 for F(2x2, 3x3), 36 for F(4x4, 3x3), :mod:`minicnn.kernels.winograd4`) for
    output channels ``[first, last)``, in register blocks of 4 channels x 24 tiles
    (:mod:`minicnn.kernels.direct_blocks`, K = C_in innermost), the last channels one at a
    time, the last tiles in blocks of 8 (a batch of one has 56 tiles: 2 x 24 + 8). ``v``
    (positions x C_in x capacity), ``u`` (positions x C_out x C_in) and ``m`` (positions x
    C_out x capacity) are flat float32; ``capacity`` a multiple of 24 (the last block of a row
    writes its columns past ``tiles``: garbage, never read). OpenBLAS ran these short, thin
    products at about a third of the blocks' speed.

    The tile blocks are the outer loop: one block's inputs (C_in x 24 floats, 6 KB for 64
    channels) stay in L1 while every channel block reads them. With the channel blocks outer,
    each streamed the whole ``V[ξ]`` from L2 (C_in x capacity: 49 KB for 64 channels, more than
    L1): ResNet-20's 64-channel products ran at 31 GMAC/s on one Zen 3 core."""
    i64 = np.int64
    whole = last - (last - first) % CHANNELS
    wide = tiles - tiles % POSITIONS
    one = i64(1)
    for xi in range(positions):
        v_at = xi * c_in * capacity
        for q in range(0, wide, POSITIONS):
            for co in range(first, whole, CHANNELS):
                block_4x24(v, i64(v_at + q), c_in, one, one, capacity, i64(0),
                           u, i64((xi * c_out + co) * c_in), c_in,
                           m, i64((xi * c_out + co) * capacity + q), capacity)
            for co in range(whole, last):
                block_1x24(v, i64(v_at + q), c_in, one, one, capacity, i64(0),
                           u, i64((xi * c_out + co) * c_in), c_in,
                           m, i64((xi * c_out + co) * capacity + q), capacity)
        for q in range(wide, tiles, LANES):
            for co in range(first, whole, CHANNELS):
                block_4x8(v, i64(v_at + q), c_in, one, one, capacity, i64(0),
                          u, i64((xi * c_out + co) * c_in), c_in,
                          m, i64((xi * c_out + co) * capacity + q), capacity)
            for co in range(whole, last):
                block_1x8(v, i64(v_at + q), c_in, one, one, capacity, i64(0),
                          u, i64((xi * c_out + co) * c_in), c_in,
                          m, i64((xi * c_out + co) * capacity + q), capacity)
