"""Worked solution to tutorial 11's exercise (loaded when MINICNN_TUTORIAL_SOLUTIONS=1)."""

import numpy as np


def depthwise_conv2d(x, weight, stride=1, padding=0):
    """Filter each channel with its own kernel; nothing is summed across channels.

    x (N, C, H, W), weight (C, 1, kH, kW) -> y (N, C, H_out, W_out), with
    H_out = (H + 2 * padding - kH) // stride + 1 (and W_out likewise).
    """
    n, c, h, w = x.shape
    kh, kw = weight.shape[2:]
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out_h = (h + 2 * padding - kh) // stride + 1
    out_w = (w + 2 * padding - kw) // stride + 1
    y = np.zeros((n, c, out_h, out_w), dtype=x.dtype)
    # Loop over the kH*kW taps: tap (a, b) of every window is one strided slice, scaled per
    # channel by that channel's weight for the tap.
    for a in range(kh):
        for b in range(kw):
            window_tap = x[:, :, a:a + stride * out_h:stride, b:b + stride * out_w:stride]
            y += window_tap * weight[None, :, 0, a, b, None, None]
    return y
