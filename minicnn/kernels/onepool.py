"""One-pool convolution: a whole layer is one parallel loop over the batch.

The relay design (Numba unrolls, OpenBLAS multiplies with its own threads, Numba folds back)
hands work between two thread pools several times per layer, and OpenBLAS's workers keep
spinning after each GEMM, so the next Numba loop finds no free core. Here each of Numba's
threads takes a contiguous chunk of samples and does *everything* for them -- pad, unroll,
multiply with a single-threaded GEMM called from compiled code (:mod:`minicnn.kernels.blas`),
add the bias -- so there is one pool and one wake-up per layer. Backward is the same loop: each
thread accumulates its own partial weight gradient (no write is shared, so no locks and a
deterministic sum for a given thread count) and scatters its own samples' input gradient;
the partials are added at the end.

Two ways to feed the GEMM, both for stride 1, both on a *wide grid*: output ``(oh, ow)`` is
numbered ``q = oh * pitch + ow``, where ``pitch`` is the width of the zero-padded rows, so the
input pixel that tap ``(i, j)`` reads for output ``q`` sits at ``q + i*dh*pitch + j*dw`` plus a
fixed offset: every tap is a *contiguous shift* of the padded input.

- **shift** (many input channels): no unrolled matrix at all. A thread stacks a group of its
  samples, per channel, into one zero-padded image whose padding rows and columns are shared
  between neighbours (the *stacked layout*:
  :func:`~minicnn.kernels.contracts.with_stacked_layout`); for each tap the ``(C_in, span)``
  matrix of shifted inputs *is* a strided view of that buffer, and ``Y += W_tap @ X_tap`` is
  one GEMM for the whole group: ``kH*kW`` GEMMs with ``K = C_in``.
- **unroll** (few input channels, where ``K = C_in`` would starve the GEMM): copy the taps of
  one padded sample into a ``(C_in*kH*kW, L)`` matrix, one contiguous row copy per tap, then
  one GEMM.

The grid positions past ``W_out`` in a row (and between stacked samples) are garbage: windows
that wrap into the padding of the next row. The output pass skips them, and backward keeps them
zero in ``dy`` so they add nothing.

Strided convolutions unroll onto the ordinary ``(H_out, W_out)`` grid. Depthwise and grouped
convolutions, and dtypes without an in-kernel GEMM, stay with :mod:`minicnn.kernels.numba_backend`.

Every chunk kernel here is called as ``chunk(args, plan, thread, n_threads)``
(:mod:`minicnn.kernels.parallel`): ``args`` is a :class:`ConvForwardArgs` or
:class:`ConvBackwardArgs` (the arrays, flags and function pointers, by name), ``plan`` the
layer's :class:`~minicnn.kernels.contracts.ConvPlan` (every size, by name: ``plan.kh``,
``plan.pitch``), computed once per call by :mod:`minicnn.kernels.contracts`, which the
Winograd and depthwise kernels read too. Forward returns a :class:`ConvContext` for backward.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, types

from . import blas, parallel, pointwise, weight_grad, winograd, winograd4
from .blas import gemm as _gemm
from .contracts import (PLAIN, RELU, RELU_MAXPOOL, RELU_MAXPOOL_VALUES,  # noqa: F401
                        ConvPlan, conv_plan, with_stacked_layout)
from .maxpool2x2 import max_pool_plane, pool_scratch
from . import threads as _threads  # also chooses Numba's threading layer before first use
from .parallel import share
from .threads import threads_for

_JIT = dict(cache=True, nogil=True)

#: The shift path needs enough input channels to make ``K = C_in`` worth a GEMM call; below
#: this the unroll path (``K = C_in * kH * kW``) wins. Measured forward + backward, 1 thread,
#: batch 64, 3x3 'same' at 14x14, with OpenBLAS's AVX-512 kernels: 8 channels a tie (1.46 ms
#: each way), 12 shift (1.91 against 2.09 ms), 16 shift (2.59 against 3.10); with the Haswell
#: kernels 8 unroll (2.30 against 2.45), 12 a tie, 16 shift (4.45 against 4.68).
SHIFT_MIN_CHANNELS = 12

#: ...and a stacked layout that computes few wasted grid positions: a 'valid' convolution
#: stacks each sample's ``kH - 1`` rows and ``kW - 1`` columns of no output (LeNet's 5x5 on
#: 14x14: 196 positions per 100 outputs), where the unroll path wastes only the columns.
#: Shift runs where grid positions per sample are at most this many times its outputs:
#: measured, 5x5 'valid' (1.96x) loses to unroll at every channel count tried (12-64: 2.0
#: against 2.2 ms at 12, 9.3 against 11.3 at 32), 7x7 'same' (1.47x) wins at 16 (8.4
#: against 11.4 ms), 5x5 'same' (1.31x) is a tie at 64.
SHIFT_MAX_GRID_WASTE = 1.5

#: Samples per GEMM on the shift path: enough to make the GEMMs long, few enough that a
#: thread's buffers stay in its L2 cache. Measured forward + backward, batch 64, with the
#: AVX-512 kernels: MNIST conv2 (32->64 3x3 @14) 3.97 ms at 2 threads with 2 samples, 4.54
#: with 4 or 8; 16->16 @32 3.28 against 4.03; CIFAR's 64->64 and 128->128 and a 1x1 layer
#: within 2 %; the Haswell kernels within 2 % for every group size.
SHIFT_GROUP = 2

#: Grid positions per weight-gradient GEMM on the shift path (see :func:`_unroll_slab`):
#: enough for a long inner dimension, few enough that the unrolled slab, ``kH*kW*C_in`` rows
#: of this length, stays in cache. Measured on MNIST conv2 (32->64 3x3), the copies and GEMMs
#: alone at 1 thread: 128 and 256 equally fast, 512 and 1024 10-25 % slower; whole layers at 2
#: threads: 128-512 within the noise.
WEIGHT_GRAD_SLAB = 256

#: Forward passes of 3x3, stride-1, undilated convolutions on the shift path with at least
#: this many input channels run Winograd's F(2x2, 3x3) (:mod:`minicnn.kernels.winograd`:
#: 16 GEMMs with K = C_in on transformed 4x4 tiles, 2.25x fewer multiplies). Measured
#: forward at 1 thread, batch 64, OpenBLAS's AVX-512 kernels on a Zen 4 core: 16->16 at
#: 28x28 a tie (2.8 ms each way), MNIST conv2 32->64 at 14x14 5.4 -> 4.0 ms, CIFAR 64->64 at
#: 32x32 53 -> 34 ms, 128->128 at 16x16 53 -> 32 ms. With the products in register blocks
#: (:mod:`minicnn.kernels.winograd_blocks`) 16 channels pay too: ResNet-20's training step
#: (16-channel stage: forward, and the input gradient of layers with 16 outputs) on a 2-core
#: AVX2 EPYC, batch 64, 223 -> 214 ms at 2 threads, 353 -> 336 at 1 (32 before).
WINOGRAD_MIN_CHANNELS = 16

#: Switch the Winograd forward off (``False``) to time the shift path's forward instead; the
#: results agree to float32 rounding, not bit for bit (tutorial 09 compares them).
USE_WINOGRAD = True
#: Where Winograd runs, F(4x4, 3x3) where :func:`_winograd4_applies` (tests set it to False to
#: compare with F(2x2, 3x3)).
USE_WINOGRAD4 = True

# What the output pass does after adding the bias (``PLAIN``, ``RELU``, ``RELU_MAXPOOL``,
# ``RELU_MAXPOOL_VALUES``: :mod:`minicnn.kernels.contracts`, imported above, so that
# ``onepool.RELU`` still names them): nothing, a ReLU, a ReLU and 2x2 max pooling with stride
# 2 (:func:`conv2d_relu_forward`), or the same pooling without the winners' positions (when no
# backward needs them yet); backward reads its gradient through the pooling and the ReLU for
# ``RELU_MAXPOOL`` (:func:`_read_unpooled`).


# --------------------------------------------------------------------------------------------
# Data movement, each called by one thread on its own buffers: the unroll path pads one sample
# at a time into a (C_in, Hp, Wp) buffer, the shift path stacks a group of samples (below).
# Copies are explicit loops, not slice assignments (``a[i:j] = b[k:l]``): Numba compiles a
# slice assignment with a shape check whose error-message formatting costs ~1.4 s of compile
# time in each function (and again in every kernel that calls it). The loops run over slices
# from 0 (``dest[w] = src[w]``), never over ``dest[left + w]``: an index that might be negative
# gets a wrap-around check that stops LLVM vectorising the copy (measured 35 % on LeNet's
# first convolution).
# --------------------------------------------------------------------------------------------
@njit(**_JIT)
def _pad_into(x, n, top, left, xpad):
    """Copy sample ``n`` of ``x`` (N, C, H, W) into ``xpad`` (C, Hp, Wp), inside the zero
    border the caller allocated."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    for c in range(channels):
        for h in range(height):
            src, dest = x[n, c, h], xpad[c, top + h, left:left + width]
            for w in range(width):
                dest[w] = src[w]


