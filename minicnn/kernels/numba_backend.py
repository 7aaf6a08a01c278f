"""Numba kernels: every pass of a layer runs in Numba's one thread pool.

- **Convolution** (ungrouped, float32/float64) runs as one parallel loop over the batch:
  :mod:`minicnn.kernels.onepool`, where each thread pads, multiplies with a single-threaded GEMM
  called from compiled code, and writes its own samples (backward: its own partial weight
  gradient and input gradient). Nothing is handed to OpenBLAS's thread pool, whose workers
  kept spinning after every GEMM and starved the Numba loops that followed.
- **Depthwise convolutions** (``groups == channels``) use direct loops: their per-channel
  GEMMs are far too thin for BLAS. Stride 1 (the common case) runs as one parallel pass per
  direction with the padding fused in (:mod:`minicnn.kernels.depthwise`); strided layers use
  the per-plane loops below.
- **Other grouped convolutions** keep the im2col + GEMM relay of the first version of this
  backend: NumPy unrolls, ``np.matmul`` multiplies, ``_gemm_to_nchw`` lays the result out and
  adds the bias in one pass, ``_col2im`` folds back race-free (each thread gathers into its
  own (sample, channel) plane). It is also the fallback where NumPy's BLAS exports no
  in-kernel GEMM (:mod:`minicnn.kernels.blas`).
- **Pooling** is one direct pass per (sample, channel) plane, in parallel; max pooling stores
  the winning input position so backward is a single scatter into the thread's own plane.

``Linear`` and ``ReLU`` on this backend use :mod:`minicnn.kernels.dense` and
:mod:`minicnn.kernels.pointwise`, which follow the same one-pool rule.

Kernels are compiled on first use for the dtype they see (float32 and float64 each get their
own machine code) and cached on disk (``cache=True``), so later processes start quickly.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from . import depthwise, onepool, parallel
from .geometry import output_size, pad_nchw
from .im2col import im2col
from .maxpool2x2 import max_pool_plane, pool_scratch
from .parallel import share
from .threads import threads_for  # importing threads chooses Numba's threading layer first

_JIT = dict(cache=True, nogil=True, fastmath=False)

#: Route ungrouped convolutions through :mod:`minicnn.kernels.onepool` (the default). Set it to
#: ``False`` to time the relay design against it (tutorial 09 does); results agree either way.
USE_ONEPOOL = True


# --------------------------------------------------------------------------------------------
# Convolution: data movement kernels
# --------------------------------------------------------------------------------------------
@njit(parallel=True, **_JIT)
def _col2im(cols, n_batch, channels, height, width, kh, kw, sh, sw, top, left, dh, dw,
            out_h, out_w):
    """Adjoint of :func:`_im2col`. One task per (n, c) plane; each task only writes its own
    plane, so the ``+=`` over overlapping windows is race-free."""
    spatial = out_h * out_w
    dx = np.zeros((n_batch, channels, height, width), dtype=cols.dtype)
    for task in prange(n_batch * channels):
        n = task // channels
        c = task % channels
        base = n * spatial
        for i in range(kh):
            for j in range(kw):
                row = (c * kh + i) * kw + j
                for oh in range(out_h):
                    h = oh * sh + i * dh - top
                    if h < 0 or h >= height:
                        continue
                    out = base + oh * out_w
                    for ow in range(out_w):
                        w = ow * sw + j * dw - left
                        if 0 <= w < width:
                            dx[n, c, h, w] += cols[row, out + ow]
    return dx


@njit(parallel=True, **_JIT)
def _gemm_to_nchw(y_matrix, bias, has_bias, n_batch, out_h, out_w):
    """``(C_out, N*L)`` -> ``(N, C_out, H_out, W_out)``, adding the bias in the same pass."""
    c_out = y_matrix.shape[0]
    spatial = out_h * out_w
    y = np.empty((n_batch, c_out, out_h, out_w), dtype=y_matrix.dtype)
    for task in prange(n_batch * c_out):
        n = task // c_out
        co = task % c_out
        b = bias[co] if has_bias else y_matrix.dtype.type(0)
        plane = y[n, co].reshape(spatial)
        src = y_matrix[co, n * spatial:(n + 1) * spatial]
        for p in range(spatial):
            plane[p] = src[p] + b
    return y


# --------------------------------------------------------------------------------------------
# Depthwise convolution (groups == C_in == C_out): a direct loop beats im2col + GEMM, whose
# per-channel products are (1 x kH*kW) @ (kH*kW x N*L) -- far too thin for BLAS.
# --------------------------------------------------------------------------------------------
# Every inner loop runs over a slice taken from index 0: an index that might be negative
# (``ow * sw + j * dw`` with run-time ints) makes Numba check for wrap-around on each access,
# and LLVM then does not vectorise the loop (measured 3-10x slower).
@njit(parallel=True, **_JIT)
def _depthwise_forward(x_padded, weight, bias, has_bias, sh, sw, dh, dw, out_h, out_w):
    """``y[n, c] = bias[c] + sum_ij weight[c, 0, i, j] * x_padded[n, c, shifted window]``.
    One task per (n, c) plane; the inner loop runs along a row."""
    n_batch, channels = x_padded.shape[0], x_padded.shape[1]
    kh, kw = weight.shape[2], weight.shape[3]
    span = (out_w - 1) * sw + 1
    y = np.empty((n_batch, channels, out_h, out_w), dtype=x_padded.dtype)
    for task in prange(n_batch * channels):
        n = task // channels
        c = task % channels
        start = bias[c] if has_bias else x_padded.dtype.type(0)
        for oh in range(out_h):
            out = y[n, c, oh]
            out[:] = start
            for i in range(kh):
                row = x_padded[n, c, oh * sh + i * dh]
                for j in range(kw):
                    tap = weight[c, 0, i, j]
                    src = row[j * dw:j * dw + span:sw]
                    for ow in range(out_w):
                        out[ow] += tap * src[ow]
    return y


# Reassociation lets LLVM vectorise the long sums (it changes rounding, not NaN/inf handling).
@njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _depthwise_weight_grad(x_padded, dy, kh, kw, sh, sw, dh, dw):
    """``dW[c, 0, i, j] = sum over n, oh, ow of dy * x_padded`` and ``db[c] = sum dy``.
    One task per channel: each writes only its own filter, so no races."""
    n_batch, channels, out_h, out_w = dy.shape
    span = (out_w - 1) * sw + 1
    dweight = np.zeros((channels, 1, kh, kw), dtype=dy.dtype)
    dbias = np.zeros(channels, dtype=dy.dtype)
    for c in prange(channels):
        total_bias = dy.dtype.type(0)
        for n in range(n_batch):
            for oh in range(out_h):
                grad = dy[n, c, oh]
                for ow in range(out_w):
                    total_bias += grad[ow]
                for i in range(kh):
                    row = x_padded[n, c, oh * sh + i * dh]
                    for j in range(kw):
                        src = row[j * dw:j * dw + span:sw]
                        total = dy.dtype.type(0)
                        for ow in range(out_w):
                            total += grad[ow] * src[ow]
                        dweight[c, 0, i, j] += total
        dbias[c] = total_bias
    return dweight, dbias


@njit(parallel=True, **_JIT)
def _depthwise_input_grad(dy, weight, padded_h, padded_w, sh, sw, dh, dw):
    """Gradient w.r.t. the padded input: each output sends ``dy * tap`` back to the pixel the
    tap read. One task per (n, c) plane, so the ``+=`` of overlapping windows is race-free."""
    n_batch, channels, out_h, out_w = dy.shape
    kh, kw = weight.shape[2], weight.shape[3]
    span = (out_w - 1) * sw + 1
    dx = np.zeros((n_batch, channels, padded_h, padded_w), dtype=dy.dtype)
    for task in prange(n_batch * channels):
        n = task // channels
        c = task % channels
        for oh in range(out_h):
            grad = dy[n, c, oh]
            for i in range(kh):
                row = dx[n, c, oh * sh + i * dh]
                for j in range(kw):
                    tap = weight[c, 0, i, j]
                    dest = row[j * dw:j * dw + span:sw]
                    for ow in range(out_w):
                        dest[ow] += tap * grad[ow]
    return dx


def _is_depthwise(weight, groups, c_in):
    return groups > 1 and groups == c_in and weight.shape[0] == c_in and weight.shape[1] == 1


# --------------------------------------------------------------------------------------------
# Convolution: the contract
# --------------------------------------------------------------------------------------------
class StridedDepthwiseContext(NamedTuple):
    """What a strided depthwise forward (the per-plane loops above) keeps for backward."""

    x_shape: tuple          #: (N, C, H, W)
    weight: np.ndarray      #: (C, 1, kH, kW), C-contiguous
    has_bias: bool
    x_padded: np.ndarray    #: (N, C, H + top + bottom, W + left + right)
    stride: tuple           #: (sH, sW)
    padding: tuple          #: (top, bottom, left, right)
    dilation: tuple         #: (dH, dW)


class GemmContext(NamedTuple):
    """What a grouped forward (im2col + one GEMM per group) keeps for backward."""

    x_shape: tuple          #: (N, C_in, H, W)
    weight: np.ndarray      #: (C_out, C_in / groups, kH, kW)
    has_bias: bool
    cols: np.ndarray        #: (C_in * kH * kW, N * H_out * W_out), the unrolled input
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int


def conv2d_forward(x, weight, bias, stride, padding, dilation, groups):
    """Convolution forward. Ungrouped float32/float64 layers run as one parallel loop over the
    batch (:mod:`minicnn.kernels.onepool`); depthwise layers use the direct loops above; other
    grouped layers ``y = W (C_out_g, K_g) @ cols (K_g, N*L)`` per group, with NumPy unrolling.

    Parameters and returns as in :func:`minicnn.kernels.reference.conv2d_forward`; ``ctx`` is
    the context of the path that ran (:class:`minicnn.kernels.onepool.ConvContext`,
    :class:`minicnn.kernels.depthwise.DepthwiseContext`, :class:`StridedDepthwiseContext` or
    :class:`GemmContext`), and its type tells :func:`conv2d_backward` which path to take.
    """
    if USE_ONEPOOL and onepool.supports(x.dtype, weight, groups):
        return onepool.conv2d_forward(x, weight, bias, stride, padding, dilation)
    if depthwise.supports(x.dtype, weight, groups, stride):
        return depthwise.conv2d_forward(x, weight, bias, stride, padding, dilation)
    x = np.ascontiguousarray(x)
    n_batch, _, height, width = x.shape
    c_out, _, kh, kw = weight.shape
    (sh, sw), (dh, dw), (top, bottom, left, right) = stride, dilation, padding
    out_h = output_size(height, kh, sh, top, bottom, dh)
    out_w = output_size(width, kw, sw, left, right, dw)
    has_bias = bias is not None
    bias_arg = bias.astype(x.dtype, copy=False) if has_bias else np.zeros(1, dtype=x.dtype)
    if _is_depthwise(weight, groups, x.shape[1]):   # strided: the per-plane loops above
        x_padded = pad_nchw(x, padding)
        weight = np.ascontiguousarray(weight)
        y = _depthwise_forward(x_padded, weight, bias_arg, has_bias, sh, sw, dh, dw, out_h,
                               out_w)
        return y, StridedDepthwiseContext(x.shape, weight, has_bias, x_padded, stride, padding,
                                          dilation)
    # NumPy's strided copy unrolls faster than every Numba loop we tried (measured 1.3-3x on
    # the benchmark suite's shapes, even against two Numba threads), so we reuse it.
    cols, _ = im2col(x, (kh, kw), stride, padding, dilation)
    w_matrix = np.ascontiguousarray(weight).reshape(groups, c_out // groups, -1)
    if groups == 1:
        y_matrix = w_matrix[0] @ cols                                  # (C_out, N*L)
    else:
        y_matrix = np.matmul(w_matrix, cols.reshape(groups, -1, cols.shape[1]))
        y_matrix = y_matrix.reshape(c_out, -1)
    y = _gemm_to_nchw(y_matrix, bias_arg, has_bias, n_batch, out_h, out_w)
    return y, GemmContext(x.shape, weight, has_bias, cols, stride, padding, dilation, groups)


def conv2d_backward(dy, ctx, need_input_grad=True):
    """``dW = dY @ colsᵀ``, ``db = Σ dY``, ``dx = col2im(Wᵀ @ dY)`` per group (depthwise
    layers: the direct loops above)."""
    if isinstance(ctx, onepool.ConvContext):
        return onepool.conv2d_backward(dy, ctx, need_input_grad)
    if isinstance(ctx, depthwise.DepthwiseContext):
        return depthwise.conv2d_backward(dy, ctx, need_input_grad)
    if isinstance(ctx, StridedDepthwiseContext):
        return _depthwise_backward(np.ascontiguousarray(dy), ctx, need_input_grad)
    weight, cols, groups = ctx.weight, ctx.cols, ctx.groups
    n_batch, c_in, height, width = ctx.x_shape
    c_out, _, kh, kw = weight.shape
    (sh, sw), (dh, dw), (top, _, left, _) = ctx.stride, ctx.dilation, ctx.padding
    out_h, out_w = dy.shape[2], dy.shape[3]
    # (N, C_out, Ho, Wo) -> (C_out, N*Ho*Wo): NumPy's transposing copy beat a Numba loop.
    dy_matrix = np.ascontiguousarray(dy.transpose(1, 0, 2, 3)).reshape(c_out, -1)
    dbias = dy.sum(axis=(0, 2, 3)) if ctx.has_bias else None
    w_matrix = np.ascontiguousarray(weight).reshape(groups, c_out // groups, -1)
    if groups == 1:
        dweight = (dy_matrix @ cols.T).reshape(weight.shape)
    else:
        dy_g = dy_matrix.reshape(groups, c_out // groups, -1)
        cols_g = cols.reshape(groups, -1, cols.shape[1])
        dweight = np.matmul(dy_g, cols_g.transpose(0, 2, 1)).reshape(weight.shape)
    dx = None
    if need_input_grad:
        if groups == 1:
            dcols = w_matrix[0].T @ dy_matrix                           # (K, N*L)
        else:
            dcols = np.matmul(w_matrix.transpose(0, 2, 1),
                              dy_matrix.reshape(groups, c_out // groups, -1))
            dcols = dcols.reshape(-1, dcols.shape[2])
        dx = _col2im(np.ascontiguousarray(dcols), n_batch, c_in, height, width, kh, kw,
                     sh, sw, top, left, dh, dw, out_h, out_w)
    return dx, dweight, dbias


def conv2d_relu_forward(x, weight, bias, stride, padding, dilation, groups, maxpool,
                        winners=True):
    """``Conv2d -> ReLU`` (``-> MaxPool2d(2)`` when ``maxpool``) in one pass, for layers the
    one-pool kernels run (:func:`minicnn.kernels.onepool.conv2d_relu_forward`); ``None`` for
    the others, which the caller then runs layer by layer. The caller checks that the
    convolution's output is at least 2x2 when ``maxpool``. ``winners=False`` (inference) skips
    the pooling's winning positions; its ``pool_ctx`` then keeps ``y`` and
    :func:`maxpool2d_backward` finds them from it, with the same rule, if asked.

    Returns ``(y, pooled, conv_ctx, pool_ctx)``: the ReLU's output, the pooling's output
    (``None`` without ``maxpool``), and the contexts :func:`conv2d_backward` and
    :func:`maxpool2d_backward` would get from the layers run one by one (a
    :class:`~minicnn.kernels.onepool.ConvContext` and a :class:`MaxPoolContext` or ``None``),
    so each layer can still run its own backward.
    """
    if not (USE_ONEPOOL and onepool.supports(x.dtype, weight, groups)):
        return None
    y, pooled, argmax, conv_ctx = onepool.conv2d_relu_forward(x, weight, bias, stride, padding,
                                                              dilation, maxpool, winners)
    pool_ctx = None
    if maxpool:
        pool_ctx = MaxPoolContext(y.shape[2], y.shape[3], argmax, tiled=True,
                                  source=None if winners else y)
    return y, pooled, conv_ctx, pool_ctx


def conv2d_relu_backward(dy, conv_ctx, y, pooled=None, pool_ctx=None, need_input_grad=True):
    """Backward of :func:`conv2d_relu_forward`, from the gradient ``dy`` of the block's output
    (the pooling's when ``pool_ctx`` is given, else the ReLU's): ``(dx or None, dweight,
    dbias or None)``, the numbers the three layers' backward passes give."""
    argmax = None if pool_ctx is None else _winners(pool_ctx)
    return onepool.conv2d_relu_backward(dy, conv_ctx, y, need_input_grad, pooled, argmax)


