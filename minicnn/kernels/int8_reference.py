"""Integer-only inference kernels written as loops: the readable definition of int8 inference.

Every function here takes integer arrays and returns integer arrays; no float is touched.
:mod:`minicnn.kernels.int8` computes the same integers, bit for bit, faster (the tests hold
it to these). The scheme (scales, zero points, rounding) is explained in
:mod:`minicnn.quant.arithmetic`; in one line, a layer computes

    acc[n, co, i, j] = bias[co] + sum over (ci, ki, kj) of
                       weight[co, ci, ki, kj] * (x[n, ci, i*sH + ki - top, j*sW + kj - left]
                                                 - x_zero)

in int32 (the padding is ``x_zero``, the integer that stands for 0.0, so it adds nothing),
then :func:`requantize` scales ``acc`` down to the next layer's uint8.
"""

from __future__ import annotations

import numpy as np

UINT8_MAX = 255


def output_size(size: int, kernel: int, stride: int, before: int, after: int) -> int:
    return (size + before + after - kernel) // stride + 1


def conv2d_int8(x, x_zero: int, weight, bias, stride, padding):
    """Integer convolution (cross-correlation, groups 1, dilation 1).

    Parameters
    ----------
    x : ndarray uint8 (N, C_in, H, W)
    x_zero : int
        The zero point of ``x``; the padding takes this value.
    weight : ndarray int8 (C_out, C_in, kH, kW), symmetric (zero point 0)
    bias : ndarray int32 (C_out,), in units of ``x_scale * weight_scale[co]``
    stride : (sH, sW)
    padding : (top, bottom, left, right)

    Returns
    -------
    acc : ndarray int32 (N, C_out, H_out, W_out)
    """
    n_batch, c_in, height, width = x.shape
    c_out, _, kh, kw = weight.shape
    top, bottom, left, right = padding
    out_h = output_size(height, kh, stride[0], top, bottom)
    out_w = output_size(width, kw, stride[1], left, right)
    # Subtract the zero point first: a padded position becomes exactly 0.
    centred = np.full((n_batch, c_in, height + top + bottom, width + left + right), 0,
                      dtype=np.int64)
    centred[:, :, top:top + height, left:left + width] = x.astype(np.int64) - x_zero
    w = weight.astype(np.int64)
    acc = np.zeros((n_batch, c_out, out_h, out_w), dtype=np.int64)
    for i in range(out_h):
        for j in range(out_w):
            rows = slice(i * stride[0], i * stride[0] + kh)
            cols = slice(j * stride[1], j * stride[1] + kw)
            window = centred[:, :, rows, cols]                   # (N, C_in, kH, kW)
            acc[:, :, i, j] = np.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3]))
    acc += bias.astype(np.int64).reshape(1, c_out, 1, 1)
    return _to_int32(acc)


def linear_int8(x, x_zero: int, weight, bias):
    """Integer fully connected layer: ``acc[n, o] = bias[o] + sum_i weight[o, i] * (x[n, i] -
    x_zero)``.

    x : uint8 (N, in); weight : int8 (out, in); bias : int32 (out,) -> acc int32 (N, out)
    """
    n_batch = x.shape[0]
    w = weight.astype(np.int64)
    acc = np.zeros((n_batch, weight.shape[0]), dtype=np.int64)
    for n in range(n_batch):
        # One sample: every output is a dot product of a weight row with the centred input.
        acc[n] = w @ (x[n].astype(np.int64) - x_zero) + bias.astype(np.int64)
    return _to_int32(acc)


def maxpool2d_uint8(x, kernel, stride, padding):
    """Max pooling on uint8: the maximum of integers is the integer of the maximum (the scale
    is positive), so pooling needs no requantization. Padding takes 0, the smallest uint8: a
    window always holds at least one real value, which is >= 0.

    x : uint8 (N, C, H, W); kernel, stride : (kH, kW); padding : (top, bottom, left, right)
    """
    n_batch, channels, height, width = x.shape
    top, bottom, left, right = padding
    out_h = output_size(height, kernel[0], stride[0], top, bottom)
    out_w = output_size(width, kernel[1], stride[1], left, right)
    padded = np.zeros((n_batch, channels, height + top + bottom, width + left + right),
                      dtype=np.uint8)
    padded[:, :, top:top + height, left:left + width] = x
    y = np.zeros((n_batch, channels, out_h, out_w), dtype=np.uint8)
    for i in range(out_h):
        for j in range(out_w):
            window = padded[:, :, i * stride[0]:i * stride[0] + kernel[0],
                            j * stride[1]:j * stride[1] + kernel[1]]
            y[:, :, i, j] = window.max(axis=(2, 3))
    return y


def requantize(acc, multiplier, shift, zero_point: int, clamp_low: int):
    """int32 accumulators -> uint8, channel by channel (axis 1), in integers only.

    ``q = clamp((acc * multiplier + 2**(s-1)) >> s + zero_point, clamp_low, 255)`` with
    ``s = 31 + shift[c]``: the int64 product cannot overflow, the shift rounds half up, and
    ``clamp_low`` is the zero point for a fused ReLU (0 otherwise).

    acc : int32 (N, C, ...); multiplier, shift : int32 (C,) -> uint8, the shape of ``acc``
    """
    out = np.empty(acc.shape, dtype=np.uint8)
    for c in range(acc.shape[1]):
        total = 31 + int(shift[c])
        product = acc[:, c].astype(np.int64) * int(multiplier[c])
        scaled = (product + (1 << (total - 1))) >> total
        out[:, c] = np.clip(scaled + zero_point, clamp_low, UINT8_MAX)
    return out


def _to_int32(acc64):
    if acc64.size and (acc64.max() > np.iinfo(np.int32).max
                       or acc64.min() < np.iinfo(np.int32).min):
        raise OverflowError("int8 accumulator overflowed int32")
    return acc64.astype(np.int32)
