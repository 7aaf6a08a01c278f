"""im2col + GEMM kernels: vectorised NumPy, no Python loops over pixels.

The trick: copy every receptive field into one column of a matrix (``im2col``); then the whole
convolution is a single matrix product ``W_matrix @ cols``. Backward is two more products and
``col2im``, which adds each column back onto the pixels it came from. Python loops here run
over kernel offsets (at most kH * kW iterations), never over pixels.

Layout: ``cols`` has shape ``(groups, C_in_g * kH * kW, N * H_out * W_out)`` with the rows
ordered ``(c, i, j)`` -- the same order as ``weight.reshape(C_out, -1)`` -- so the GEMM needs
no transposes of the (small) weight and one big product covers the whole batch.
"""

from __future__ import annotations

import numpy as np

from .geometry import output_size, pad_nchw, window_view
from .reference import pool_argmax


def im2col(x, kernel_size, stride, padding, dilation):
    """Unroll every receptive field of ``x`` into a column.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    kernel_size, stride, dilation : pairs
    padding : (top, bottom, left, right)

    Returns
    -------
    cols : ndarray, shape (C * kH * kW, N * H_out * W_out)
        ``cols[(c*kH + i)*kW + j, (n*H_out + oh)*W_out + ow]
        == x_padded[n, c, oh*sH + i*dH, ow*sW + j*dW]``.
    out_hw : (H_out, W_out)
    """
    n_batch, channels, height, width = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, stride, dilation
    top, bottom, left, right = padding
    out_h = output_size(height, kh, sh, top, bottom, dh)
    out_w = output_size(width, kw, sw, left, right, dw)
    windows = window_view(pad_nchw(x, padding), kernel_size, stride, dilation, (out_h, out_w))
    # (N, C, kH, kW, Ho, Wo) -> (C, kH, kW, N, Ho, Wo): one copy, straight into GEMM layout.
    cols = np.empty((channels, kh, kw, n_batch, out_h, out_w), dtype=x.dtype)
    cols[...] = windows.transpose(1, 2, 3, 0, 4, 5)
    return cols.reshape(channels * kh * kw, n_batch * out_h * out_w), (out_h, out_w)