def _depthwise_backward(dy, ctx, need_input_grad):
    weight, x_padded = ctx.weight, ctx.x_padded
    (sh, sw), (top, _, left, _), (dh, dw) = ctx.stride, ctx.padding, ctx.dilation
    height, width = ctx.x_shape[2], ctx.x_shape[3]
    kh, kw = weight.shape[2], weight.shape[3]
    dweight, dbias = _depthwise_weight_grad(x_padded, dy, kh, kw, sh, sw, dh, dw)
    dx = None
    if need_input_grad:
        dx_padded = _depthwise_input_grad(dy, weight, x_padded.shape[2], x_padded.shape[3],
                                          sh, sw, dh, dw)
        dx = np.ascontiguousarray(dx_padded[:, :, top:top + height, left:left + width])
    return dx, dweight, (dbias if ctx.has_bias else None)


# --------------------------------------------------------------------------------------------
# Pooling: one pass per (n, c) plane
# --------------------------------------------------------------------------------------------
@njit(parallel=True, **_JIT)
def _maxpool_forward(x, kh, kw, sh, sw, top, left, out_h, out_w):
    """Max over each window (padding never wins) and the flat index ``h * W + w`` of the
    winner in its input plane; ties go to the first position in row-major order, a window of
    ``-inf`` picks its first real cell, and a NaN wins (the last one), as in PyTorch and
    :func:`minicnn.kernels.reference.pool_argmax`."""
    n_batch, channels, height, width = x.shape
    y = np.empty((n_batch, channels, out_h, out_w), dtype=x.dtype)
    argmax = np.empty((n_batch, channels, out_h, out_w), dtype=np.int32)
    for task in prange(n_batch * channels):
        n = task // channels
        c = task % channels
        plane = x[n, c]
        for oh in range(out_h):
            h0 = oh * sh - top
            for ow in range(out_w):
                w0 = ow * sw - left
                best = -np.inf
                best_index = -1
                for i in range(kh):
                    h = h0 + i
                    if h < 0 or h >= height:
                        continue
                    for j in range(kw):
                        w = w0 + j
                        if w < 0 or w >= width:
                            continue
                        value = plane[h, w]
                        # A NaN wins and sticks (``value != value``), as in PyTorch.
                        if best_index < 0 or value > best or value != value:
                            best = value
                            best_index = h * width + w
                y[n, c, oh, ow] = best
                argmax[n, c, oh, ow] = best_index
    return y, argmax


