"""Reference kernels: explicit loops, written to be read.

These are the *definition* of what every other backend must compute. The loops run over the
output positions ``(i, j)``: each iteration cuts out one window of the (padded) input, exactly
as the sliding-window picture draws it, and multiplies it with the kernel. Inside an iteration
the whole batch and all channels are handled at once by one small dot product
(``np.tensordot``), which keeps the code short and makes the kernels fast enough to train a
small network on real data (looping over the batch and channels too would read no better and
run a hundred times slower). ``im2col`` and ``numba`` compute the same numbers much faster.

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
def _window(array, i, j, kernel_size, stride, dilation):
    """The receptive field of output position ``(i, j)``: rows ``i*sH, i*sH + dH, ...``
    (``kH`` of them, dilation skips rows) and likewise columns. Shape (N, C, kH, kW)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, stride, dilation
    return array[:, :, i * sh: i * sh + dh * (kh - 1) + 1: dh,
                 j * sw: j * sw + dw * (kw - 1) + 1: dw]


def conv2d_forward(x, weight, bias, stride, padding, dilation, groups):
    """Cross-correlation (what deep learning calls convolution: the kernel is not flipped).

    ``y[n, co, i, j] = bias[co] + sum over (ci, ki, kj) of
    weight[co, ci, ki, kj] * x_padded[n, g*C_in_g + ci, i*sH + ki*dH, j*sW + kj*dW]``
    where ``g`` is the group output channel ``co`` belongs to.
    """
    n_batch, c_in, height, width = x.shape
    c_out, c_in_per_group, kh, kw = weight.shape
    top, bottom, left, right = padding
    out_h = output_size(height, kh, stride[0], top, bottom, dilation[0])
    out_w = output_size(width, kw, stride[1], left, right, dilation[1])
    c_out_per_group = c_out // groups

    x_padded = pad_nchw(x, padding)
    y = np.zeros((n_batch, c_out, out_h, out_w), dtype=x.dtype)
    for g in range(groups):
        inputs = slice(g * c_in_per_group, (g + 1) * c_in_per_group)    # channels group g sees
        outputs = slice(g * c_out_per_group, (g + 1) * c_out_per_group)  # filters of group g
        for i in range(out_h):
            for j in range(out_w):
                window = _window(x_padded[:, inputs], i, j, (kh, kw), stride, dilation)
                # Multiply the window with every filter and sum over (channel, row, column):
                # (N, C_in_g, kH, kW) . (C_out_g, C_in_g, kH, kW) -> (N, C_out_g)
                y[:, outputs, i, j] = np.tensordot(window, weight[outputs],
                                                   axes=([1, 2, 3], [1, 2, 3]))
    if bias is not None:
        y += bias.reshape(1, c_out, 1, 1)
    return y, (x, weight, bias is not None, stride, padding, dilation, groups)


def conv2d_backward(dy, ctx, need_input_grad=True):
    """Gradients of the convolution, one output position at a time.

    Output ``y[:, :, i, j]`` came from one window times the kernel, so its gradient ``dy``
    flows back as ``dy * kernel`` into that window of ``dx`` and ``dy * window`` into ``dW``.
    Neighbouring windows overlap, so contributions to ``dx`` *add up*: that is why the update
    is ``+=``.

    Returns
    -------
    dx : ndarray (N, C_in, H, W) or None when ``need_input_grad`` is False
    dweight : ndarray (C_out, C_in // groups, kH, kW)
    dbias : ndarray (C_out,) or None when the layer has no bias
    """
    x, weight, has_bias, stride, padding, dilation, groups = ctx
    n_batch, c_in, height, width = x.shape
    c_out, c_in_per_group, kh, kw = weight.shape
    top, _, left, _ = padding
    out_h, out_w = dy.shape[2:]
    c_out_per_group = c_out // groups

    x_padded = pad_nchw(x, padding)
    dx_padded = np.zeros_like(x_padded)
    dweight = np.zeros_like(weight)
    for g in range(groups):
        inputs = slice(g * c_in_per_group, (g + 1) * c_in_per_group)
        outputs = slice(g * c_out_per_group, (g + 1) * c_out_per_group)
        for i in range(out_h):
            for j in range(out_w):
                window = _window(x_padded[:, inputs], i, j, (kh, kw), stride, dilation)
                grad = dy[:, outputs, i, j]                                  # (N, C_out_g)
                # dW: each filter's gradient is the window weighted by that filter's dy,
                # summed over the batch: (N, C_out_g) . (N, C_in_g, kH, kW)
                dweight[outputs] += np.tensordot(grad, window, axes=([0], [0]))
                if need_input_grad:
                    # dx: every filter sends dy * filter back onto the window it read.
                    _window(dx_padded[:, inputs], i, j, (kh, kw), stride, dilation)[...] += (
                        np.tensordot(grad, weight[outputs], axes=([1], [0])))
    dbias = dy.sum(axis=(0, 2, 3)) if has_bias else None
    if not need_input_grad:
        return None, dweight, dbias
    dx = dx_padded[:, :, top:top + height, left:left + width]
    return np.ascontiguousarray(dx), dweight, dbias


