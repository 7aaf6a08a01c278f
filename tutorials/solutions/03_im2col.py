"""Worked solution to tutorial 03's exercise (loaded when MINICNN_TUTORIAL_SOLUTIONS=1)."""

import numpy as np


def im2col_windows(x, kernel_size, stride, padding):
    """Unroll every window of a batch into a column.

    x (N, C, H, W); kernel_size (kH, kW); stride (sH, sW); padding (top, bottom, left, right)
    -> cols (C*kH*kW, N*H_out*W_out) of x's dtype, and (H_out, W_out). Row (c*kH + a)*kW + b
    holds tap (a, b) of channel c; column (n*H_out + i)*W_out + j is window (i, j) of image n.
    """
    n, c, h, w = x.shape
    kh, kw = kernel_size
    sh, sw = stride
    top, bottom, left, right = padding
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    out_h = (h + top + bottom - kh) // sh + 1
    out_w = (w + left + right - kw) // sw + 1
    cols = np.empty((c, kh, kw, n, out_h, out_w), dtype=x.dtype)
    # Loop over the kH*kW taps, not over the windows: tap (a, b) of every window is one
    # strided slice of the padded batch, (N, C, out_h, out_w).
    for a in range(kh):
        for b in range(kw):
            cols[:, a, b] = x[:, :, a:a + sh * out_h:sh, b:b + sw * out_w:sw].transpose(1, 0, 2, 3)
    return cols.reshape(c * kh * kw, n * out_h * out_w), (out_h, out_w)