@njit(parallel=True, **_JIT)
def _maxpool_forward_unpadded(x, kh, kw, sh, sw, out_h, out_w):
    """:func:`_maxpool_forward` for ``padding=0``: every window lies inside the input, so the
    loops need no bounds checks (2.5x faster on 2x2 pooling)."""
    n_batch, channels, height, width = x.shape
    y = np.empty((n_batch, channels, out_h, out_w), dtype=x.dtype)
    argmax = np.empty((n_batch, channels, out_h, out_w), dtype=np.int32)
    for task in prange(n_batch * channels):
        n = task // channels
        c = task % channels
        plane = x[n, c]
        for oh in range(out_h):
            for ow in range(out_w):
                # Start from the window's first cell, so an all ``-inf`` window picks it.
                best = plane[oh * sh, ow * sw]
                best_index = oh * sh * width + ow * sw
                for i in range(kh):
                    h = oh * sh + i
                    for j in range(kw):
                        value = plane[h, ow * sw + j]
                        # Same rule as the padded kernel: a later NaN replaces, as in PyTorch.
                        if value > best or value != value:
                            best = value
                            best_index = h * width + ow * sw + j
                y[n, c, oh, ow] = best
                argmax[n, c, oh, ow] = best_index
    return y, argmax


# The 2x2 pooling kernels are chunk kernels (:mod:`minicnn.kernels.parallel`): each thread
# takes its share of the (sample, channel) planes. Forward and backward take the same
# arguments record and no plan (every size is an array's shape), so they share one compiled
# parallel loop.
class PoolPlanesArgs(NamedTuple):
    """``args`` of the 2x2 pooling's chunk kernels: what each reads, the winners' flat
    positions, what each writes."""

    source: np.ndarray          #: forward: the input x; backward: dy
    argmax: np.ndarray          #: (N, C, H_out, W_out) int32, written forward, read backward
    destination: np.ndarray     #: forward: the output y; backward: dx


