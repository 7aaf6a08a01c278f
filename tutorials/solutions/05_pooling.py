"""Worked solution to tutorial 05's exercise (loaded when MINICNN_TUTORIAL_SOLUTIONS=1)."""

import numpy as np


def maxpool2d_backward(x, dy, kernel_size, stride):
    """Route each output's gradient to the input that won its window.

    x (N, C, H, W), dy (N, C, H_out, W_out) -> dx (N, C, H, W).
    """
    n, c, _, _ = x.shape
    out_h, out_w = dy.shape[2:]
    dx = np.zeros_like(x)
    for i in range(out_h):
        for j in range(out_w):
            top, left = i * stride, j * stride
            window = x[:, :, top:top + kernel_size, left:left + kernel_size]
            # argmax over the flattened window picks the first maximum in row-major order.
            winner = window.reshape(n, c, -1).argmax(axis=2)              # (N, C)
            r, q = np.divmod(winner, kernel_size)
            nn_, cc = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")
            # += : with overlapping windows one input can win several of them.
            np.add.at(dx, (nn_, cc, top + r, left + q), dy[:, :, i, j])
    return dx
