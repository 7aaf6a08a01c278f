"""Stride-1 depthwise convolution (``groups == C_in == C_out``) as one-pool chunk kernels.

A depthwise layer does ``kH*kW`` multiply-adds per output value, far too few for a GEMM to
pay: it is bound by memory traffic. So every pass over memory counts, and these kernels make
one pass per direction, each thread over its own share of the ``(sample, channel)`` planes:

- **forward**: copy the plane into a small zero-bordered buffer (the padding, without a
  padded copy of the whole batch), add ``tap * shifted plane`` for every tap onto the output
  grid, write the grid out with the bias;
- **backward**: the same padded plane and ``dY`` on the grid, then for every tap the weight
  gradient ``dW[c, i, j] += <dY, shifted plane>`` (into this thread's partial sum), and the
  input gradient gathered from shifted ``dY`` (see :func:`_backward_chunk`) and written
  straight into ``dx``, so ``x`` and ``dy`` are each read once.

Both work on the *wide grid* of :mod:`minicnn.kernels.onepool`: output ``(oh, ow)`` is
position ``oh * Wp + ow`` of the padded plane's width ``Wp``, so tap ``(i, j)`` reads the padded
plane at that position plus ``i*dH*Wp + j*dW``: a contiguous shift, a loop LLVM vectorises.
The ``kW - 1`` positions past ``W_out`` in each row are garbage and never written out; in
backward they stay zero in ``dY``'s grid, so they add nothing.

They are chunk kernels (:mod:`minicnn.kernels.parallel`): ``chunk(args, plan, thread,
n_threads)``, ``args`` a :class:`DepthwiseForwardArgs` or :class:`DepthwiseBackwardArgs`,
``plan`` the same :class:`~minicnn.kernels.contracts.ConvPlan` the one-pool convolution
computes (:func:`~minicnn.kernels.contracts.conv_plan`; no stacked layout: only the geometry
is read). Their arguments records are their own, so each kernel compiles its own parallel
loop; they share with :mod:`minicnn.kernels.onepool` the plan and the wide grid, not compiled
code.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from . import parallel
from .contracts import ConvPlan, conv_plan
from .parallel import share
from .threads import threads_for

_JIT = dict(cache=True, nogil=True)


@njit(**_JIT)
def _pad_plane(x, n, c, top, left, xpad):
    """``xpad[top:top+H, left:left+W] = x[n, c]`` inside the zero border the caller made."""
    height, width = x.shape[2], x.shape[3]
    for h in range(height):
        src, dest = x[n, c, h], xpad[top + h, left:left + width]
        for w in range(width):     # from 0: see onepool's note on copies
            dest[w] = src[w]


class DepthwiseForwardArgs(NamedTuple):
    """``args`` of :func:`_forward_chunk`."""

    x: np.ndarray           #: (N, C, H, W) input, C-contiguous
    weights: np.ndarray     #: (C, kH, kW) one filter per channel
    bias: np.ndarray        #: (C,), or (1,) unused when not ``has_bias``
    has_bias: bool
    y: np.ndarray           #: (N, C, H_out, W_out) output, written


class DepthwiseBackwardArgs(NamedTuple):
    """``args`` of :func:`_backward_chunk`."""

    x: np.ndarray           #: (N, C, H, W) the forward's input
    dy: np.ndarray          #: (N, C, H_out, W_out) gradient of the output
    weights: np.ndarray     #: (C, kH, kW)
    dx: np.ndarray          #: (N, C, H, W) input gradient, written; (0, C, H, W) if not needed
    need_input_grad: bool
    dw_partial: np.ndarray  #: (threads, C, kH, kW) each thread's weight gradient
    db_partial: np.ndarray  #: (threads, C) each thread's bias gradient


@njit(**_JIT)
def _forward_chunk(args, plan, thread, n_threads):
    """``y[n, c] = bias[c] + sum_ij weights[c, i, j] * xpad[n, c] shifted by (i*dH, j*dW)``
    for this thread's planes."""
    x, weights, bias, has_bias, y = args.x, args.weights, args.bias, args.has_bias, args.y
    kh, kw, dh, dw = plan.kh, plan.kw, plan.dh, plan.dw
    top, left, padded_h, padded_w = plan.top, plan.left, plan.padded_h, plan.padded_w
    channels = x.shape[1]
    out_h, out_w = y.shape[2], y.shape[3]
    first, last = share(x.shape[0] * channels, thread, n_threads)
    length = (out_h - 1) * padded_w + out_w
    xpad = np.zeros((padded_h, padded_w), dtype=x.dtype)
    flat = xpad.reshape(padded_h * padded_w)
    grid = np.empty(length, dtype=x.dtype)
    for task in range(first, last):
        n, c = task // channels, task % channels
        _pad_plane(x, n, c, top, left, xpad)
        start = bias[c] if has_bias else x.dtype.type(0)
        for q in range(length):
            grid[q] = start
        for i in range(kh):
            row = i * dh * padded_w
            j = 0
            while j + 3 <= kw:      # three taps per pass: a third of the grid traffic
                w0, w1, w2 = weights[c, i, j], weights[c, i, j + 1], weights[c, i, j + 2]
                s0 = flat[row + j * dw:row + j * dw + length]
                s1 = flat[row + (j + 1) * dw:row + (j + 1) * dw + length]
                s2 = flat[row + (j + 2) * dw:row + (j + 2) * dw + length]
                for q in range(length):
                    grid[q] += w0 * s0[q] + w1 * s1[q] + w2 * s2[q]
                j += 3
            for j in range(j, kw):
                tap = weights[c, i, j]
                src = flat[row + j * dw:row + j * dw + length]
                for q in range(length):
                    grid[q] += tap * src[q]
        for oh in range(out_h):
            src, dest = grid[oh * padded_w:oh * padded_w + out_w], y[n, c, oh]
            for ow in range(out_w):
                dest[ow] = src[ow]