@njit(**_JIT)
def _maxpool_2x2_planes(args, plan, thread, n_threads):
    """:func:`_maxpool_forward_unpadded` for the common 2x2 window with stride 2, from
    ``args.source`` (x) into ``args.destination`` (y): one
    :func:`~minicnn.kernels.maxpool2x2.max_pool_plane` per (sample, channel) plane. Same tie
    and NaN rule."""
    x, argmax, y = args.source, args.argmax, args.destination
    first, last = share(x.shape[0] * x.shape[1], thread, n_threads)
    height, width = x.shape[2], x.shape[3]
    pooled = y.shape[2] * y.shape[3]
    flat_x, flat_y, flat_argmax = x.reshape(x.size), y.reshape(y.size), argmax.reshape(argmax.size)
    cells, codes = pool_scratch(height, width, x.dtype)
    for task in range(first, last):        # a task is one (sample, channel) plane
        max_pool_plane(flat_x, task * height * width, height, width, flat_y, task * pooled,
                       flat_argmax, task * pooled, cells, codes)


@njit(**_JIT)
def _maxpool_2x2_backward_planes(args, plan, thread, n_threads):
    """Backward of :func:`_maxpool_2x2_planes`, from ``args.source`` (dy) into
    ``args.destination`` (dx): the windows tile the input, so each row pair is cleared and
    scattered while it is in cache, instead of a separate zero-filled array the size of the
    input."""
    dy, argmax, dx = args.source, args.argmax, args.destination
    first, last = share(dy.shape[0] * dy.shape[1], thread, n_threads)
    channels, out_h, out_w = dy.shape[1], dy.shape[2], dy.shape[3]
    height, width = dx.shape[2], dx.shape[3]
    zero = dy.dtype.type(0)
    for task in range(first, last):
        n, c = task // channels, task % channels
        plane = dx[n, c].reshape(height * width)
        for oh in range(out_h):
            dx[n, c, 2 * oh] = zero
            dx[n, c, 2 * oh + 1] = zero
            for ow in range(out_w):
                plane[argmax[n, c, oh, ow]] = dy[n, c, oh, ow]
        for h in range(2 * out_h, height):     # a last row or column no window covers
            dx[n, c, h] = zero


