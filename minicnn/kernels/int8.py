"""Fast integer-only inference: a whole network in one parallel region (Numba).

Computes exactly the integers of :mod:`minicnn.kernels.int8_reference` (integer sums do not
depend on their order, so "exactly" means bit for bit, for any thread count), organised for
speed:

- **Whole sample chains per thread.** :func:`forward` runs one parallel region per call; each
  thread takes its share of the batch (:func:`~minicnn.kernels.parallel.share`) and carries
  each sample through *every* layer before the next, so a sample's activations (at most a few
  tens of kilobytes) stay in that core's cache. The network is a *program*: one record of
  named ints per layer (:data:`LAYER_DTYPE`), interpreted by one compiled
  chunk kernel, so any supported network uses the same compiled code.
- **Weights packed once** (:func:`minicnn.quant.model.pack`, when a model is built or
  loaded): each conv / linear layer's int8 weights become int16, laid out ``(K / 2, C_out
  rounded up to 8, 2)`` (two consecutive k of a channel side by side), zero-padded, in one
  flat array; the per-channel bias and requantization constants are flat arrays indexed by
  a per-layer channel offset (:class:`PackedNetwork`).
- **Channels last inside.** Activations between layers are NHWC (the input is turned once,
  the output back), so a window's kernel row is one contiguous run of ``kW * C`` values;
  the weights are packed in the same (kernel row, kernel column, channel) order, and the
  first linear layer after a flatten has its columns permuted to match.
- **Convolution without im2col.** Each conv's input is copied once into a per-thread int16
  buffer, zero point subtracted (so padding is 0), with its border of padding (and, where
  ``kW * C`` is odd, a channel of zeros or, cheaper where ``C < kW``, a kernel column of zero
  weights, so that kernel rows are whole pairs of values: the MNIST nets' first conv sums 12
  or 30 products instead of 18 or 50).
  A window's kernel row is then one contiguous run of that buffer, and consecutive windows
  start ``sW * C`` apart: :func:`_conv_direct` runs register blocks over it directly, one
  kernel row after another inside each block, with no im2col matrix. (A first version
  copied im2col rows; once the GEMM was fast, that copy cost as much as the arithmetic.)
- **An int32 GEMM whose inner step is ``vpmaddwd``.** :func:`_conv_direct` and
  :func:`_matvec` work in register blocks of 4 windows x 16 channels (1 x 16 for a linear
  layer) through
  :func:`~minicnn.kernels.int8_blocks.make_block`, an intrinsic that writes the step as LLVM vector code: broadcast a
  pair of a window's values to 8 lanes, multiply by 8 channels' weight pairs (16 int16),
  add each lane's two products. LLVM's x86 backend turns each such step into one
  ``vpmaddwd`` (16 multiply-adds); the 8 accumulators stay in ``ymm`` registers and are
  stored once, channels contiguous (no sums across lanes). On the AMD EPYC these kernels
  were written on (AVX2, no AVX-512, no VNNI), ``inspect_asm`` of the chunk kernel shows the
  inner loops as ``vpbroadcastd`` + ``vpmaddwd`` + ``vpaddd`` on ``ymm`` registers, and no
  ``vpmulld``. Plain Numba loops for the same sums gave ``vpmulld`` with several
  accumulators (``vpmaddwd`` only for a single dot-product reduction) and ran at half the
  speed, hence the intrinsic. The IR is generic (no x86 intrinsic), so other CPUs get their
  own vector code; with AVX-512 VNNI LLVM may fuse ``vpmaddwd`` + ``vpaddd`` into
  ``vpdpwssd`` (not checked: no such machine here). Values fit: ``|x - zero| <= 255`` and
  ``|w| <= 127`` give products below 2**15 and pair sums below 2**16, so int32 holds K up
  to 66,311 terms (checked when packing).
- **The linear tail on the whole share.** Convolutions and pools go sample by sample; the
  linear layers that end the network run on a thread's whole share at once
  (:func:`_linear_tail`), four samples per register block, so their weights are read once
  per four samples instead of once per sample.
- **Requantize after the GEMM** (integer multiply, rounding shift, zero point, fused ReLU
  clamp; a vector loop over the channels, :func:`_requantize_one`), with a max pooling that
  follows a conv **fused in**: the maximum is taken over the int32 sums and only the pooled
  values are requantized (:func:`_requantize_pooled`; exact, requantization being
  monotonic). A pooling that is not fused (with padding, or after a pooling) runs on uint8.
- **Positions in the lanes for a narrow first conv.** A conv of one input channel and fewer
  than 16 outputs with a 2x2 pooling (LeNet-5's first: 6 channels) leaves lanes idle with
  channels in them; :mod:`minicnn.kernels.int8_positions` puts output positions there instead
  and :func:`_requantize_planes` requantizes its per-channel planes (LeNet-5 at batch 64, one
  thread: that conv 0.24 -> 0.18 ms, its pooled requantization 0.20 -> 0.075).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from . import parallel
from .int8_blocks import (add_1x8, add_1x16, add_4x8, add_4x16, block_1x8, block_1x16,
                          block_4x8, block_4x16, block_8x8)
from .int8_positions import COLUMNS, POOLED_COLUMNS, conv_pooled
from .int8_winograd import input_tiles, output_tiles, pad_phases, tile_products
from .threads import threads_for

# -- the program: one record per layer ----------------------------------------------------------
OP_CONV, OP_LINEAR, OP_MAXPOOL = 1, 2, 3
#: One layer of a program, a record of named fields (all int64): ``op`` (``OP_*``); the input
#: ``in_c, in_h, in_w`` and output ``out_c, out_h, out_w`` shapes; ``kh, kw, sh, sw, pad_top,
#: pad_left`` (a conv's or pool's window); ``kw_packed`` (a conv's kernel columns as packed: ``kw``,
#: or ``kw + 1`` with a column of zero weights, see :func:`_conv_direct`); ``k`` (a conv's
#: ``C*kH*kW`` as packed, or a linear layer's inputs) and ``k_padded`` (rounded up to pairs);
#: ``w_offset`` (where its packed weights start) and ``ch_offset`` (where its per-channel
#: ``bias``, ``multiplier``, ``rounding``, ``total`` and ``lift`` start); ``in_zero``,
#: ``out_zero`` (zero points), ``clamp_low`` (the fused ReLU's floor, the output zero point, or
#: 0); ``final`` (1 for the last layer, whose int32 sums are the output); ``padded_h,
#: padded_w, padded_c`` (a conv's padded int16 input); ``pool_kh, pool_kw, pool_sh, pool_sw``
#: (a max pooling fused into a conv, see :func:`_requantize_pooled`; ``pool_kh`` 0 where none)
#: and ``pooled_h, pooled_w`` (the grid a layer writes: after its fused pooling, else ``out_h,
#: out_w``); ``winograd`` (1 for a 3x3 conv run as integer Winograd F(2x2, 3x3),
#: :mod:`minicnn.kernels.int8_winograd`) and its ``tiles_h, tiles_w``; ``w_size`` (its packed
#: int16 weights); ``by_positions`` (1 for a one-channel conv with a fused 2x2 pooling run with
#: output positions in the vector lanes, :mod:`minicnn.kernels.int8_positions`);
#: ``padded_extent`` (the int16 of its padded input that a conv's kernel reads, zeroed). A program is a structured array of these, one per layer; a kernel reads
#: ``layer = program[index]``, then ``layer.out_c``.
LAYER_DTYPE = np.dtype([(name, np.int64) for name in (
    "op", "in_c", "in_h", "in_w", "out_c", "out_h", "out_w", "kh", "kw", "sh", "sw", "pad_top",
    "pad_left", "kw_packed", "k", "k_padded", "w_offset", "ch_offset", "in_zero", "out_zero",
    "clamp_low", "final", "padded_h", "padded_w", "padded_c", "pool_kh", "pool_kw", "pool_sh",
    "pool_sw", "pooled_h", "pooled_w", "winograd", "tiles_h", "tiles_w", "w_size", "by_positions",
    "padded_extent")])
#: Padding of the packed weights: K to a multiple of 2 (pairs of values), C_out to 8 (one
#: vector of int32 lanes).
K_ALIGN, ROW_BLOCK = 2, 8


class PackedNetwork(NamedTuple):
    """A quantised network as :func:`forward` takes it, built once per model
    (:func:`minicnn.quant.model.pack`).

    ``program`` is one :data:`LAYER_DTYPE` record per layer. ``weights`` holds every conv /
    linear layer's int16 weights, each laid out ``(K / 2, C_out rounded up to 8, 2)``. The
    per-channel arrays (indexed from a layer's ``ch_offset``) are the requantization in the
    form the vector loop wants (:func:`_requantize_one`): ``bias`` (int32), ``multiplier``
    (int32, ``M``), ``rounding`` (int64, ``2**(t-1) + 2**62``), ``total`` (int64, the shift
    ``t = 31 + shift``) and ``lift`` (int64, ``2**(62-t)`` minus the output zero point). The
    sizes are those of one sample's buffers: ``out_size`` (values per sample out),
    ``act_size`` (largest uint8 activation), ``cols_size`` (largest linear input, int16),
    ``padded_size`` (largest padded conv input, int16), ``acc_size`` (largest accumulator
    block, int32), ``rows_size`` (largest channel count rounded up to 8), ``tiles_size`` and
    ``products_size`` (a Winograd conv's transformed input, int16, and products, int32) and
    ``stage_size`` (its transforms' scratch for one row of tiles, int32); ``tail_from`` and the
    per-sample sizes ``tail_k, tail_rows, tail_out`` of the linear tail (:func:`linear_tail`).
    """

    program: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    multiplier: np.ndarray
    rounding: np.ndarray
    total: np.ndarray
    lift: np.ndarray
    out_size: int
    act_size: int
    cols_size: int
    padded_size: int
    acc_size: int
    rows_size: int
    tiles_size: int
    products_size: int
    stage_size: int
    tail_from: int
    tail_k: int
    tail_rows: int
    tail_out: int


class Int8NetworkArgs(NamedTuple):
    """The arguments record of :func:`network_chunk` (all C-contiguous)."""

    x: np.ndarray            # uint8 (N, input size): quantised inputs, flattened NCHW
    real: np.ndarray         # float32 (N, input size): or real ones ((0, size) when x is used)
    input_scale: np.float32  # their quantisation
    input_zero: np.float32
    out: np.ndarray          # int32 (N, output size): last layer's accumulators, or its uint8
    program: np.ndarray      # LAYER_DTYPE (layers,)
    weights: np.ndarray      # int16 (total,): packed weight matrices
    bias: np.ndarray         # int32 (channels,)
    multiplier: np.ndarray   # int32 (channels,)
    rounding: np.ndarray     # int64 (channels,)
    total: np.ndarray        # int64 (channels,)
    lift: np.ndarray         # int64 (channels,)
    act_a: np.ndarray        # uint8 (threads, largest activation): ping-pong buffers
    act_b: np.ndarray
    cols: np.ndarray         # int16 (threads, largest linear input, centred)
    padded: np.ndarray       # int16 (threads, largest padded conv input)
    acc: np.ndarray          # int32 (threads, largest layer output, C_out rounded up to 8)
    best: np.ndarray         # int32 (threads, largest C_out rounded up to 8): a pooled row
    tiles: np.ndarray        # int16 (threads, largest Winograd input, 16 x tiles x C)
    products: np.ndarray     # int32 (threads, largest Winograd products, 16 x tiles x rows)
    stage: np.ndarray        # int32 (threads, a Winograd transform's row of tiles)
    batch_from: int          # first layer of the linear tail run on a thread's whole share
    lin: np.ndarray          # int16 (threads, share * largest padded linear input)
    lin_acc: np.ndarray      # int32 (threads, share * largest linear output rows)
    lin_out: np.ndarray      # uint8 (threads, share * largest linear output)


# Index arithmetic in the scalar loops below is cast to ``np.uint64`` (``_at``) where it is
# computed from layer fields: Numba wraps a negative signed index around (Python semantics)
# even with bounds checks off, and LLVM cannot prove an offset like ``(i * W + j) * rows``
# non-negative, so each access became a select that kept the loop scalar. Unsigned, the
# channel loops vectorise (the fused pooling and requantization: 1.2 -> 0.27 ms for the
# MNIST CNN's first conv at batch 64).
_at = np.uint64


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@njit(cache=True, nogil=True, boundscheck=False)
def _pad_centre(src, layer, padded):
    """One sample's conv input (channels last: ``src[(y * W + x) * C + c]``) as int16 with the
    zero point subtracted, inside a border of zeros (the padding):
    ``padded[(y * Wp + x) * Cp + c]``, ``Wp = W + left + right`` (one more where a zero kernel
    column is packed). ``Cp`` is ``C``, or ``C + 1`` (a channel of zeros) where one is packed:
    either makes every kernel row of a window a whole number of value pairs for
    :func:`_conv_direct`."""
    c_in, h, w = layer.in_c, layer.in_h, layer.in_w
    top, left, zero = layer.pad_top, layer.pad_left, layer.in_zero
    hp, wp, cp = layer.padded_h, layer.padded_w, layer.padded_c
    padded[:layer.padded_extent] = 0          # the border, and what a kernel reads past it
    if cp == c_in:
        run = w * c_in                           # one image row: contiguous in both
        for y in range(h):
            row_in, row_out = y * run, ((y + top) * wp + left) * c_in
            for i in range(run):
                padded[_at(row_out + i)] = np.int16(np.int32(src[_at(row_in + i)]) - zero)
        return
    for y in range(h):
        for x in range(w):
            at_in, at_out = (y * w + x) * c_in, ((y + top) * wp + x + left) * cp
            for c in range(c_in):
                padded[_at(at_out + c)] = np.int16(np.int32(src[_at(at_in + c)]) - zero)


@njit(cache=True, nogil=True, boundscheck=False)
def _centre(src, layer, cols):
    """A linear layer's input as one int16 row, zero point subtracted, padded with zeros."""
    n_in, zero = layer.k, layer.in_zero
    for k in range(n_in):
        cols[k] = np.int16(np.int32(src[k]) - zero)
    for k in range(n_in, layer.k_padded):
        cols[k] = 0




@njit(cache=True, nogil=True, boundscheck=False)
def _matvec(weights, vector, acc, rows, k_padded):
    """A linear layer: ``acc[co] = sum_k vector[k] * W[co, k]`` in int32, 16 channels at a
    time (:func:`~minicnn.kernels.int8_blocks.make_block`), then 8.

    weights : int16 (K_padded / 2 * rows * 2,), laid out (K / 2, rows, 2), rows a multiple
    of 8; vector : int16 (K_padded,); acc : int32 (rows,). No flags and no per-layer
    branches in here: with a runtime flag inside, LLVM compiled a loop nest like this about
    four times slower.
    """
    i64 = np.int64
    wide = rows - rows % 16
    for co in range(0, wide, 16):
        block_1x16(weights, i64(2 * co), i64(rows), vector, i64(0), i64(k_padded),
                    i64(k_padded), i64(1), i64(0), i64(0), acc, i64(co), i64(rows))
    if wide < rows:
        block_1x8(weights, i64(2 * wide), i64(rows), vector, i64(0), i64(k_padded),
                   i64(k_padded), i64(1), i64(0), i64(0), acc, i64(wide), i64(rows))


def _make_conv_channels(block_wide, wide: int, block_4, block_1, width: int):
    """A compiled function running one block of ``width`` output channels of a convolution
    over every window of a sample: ``wide`` windows at a time (``block_wide``), then 4
    (``block_4``), then the last windows of a row one at a time (``block_1``); see
    :func:`_conv_direct`."""
    @njit(cache=True, nogil=True, boundscheck=False)
    def conv_channels(weights, padded, acc, rows, layer, co):
        i64 = np.int64
        c_in, kh = layer.padded_c, layer.kh
        sh, sw, wp = layer.sh, layer.sw, layer.padded_w
        out_h, out_w = layer.out_h, layer.out_w
        run, step, row = layer.kw_packed * c_in, sw * c_in, wp * c_in
        w_segment = run * rows                # one kernel row of weight pairs, in int16
        whole = out_w - out_w % wide
        fours = whole + (out_w - whole) // 4 * 4
        for i in range(out_h):
            base = i * sh * row
            for j in range(0, whole, wide):
                block_wide(weights, i64(2 * co), i64(rows), padded, i64(base + j * step),
                           i64(step), i64(run), i64(kh), i64(row), i64(w_segment), acc,
                           i64((i * out_w + j) * rows + co), i64(rows))
            for j in range(whole, fours, 4):
                block_4(weights, i64(2 * co), i64(rows), padded, i64(base + j * step),
                        i64(step), i64(run), i64(kh), i64(row), i64(w_segment), acc,
                        i64((i * out_w + j) * rows + co), i64(rows))
            for j in range(fours, out_w):                   # the last windows of a row
                block_1(weights, i64(2 * co), i64(rows), padded, i64(base + j * step),
                        i64(step), i64(run), i64(kh), i64(row), i64(w_segment), acc,
                        i64((i * out_w + j) * rows + co), i64(rows))
    conv_channels.__doc__ = (f"Output channels ``[co, co + {width})`` of :func:`_conv_direct` "
                             "for every window.")
    return conv_channels


# 16 channels: 4 windows a block (8 accumulators); 8 channels: 8 windows (8 accumulators,
# where 4 windows left half the registers idle: LeNet-5's first conv 34 -> 50 GMAC/s).
_conv_channels_16 = _make_conv_channels(block_4x16, 4, block_4x16, block_1x16, 16)
_conv_channels_8 = _make_conv_channels(block_8x8, 8, block_4x8, block_1x8, 8)


@njit(cache=True, nogil=True, boundscheck=False)
def _conv_direct(weights, padded, acc, rows, layer):
    """A convolution without im2col: ``acc[p * rows + co]`` for every output position, read
    straight from the padded channels-last input. A window's kernel row is one contiguous
    run of ``kw_packed * C`` values; kernel rows are ``Wp * C`` apart, and consecutive windows
    of an output row ``sW * C`` apart: each register block (:func:`~minicnn.kernels.int8_blocks.make_block`, 4 windows x
    16 channels) walks all ``kH`` kernel rows as segments. Needs ``kw_packed * C`` even
    (whole pairs: a zero channel or a zero kernel column is packed where ``kW * C`` is odd,
    see :func:`minicnn.quant.model.pack`); weights laid out (K / 2, rows, 2), K in (kernel
    row, kernel column, channel) order.

    Channel blocks are the outer loop: one block's weights (16 channels x K int16: 9 KB for a
    3x3 conv of 32 channels) stay in L1 cache while every window of the sample passes.
    Windows outermost streamed the whole matrix (36 KB there, more than L1's 32 KB) once per
    four windows, 15-20 % slower.
    """
    wide = rows - rows % 16
    for co in range(0, wide, 16):
        _conv_channels_16(weights, padded, acc, rows, layer, co)
    if wide < rows:
        _conv_channels_8(weights, padded, acc, rows, layer, wide)


@njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _requantize_one(total_acc, co, multiplier, rounding, total, lift, low):
    """The uint8 of one int32 sum (bias included) of channel ``co``: integer multiply,
    rounding right shift (half up), zero point, clamp to ``[low, 255]``; the integer of
    :func:`minicnn.quant.arithmetic.requantize`."""
    # The rounding shift ``(product + 2**(t-1)) >> t`` is an arithmetic shift of a signed
    # 64-bit value, which AVX2 does not have (only AVX-512's vpsraq). ``rounding`` adds 2**62
    # besides 2**(t-1), making the value non-negative (|product| < 2**62), so a *logical*
    # shift (vpsrlvq) serves; ``lift`` takes the 2**(62-t) back off (and adds the zero point):
    # the same integer, bit for bit. The sum comes as int32 so that LLVM sees a product of
    # two sign-extended int32 (vpmuldq, not a 64 x 64-bit multiply).
    product = np.int64(total_acc) * np.int64(multiplier[co])
    q = np.int64(np.uint64(product + rounding[co]) >> np.uint64(total[co])) - lift[co]
    return np.uint8(min(max(q, low), 255))


@njit(cache=True, nogil=True, boundscheck=False)
def _requantize_rows(acc, rows, positions, c_out, bias, multiplier, rounding, total, lift, low,
                     dst):
    """``dst[p * c_out + co]`` (channels last) = :func:`_requantize_one` of ``acc[p * rows +
    co] + bias[co]`` for every position ``p``: a vector loop over the channels. (Offsets,
    not slices: a slice in a loop costs two reference-count calls.)"""
    for p in range(positions):
        at, out = p * rows, p * c_out
        for co in range(c_out):
            dst[_at(out + co)] = _requantize_one(np.int32(acc[_at(at + co)] + bias[co]), co,
                                                 multiplier, rounding, total, lift, low)


@njit(cache=True, nogil=True, boundscheck=False)
def _requantize_pooled(acc, rows, layer, bias, multiplier, rounding, total, lift, best, dst):
    """A conv's requantization with the max pooling after it fused in: for each pooling
    window, the maximum of its positions' int32 sums (all channels at once), then
    :func:`_requantize_one` of that one row into ``dst`` (channels last, the pooled grid).

    Exact: requantization is non-decreasing in the sum (``multiplier >= 0``, then a shift,
    an addition and a clamp), so the maximum of requantized values is the requantization of
    the maximum. It requantizes a quarter of the values a 2x2 pooling reads and saves the
    pooling's pass over uint8. Only pooling without padding is fused (a padded window's
    outside counts as uint8 0, which has no int32 sum; see ``pack``). The usual 2x2 window
    takes its four maxima in the requantization's loop; others collect them in ``best``.
    """
    c_out, out_w, low = layer.out_c, layer.out_w, layer.clamp_low
    kh, kw, sh, sw = layer.pool_kh, layer.pool_kw, layer.pool_sh, layer.pool_sw
    below = out_w * rows                          # the position one row down
    for i in range(layer.pooled_h):
        for j in range(layer.pooled_w):
            corner = (i * sh * out_w + j * sw) * rows
            out = (i * layer.pooled_w + j) * c_out
            if kh == 2 and kw == 2:
                for co in range(c_out):
                    top = max(acc[_at(corner + co)], acc[_at(corner + rows + co)])
                    bottom = max(acc[_at(corner + below + co)],
                                 acc[_at(corner + below + rows + co)])
                    dst[_at(out + co)] = _requantize_one(np.int32(max(top, bottom) + bias[co]),
                                                         co, multiplier, rounding, total, lift,
                                                         low)
                continue
            for co in range(c_out):
                best[co] = acc[_at(corner + co)]
            for di in range(kh):
                for dj in range(kw):
                    at = corner + (di * out_w + dj) * rows
                    for co in range(c_out):
                        best[co] = max(best[co], acc[_at(at + co)])
            for co in range(c_out):
                dst[_at(out + co)] = _requantize_one(np.int32(best[co] + bias[co]), co,
                                                     multiplier, rounding, total, lift, low)


@njit(cache=True, nogil=True, boundscheck=False)
def _requantize_planes(acc, layer, bias, multiplier, rounding, total, lift, dst):
    """The requantization of :func:`~minicnn.kernels.int8_positions.conv_pooled`'s pooled sums
    (one plane per channel, rows ``pitch`` apart): ``dst[(i * pooled_w + j) * C + co]``
    (channels last) = :func:`_requantize_one` of ``acc[co * plane + i * pitch + j] +
    bias[co]``.

    In two passes: each channel's whole plane requantized in place (a long vector loop, the
    lanes past ``pooled_w`` included), then the values gathered channels last. One pass over
    each row's 14 positions, storing ``C`` apart, ran at about 5 cycles a value."""
    c_out, low = layer.out_c, layer.clamp_low
    pooled_h, pooled_w = layer.pooled_h, layer.pooled_w
    pitch = (layer.out_w + COLUMNS - 1) // COLUMNS * POOLED_COLUMNS
    plane = pooled_h * pitch
    for co in range(c_out):
        at = co * plane
        for k in range(plane):
            acc[_at(at + k)] = np.int32(_requantize_one(
                np.int32(acc[_at(at + k)] + bias[co]), co, multiplier, rounding, total, lift,
                low))
    for co in range(c_out):
        for i in range(pooled_h):
            at, out = co * plane + i * pitch, i * pooled_w * c_out + co
            for j in range(pooled_w):
                dst[_at(out + j * c_out)] = np.uint8(acc[_at(at + j)])


@njit(cache=True, nogil=True, boundscheck=False)
def _store_final(acc, rows, positions, c_out, bias, out_row):
    """The last layer: ``out_row[co * positions + p] = acc[p * rows + co] + bias[co]``
    (int32, back in NCHW order)."""
    for co in range(c_out):
        for p in range(positions):
            out_row[_at(co * positions + p)] = np.int32(acc[_at(p * rows + co)] + bias[co])


@njit(cache=True, nogil=True, boundscheck=False)
def _layer_gemm(args, layer, padded, cols, acc, best, tiles, products, stage, positions, dst,
                out_row):
    """One conv (from ``padded``) or linear layer (from ``cols``) on one sample:
    integer Winograd (:mod:`minicnn.kernels.int8_winograd`), :func:`_conv_direct` or
    :func:`_matvec` on its packed weights, then
    :func:`_requantize_pooled` (a conv with a fused pooling), :func:`_requantize_rows` or
    :func:`_store_final`."""
    k_padded, c_out = layer.k_padded, layer.out_c
    rows = (c_out + ROW_BLOCK - 1) // ROW_BLOCK * ROW_BLOCK
    start, ch = layer.w_offset, layer.ch_offset
    weights = args.weights[start:start + layer.w_size]
    if layer.by_positions:
        conv_pooled(weights, padded, acc, rows, layer)
    elif layer.winograd:
        input_tiles(padded, layer, stage, tiles)
        tile_products(weights, tiles, products, layer, rows)
        output_tiles(products, layer, rows, stage, acc)
    elif layer.op == OP_CONV:
        _conv_direct(weights, padded, acc, rows, layer)
    else:
        _matvec(weights, cols, acc, rows, k_padded)
    bias, multiplier = args.bias[ch:ch + c_out], args.multiplier[ch:ch + c_out]
    rounding, total, lift = (args.rounding[ch:ch + c_out], args.total[ch:ch + c_out],
                             args.lift[ch:ch + c_out])
    if layer.final:
        _store_final(acc, rows, positions, c_out, bias, out_row)
    elif layer.by_positions:
        _requantize_planes(acc, layer, bias, multiplier, rounding, total, lift, dst)
    elif layer.pool_kh > 0:
        _requantize_pooled(acc, rows, layer, bias, multiplier, rounding, total, lift, best, dst)
    else:
        _requantize_rows(acc, rows, positions, c_out, bias, multiplier, rounding, total, lift,
                         layer.clamp_low, dst)


@njit(cache=True, nogil=True, boundscheck=False)
def _maxpool(src, layer, dst):
    """Max pooling on channels-last uint8: for each output position, the running maximum of
    its window's positions, all channels at once (a contiguous, vectorisable run). Outside
    the input counts as 0, the smallest uint8."""
    c, h, w = layer.in_c, layer.in_h, layer.in_w
    kh, kw, sh, sw = layer.kh, layer.kw, layer.sh, layer.sw
    top, left, out_h, out_w = layer.pad_top, layer.pad_left, layer.out_h, layer.out_w
    if (kh == 2 and kw == 2 and top == 0 and left == 0 and (out_h - 1) * sh + 2 <= h
            and (out_w - 1) * sw + 2 <= w):
        # The usual 2x2 window, inside the input: four loads and three maxima per value, no
        # bounds checks, vectorised over the channels (``vpmaxub``).
        for i in range(out_h):
            for j in range(out_w):
                out = (i * out_w + j) * c
                a = (i * sh * w + j * sw) * c
                b, d = a + c, a + w * c
                e = d + c
                for ch in range(c):
                    dst[_at(out + ch)] = max(max(src[_at(a + ch)], src[_at(b + ch)]),
                                             max(src[_at(d + ch)], src[_at(e + ch)]))
        return
    for i in range(out_h):
        for j in range(out_w):
            out = (i * out_w + j) * c
            for ch in range(c):
                dst[_at(out + ch)] = 0
            for ki in range(kh):
                y = i * sh + ki - top
                if y < 0 or y >= h:
                    continue
                for kj in range(kw):
                    x = j * sw + kj - left
                    if x < 0 or x >= w:
                        continue
                    start = (y * w + x) * c
                    for ch in range(c):
                        dst[_at(out + ch)] = max(dst[_at(out + ch)], src[_at(start + ch)])


#: Values of K per pass of a linear layer over its samples (:func:`_linear_share`).
LINEAR_K_CHUNK = 512


def _make_linear_channels(block_4, block_1, width: int):
    """A compiled function adding one chunk ``[k0, k0 + k_len)`` of K for one block of
    ``width`` output channels of a linear layer to ``lin_acc``, for ``count`` samples, 4 at a
    time (``block_4``), the last ones singly (``block_1``); see :func:`_linear_share`."""
    @njit(cache=True, nogil=True, boundscheck=False)
    def linear_channels(weights, rows, k_padded, lin, lin_acc, count, co, k0, k_len):
        i64 = np.int64
        w_at = 2 * co + k0 * rows            # pair k0 / 2 of the (K / 2, rows, 2) layout
        for j in range(0, count - 3, 4):
            block_4(weights, i64(w_at), i64(rows), lin, i64(j * k_padded + k0),
                    i64(k_padded), i64(k_len), i64(1), i64(0), i64(0), lin_acc,
                    i64(j * rows + co), i64(rows))
        for j in range(count - count % 4, count):
            block_1(weights, i64(w_at), i64(rows), lin, i64(j * k_padded + k0),
                    i64(k_padded), i64(k_len), i64(1), i64(0), i64(0), lin_acc,
                    i64(j * rows + co), i64(rows))
    linear_channels.__doc__ = (f"A chunk of K for output channels ``[co, co + {width})`` of "
                               ":func:`_linear_share`, every sample.")
    return linear_channels


_linear_channels_16 = _make_linear_channels(add_4x16, add_1x16, 16)
_linear_channels_8 = _make_linear_channels(add_4x8, add_1x8, 8)


@njit(cache=True, nogil=True, boundscheck=False)
def _linear_share(args, layer, lin, lin_acc, count):
    """A linear layer on ``count`` samples at once: ``lin_acc[p * rows + co]`` for the centred
    inputs ``lin[p * K_padded:]``, four samples per register block (:func:`~minicnn.kernels.int8_blocks.make_block`
    with the samples as its windows).

    K is summed in chunks of :data:`LINEAR_K_CHUNK`: for each chunk, each block of 16
    channels, all the samples. A chunk's weights for 16 channels (16 KB) stay in L1 cache
    while the samples pass, and the whole matrix (800 KB for the MNIST CNN's first linear
    layer, more than L2) is read once per call. Without chunks the matrix came from memory
    once per four samples or the samples' rows once per 16 channels: 0.85 against 0.50 ms
    for that layer at batch 64 and one thread."""
    k_padded, c_out = layer.k_padded, layer.out_c
    rows = (c_out + ROW_BLOCK - 1) // ROW_BLOCK * ROW_BLOCK
    start = layer.w_offset
    weights = args.weights[start:start + rows * k_padded]
    wide = rows - rows % 16
    lin_acc[:count * rows] = 0
    for k0 in range(0, k_padded, LINEAR_K_CHUNK):
        k_len = min(LINEAR_K_CHUNK, k_padded - k0)
        for co in range(0, wide, 16):
            _linear_channels_16(weights, rows, k_padded, lin, lin_acc, count, co, k0, k_len)
        if wide < rows:
            _linear_channels_8(weights, rows, k_padded, lin, lin_acc, count, wide, k0, k_len)


@njit(cache=True, nogil=True, boundscheck=False)
def _linear_tail(args, first, last, lin, lin_acc, lin_out):
    """Layers ``args.batch_from`` to the end (all linear, the last one final) on samples
    ``[first, last)``, whose centred inputs to the first of them are in ``lin``."""
    count = last - first
    layers = args.program.shape[0]
    for index in range(args.batch_from, layers):
        layer = args.program[index]
        k_padded, c_out = layer.k_padded, layer.out_c
        rows = (c_out + ROW_BLOCK - 1) // ROW_BLOCK * ROW_BLOCK
        ch = layer.ch_offset
        _linear_share(args, layer, lin, lin_acc, count)
        if layer.final:
            for p in range(count):
                _store_final(lin_acc[p * rows:(p + 1) * rows], rows, 1, c_out,
                             args.bias[ch:ch + c_out], args.out[first + p])
            return
        following = args.program[index + 1]
        next_padded = following.k_padded
        _requantize_rows(lin_acc, rows, count, c_out, args.bias[ch:ch + c_out],
                         args.multiplier[ch:ch + c_out], args.rounding[ch:ch + c_out],
                         args.total[ch:ch + c_out], args.lift[ch:ch + c_out],
                         layer.clamp_low, lin_out)
        for p in range(count):
            _centre(lin_out[p * c_out:(p + 1) * c_out], following,
                    lin[p * next_padded:(p + 1) * next_padded])


@njit(cache=True, nogil=True, boundscheck=False)
def _quantise(real, scale, zero, codes):
    """``codes[k] = clip(rint(real[k] / scale) + zero, 0, 255)`` in float32, as
    :func:`minicnn.quant.arithmetic.quantize` computes it (the same bytes)."""
    low, high = np.float32(0), np.float32(255)
    for k in range(real.shape[0]):
        q = np.rint(real[k] / scale) + zero
        codes[k] = np.uint8(min(max(q, low), high))


@njit(cache=True, nogil=True, boundscheck=False)
def network_chunk(args, plan, thread, n_threads):
    """Carry samples ``share(N, thread, n_threads)`` through every layer of ``args.program``."""
    first, last = parallel.share(args.out.shape[0], thread, n_threads)
    a, b = args.act_a[thread], args.act_b[thread]
    cols, padded, acc = args.cols[thread], args.padded[thread], args.acc[thread]
    best, tiles, products = args.best[thread], args.tiles[thread], args.products[thread]
    stage = args.stage[thread]
    n_in = args.x.shape[1]
    quantise = args.real.shape[0] > 0
    for n in range(first, last):
        src, dst = a, b
        if quantise:                # real inputs: this sample's codes into the other buffer
            _quantise(args.real[n], args.input_scale, args.input_zero, dst)
            sample = dst
        else:
            sample = args.x[n]
        first_layer = args.program[0]
        if first_layer.op != OP_LINEAR and first_layer.in_c > 1:
            # The input is NCHW; every conv and pool works channels last (NHWC).
            c_in, hw = first_layer.in_c, first_layer.in_h * first_layer.in_w
            for ch in range(c_in):
                for q in range(hw):
                    src[_at(q * c_in + ch)] = sample[_at(ch * hw + q)]
        else:
            for k in range(n_in):
                src[k] = sample[k]
        out_row = args.out[n]
        for index in range(args.program.shape[0]):
            layer = args.program[index]
            op = layer.op
            if index == args.batch_from:
                # the linear tail runs on the whole share below: keep this sample's input
                k_padded = layer.k_padded
                _centre(src, layer, args.lin[thread, (n - first) * k_padded:
                                             (n - first + 1) * k_padded])
                break
            if op == OP_MAXPOOL:
                _maxpool(src, layer, dst)
            elif op == OP_CONV:
                if layer.winograd:
                    pad_phases(src, layer, padded)
                else:
                    _pad_centre(src, layer, padded)
                _layer_gemm(args, layer, padded, cols, acc, best, tiles, products, stage,
                            layer.out_h * layer.out_w, dst, out_row)
            else:
                _centre(src, layer, cols)
                _layer_gemm(args, layer, padded, cols, acc, best, tiles, products, stage, 1,
                            dst, out_row)
            if layer.final:
                break
            src, dst = dst, src
        last_layer = args.program[args.program.shape[0] - 1]
        if args.batch_from < args.program.shape[0]:
            continue
        if not last_layer.final:
            # The network ends in uint8 (e.g. a pooling after the last conv): widen it, back
            # from channels last to NCHW.
            c_out, hw = last_layer.out_c, last_layer.pooled_h * last_layer.pooled_w
            for ch in range(c_out):
                for q in range(hw):
                    out_row[ch * hw + q] = src[q * c_out + ch]
    if args.batch_from < args.program.shape[0] and last > first:
        _linear_tail(args, first, last, args.lin[thread], args.lin_acc[thread],
                     args.lin_out[thread])


def linear_tail(program) -> tuple[int, int, int, int]:
    """``(tail_from, k, rows, out)``: the first layer of the network's tail of linear layers
    (the number of layers if it has none that ends the network) and, per sample, the largest
    padded input, accumulator row and output of its layers (the share buffers' sizes)."""
    layers = program.shape[0]
    start = layers
    while start > 0 and program["op"][start - 1] == OP_LINEAR:
        start -= 1
    if start == layers or not program["final"][layers - 1] or start == 0:
        return layers, 1, 1, 1
    tail = program[start:]
    rows = [round_up(int(c), ROW_BLOCK) for c in tail["out_c"]]
    return start, int(tail["k_padded"].max()), max(rows), int(tail["out_c"].max())


def forward(packed: PackedNetwork, x, n_threads: int | None = None, input_scale: float = 1.0,
            input_zero: int = 0) -> np.ndarray:
    """Run the packed network.

    Parameters
    ----------
    packed : PackedNetwork
        The network (:func:`minicnn.quant.model.pack`).
    x : uint8 or float32 (N, ...)
        Quantised inputs, or real ones (float32), quantised here sample by sample inside the
        compiled call as :func:`minicnn.quant.arithmetic.quantize` does
        (``clip(rint(x / input_scale) + input_zero, 0, 255)``, in float32): the same bytes,
        without NumPy's passes over the batch.
    n_threads : int, optional
        Default: one per Numba thread, at most one per sample.
    input_scale, input_zero
        The input's quantisation, for float32 ``x``.

    Returns
    -------
    int32 (N, packed.out_size)
    """
    n = x.shape[0]
    if x.dtype == np.float32:
        real = np.ascontiguousarray(x.reshape(n, -1))
        codes = np.empty((0, real.shape[1]), np.uint8)
    else:
        codes = np.ascontiguousarray(x.reshape(n, -1), dtype=np.uint8)
        real = np.empty((0, codes.shape[1]), np.float32)
    threads = threads_for(n) if n_threads is None else max(1, min(int(n_threads), max(n, 1)))
    out = np.empty((n, packed.out_size), dtype=np.int32)
    if n == 0:
        return out
    share = -(-n // threads)
    args = Int8NetworkArgs(
        x=codes, real=real, input_scale=np.float32(input_scale), input_zero=np.float32(input_zero),
        out=out, program=packed.program, weights=packed.weights, bias=packed.bias,
        multiplier=packed.multiplier, rounding=packed.rounding, total=packed.total,
        lift=packed.lift, act_a=np.empty((threads, packed.act_size), np.uint8),
        act_b=np.empty((threads, packed.act_size), np.uint8),
        cols=np.empty((threads, packed.cols_size), np.int16),
        padded=np.empty((threads, packed.padded_size), np.int16),
        acc=np.empty((threads, packed.acc_size), np.int32),
        best=np.empty((threads, packed.rows_size), np.int32),
        tiles=np.empty((threads, packed.tiles_size), np.int16),
        products=np.empty((threads, packed.products_size), np.int32),
        stage=np.empty((threads, packed.stage_size), np.int32), batch_from=packed.tail_from,
        lin=np.empty((threads, share * packed.tail_k), np.int16),
        lin_acc=np.empty((threads, share * packed.tail_rows), np.int32),
        lin_out=np.empty((threads, share * packed.tail_out), np.uint8))
    parallel.run(network_chunk, args, parallel.NO_PLAN, threads, key="int8-network")
    return out