@njit(**_JIT)
def _crop_from(dxpad, top, left, dx, n):
    """``dx[n] = `` the unpadded middle of ``dxpad`` (C, Hp, Wp)."""
    channels, height, width = dx.shape[1], dx.shape[2], dx.shape[3]
    for c in range(channels):
        for h in range(height):
            src, dest = dxpad[c, top + h, left:left + width], dx[n, c, h]
            for w in range(width):
                dest[w] = src[w]


@njit(**_JIT)
def _stack_into(x, n, xbuf, slot, gap_v, gap_h, block, pitch):
    """Copy sample ``n`` into slot ``slot`` of a stacked buffer ``xbuf`` (C, length): per
    channel, the samples' rows are stacked with ``gap_v`` zero rows between them and ``gap_h``
    zero columns between rows (see :func:`~minicnn.kernels.contracts.with_stacked_layout`)."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    for c in range(channels):
        for h in range(height):
            start = (gap_v + slot * block + h) * pitch + gap_h
            src, dest = x[n, c, h], xbuf[c, start:start + width]
            for w in range(width):
                dest[w] = src[w]


@njit(**_JIT)
def _unstack_from(dxbuf, slot, gap_v, gap_h, block, pitch, dx, n):
    """``dx[n] = `` the sample in slot ``slot`` of a stacked buffer (the adjoint's crop)."""
    channels, height, width = dx.shape[1], dx.shape[2], dx.shape[3]
    for c in range(channels):
        for h in range(height):
            start = (gap_v + slot * block + h) * pitch + gap_h
            src, dest = dxbuf[c, start:start + width], dx[n, c, h]
            for w in range(width):
                dest[w] = src[w]


# The output pass and the gradient read, each in two versions with one signature: plain, and
# with a fused ReLU (and pooling). The chunk kernels take whichever one a call needs as a
# function pointer (:func:`_pass_pointer`), so a program compiles only the versions it uses,
# each once. (Two versions, not one loop testing the mode inside: with the test inside, LLVM
# stopped vectorising the plain copy, MNIST's first convolution forward 0.70 -> 1.9 ms.)
@njit(**_JIT)
def _write_biased(grid, start, bias, has_bias, pitch, y, n, epilogue, pooled, argmax):
    """``y[n, co, oh, ow] = grid[co, start + oh*pitch + ow] + bias[co]``: the output pass,
    which drops the garbage columns of the padded-width grid. (``epilogue``, ``pooled`` and
    ``argmax`` are unused: the signature is :func:`_write_rectified`'s.)"""
    out_h, out_w = y.shape[2], y.shape[3]
    for co in range(y.shape[1]):
        b = bias[co] if has_bias else grid.dtype.type(0)
        for oh in range(out_h):
            src = grid[co, start + oh * pitch:start + oh * pitch + out_w]
            dest = y[n, co, oh]
            for ow in range(out_w):
                dest[ow] = src[ow] + b


@njit(**_JIT)
def _write_rectified(grid, start, bias, has_bias, pitch, y, n, epilogue, pooled, argmax):
    """:func:`_write_biased` with a ReLU: ``max(value, 0)`` (NaN kept, the rule of
    :func:`minicnn.kernels.pointwise.relu_forward`). With ``epilogue`` :data:`RELU_MAXPOOL` it
    also pools each channel's finished rows into ``pooled[n]`` and ``argmax[n]`` (N, C_out,
    H_out//2, W_out//2) while they are in cache, with the pooling layer's own rule
    (:func:`~minicnn.kernels.maxpool2x2.max_pool_plane`); :data:`RELU_MAXPOOL_VALUES` pools
    without the positions. Both give exactly what the separate layers give: a ReLU and a
    maximum only pick values, they never round."""
    c_out, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    zero = grid.dtype.type(0)
    flat_y, flat_pooled = y.reshape(y.size), pooled.reshape(pooled.size)
    flat_argmax = argmax.reshape(argmax.size)
    pooled_size = (out_h // 2) * (out_w // 2)
    cells, codes = pool_scratch(out_h, out_w, y.dtype)
    for co in range(c_out):
        b = bias[co] if has_bias else zero
        for oh in range(out_h):
            src = grid[co, start + oh * pitch:start + oh * pitch + out_w]
            dest = y[n, co, oh]
            for ow in range(out_w):
                value = src[ow] + b
                dest[ow] = value if not value < zero else zero
        if epilogue == RELU_MAXPOOL or epilogue == RELU_MAXPOOL_VALUES:
            # argmax is empty for RELU_MAXPOOL_VALUES: no positions kept
            max_pool_plane(flat_y, (n * c_out + co) * out_h * out_w, out_h, out_w,
                           flat_pooled, (n * c_out + co) * pooled_size, flat_argmax,
                           (n * c_out + co) * pooled_size, cells, codes)


@njit(**_JIT)
def _read_plain(dy, n, grid, start, pitch, dbias, prologue, y, pooled, argmax):
    """``grid[co, start + oh*pitch + ow] = dy[n, co, oh, ow]`` and ``dbias[co] += sum dy[n,
    co]`` in the same pass. Only valid positions are written: the caller allocated ``grid``
    zeroed, and nothing else ever writes its garbage columns, so they stay zero. (``prologue``,
    ``y``, ``pooled`` and ``argmax`` are unused: the signature is :func:`_read_unpooled`'s.)"""
    c_out, out_h, out_w = dy.shape[1], dy.shape[2], dy.shape[3]
    columns = np.empty(out_w, dtype=dy.dtype)
    for co in range(c_out):
        for oh in range(out_h):
            src = dy[n, co, oh]
            dest = grid[co, start + oh * pitch:start + oh * pitch + out_w]
            for ow in range(out_w):
                dest[ow] = src[ow]
        dbias[co] += _channel_total(grid, co, start, pitch, out_h, columns)


@njit(**_JIT)
def _read_unpooled(dy, n, grid, start, pitch, dbias, prologue, y, pooled, argmax):
    """:func:`_read_plain` through a fused ReLU and 2x2 max pooling (``prologue``
    :data:`RELU_MAXPOOL`): ``dy`` is the gradient of the *pooled* output (``y.shape`` is the
    convolution's). Each window's gradient goes to its winner (``argmax``) where the pooled
    value is > 0 (or NaN), 0 everywhere else: the pooling layer's backward, then the ReLU's
    (the winner's value is the pooled value, so its sign is the one the ReLU would read).

    Per channel: zero the valid positions, scatter, then add the positions for the bias
    gradient in the same order as :func:`_read_plain` (:func:`_channel_total`), so fused and
    separate layers give the same bits. The scatter does not branch on the data: after the
    ReLU half the pooled values are 0, and a mispredicted branch per window cost more than the
    whole pass (measured), so the choices run in loops of their own, which vectorise."""
    out_h, out_w = y.shape[2], y.shape[3]
    c_out, pooled_h, pooled_w = dy.shape[1], dy.shape[2], dy.shape[3]
    zero = dy.dtype.type(0)
    columns = np.empty(out_w, dtype=dy.dtype)
    masked = np.empty(pooled_w, dtype=dy.dtype)
    where = np.empty(pooled_w, dtype=np.intp)
    skip = pitch - out_w    # a bottom-row winner sits this much further on the grid
    for co in range(c_out):
        for oh in range(out_h):
            dest = grid[co, start + oh * pitch:start + oh * pitch + out_w]
            for ow in range(out_w):
                dest[ow] = zero
        for ph in range(pooled_h):
            base = 2 * ph * out_w
            winners, grads, values = argmax[n, co, ph], dy[n, co, ph], pooled[n, co, ph]
            pair = grid[co, start + 2 * ph * pitch:start + (2 * ph + 1) * pitch + out_w]
            for pw in range(pooled_w):
                masked[pw] = zero if values[pw] <= zero else grads[pw]
            for pw in range(pooled_w):
                local = winners[pw] - base      # in [0, 2*W_out): the top or the bottom row
                where[pw] = local + (skip if local >= out_w else 0)
            for pw in range(pooled_w):
                pair[where[pw]] = masked[pw]
        dbias[co] += _channel_total(grid, co, start, pitch, out_h, columns)


@njit(**_JIT)
def _channel_total(grid, co, start, pitch, out_h, columns):
    """The sum of channel ``co``'s ``out_h x len(columns)`` valid grid positions: down each
    column first (a row of running totals, which vectorises), then across the columns, in a
    fixed order, so the same for every mode and thread count. One running total over the
    positions in row-major order was a chain of dependent adds: 0.57 ms of MNIST conv1's
    backward at one thread (64 x 32 x 28 x 28 values), about a third of the layer."""
    out_w = columns.size
    for ow in range(out_w):
        columns[ow] = 0
    for oh in range(out_h):
        row = grid[co, start + oh * pitch:start + oh * pitch + out_w]
        for ow in range(out_w):
            columns[ow] += row[ow]
    total = columns.dtype.type(0)
    for ow in range(out_w):
        total += columns[ow]
    return total


@njit(**_JIT)
def _three_taps(cols, first, start, out_w):
    """One output row's segment ``[start, start + W_out)`` of the rows of taps ``first``,
    ``first + 1`` and ``first + 2`` of ``cols``: a 3-wide kernel row, for the stride-2
    column-pair loops of :func:`_unroll` and :func:`_fold`."""
    end = start + out_w
    return cols[first, start:end], cols[first + 1, start:end], cols[first + 2, start:end]


@njit(**_JIT)
def _unroll(xpad, kh, kw, sh, sw, dh, dw, out_h, out_w, pitch, cols):
    """``cols[(c, i, j), oh*pitch + ow] = xpad[c, oh*sh + i*dh, ow*sw + j*dw]``.

    With stride 1 and ``pitch == Wp`` each row is one contiguous copy of the padded plane."""
    channels, padded_h, padded_w = xpad.shape
    length = (out_h - 1) * pitch + out_w
    flat = xpad.reshape(xpad.size)
    for c in range(channels):
        for i in range(kh):
            if kw == 3 and sw == 2 and dw == 1:
                # The usual strided kernel: taps 0 and 1 read whole column pairs (2*ow,
                # 2*ow + 1) in one loop, tap 2 the even columns from 2 on. 1.8x faster than
                # tap by tap, whose every-other-column loops over a row of 16 LLVM vectorised
                # poorly (see _fold).
                for oh in range(out_h):
                    src = xpad[c, oh * sh + i * dh]
                    left, middle, right = _three_taps(cols, (c * kh + i) * 3, oh * pitch, out_w)
                    for ow in range(out_w):
                        left[ow] = src[2 * ow]
                        middle[ow] = src[2 * ow + 1]
                    shifted = src[2:]
                    for ow in range(out_w):
                        right[ow] = shifted[2 * ow]
                continue
            for j in range(kw):
                row = cols[(c * kh + i) * kw + j]
                if sh == 1 and sw == 1 and pitch == padded_w:
                    start = c * padded_h * padded_w + i * dh * padded_w + j * dw
                    src = flat[start:start + length]
                    for q in range(length):
                        row[q] = src[q]
                else:   # over slices from 0, stride 2 spelled out: both let LLVM vectorise
                    for oh in range(out_h):
                        src = xpad[c, oh * sh + i * dh, j * dw:]
                        dest = row[oh * pitch:oh * pitch + out_w]
                        if sw == 2:
                            for ow in range(out_w):
                                dest[ow] = src[2 * ow]
                        else:
                            for ow in range(out_w):
                                dest[ow] = src[ow * sw]


@njit(**_JIT)
def _fold(dcols, kh, kw, sh, sw, dh, dw, out_h, out_w, pitch, dxpad):
    """Adjoint of :func:`_unroll`: add every column entry back onto the pixel it came from
    (``dxpad`` is this thread's own, so the ``+=`` of overlapping windows is race-free)."""
    channels, padded_h, padded_w = dxpad.shape
    length = (out_h - 1) * pitch + out_w
    flat = dxpad.reshape(dxpad.size)
    for c in range(channels):
        for i in range(kh):
            if kw == 3 and sw == 2 and dw == 1:
                # The usual strided kernel. Tap by tap, a stride-2 fold writes every other
                # column, and LLVM left those loops scalar (a row of 16 took twice as long as
                # with a width known at compile time). Taken together, taps 0 and 1 write
                # whole column pairs (2*ow, 2*ow + 1), and tap 2's ``ow - 1`` lands on tap
                # 0's column 2*ow: one loop over ``ow`` that LLVM vectorises, 2.5x faster.
                # Each pixel still adds tap 0 before tap 2, so the sums round as tap by tap.
                for oh in range(out_h):
                    dest = dxpad[c, oh * sh + i * dh]
                    left, middle, right = _three_taps(dcols, (c * kh + i) * 3, oh * pitch,
                                                      out_w)
                    dest[0] += left[0]
                    dest[1] += middle[0]
                    for ow in range(1, out_w):
                        dest[2 * ow] = (dest[2 * ow] + left[ow]) + right[ow - 1]
                        dest[2 * ow + 1] += middle[ow]
                    dest[2 * out_w] += right[out_w - 1]
                continue
            for j in range(kw):
                row = dcols[(c * kh + i) * kw + j]
                if sh == 1 and sw == 1 and pitch == padded_w:
                    start = c * padded_h * padded_w + i * dh * padded_w + j * dw
                    dest = flat[start:start + length]   # a slice: no wrap-around checks
                    for q in range(length):
                        dest[q] += row[q]
                else:   # as in _unroll: slices from 0, stride 2 spelled out
                    for oh in range(out_h):
                        dest = dxpad[c, oh * sh + i * dh, j * dw:]
                        src = row[oh * pitch:oh * pitch + out_w]
                        if sw == 2:
                            for ow in range(out_w):
                                dest[2 * ow] += src[ow]
                        else:
                            for ow in range(out_w):
                                dest[ow * sw] += src[ow]


@njit(**_JIT)
def _tap_offset(tap, kw, dh, dw, row0, col0, pitch):
    """Where tap ``tap`` (row-major over the kernel) of grid position 0 reads the stacked
    buffer (:func:`~minicnn.kernels.contracts.with_stacked_layout`); grid position ``q``
    reads ``q`` further on."""
    return (row0 + (tap // kw) * dh) * pitch + col0 + (tap % kw) * dw


@njit(**_JIT)
def _unroll_slab(xbuf, first, count, kh, kw, dh, dw, row0, col0, pitch, cols):
    """``cols[(i*kW + j)*C_in + c, q] = xbuf[c, first + q + tap offset]`` for ``q < count``:
    grid positions ``[first, first + count)`` of every tap's shifted input, one row per
    (tap, channel), for the weight gradient's single GEMM per slab."""
    channels = xbuf.shape[0]
    for tap in range(kh * kw):
        offset = _tap_offset(tap, kw, dh, dw, row0, col0, pitch) + first
        for c in range(channels):
            src, dest = xbuf[c, offset:offset + count], cols[tap * channels + c]
            for q in range(count):
                dest[q] = src[q]


# --------------------------------------------------------------------------------------------
# One thread's work. Each ``*_chunk`` kernel follows :mod:`minicnn.kernels.parallel`'s calling
# convention, ``chunk(args, plan, thread, n_threads)``: it takes its share of the samples and
# writes its own slice of the per-thread gradient buffers. ``args`` is one of the two records
# below, ``plan`` the layer's :class:`~minicnn.kernels.contracts.ConvPlan`. The two forward
# paths take the same record types, and so do the two backward paths, so each pair shares one
# compiled parallel loop: the weights are always a stack of matrices (the shift path's
# ``kH*kW`` taps, the unroll path's single unrolled matrix), and the unroll path's plan has
# zeros for the stacked layout. Both directions also take the fused ReLU / pooling mode and
# its arrays (empty when unused) and the pass that uses them, as a function pointer
# (:func:`_pass_pointer`).
# --------------------------------------------------------------------------------------------
class ConvForwardArgs(NamedTuple):
    """``args`` of the forward chunk kernels."""

    x: np.ndarray           #: (N, C_in, H, W) input, C-contiguous
    #: (taps, C_out, K): shift (kH*kW, C_out, C_in), unroll (1, C_out, C_in*kH*kW)
    weights: np.ndarray
    bias: np.ndarray        #: (C_out,), or (1,) unused when not ``has_bias``
    has_bias: bool
    y: np.ndarray           #: (N, C_out, H_out, W_out) output, written
    #: :data:`PLAIN`, :data:`RELU`, :data:`RELU_MAXPOOL` or :data:`RELU_MAXPOOL_VALUES`
    epilogue: int
    pooled: np.ndarray      #: (N, C_out, H_out//2, W_out//2) pooled output, or empty
    argmax: np.ndarray      #: int32, the pooling's winners, same shape as ``pooled``, or empty
    write_output: object    #: :func:`_write_biased` or :func:`_write_rectified`, a pointer


class ConvBackwardArgs(NamedTuple):
    """``args`` of the backward chunk kernels."""

    x: np.ndarray           #: (N, C_in, H, W) the forward's input
    dy: np.ndarray          #: gradient of the convolution's output, or of the fused pooling's
    weights: np.ndarray     #: the forward's ``weights``
    dx: np.ndarray          #: (N, C_in, H, W) input gradient, written; (0, ...) if not needed
    need_input_grad: bool
    dw_partial: np.ndarray  #: (threads, taps, K, C_out) each thread's transposed weight gradient
    db_partial: np.ndarray  #: (threads, C_out) each thread's bias gradient
    prologue: int           #: :data:`PLAIN` or :data:`RELU_MAXPOOL`
    y: np.ndarray           #: (N, C_out, H_out, W_out) the convolution's (ReLU's) output
    pooled: np.ndarray      #: the fused pooling's output, or empty
    argmax: np.ndarray      #: the fused pooling's winners, or empty
    read_grad: object       #: :func:`_read_plain` or :func:`_read_unpooled`, a pointer


@njit(**_JIT)
def _forward_shift_chunk(args, plan, thread, n_threads):
    """Stride 1, ``plan.group`` samples per GEMM on the stacked layout: for a group of ``g``
    samples each tap's input is one strided ``(C_in, span)`` view of the buffer, so ``kH*kW``
    GEMMs ``Y += W_tap @ X_tap`` cover the whole group."""
    x, w_taps, y = args.x, args.weights, args.y
    pitch, block, group = plan.pitch, plan.block, plan.group
    first, last = share(x.shape[0], thread, n_threads)
    channels = x.shape[1]
    c_out, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    xbuf = np.zeros((channels, plan.channel_length), dtype=x.dtype)
    grid = np.empty((c_out, group * block * pitch), dtype=x.dtype)
    for n0 in range(first, last, group):
        count = min(group, last - n0)
        for slot in range(count):
            _stack_into(x, n0 + slot, xbuf, slot, plan.gap_v, plan.gap_h, block, pitch)
        span = ((count - 1) * block + out_h - 1) * pitch + out_w
        for tap in range(plan.kh * plan.kw):
            offset = _tap_offset(tap, plan.kw, plan.dh, plan.dw, plan.row0, plan.col0, pitch)
            _gemm(blas.NO_TRANS, blas.NO_TRANS, c_out, span, channels, w_taps[tap], channels,
                  xbuf[0, offset:], plan.channel_length, 0.0 if tap == 0 else 1.0, grid,
                  grid.shape[1])
        for slot in range(count):
            args.write_output(grid, slot * block * pitch, args.bias, args.has_bias, pitch, y,
                              n0 + slot, args.epilogue, args.pooled, args.argmax)


@njit(**_JIT)
def _backward_shift_chunk(args, plan, thread, n_threads):
    """Backward of :func:`_forward_shift_chunk`, the same groups.

    The weight gradient goes into this thread's ``dw_partial[thread]``, *transposed* per tap
    (kH*kW, C_in, C_out). Kernels whose rows are three taps at dilation 1 (3x3), on a grid of
    at least :data:`~minicnn.kernels.weight_grad.MIN_SPAN` positions a group, take it as
    running sums (:func:`minicnn.kernels.weight_grad.three_taps`: no copy, no GEMM; 1.16-1.6x
    faster). Others, slab by slab of grid positions: the taps' shifted inputs are unrolled
    into ``cols`` (kH*kW*C_in, slab) and one GEMM adds ``cols @ dY[:, slab]ᵀ``. One GEMM with
    ``M = kH*kW*C_in`` instead of ``kH*kW`` with ``M = C_out, N = C_in`` packs ``dY`` once
    instead of once per tap: MNIST conv2's weight gradient 4.7 -> 3.2 ms at one thread
    (benchmarks/RESULTS.md). The bias gradient goes into ``db_partial[thread]``, and ``dX_tap
    += W_tapᵀ @ dY`` into this thread's buffer, then unstacked into ``dx``."""
    x, dy, w_taps, dx, y = args.x, args.dy, args.weights, args.dx, args.y
    need_input_grad = args.need_input_grad
    kh, kw, dh, dw, row0, col0 = plan.kh, plan.kw, plan.dh, plan.dw, plan.row0, plan.col0
    pitch, block, group, channel_length = plan.pitch, plan.block, plan.group, plan.channel_length
    first, last = share(x.shape[0], thread, n_threads)
    dw_transposed, dbias = args.dw_partial[thread], args.db_partial[thread]
    channels = x.shape[1]
    c_out, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    xbuf = np.zeros((channels, channel_length), dtype=x.dtype)
    dxbuf = np.empty((channels if need_input_grad else 0, channel_length), dtype=x.dtype)
    grid = np.zeros((c_out, group * block * pitch), dtype=x.dtype)
    slab = WEIGHT_GRAD_SLAB
    # Kernel rows of three taps on a long enough grid (a whole group's): running sums instead
    # of the copy and GEMM, for every group
    three_taps = (kw == 3 and dw == 1
                  and ((group - 1) * block + out_h - 1) * pitch + out_w >= weight_grad.MIN_SPAN)
    cols = np.empty((0 if three_taps else kh * kw * channels, slab), dtype=x.dtype)
    for n0 in range(first, last, group):
        count = min(group, last - n0)
        for slot in range(count):
            _stack_into(x, n0 + slot, xbuf, slot, plan.gap_v, plan.gap_h, block, pitch)
            args.read_grad(dy, n0 + slot, grid, slot * block * pitch, pitch, dbias,
                           args.prologue, y, args.pooled, args.argmax)
        span = ((count - 1) * block + out_h - 1) * pitch + out_w
        if three_taps:
            weight_grad.three_taps(xbuf, grid, span, kh, dh, row0, col0, pitch, dw_transposed)
        else:
            for start in range(0, span, slab):
                length = min(slab, span - start)
                _unroll_slab(xbuf, start, length, kh, kw, dh, dw, row0, col0, pitch, cols)
                # dWᵀ (kH*kW*C_in, C_out) += cols (kH*kW*C_in, length) @ dY[:, slab]ᵀ
                _gemm(blas.NO_TRANS, blas.TRANS, kh * kw * channels, c_out, length, cols, slab,
                      grid[0, start:], grid.shape[1], 1.0, dw_transposed, c_out)
        if need_input_grad:
            # The first tap's GEMM overwrites its span (beta 0); only the rest is zeroed.
            first_offset = _tap_offset(0, kw, dh, dw, row0, col0, pitch)
            dxbuf[:, :first_offset] = 0
            dxbuf[:, first_offset + span:] = 0
            for tap in range(kh * kw):
                offset = _tap_offset(tap, kw, dh, dw, row0, col0, pitch)
                # dX_tap (C_in, span) += W_tapᵀ (C_in, C_out) @ dY (C_out, span)
                _gemm(blas.TRANS, blas.NO_TRANS, channels, span, c_out, w_taps[tap], channels,
                      grid, grid.shape[1], 0.0 if tap == 0 else 1.0, dxbuf[0, offset:],
                      channel_length)
            for slot in range(count):
                _unstack_from(dxbuf, slot, plan.gap_v, plan.gap_h, block, pitch, dx, n0 + slot)


@njit(**_JIT)
def _forward_unroll_chunk(args, plan, thread, n_threads):
    """One sample at a time: unroll its windows into ``cols`` (K, L), ``Y = W @ cols``
    (``W`` is ``weights[0]``, the unrolled (C_out, K) matrix). The grid's ``pitch`` is the
    padded width for stride 1 (every tap a contiguous shift) and ``W_out`` otherwise; the
    plan's stacked layout is unused."""
    x, y = args.x, args.y
    first, last = share(x.shape[0], thread, n_threads)
    w_matrix = args.weights[0]
    channels = x.shape[1]
    c_out, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    pitch = plan.padded_w if plan.sh == 1 and plan.sw == 1 else out_w
    length = (out_h - 1) * pitch + out_w
    k = w_matrix.shape[1]
    xpad = np.zeros((channels, plan.padded_h, plan.padded_w), dtype=x.dtype)
    cols = np.empty((k, length), dtype=x.dtype)
    grid = np.empty((c_out, length), dtype=x.dtype)
    for n in range(first, last):
        _pad_into(x, n, plan.top, plan.left, xpad)
        _unroll(xpad, plan.kh, plan.kw, plan.sh, plan.sw, plan.dh, plan.dw, out_h, out_w,
                pitch, cols)
        _gemm(blas.NO_TRANS, blas.NO_TRANS, c_out, length, k, w_matrix, k, cols, length, 0.0,
              grid, length)
        args.write_output(grid, 0, args.bias, args.has_bias, pitch, y, n, args.epilogue,
                          args.pooled, args.argmax)


@njit(**_JIT)
def _backward_unroll_chunk(args, plan, thread, n_threads):
    """Backward of :func:`_forward_unroll_chunk`: ``dW += dY @ colsᵀ`` into this thread's
    partial ``dw_partial[thread, 0]`` (C_out, K); ``dx = fold(Wᵀ @ dY)``."""
    x, dy, dx, y = args.x, args.dy, args.dx, args.y
    need_input_grad = args.need_input_grad
    kh, kw, sh, sw, dh, dw = plan.kh, plan.kw, plan.sh, plan.sw, plan.dh, plan.dw
    padded_h, padded_w = plan.padded_h, plan.padded_w
    first, last = share(x.shape[0], thread, n_threads)
    w_matrix, dweight, dbias = args.weights[0], args.dw_partial[thread, 0], args.db_partial[thread]
    channels = x.shape[1]
    c_out, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    pitch = padded_w if sh == 1 and sw == 1 else out_w
    length = (out_h - 1) * pitch + out_w
    k = w_matrix.shape[1]
    xpad = np.zeros((channels, padded_h, padded_w), dtype=x.dtype)
    dxpad = np.empty((channels if need_input_grad else 0, padded_h, padded_w), dtype=x.dtype)
    cols = np.empty((k, length), dtype=x.dtype)
    dcols = np.empty((k if need_input_grad else 0, length), dtype=x.dtype)
    grid = np.zeros((c_out, length), dtype=x.dtype)
    for n in range(first, last):
        _pad_into(x, n, plan.top, plan.left, xpad)
        args.read_grad(dy, n, grid, 0, pitch, dbias, args.prologue, y, args.pooled, args.argmax)
        _unroll(xpad, kh, kw, sh, sw, dh, dw, out_h, out_w, pitch, cols)
        # dWᵀ (K, C_out) += cols (K, L) @ dYᵀ (L, C_out)
        _gemm(blas.NO_TRANS, blas.TRANS, k, c_out, length, cols, length, grid, length, 1.0,
              dweight, c_out)
        if need_input_grad:
            # dcols (K, L) = Wᵀ (K, C_out) @ dY (C_out, L), then fold back onto the input.
            _gemm(blas.TRANS, blas.NO_TRANS, k, length, c_out, w_matrix, k, grid, length, 0.0,
                  dcols, length)
            dxpad[:] = 0
            _fold(dcols, kh, kw, sh, sw, dh, dw, out_h, out_w, pitch, dxpad)
            _crop_from(dxpad, plan.top, plan.left, dx, n)


class GradientPlanesArgs(NamedTuple):
    """``args`` of :func:`_gradient_planes_chunk`."""

    dy: np.ndarray          #: the fused pooling's output gradient (N, C_out, H_out/2, W_out/2)
    y: np.ndarray           #: (N, C_out, H_out, W_out) the convolution's (ReLU's) output
    pooled: np.ndarray      #: the fused pooling's output
    argmax: np.ndarray      #: its winners
    dz: np.ndarray          #: (N, C_out, H_out, W_out) written: the convolution's output gradient
    totals: np.ndarray      #: (threads, C_out) scratch for the bias sums (not used)


@njit(**_JIT)
def _gradient_planes_chunk(args, plan, thread, n_threads):
    """The gradient of the convolution's own output through the fused ReLU and pooling, as
    whole planes ``dz[n]`` (what :func:`_read_unpooled` writes onto the shift path's grid, with
    the planes' width as the pitch), for this thread's samples."""
    dz = args.dz
    c_out, out_h, out_w = dz.shape[1], dz.shape[2], dz.shape[3]
    first, last = share(dz.shape[0], thread, n_threads)
    for n in range(first, last):
        _read_unpooled(args.dy, n, dz[n].reshape((c_out, out_h * out_w)), 0, out_w,
                       args.totals[thread], RELU_MAXPOOL, args.y, args.pooled, args.argmax)


def _winograd_input_grad_applies(plan: ConvPlan, x_shape, c_out) -> bool:
    """Whether the input gradient runs as Winograd's forward (:func:`_input_grad_winograd`):
    a 3x3 stride-1 layer on the shift path with padding 1 on every side (its input gradient
    is then the same kind of convolution, of the output gradient with the flipped, transposed
    filters) and at least :data:`WINOGRAD_MIN_CHANNELS` output channels (its input's)."""
    return (USE_WINOGRAD and plan.stacked and plan.kh == plan.kw == 3 and plan.sh == plan.sw == 1
            and plan.dh == plan.dw == 1 and plan.top == plan.left == 1
            and (plan.out_h, plan.out_w) == tuple(x_shape[2:]) and c_out >= WINOGRAD_MIN_CHANNELS)


def _input_grad_winograd(dz, ctx, n_threads):
    """``dX`` as the 3x3, padding-1 convolution of the output gradient ``dz (N, C_out, H, W)``
    with the filters flipped and transposed (``W'[ci, co, i, j] = W[co, ci, 2 - i, 2 - j]``),
    run by :func:`minicnn.kernels.winograd.forward_chunk`: 2.25x fewer multiply-adds than the
    shift path's nine GEMMs ``W_tapᵀ @ dY`` (MNIST conv2's backward at batch 64, one thread:
    13.7 -> 12.9 ms). It rounds differently from them (within the float32 tolerance every
    backend is held to)."""
    c_out, c_in = ctx.weight_shape[0], ctx.weight_shape[1]
    # the tap-major weights (kH*kW, C_out, C_in), taps reversed, as (C_in, C_out, 3, 3)
    flipped = np.ascontiguousarray(ctx.weights[::-1].transpose(2, 1, 0)).reshape(c_in, c_out,
                                                                                   3, 3)
    dx = np.empty(ctx.x.shape, dtype=dz.dtype)
    plan = conv_plan(dz.shape, flipped.shape, (1, 1), (1, 1, 1, 1), (1, 1))
    if _winograd4_applies(dz.dtype, c_out, plan):
        parallel.run(winograd4.forward_chunk,
                     winograd4.arguments(dz, winograd4.transform_weights(flipped),
                                         np.zeros(1, dtype=dz.dtype), False, dx, False),
                     plan, n_threads, dz.dtype)
        return dx
    u = winograd.transform_weights(flipped)
    no_pool = np.empty((0, 0, 0, 0), dtype=dz.dtype)
    parallel.run(winograd.forward_chunk,
                 winograd.arguments(dz, u, np.zeros(1, dtype=dz.dtype), False, dx, PLAIN,
                                    no_pool, np.empty((0, 0, 0, 0), dtype=np.int32)),
                 plan, n_threads, dz.dtype)
    return dx


# --------------------------------------------------------------------------------------------
# The contract (as in :mod:`minicnn.kernels.reference`)
# --------------------------------------------------------------------------------------------
class ConvContext(NamedTuple):
    """What :func:`conv2d_forward` keeps for :func:`conv2d_backward`: the input itself
    (backward pads and unrolls it again, which costs less than keeping an unrolled copy)."""

    x: np.ndarray               #: (N, C_in, H, W) the input, C-contiguous
    weight_shape: tuple         #: (C_out, C_in, kH, kW)
    weights: np.ndarray         #: the weights as the chunk kernels took them (``args.weights``)
    has_bias: bool
    plan: ConvPlan              #: with a stacked layout on the shift path (``plan.stacked``)


def supports(x_dtype, weight, groups) -> bool:
    """Whether these kernels handle the layer: an in-kernel GEMM for the dtype, no groups."""
    return groups == 1 and blas.dtype_supported(x_dtype) and weight.dtype == x_dtype


def _shift_plan(plan: ConvPlan, x_shape, padding, c_in) -> ConvPlan | None:
    """``plan`` with the shift path's stacked layout (:func:`~minicnn.kernels.contracts.
    with_stacked_layout`) where the shift path runs: stride 1, at least
    :data:`SHIFT_MIN_CHANNELS` input channels and at most :data:`SHIFT_MAX_GRID_WASTE` grid
    positions per output; else ``None`` (the unroll path)."""
    if plan.sh != 1 or plan.sw != 1 or c_in < SHIFT_MIN_CHANNELS:
        return None
    stacked = with_stacked_layout(plan, x_shape, padding, SHIFT_GROUP)
    if stacked is None or stacked.block * stacked.pitch > (SHIFT_MAX_GRID_WASTE * plan.out_h
                                                           * plan.out_w):
        return None   # block * pitch grid positions per sample: too many wasted
    return stacked


def _winograd4_applies(dtype, c_in, plan: ConvPlan) -> bool:
    """Whether a layer :func:`_winograd_applies` to (or its input gradient) runs Winograd's
    F(4x4, 3x3) (:mod:`minicnn.kernels.winograd4`: float32, 64 input channels or more, an
    output of at least 8x8) instead of F(2x2, 3x3). The forward's pooled epilogues stay on
    F(2x2, 3x3), which pools inside its output transform."""
    return USE_WINOGRAD4 and winograd4.applies(dtype, c_in, plan.out_h, plan.out_w)


def _winograd_applies(plan: ConvPlan, c_in) -> bool:
    """Whether the forward runs :mod:`minicnn.kernels.winograd`: a layer on the shift path (so
    stride 1 and a stacked layout for backward) with a 3x3 undilated kernel and at least
    :data:`WINOGRAD_MIN_CHANNELS` input channels."""
    return (USE_WINOGRAD and plan.stacked and plan.kh == plan.kw == 3
            and plan.dh == plan.dw == 1 and c_in >= WINOGRAD_MIN_CHANNELS)


def conv2d_forward(x, weight, bias, stride, padding, dilation, groups=1):
    """Convolution forward (see :func:`minicnn.kernels.reference.conv2d_forward`).

    Only for layers :func:`supports` accepts; ``ctx`` is a :class:`ConvContext`."""
    y, _, _, ctx = _forward(x, weight, bias, stride, padding, dilation, PLAIN)
    return y, ctx


def conv2d_relu_forward(x, weight, bias, stride, padding, dilation, maxpool=False,
                        winners=True):
    """``Conv2d -> ReLU`` (``-> MaxPool2d(2)`` when ``maxpool``) in one pass: the ReLU and the
    2x2 pooling with stride 2 run in the convolution's output pass (:func:`_write_rectified`)
    instead of as two more passes over the convolution's output.

    Returns
    -------
    y : ndarray (N, C_out, H_out, W_out)
        The ReLU's output (what the ReLU layer keeps for its backward).
    pooled, argmax : ndarray (N, C_out, H_out // 2, W_out // 2) or None
        The pooling's output and the flat position of each window's winner in its
        ``H_out x W_out`` plane (int32), as :func:`minicnn.kernels.numba_backend.maxpool2d_forward`
        gives them; ``None`` without ``maxpool``, and ``argmax`` ``None`` without ``winners``
        (inference: finding the positions is most of the pooling's work, and the pooling layer
        can find them from ``y`` if a backward asks). The caller checks ``H_out, W_out >= 2``.
    ctx
        As :func:`conv2d_forward`'s, for :func:`conv2d_relu_backward` (or
        :func:`conv2d_backward` with the gradient at the convolution's output).
    """
    epilogue = RELU if not maxpool else RELU_MAXPOOL if winners else RELU_MAXPOOL_VALUES
    return _forward(x, weight, bias, stride, padding, dilation, epilogue)


def _forward(x, weight, bias, stride, padding, dilation, epilogue):
    x = np.ascontiguousarray(x)
    plan = conv_plan(x.shape, weight.shape, stride, padding, dilation)
    c_out, c_in = weight.shape[0], weight.shape[1]
    shift_plan = _shift_plan(plan, x.shape, padding, c_in)
    if shift_plan is not None:   # tap-major (kH*kW, C_out, C_in): each tap's weights a matrix
        plan, chunk = shift_plan, _forward_shift_chunk
        weights = np.ascontiguousarray(weight.transpose(2, 3, 0, 1))
        weights = weights.reshape(plan.kh * plan.kw, c_out, c_in)
    else:                        # one (C_out, C_in*kH*kW) matrix
        chunk = _forward_unroll_chunk
        weights = np.ascontiguousarray(weight).reshape(1, c_out, -1)
    has_bias = bias is not None
    bias_arg = np.ascontiguousarray(bias) if has_bias else np.zeros(1, dtype=x.dtype)
    y = np.empty((x.shape[0], c_out, plan.out_h, plan.out_w), dtype=x.dtype)
    pooled_shape = (x.shape[0], c_out, plan.out_h // 2, plan.out_w // 2)
    pooled = np.empty(pooled_shape if epilogue >= RELU_MAXPOOL else (0, 0, 0, 0), dtype=x.dtype)
    argmax = np.empty(pooled_shape if epilogue == RELU_MAXPOOL else (0, 0, 0, 0), dtype=np.int32)
    n_threads = threads_for(x.shape[0])
    with _threads.blas_single_threaded():
        if (_winograd_applies(plan, c_in) and epilogue in (PLAIN, RELU)
                and _winograd4_applies(x.dtype, c_in, plan)):
            u = winograd4.transform_weights(np.ascontiguousarray(weight))
            parallel.run(winograd4.forward_chunk,
                         winograd4.arguments(x, u, bias_arg, has_bias, y, epilogue == RELU),
                         plan, n_threads, x.dtype)
        elif _winograd_applies(plan, c_in):   # the filters transformed; backward keeps the
            u = winograd.transform_weights(np.ascontiguousarray(weight))   # tap-major weights
            parallel.run(winograd.forward_chunk,
                         winograd.arguments(x, u, bias_arg, has_bias, y, epilogue, pooled,
                                            argmax),
                         plan, n_threads, x.dtype)
        else:
            write_output = _write_biased if epilogue == PLAIN else _write_rectified
            parallel.run(chunk, ConvForwardArgs(x, weights, bias_arg, has_bias, y, epilogue,
                                                pooled, argmax,
                                                _pass_pointer(write_output, x.dtype)),
                         plan, n_threads, x.dtype)
    ctx = ConvContext(x, weight.shape, weights, has_bias, plan)
    return (y, pooled if epilogue >= RELU_MAXPOOL else None,
            argmax if epilogue == RELU_MAXPOOL else None, ctx)


def conv2d_backward(dy, ctx, need_input_grad=True):
    """Convolution backward: ``(dx or None, dweight, dbias or None)``."""
    dy = np.ascontiguousarray(dy)
    _check_shape("dy", dy, _output_shape(ctx))
    return _backward(dy, ctx, need_input_grad, PLAIN, dy, None, None)


def conv2d_relu_backward(dy, ctx, y, need_input_grad=True, pooled=None, argmax=None):
    """Backward of :func:`conv2d_relu_forward`: ``(dx or None, dweight, dbias or None)``.

    ``dy`` is the gradient of the block's output (the ReLU's, or with ``pooled`` and
    ``argmax`` the pooling's); ``y``, ``pooled`` and ``argmax`` are what the forward returned.
    With pooling, the pooling's scatter and the ReLU's mask happen as the convolution's
    backward reads its gradient (:func:`_read_unpooled`): the same numbers as the three layers'
    backward passes, one pass over memory instead of three. Without, the ReLU's backward runs
    first (:func:`minicnn.kernels.pointwise.relu_backward`)."""
    out_shape = _output_shape(ctx)
    _check_shape("y", y, out_shape)
    dy = np.ascontiguousarray(dy)
    if pooled is None:
        # The ReLU's mask as a pass of its own, over the whole flat array: done row by row in
        # the copy onto the grid, its choice became a mispredicted branch in each row's
        # leftover elements, and the fused backward was slower than the two layers (MNIST
        # conv1's shape: 1.3 against 0.6 ms at one thread).
        _check_shape("dy", dy, out_shape)
        dz = pointwise.relu_backward(dy, y)
        return _backward(dz, ctx, need_input_grad, PLAIN, dz, None, None)
    pooled_shape = out_shape[:2] + (out_shape[2] // 2, out_shape[3] // 2)
    for name, array in (("dy", dy), ("pooled", pooled), ("argmax", argmax)):
        _check_shape(name, array, pooled_shape)
    return _backward(dy, ctx, need_input_grad, RELU_MAXPOOL, y, pooled, argmax)


@functools.lru_cache(maxsize=None)
def _pass_pointer(function, dtype):
    """An output pass (:func:`_write_biased`, :func:`_write_rectified`) or a gradient read
    (:func:`_read_plain`, :func:`_read_unpooled`) for ``dtype``, as the pointer the chunk
    kernels call (:func:`minicnn.kernels.parallel.pointer`): compiled once, and only if used,
    not once in each of the four chunk kernels (3-5 s less in a cold start). The two versions
    of each have the same argument types, so the chunk kernels compile once for both.
    Cached by ``(function, dtype)``: building the argument types took 16 us a call, four
    calls per MNIST CNN training step."""
    real = numba.from_dtype(dtype)
    grid, vector, image = (types.Array(real, ndim, "C") for ndim in (2, 1, 4))
    winners = types.Array(types.int32, 4, "C")
    intp = types.intp
    if function in (_write_biased, _write_rectified):
        arg_types = (grid, intp, vector, types.boolean, intp, image, intp, intp, image, winners)
    else:
        arg_types = (image, intp, grid, intp, intp, vector, intp, image, image, winners)
    return parallel.pointer(function, arg_types)


def _output_shape(ctx):
    """The convolution's output shape (N, C_out, H_out, W_out), from its ``ctx``."""
    return (ctx.x.shape[0], ctx.weight_shape[0], ctx.plan.out_h, ctx.plan.out_w)


def _check_shape(name, array, expected):
    # The kernels index these arrays without bounds checks: a wrong shape would read or
    # write outside them (a crash, not an error). Layers check first; this guards callers.
    if array.shape != tuple(expected):
        raise ValueError(f"onepool convolution backward: expected {name} of shape "
                         f"{tuple(expected)}, got {array.shape}")


def _backward(dy, ctx, need_input_grad, prologue, y, pooled, argmax):
    x, weights, plan = ctx.x, ctx.weights, ctx.plan
    y = np.ascontiguousarray(y)
    if pooled is None:
        pooled = np.empty((0, 0, 0, 0), dtype=x.dtype)
        argmax = np.empty((0, 0, 0, 0), dtype=np.int32)
    pooled, argmax = np.ascontiguousarray(pooled), np.ascontiguousarray(argmax)
    need_input_grad = bool(need_input_grad)
    n_threads = threads_for(x.shape[0])
    c_out = ctx.weight_shape[0]
    winograd_dx = need_input_grad and _winograd_input_grad_applies(plan, x.shape, c_out)
    if winograd_dx:
        # The input gradient as a Winograd forward of the output gradient, after the weight
        # gradient (the shift path, without its input gradient) from the same planes.
        if prologue == RELU_MAXPOOL:
            dz = np.empty(y.shape, dtype=x.dtype)
            parallel.run(_gradient_planes_chunk,
                         GradientPlanesArgs(dy, y, pooled, argmax, dz,
                                            np.zeros((n_threads, c_out), dtype=x.dtype)),
                         parallel.NO_PLAN, n_threads, x.dtype)
            dy, y, prologue = dz, dz, PLAIN
            pooled = np.empty((0, 0, 0, 0), dtype=x.dtype)
            argmax = np.empty((0, 0, 0, 0), dtype=np.int32)
        need_input_grad = False
    dx = np.empty(x.shape if need_input_grad else (0,) + x.shape[1:], dtype=x.dtype)
    # Per-thread partial sums, each thread writing only its own slice: shift keeps dWᵀ tap by
    # tap (kH*kW, C_in, C_out), unroll one (C_out, C_in*kH*kW) matrix.
    taps, rows, columns = weights.shape
    partial_shape = (taps, columns, rows)
    dw_partial = np.zeros((n_threads,) + partial_shape, dtype=x.dtype)
    db_partial = np.zeros((n_threads, c_out), dtype=x.dtype)
    chunk = _backward_shift_chunk if plan.stacked else _backward_unroll_chunk
    read_grad = _pass_pointer(_read_plain if prologue == PLAIN else _read_unpooled, x.dtype)
    with _threads.blas_single_threaded():
        parallel.run(chunk, ConvBackwardArgs(x, dy, weights, dx, need_input_grad, dw_partial,
                                             db_partial, prologue, y, pooled, argmax,
                                             read_grad),
                     plan, n_threads, x.dtype)
    # Add the threads' partial sums in a fixed order: the same result for a given thread count.
    dweight, dbias = dw_partial[0], db_partial[0]
    for t in range(1, n_threads):
        dweight = dweight + dw_partial[t]
        dbias = dbias + db_partial[t]
    if winograd_dx:
        with _threads.blas_single_threaded():
            dx = _input_grad_winograd(dy, ctx, n_threads)
        need_input_grad = True
    if plan.stacked:   # tap-major, transposed (kH, kW, C_in, C_out) -> (C_out, C_in, kH, kW)
        dweight = dweight.reshape(plan.kh, plan.kw, -1, c_out).transpose(3, 2, 0, 1)
        dweight = np.ascontiguousarray(dweight)
    else:              # (C_in*kH*kW, C_out) -> (C_out, C_in, kH, kW)
        dweight = np.ascontiguousarray(dweight.T).reshape(ctx.weight_shape)
    return (dx if need_input_grad else None), dweight, (dbias if ctx.has_bias else None)