#: Input elements below which a 2x2 pooling pass runs on the calling thread: waking the pool
#: costs more than the pass saves (tens of microseconds).
POOL_PARALLEL_MIN_SIZE = 1 << 17


def _pool_threads(size: int, planes: int) -> int:
    return 1 if size < POOL_PARALLEL_MIN_SIZE else threads_for(planes)


def _maxpool_2x2(x, out_h, out_w):
    n_batch, channels = x.shape[0], x.shape[1]
    y = np.empty((n_batch, channels, out_h, out_w), dtype=x.dtype)
    argmax = np.empty((n_batch, channels, out_h, out_w), dtype=np.int32)
    parallel.run(_maxpool_2x2_planes, PoolPlanesArgs(x, argmax, y), parallel.NO_PLAN,
                 _pool_threads(x.size, n_batch * channels), x.dtype)
    return y, argmax


def _maxpool_2x2_backward(dy, argmax, height, width):
    dx = np.empty(dy.shape[:2] + (height, width), dtype=dy.dtype)
    parallel.run(_maxpool_2x2_backward_planes, PoolPlanesArgs(dy, argmax, dx), parallel.NO_PLAN,
                 _pool_threads(dx.size, dy.shape[0] * dy.shape[1]), dy.dtype)
    return dx


@njit(parallel=True, **_JIT)
def _maxpool_backward(dy, argmax, height, width):
    n_batch, channels, out_h, out_w = dy.shape
    dx = np.zeros((n_batch, channels, height, width), dtype=dy.dtype)
    for task in prange(n_batch * channels):
        n = task // channels
        c = task % channels
        plane = dx[n, c].reshape(height * width)
        for oh in range(out_h):
            for ow in range(out_w):
                plane[argmax[n, c, oh, ow]] += dy[n, c, oh, ow]
    return dx