def col2im(cols, x_shape, kernel_size, stride, padding, dilation):
    """The adjoint of :func:`im2col`: add every column back onto the pixels it was read from.

    Windows overlap, so one pixel receives contributions from several columns; hence ``+=``.

    Parameters
    ----------
    cols : ndarray, shape (C * kH * kW, N * H_out * W_out)
    x_shape : (N, C, H, W) of the original input

    Returns
    -------
    ndarray, shape (N, C, H, W)
    """
    n_batch, channels, height, width = x_shape
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, stride, dilation
    top, bottom, left, right = padding
    out_h = output_size(height, kh, sh, top, bottom, dh)
    out_w = output_size(width, kw, sw, left, right, dw)
    blocks = cols.reshape(channels, kh, kw, n_batch, out_h, out_w)
    padded = np.zeros((n_batch, channels, height + top + bottom, width + left + right),
                      dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            # Kernel offset (i, j) touches a strided grid of pixels, each once: no collisions
            # inside one offset, so a vectorised += is exact.
            rows = slice(i * dh, i * dh + sh * (out_h - 1) + 1, sh)
            columns = slice(j * dw, j * dw + sw * (out_w - 1) + 1, sw)
            padded[:, :, rows, columns] += blocks[:, i, j].transpose(1, 0, 2, 3)
    return padded[:, :, top:top + height, left:left + width]


def conv2d_forward(x, weight, bias, stride, padding, dilation, groups):
    """Convolution as one batched GEMM per group: ``y = W (C_out_g, K) @ cols (K, N*L)``."""
    n_batch = x.shape[0]
    c_out, _, kh, kw = weight.shape
    cols, (out_h, out_w) = im2col(x, (kh, kw), stride, padding, dilation)
    # Sizes spelled out, not -1: NumPy cannot infer a -1 next to a 0 (an empty batch).
    k = cols.shape[0] // groups
    cols = cols.reshape(groups, k, cols.shape[1])                       # (G, K, N*L)
    w_matrix = weight.reshape(groups, c_out // groups, k)               # (G, C_out_g, K)
    y = np.matmul(w_matrix, cols)                                        # (G, C_out_g, N*L)
    y = y.reshape(c_out, n_batch, out_h, out_w).transpose(1, 0, 2, 3)
    y = np.ascontiguousarray(y)
    if bias is not None:
        y += bias.reshape(1, c_out, 1, 1)
    return y, (x.shape, weight, bias is not None, cols, stride, padding, dilation, groups)


def conv2d_backward(dy, ctx, need_input_grad=True):
    """``dW = dY @ colsᵀ``, ``db = Σ dY``, ``dx = col2im(Wᵀ @ dY)`` per group."""
    x_shape, weight, has_bias, cols, stride, padding, dilation, groups = ctx
    c_out, _, kh, kw = weight.shape
    # (N, C_out, Ho, Wo) -> (G, C_out_g, N*Ho*Wo), the layout the forward GEMM produced.
    dy_matrix = np.ascontiguousarray(dy.transpose(1, 0, 2, 3)).reshape(
        groups, c_out // groups, cols.shape[2])
    dweight = np.matmul(dy_matrix, cols.transpose(0, 2, 1)).reshape(weight.shape)
    dbias = dy.sum(axis=(0, 2, 3)) if has_bias else None
    dx = None
    if need_input_grad:
        w_matrix = weight.reshape(groups, c_out // groups, cols.shape[1])
        dcols = np.matmul(w_matrix.transpose(0, 2, 1), dy_matrix)        # (G, K, N*L)
        dx = col2im(dcols.reshape(groups * cols.shape[1], dcols.shape[2]), x_shape, (kh, kw),
                    stride, padding, dilation)
        dx = np.ascontiguousarray(dx)
    return dx, dweight, dbias


# --------------------------------------------------------------------------------------------
# Pooling: the same window view, reduced instead of multiplied.
# --------------------------------------------------------------------------------------------
def _pool_windows(x, kernel_size, stride, padding, fill):
    n_batch, channels, height, width = x.shape
    (kh, kw), (sh, sw) = kernel_size, stride
    top, bottom, left, right = padding
    out_h = output_size(height, kh, sh, top, bottom)
    out_w = output_size(width, kw, sw, left, right)
    windows = window_view(pad_nchw(x, padding, fill), kernel_size, stride, (1, 1), (out_h, out_w))
    # (N, C, kH, kW, Ho, Wo) -> (N, C, Ho, Wo, kH*kW)
    return windows.transpose(0, 1, 4, 5, 2, 3).reshape(n_batch, channels, out_h, out_w, kh * kw)


def _scatter_windows(per_offset, x_shape, kernel_size, stride, padding, dtype):
    """Add ``per_offset[..., k]`` onto the pixel each window offset ``k`` reads (col2im for
    pooling). Shape of ``per_offset``: (N, C, H_out, W_out, kH*kW)."""
    n_batch, channels, height, width = x_shape
    (kh, kw), (sh, sw) = kernel_size, stride
    top, bottom, left, right = padding
    out_h, out_w = per_offset.shape[2:4]
    padded = np.zeros((n_batch, channels, height + top + bottom, width + left + right), dtype)
    for i in range(kh):
        for j in range(kw):
            padded[:, :, i: i + sh * (out_h - 1) + 1: sh,
                   j: j + sw * (out_w - 1) + 1: sw] += per_offset[..., i * kw + j]
    return np.ascontiguousarray(padded[:, :, top:top + height, left:left + width])


def maxpool2d_forward(x, kernel_size, stride, padding):
    """Max over each window; remembers the winning offset (the tie rule of
    :func:`minicnn.kernels.reference.pool_argmax`: padding never wins)."""
    windows = _pool_windows(x, kernel_size, stride, padding, -np.inf)
    real = _pool_windows(np.ones((1, 1) + x.shape[2:], dtype=bool), kernel_size, stride,
                         padding, False)
    argmax = pool_argmax(windows, real)
    y = np.take_along_axis(windows, argmax[..., None], axis=-1)[..., 0]
    return np.ascontiguousarray(y), (x.shape, kernel_size, stride, padding, argmax)


def maxpool2d_backward(dy, ctx):
    x_shape, kernel_size, stride, padding, argmax = ctx
    offsets = np.arange(kernel_size[0] * kernel_size[1])
    routed = np.where(argmax[..., None] == offsets, dy[..., None], 0).astype(dy.dtype, copy=False)
    return _scatter_windows(routed, x_shape, kernel_size, stride, padding, dy.dtype)


def _avg_divisor(x_shape, kernel_size, stride, padding, count_include_pad, dtype):
    """Per-output divisor: kH*kW, or the number of real inputs under each window."""
    if count_include_pad:
        return dtype.type(kernel_size[0] * kernel_size[1])
    n_batch, channels, height, width = x_shape
    ones = np.ones((1, 1, height, width), dtype=dtype)
    return _pool_windows(ones, kernel_size, stride, padding, 0.0).sum(axis=-1)


def avgpool2d_forward(x, kernel_size, stride, padding, count_include_pad=True):
    windows = _pool_windows(x, kernel_size, stride, padding, 0.0)
    divisor = _avg_divisor(x.shape, kernel_size, stride, padding, count_include_pad, x.dtype)
    y = windows.sum(axis=-1) / divisor
    return y.astype(x.dtype, copy=False), (x.shape, kernel_size, stride, padding, divisor)


def avgpool2d_backward(dy, ctx):
    x_shape, kernel_size, stride, padding, divisor = ctx
    share = (dy / divisor).astype(dy.dtype, copy=False)
    spread = np.broadcast_to(share[..., None], share.shape + (kernel_size[0] * kernel_size[1],))
    return _scatter_windows(spread, x_shape, kernel_size, stride, padding, dy.dtype)
