"""A whole network's inference forward as one compiled call: the kernels of a network plan.

:mod:`minicnn.inference.plan` turns a model's layers into a *program*: a short array of
*steps*, records of named fields (:data:`STEP_DTYPE`): a convolution with its bias, folded
batch norm, residual add, activation and 2x2 max pooling; a pooling; a flatten; a linear layer
with its epilogue; a softmax. This module runs a program: :func:`run_thread` and its parallel
loop are the one compiled call per batch, and each step runs in its *step kernel*
(:data:`STEP_KERNELS`), called through a function pointer. Each Numba thread claims *groups*
of a few samples, one at a time, and carries each group through **every** spatial step
before it claims the next, so a group's activations stay in that thread's cache from one
layer to the next; the linear layers then take each thread's share of the rows. One or two
parallel regions per call, not one per layer, and no Python between layers.

Layout inside a thread. A group's activations live in one of a few per-thread *buffers*
(``p.src`` and ``p.dst`` say which): spatially as ``(C, G, H, W)``
("channels, then samples": a convolution's GEMM then reads ``C*kH*kW`` rows of ``G*H_out*W_out``
columns and writes ``(C_out, G*H_out*W_out)``, which *is* the next layer's layout, with no
transpose between layers), and after a flatten as rows ``(G, features)``, the layout a linear
layer's GEMM wants. The input is copied from NCHW into ``(C, G, H, W)`` at the start and the
output back to ``(N, ...)`` at the end.

Weights are read live: ``tensors`` is a typed list of 1-D views of the layers' parameter and
buffer arrays (no copies), so an optimiser step or an in-place edit between calls is seen by
the next call; the host rebuilds the list only when an array is *replaced*
(:meth:`minicnn.inference.NetworkPlan.tensors`). A batch norm after a convolution or a
linear layer is folded in the epilogue, per channel, from its live running statistics:
``y = (acc + bias - mean) * gamma / sqrt(var + eps) + beta``.

Every convolution is an unrolled matrix and one GEMM per group (``blas.gemm``, single-threaded,
called from compiled code), except a 1x1, stride-1, unpadded one, whose input layout already
is the unrolled matrix. The arithmetic order is that of the layer-by-layer im2col path, not of
the one-pool kernels' shift and Winograd paths: results agree with the layer-by-layer forward to
float32 rounding, not bit for bit (the tests hold them to a float32 tolerance).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import numba
from numba import njit, prange, types, uint64
from numba.core import cgutils
from numba.core.types.function_type import CompileResultWAP
from numba.extending import intrinsic

from . import parallel_compile, winograd4
from .claims import claim
from .blas import NO_TRANS, TRANS
from .blas import gemm as _gemm
from .direct_blocks import CHANNELS as BLOCK_CHANNELS
from .direct_blocks import POSITIONS as BLOCK_POSITIONS
from .direct_blocks import block_1x24, block_4x24
from .direct_blocks import (POOLED_CHANNELS, POOLED_COLUMNS, pooled_1_plain, pooled_1_relu,
                            pooled_2_plain, pooled_2_relu)
from .winograd import (PADDED_MIN_TILES, _pad_plane, _split_phases, filters_into,
                       transform_columns)
from .winograd_blocks import TILES as WINOGRAD_BLOCK_TILES
from .winograd_blocks import (input_tiles, input_tiles_padded, output_block, output_pooled_plain,
                              output_pooled_relu, products, spread_columns)

_JIT = dict(cache=True, nogil=True)
#: The helpers the step kernels and entries call (``_``-named, never called from Python): no
#: wrappers to call them from Python or C (0.9 s less of a cold start), and not cached on their
#: own, since each caller's cached code holds them.
_INNER = dict(nogil=True, no_cpython_wrapper=True, no_cfunc_wrapper=True)

# What a step does (``program.op``).
CONV, MAXPOOL, AVGPOOL, ADAPTIVE_AVGPOOL, FLATTEN, LINEAR, AFFINE, ACTIVATION, SOFTMAX = range(9)
OP_NAMES = ("conv", "maxpool", "avgpool", "adaptive-avgpool", "flatten", "linear", "affine",
            "activation", "softmax")

# The activation a step ends with (``program.activation``).
IDENTITY, RELU, LEAKY_RELU, SIGMOID, TANH = range(5)
ACTIVATION_NAMES = ("identity", "relu", "leaky-relu", "sigmoid", "tanh")

# How a convolution step computes (``program.algorithm``): an unrolled matrix and a GEMM
# (on the wide grid for stride 1, :func:`conv_shifted_step`; on the output grid otherwise);
# shifted multiply-adds, one output plane at a time (grouped and depthwise convolutions);
# Winograd's F(2x2, 3x3) (3x3, stride 1, padding 0 or 1, many input channels); register
# blocks on the wide grid (stride 1, few input channels: :mod:`minicnn.kernels.direct_blocks`);
# Winograd's F(4x4, 3x3) (as F(2x2, 3x3), where no pooling follows:
# :mod:`minicnn.kernels.winograd4`).
GEMM, DIRECT, WINOGRAD, BLOCKED, WINOGRAD4 = range(5)
ALGORITHM_NAMES = ("gemm", "direct", "winograd", "blocked", "winograd-4x4")

#: ``program.*`` fields that name no tensor hold this.
NONE = -1


#: One step of a program: a record of named fields (``int64`` unless said). A program is a
#: NumPy structured array of these, one per step; a kernel reads ``p = program[step]`` and
#: then ``p.c_out``, ``p.kh``... (one argument however many fields, where a tuple of arrays
#: made every compiled function take and pass ~230 values, most of a cold start's time).
#:
#: ``op``: what the step does (:data:`CONV` ...); ``kernel``: which of :data:`STEP_KERNELS`
#: runs it (:func:`kernel_for`). ``src``, ``dst``: the per-thread buffers it reads and
#: writes; ``residual``: a buffer added before the activation, or :data:`NONE`. ``c_in, h_in,
#: w_in`` and ``c_out, h_out, w_out``: the activation's shape per sample before and after the
#: step (a flattened activation is ``(features, 1, 1)``). ``kh, kw, sh, sw, top, left``:
#: kernel, stride and top/left padding of a convolution or pooling; ``conv_h, conv_w``: a
#: convolution's own output size (before a fused pooling); ``rows``: 1 where the step's output
#: is rows ``(G, features)`` (after a flatten), 0 for ``(C, G, H, W)``; ``algorithm``: how a
#: convolution is computed (:data:`GEMM`, :data:`DIRECT`, :data:`WINOGRAD`); ``packed_at``:
#: where a Winograd step's transformed filters live in the plan's ``packed`` array (see
#: :func:`refresh_packed`), or :data:`NONE`; ``columns``: the length of each row of a Winograd
#: step's transformed tiles and products (:func:`winograd_capacity`,
#: :func:`minicnn.kernels.winograd4.capacity`: worked out once, in Python); ``groups``;
#: ``pool``: 1 where a 2x2, stride-2 max pooling follows the activation (``h_out, w_out`` are
#: then the pooled sizes);
#: ``count_pad``: an average pooling divides by its whole window. ``activation`` (:data:`RELU`
#: ...) and ``slope`` (``float64``, LeakyReLU's). ``weight, bias, bn_weight, bn_bias, bn_mean,
#: bn_var``: indices into ``tensors``, or :data:`NONE`; ``bn_eps`` (``float64``).
#: ``out_first, out_last``: the output channels (features) ``[out_first, out_last)`` a call
#: computes, where a batch of one is split over threads (:func:`run_split`); ``out_last``
#: :data:`NONE` for all of them (:func:`_out_range`).
STEP_DTYPE = np.dtype([(name, np.float64 if name in ("slope", "bn_eps") else np.int64)
                       for name in (
    "op", "kernel", "src", "dst", "residual", "c_in", "h_in", "w_in", "c_out", "h_out", "w_out",
    "kh", "kw", "sh", "sw", "top", "left", "conv_h", "conv_w", "rows", "algorithm", "packed_at",
    "columns", "groups", "pool", "count_pad", "activation", "slope", "weight", "bias", "bn_weight",
    "bn_bias", "bn_mean", "bn_var", "bn_eps", "out_first", "out_last")])


class Arena(NamedTuple):
    """Where a thread's scratch row is cut up (sizes in float32 elements), and how it walks.

    The batch is cut into ``groups`` groups of at most ``group`` samples (sizes differing by at
    most one), which the threads claim one at a time (:func:`run_thread`). A thread runs the
    *spatial* steps (``program`` steps ``[0, rows_from)``, up to and including a flatten) on a
    group, through all of them while its activations are in cache; the flatten writes each
    group's features into the batch's row buffers (a scratch row of their own), and the
    *row* steps (``[rows_from, steps)``: linear layers) then run once on each thread's fixed
    share of the rows, so that a linear layer's weights are read once per thread and call,
    not once per group.

    ``buffers`` spatial buffers of ``buffer_size`` start at 0; then a convolution's working
    space for a group (``cols_size``: the unrolled matrix, the padded copy, Winograd's
    transformed tiles), its unpooled output (``conv_out_size``), ``buffers`` row buffers of
    ``rows_size`` (room for the whole batch's rows), and working space whose size does not
    grow with the group (``fixed_size``: Winograd's transformed filters, one output plane).
    """

    buffers: int
    buffer_size: int
    cols_size: int
    conv_out_size: int
    rows_size: int
    fixed_size: int
    group: int
    groups: int
    rows_from: int


@njit(**_INNER)
def _out_range(p):
    """The output channels (or features) ``[first, last)`` this call of step ``p`` computes:
    all of them, or a thread's part where a batch of one is split (:func:`run_split`)."""
    if p.out_last != NONE:
        return p.out_first, p.out_last
    return 0, p.c_out


# --------------------------------------------------------------------------------------------
# Epilogue pieces, applied to one value
# --------------------------------------------------------------------------------------------
@njit(**_INNER)
def _activate(v, kind, slope):
    if kind == RELU:
        return v if v > 0 else v * 0           # v * 0 keeps a NaN a NaN, as the layer does
    if kind == LEAKY_RELU:
        return v if v > 0 else v * slope
    if kind == SIGMOID:
        if v >= 0:
            return 1 / (1 + math.exp(-v))
        e = math.exp(v)
        return e / (1 + e)
    if kind == TANH:
        return math.tanh(v)
    return v


@njit(**_INNER)
def _affine_of(p, tensors, channels):
    """``affine (2, channels)``: per channel the ``scale`` and ``shift`` with ``epilogue(acc)
    = acc * scale + shift``: the bias, then the batch norm's running statistics and affine
    parameters (where there are). Read once per step and call: an item of the typed list of
    tensors costs a call into Numba's list code (measured: 49 us for LeNet-5's first linear
    layer at batch 1 when read per output, against a few us)."""
    affine = np.empty((2, channels), dtype=np.float32)
    scale, shift = affine[0], affine[1]
    for c in range(channels):
        scale[c] = 1
        shift[c] = 0
    if p.bias != NONE:
        bias = tensors[p.bias]
        for c in range(channels):
            shift[c] = bias[c]
    if p.bn_mean != NONE:
        mean, var = tensors[p.bn_mean], tensors[p.bn_var]
        eps = np.float32(p.bn_eps)
        has_affine = p.bn_weight != NONE
        gamma, beta = mean, mean
        if has_affine:
            gamma, beta = tensors[p.bn_weight], tensors[p.bn_bias]
        for c in range(channels):
            s = np.float32(1) / np.sqrt(var[c] + eps)
            b = np.float32(0)
            if has_affine:
                s *= gamma[c]
                b = beta[c]
            scale[c] = s
            shift[c] = (shift[c] - mean[c]) * s + b
    return affine


@njit(**_INNER)
def _finish(dest, src, scale, shift, residual, kind, slope):
    """``dest[i] = activation(src[i] * scale + shift + residual[i])`` (``residual`` empty for
    none; ``dest`` may be ``src``): the epilogue of one row of one channel, in one pass.

    ReLU, by far the most common activation, gets loops of its own with no branch on the kind
    inside them: LLVM vectorises those into compare-and-selects, where one loop over every
    kind stays scalar and pays a mispredicted branch per negative value (measured: 7 ns
    against well under 1 ns per value after a GEMM)."""
    zero = np.float32(0)
    n = dest.shape[0]
    if residual.shape[0] > 0:
        if kind == RELU:
            for i in range(n):
                v = src[i] * scale + shift + residual[i]
                dest[i] = v if not v <= zero else zero * v   # NaN stays NaN, as in the layer
        else:
            for i in range(n):
                dest[i] = _activate(src[i] * scale + shift + residual[i], kind, slope)
    elif kind == RELU:
        for i in range(n):
            v = src[i] * scale + shift
            dest[i] = v if not v <= zero else zero * v
    elif kind == IDENTITY:
        for i in range(n):
            dest[i] = src[i] * scale + shift
    else:
        for i in range(n):
            dest[i] = _activate(src[i] * scale + shift, kind, slope)


@njit(**_INNER)
def _epilogue_rows(p, affine, y, residual, n_channels, length):
    """In place on ``y`` viewed as ``(n_channels, length)``: bias / batch norm, the residual
    (same layout, or an empty array), the activation."""
    kind, slope = p.activation, np.float32(p.slope)
    has_residual = residual.shape[0] > 0
    for c in range(n_channels):
        row = y[c * length:(c + 1) * length]
        scale, shift = affine[0, c], affine[1, c]
        res = residual[c * length:(c + 1) * length] if has_residual else residual
        _finish(row, row, scale, shift, res, kind, slope)


@njit(**_INNER)
def _finish_rows(p, affine, co, s, g, source, pitch, first_row, row_step,
                 n_rows, target, residual):
    """Rows ``first_row, first_row + row_step, ...`` (``n_rows`` of them) of output channel
    ``co`` of sample ``s``, from raw sums on a grid of ``pitch`` columns (``source`` row ``r``
    holds output row ``first_row + r*row_step``, its first ``ow`` values valid) into
    ``target`` ``(C_out, g, oh, ow)``, with the bias / batch norm, the residual (same layout
    as ``target``, or empty) and the activation, in one pass.

    One slice per plane, then plain index arithmetic: a slice per row (28 values on MNIST)
    costs more than the row's arithmetic (each slice is a reference-count update, an atomic
    instruction; measured 3.5 of 4.3 ms of MNIST's first layer at batch 64)."""
    oh, ow = p.conv_h, p.conv_w
    kind, slope = p.activation, np.float32(p.slope)
    scale, shift = affine[0, co], affine[1, co]
    at = (co * g + s) * oh * ow + first_row * ow
    dest = target[at:at + (n_rows - 1) * row_step * ow + ow]
    zero = np.float32(0)
    # Unsigned indices: a signed one might be negative as far as LLVM knows, and Numba's
    # wrap-around for negative indices then stops the loops vectorising (measured 2.3x).
    rows, width, stride = uint64(n_rows), uint64(ow), uint64(pitch)
    out_stride = uint64(row_step * ow)
    if residual.shape[0] > 0:
        res = residual[at:at + (n_rows - 1) * row_step * ow + ow]
        if kind == RELU:        # a residual block's end: its own loop, as in _finish
            for r in range(rows):
                for ox in range(width):
                    v = source[r * stride + ox] * scale + shift + res[r * out_stride + ox]
                    dest[r * out_stride + ox] = v if not v <= zero else zero * v
        else:
            for r in range(rows):
                for ox in range(width):
                    dest[r * out_stride + ox] = _activate(
                        source[r * stride + ox] * scale + shift + res[r * out_stride + ox],
                        kind, slope)
    elif kind == RELU:
        for r in range(rows):
            for ox in range(width):
                v = source[r * stride + ox] * scale + shift
                dest[r * out_stride + ox] = v if not v <= zero else zero * v
    else:
        for r in range(rows):
            for ox in range(width):
                dest[r * out_stride + ox] = _activate(source[r * stride + ox] * scale + shift,
                                                      kind, slope)


# --------------------------------------------------------------------------------------------
# The steps, each on one group of ``g`` samples held as (C, g, H, W) or rows (g, features)
# --------------------------------------------------------------------------------------------
# The *step kernels* (``*_step``, :data:`STEP_KERNELS`) all take the same arguments, and a
# thread calls them through a table of function pointers (``kernels[p.kernel]``), so each is
# compiled and optimised once, on its own. Called directly, Numba links every callee's code
# into its caller and LLVM optimises it all again at each level of calls: a cold start of the
# whole network's code took 36 s that way, 30 of them in the three dispatching levels above
# the arithmetic. Their arguments: ``p`` the step's record, ``tensors``, the group's input
# ``x`` and output ``y``, ``residual`` (empty for none), working space ``work`` (grows with the
# group), ``conv_out`` (an unpooled convolution output), ``fixed`` (does not grow with it),
# ``packed`` (what the plan keeps between calls) and the group's size ``g``.
@njit(**_INNER)
def _finish_tiles4(p, affine, co, s0, count, g, image, row_size, per_sample, pitch, target,
                   residual):
    """Output channel ``co`` of samples ``[s0, s0 + count)`` from F(4x4, 3x3)'s output
    transform (:func:`minicnn.kernels.winograd4.output_block`: output row ``oy`` of the
    chunk's sample ``slot`` starts at ``image[(oy % 4) * row_size + 4 * (slot * per_sample +
    (oy // 4) * pitch)]``) into ``target`` ``(C_out, g, oh, ow)``, with the epilogue of
    :func:`_finish_rows`, in one call (a call per sample and row phase cost more than its
    arithmetic on 8x8 planes: 16 values each). The rows are walked as one loop over
    ``count * oh`` rows, each kind of epilogue in its own loop nest (no branch inside)."""
    oh, ow = p.conv_h, p.conv_w
    kind, slope = p.activation, np.float32(p.slope)
    scale, shift = affine[0, co], affine[1, co]
    zero = np.float32(0)
    width, tile_row, sample = uint64(ow), uint64(4 * pitch), uint64(4 * per_sample)
    rows, height, size = uint64(count * oh), uint64(oh), uint64(row_size)
    dest_at = uint64((co * g + s0) * oh * ow)
    if residual.shape[0] > 0 and kind == RELU:      # a residual block's end
        for r in range(rows):
            slot, oy = r // height, r % height
            src = (oy % 4) * size + sample * slot + (oy // 4) * tile_row
            dest = dest_at + r * width
            for ox in range(width):
                v = image[src + ox] * scale + shift + residual[dest + ox]
                target[dest + ox] = v if not v <= zero else zero * v
    elif residual.shape[0] > 0:
        for r in range(rows):
            slot, oy = r // height, r % height
            src = (oy % 4) * size + sample * slot + (oy // 4) * tile_row
            dest = dest_at + r * width
            for ox in range(width):
                target[dest + ox] = _activate(
                    image[src + ox] * scale + shift + residual[dest + ox], kind, slope)
    elif kind == RELU:
        for r in range(rows):
            slot, oy = r // height, r % height
            src = (oy % 4) * size + sample * slot + (oy // 4) * tile_row
            dest = dest_at + r * width
            for ox in range(width):
                v = image[src + ox] * scale + shift
                target[dest + ox] = v if not v <= zero else zero * v
    else:
        for r in range(rows):
            slot, oy = r // height, r % height
            src = (oy % 4) * size + sample * slot + (oy // 4) * tile_row
            dest = dest_at + r * width
            for ox in range(width):
                target[dest + ox] = _activate(image[src + ox] * scale + shift, kind, slope)


@njit(**_INNER)
def _finish_samples4(p, affine, co, s0, g, image, row_size, tiles_w, target, residual):
    """Output channel ``co`` of the 8 samples ``[s0, s0 + 8)`` from F(4x4, 3x3)'s output
    transform of tiles with the samples innermost (:func:`minicnn.kernels.winograd4.
    sample_tiles`: output ``(oy, ox)`` of the octet's sample ``l`` is ``image[(oy % 4) *
    row_size + 4 * (8 * ((oy // 4) * tiles_w + ox // 4) + l) + ox % 4]``) into ``target``
    ``(C_out, g, oh, ow)``, with the epilogue of :func:`_finish_rows`: four values at a time,
    one tile's row."""
    oh, ow = p.conv_h, p.conv_w
    kind, slope = p.activation, np.float32(p.slope)
    scale, shift = affine[0, co], affine[1, co]
    zero = np.float32(0)
    has_residual = residual.shape[0] > 0
    size, width = uint64(row_size), uint64(ow)
    for lane in range(uint64(8)):
        dest_at = uint64((co * g + s0) * oh * ow) + lane * uint64(oh * ow)
        for oy in range(uint64(oh)):
            src_row = (oy % 4) * size + uint64(32) * (oy // 4) * uint64(tiles_w) + 4 * lane
            dest = dest_at + oy * width
            for ox in range(width):
                src = src_row + uint64(32) * (ox // 4) + ox % 4
                v = image[src] * scale + shift
                if has_residual:
                    v += residual[dest + ox]
                if kind == RELU:
                    target[dest + ox] = v if not v <= zero else zero * v
                else:
                    target[dest + ox] = _activate(v, kind, slope)


@njit(**_INNER)
def _unroll(x, cols, c_first, c_count, g, h, w, kh, kw, sh, sw, top, left, oh, ow):
    """im2col of channels ``[c_first, c_first + c_count)`` of ``x (C, g, h, w)`` into
    ``cols (c_count*kh*kw, g*oh*ow)``: row ``(c, i, j)``, column ``(sample, oy, ox)``.

    Each output row of a tap is zeros, then a run of input pixels, then zeros: the run's ends
    are worked out once per tap, so the copy itself is a loop with no bounds test (which LLVM
    vectorises for stride 1). Offsets, not slices, and unsigned: a slice per output row (16
    values in a ResNet's stride-2 convs) is two reference-count updates, atomic instructions
    that cost more than the copy (measured: the 1x1 stride-2 shortcut of ResNet-20 at batch
    64, 6 ms before)."""
    plane = g * oh * ow
    zero = np.float32(0)
    for c in range(c_count):
        for i in range(kh):
            for j in range(kw):
                # output columns whose input column ox*sw - left + j lies in [0, w)
                lo = min(ow, max(0, -((j - left) // sw)))
                hi = max(lo, min(ow, (w - 1 - j + left) // sw + 1))
                row = ((c * kh + i) * kw + j) * plane
                for s in range(g):
                    image = ((c_first + c) * g + s) * h * w
                    for oy in range(oh):
                        iy = oy * sh - top + i
                        out = row + (s * oh + oy) * ow
                        if iy < 0 or iy >= h:
                            for ox in range(ow):
                                cols[uint64(out + ox)] = zero
                            continue
                        for ox in range(lo):
                            cols[uint64(out + ox)] = zero
                        for ox in range(hi, ow):
                            cols[uint64(out + ox)] = zero
                        start = image + iy * w - left + j       # + ox * sw >= 0 from lo on
                        if sw == 1:
                            for ox in range(lo, hi):
                                cols[uint64(out + ox)] = x[uint64(start + ox)]
                        else:
                            for ox in range(lo, hi):
                                cols[uint64(out + ox)] = x[uint64(start + ox * sw)]


@njit(**_INNER)
def _max_pool_2x2(y, out, channels, g, h, w):
    """2x2, stride-2 max pooling of ``y (channels, g, h, w)`` into ``out (channels, g, h//2,
    w//2)`` (a last odd row or column is dropped, as PyTorch's floor mode)."""
    _max_pool_2x2_grid(y, out, channels, g, h, w, w)


@njit(**_INNER)
def _max_pool_2x2_grid(y, out, channels, g, h, w, pitch):
    """:func:`_max_pool_2x2` of planes laid out ``pitch`` columns a row (``pitch >= w``; the
    columns past ``w`` are not read): ``y (channels, g, h, pitch)``."""
    ph, pw = h // 2, w // 2
    for plane in range(channels * g):
        src = y[plane * h * pitch:(plane + 1) * h * pitch]
        dst = out[plane * ph * pw:(plane + 1) * ph * pw]
        for oy in range(ph):
            a = src[2 * oy * pitch:(2 * oy + 1) * pitch]
            b = src[(2 * oy + 1) * pitch:(2 * oy + 2) * pitch]
            for ox in range(pw):
                m = max(a[2 * ox], a[2 * ox + 1])
                m = max(m, max(b[2 * ox], b[2 * ox + 1]))
                dst[oy * pw + ox] = m


@njit(**_INNER)
def _conv_gemm(p, tensors, x, target, cols, g):
    """``target (C_out, g*oh*ow) = W (C_out, C_in*kh*kw) @ unrolled x``, per group of
    channels."""
    c_in, h, w = p.c_in, p.h_in, p.w_in
    c_out, kh, kw = p.c_out, p.kh, p.kw
    sh, sw, top, left = p.sh, p.sw, p.top, p.left
    oh, ow, groups = p.conv_h, p.conv_w, p.groups
    columns = g * oh * ow
    weight = tensors[p.weight]
    cin_g, cout_g = c_in // groups, c_out // groups
    k = cin_g * kh * kw
    direct = kh == 1 and kw == 1 and sh == 1 and sw == 1 and top == 0 and left == 0
    for grp in range(groups):
        if direct:               # (C, g, H, W) already is the (C, g*H*W) unrolled matrix
            b = x[grp * cin_g * columns:(grp + 1) * cin_g * columns]
        else:
            _unroll(x, cols, grp * cin_g, cin_g, g, h, w, kh, kw, sh, sw, top, left, oh, ow)
            b = cols[:k * columns]
        _gemm(NO_TRANS, NO_TRANS, cout_g, columns, k, weight[grp * cout_g * k:], k, b, columns,
              0.0, target[grp * cout_g * columns:], columns)


@njit(**_JIT)
def conv_gemm_step(p, tensors, x, y, residual, work, conv_out, fixed, packed, g):
    """A strided convolution: the unrolled matrix on the output grid, one GEMM, the epilogue
    (bias / batch norm, residual, activation), then the fused pooling."""
    target = conv_out if p.pool == 1 else y
    _conv_gemm(p, tensors, x, target, work, g)
    _epilogue_rows(p, _affine_of(p, tensors, p.c_out), target, residual, p.c_out,
                   g * p.conv_h * p.conv_w)
    if p.pool == 1:
        _max_pool_2x2(conv_out, y, p.c_out, g, p.conv_h, p.conv_w)



@njit(**_INNER)
def _pad_planes(x, padded, planes, h, w, top, left, pitch, size):
    """Every input plane of a group, ``x (planes, h, w)``, into zero-padded planes of
    ``size`` elements, ``pitch`` columns a row, the input at ``(top, left)``.

    Inner loops here and below run over slices from 0 (``dest[k] = src[k]``): an index
    such as ``base + k`` might be negative as far as LLVM knows, and its wrap-around check
    stops the loop vectorising."""
    zero = np.float32(0)
    for p in range(planes):
        plane = padded[p * size:(p + 1) * size]
        for q in range(size):
            plane[q] = zero
        for iy in range(h):
            dest = plane[(iy + top) * pitch + left:(iy + top) * pitch + left + w]
            src = x[(p * h + iy) * w:(p * h + iy + 1) * w]
            for ix in range(w):
                dest[ix] = src[ix]


@njit(**_INNER)
def _pad_sample(x, padded, s, g, c_in, h, w, size, pitch, top, left):
    """Sample ``s`` of ``x (C, g, h, w)`` into the interiors of its padded planes (``size``
    elements each, ``pitch`` columns a row, the input at ``(top, left)``; the borders are
    zeroed once per call by the caller and stay zero)."""
    for c in range(c_in):
        image = x[(c * g + s) * h * w:(c * g + s + 1) * h * w]
        for iy in range(h):
            dest = padded[c * size + (iy + top) * pitch + left:
                          c * size + (iy + top) * pitch + left + w]
            src = image[iy * w:(iy + 1) * w]
            for ix in range(w):
                dest[ix] = src[ix]


@njit(**_JIT)
def conv_shifted_step(p, tensors, x, y, residual, work, conv_out, fixed, packed, g):
    """A stride-1 convolution as a GEMM on a *wide grid*, one sample at a time (so that its
    unrolled matrix and sums stay in cache, whatever the group): each input plane is
    zero-padded to ``pitch = ow + kw - 1`` columns, so output ``(oy, ox)`` numbered ``q =
    oy*pitch + ox`` reads tap ``(i, j)`` at ``q + i*pitch + j``: the unrolled matrix's row for
    tap ``(c, i, j)`` is one contiguous copy of ``oh*pitch`` values (not ``oh`` short rows),
    and the grid's last ``kw - 1`` columns, garbage, are dropped by the epilogue
    (:mod:`minicnn.kernels.onepool`'s unroll path)."""
    target = conv_out if p.pool == 1 else y
    affine = _affine_of(p, tensors, p.c_out)
    c_in, h, w = p.c_in, p.h_in, p.w_in
    c_out, kh, kw = p.c_out, p.kh, p.kw
    top, left = p.top, p.left
    oh, ow = p.conv_h, p.conv_w
    pitch = ow + kw - 1
    size = (oh + kh) * pitch         # one row more than a window reads: the wide grid's end
    wide = oh * pitch
    k = c_in * kh * kw
    padded = fixed[:c_in * size]
    cols = fixed[c_in * size:c_in * size + k * wide]
    sums = fixed[c_in * size + k * wide:c_in * size + (k + c_out) * wide]
    weight = tensors[p.weight]
    zero = np.float32(0)
    for q in range(c_in * size):
        padded[q] = zero
    for s in range(g):
        _pad_sample(x, padded, s, g, c_in, h, w, size, pitch, top, left)
        for c in range(c_in):
            for i in range(kh):
                for j in range(kw):
                    src = padded[c * size + i * pitch + j:c * size + i * pitch + j + wide]
                    dest = cols[((c * kh + i) * kw + j) * wide:((c * kh + i) * kw + j + 1) * wide]
                    for q in range(wide):
                        dest[q] = src[q]
        _gemm(NO_TRANS, NO_TRANS, c_out, wide, k, weight, k, cols, wide, 0.0, sums, wide)
        for co in range(c_out):
            _finish_rows(p, affine, co, s, g, sums[co * wide:(co + 1) * wide], pitch, 0, 1,
                         oh, target, residual)
    if p.pool == 1:
        _max_pool_2x2(conv_out, y, p.c_out, g, p.conv_h, p.conv_w)


@njit(**_JIT)
def conv_blocked_step(p, tensors, x, y, residual, work, conv_out, fixed, packed, g):
    """A stride-1 convolution with few input channels on the wide grid of
    :func:`conv_shifted_step`, one sample at a time, computed in place by register blocks
    (:mod:`minicnn.kernels.direct_blocks`: 4 channels x 24 outputs, each tap a multiply-add of
    three input vectors) instead of an unrolled matrix and a GEMM. ``fixed`` holds the padded
    planes (and a block's worth of slack: the last block reads past the grid, into outputs
    that are dropped) and the sums, ``C_out`` rows of the grid rounded up to whole blocks."""
    target = conv_out if p.pool == 1 else y
    affine = _affine_of(p, tensors, p.c_out)
    c_in, h, w = p.c_in, p.h_in, p.w_in
    c_out, kh, kw = p.c_out, p.kh, p.kw
    top, left = p.top, p.left
    oh, ow = p.conv_h, p.conv_w
    pitch = ow + kw - 1
    size = (oh + kh) * pitch
    wide = oh * pitch
    span = -(-wide // BLOCK_POSITIONS) * BLOCK_POSITIONS
    k = c_in * kh * kw
    padded = fixed[:c_in * size + BLOCK_POSITIONS]
    sums = fixed[c_in * size + BLOCK_POSITIONS:c_in * size + BLOCK_POSITIONS + c_out * span]
    # With a pooling and no residual the epilogue runs over whole grid planes (the plan sizes
    # conv_out for them): 28 rows of 28 values are 28 loops with scalar ends, a grid one.
    wide_pool = p.pool == 1 and residual.shape[0] == 0
    weight = tensors[p.weight]
    zero = np.float32(0)
    for q in range(c_in * size + BLOCK_POSITIONS):
        padded[q] = zero
    i64 = np.int64
    whole = c_out - c_out % BLOCK_CHANNELS
    if (p.pool == 1 and residual.shape[0] == 0 and ow >= 2 * 8
            and (p.activation == RELU or p.activation == IDENTITY)):
        # The usual case after a first conv: epilogue and pooling inside the blocks, straight
        # into y (no unpooled output written, no passes over it), 8 pooled outputs a block;
        # a row that is not whole blocks ends with one overlapping the block before.
        # MNIST CNN's first conv at batch 64, one thread: 1.1 -> 0.6 ms.
        pooled_h, pooled_w = oh // 2, ow // 2
        plane = pooled_h * pooled_w
        blocks = -(-pooled_w // 8)
        pairs = c_out - c_out % POOLED_CHANNELS
        relu = p.activation == RELU
        scale, shift = affine[0], affine[1]
        for s in range(g):
            _pad_sample(x, padded, s, g, c_in, h, w, size, pitch, top, left)
            co = 0
            while co < c_out:          # pairs of channels, then the last one alone
                for i in range(pooled_h):
                    for b in range(blocks):
                        first = min(8 * b, pooled_w - 8)        # the first pooled column
                        args = (padded, i64(2 * i * pitch + 2 * first), i64(c_in), i64(kh),
                                i64(kw), i64(size), i64(pitch), weight, i64(co * k), i64(k),
                                scale, shift, i64(co), y,
                                i64((co * g + s) * plane + i * pooled_w + first),
                                i64(g * plane))
                        if co < pairs:
                            if relu:
                                pooled_2_relu(*args)
                            else:
                                pooled_2_plain(*args)
                        elif relu:
                            pooled_1_relu(*args)
                        else:
                            pooled_1_plain(*args)
                co += POOLED_CHANNELS if co < pairs else 1
        return
    for s in range(g):
        _pad_sample(x, padded, s, g, c_in, h, w, size, pitch, top, left)
        for co in range(0, whole, BLOCK_CHANNELS):
            for q in range(0, span, BLOCK_POSITIONS):
                block_4x24(padded, i64(q), i64(c_in), i64(kh), i64(kw), i64(size),
                           i64(pitch), weight, i64(co * k), i64(k), sums, i64(co * span + q),
                           i64(span))
        for co in range(whole, c_out):
            for q in range(0, span, BLOCK_POSITIONS):
                block_1x24(padded, i64(q), i64(c_in), i64(kh), i64(kw), i64(size),
                           i64(pitch), weight, i64(co * k), i64(k), sums, i64(co * span + q),
                           i64(span))
        if wide_pool:
            # The epilogue over the whole wide grid, one long loop (its garbage columns too),
            # into conv_out laid out on the grid; the pooling below skips those columns.
            for co in range(c_out):
                at = (co * g + s) * wide
                _finish(conv_out[at:at + wide], sums[co * span:co * span + wide],
                        affine[0, co], affine[1, co], residual, p.activation,
                        np.float32(p.slope))
            continue
        for co in range(c_out):
            _finish_rows(p, affine, co, s, g, sums[co * span:co * span + wide], pitch, 0, 1,
                         oh, target, residual)
    if wide_pool:
        _max_pool_2x2_grid(conv_out, y, p.c_out, g, oh, ow, pitch)
    elif p.pool == 1:
        _max_pool_2x2(conv_out, y, p.c_out, g, p.conv_h, p.conv_w)


@njit(**_JIT)
def conv_direct_step(p, tensors, x, y, residual, work, conv_out, fixed, packed, g):
    """A stride-1 grouped convolution (depthwise included) as shifted multiply-adds, on the
    same wide grid as :func:`conv_shifted_step`: each tap is one long multiply-add over a whole
    padded plane (which LLVM vectorises)."""
    target = conv_out if p.pool == 1 else y
    affine = _affine_of(p, tensors, p.c_out)
    padded, plane = work, fixed      # the padded planes; one output plane's sums
    c_in, h, w = p.c_in, p.h_in, p.w_in
    c_out, kh, kw = p.c_out, p.kh, p.kw
    top, left = p.top, p.left
    oh, ow, groups = p.conv_h, p.conv_w, p.groups
    pitch = ow + kw - 1
    size = (oh + kh) * pitch
    wide = oh * pitch
    zero = np.float32(0)
    _pad_planes(x, padded, c_in * g, h, w, top, left, pitch, size)
    weight = tensors[p.weight]
    cin_g, cout_g = c_in // groups, c_out // groups
    acc = plane[:wide]
    for co in range(c_out):
        first_c = (co // cout_g) * cin_g
        for s in range(g):
            for q in range(wide):
                acc[q] = zero
            for c in range(cin_g):
                base = ((first_c + c) * g + s) * size
                for i in range(kh):
                    for j in range(kw):
                        wt = weight[((co * cin_g + c) * kh + i) * kw + j]
                        src = padded[base + i * pitch + j:base + i * pitch + j + wide]
                        for q in range(wide):
                            acc[q] += wt * src[q]
            _finish_rows(p, affine, co, s, g, acc, pitch, 0, 1, oh, target, residual)
    if p.pool == 1:
        _max_pool_2x2(conv_out, y, p.c_out, g, p.conv_h, p.conv_w)


#: Wide-grid tiles per Winograd GEMM (as :data:`minicnn.kernels.winograd.TILES_PER_GROUP`):
#: a group's samples are transformed this many tiles' worth at a time, so that the
#: transformed tiles stay in cache while the 16 GEMMs are long enough.
WINOGRAD_TILES = 196


def winograd_capacity(per_sample: int, c_in: int, c_out: int) -> int:
    """Columns of a row of :func:`conv_winograd_step`'s ``V`` and ``M`` for planes of
    ``per_sample`` wide-grid tiles: a chunk's tiles rounded up to whole register blocks, and
    spread over the L1 cache's sets (:func:`minicnn.kernels.winograd_blocks.spread_columns`).
    The plan computes it once, into the step's ``columns``."""
    chunk = max(1, WINOGRAD_TILES // per_sample)
    return spread_columns(-(-chunk * per_sample // BLOCK_POSITIONS) * BLOCK_POSITIONS, c_in,
                          c_out, 16)


@njit(**_JIT)
def conv_winograd_step(p, tensors, x, y, residual, work, conv_out, fixed, packed, g):
    """Winograd's F(2x2, 3x3) (:mod:`minicnn.kernels.winograd`, whose input and output
    transforms this calls), a few samples at a time: their tiles transformed, 16 GEMMs
    ``M[ξ] = U[ξ] @ V[ξ]``, the output transform, then the epilogue into ``target``."""
    target = conv_out if p.pool == 1 else y
    affine = _affine_of(p, tensors, p.c_out)
    c_in, h, w = p.c_in, p.h_in, p.w_in
    c_out, top, left = p.c_out, p.top, p.left
    oh, ow = p.conv_h, p.conv_w
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    pitch = tw + 1
    per_sample = th * pitch
    chunk = max(1, WINOGRAD_TILES // per_sample)
    capacity = p.columns        # of a row of V and M (winograd_capacity)
    # the transformed filters (kept between calls: refresh_packed); working space: the phases
    # of one plane (or its padded copy, smaller), then the chunk's transformed tiles V,
    # products M, Aᵀ M sums and output rows
    packed_at = p.packed_at + c_out * c_in * 9
    u = packed[packed_at:packed_at + 16 * c_out * c_in]
    at = 0
    phases = fixed[at:at + 4 * (th + 2) * pitch].reshape((4, th + 2, pitch))
    at += 4 * (th + 2) * pitch
    v_flat = fixed[at:at + 16 * c_in * capacity]
    v = v_flat.reshape((16, c_in, capacity))
    at += 16 * c_in * capacity
    m_flat = fixed[at:at + 16 * c_out * capacity]
    m = m_flat.reshape((16, c_out, capacity))
    at += 16 * c_out * capacity
    i64 = np.int64
    first, last = _out_range(p)       # the output channels computed here
    # A 2x2 pooling over even output sizes, with no residual: its windows are the tiles.
    tile_pool = p.pool == 1 and residual.shape[0] == 0 and oh % 2 == 0 and ow % 2 == 0
    sums = fixed[at:at + 8 * capacity].reshape((8, capacity))
    at += 8 * capacity
    flat_image = fixed[at:at + 4 * capacity]
    phase_size = (th + 2) * pitch
    flat_phases = phases.reshape(4 * phase_size)
    for k in range(flat_phases.shape[0]):          # the phases' border cells stay zero
        flat_phases[k] = 0
    # Rows of 8 tiles or more: each plane transformed from a padded copy (in the phases'
    # space, its border zero), 2 * th + 2 rows of 2 * pitch (winograd.PADDED_MIN_TILES)
    padded_rows = tw >= PADDED_MIN_TILES
    padded_pitch = 2 * pitch
    planes = x[:c_in * g * h * w].reshape((c_in, g, h, w))
    zero = np.float32(0)
    for s0 in range(0, g, chunk):
        count = min(chunk, g - s0)
        tiles = count * per_sample
        for c in range(c_in):
            for slot in range(count):
                # _pad_plane and _split_phases read x[n, c]: here (channel, sample) of (C, g,
                # H, W)
                if padded_rows:
                    _pad_plane(planes, c, s0 + slot, top, left, flat_phases, padded_pitch)
                    input_tiles_padded(flat_phases, padded_pitch, th, tw, pitch, v_flat,
                                       c * capacity + slot * per_sample, c_in * capacity)
                else:
                    _split_phases(planes, c, s0 + slot, top, left, phases)
                    input_tiles(flat_phases, phase_size, pitch, per_sample, v_flat,
                                c * capacity + slot * per_sample, c_in * capacity)
        # M[ξ] (C_out, tiles) = U[ξ] (C_out, C_in) @ V[ξ] (C_in, tiles): register blocks of 4
        # channels x 24 tiles over K = C_in (the last block's columns past ``tiles`` are
        # garbage, never read); OpenBLAS on these short, thin products ran at a third of peak
        # M[ξ] (C_out, tiles) = U[ξ] (C_out, C_in) @ V[ξ] (C_in, tiles) for this call's
        # output channels, in register blocks (the last block's columns past ``tiles`` are
        # garbage, never read)
        products(v_flat, u, m_flat, c_in, c_out, capacity, tiles, first, last, 16)
        for co in range(first, last):
            if tile_pool:
                # Each tile is a pooling window: its four outputs finished and pooled in
                # the transform, then each sample's rows of tiles copied into y.
                if p.activation == RELU or p.activation == IDENTITY:
                    # in registers, 8 tiles a block (m's rows hold whole blocks: the lanes
                    # past ``tiles`` are garbage, never read back)
                    for t0 in range(0, tiles, WINOGRAD_BLOCK_TILES):
                        args = (m_flat, i64(co * capacity), i64(c_out * capacity), i64(t0),
                                affine[0, co], affine[1, co], flat_image)
                        if p.activation == RELU:
                            output_pooled_relu(*args)
                        else:
                            output_pooled_plain(*args)
                else:
                    _output_pooled(m, co, tiles, affine[0, co], affine[1, co], p.activation,
                                   np.float32(p.slope), sums, flat_image)
                for slot in range(count):
                    at = ((co * g + s0 + slot) * th) * tw
                    for ty in range(th):
                        source = uint64(slot * per_sample + ty * pitch)
                        dest = uint64(at + ty * tw)
                        for tx in range(uint64(tw)):
                            y[dest + tx] = flat_image[source + tx]
                continue
            for t0 in range(0, tiles, WINOGRAD_BLOCK_TILES):   # in registers, 8 tiles a block
                output_block(m_flat, i64(co * capacity), i64(c_out * capacity), i64(t0), zero,
                             flat_image, i64(2 * capacity))
            # Output row oy of a sample is the transform's row oy % 2, from tile row oy // 2:
            # as two planes of pitch 2 * pitch (even rows, odd rows), each finished like any
            # wide-grid plane.
            for slot in range(count):
                for half in range(2):
                    rows_here = (oh - half + 1) // 2
                    if rows_here == 0:
                        continue
                    _finish_rows(p, affine, co, s0 + slot, g,
                                 flat_image[half * 2 * capacity + 2 * slot * per_sample:],
                                 2 * pitch, half, 2, rows_here, target, residual)
    if p.pool == 1 and not tile_pool:
        plane, pooled = g * oh * ow, g * (oh // 2) * (ow // 2)
        _max_pool_2x2(conv_out[first * plane:], y[first * pooled:], last - first, g, oh, ow)


#: Wide-grid tiles per F(4x4, 3x3) GEMM (:func:`conv_winograd4_step`), as the one-pool
#: forward's (:data:`minicnn.kernels.winograd4.CHUNK_TILES`): fewer than
#: :data:`WINOGRAD_TILES`, since each tile carries 36 transformed values, not 16.
WINOGRAD4_TILES = winograd4.CHUNK_TILES


@njit(**_JIT)
def conv_winograd4_step(p, tensors, x, y, residual, work, conv_out, fixed, packed, g):
    """Winograd's F(4x4, 3x3) (:mod:`minicnn.kernels.winograd4`), a few samples at a time:
    their planes split into 16 phases and every tile transformed, 36 GEMMs ``M[ξ] = U[ξ] @
    V[ξ]``, the output transform, then the epilogue into ``y``. As :func:`conv_winograd_step`,
    with 4x4 output tiles and no pooling (the plan keeps F(2x2, 3x3), which pools inside its
    output transform, where a pooling follows).

    Eight samples at a time where the group has them, with the samples innermost
    (:func:`~minicnn.kernels.winograd4.sample_tiles`: each register block's lanes are 8
    samples' tiles at one position, no wide-grid garbage); the rest one sample a plane on the
    wide grid."""
    affine = _affine_of(p, tensors, p.c_out)
    c_in, c_out = p.c_in, p.c_out
    oh, ow = p.conv_h, p.conv_w
    th, tw = (oh + 3) // 4, (ow + 3) // 4
    pitch = tw + 1
    per_sample = th * pitch
    chunk = max(1, WINOGRAD4_TILES // per_sample)
    capacity = p.columns        # of a row of V and M (winograd4.capacity)
    packed_at = p.packed_at + c_out * c_in * 9
    u = packed[packed_at:packed_at + 36 * c_out * c_in]
    phase_size = (th + 2) * pitch
    at = 0
    n_phases = winograd4.phases_size(th, pitch)
    phases = fixed[at:at + n_phases]
    at += n_phases
    v = fixed[at:at + 36 * c_in * capacity]
    at += 36 * c_in * capacity
    m = fixed[at:at + 36 * c_out * capacity]
    at += 36 * c_out * capacity
    image = fixed[at:at + 16 * capacity]
    i64 = np.int64
    first, last = _out_range(p)       # the output channels computed here
    planes = x[:c_in * g * p.h_in * p.w_in].reshape((c_in, g, p.h_in, p.w_in))
    lanes = winograd4.TILES
    octets = g // lanes if th * tw * lanes <= capacity else 0
    if octets > 0:
        tiles = th * tw * lanes
        for k in range(lanes * winograd4.PHASES * phase_size):   # padding cells stay zero
            phases[k] = 0
        for octet in range(octets):
            s0 = octet * lanes
            for c in range(c_in):
                for slot in range(lanes):
                    winograd4.split_phases(planes[c, s0 + slot], p.top, p.left, phases,
                                           phase_size, pitch, lanes, slot)
                winograd4.sample_tiles(phases, phase_size, th, tw, pitch, v, c * capacity,
                                       c_in * capacity)
            products(v, u, m, c_in, c_out, capacity, tiles, first, last, 36)
            for co in range(first, last):
                winograd4.output_tiles(m, i64(co * capacity), i64(c_out * capacity), tiles,
                                       image, i64(4 * capacity))
                _finish_samples4(p, affine, co, s0, g, image, 4 * capacity, tw, y, residual)
    if octets * lanes == g:
        return
    for k in range(n_phases):         # the phases' padding cells stay zero
        phases[k] = 0
    for s0 in range(octets * lanes, g, chunk):
        count = min(chunk, g - s0)
        tiles = count * per_sample
        for c in range(c_in):
            for slot in range(count):
                winograd4.split_phases(planes[c, s0 + slot], p.top, p.left, phases,
                                       phase_size, pitch, 1, 0)
                winograd4.input_tiles(phases, phase_size, pitch, per_sample, v,
                                      c * capacity + slot * per_sample, c_in * capacity)
        products(v, u, m, c_in, c_out, capacity, tiles, first, last, 36)
        for co in range(first, last):
            winograd4.output_tiles(m, i64(co * capacity), i64(c_out * capacity), tiles, image,
                                   i64(4 * capacity))
            _finish_tiles4(p, affine, co, s0, count, g, image, 4 * capacity, per_sample,
                           pitch, y, residual)


@njit(**_INNER)
def _output_pooled(m, co, count, scale, shift, kind, slope, sums, pooled):
    """For tiles ``t < count`` of channel ``co`` (``m`` is (16, C_out, tiles)): the four
    outputs of ``Aᵀ M A``, each finished (``* scale + shift``, the activation), and their
    maximum, ``pooled[t]``: the 2x2 max pooling whose windows are the tiles (even output
    sizes). The same values as the output transform, the epilogue and :func:`_max_pool_2x2`
    one after another (the same operations on each value, the maximum in the same order), in
    one pass instead of three. ``sums`` (8, tiles) is scratch for ``Aᵀ M``. For the
    activations other than ReLU and identity (those two run in register blocks:
    :func:`~minicnn.kernels.winograd_blocks.output_pooled_relu`)."""
    transform_columns(m, co, count, sums)
    s0, s1, s2, s3 = sums[0], sums[1], sums[2], sums[3]
    r0, r1, r2, r3 = sums[4], sums[5], sums[6], sums[7]
    for t in range(count):
        a = _activate((s0[t] + s1[t] + s2[t]) * scale + shift, kind, slope)
        b = _activate((s1[t] - s2[t] - s3[t]) * scale + shift, kind, slope)
        c = _activate((r0[t] + r1[t] + r2[t]) * scale + shift, kind, slope)
        d = _activate((r1[t] - r2[t] - r3[t]) * scale + shift, kind, slope)
        pooled[t] = max(max(a, b), max(c, d))


@njit(**_JIT)
def pool_step(p, tensors, x, y, residual, work, conv_out, fixed, packed, g):
    """Max or average pooling of ``x (C, g, H, W)`` (any kernel, stride and padding; padding
    is -inf for max, zeros for average with ``count_pad``)."""
    op = p.op
    channels, h, w = p.c_in, p.h_in, p.w_in
    oh, ow = p.h_out, p.w_out
    kh, kw, sh, sw = p.kh, p.kw, p.sh, p.sw
    top, left = p.top, p.left
    for plane in range(channels * g):
        src = x[plane * h * w:(plane + 1) * h * w]
        dst = y[plane * oh * ow:(plane + 1) * oh * ow]
        for oy in range(oh):
            for ox in range(ow):
                y0, x0 = oy * sh - top, ox * sw - left
                if op == MAXPOOL:
                    m = -np.inf
                    for i in range(max(y0, 0), min(y0 + kh, h)):
                        for j in range(max(x0, 0), min(x0 + kw, w)):
                            v = src[i * w + j]
                            if v > m or v != v:
                                m = v
                    dst[oy * ow + ox] = m
                else:
                    total = np.float32(0)
                    count = 0
                    for i in range(max(y0, 0), min(y0 + kh, h)):
                        for j in range(max(x0, 0), min(x0 + kw, w)):
                            total += src[i * w + j]
                            count += 1
                    if p.count_pad == 1:
                        count = (min(y0 + kh, h + top) - y0) * (min(x0 + kw, w + left) - x0)
                    dst[oy * ow + ox] = total / np.float32(count)


@njit(**_JIT)
def adaptive_avg_pool_step(p, tensors, x, y, residual, work, conv_out, fixed, packed, g):
    """Adaptive average pooling: output cell ``i`` averages input rows ``floor(i*H/out)`` to
    ``ceil((i+1)*H/out)`` (PyTorch's bins), likewise columns."""
    channels, h, w = p.c_in, p.h_in, p.w_in
    oh, ow = p.h_out, p.w_out
    for plane in range(channels * g):
        src = x[plane * h * w:(plane + 1) * h * w]
        dst = y[plane * oh * ow:(plane + 1) * oh * ow]
        for oy in range(oh):
            r0, r1 = (oy * h) // oh, -((-(oy + 1) * h) // oh)
            for ox in range(ow):
                c0, c1 = (ox * w) // ow, -((-(ox + 1) * w) // ow)
                total = np.float32(0)
                for i in range(r0, r1):
                    for j in range(c0, c1):
                        total += src[i * w + j]
                dst[oy * ow + ox] = total / np.float32((r1 - r0) * (c1 - c0))


@njit(**_JIT)
def flatten_step(p, tensors, x, y, residual, work, conv_out, fixed, packed, g):
    """``(C, g, H, W)`` -> rows ``(g, C*H*W)``, each sample's features in NCHW order."""
    channels, plane = p.c_in, p.h_in * p.w_in
    features = channels * plane
    for s in range(g):
        for c in range(channels):
            src = x[(c * g + s) * plane:(c * g + s + 1) * plane]
            dst = y[s * features + c * plane:s * features + (c + 1) * plane]
            for p in range(plane):
                dst[p] = src[p]


@njit(fastmath=True, **_INNER)
def _dot(a, b):
    """``sum(a * b)`` in any order (``fastmath``: vector lanes of partial sums)."""
    total = np.float32(0)
    for i in range(a.shape[0]):
        total += a[i] * b[i]
    return total


@njit(fastmath=True, **_INNER)
def _dot4(a, b0, b1, b2, b3):
    """``(sum(a * b0), ..., sum(a * b3))``, in any order."""
    t0 = t1 = t2 = t3 = np.float32(0)
    for i in range(a.shape[0]):
        v = a[i]
        t0 += v * b0[i]
        t1 += v * b1[i]
        t2 += v * b2[i]
        t3 += v * b3[i]
    return t0, t1, t2, t3


#: Below this many rows a linear layer is dot products, not a GEMM: OpenBLAS packs the whole
#: weight matrix on every call, which costs more than the arithmetic for a few rows
#: (measured on the MNIST CNN's 3136 -> 128 at 4 rows: the GEMM's packing dominated).
LINEAR_GEMM_MIN_ROWS = 16


@njit(**_JIT)
def linear_step(p, tensors, x, y, residual, work, conv_out, fixed, packed, g):
    """Rows ``(g, in) @ weight.T`` -> ``(g, out)``, then bias / batch norm and activation
    (output features ``[first, last)`` of :func:`_out_range`: all, or a thread's part)."""
    f_in, f_out = p.c_in, p.c_out
    first, last = _out_range(p)
    weight = tensors[p.weight]
    if g >= LINEAR_GEMM_MIN_ROWS:
        _gemm(NO_TRANS, TRANS, g, last - first, f_in, x, f_in, weight[first * f_in:], f_in,
              0.0, y[first:], f_out)
    else:   # four weight rows at a time against every row: each input value loaded serves
        fours = last - (last - first) % 4   # four multiply-adds (the weights are read once)
        for o in range(first, fours, 4):
            w0, w1 = weight[o * f_in:(o + 1) * f_in], weight[(o + 1) * f_in:(o + 2) * f_in]
            w2, w3 = weight[(o + 2) * f_in:(o + 3) * f_in], weight[(o + 3) * f_in:(o + 4) * f_in]
            for s in range(g):
                d0, d1, d2, d3 = _dot4(x[s * f_in:(s + 1) * f_in], w0, w1, w2, w3)
                y[s * f_out + o], y[s * f_out + o + 1] = d0, d1
                y[s * f_out + o + 2], y[s * f_out + o + 3] = d2, d3
        for o in range(fours, last):
            weight_row = weight[o * f_in:(o + 1) * f_in]
            for s in range(g):
                y[s * f_out + o] = _dot(x[s * f_in:(s + 1) * f_in], weight_row)
    kind, slope = p.activation, np.float32(p.slope)
    if p.bias != NONE or p.bn_mean != NONE:
        affine = _affine_of(p, tensors, f_out)
        scale, shift = affine[0], affine[1]
        for s in range(g):
            row = y[s * f_out:(s + 1) * f_out]
            for o in range(first, last):
                row[o] = row[o] * scale[o] + shift[o]
    if first == 0 and last == f_out:
        out = y[:g * f_out]
        _finish(out, out, np.float32(1), np.float32(0), y[:0], kind, slope)
    else:
        for s in range(g):
            out = y[s * f_out + first:s * f_out + last]
            _finish(out, out, np.float32(1), np.float32(0), y[:0], kind, slope)


@njit(**_JIT)
def affine_step(p, tensors, x, y, residual, work, conv_out, fixed, packed, g):
    """A batch norm and/or an activation on its own, per channel (or feature), either layout."""
    channels, plane = p.c_in, p.h_in * p.w_in
    kind, slope = p.activation, np.float32(p.slope)
    rows = p.rows == 1
    affine = _affine_of(p, tensors, channels)
    for c in range(channels):
        scale, shift = affine[0, c], affine[1, c]
        for s in range(g):
            for p in range(plane):
                index = s * channels + c if rows else (c * g + s) * plane + p
                y[index] = _activate(x[index] * scale + shift, kind, slope)


@njit(**_JIT)
def softmax_step(p, tensors, x, y, residual, work, conv_out, fixed, packed, g):
    classes = p.c_in
    for s in range(g):
        row, out = x[s * classes:(s + 1) * classes], y[s * classes:(s + 1) * classes]
        top = row[0]
        for i in range(1, classes):
            top = max(top, row[i])
        total = np.float32(0)
        for i in range(classes):
            out[i] = np.exp(row[i] - top)
            total += out[i]
        for i in range(classes):
            out[i] = out[i] / total


# --------------------------------------------------------------------------------------------
# A group's samples in and out of a thread's buffers
# --------------------------------------------------------------------------------------------
@njit(**_INNER)
def _load_group(x, buffer, first, g):
    """Samples ``[first, first + g)`` of ``x (N, C, H, W)`` into ``buffer`` as ``(C, g, H, W)``."""
    channels, h, w = x.shape[1], x.shape[2], x.shape[3]
    for s in range(g):
        for c in range(channels):
            dst = buffer[(c * g + s) * h * w:(c * g + s + 1) * h * w]
            for i in range(h):
                for j in range(w):
                    dst[i * w + j] = x[first + s, c, i, j]


@njit(**_INNER)
def _store_group(buffer, out, first, g, channels, plane, rows):
    """The last step's output for samples ``[first, first + g)`` into ``out (N, C*H*W)``, from
    rows ``(g, C)`` or from ``(C, g, H, W)``."""
    for s in range(g):
        for c in range(channels):
            for p in range(plane):
                index = s * channels + c if rows else (c * g + s) * plane + p
                out[first + s, c * plane + p] = buffer[index]


#: The step kernels, by the index a step's ``kernel`` field holds (:func:`kernel_for`).
STEP_KERNELS = (conv_gemm_step, conv_shifted_step, conv_direct_step, conv_winograd_step,
                conv_blocked_step, pool_step, adaptive_avg_pool_step, flatten_step, linear_step,
                affine_step, softmax_step, conv_winograd4_step)
(KERNEL_CONV_GEMM, KERNEL_CONV_SHIFTED, KERNEL_CONV_DIRECT, KERNEL_CONV_WINOGRAD,
 KERNEL_CONV_BLOCKED, KERNEL_POOL, KERNEL_ADAPTIVE_AVGPOOL, KERNEL_FLATTEN, KERNEL_LINEAR,
 KERNEL_AFFINE, KERNEL_SOFTMAX, KERNEL_CONV_WINOGRAD4) = range(len(STEP_KERNELS))


def kernel_for(op: int, algorithm: int, sh: int, sw: int) -> int:
    """The index in :data:`STEP_KERNELS` of the kernel that runs a step."""
    if op == CONV:
        if algorithm == WINOGRAD:
            return KERNEL_CONV_WINOGRAD
        if algorithm == WINOGRAD4:
            return KERNEL_CONV_WINOGRAD4
        if algorithm == DIRECT:
            return KERNEL_CONV_DIRECT
        if algorithm == BLOCKED:
            return KERNEL_CONV_BLOCKED
        return KERNEL_CONV_SHIFTED if sh == 1 and sw == 1 else KERNEL_CONV_GEMM
    return {MAXPOOL: KERNEL_POOL, AVGPOOL: KERNEL_POOL,
            ADAPTIVE_AVGPOOL: KERNEL_ADAPTIVE_AVGPOOL, FLATTEN: KERNEL_FLATTEN,
            LINEAR: KERNEL_LINEAR, AFFINE: KERNEL_AFFINE, ACTIVATION: KERNEL_AFFINE,
            SOFTMAX: KERNEL_SOFTMAX}[op]


#: What every step kernel is, as a Numba type: a function of the step's record, the typed list
#: of tensors, six float32 vectors (``x, y, residual, work, conv_out, fixed``), ``packed`` and
#: the group's size.
_VECTOR = types.Array(types.float32, 1, "C")
STEP_KERNEL_TYPE = types.FunctionType(types.void(
    numba.from_dtype(STEP_DTYPE), types.ListType(_VECTOR), *(_VECTOR,) * 6, _VECTOR,
    types.intp))


@intrinsic
def _step_kernel_at(typingctx, address):
    """The step kernel compiled at ``address`` (an ``int64`` from :meth:`Entries.kernels`), as
    a function value compiled code can call.

    Why addresses and not function objects: Numba passes a function object from Python by
    asking it, through Python calls, for its address on *every* call (about 3 us each: 30 us
    for a table of ten, more than half of LeNet-5's batch-of-one time). The addresses are
    looked up once per plan; this builds what Numba's own unboxing would (a first-class
    function value whose C entry point is ``address``; no Python object, no Numba-ABI
    entry, so the call goes straight to ``address``)."""
    def codegen(context, builder, signature, args):
        function = cgutils.create_struct_proxy(STEP_KERNEL_TYPE)(context, builder)
        function.c_addr = builder.inttoptr(args[0], cgutils.voidptr_t)
        function.py_addr = cgutils.voidptr_t(None)
        function.jit_addr = cgutils.voidptr_t(None)
        return function._getvalue()

    return STEP_KERNEL_TYPE(types.int64), codegen


# --------------------------------------------------------------------------------------------
# A thread's groups and rows of the batch, and the entries
# --------------------------------------------------------------------------------------------
#: What a call of :func:`run_thread` does (its ``phase``): the spatial steps on the groups it
#: claims; the row steps on its share of the batch's rows; or both, one after the other (a
#: call on one thread).
GROUPS, ROWS, WHOLE = range(3)


@njit(**_JIT)
def run_thread(program, kernels, tensors, arena, x, out, scratch, packed, claims, phase,
               thread, n_threads):
    """Thread ``thread`` of ``n_threads``: the batch through every step of ``program`` (see
    :class:`Arena` for the order), each step by its step kernel, whose address is
    ``kernels[p.kernel]`` (:meth:`Entries.kernels`); outputs into ``out (N, features)``.

    Phase :data:`GROUPS`: the batch is cut into ``arena.groups`` groups, group ``k`` being
    samples ``[k*N // groups, (k+1)*N // groups)``, which the threads claim one at a time
    (:mod:`~minicnn.kernels.claims`, on ``claims[0]``, which the caller sets to 0): a thread
    slowed by another process on its core takes fewer of them instead of holding the call
    up. Each group goes through the spatial steps while its activations are in this thread's
    cache; a flatten writes its rows to their place in the batch's row buffers (those of
    ``scratch[n_threads]``, a row after the threads' own). Phase :data:`ROWS` (after every
    thread's groups, a parallel region later): the row steps on this thread's fixed share of
    the rows, so that a linear layer's weights are read once per thread and call. Neither
    phase's result depends on which thread took which group: a call gives the same bits
    however its groups were claimed."""
    n = x.shape[0]
    groups = arena.groups
    own = scratch[thread]
    size, rows_size = arena.buffer_size, arena.rows_size
    cols_at = arena.buffers * size
    cols = own[cols_at:cols_at + arena.cols_size]
    conv_out_at = cols_at + arena.cols_size
    conv_out = own[conv_out_at:conv_out_at + arena.conv_out_size]
    rows_at = conv_out_at + arena.conv_out_size
    fixed_at = rows_at + arena.buffers * rows_size
    fixed = own[fixed_at:fixed_at + arena.fixed_size]
    batch_rows = scratch[n_threads]     # the batch's row buffers (after the threads' own)
    empty = own[:0]
    steps = program.shape[0]
    final = program[steps - 1]
    if phase != ROWS:
        while True:
            k = claim(claims, 0)
            if k >= groups:
                break
            start, stop = k * n // groups, (k + 1) * n // groups
            g = stop - start
            _load_group(x, own[:size], start, g)
            for step in range(arena.rows_from):
                p = program[step]
                src = own[p.src * size:(p.src + 1) * size]
                if p.op == FLATTEN:       # into the batch's row buffer, at this group's rows
                    at = rows_at + p.dst * rows_size
                    dst = batch_rows[at + start * p.c_out:at + rows_size]
                else:
                    dst = own[p.dst * size:(p.dst + 1) * size]
                residual = empty
                if p.residual != NONE:
                    residual = own[p.residual * size:(p.residual + 1) * size]
                kernel = _step_kernel_at(kernels[p.kernel])
                kernel(p, tensors, src, dst, residual, cols, conv_out, fixed, packed, g)
            if final.rows == 0:
                _store_group(own[final.dst * size:(final.dst + 1) * size], out, start, g,
                             final.c_out, final.h_out * final.w_out, False)
    first, last = thread * n // n_threads, (thread + 1) * n // n_threads
    if phase != GROUPS and final.rows == 1 and last > first:
        # The first row step reads the share's rows from the batch's; from there on every
        # step reads and writes this thread's own row buffers (the steps' row lengths
        # differ: in a buffer both threads wrote, one's rows of 10 features would land on
        # the other's rows of 3136).
        source = batch_rows
        src_at = rows_at + program[arena.rows_from - 1].dst * rows_size + first * (
            program[arena.rows_from - 1].c_out)
        for step in range(arena.rows_from, steps):
            p = program[step]
            dst_at = rows_at + p.dst * rows_size
            kernel = _step_kernel_at(kernels[p.kernel])
            kernel(p, tensors, source[src_at:src_at + rows_size], own[dst_at:dst_at + rows_size],
                   empty, cols, conv_out, fixed, packed, last - first)
            source, src_at = own, dst_at
        _store_group(source[src_at:src_at + rows_size], out, first, last - first,
                     final.c_out, 1, True)


@njit(**_INNER)
def _equal(a, b):
    """Whether ``a == b`` everywhere (a NaN is never equal). Counted without a branch per
    element, which LLVM vectorises (an early exit on the first difference does not: 12 us
    against about 2 for the MNIST CNN's 18 432 filter values, on every call)."""
    differences = 0
    for k in range(a.shape[0]):
        differences += a[k] != b[k]
    return differences == 0


@njit(**_JIT)
def refresh_packed(program, tensors, packed):
    """Bring what the plan keeps between calls up to date with the live weights: for each
    Winograd step, ``packed[packed_at:]`` holds a copy of the filters it was made from, then
    their transform ``U`` (16 x C_out x C_in; 36 x C_out x C_in for F(4x4, 3x3)). Comparing
    the copy with the live filters is a few microseconds; transforming them again, 80 us on
    MNIST's second layer, happens only when they changed (an optimiser step, an edit,
    ``load_state_dict``). A NaN in a filter never compares equal, so such filters are simply
    transformed on every call."""
    for step in range(program.shape[0]):
        p = program[step]
        if p.packed_at == NONE:
            continue
        c_out, c_in = p.c_out, p.c_in
        size = c_out * c_in * 9
        at = p.packed_at
        copy = packed[at:at + size]
        weight = tensors[p.weight]
        if _equal(copy, weight[:size]):
            continue
        for k in range(size):
            copy[k] = weight[k]
        if p.algorithm == WINOGRAD4:
            winograd4.filters_into(weight, c_out, c_in,
                                   packed[at + size:at + size + 36 * c_out * c_in])
        else:
            filters_into(weight, c_out, c_in, packed[at + size:at + size + 16 * c_out * c_in])


def _run_threads(thread_kernel, program, kernels, tensors, arena, x, out, scratch, packed,
                 claims, n_threads):
    """:func:`run_thread` on ``n_threads`` threads: one parallel region for the groups, and
    where the program has row steps a second one for them (its start is the barrier: a share
    of rows may come from any thread's groups). ``thread_kernel`` is :func:`run_thread` as a
    function pointer (:class:`Entries`): called directly, its code would be compiled again
    inside these loops (2.5 s more of a cold start, against 3.5 us a call to pass the
    pointer, on calls of two samples or more)."""
    for thread in prange(n_threads):
        thread_kernel(program, kernels, tensors, arena, x, out, scratch, packed, claims,
                      GROUPS, np.intp(thread), n_threads)
    if program[program.shape[0] - 1].rows == 1:
        for thread in prange(n_threads):
            thread_kernel(program, kernels, tensors, arena, x, out, scratch, packed, claims,
                          ROWS, np.intp(thread), n_threads)


# No loop fusion: Numba sees no dependency between the two loops (the calls go through a
# pointer), and fused they would lose the barrier the second one needs.
_run_threads_jit = njit(parallel={"fusion": False}, **_JIT)(_run_threads)


#: A step of a batch of one is split over threads (each computing a part of its output
#: channels or features, :func:`run_split`) from this many multiply-adds: the parallel region
#: it then runs in costs about 3.5 us to start and join on a 2-core AMD EPYC, more than half
#: of what splitting a smaller step saves. (The MNIST CNN's second conv, 3.6 M, and first
#: linear layer, 0.4 M, are split; nothing of LeNet-5's.)
SPLIT_MIN_MACS = 300_000
#: The step kernels that take a part of their outputs (:func:`_out_range`).
SPLIT_KERNELS = (KERNEL_CONV_WINOGRAD, KERNEL_CONV_WINOGRAD4, KERNEL_LINEAR)


def split_parts(program: np.ndarray, n_threads: int) -> np.ndarray:
    """Each thread's copy of ``program`` for a batch of one split over ``n_threads``
    (:func:`run_split`), ``(n_threads, steps)``: on each step to split (a kernel of
    :data:`SPLIT_KERNELS` with at least :data:`SPLIT_MIN_MACS` multiply-adds), thread ``t``'s
    ``[out_first, out_last)`` is its part of the outputs, whole register blocks of 4
    channels each (possibly none); the other steps keep ``out_last`` :data:`NONE` (run by
    thread 0 alone). No step to split: every ``out_last`` is :data:`NONE`, and
    :func:`run_split` is not worth calling."""
    parts = np.repeat(program[None, :], n_threads, axis=0)
    for step, p in enumerate(program):
        if p["kernel"] not in SPLIT_KERNELS:
            continue
        macs = int(p["c_in"]) * int(p["c_out"])
        if p["kernel"] in (KERNEL_CONV_WINOGRAD, KERNEL_CONV_WINOGRAD4):
            macs *= 9 * int(p["conv_h"]) * int(p["conv_w"])
        if macs < SPLIT_MIN_MACS:
            continue
        blocks = -(-int(p["c_out"]) // BLOCK_CHANNELS)
        bounds = [min(int(p["c_out"]), BLOCK_CHANNELS * (blocks * t // n_threads))
                  for t in range(n_threads + 1)]
        for t in range(n_threads):
            parts[t, step]["out_first"], parts[t, step]["out_last"] = bounds[t], bounds[t + 1]
    return parts


def calls_blas(program: np.ndarray) -> bool:
    """Whether a step of ``program`` may call BLAS (a convolution as a GEMM; a linear layer
    calls it only from :data:`LINEAR_GEMM_MIN_ROWS` rows, never in a batch of one)."""
    return bool(np.isin(program["kernel"], (KERNEL_CONV_GEMM, KERNEL_CONV_SHIFTED)).any())


@njit(parallel=True, **_JIT)
def run_split(program, parts, kernels, tensors, arena, x, out, scratch, packed, n_threads):
    """A batch of one through every step of ``program``, on thread 0's buffers; each step that
    ``parts`` splits (``parts[0, step].out_last`` not :data:`NONE`, :func:`split_parts`) in a
    parallel region where thread ``t`` computes its part of the outputs with its own working
    space (``scratch[t]``), the others on this thread alone. The region's end is the barrier: the
    next step reads the whole output."""
    row = scratch[0]
    size, rows_size = arena.buffer_size, arena.rows_size
    cols_at = arena.buffers * size
    conv_out_at = cols_at + arena.cols_size
    rows_at = conv_out_at + arena.conv_out_size
    fixed_at = rows_at + arena.buffers * rows_size
    empty = row[:0]
    steps = program.shape[0]
    final = program[steps - 1]
    _load_group(x, row[:size], 0, 1)
    for step in range(steps):
        p = program[step]
        residual = empty
        if step < arena.rows_from:
            src_at = p.src * size
            if p.op == FLATTEN:
                dst_at, dst_size = rows_at + p.dst * rows_size, rows_size
            else:
                dst_at, dst_size = p.dst * size, size
            if p.residual != NONE:
                residual = row[p.residual * size:(p.residual + 1) * size]
            src = row[src_at:src_at + size]
        else:
            src = row[rows_at + p.src * rows_size:rows_at + (p.src + 1) * rows_size]
            dst_at, dst_size = rows_at + p.dst * rows_size, rows_size
        dst = row[dst_at:dst_at + dst_size]
        if parts[0, step].out_last != NONE:
            # Only arrays and ints cross into the region (Numba cannot pass a record there).
            address = kernels[p.kernel]
            cols_size, conv_out_size = arena.cols_size, arena.conv_out_size
            fixed_size = arena.fixed_size
            for t in prange(n_threads):
                own = scratch[t]
                kernel = _step_kernel_at(address)
                kernel(parts[t, step], tensors, src, dst, residual,
                       own[cols_at:cols_at + cols_size],
                       own[conv_out_at:conv_out_at + conv_out_size],
                       own[fixed_at:fixed_at + fixed_size], packed, 1)
        else:
            kernel = _step_kernel_at(kernels[p.kernel])
            kernel(p, tensors, src, dst, residual, row[cols_at:cols_at + arena.cols_size],
                   row[conv_out_at:conv_out_at + arena.conv_out_size],
                   row[fixed_at:fixed_at + arena.fixed_size], packed, 1)
    if final.rows == 0:
        _store_group(row[final.dst * size:(final.dst + 1) * size], out, 0, 1, final.c_out,
                     final.h_out * final.w_out, False)
    else:
        _store_group(row[rows_at + final.dst * rows_size:rows_at + (final.dst + 1) * rows_size],
                     out, 0, 1, final.c_out, 1, True)


@njit(**_JIT)
def _no_step(p, tensors, x, y, residual, work, conv_out, fixed, packed, g):
    """Stands in the kernel table for the step kernels a program does not use (never called)."""


def argument_types() -> tuple:
    """The Numba types of what :func:`minicnn.inference.forward` passes the entries:
    ``(program, tensors, arena, x, out, scratch, packed)`` (a :data:`STEP_DTYPE` array, a
    typed list of float32 vectors, an :class:`Arena`, C-contiguous float32 ``x (N, C, H, W)``,
    ``out (N, features)``, ``scratch (threads, size)`` and ``packed``)."""
    return (numba.typeof(np.zeros(1, dtype=STEP_DTYPE)), types.ListType(_VECTOR),
            numba.typeof(Arena(*(0,) * len(Arena._fields))),
            types.Array(types.float32, 4, "C"), types.Array(types.float32, 2, "C"),
            types.Array(types.float32, 2, "C"), _VECTOR)


def entry_signatures(arg_types: tuple) -> dict:
    """Each compiled unit's argument types, by its name in this module, for entries taking
    ``arg_types`` (:func:`argument_types`'s order): the step kernels (and :func:`_no_step`),
    :func:`refresh_packed`, :func:`run_thread`, its parallel loop ``_run_threads_jit`` and
    :func:`run_split`."""
    program_t = arg_types[0]
    table_t = types.Array(types.int64, 1, "C")
    claims_t = types.Array(types.int64, 1, "C")
    thread_args = (program_t, table_t) + arg_types[1:] + (claims_t, types.intp, types.intp,
                                                           types.intp)
    signatures = {kernel.__name__: STEP_KERNEL_TYPE.signature.args
                  for kernel in STEP_KERNELS + (_no_step,)}
    signatures.update(
        refresh_packed=(program_t, arg_types[1], arg_types[6]),
        run_thread=thread_args,
        _run_threads_jit=((types.FunctionType(types.void(*thread_args)),) + thread_args[:-3]
                          + (types.intp,)),
        run_split=((program_t, types.Array(program_t.dtype, 2, "C"), table_t) + arg_types[1:]
                   + (types.intp,)))
    return signatures


def canonical_signatures() -> dict:
    """:func:`entry_signatures` for :func:`argument_types` (what a compile worker builds,
    :mod:`.parallel_compile`)."""
    return entry_signatures(argument_types())


#: Seconds each unit takes to compile with an empty cache, alone in a new process, on a 2-core
#: AMD EPYC (Zen 3, AVX2): how :mod:`.parallel_compile` shares a cold start's compiling out.
COMPILE_SECONDS = {
    "conv_winograd_step": 6.2, "conv_winograd4_step": 5.2, "conv_blocked_step": 3.6,
    "conv_shifted_step": 2.6, "conv_gemm_step": 3.8, "conv_direct_step": 2.5,
    "linear_step": 1.9, "pool_step": 0.7, "adaptive_avg_pool_step": 0.5, "flatten_step": 0.4,
    "affine_step": 1.1,
    "softmax_step": 0.5, "_no_step": 0.2, "refresh_packed": 1.0, "run_thread": 1.4,
    "_run_threads_jit": 0.7, "run_split": 1.7}


class Entries:
    """A network's compiled entry points, for one set of argument types (:func:`entries`),
    called without Numba's per-call type dispatch. Compiled (or loaded from Numba's cache) on
    first use, all that a call needs at once (:mod:`.parallel_compile`: on several cores where
    the cache is empty), so that a first call compiles only what its network needs.

    Attributes (after :meth:`kernels`)
    ----------------------------------
    refresh : ``(program, tensors, packed)``, :func:`refresh_packed`.
    one_thread : ``(program, kernels, tensors, arena, x, out, scratch, packed, claims,
        WHOLE, 0, 1)``, :func:`run_thread`.
    threads : ``(thread_pointer, program, kernels, ..., packed, claims, n_threads)``, running
        :func:`run_thread` on ``n_threads`` threads.
    thread_pointer : :func:`run_thread` as a function pointer, for ``threads``.
    """

    def __init__(self, arg_types: tuple):
        self.signatures = entry_signatures(arg_types)
        self.refresh = self.one_thread = self.threads = self.thread_pointer = None
        self._addresses: dict = {}
        self._split = None

    def kernels(self, program: np.ndarray, split: bool = False) -> np.ndarray:
        """The table of step kernel addresses to pass with ``program``: those it uses, and
        :func:`_no_step` in the others' places. Compiles (or loads) them, the entries
        if not yet done, and :func:`run_split` where ``split`` (a batch of one on several
        threads will run), together."""
        used = set(program["kernel"].tolist())
        wanted = [kernel if index in used else _no_step
                  for index, kernel in enumerate(STEP_KERNELS)]
        names = {kernel.__name__ for kernel in wanted if kernel not in self._addresses}
        if self.refresh is None:
            names |= {"refresh_packed", "run_thread", "_run_threads_jit"}
        if split and self._split is None:
            names.add("run_split")
        if names:
            parallel_compile.compile_units(__name__, {name: self.signatures[name]
                                                      for name in names}, COMPILE_SECONDS)
        for kernel in wanted:
            if kernel not in self._addresses:
                compiled = kernel.overloads[self.signatures[kernel.__name__]]
                self._addresses[kernel] = CompileResultWAP(compiled).__wrapper_address__()
        if self.refresh is None:
            self.refresh = refresh_packed.overloads[self.signatures["refresh_packed"]].entry_point
            compiled = run_thread.overloads[self.signatures["run_thread"]]
            self.one_thread, self.thread_pointer = compiled.entry_point, CompileResultWAP(compiled)
            self.threads = _run_threads_jit.overloads[
                self.signatures["_run_threads_jit"]].entry_point
        return np.array([self._addresses[kernel] for kernel in wanted], dtype=np.int64)

    def split(self):
        """:func:`run_split`'s entry point (``(program, parts, kernels, tensors, arena, x,
        out, scratch, packed, n_threads)``), compiled on first use: only a batch of one on
        several threads needs it."""
        if self._split is None:     # (looking the types up in overloads on every call: ~us)
            args = self.signatures["run_split"]
            if args not in run_split.overloads:
                parallel_compile.compile_units(__name__, {"run_split": args})
            self._split = run_split.overloads[args].entry_point
        return self._split


def entries(arg_types: tuple) -> Entries:
    """The entry points of a network for arguments of these types: ``(program, tensors,
    arena, x, out, scratch, packed)`` (:func:`argument_types`), compiled on first use."""
    program_t, tensors_t = arg_types[0], arg_types[1]
    step_args = STEP_KERNEL_TYPE.signature.args
    if (program_t.dtype, tensors_t, arg_types[6]) != (step_args[0], step_args[1], step_args[8]):
        raise TypeError(f"network kernels take a STEP_DTYPE program, a typed list of float32 "
                        f"vectors and a float32 vector, not {arg_types}")
    return Entries(arg_types)