# --------------------------------------------------------------------------------------------
# Max pooling
# --------------------------------------------------------------------------------------------
def pool_argmax(windows, real):
    """Index of each window's winner along the last axis, the rule every backend follows.

    ``windows`` has the window's cells on its last axis (row-major), padding filled with
    ``-inf``; ``real`` (broadcastable to ``windows``) is False on padding cells. As in
    PyTorch's CPU kernel, the winner is the *first* largest real cell -- so in a window of
    ``-inf`` values the first real cell wins, never the padding -- unless the window holds a
    NaN: then the *last* NaN wins (a NaN replaces the running maximum and nothing beats it).
    """
    nan = np.isnan(windows)
    largest = np.where(nan, -np.inf, windows).max(axis=-1, keepdims=True)
    first_largest = ((windows == largest) & real).argmax(axis=-1)
    last_nan = windows.shape[-1] - 1 - nan[..., ::-1].argmax(axis=-1)
    return np.where(nan.any(axis=-1), last_nan, first_largest)


def maxpool2d_forward(x, kernel_size, stride, padding):
    """Largest value in each window; padding counts as ``-inf`` but never wins.

    Remembers *where* each maximum was (the "argmax"), because backward sends the whole
    gradient of an output to that one input position. Ties go to the first position in
    row-major order, as in PyTorch (see :func:`pool_argmax` for ``-inf`` and NaN).
    """
    n_batch, channels, height, width = x.shape
    (kh, kw), (sh, sw) = kernel_size, stride
    top, bottom, left, right = padding
    out_h = output_size(height, kh, sh, top, bottom)
    out_w = output_size(width, kw, sw, left, right)

    x_padded = pad_nchw(x, padding, value=-np.inf)
    real = pad_nchw(np.ones((1, 1, height, width), dtype=bool), padding, value=False)
    y = np.empty((n_batch, channels, out_h, out_w), dtype=x.dtype)
    argmax_row = np.empty(y.shape, dtype=np.int64)     # positions in the padded input
    argmax_col = np.empty(y.shape, dtype=np.int64)
    for i in range(out_h):
        for j in range(out_w):
            rows, cols = slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw)
            window = x_padded[:, :, rows, cols].reshape(n_batch, channels, kh * kw)
            flat_index = pool_argmax(window, real[:, :, rows, cols].reshape(1, 1, kh * kw))
            ki, kj = np.divmod(flat_index, kw)         # row and column inside the window
            argmax_row[:, :, i, j] = i * sh + ki
            argmax_col[:, :, i, j] = j * sw + kj
            y[:, :, i, j] = np.take_along_axis(window, flat_index[..., None], axis=2)[..., 0]
    return y, (x.shape, padding, argmax_row, argmax_col)


def maxpool2d_backward(dy, ctx):
    """Route each output gradient to the input position that won the max. Windows that
    overlap can pick the same winner, so gradients add (``+=``)."""
    x_shape, padding, argmax_row, argmax_col = ctx
    n_batch, channels, height, width = x_shape
    top, bottom, left, right = padding
    dx_padded = np.zeros((n_batch, channels, height + top + bottom, width + left + right),
                         dtype=dy.dtype)
    n_index, c_index = np.meshgrid(np.arange(n_batch), np.arange(channels), indexing="ij")
    out_h, out_w = dy.shape[2:]
    for i in range(out_h):
        for j in range(out_w):
            # One winner per (n, c) for this window, so no index repeats within this +=.
            dx_padded[n_index, c_index, argmax_row[:, :, i, j], argmax_col[:, :, i, j]] += (
                dy[:, :, i, j])
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
            window = x_padded[:, :, i * sh: i * sh + kh, j * sw: j * sw + kw]  # (N, C, kH, kW)
            y[:, :, i, j] = window.sum(axis=(2, 3)) / divisor
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
            share = dy[:, :, i, j] / divisor                          # (N, C)
            dx_padded[:, :, i * sh: i * sh + kh, j * sw: j * sw + kw] += share[:, :, None, None]
    return np.ascontiguousarray(dx_padded[:, :, top:top + height, left:left + width])
