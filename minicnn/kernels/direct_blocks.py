"""Register blocks for a float32 convolution with few input channels, computed in place.

A stride-1 convolution on the *wide grid* of :func:`minicnn.kernels.network.conv_shifted_step`
(every input plane zero-padded to ``pitch = W_out + kW - 1`` columns, output ``q = y * pitch +
x``) reads tap ``(c, i, j)`` of output ``q`` at ``c * size + i * pitch + j + q``: for a run of
consecutive outputs, each tap is one contiguous run of the padded input. :func:`make_block`
writes, as LLVM vector code, a block of ``R`` output channels x ``8 V`` consecutive outputs:
for every tap, ``V`` vector loads of the input, ``R`` broadcasts of a weight, ``R x V``
multiply-adds (fused into FMAs where the CPU has them) on accumulators that stay in registers
until the block's last tap, then one store each.

Why not the unrolled matrix and a GEMM (what the shifted step does for larger convolutions):
with few input channels ``K = C_in * kH * kW`` is small (9 for the MNIST CNN's first layer, 25
and 150 for LeNet-5's), and the GEMM then spends its time packing and on its edges, not in its
FMA loop (OpenBLAS, one sample of the MNIST CNN's first layer: 23 GFLOP/s of the machine's ~90),
and the unrolled matrix (``K`` copies of the input) is written and read for nothing.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .ir_helpers import for_each_tap, python_max, splat, zeroed_slots

#: float32 lanes per vector (256 bits).
LANES = 8


def _multiply_add_taps(builder, padded_ptr, weight_ptr, base, c_in, kh, kw, size, pitch,
                       w_base, k, channels, offsets, slots):
    """The inner loops of a block, tap by tap (:func:`~minicnn.kernels.ir_helpers.for_each_tap`):
    load the input vectors at the tap's offset plus each of ``offsets``, and for each output
    channel ``r`` add ``weight[w_base + r * k + tap]`` times each of them to ``slots[r *
    len(offsets) + o]`` (a multiply and an add, contracted to an FMA)."""
    i64 = ir.IntType(64)
    vector = ir.VectorType(ir.FloatType(), LANES)
    contract = ("contract",)
    with for_each_tap(builder, base, c_in, kh, kw, size, pitch) as (at, tap):
        inputs = []
        for offset in offsets:
            pointer = builder.bitcast(builder.gep(padded_ptr, [builder.add(at, offset)]),
                                      vector.as_pointer())
            value = builder.load(pointer)
            value.align = 4
            inputs.append(value)
        for r in range(channels):
            w_at = builder.add(builder.add(w_base, tap), builder.mul(k, ir.Constant(i64, r)))
            weight = splat(builder, builder.load(builder.gep(weight_ptr, [w_at])), LANES)
            for o, value in enumerate(inputs):
                slot = slots[r * len(inputs) + o]
                product = builder.fmul(weight, value, flags=contract)
                builder.store(builder.fadd(builder.load(slot), product, flags=contract), slot)


def make_block(channels: int, vectors: int):
    """An intrinsic computing ``channels`` output channels x ``8 * vectors`` consecutive
    wide-grid outputs of a convolution (see the module docstring)::

        block(padded, base, c_in, kh, kw, size, pitch, weight, w_base, k, sums, s_base,
              s_stride)

    ``sums[s_base + r * s_stride + q] = sum over c < c_in, i < kh, j < kw of
    weight[w_base + r * k + (c * kh + i) * kw + j] * padded[base + c * size + i * pitch + j +
    q]`` for ``r < channels`` and ``q < 8 * vectors``; all arrays 1-D C float32, the rest int64.
    The sums run tap by tap in that order, each a multiply-add (contracted to an FMA).
    """
    def typer(typingctx, padded, base, c_in, kh, kw, size, pitch, weight, w_base, k, sums,
              s_base, s_stride):
        sig = types.void(padded, base, c_in, kh, kw, size, pitch, weight, w_base, k, sums,
                         s_base, s_stride)

        def codegen(context, builder, signature, args):
            (padded_arr, base, c_in, kh, kw, size, pitch, weight_arr, w_base, k, sums_arr,
             s_base, s_stride) = args
            padded_ptr = context.make_array(signature.args[0])(context, builder, padded_arr).data
            weight_ptr = context.make_array(signature.args[7])(context, builder, weight_arr).data
            sums_ptr = context.make_array(signature.args[10])(context, builder, sums_arr).data
            i64 = ir.IntType(64)
            vector = ir.VectorType(ir.FloatType(), LANES)
            slots = zeroed_slots(builder, vector, channels * vectors)
            _multiply_add_taps(builder, padded_ptr, weight_ptr, base, c_in, kh, kw, size, pitch,
                               w_base, k, channels,
                               [ir.Constant(i64, v * LANES) for v in range(vectors)], slots)
            for r in range(channels):
                row_at = builder.add(s_base, builder.mul(s_stride, ir.Constant(i64, r)))
                for v in range(vectors):
                    pointer = builder.bitcast(builder.gep(sums_ptr, [builder.add(
                        row_at, ir.Constant(i64, v * LANES))]), vector.as_pointer())
                    store = builder.store(builder.load(slots[r * vectors + v]), pointer)
                    store.align = 4
            return context.get_dummy_value()

        return sig, codegen

    return intrinsic(typer)


#: The blocks the plan uses: 4 channels x 24 outputs (12 accumulators, 3 input vectors and a
#: broadcast: the 16 ``ymm`` registers), and 1 channel x 24 for a channel count that is not a
#: multiple of 4.
CHANNELS, VECTORS = 4, 3
POSITIONS = LANES * VECTORS
block_4x24 = make_block(CHANNELS, VECTORS)
block_1x24 = make_block(1, VECTORS)
#: 4 channels x 8 outputs, for the last outputs of a row that is not whole blocks of 24 (a
#: batch of one's 56 Winograd tiles: 2 x 24 + 8, not 3 x 24).
block_4x8 = make_block(CHANNELS, 1)
block_1x8 = make_block(1, 1)


def make_pooled_block(channels: int, relu: bool):
    """An intrinsic computing ``channels`` output channels x 2 wide-grid rows x 16 columns of
    a convolution (as :func:`make_block`, tap by tap in the same order), their epilogue
    (``* scale + shift``, then a ReLU where ``relu``) and their 2x2 max pooling, storing 8
    pooled values per channel::

        block(padded, base, c_in, kh, kw, size, pitch, weight, w_base, k, scale, shift,
              s_at, out, out_at, out_stride)

    ``out[out_at + r * out_stride + l]`` for ``r < channels`` and lanes ``l < 8`` = the max over
    ``a, b in {0, 1}`` of ``f(sum(base + a * pitch + 2 l + b))``, ``sum(q)`` the block sums of
    :func:`make_block` at wide-grid output ``q``, ``f(v) = v * scale[s_at + r] + shift[s_at +
    r]`` then the ReLU. The operations and their order are those of the plan's epilogue
    (``_finish``: a multiply, an add, ``v if not v <= 0 else 0 * v``) and pooling (Python's
    ``max`` of the two columns of each row, then of the two rows), so the values are the
    same as the separate passes', without writing the unpooled output: the pooling's
    columns come out of the two 8-lane vectors of a row by two shuffles (even and odd lanes).
    A pooled row that is not whole blocks of 8 ends with a block overlapping the one before
    (the same values written twice): a masked store (``vmaskmovps``) took a third of the
    block's time on Zen 3, a lane-by-lane one more.
    """
    vectors = 2

    def typer(typingctx, padded, base, c_in, kh, kw, size, pitch, weight, w_base, k, scale,
              shift, s_at, out, out_at, out_stride):
        sig = types.void(padded, base, c_in, kh, kw, size, pitch, weight, w_base, k, scale,
                         shift, s_at, out, out_at, out_stride)

        def codegen(context, builder, signature, args):
            (padded_arr, base, c_in, kh, kw, size, pitch, weight_arr, w_base, k, scale_arr,
             shift_arr, s_at, out_arr, out_at, out_stride) = args

            def data(index, value):
                return context.make_array(signature.args[index])(context, builder, value).data
            padded_ptr, weight_ptr = data(0, padded_arr), data(7, weight_arr)
            scale_ptr, shift_ptr, out_ptr = data(10, scale_arr), data(11, shift_arr), \
                data(13, out_arr)
            f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
            vector = ir.VectorType(f32, LANES)
            evens = ir.Constant(ir.VectorType(i32, LANES), [ir.Constant(i32, 2 * i)
                                                            for i in range(LANES)])
            odds = ir.Constant(ir.VectorType(i32, LANES), [ir.Constant(i32, 2 * i + 1)
                                                           for i in range(LANES)])
            # slots[(r * 2 + row) * 2 + v]: channel r, grid row base + row * pitch, columns
            # 8 v .. 8 v + 7
            slots = zeroed_slots(builder, vector, channels * 2 * vectors)
            offsets = [builder.add(builder.mul(pitch, ir.Constant(i64, row)),
                                   ir.Constant(i64, v * LANES))
                       for row in range(2) for v in range(vectors)]
            _multiply_add_taps(builder, padded_ptr, weight_ptr, base, c_in, kh, kw, size, pitch,
                               w_base, k, channels, offsets, slots)
            zero = ir.Constant(vector, [ir.Constant(f32, 0.0)] * LANES)
            for r in range(channels):
                at = builder.add(s_at, ir.Constant(i64, r))
                scale = splat(builder, builder.load(builder.gep(scale_ptr, [at])), LANES)
                shift = splat(builder, builder.load(builder.gep(shift_ptr, [at])), LANES)
                rows = []
                for row in range(2):
                    finished = []
                    for v in range(vectors):
                        value = builder.fadd(builder.fmul(
                            builder.load(slots[(r * 2 + row) * vectors + v]), scale), shift)
                        if relu:
                            value = builder.select(builder.fcmp_ordered("<=", value, zero),
                                                   builder.fmul(zero, value), value)
                        finished.append(value)
                    # columns 2 l and 2 l + 1 of the row's 16: even and odd lanes of the pair
                    rows.append(python_max(
                        builder, builder.shuffle_vector(finished[0], finished[1], evens),
                        builder.shuffle_vector(finished[0], finished[1], odds)))
                pooled = python_max(builder, rows[0], rows[1])
                target = builder.add(out_at, builder.mul(out_stride, ir.Constant(i64, r)))
                pointer = builder.bitcast(builder.gep(out_ptr, [target]), vector.as_pointer())
                store = builder.store(pooled, pointer)
                store.align = 4
            return context.get_dummy_value()

        return sig, codegen

    return intrinsic(typer)


#: Pooled blocks: 2 channels x 2 rows x 16 columns (8 accumulators, 4 input vectors and a
#: broadcast), with a ReLU or none; 1 channel for an odd channel count.
POOLED_CHANNELS, POOLED_COLUMNS = 2, 16
pooled_2_relu, pooled_1_relu = make_pooled_block(2, True), make_pooled_block(1, True)
pooled_2_plain, pooled_1_plain = make_pooled_block(2, False), make_pooled_block(1, False)