# Reassociation lets LLVM vectorise the dot products of the weight gradient (it changes
# rounding, not NaN or inf handling); the tests compare against float64 and PyTorch.
@njit(fastmath={"reassoc", "contract"}, **_JIT)
def _weight_grad_taps(grid, margin, flat, kh, kw, dh, dw, padded_w, length, dweight, c):
    """``dweight[c, i, j] += <dY grid, padded plane shifted by (i*dH, j*dW)>``."""
    for i in range(kh):
        for j in range(kw):
            offset = i * dh * padded_w + j * dw
            src = flat[offset:offset + length]
            dy_grid = grid[margin:margin + length]
            dot = flat.dtype.type(0)
            for q in range(length):
                dot += dy_grid[q] * src[q]
            dweight[c, i, j] += dot


@njit(**_JIT)
def _backward_chunk(args, plan, thread, n_threads):
    """Backward of :func:`_forward_chunk` for this thread's planes: ``dW`` and ``db`` into
    ``dw_partial[thread]`` (C, kH, kW) and ``db_partial[thread]``, ``dx`` (when asked) plane
    by plane.

    ``dY`` sits on the wide grid after a zero margin of ``(kH-1)*dH*Wp + (kW-1)*dW`` values,
    so the input gradient is a *gather*, like the forward pass: ``dX_pad[p] = sum_ij
    W[i, j] * grid[margin + p - offset_ij]``, every tap a contiguous shifted read. (Scattering
    ``dX_pad[p + offset_ij] += W[i, j] * dY[p]`` tap by tap was 3x slower: each tap re-reads
    what the previous one wrote one element away, and the CPU cannot forward those
    overlapping vector stores to the loads.)"""
    x, dy, weights, dx = args.x, args.dy, args.weights, args.dx
    need_input_grad = args.need_input_grad
    kh, kw, dh, dw = plan.kh, plan.kw, plan.dh, plan.dw
    top, left, padded_h, padded_w = plan.top, plan.left, plan.padded_h, plan.padded_w
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_h, out_w = dy.shape[2], dy.shape[3]
    first, last = share(x.shape[0] * channels, thread, n_threads)
    dweight, dbias = args.dw_partial[thread], args.db_partial[thread]
    length = (out_h - 1) * padded_w + out_w
    margin = (kh - 1) * dh * padded_w + (kw - 1) * dw
    xpad = np.zeros((padded_h, padded_w), dtype=x.dtype)
    flat = xpad.reshape(padded_h * padded_w)
    # Zero margin, then dY on the wide grid; the margin and garbage columns are never written.
    grid = np.zeros(margin + padded_h * padded_w, dtype=x.dtype)
    span = (height - 1) * padded_w + width    # the input's rows on the wide grid
    acc = np.empty(span if need_input_grad else 0, dtype=x.dtype)
    base = margin + top * padded_w + left
    for task in range(first, last):
        n, c = task // channels, task % channels
        _pad_plane(x, n, c, top, left, xpad)
        total = x.dtype.type(0)
        for oh in range(out_h):
            src = dy[n, c, oh]
            dest = grid[margin + oh * padded_w:margin + oh * padded_w + out_w]
            for ow in range(out_w):
                dest[ow] = src[ow]
                total += src[ow]
        dbias[c] += total
        _weight_grad_taps(grid, margin, flat, kh, kw, dh, dw, padded_w, length, dweight, c)
        if not need_input_grad:
            continue
        for q in range(span):
            acc[q] = 0
        for i in range(kh):
            j = 0
            while j + 3 <= kw:      # three taps per pass, as in forward
                w0, w1, w2 = weights[c, i, j], weights[c, i, j + 1], weights[c, i, j + 2]
                start = base - i * dh * padded_w - j * dw
                s0 = grid[start:start + span]
                s1 = grid[start - dw:start - dw + span]
                s2 = grid[start - 2 * dw:start - 2 * dw + span]
                for q in range(span):
                    acc[q] += w0 * s0[q] + w1 * s1[q] + w2 * s2[q]
                j += 3
            for j in range(j, kw):
                tap = weights[c, i, j]
                start = base - i * dh * padded_w - j * dw
                src = grid[start:start + span]
                for q in range(span):
                    acc[q] += tap * src[q]
        for h in range(height):
            src, dest = acc[h * padded_w:h * padded_w + width], dx[n, c, h]
            for w in range(width):
                dest[w] = src[w]


