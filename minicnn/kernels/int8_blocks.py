"""The int8 kernels' register blocks: an int32 GEMM step as LLVM vector code (``vpmaddwd``).

:func:`make_block` writes, as an intrinsic, a block of ``P`` windows x ``8 V`` output channels
whose inner step LLVM's x86 backend turns into ``vpbroadcastd`` + ``vpmaddwd`` + ``vpaddd`` on
``ymm`` registers (see :mod:`minicnn.kernels.int8` for why an intrinsic and what it emits). The
blocks built here serve the direct convolution, the linear layers
(:mod:`minicnn.kernels.int8`) and the Winograd products (:mod:`minicnn.kernels.int8_winograd`).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .ir_helpers import multiply_add_pairs, splat_pair

_LANES = 16                  # int16 lanes per load (256 bits)


def make_block(block_positions: int, block_vectors: int, accumulate: bool = False):
    """An intrinsic computing a block of ``block_positions`` windows x ``block_vectors * 8``
    output channels, written as LLVM vector code (generated here), stored in ``acc`` (or,
    with ``accumulate``, added to what ``acc`` holds):

    ``acc[acc_offset + j * acc_stride + 8 * v + l] = sum over segments s < n_segments and
    k < k_len (even) of c[c_offset + s * c_segment + j * c_stride + k] *
    w-pair-layout[w_offset + s * w_segment, k, 8 * v + l]`` for windows ``j``, vectors ``v``
    and lanes ``l < 8``. ``w`` holds a layer's weights as ``(K / 2, rows, 2)`` int16 (two
    consecutive k of a channel side by side), ``w_offset`` pointing at the block's first
    channel; ``c`` holds the windows, int16; ``acc`` int32; all 1-D C arrays. A segment is
    one kernel row of a convolution's windows (a linear layer has one).

    Each step takes the next pair of a window's values as one 32-bit word, broadcasts it to 8
    lanes, and multiplies it with 8 channels' pairs of weights (16 int16), adding each lane's
    two products: LLVM's x86 backend turns that (sign-extend, multiply, add even and odd
    lanes) into one ``vpmaddwd``. The ``block_positions * block_vectors`` accumulators stay
    in registers through every segment and are stored once, channels contiguous, so nothing
    is summed across lanes. (The same sums in plain Numba loops gave ``vpmulld`` and half
    the speed.)
    """
    def typer(typingctx, w, w_offset, rows, c, c_offset, c_stride, k_len, n_segments,
              c_segment, w_segment, acc, acc_offset, acc_stride):
        sig = types.void(w, w_offset, rows, c, c_offset, c_stride, k_len, n_segments,
                         c_segment, w_segment, acc, acc_offset, acc_stride)

        def codegen(context, builder, signature, args):
            (w_arr, w_offset, rows, c_arr, c_offset, c_stride, k_len, n_segments, c_segment,
             w_segment, acc_arr, acc_offset, acc_stride) = args
            w_ptr = context.make_array(signature.args[0])(context, builder, w_arr).data
            c_ptr = context.make_array(signature.args[3])(context, builder, c_arr).data
            acc_ptr = context.make_array(signature.args[10])(context, builder, acc_arr).data
            i16, i32, i64 = ir.IntType(16), ir.IntType(32), ir.IntType(64)
            lanes = _LANES // 2
            half, full = ir.VectorType(i32, lanes), ir.VectorType(i32, _LANES)
            narrow = ir.VectorType(i16, _LANES)
            targets = []                   # where each accumulator is stored at the end
            for j in range(block_positions):
                for v in range(block_vectors):
                    at = builder.add(acc_offset, builder.add(
                        builder.mul(acc_stride, ir.Constant(i64, j)),
                        ir.Constant(i64, v * lanes)))
                    targets.append(builder.bitcast(builder.gep(acc_ptr, [at]),
                                                   half.as_pointer()))
            sums = []
            for target in targets:
                slot = cgutils.alloca_once(builder, half)     # promoted to registers by LLVM
                if accumulate:
                    start = builder.load(target)
                    start.align = 4
                    builder.store(start, slot)
                else:
                    builder.store(ir.Constant(half, None), slot)
                sums.append(slot)
            steps = builder.sdiv(k_len, ir.Constant(i64, 2))
            with cgutils.for_range(builder, n_segments) as segment:
                c_base = builder.add(c_offset, builder.mul(segment.index, c_segment))
                w_base = builder.add(w_offset, builder.mul(segment.index, w_segment))
                window_rows = [builder.add(c_base, builder.mul(c_stride, ir.Constant(i64, j)))
                               for j in range(block_positions)]
                with cgutils.for_range(builder, steps) as loop:
                    k = builder.mul(loop.index, ir.Constant(i64, 2))
                    # Weights of step k: (k / 2) * rows * 2 int16 past the segment's start.
                    w_step = builder.add(w_base, builder.mul(k, rows))
                    weights = []
                    for v in range(block_vectors):
                        at = builder.add(w_step, ir.Constant(i64, v * _LANES))
                        pointer = builder.bitcast(builder.gep(w_ptr, [at]),
                                                  narrow.as_pointer())
                        value = builder.load(pointer)
                        value.align = 2
                        weights.append(builder.sext(value, full))
                    for j in range(block_positions):
                        at = builder.add(window_rows[j], k)
                        pointer = builder.bitcast(builder.gep(c_ptr, [at]), i32.as_pointer())
                        word = builder.load(pointer)
                        word.align = 2
                        window = splat_pair(builder, word)
                        for v in range(block_vectors):
                            pairs = multiply_add_pairs(builder, weights[v], window)
                            slot = sums[j * block_vectors + v]
                            builder.store(builder.add(builder.load(slot), pairs), slot)
            for target, slot in zip(targets, sums):
                store = builder.store(builder.load(slot), target)
                store.align = 4
            return context.get_dummy_value()

        return sig, codegen

    return intrinsic(typer)


# Blocks: 4 windows x 16 channels (8 accumulators) for convolutions, 1 x 16 for linear
# layers and the last windows of a row, and 8-channel versions of both for the last 8 of a
# channel count that is not a multiple of 16.
block_4x16, block_4x8 = make_block(4, 2), make_block(4, 1)
block_1x16, block_1x8 = make_block(1, 2), make_block(1, 1)
# 8 windows x 8 channels for convolutions of at most 8 output channels (LeNet-5's first).
block_8x8 = make_block(8, 1)
# The same, adding to the accumulators: the linear tail sums K in chunks (minicnn.kernels.int8._linear_share).
add_4x16, add_4x8 = make_block(4, 2, True), make_block(4, 1, True)
add_1x16, add_1x8 = make_block(1, 2, True), make_block(1, 1, True)