@njit(cache=True)
def _window_divisor(h0, w0, kh, kw, height, width, count_include_pad):
    """``kH * kW`` (padding counts, PyTorch's default) or the number of real inputs under the
    window starting at ``(h0, w0)`` in unpadded coordinates."""
    if count_include_pad:
        return kh * kw
    return (min(h0 + kh, height) - max(h0, 0)) * (min(w0 + kw, width) - max(w0, 0))


@njit(parallel=True, **_JIT)
def _avgpool_forward(x, kh, kw, sh, sw, top, left, out_h, out_w,
                     count_include_pad):
    n_batch, channels, height, width = x.shape
    y = np.empty((n_batch, channels, out_h, out_w), dtype=x.dtype)
    for task in prange(n_batch * channels):
        n = task // channels
        c = task % channels
        plane = x[n, c]
        for oh in range(out_h):
            h0 = oh * sh - top
            for ow in range(out_w):
                w0 = ow * sw - left
                total = 0.0
                for h in range(max(h0, 0), min(h0 + kh, height)):
                    for w in range(max(w0, 0), min(w0 + kw, width)):
                        total += plane[h, w]
                divisor = _window_divisor(h0, w0, kh, kw, height, width, count_include_pad)
                y[n, c, oh, ow] = total / divisor
    return y