def supports(x_dtype, weight, groups, stride) -> bool:
    """Whether these kernels handle the layer: depthwise (one filter per channel), stride 1,
    float32 or float64."""
    c_out, per_group = weight.shape[0], weight.shape[1]
    return (groups > 1 and groups == c_out and per_group == 1 and tuple(stride) == (1, 1)
            and x_dtype in (np.float32, np.float64) and weight.dtype == x_dtype)


class DepthwiseContext(NamedTuple):
    """What :func:`conv2d_forward` keeps for :func:`conv2d_backward`: the input itself, as the
    one-pool kernels keep it."""

    x: np.ndarray           #: (N, C, H, W) the input, C-contiguous
    weight_shape: tuple     #: (C, 1, kH, kW)
    weights: np.ndarray     #: (C, kH, kW)
    has_bias: bool
    plan: ConvPlan


def conv2d_forward(x, weight, bias, stride, padding, dilation):
    """Depthwise convolution forward; parameters and returns as in
    :func:`minicnn.kernels.reference.conv2d_forward` (with ``groups = C``), for layers
    :func:`supports` accepts; ``ctx`` is a :class:`DepthwiseContext`."""
    x = np.ascontiguousarray(x)
    channels = x.shape[1]
    plan = conv_plan(x.shape, weight.shape, stride, padding, dilation)
    weights = np.ascontiguousarray(weight).reshape(channels, plan.kh, plan.kw)
    has_bias = bias is not None
    bias_arg = np.ascontiguousarray(bias, dtype=x.dtype) if has_bias else np.zeros(1, dtype=x.dtype)
    y = np.empty((x.shape[0], channels, plan.out_h, plan.out_w), dtype=x.dtype)
    parallel.run(_forward_chunk, DepthwiseForwardArgs(x, weights, bias_arg, has_bias, y), plan,
                 threads_for(x.shape[0] * channels), x.dtype)
    return y, DepthwiseContext(x, weight.shape, weights, has_bias, plan)


def conv2d_backward(dy, ctx, need_input_grad=True):
    """``(dx or None, dweight, dbias or None)`` for :func:`conv2d_forward`'s ``ctx``."""
    x, weights = ctx.x, ctx.weights
    dy = np.ascontiguousarray(dy)
    need_input_grad = bool(need_input_grad)
    dx = np.empty(x.shape if need_input_grad else (0,) + x.shape[1:], dtype=x.dtype)
    n_threads = threads_for(x.shape[0] * x.shape[1])    # one chunk of planes per thread
    dw_partial = np.zeros((n_threads,) + weights.shape, dtype=x.dtype)
    db_partial = np.zeros((n_threads, x.shape[1]), dtype=x.dtype)
    parallel.run(_backward_chunk,
                 DepthwiseBackwardArgs(x, dy, weights, dx, need_input_grad, dw_partial,
                                       db_partial),
                 ctx.plan, n_threads, x.dtype)
    # The threads' partial sums in a fixed order: the same result for a given thread count.
    dweight, dbias = dw_partial[0], db_partial[0]
    for t in range(1, n_threads):
        dweight = dweight + dw_partial[t]
        dbias = dbias + db_partial[t]
    return ((dx if need_input_grad else None), dweight.reshape(ctx.weight_shape),
            (dbias if ctx.has_bias else None))
