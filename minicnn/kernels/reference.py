"""Reference kernels: explicit loops, written to be read.

These are the *definition* of what every other backend must compute. Each output pixel is one
loop iteration, so a learner can put a breakpoint inside and watch a window slide. They are
slow (use small inputs); ``im2col`` and ``numba`` compute the same numbers quickly.

Every backend module exposes the same six functions::

    conv2d_forward(x, weight, bias, stride, padding, dilation, groups) -> (y, ctx)
    conv2d_backward(dy, ctx, need_input_grad=True)                     -> (dx, dweight, dbias)
    maxpool2d_forward(x, kernel_size, stride, padding)                 -> (y, ctx)
    maxpool2d_backward(dy, ctx)                                        -> dx
    avgpool2d_forward(x, kernel_size, stride, padding, count_include_pad) -> (y, ctx)
    avgpool2d_backward(dy, ctx)                                        -> dx

``ctx`` is whatever that backend's backward needs; callers pass it back unchanged. Shapes:
``x (N, C_in, H, W)``, ``weight (C_out, C_in // groups, kH, kW)``, ``bias (C_out,)`` or
``None``, ``y (N, C_out, H_out, W_out)``; ``stride``/``dilation``/``kernel_size`` are pairs,
``padding`` is ``(top, bottom, left, right)`` (see :mod:`minicnn.kernels.geometry`).
Outputs keep the dtype of ``x``.
"""

from __future__ import annotations

import numpy as np

from .geometry import output_size, pad_nchw


# --------------------------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------------------------
def conv2d_forward(x, weight, bias, stride, padding, dilation, groups):
    """Cross-correlation (what deep learning calls convolution: the kernel is not flipped).

    ``y[n, co, i, j] = bias[co] + sum over (ci, ki, kj) of
    weight[co, ci, ki, kj] * x_padded[n, g*C_in_g + ci, i*sH + ki*dH, j*sW + kj*dW]``
    where ``g`` is the group that output channel ``co`` belongs to.
    """
    n_batch, c_in, height, width = x.shape
    c_out, c_in_per_group, kh, kw = weight.shape
    (sh, sw), (dh, dw) = stride, dilation
    top, bottom, left, right = padding
    out_h = output_size(height, kh, sh, top, bottom, dh)
    out_w = output_size(width, kw, sw, left, right, dw)
    c_out_per_group = c_out // groups

    x_padded = pad_nchw(x, padding)
    y = np.zeros((n_batch, c_out, out_h, out_w), dtype=x.dtype)
    for n in range(n_batch):
        for co in range(c_out):
            group = co // c_out_per_group
            first_in = group * c_in_per_group             # input channels this filter sees
            for i in range(out_h):
                for j in range(out_w):
                    # The window under the kernel: rows i*sH, i*sH + dH, ... (dilation skips).
                    window = x_padded[n, first_in:first_in + c_in_per_group,
                                      i * sh: i * sh + dh * (kh - 1) + 1: dh,
                                      j * sw: j * sw + dw * (kw - 1) + 1: dw]
                    y[n, co, i, j] = np.sum(window * weight[co])
            if bias is not None:
                y[n, co] += bias[co]
    return y, (x, weight, bias is not None, stride, padding, dilation, groups)