@njit(parallel=True, **_JIT)
def _avgpool_backward(dy, kh, kw, sh, sw, top, left, height, width,
                      count_include_pad):
    n_batch, channels, out_h, out_w = dy.shape
    dx = np.zeros((n_batch, channels, height, width), dtype=dy.dtype)
    for task in prange(n_batch * channels):
        n = task // channels
        c = task % channels
        plane = dx[n, c]
        for oh in range(out_h):
            h0 = oh * sh - top
            for ow in range(out_w):
                w0 = ow * sw - left
                divisor = _window_divisor(h0, w0, kh, kw, height, width, count_include_pad)
                share = dy[n, c, oh, ow] / divisor
                for h in range(max(h0, 0), min(h0 + kh, height)):
                    for w in range(max(w0, 0), min(w0 + kw, width)):
                        plane[h, w] += share
    return dx


class MaxPoolContext(NamedTuple):
    """What a max pooling forward keeps for its backward (built by :func:`maxpool2d_forward`
    and by a fused block, :func:`conv2d_relu_forward`)."""

    input_height: int
    input_width: int
    argmax: np.ndarray | None   #: (N, C, H_out, W_out) int32 flat winner positions, or None
    tiled: bool                 #: 2x2 windows, stride 2, no padding: the fast kernels
    source: np.ndarray | None   #: the input, kept only where ``argmax`` was skipped


