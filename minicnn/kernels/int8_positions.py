"""A one-channel int8 convolution with its 2x2 max pooling, vectorised over output positions.

The direct convolution of :mod:`minicnn.kernels.int8` puts *output channels* in the vector
lanes (8 int32 per ``ymm``). A network's first conv often has few of them (LeNet-5's has 6):
a quarter of every vector then multiplies zero weights, and the requantization after it, a
loop over 6 channels, is too short to vectorise. This kernel puts *output positions* in the
lanes instead, for a stride-1 conv of one input channel whose 2x2 stride-2 max pooling is
fused in (LeNet-5's and the MNIST CNN's first layers).

Why it needs no shuffles: the padded input row is int16 and contiguous, so 16 int16 loaded
from offset ``o`` are, read as 8 pairs, ``(x[o + 2l], x[o + 2l + 1])`` for lanes ``l < 8``: the
two inputs of kernel columns ``kj, kj + 1`` for the output column ``o - kj + 2l``. One load at
``j + kj`` serves the *even* output columns ``j, j + 2, ..., j + 14``, one at ``j + 1 + kj`` the
odd ones, and ``vpmaddwd`` with a broadcast pair of weights ``(w[kj], w[kj + 1])`` adds both
products per lane (the packed weights' pairs layout is exactly that pair, with a zero kernel
column where ``kW`` is odd). A block keeps four accumulators per channel, output rows ``2i,
2i + 1`` x even / odd columns, for 16 output columns; the 2x2 pooling is then the lane-wise
maximum of the four (``vpmaxsd``), 8 pooled outputs per channel, with no horizontal step.

The sums are the integers of :func:`minicnn.kernels.int8._conv_direct` (integer addition does
not depend on its order), so the network's output is unchanged bit for bit.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .ir_helpers import multiply_add_pairs, splat_pair, zeroed_slots

#: Output columns per block (8 even + 8 odd lanes) and the pooled columns they give.
COLUMNS, POOLED_COLUMNS = 16, 8


def make_pooled_block(group: int):
    """An intrinsic computing, for ``group`` output channels, 2 output rows x 16 output
    columns of a one-channel stride-1 convolution and their 2x2 max pooling (8 values per
    channel), stored in ``acc``:

    ``acc[acc_offset + c * acc_plane + l] = max over r, s in {0, 1} of sum over ki < kh and
    p < half of x[x_offset + (ki + r) * x_pitch + 2 l + s + 2 p] * W[c, ki, 2p] +
    x[... + 1] * W[c, ki, 2p + 1]`` for channels ``c < group`` and lanes ``l < 8``, where
    ``W[c, ki, kj]`` is the int16 of pair ``ki * half + kj // 2`` of channel ``w_offset / 2 +
    c`` in the ``(K / 2, rows, 2)`` pairs layout. ``x`` is the padded int16 input (one
    channel, rows ``x_pitch`` apart), ``acc`` int32; all 1-D C arrays.
    """
    def typer(typingctx, w, w_offset, rows, x, x_offset, x_pitch, kh, half, acc, acc_offset,
              acc_plane):
        sig = types.void(w, w_offset, rows, x, x_offset, x_pitch, kh, half, acc, acc_offset,
                         acc_plane)

        def codegen(context, builder, signature, args):
            (w_arr, w_offset, rows, x_arr, x_offset, x_pitch, kh, half, acc_arr, acc_offset,
             acc_plane) = args
            w_ptr = context.make_array(signature.args[0])(context, builder, w_arr).data
            x_ptr = context.make_array(signature.args[3])(context, builder, x_arr).data
            acc_ptr = context.make_array(signature.args[8])(context, builder, acc_arr).data
            i16, i32, i64 = ir.IntType(16), ir.IntType(32), ir.IntType(64)
            half_vec, full = ir.VectorType(i32, 8), ir.VectorType(i32, 16)
            narrow = ir.VectorType(i16, 16)
            # slots[c][2 * r + s]: channel c, output row r of the two, even (0) / odd (1) columns
            flat = zeroed_slots(builder, half_vec, 4 * group)
            slots = [flat[4 * c:4 * c + 4] for c in range(group)]
            pair_stride = builder.mul(rows, ir.Constant(i64, 2))   # int16 between pairs
            with cgutils.for_range(builder, kh) as kernel_row:
                row_at = builder.add(x_offset, builder.mul(kernel_row.index, x_pitch))
                pair_row = builder.mul(kernel_row.index, half)
                with cgutils.for_range(builder, half) as pair:
                    column = builder.mul(pair.index, ir.Constant(i64, 2))
                    w_at = builder.add(w_offset, builder.mul(
                        builder.add(pair_row, pair.index), pair_stride))
                    weights = []
                    for c in range(group):
                        at = builder.add(w_at, ir.Constant(i64, 2 * c))
                        pointer = builder.bitcast(builder.gep(w_ptr, [at]), i32.as_pointer())
                        word = builder.load(pointer)
                        word.align = 2
                        weights.append(splat_pair(builder, word))
                    for r in range(2):
                        for s in range(2):
                            at = builder.add(builder.add(row_at, column), builder.add(
                                builder.mul(x_pitch, ir.Constant(i64, r)), ir.Constant(i64, s)))
                            pointer = builder.bitcast(builder.gep(x_ptr, [at]),
                                                      narrow.as_pointer())
                            value = builder.load(pointer)
                            value.align = 2
                            inputs = builder.sext(value, full)
                            for c in range(group):
                                pairs = multiply_add_pairs(builder, weights[c], inputs)
                                slot = slots[c][2 * r + s]
                                builder.store(builder.add(builder.load(slot), pairs), slot)
            for c in range(group):
                values = [builder.load(slot) for slot in slots[c]]

                def larger(a, b):
                    return builder.select(builder.icmp_signed(">", a, b), a, b)

                pooled = larger(larger(values[0], values[1]), larger(values[2], values[3]))
                at = builder.add(acc_offset, builder.mul(acc_plane, ir.Constant(i64, c)))
                pointer = builder.bitcast(builder.gep(acc_ptr, [at]), half_vec.as_pointer())
                store = builder.store(pooled, pointer)
                store.align = 4
            return context.get_dummy_value()

        return sig, codegen

    return intrinsic(typer)


pooled_block_3, pooled_block_1 = make_pooled_block(3), make_pooled_block(1)
#: Output channels per block: 3 x 4 accumulators + 4 inputs fill the 16 ``ymm`` registers.
GROUP = 3


def grid(out_w: int, pooled_h: int) -> tuple[int, int]:
    """``(pitch, plane)`` of the pooled sums in ``acc``: a pooled row holds whole blocks of
    :data:`POOLED_COLUMNS`; a channel holds ``pooled_h`` rows."""
    pitch = -(-out_w // COLUMNS) * POOLED_COLUMNS
    return pitch, pooled_h * pitch


def read_extent(padded_w: int, kh: int, kw_packed: int, out_w: int, pooled_h: int) -> int:
    """How many int16 of the padded input the blocks read (the last block's last lanes run
    past the last row: the buffer is that long, zeroed)."""
    last_block = 2 * (pooled_h - 1) * padded_w + (-(-out_w // COLUMNS) - 1) * COLUMNS
    return last_block + kh * padded_w + 1 + (kw_packed - 2) + 2 * POOLED_COLUMNS


@njit(cache=True, nogil=True, boundscheck=False)
def conv_pooled(weights, padded, acc, rows, layer):
    """The pooled sums of a one-channel stride-1 conv with a 2x2 stride-2 max pooling:
    ``acc[co * plane + i * pitch + j]`` = the max of the int32 sums (bias not added) of output
    positions ``(2i + r, 2j + s)``, for pooled ``(i, j)`` and channel ``co`` (see :func:`grid`),
    from the padded input ``padded[y * Wp + x]``, zero point subtracted."""
    i64 = np.int64
    wp, kh, half = layer.padded_w, layer.kh, layer.kw_packed // 2
    blocks = (layer.out_w + COLUMNS - 1) // COLUMNS
    pitch = blocks * POOLED_COLUMNS
    plane = layer.pooled_h * pitch
    c_out = layer.out_c
    whole = c_out - c_out % GROUP
    for co in range(0, whole, GROUP):
        for i in range(layer.pooled_h):
            for b in range(blocks):
                pooled_block_3(weights, i64(2 * co), i64(rows), padded,
                               i64(2 * i * wp + b * COLUMNS), i64(wp), i64(kh), i64(half), acc,
                               i64(co * plane + i * pitch + b * POOLED_COLUMNS), i64(plane))
    for co in range(whole, c_out):
        for i in range(layer.pooled_h):
            for b in range(blocks):
                pooled_block_1(weights, i64(2 * co), i64(rows), padded,
                               i64(2 * i * wp + b * COLUMNS), i64(wp), i64(kh), i64(half), acc,
                               i64(co * plane + i * pitch + b * POOLED_COLUMNS), i64(plane))