def conv2d_backward(dy, ctx, need_input_grad=True):
    """Gradients of the convolution, one output pixel at a time.

    Each ``y[n, co, i, j]`` came from one window times the kernel, so its gradient ``dy``
    flows back as ``dy * kernel`` into that window of ``dx`` and ``dy * window`` into ``dW``.
    Overlapping windows *add* into ``dx``: that is why the update is ``+=``.

    Returns
    -------
    dx : ndarray (N, C_in, H, W) or None when ``need_input_grad`` is False
    dweight : ndarray (C_out, C_in // groups, kH, kW)
    dbias : ndarray (C_out,) or None when the layer has no bias
    """
    x, weight, has_bias, stride, padding, dilation, groups = ctx
    n_batch, c_in, height, width = x.shape
    c_out, c_in_per_group, kh, kw = weight.shape
    (sh, sw), (dh, dw) = stride, dilation
    top, _, left, _ = padding
    out_h, out_w = dy.shape[2:]
    c_out_per_group = c_out // groups

    x_padded = pad_nchw(x, padding)
    dx_padded = np.zeros_like(x_padded)
    dweight = np.zeros_like(weight)
    for n in range(n_batch):
        for co in range(c_out):
            first_in = (co // c_out_per_group) * c_in_per_group
            for i in range(out_h):
                for j in range(out_w):
                    rows = slice(i * sh, i * sh + dh * (kh - 1) + 1, dh)
                    cols = slice(j * sw, j * sw + dw * (kw - 1) + 1, dw)
                    channels = slice(first_in, first_in + c_in_per_group)
                    grad = dy[n, co, i, j]
                    dweight[co] += grad * x_padded[n, channels, rows, cols]
                    if need_input_grad:
                        dx_padded[n, channels, rows, cols] += grad * weight[co]
    dbias = dy.sum(axis=(0, 2, 3)) if has_bias else None
    dx = dx_padded[:, :, top:top + height, left:left + width] if need_input_grad else None
    return (None if dx is None else np.ascontiguousarray(dx)), dweight, dbias


# --------------------------------------------------------------------------------------------
# Max pooling
# --------------------------------------------------------------------------------------------
def maxpool2d_forward(x, kernel_size, stride, padding):
    """Largest value in each window; padding counts as ``-inf`` so it is never chosen.

    Remembers *where* each maximum was (the "argmax"), because backward sends the whole
    gradient of an output to that one input position. Ties go to the first position in
    row-major order, as in PyTorch.
    """
    n_batch, channels, height, width = x.shape
    (kh, kw), (sh, sw) = kernel_size, stride
    top, bottom, left, right = padding
    out_h = output_size(height, kh, sh, top, bottom)
    out_w = output_size(width, kw, sw, left, right)

    x_padded = pad_nchw(x, padding, value=-np.inf)
    y = np.empty((n_batch, channels, out_h, out_w), dtype=x.dtype)
    argmax_row = np.empty(y.shape, dtype=np.int64)     # positions in the padded input
    argmax_col = np.empty(y.shape, dtype=np.int64)
    for n in range(n_batch):
        for c in range(channels):
            for i in range(out_h):
                for j in range(out_w):
                    window = x_padded[n, c, i * sh: i * sh + kh, j * sw: j * sw + kw]
                    ki, kj = np.unravel_index(np.argmax(window), window.shape)
                    y[n, c, i, j] = window[ki, kj]
                    argmax_row[n, c, i, j] = i * sh + ki
                    argmax_col[n, c, i, j] = j * sw + kj
    return y, (x.shape, padding, argmax_row, argmax_col)


def maxpool2d_backward(dy, ctx):
    """Route each output gradient to the input position that won the max (``+=``: windows
    that overlap can pick the same winner)."""
    x_shape, padding, argmax_row, argmax_col = ctx
    n_batch, channels, height, width = x_shape
    top, bottom, left, right = padding
    dx_padded = np.zeros((n_batch, channels, height + top + bottom, width + left + right),
                         dtype=dy.dtype)
    out_h, out_w = dy.shape[2:]
    for n in range(n_batch):
        for c in range(channels):
            for i in range(out_h):
                for j in range(out_w):
                    dx_padded[n, c, argmax_row[n, c, i, j], argmax_col[n, c, i, j]] += dy[n, c, i, j]
    return np.ascontiguousarray(dx_padded[:, :, top:top + height, left:left + width])


# --------------------------------------------------------------------------------------------
# Average pooling
# --------------------------------------------------------------------------------------------
def _window_count(i, j, kernel_size, stride, padding, height, width):
    """How many *real* (non-padding) inputs lie under window (i, j)."""
    (kh, kw), (sh, sw) = kernel_size, stride
    top, _, left, _ = padding
    row0, col0 = i * sh - top, j * sw - left            # window start in unpadded coordinates
    rows = min(row0 + kh, height) - max(row0, 0)
    cols = min(col0 + kw, width) - max(col0, 0)
    return rows * cols


def avgpool2d_forward(x, kernel_size, stride, padding, count_include_pad=True):
    """Mean of each window. With ``count_include_pad`` (PyTorch's default) padded zeros count
    in the divisor; without it only real inputs do."""
    n_batch, channels, height, width = x.shape
    (kh, kw), (sh, sw) = kernel_size, stride
    top, bottom, left, right = padding
    out_h = output_size(height, kh, sh, top, bottom)
    out_w = output_size(width, kw, sw, left, right)

    x_padded = pad_nchw(x, padding)
    y = np.empty((n_batch, channels, out_h, out_w), dtype=x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            divisor = kh * kw if count_include_pad else _window_count(
                i, j, kernel_size, stride, padding, height, width)
            for n in range(n_batch):
                for c in range(channels):
                    window = x_padded[n, c, i * sh: i * sh + kh, j * sw: j * sw + kw]
                    y[n, c, i, j] = window.sum() / divisor
    return y, (x.shape, kernel_size, stride, padding, count_include_pad)


def avgpool2d_backward(dy, ctx):
    """Every input in a window receives an equal share ``dy / divisor`` of its gradient."""
    x_shape, kernel_size, stride, padding, count_include_pad = ctx
    n_batch, channels, height, width = x_shape
    (kh, kw), (sh, sw) = kernel_size, stride
    top, bottom, left, right = padding
    dx_padded = np.zeros((n_batch, channels, height + top + bottom, width + left + right),
                         dtype=dy.dtype)
    out_h, out_w = dy.shape[2:]
    for i in range(out_h):
        for j in range(out_w):
            divisor = kh * kw if count_include_pad else _window_count(
                i, j, kernel_size, stride, padding, height, width)
            for n in range(n_batch):
                for c in range(channels):
                    dx_padded[n, c, i * sh: i * sh + kh, j * sw: j * sw + kw] += (
                        dy[n, c, i, j] / divisor)
    return np.ascontiguousarray(dx_padded[:, :, top:top + height, left:left + width])