def maxpool2d_forward(x, kernel_size, stride, padding):
    """Parameters and returns as in :func:`minicnn.kernels.reference.maxpool2d_forward`;
    ``ctx`` is a :class:`MaxPoolContext`."""
    x = np.ascontiguousarray(x)
    height, width = x.shape[2:]
    (kh, kw), (sh, sw), (top, bottom, left, right) = kernel_size, stride, padding
    out_h = output_size(height, kh, sh, top, bottom)
    out_w = output_size(width, kw, sw, left, right)
    tiled = top == bottom == left == right == 0 and kh == kw == sh == sw == 2
    if tiled:
        y, argmax = _maxpool_2x2(x, out_h, out_w)
    elif top == bottom == left == right == 0:
        y, argmax = _maxpool_forward_unpadded(x, kh, kw, sh, sw, out_h, out_w)
    else:
        y, argmax = _maxpool_forward(x, kh, kw, sh, sw, top, left, out_h, out_w)
    return y, MaxPoolContext(height, width, argmax, tiled, source=None)


def _winners(ctx):
    """The pooling's ``argmax`` from its ``ctx``: kept by the forward, or, where a fused
    block skipped it (:func:`conv2d_relu_forward` with ``winners=False``), found now from the
    pooling's input with the same rule (2x2 windows, stride 2: the only pooling fused)."""
    if ctx.argmax is not None:
        return ctx.argmax
    _, argmax = _maxpool_2x2(ctx.source, ctx.input_height // 2, ctx.input_width // 2)
    return argmax


def maxpool2d_backward(dy, ctx):
    height, width = ctx.input_height, ctx.input_width
    expected = (ctx.argmax.shape if ctx.argmax is not None
                else ctx.source.shape[:2] + (height // 2, width // 2))
    # The kernel reads ``argmax`` at every index of ``dy`` without bounds checks: a dy of any
    # other shape would read outside it (a crash, not an error). Layers check dy first; this
    # guards direct callers of the kernel.
    if dy.shape != expected:
        raise ValueError(f"maxpool2d_backward: expected dy of shape {expected} (the "
                         f"forward output), got {dy.shape}")
    backward = _maxpool_2x2_backward if ctx.tiled else _maxpool_backward
    return backward(np.ascontiguousarray(dy), _winners(ctx), height, width)


class AvgPoolContext(NamedTuple):
    """What an average pooling forward keeps for its backward."""

    input_height: int
    input_width: int
    kernel_size: tuple          #: (kH, kW)
    stride: tuple               #: (sH, sW)
    padding: tuple              #: (top, bottom, left, right)
    count_include_pad: bool


def avgpool2d_forward(x, kernel_size, stride, padding, count_include_pad=True):
    """Parameters and returns as in :func:`minicnn.kernels.reference.avgpool2d_forward`;
    ``ctx`` is an :class:`AvgPoolContext`."""
    x = np.ascontiguousarray(x)
    height, width = x.shape[2:]
    (kh, kw), (sh, sw), (top, bottom, left, right) = kernel_size, stride, padding
    out_h = output_size(height, kh, sh, top, bottom)
    out_w = output_size(width, kw, sw, left, right)
    y = _avgpool_forward(x, kh, kw, sh, sw, top, left, out_h, out_w, bool(count_include_pad))
    return y, AvgPoolContext(height, width, kernel_size, stride, padding,
                             bool(count_include_pad))


def avgpool2d_backward(dy, ctx):
    (kh, kw), (sh, sw), (top, _, left, _) = ctx.kernel_size, ctx.stride, ctx.padding
    return _avgpool_backward(np.ascontiguousarray(dy), kh, kw, sh, sw, top, left,
                             ctx.input_height, ctx.input_width, ctx.count_include_pad)
