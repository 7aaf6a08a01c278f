"""Worked solution to tutorial 02's exercise (loaded when MINICNN_TUTORIAL_SOLUTIONS=1)."""

import numpy as np


def conv2d_forward_loop(x, weight, bias, stride=1, padding=0):
    """Cross-correlate a batch with a bank of filters, one output pixel at a time.

    x (N, C, H, W), weight (O, C, kH, kW), bias (O,) -> y (N, O, H_out, W_out).
    """
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out_h = (h + 2 * padding - kh) // stride + 1
    out_w = (w + 2 * padding - kw) // stride + 1
    y = np.zeros((n, o, out_h, out_w), dtype=x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            window = x[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            # (N, C, kH, kW) with (O, C, kH, kW): sum over C, kH, kW for every (n, o)
            y[:, :, i, j] = np.einsum("nchw,ochw->no", window, weight)
    return y + bias[None, :, None, None]
